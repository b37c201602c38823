"""`flow-ingest setup` against the REAL engines: idempotent install, documents with the right
types, the default pipeline normalizing plain `_bulk` writes, forced rollover.

What the test engines cannot run (see docs/engines.md): the OpenSearch ISM plugin is not
published on Maven Central, and the Elasticsearch integ-test distribution has no ILM, no
ingest processors and no painless. Setup detects that, warns, and installs the rest; the
ILM/ISM policies themselves are checked against the documented API shape in test_schema.py.
"""
from __future__ import annotations

import copy
import uuid
from dataclasses import replace

import orjson
import pytest

from ingest_service.documents import to_document
from ingest_service.engines.client import EngineConfig, connect
from ingest_service.normalize import Normalizer
from ingest_service.schema import render
from ingest_service.setup import run_setup
from tests.engines.fixtures import elasticsearch, opensearch  # noqa: F401 - pytest fixtures
from tests.support.antrea_capture import capture_antrea


@pytest.fixture(scope="module")
def antrea_records():
    _, records = capture_antrea(30, seed=11, flow_types=["pod-to-pod", "pod-to-service", "pod-to-external"])
    return records


def unique_name() -> str:
    return f"flow-test-{uuid.uuid4().hex[:8]}"


def bulk_create(client, target: str, docs: list[dict], pipeline: str | None = "_none") -> dict:
    meta = {"create": {"_index": target}}
    if pipeline:
        meta["create"]["pipeline"] = pipeline
    body = b"".join(orjson.dumps(meta) + b"\n" + orjson.dumps(d) + b"\n" for d in docs)
    response = client.perform("POST", "/_bulk", body, params={"refresh": "true"})
    assert response.ok, response.body
    assert not response.body["errors"], [i for i in response.body["items"] if "error" in i["create"]][:2]
    return response.body


def test_opensearch_setup_datastream(opensearch, antrea_records):  # noqa: F811
    client = connect(EngineConfig(hosts=(opensearch.url,)))
    config = render.TargetConfig(name=unique_name())
    lines: list[str] = []
    first = run_setup(client, config, out=lines.append)
    assert {s.kind for s in first if s.action == "create"} >= {"pipeline", "component_template", "index_template", "data_stream"}
    assert any("lifecycle" in line for line in lines if line.startswith("WARNING"))  # ISM not installable here
    again = run_setup(client, config, out=lines.append)
    assert all(s.action == "skip" for s in again), [s.describe() for s in again]

    dry: list[str] = []
    run_setup(client, replace(config, retention_days=30), dry_run=True, out=dry.append)
    assert all(s.action == "skip" for s in run_setup(client, config, out=lines.append))  # dry run changed nothing

    normalizer = Normalizer(throughput_state=None)
    normalizer.state = None
    ours = [normalizer.normalize(to_document(copy.deepcopy(r))) for r in antrea_records]
    bulk_create(client, config.name, ours)  # our writer bypasses the default pipeline
    raw = [to_document(copy.deepcopy(r)) for r in antrea_records]
    bulk_create(client, config.name, raw, pipeline=None)  # any other client: the default pipeline normalizes

    search = client.perform("POST", f"/{config.name}/_search", {"size": 200, "sort": ["_doc"]}).body
    sources = [h["_source"] for h in search["hits"]["hits"]]
    assert len(sources) == 2 * len(antrea_records)
    by_key = {}
    for source in sources:
        by_key.setdefault(orjson.dumps(source, option=orjson.OPT_SORT_KEYS), 0)
        by_key[orjson.dumps(source, option=orjson.OPT_SORT_KEYS)] += 1
    assert all(count == 2 for count in by_key.values()), "pipeline-normalized and in-process documents differ"

    mapping = client.perform("GET", f"/{config.name}/_mapping").body
    properties = next(iter(mapping.values()))["mappings"]["properties"]["ipfix"]["properties"]
    assert properties["sourceIPv4Address"]["type"] == "ip" and properties["flowEndSeconds"]["type"] == "date"
    assert properties["octetDeltaCount"]["type"] == "long" and properties["sourcePodName"]["type"] == "keyword"
    query = {"size": 0, "query": {"bool": {"filter": [
        {"term": {"ipfix.sourcePodName": ours[0]["ipfix"]["sourcePodName"]}},
        {"range": {"ipfix.destinationIP": {"gte": "0.0.0.0", "lte": "255.255.255.255"}}},
        {"range": {"ipfix.flowEndSeconds": {"gte": "now-1h", "lte": "now+1h"}}}]}}}
    assert client.perform("POST", f"/{config.name}/_search", query).body["hits"]["total"]["value"] >= 2

    rollover = client.perform("POST", f"/{config.name}/_rollover")
    assert rollover.ok and rollover.body["rolled_over"], rollover.body
    streams = client.perform("GET", f"/_data_stream/{config.name}").body["data_streams"][0]
    assert streams["generation"] == 2


def test_opensearch_setup_alias_and_daily(opensearch, antrea_records):  # noqa: F811
    client = connect(EngineConfig(hosts=(opensearch.url,)))
    alias = render.TargetConfig(mode="alias", name=unique_name())
    run_setup(client, alias, out=lambda _: None)
    assert client.perform("GET", f"/_alias/{alias.name}").body == {
        f"{alias.name}-000001": {"aliases": {alias.name: {"is_write_index": True}}}}
    doc = Normalizer().document(copy.deepcopy(antrea_records[0]))
    body = orjson.dumps({"index": {"_index": alias.name}}) + b"\n" + orjson.dumps(doc) + b"\n"
    assert not client.perform("POST", "/_bulk", body, params={"refresh": "true", "pipeline": "_none"}).body["errors"]
    rolled = client.perform("POST", f"/{alias.name}/_rollover").body
    assert rolled["new_index"] == f"{alias.name}-000002"

    daily = render.TargetConfig(mode="daily")
    run_setup(client, daily, out=lambda _: None)
    index = render.daily_index(doc["@timestamp"])
    body = orjson.dumps({"index": {"_index": index}}) + b"\n" + orjson.dumps(doc) + b"\n"
    assert not client.perform("POST", "/_bulk", body, params={"refresh": "true", "pipeline": "_none"}).body["errors"]
    mapping = client.perform("GET", f"/{index}/_mapping").body[index]["mappings"]
    assert mapping["properties"]["ipfix"]["properties"]["destinationIP"]["type"] == "ip"


def test_elasticsearch_setup_datastream(elasticsearch, antrea_records):  # noqa: F811
    client = connect(EngineConfig(hosts=(elasticsearch.url,)))
    assert client.info.kind == "elasticsearch"
    config = render.TargetConfig(name=unique_name())
    lines: list[str] = []
    steps = run_setup(client, config, out=lines.append)
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 2  # this distribution has neither ingest processors nor ILM
    assert {s.kind for s in steps if s.action == "create"} == {"component_template", "index_template"}
    assert all(s.action == "skip" for s in run_setup(client, config, out=lines.append))

    docs = [Normalizer().document(copy.deepcopy(r)) for r in antrea_records]
    bulk_create(client, config.name, docs, pipeline=None)
    count = client.perform("GET", f"/{config.name}/_count").body["count"]
    assert count == len(docs)
    mapping = client.perform("GET", f"/{config.name}/_mapping").body
    properties = next(iter(mapping.values()))["mappings"]["properties"]["ipfix"]["properties"]
    assert properties["sourceIP"]["type"] == "ip" and properties["bytes"]["type"] == "long"
    template = client.perform("GET", f"/_index_template/{render.index_template_name(config)}").body
    assert template["index_templates"][0]["index_template"]["_meta"]["schema_version"] == render.schema_version()
    rollover = client.perform("POST", f"/{config.name}/_rollover")
    assert rollover.ok and rollover.body["rolled_over"]
