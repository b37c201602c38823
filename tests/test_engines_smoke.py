"""Smoke tests for tests/engines: real OpenSearch and Elasticsearch on 127.0.0.1.

They prove what each engine assembled from Maven Central can do (see
docs/engines.md). From a clean cache the first test also downloads the
engines (~190 MiB through Maven).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engines import DEFAULT_VERSIONS, Engine
from tests.engines.fixtures import (  # noqa: F401 - fixtures
    elasticsearch,
    engine_factory,
    opensearch,
    require_engines,
)

REPO = Path(__file__).resolve().parent.parent


def call(engine: Engine, method: str, path: str, body=None, expect=(200, 201)):
    status, answer = engine.request(method, path, body)
    expect = (expect,) if isinstance(expect, int) else expect
    assert status in expect, f"{method} {path} -> {status}: {json.dumps(answer)[:2000]}"
    return answer


def bulk_body(index: str | None, docs: list[dict]) -> str:
    lines = []
    for doc in docs:
        lines.append(json.dumps({"index": {"_index": index}} if index else {"index": {}}))
        lines.append(json.dumps(doc))
    return "\n".join(lines) + "\n"


def assert_bulk_ok(answer: dict, n: int) -> None:
    assert answer["errors"] is False, json.dumps(answer)[:2000]
    assert len(answer["items"]) == n


# --------------------------------------------------------------------------
# OpenSearch
# --------------------------------------------------------------------------

FLOW_PIPELINE = {
    "description": "flow-ingest smoke: every processor family we rely on",
    "processors": [
        {"json": {"field": "raw", "target_field": "parsed"}},
        {"rename": {"field": "parsed.src", "target_field": "source_ip"}},
        {"convert": {"field": "parsed.bytes", "type": "long", "target_field": "bytes"}},
        # NB: use UNIX_MS, not epoch_millis: on OpenSearch 2.19.6 the date processor with
        # "epoch_millis" silently yields Jan 1st of the current year (see docs/engines.md).
        {"date": {"field": "parsed.ts", "formats": ["UNIX_MS"], "target_field": "@timestamp"}},
        {"set": {"field": "event_kind", "value": "flow"}},
        {
            "script": {
                "lang": "painless",
                "source": "ctx.kbytes = ctx.bytes / params.div; ctx.big = ctx.bytes > params.limit;",
                "params": {"div": 1024, "limit": 4096},
            }
        },
        {"remove": {"field": ["raw", "parsed"]}},
    ],
}


def test_opensearch_node(opensearch):
    info = call(opensearch, "GET", "/")
    assert info["version"]["distribution"] == "opensearch"
    assert info["version"]["number"] == opensearch.version
    assert opensearch.url.startswith("http://127.0.0.1:")
    loaded = opensearch.plugins()
    for module in ("transport-netty4", "lang-painless", "ingest-common", "analysis-common",
                   "mapper-extras", "reindex", "lang-mustache"):
        assert module in loaded, sorted(loaded)
    health = call(opensearch, "GET", "/_cluster/health")
    assert health["status"] in ("green", "yellow")
    assert health["number_of_nodes"] == 1


def test_opensearch_ingest_pipeline_with_painless(opensearch):
    call(opensearch, "PUT", "/_ingest/pipeline/smoke-flow", FLOW_PIPELINE)
    raw = json.dumps({"src": "10.1.2.3", "bytes": "8192", "ts": 1700000000000})
    sim = call(
        opensearch,
        "POST",
        "/_ingest/pipeline/smoke-flow/_simulate",
        {"docs": [{"_index": "x", "_source": {"raw": raw}}]},
    )
    doc = sim["docs"][0]["doc"]["_source"]
    assert doc["source_ip"] == "10.1.2.3"
    assert doc["bytes"] == 8192
    assert doc["kbytes"] == 8
    assert doc["big"] is True
    assert doc["event_kind"] == "flow"
    assert doc["@timestamp"].startswith("2023-11-14T22:13:20")
    assert "raw" not in doc and "parsed" not in doc

    # the same pipeline on a real write path
    answer = call(
        opensearch,
        "POST",
        "/_bulk?pipeline=smoke-flow&refresh=true",
        bulk_body("smoke-pipeline", [{"raw": raw}, {"raw": raw.replace("8192", "100")}]),
    )
    assert_bulk_ok(answer, 2)
    hits = call(opensearch, "POST", "/smoke-pipeline/_search", {"sort": [{"bytes": "asc"}]})["hits"]["hits"]
    assert [h["_source"]["big"] for h in hits] == [False, True]

    # painless elsewhere: update_by_query (reindex module) and script_fields
    upd = call(
        opensearch,
        "POST",
        "/smoke-pipeline/_update_by_query?refresh=true",
        {"script": {"lang": "painless", "source": "ctx._source.bytes += 1"}},
    )
    assert upd["updated"] == 2
    res = call(
        opensearch,
        "POST",
        "/smoke-pipeline/_search",
        {"script_fields": {"b2": {"script": {"source": "doc['bytes'].value * 2"}}}, "sort": [{"bytes": "asc"}]},
    )
    assert [h["fields"]["b2"][0] for h in res["hits"]["hits"]] == [202, 16386]


def test_opensearch_composable_template_rollover_alias_bulk(opensearch):
    _template_rollover_bulk(opensearch, "smoke-os-flows")


def test_opensearch_ism(opensearch):
    if "opensearch-index-management" not in opensearch.plugins():
        pytest.skip(
            "ISM is not available: org.opensearch.plugin:opensearch-index-management is not published on "
            "Maven Central (mvn dependency:get -> 'Could not find artifact'); install it from a local zip "
            "with FLOW_INGEST_OPENSEARCH_PLUGIN_ZIPS, see docs/engines.md"
        )
    policy = {
        "policy": {
            "description": "smoke",
            "default_state": "hot",
            "states": [{"name": "hot", "actions": [{"rollover": {"min_doc_count": 1000000}}], "transitions": []}],
            "ism_template": [{"index_patterns": ["smoke-ism-*"], "priority": 100}],
        }
    }
    call(opensearch, "PUT", "/_plugins/_ism/policies/smoke-policy", policy)
    call(opensearch, "PUT", "/smoke-ism-000001", {"aliases": {"smoke-ism": {"is_write_index": True}}})
    deadline = time.monotonic() + 60
    while True:
        explain = call(opensearch, "GET", "/_plugins/_ism/explain/smoke-ism-000001")
        entry = explain.get("smoke-ism-000001", {})
        policy_id = entry.get("index.plugins.index_state_management.policy_id") or entry.get("policy_id")
        if policy_id == "smoke-policy":
            break
        assert time.monotonic() < deadline, explain
        time.sleep(1)


def test_opensearch_kill_and_restart_keeps_acknowledged_writes(engine_factory, tmp_path):
    data_dir = tmp_path / "data"
    engine = engine_factory("opensearch", data_dir=data_dir)
    url = engine.url
    call(engine, "PUT", "/durable", {"settings": {"number_of_shards": 1, "number_of_replicas": 0}})
    answer = call(engine, "POST", "/_bulk", bulk_body("durable", [{"n": i} for i in range(50)]))
    assert_bulk_ok(answer, 50)  # acknowledged, never refreshed/flushed

    engine.kill()
    assert not engine.is_running()
    with pytest.raises(OSError):
        import urllib.request

        urllib.request.urlopen(url + "/", timeout=2)

    engine.restart()
    assert engine.url == url and engine.data_dir == data_dir
    call(engine, "GET", "/_cluster/health/durable?wait_for_status=green&timeout=60s")
    call(engine, "POST", "/durable/_refresh")
    assert call(engine, "GET", "/durable/_count")["count"] == 50

    # graceful restart as well
    engine.restart()
    assert call(engine, "GET", "/durable/_count")["count"] == 50


# --------------------------------------------------------------------------
# Elasticsearch
# --------------------------------------------------------------------------


def test_elasticsearch_node(elasticsearch):
    health = call(elasticsearch, "GET", "/_cluster/health")
    assert health["status"] in ("green", "yellow") and health["number_of_nodes"] == 1
    nodes = call(elasticsearch, "GET", "/_nodes")["nodes"]
    assert [n["version"] for n in nodes.values()] == [elasticsearch.version]
    loaded = elasticsearch.plugins()
    assert {"transport-netty4", "x-pack-core", "x-pack-security"} <= loaded, sorted(loaded)


def test_elasticsearch_composable_template_rollover_alias_bulk(elasticsearch):
    _template_rollover_bulk(elasticsearch, "smoke-es-flows")


def test_elasticsearch_data_stream(elasticsearch):
    call(
        elasticsearch,
        "PUT",
        "/_index_template/smoke-ds",
        {
            "index_patterns": ["smoke-ds-*"],
            "data_stream": {},
            "priority": 200,
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {"properties": {"bytes": {"type": "long"}}},
            },
        },
    )
    docs = [{"@timestamp": "2024-01-01T00:00:0%dZ" % i, "bytes": i} for i in range(3)]
    lines = "".join(json.dumps({"create": {}}) + "\n" + json.dumps(d) + "\n" for d in docs)
    assert_bulk_ok(call(elasticsearch, "POST", "/smoke-ds-flows/_bulk?refresh=true", lines), 3)
    indices = call(elasticsearch, "GET", "/_cat/indices/.ds-smoke-ds-flows-*?format=json&expand_wildcards=all")
    assert len(indices) == 1
    roll = call(elasticsearch, "POST", "/smoke-ds-flows/_rollover")
    assert roll["rolled_over"] is True and roll["new_index"].endswith("-000002")
    assert_bulk_ok(call(elasticsearch, "POST", "/smoke-ds-flows/_bulk?refresh=true", lines), 3)
    assert call(elasticsearch, "GET", "/smoke-ds-flows/_count")["count"] == 6


def test_elasticsearch_missing_features_are_as_documented(elasticsearch):
    """What the Maven-Central-only ES cannot do (docs/engines.md): fail loudly if that changes."""
    status, answer = elasticsearch.request(
        "PUT", "/_ingest/pipeline/smoke-set", {"processors": [{"set": {"field": "a", "value": 1}}]}
    )
    assert status == 400 and "No processor type exists with name [set]" in json.dumps(answer)
    status, answer = elasticsearch.request("PUT", "/_ilm/policy/smoke", {"policy": {"phases": {}}})
    assert status in (400, 405) and "_ilm/policy/smoke" in json.dumps(answer)
    status, answer = elasticsearch.request("GET", "/_data_stream")
    assert status in (400, 405), answer
    status, answer = elasticsearch.request("GET", "/")
    assert status in (400, 405), answer


# --------------------------------------------------------------------------
# shared
# --------------------------------------------------------------------------


def _template_rollover_bulk(engine: Engine, name: str) -> None:
    call(
        engine,
        "PUT",
        f"/_component_template/{name}-settings",
        {"template": {"settings": {"number_of_shards": 1, "number_of_replicas": 0}}},
    )
    call(
        engine,
        "PUT",
        f"/_index_template/{name}",
        {
            "index_patterns": [f"{name}-*"],
            "composed_of": [f"{name}-settings"],
            "priority": 100,
            "template": {
                "mappings": {
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "bytes": {"type": "long"},
                        "src": {"type": "ip"},
                    }
                }
            },
        },
    )
    first = f"{name}-000001"
    call(engine, "PUT", f"/{first}", {"aliases": {name: {"is_write_index": True}}})
    docs = [{"@timestamp": "2024-01-01T00:00:00Z", "bytes": i, "src": f"10.0.0.{i}"} for i in range(3)]
    assert_bulk_ok(call(engine, "POST", f"/{name}/_bulk?refresh=true", bulk_body(None, docs)), 3)

    roll = call(engine, "POST", f"/{name}/_rollover", {"conditions": {"max_docs": 1}})
    assert roll["rolled_over"] is True, roll
    assert roll["new_index"] == f"{name}-000002"

    aliases = call(engine, "GET", f"/_alias/{name}")
    assert aliases[f"{name}-000002"]["aliases"][name]["is_write_index"] is True
    assert aliases[first]["aliases"][name].get("is_write_index") is False
    mapping = call(engine, "GET", f"/{name}-000002/_mapping")
    assert mapping[f"{name}-000002"]["mappings"]["properties"]["src"]["type"] == "ip"
    settings = call(engine, "GET", f"/{name}-000002/_settings")
    assert settings[f"{name}-000002"]["settings"]["index"]["number_of_replicas"] == "0"

    assert_bulk_ok(call(engine, "POST", f"/{name}/_bulk?refresh=true", bulk_body(None, docs[:2])), 2)
    assert call(engine, "GET", f"/{name}-000002/_count")["count"] == 2
    assert call(engine, "GET", f"/{name}/_count")["count"] == 5


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cli_fetch_start_stop(tmp_path):
    """`python -m tests.engines` as CI scripts use it."""
    require_engines()
    env = dict(os.environ)
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "tests.engines", *a], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    fetched = run("fetch", "elasticsearch")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.strip().endswith(f"elasticsearch-{DEFAULT_VERSIONS['elasticsearch']}") or os.environ.get(
        "FLOW_INGEST_ELASTICSEARCH_VERSION"
    )

    started = run("start", "elasticsearch", "--data-dir", str(tmp_path / "data"))
    assert started.returncode == 0, started.stderr
    url, meta = started.stdout.strip().splitlines()[-2:]
    assert url.startswith("http://127.0.0.1:")
    fields = dict(kv.split("=", 1) for kv in meta.split())
    handle, pid = fields["handle"], int(fields["pid"])
    try:
        import urllib.request

        with urllib.request.urlopen(url + "/_cluster/health", timeout=10) as resp:
            assert json.load(resp)["status"] in ("green", "yellow")
        listed = run("list")
        assert handle in listed.stdout and "running" in listed.stdout
    finally:
        stopped = run("stop", handle)
    assert stopped.returncode == 0, stopped.stderr
    assert not _alive(pid)
    assert handle not in run("list").stdout
