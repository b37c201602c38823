"""The ingest pipeline, run by the REAL OpenSearch (``_simulate``), produces exactly the
documents our in-process normalization produces, for records from the real go-ipfix
exporter, in both layouts; and the rendered mappings accept them."""
from __future__ import annotations

import copy

import pytest

from ingest_service.documents import to_document
from ingest_service.engines.client import EngineConfig, connect
from ingest_service.schema import render
from ingest_service.schema.derive import derive
from ingest_service.schema.layout import to_ecs
from tests.engines.fixtures import opensearch  # noqa: F401 - pytest fixture
from tests.support.antrea_capture import capture_antrea


@pytest.fixture(scope="module")
def antrea_documents():
    flow_types = ["pod-to-pod", "pod-to-service", "pod-to-external", "from-external"]
    _, v4 = capture_antrea(24, seed=7, flow_types=flow_types)
    _, v6 = capture_antrea(8, seed=8, ipv6=True, flow_types=flow_types)
    return [to_document(r) for r in v4 + v6]


def in_process(doc: dict, layout: str) -> dict:
    doc = copy.deepcopy(doc)
    derive(doc["ipfix"], None)  # stateless, like the pipeline
    return to_ecs(doc) if layout == "ecs" else doc


@pytest.mark.parametrize("layout", ["logstash", "ecs"])
def test_pipeline_equals_in_process_normalization(opensearch, antrea_documents, layout):  # noqa: F811
    client = connect(EngineConfig(hosts=(opensearch.url,)))
    name = f"parity-{layout}"
    response = client.perform("PUT", f"/_ingest/pipeline/{name}", render.render_pipeline("opensearch", layout))
    assert response.ok, response.body
    response = client.perform("POST", f"/_ingest/pipeline/{name}/_simulate",
                              {"docs": [{"_source": copy.deepcopy(d)} for d in antrea_documents]})
    assert response.ok, response.body
    engine_docs = [item["doc"]["_source"] for item in response.body["docs"]]
    ours = [in_process(d, layout) for d in antrea_documents]
    assert any("flowKeyPodToExternal" in str(d) for d in ours) and any("communityId" in str(d) or "community_id" in str(d) for d in ours)
    for index, (theirs, mine) in enumerate(zip(engine_docs, ours)):
        assert theirs == mine, f"document {index} differs"


@pytest.mark.parametrize("layout", ["logstash", "ecs"])
def test_rendered_mapping_accepts_normalized_documents(opensearch, antrea_documents, layout):  # noqa: F811
    client = connect(EngineConfig(hosts=(opensearch.url,)))
    index = f"flow-mapping-check-{layout}"
    client.perform("DELETE", f"/{index}")
    response = client.perform("PUT", f"/{index}", {"mappings": render.render_mappings(layout)})
    assert response.ok, response.body
    import orjson

    body = b"".join(b'{"index":{}}\n' + orjson.dumps(in_process(d, layout)) + b"\n" for d in antrea_documents)
    response = client.perform("POST", f"/{index}/_bulk", body, params={"refresh": "true"})
    assert response.ok, response.body
    assert not response.body["errors"], [i for i in response.body["items"] if "error" in i["index"]][:3]
    mapping = client.perform("GET", f"/{index}/_mapping").body[index]["mappings"]["properties"]
    if layout == "logstash":
        fields = mapping["ipfix"]["properties"]
        assert fields["sourceIPv4Address"]["type"] == "ip"
        assert fields["flowEndSeconds"]["type"] == "date"
        assert fields["sourcePodLabelsMap"]["properties"]["app"]["type"] == "keyword"
        query = {"query": {"bool": {"filter": [
            {"range": {"ipfix.sourceIP": {"gte": "10.0.0.0", "lte": "10.255.255.255"}}},
            {"range": {"ipfix.flowEndSeconds": {"gte": "now-1d"}}},
        ]}}, "aggs": {"pods": {"terms": {"field": "ipfix.sourcePodName", "size": 50}}}}
        hits = client.perform("POST", f"/{index}/_search", query).body
        assert hits["hits"]["total"]["value"] > 0
        assert hits["aggregations"]["pods"]["buckets"]
    else:
        assert mapping["source"]["properties"]["ip"]["type"] == "ip"
        assert mapping["network"]["properties"]["community_id"]["type"] == "keyword"
