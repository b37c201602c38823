"""One `flow-ingest serve` runs every input: IPFIX (UDP/TCP), JSON lines (TCP/UDP) and the HTTP
API under gunicorn; SIGTERM stops all with everything written.  On the real OpenSearch, a
record pushed over HTTP and the same flow received as IPFIX become identical documents."""
from __future__ import annotations

import gzip
import socket
import uuid

import orjson
import pytest
import requests

from ingest_service.engines.client import EngineConfig, connect
from ingest_service.ipfix.values import iso_from_seconds
from tests.engines.fixtures import opensearch  # noqa: F401 - pytest fixture
from tests.support.goexporter import run_goexporter
from tests.test_listeners import LOCAL, wait_for
from tests.test_serve import free_port, serve  # noqa: F401 - pytest fixture

TOKEN = "s3cret-token"


def all_inputs(serve, *extra):  # noqa: F811
    http_port = free_port(socket.SOCK_STREAM)
    jsonl_tcp, jsonl_udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    server = serve("--http-port", str(http_port), "--http-token", TOKEN, "--jsonlines-address", LOCAL,
                   "--jsonlines-tcp-port", str(jsonl_tcp), "--jsonlines-udp-port", str(jsonl_udp), *extra)
    base = f"http://{LOCAL}:{http_port}"
    wait_for(lambda: _ready(base), timeout=30, what="HTTP API up")
    return server, base, jsonl_tcp, jsonl_udp


def _ready(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_every_input_in_one_serve(serve):  # noqa: F811
    server, base, jsonl_tcp, jsonl_udp = all_inputs(serve)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # HTTP: one gzip NDJSON body of raw IPFIX-named records
    body = b"\n".join(orjson.dumps({"sourceIPv4Address": f"10.9.0.{i}", "destinationIPv4Address": "10.9.1.1",
                                    "octetDeltaCount": 100 + i, "protocolIdentifier": 6}) for i in range(5))
    answer = requests.post(f"{base}/api/v1/flows?wait=true", data=gzip.compress(body), timeout=30,
                           headers={**auth, "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.json()["accepted"] == 5, answer.text
    assert requests.post(f"{base}/api/v1/flows", json={"sourceIPv4Address": "x"}, timeout=10).status_code == 401
    # JSON lines: Antrea's JSON record shape, over TCP and UDP
    line = orjson.dumps({"@timestamp": "2026-11-27T00:00:00+05:30",
                         "ipfix": {"sourcePodName": "web-jl", "flowStartSeconds": 1795700000, "octetDeltaCount": 7}})
    with socket.create_connection((LOCAL, jsonl_tcp)) as conn:
        conn.sendall(line + b"\n" + b"{not json}\n" + line + b"\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(line + b"\n", (LOCAL, jsonl_udp))
    # IPFIX from the real exporter
    sent = run_goexporter((LOCAL, server.tcp_port), "tcp", 10, seed=4)
    wait_for(lambda: server.stats()["documents_written"] >= 10 and
             requests.get(f"{base}/metrics", headers=auth, timeout=5).text.count("jsonlines") > 0,
             timeout=30, what="documents written")
    metrics = requests.get(f"{base}/metrics", headers=auth, timeout=5).text
    assert "flow_ingest_records_accepted_total" in metrics and "flow_ingest_ipfix_records_total" in metrics
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
    assert server.stop() == 0, server.stderr()

    documents = server.documents()
    http_docs = [d for d in documents if d["ipfix"].get("sourceIPv4Address", "").startswith("10.9.0.")]
    jsonl_docs = [d for d in documents if d["ipfix"].get("sourcePodName") == "web-jl"]
    ipfix_docs = [d for d in documents if d["ipfix"].get("flowset_id") in (256, 257)]
    assert len(http_docs) == 5 and {d["ipfix"]["protocolName"] for d in http_docs} == {"TCP"}
    assert len(jsonl_docs) == 3  # the malformed line was counted, not fatal
    assert jsonl_docs[0]["ipfix"]["flowStartSeconds"] == iso_from_seconds(1795700000)
    assert jsonl_docs[0]["@timestamp"] == "2026-11-26T18:30:00.000Z"
    assert len(ipfix_docs) == len(sent)


def test_http_and_ipfix_give_identical_documents_in_opensearch(serve, opensearch):  # noqa: F811
    name = f"flow-parity-{uuid.uuid4().hex[:8]}"
    server, base, _, _ = all_inputs(serve, "--url", opensearch.url, "--name", name, "--setup")
    sent = run_goexporter((LOCAL, server.tcp_port), "tcp", 40, seed=31, mix=True, uuids=True,
                          flow_types=["pod-to-pod", "pod-to-service", "pod-to-external"])
    records = []
    for record in sent:
        assert record["export_time_min"] == record["export_time_max"]
        records.append({"@timestamp": iso_from_seconds(record["export_time_min"]), **record["fields"]})
    answer = requests.post(f"{base}/api/v1/flows?wait=true", json=records, timeout=60,
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.json()["accepted"] == len(records), answer.text
    client = connect(EngineConfig(hosts=(opensearch.url,)))

    def indexed() -> int:
        client.perform("POST", f"/{name}/_refresh")
        return client.perform("GET", f"/{name}/_count").body.get("count", 0)

    wait_for(lambda: indexed() >= 2 * len(sent), timeout=60, what="both copies indexed")
    assert server.stop() == 0, server.stderr()
    hits = client.perform("POST", f"/{name}/_search", {"size": 500}).body["hits"]["hits"]
    by_source: dict[str, list[dict]] = {}
    for hit in hits:
        doc = hit["_source"]
        if doc["ipfix"].get("options"):
            continue
        via = "ipfix" if "flowset_id" in doc["ipfix"] else "http"
        doc["ipfix"].pop("flowset_id", None)  # JSON cannot know the template id: the one documented difference
        by_source.setdefault(via, []).append(doc)
    assert len(by_source["ipfix"]) == len(by_source["http"]) == len(sent)
    key = lambda d: orjson.dumps(d, option=orjson.OPT_SORT_KEYS)  # noqa: E731
    assert sorted(map(key, by_source["ipfix"])) == sorted(map(key, by_source["http"]))


@pytest.mark.parametrize("address", ["0.0.0.0"])
def test_http_off_loopback_requires_a_token(serve, address):  # noqa: F811
    with pytest.raises(AssertionError, match="--http-token is required"):
        serve("--http-port", str(free_port(socket.SOCK_STREAM)), "--http-address", address)


def test_http_api_over_tls(serve, tmp_path):  # noqa: F811
    from tests.support.tlscerts import make_tls_files

    tls = make_tls_files(tmp_path / "certs")
    http_port = free_port(socket.SOCK_STREAM)
    server = serve("--http-port", str(http_port), "--http-token", TOKEN, "--http-tls-cert", str(tls.server_cert),
                   "--http-tls-key", str(tls.server_key))
    base = f"https://localhost:{http_port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthz", verify=str(tls.ca_cert), timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, timeout=30, what="HTTPS API up")
    answer = requests.post(f"{base}/api/v1/flows?wait=true", json={"sourceIPv4Address": "10.7.7.7"},
                           headers={"Authorization": f"Bearer {TOKEN}"}, verify=str(tls.ca_cert), timeout=30)
    assert answer.status_code == 200, answer.text
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{base}/healthz", timeout=5)  # an unknown CA is refused by the client, as it should
    assert server.stop() == 0
    assert any(d["ipfix"].get("sourceIPv4Address") == "10.7.7.7" for d in server.documents())
