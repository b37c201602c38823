"""`flow-ingest serve --setup` into the REAL OpenSearch: records from the real go-ipfix exporter
and from softflowd arrive as typed, queryable documents; an engine killed and restarted
mid-stream loses nothing (documents counted against records sent)."""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from ingest_service.engines.client import EngineConfig, connect
from tests.engines.fixtures import elasticsearch, engine_factory, opensearch  # noqa: F401 - pytest fixtures
from tests.support import pcapgen
from tests.support.goexporter import run_goexporter
from tests.support.realexporters import require_tool, softflowd_command
from tests.test_listeners import LOCAL, wait_for
from tests.test_serve import serve  # noqa: F401 - pytest fixture


def count(client, target: str) -> int:
    client.perform("POST", f"/{target}/_refresh")
    response = client.perform("GET", f"/{target}/_count")
    return response.body["count"] if response.ok else 0


def test_setup_then_serve_into_opensearch(serve, opensearch, tmp_path):  # noqa: F811
    name = f"flow-e2e-{uuid.uuid4().hex[:8]}"
    server = serve("--url", opensearch.url, "--name", name, "--setup", "--document-ids")
    sent = run_goexporter((LOCAL, server.tcp_port), "tcp", 150, mix=True, seed=5,
                          flow_types=["pod-to-pod", "pod-to-service", "pod-to-external"])
    pcap = tmp_path / "traffic.pcap"
    flows = pcapgen.write_scenario(pcap, pcapgen.default_scenario())
    subprocess.run(softflowd_command(require_tool("softflowd"), pcap, (LOCAL, server.udp_port), ["-v", "10", "-a"]),
                   check=True, timeout=30, capture_output=True)
    client = connect(EngineConfig(hosts=(opensearch.url,)))
    expected = len(sent) + len(flows)
    wait_for(lambda: count(client, name) >= expected, timeout=60, what="documents indexed")
    assert server.stop() == 0, server.stderr()
    data = [d for d in client.perform("POST", f"/{name}/_search", {"size": 1000}).body["hits"]["hits"]]
    options = [h for h in data if h["_source"]["ipfix"].get("options")]
    assert count(client, name) - len(options) == expected

    mapping = next(iter(client.perform("GET", f"/{name}/_mapping").body.values()))["mappings"]["properties"]["ipfix"]["properties"]
    assert mapping["sourceIPv4Address"]["type"] == "ip" and mapping["flowStartMilliseconds"]["type"] == "date"
    assert mapping["sourcePodName"]["type"] == "keyword" and mapping["octetDeltaCount"]["type"] == "long"

    def hits(query: dict) -> int:
        return client.perform("POST", f"/{name}/_search", {"size": 0, "query": query}).body["hits"]["total"]["value"]

    pods = {r["fields"]["sourcePodName"] for r in sent}
    assert hits({"terms": {"ipfix.sourcePodName": sorted(pods)}}) == len(sent)
    assert hits({"range": {"ipfix.sourceIP": {"gte": "10.0.0.0", "lte": "10.255.255.255"}}}) >= 1
    assert hits({"range": {"ipfix.flowEndSeconds": {"gte": "now-1d", "lte": "now+1d"}}}) == len(sent)
    softflowd_docs = hits({"exists": {"field": "ipfix.flowStartMilliseconds"}})
    assert softflowd_docs >= len(flows)
    stats = server.stats()
    assert stats["documents_indexed"] >= expected and stats.get("documents_lost", 0) == 0


def test_engine_killed_and_restarted_loses_nothing(serve, engine_factory, tmp_path):  # noqa: F811
    engine = engine_factory("opensearch", data_dir=tmp_path / "engine-data")
    name = f"flow-crash-{uuid.uuid4().hex[:8]}"
    server = serve("--url", engine.url, "--name", name, "--setup", "--document-ids", "--udp-port", "0", udp=False)
    client = connect(EngineConfig(hosts=(engine.url,)))
    total = 0
    total += len(run_goexporter((LOCAL, server.tcp_port), "tcp", 300, seed=1))
    wait_for(lambda: count(client, name) >= total, timeout=60, what="first batch indexed")

    engine.kill()
    total += len(run_goexporter((LOCAL, server.tcp_port), "tcp", 300, seed=2))
    wait_for(lambda: server.stats().get("documents_spooled", 0) > 0, timeout=60, what="spooling while the engine is down")
    total += len(run_goexporter((LOCAL, server.tcp_port), "tcp", 300, seed=3))

    engine.restart()
    client = connect(EngineConfig(hosts=(engine.url,)))
    wait_for(lambda: count(client, name) >= total, timeout=120, what="spool replayed")
    assert server.stop() == 0, server.stderr()
    time.sleep(0.5)
    assert count(client, name) == total  # exactly once: deterministic ids absorb replays
    stats = server.stats()
    assert stats["documents_replayed"] > 0 and stats.get("documents_lost", 0) == 0


def test_serve_into_elasticsearch(serve, elasticsearch):  # noqa: F811
    """The same path into the real Elasticsearch node (no ingest processors or ILM in this
    distribution: setup warns and installs templates; the data stream is made by the first write)."""
    name = f"flow-es-{uuid.uuid4().hex[:8]}"
    server = serve("--url", elasticsearch.url, "--name", name, "--setup", "--udp-port", "0", udp=False)
    sent = run_goexporter((LOCAL, server.tcp_port), "tcp", 120, mix=True, seed=6)
    client = connect(EngineConfig(hosts=(elasticsearch.url,)))
    wait_for(lambda: count(client, name) >= len(sent), timeout=60, what="documents indexed")
    assert server.stop() == 0, server.stderr()
    assert count(client, name) == len(sent)
    mapping = next(iter(client.perform("GET", f"/{name}/_mapping").body.values()))["mappings"]["properties"]["ipfix"]["properties"]
    assert mapping["destinationIP"]["type"] == "ip" and mapping["flowKey"]["type"] == "keyword"
    result = client.perform("POST", f"/{name}/_search", {"size": 0, "aggs": {"types": {"terms": {"field": "ipfix.flowTypeStr"}}}})
    assert result.body["aggregations"]["types"]["buckets"]
