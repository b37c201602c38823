"""The real Antrea exporting library (go-ipfix v0.17.0, tests/goexporter) sends Antrea-shaped
records (IPv4 and IPv6 templates, strings, reverse counters, UUIDs) over UDP, TCP and TLS
(with a client certificate) to `flow-ingest serve`; every record arrives as a document
whose every field equals what was sent."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ingest_service.ipfix.values import iso_from_seconds
from tests.support.goexporter import run_goexporter
from tests.support.tlscerts import make_tls_files
from tests.test_listeners import LOCAL
from tests.test_serve import serve  # noqa: F401 - pytest fixture

SECONDS_FIELDS = {"flowStartSeconds", "flowEndSeconds", "flowEndSecondsFromSourceNode", "flowEndSecondsFromDestinationNode"}
NOT_APPLICABLE = {"ingressNetworkPolicyName", "ingressNetworkPolicyNamespace", "egressNetworkPolicyName",
                  "egressNetworkPolicyNamespace"}
TEXT_ADDRESS_FIELDS = {"egressIP"}  # a string element in Antrea's registry, mapped as ip


def expected_fields(sent: dict) -> dict:
    """What the exporter sent, in our document representation (see README: Documents)."""
    out = {}
    for name, value in sent.items():
        if name in SECONDS_FIELDS:
            value = iso_from_seconds(value)
        elif name.endswith("UUID"):
            value = f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
        elif name in NOT_APPLICABLE and value == "":
            value = "N/A"
        elif name in TEXT_ADDRESS_FIELDS and value == "":
            continue
        out[name] = value
    return out


def flow_identity(fields: dict) -> tuple:
    return tuple(fields.get(k) for k in ("sourceIPv4Address", "sourceIPv6Address", "destinationIPv4Address",
                                         "destinationIPv6Address", "sourceTransportPort", "destinationTransportPort",
                                         "flowStartSeconds", "sourcePodName"))


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_go_ipfix_records_arrive_field_by_field(serve, tmp_path, transport):  # noqa: F811
    options = []
    tls = None
    if transport == "tls":
        tls = make_tls_files(tmp_path / "certs")
        options = ["--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key), "--tls-client-ca", str(tls.ca_cert)]
    server = serve(*options, udp=transport == "udp", tcp=transport != "udp")
    port = server.udp_port if transport == "udp" else server.tcp_port
    # UDP: messages sized for a 1500-byte MTU, as Antrea does in a Pod; few enough not to overflow buffers
    sent = run_goexporter((LOCAL, port), transport, 60, mix=True, uuids=True, tls=tls, seed=21,
                          flow_types=["pod-to-pod", "pod-to-service", "pod-to-external", "from-external"])
    assert server.stop() == 0, server.stderr()

    documents = [d for d in server.documents() if not d["ipfix"].get("options")]
    assert len(documents) == len(sent)
    by_identity = {flow_identity(d["ipfix"]): d for d in documents}
    assert len(by_identity) == len(documents), "flows must be distinguishable for this test"
    templates = {r["template_id"] for r in sent}
    assert templates == {256, 257}  # IPv4 and IPv6 templates both used
    for record in sent:
        wanted = expected_fields(record["fields"])
        document = by_identity[flow_identity(wanted)]
        body = document["ipfix"]
        differences = {k: (body.get(k), v) for k, v in wanted.items() if body.get(k) != v}
        assert not differences, differences
        assert body["version"] == 10 and body["flowset_id"] == record["template_id"]
        assert document["host"] == LOCAL and document["type"] == "ipfix" and document["@version"] == "1"
        stamp = datetime.fromisoformat(document["@timestamp"].replace("Z", "+00:00")).timestamp()
        assert record["export_time_min"] <= stamp <= record["export_time_max"]
        # derived fields are there too (their rules are tested in test_schema.py)
        assert body["bytes"] == wanted["octetTotalCount"] and body["sourceIP"] in (
            wanted.get("sourceIPv4Address"), wanted.get("sourceIPv6Address"))
    stats = server.stats()
    assert stats["records"] >= len(sent) and stats.get("malformed_messages", 0) == 0
    assert stats.get("data_sets_without_template", 0) == 0


def test_timestamps_are_utc():
    assert iso_from_seconds(0) == datetime.fromtimestamp(0, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
