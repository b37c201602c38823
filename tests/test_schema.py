"""The schema table and what is rendered from it (pure: no engine)."""
from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from ingest_service.schema import render
from ingest_service.schema.assets import REPO_ROOT, all_asset_files, stale_assets
from ingest_service.schema.derive import ThroughputState, community_id, derive
from ingest_service.schema.layout import to_ecs
from ingest_service.schema.table import flow_schema
from ingest_service.setup import plan, with_hash

ANTREA = Path(__file__).resolve().parents[1].parent / "shared" / "antrea"


def test_checked_in_assets_are_what_the_schema_renders():
    assert stale_assets(REPO_ROOT) == [], "run: flow-ingest export-assets ."


def test_every_asset_carries_the_schema_version():
    version = render.schema_version()
    for path, text in all_asset_files().items():
        body = json.loads(text)
        if path.startswith("index_templates/component/") or path.startswith("index_templates/elasticsearch") \
                or path.startswith("index_templates/opensearch"):
            assert body["_meta"]["schema_version"] == version, path
            assert body["version"] == render.template_version(), path
        elif path.startswith("pipelines/"):
            assert version in path and body["version"] == render.template_version()


def test_a_mapping_change_changes_the_version(monkeypatch):
    before = render.schema_version()
    original = render.render_mappings

    def changed(layout="logstash", target="ipfix"):
        mapping = original(layout, target)
        mapping["properties"]["extra_field"] = {"type": "keyword"}
        return mapping

    monkeypatch.setattr(render, "render_mappings", changed)
    assert render.schema_version() != before


def test_field_names_are_unique_and_typed():
    schema = flow_schema()
    assert len({f.name for f in schema.fields}) == len(schema.fields)
    assert schema["sourceIPv4Address"].mapping == "ip"
    assert schema["flowEndSeconds"].mapping == "date"
    assert schema["octetDeltaCount"].mapping == "long"
    assert schema["sourcePodName"].element == (56506, 101)
    assert schema["bytes"].derived_from == ("octetTotalCount", "octetDeltaCount")


def _mapped_paths(properties: dict, prefix: str = "") -> dict[str, dict]:
    out = {}
    for name, leaf in properties.items():
        path = f"{prefix}{name}"
        if "properties" in leaf:
            out.update(_mapped_paths(leaf["properties"], path + "."))
        else:
            out[path] = leaf
            for sub, subleaf in (leaf.get("fields") or {}).items():
                out[f"{path}.{sub}"] = subleaf
    return out


@pytest.mark.skipif(not ANTREA.exists(), reason="../shared/antrea not present")
def test_every_field_antreas_dashboards_query_is_mapped_aggregatably():
    mapped = _mapped_paths(render.render_mappings("logstash")["properties"])
    used = set()
    for ndjson in ANTREA.glob("*/kibana.ndjson"):
        used |= set(re.findall(r"ipfix\.[A-Za-z0-9_]+(?:\.keyword)?", ndjson.read_text()))
    assert used, "no fields found"
    missing = sorted(u for u in used if u not in mapped)
    assert not missing
    not_aggregatable = sorted(u for u in used if mapped[u]["type"] not in ("keyword", "ip", "date", "long", "integer", "double", "boolean"))
    assert not not_aggregatable


def antrea_body(**overrides) -> dict:
    body = {
        "flowStartSeconds": "2026-11-27T00:00:00.000Z", "flowEndSeconds": "2026-11-27T00:01:00.000Z",
        "sourceTransportPort": 40000, "destinationTransportPort": 80, "protocolIdentifier": 6,
        "packetTotalCount": 10, "octetTotalCount": 6000, "packetDeltaCount": 5, "octetDeltaCount": 3000,
        "sourceIPv4Address": "10.10.0.1", "destinationIPv4Address": "10.10.1.2",
        "reverseOctetDeltaCount": 600, "sourcePodName": "web-0", "sourcePodNamespace": "prod",
        "destinationPodName": "db-0", "destinationServicePortName": "prod/db:sql", "destinationServicePort": 5432,
        "flowType": 2, "ingressNetworkPolicyName": "", "ingressNetworkPolicyNamespace": "",
        "ingressNetworkPolicyRuleAction": 2, "egressNetworkPolicyType": 2, "egressIP": "",
        "octetDeltaCountFromSourceNode": 3000, "reverseOctetDeltaCountFromSourceNode": 600,
        "sourcePodLabels": '{"app":"web","app.kubernetes.io/name":"shop"}',
        "sourcePodUUID": "0123456789abcdef0123456789abcdef",
    }
    body.update(overrides)
    return body


def test_derived_fields_follow_the_old_logstash_filter():
    body = derive(antrea_body())
    assert body["bytes"] == 6000 and body["packets"] == 10
    assert body["protocolIdentifier"] == 6 and body["protocolName"] == "TCP"
    assert body["flowTypeStr"] == "Inter-Node"
    assert body["ingressNetworkPolicyRuleActionStr"] == "Drop"
    assert body["egressNetworkPolicyTypeStr"] == "Antrea NetworkPolicy"
    assert body["sourceIP"] == "10.10.0.1" and body["destinationIP"] == "10.10.1.2"
    assert body["flowKey"] == body["flowKeyPodToPod"] == "web-0:40000->db-0:80 TCP"
    assert body["flowKeyPodToService"] == "web-0:40000->prod/db:sql5432 TCP"
    assert body["ingressNetworkPolicyName"] == "N/A" and body["ingressNetworkPolicyNamespace"] == "N/A"
    assert "egressIP" not in body  # "" is not an address
    assert body["interval"] == 60
    assert body["throughput"] == 3000 * 8 // 60 and body["reverseThroughput"] == 600 * 8 // 60
    assert body["sourcePodLabelsMap"] == {"app": "web", "app_kubernetes_io/name": "shop"}
    assert body["sourcePodUUID"] == "01234567-89ab-cdef-0123-456789abcdef"
    assert body["communityId"] == community_id("10.10.0.1", "10.10.1.2", 6, 40000, 80)


def test_flows_to_external_use_the_destination_ip():
    body = derive(antrea_body(flowType=3, destinationPodName="", destinationServicePortName=""))
    assert body["flowKey"] == body["flowKeyPodToExternal"] == "web-0:40000->10.10.1.2:80 TCP"
    assert "flowKeyPodToPod" not in body and "flowKeyPodToService" not in body


def test_exporter_throughput_wins_and_state_measures_since_previous_record():
    assert derive(antrea_body(throughput=123))["throughput"] == 123
    state = ThroughputState()
    derive(antrea_body(), state)
    second = derive(antrea_body(flowEndSeconds="2026-11-27T00:01:10.000Z"), state)
    assert second["interval"] == 10 and second["throughput"] == 3000 * 8 // 10


def test_throughput_state_is_bounded_and_expires():
    clock = [0.0]
    state = ThroughputState(max_flows=100, ttl=60, clock=lambda: clock[0])
    for i in range(1000):
        state.previous_end(f"flow-{i}", i)
    assert len(state) == 100 and state.evicted == 900
    clock[0] = 1000.0
    state.expire()
    assert len(state) == 0
    assert state.previous_end("flow-999", 5) is None  # expired entries are not used


def test_community_id_reference_vector():
    # Published example of the Community ID spec (TCP 128.232.110.120:34855 -> 66.35.250.204:80).
    assert community_id("128.232.110.120", "66.35.250.204", 6, 34855, 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


def test_ecs_layout_moves_fields_with_an_ecs_path():
    doc = {"@timestamp": "x", "@version": "1", "host": "192.0.2.1", "type": "ipfix", "ipfix": derive(antrea_body())}
    out = to_ecs(copy.deepcopy(doc))
    assert out["source"]["ip"] == "10.10.0.1" and out["destination"]["port"] == 80
    assert out["network"]["transport"] == "TCP" and out["network"]["bytes"] == 6000
    assert out["kubernetes"]["source"]["pod"]["name"] == "web-0"
    assert out["observer"]["ip"] == "192.0.2.1" and "host" not in out
    assert out["ipfix"]["flowKey"] == "web-0:40000->db-0:80 TCP"  # no ECS path: stays


def test_target_config_validation():
    with pytest.raises(ValueError):
        render.TargetConfig(name="flows")
    with pytest.raises(ValueError):
        render.TargetConfig(mode="weekly")


def test_setup_plan_is_idempotent_and_detects_changes():
    config = render.TargetConfig()
    from ingest_service.schema.assets import desired_assets

    first = plan("opensearch", config, {})
    assert [s.action for s in first] == ["create"] * 5 + ["create"]
    installed = {(a["kind"], a["name"]): with_hash(a["kind"], a["body"]) for a in desired_assets("opensearch", config)}
    installed[("target", config.name)] = True
    assert all(s.action == "skip" for s in plan("opensearch", config, installed))
    longer = replace(config, retention_days=30)
    changed = plan("opensearch", longer, installed)
    assert [(s.kind, s.action) for s in changed if s.action != "skip"] == [("ism_policy", "update")]


def test_lifecycle_policies():
    config = render.TargetConfig(retention_days=3)
    ilm = render.render_ilm_policy(config)["policy"]["phases"]
    assert ilm["hot"]["actions"]["rollover"] == {"max_age": "1d", "max_primary_shard_size": "50gb"}
    assert ilm["delete"]["min_age"] == "3d"
    ism = render.render_ism_policy(config)["policy"]
    assert ism["ism_template"][0]["index_patterns"] == [".ds-flow-ipfix-*"]
    daily = render.render_ilm_policy(replace(config, mode="daily"))["policy"]["phases"]
    assert daily["hot"]["actions"] == {}  # daily indices never roll over
    assert render.daily_index("2026-11-27T23:59:59.000Z") == "flow-2026.11.27"
