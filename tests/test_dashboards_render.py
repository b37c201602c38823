"""Structural tests on every rendered saved object, and the static half of Antrea
compatibility: every field Antrea's original objects use exists in our mapping with a
type that supports the use."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ingest_service.dashboards import catalog, fields
from ingest_service.dashboards.inspect import embedded_json, field_uses, loose_json, parse_ndjson
from ingest_service.dashboards.objects import object_id
from ingest_service.dashboards.render import CHECKED_IN_DIR, FILE_NAMES, TARGETS, render_ndjson, stale_files
from ingest_service.schema.table import flow_schema

ANTREA = Path(__file__).resolve().parents[1].parent / "shared" / "antrea"
ANTREA_FILES = sorted(ANTREA.glob("*/kibana.ndjson"))
ALLOWED_VIS_TYPES = {"pie", "histogram", "horizontal_bar", "line", "area", "heatmap", "table", "metric", "markdown", "vega"}


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, parse_ndjson(render_ndjson(request.param))


def test_checked_in_files_are_current():
    assert stale_files() == [], "run: flow-ingest dashboards export kibana_objects"
    for target in TARGETS:
        assert (CHECKED_IN_DIR / FILE_NAMES[target]).read_text() == render_ndjson(target)


def test_rendering_is_deterministic_and_ids_are_stable(rendered):
    target, objects = rendered
    assert render_ndjson(target) == render_ndjson(target)
    ids = [o["id"] for o in objects]
    assert len(ids) == len(set(ids))
    # pinned: an id change would orphan installed objects and links
    assert object_id("index-pattern", "flow") == "ba2e29e3-7b61-53a6-8021-a252e57287c8"
    assert object_id("dashboard", "overview") in ids
    for obj in objects:
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", obj["id"])


def test_both_targets_get_the_common_legacy_format():
    # Today the objects both products import are the same; the targets stay separate files
    # so a difference can be rendered for one without touching install or docs.
    kibana, osd = (parse_ndjson(render_ndjson(t)) for t in TARGETS)
    assert kibana == osd
    assert all("fieldAttrs" not in o["attributes"] for o in kibana)  # 7.11+ only: older servers may refuse it


def test_counts(rendered):
    _, objects = rendered
    kinds = [o["type"] for o in objects]
    assert kinds.count("index-pattern") == 1 and kinds.count("search") == 1
    assert kinds.count("dashboard") == len(catalog.DASHBOARD_KEYS) == 7
    assert kinds.count("visualization") >= 40


def test_every_reference_resolves(rendered):
    _, objects = rendered
    present = {(o["type"], o["id"]) for o in objects}
    for obj in objects:
        names = [r["name"] for r in obj["references"]]
        assert len(names) == len(set(names)), obj["id"]
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in present, f"{obj['id']}: dangling {ref}"
        parsed = embedded_json(obj)
        wanted = set(re.findall(r'"(?:indexRefName|panelRefName)":"([^"]+)"',
                                json.dumps(parsed, separators=(",", ":"))))
        assert wanted <= set(names), f"{obj['id']}: {wanted - set(names)} have no reference"
        if obj["type"] == "dashboard":
            assert {p["panelRefName"] for p in parsed["panelsJSON"]} == set(names)


def test_json_strings_parse_and_vega_declares_schema(rendered):
    _, objects = rendered
    vega = 0
    for obj in objects:
        parsed = embedded_json(obj)
        if obj["type"] == "visualization":
            assert {"visState", "uiStateJSON", "searchSourceJSON"} <= set(parsed)
            assert parsed["visState"]["title"] == obj["attributes"]["title"]
            assert parsed["visState"]["type"] in ALLOWED_VIS_TYPES
        if "vegaSpec" in parsed:
            vega += 1
            assert parsed["vegaSpec"]["$schema"] == "https://vega.github.io/schema/vega/v5.json"
            # strict JSON, not only the HJSON Kibana tolerates
            assert json.loads(parsed["visState"]["params"]["spec"]) == parsed["vegaSpec"]
        if obj["type"] == "dashboard":
            for panel in parsed["panelsJSON"]:
                grid = panel["gridData"]
                assert grid["x"] + grid["w"] <= 48
    assert vega >= 8


def test_every_field_used_exists_with_a_type_that_supports_the_use(rendered):
    _, objects = rendered
    leaves = fields.mapping_leaves("logstash")
    uses = [u for o in objects for u in field_uses(o)]
    assert len(uses) > 150
    assert [p for u in uses if (p := u.problem(leaves))] == []
    aggregated = {u.field for u in uses if u.use not in ("column", "filter", "time")}
    assert all(leaves[f] in fields.AGGREGATABLE_TYPES for f in aggregated)


def test_index_pattern_fields_and_formats_come_from_schema_and_mapping(rendered):
    target, objects = rendered
    pattern = next(o for o in objects if o["type"] == "index-pattern")
    attributes = pattern["attributes"]
    assert attributes["title"] == "flow-*" and attributes["timeFieldName"] == "ipfix.flowEndSeconds"
    specs = json.loads(attributes["fields"])
    assert {s["name"]: s["esTypes"][0] for s in specs} == fields.mapping_leaves("logstash")
    formats = json.loads(attributes["fieldFormatMap"])
    schema = flow_schema()
    for f in schema.fields:
        key = f"ipfix.{f.name}"
        if f.fmt == "bytes":
            assert formats[key] == {"id": "bytes"}
        elif f.fmt == "bitsps":
            assert formats[key]["id"] == "number"
        elif f.fmt == "duration_s":
            assert formats[key]["params"]["inputFormat"] == "seconds"
        else:
            assert key not in formats


def test_every_dashboard_hides_system_and_collector_namespaces(rendered):
    _, objects = rendered
    namespace_paths = {f"ipfix.{n}" for n in fields.with_role("namespace")}
    assert namespace_paths == {"ipfix.sourcePodNamespace", "ipfix.destinationPodNamespace"}
    for obj in (o for o in objects if o["type"] == "dashboard"):
        filters = embedded_json(obj)["searchSourceJSON"]["filter"]
        hiding = {f["meta"]["key"]: f for f in filters if f["meta"]["negate"]}
        assert set(hiding) == namespace_paths, obj["attributes"]["title"]
        for f in hiding.values():
            assert f["meta"]["params"] == ["kube-system", "flow-aggregator", "flow-ingest"]
            assert not f["meta"]["disabled"]


def test_dashboards_and_their_content(rendered):
    _, objects = rendered
    by_id = {o["id"]: o for o in objects}
    titles = {o["attributes"]["title"]: o for o in objects if o["type"] == "dashboard"}
    assert set(titles) == set(catalog.DASHBOARD_TITLES.values())

    def panel_types(title):
        panels = [by_id[r["id"]] for r in titles[title]["references"]]
        return [json.loads(p["attributes"]["visState"])["type"] if p["type"] == "visualization" else p["type"]
                for p in panels]

    for title in ("Pod-to-Pod Flows", "Pod-to-Service Flows", "Pod-to-External Flows", "Node Throughput"):
        assert panel_types(title).count("vega") == 2, title
    assert {"heatmap", "line"} <= set(panel_types("Node Throughput"))
    assert {"search", "histogram"} <= set(panel_types("Flow Records"))
    assert {"pie", "table", "horizontal_bar", "vega"} <= set(panel_types("Network Policy"))
    assert {"metric", "pie", "horizontal_bar", "area"} <= set(panel_types("Flow Overview"))


def test_role_checks_refuse_misused_fields():
    c = catalog.Catalog("kibana")
    with pytest.raises(fields.FieldRoleError, match="role 'pod'"):
        c.metric("sourcePodName")
    with pytest.raises(fields.FieldRoleError, match="role 'metric'"):
        c.split("octetDeltaCount")
    with pytest.raises(fields.FieldRoleError, match="not in the schema"):
        c.split("noSuchField")
    with pytest.raises(fields.FieldRoleError, match="object"):
        fields.checked("sourcePodLabelsMap", frozenset({"labels"}), "a split")


def test_ecs_layout_renders_with_ecs_paths():
    objects = parse_ndjson(render_ndjson("kibana", layout="ecs"))
    leaves = fields.mapping_leaves("ecs")
    uses = [u for o in objects for u in field_uses(o)]
    assert [p for u in uses if (p := u.problem(leaves))] == []
    assert any(u.field == "kubernetes.source.pod.name" for u in uses)


def test_loose_json_reads_what_kibana_accepts():
    assert loose_json('{"a": [1, 2,], // x\n "b": "http://x" /* y */\n "c": {"d": true}\n "e": null}') == \
        {"a": [1, 2], "b": "http://x", "c": {"d": True}, "e": None}


@pytest.mark.skipif(not ANTREA_FILES, reason="../shared/antrea not present")
@pytest.mark.parametrize("path", ANTREA_FILES, ids=lambda p: p.parent.name)
def test_antrea_original_objects_fit_our_default_mapping(path):
    objects = parse_ndjson(path.read_text())
    leaves = fields.mapping_leaves("logstash")
    uses = [u for o in objects for u in field_uses(o)]
    used_kinds = {u.use for u in uses}
    assert {"terms", "sum", "date_histogram"} <= used_kinds
    assert len({u.field for u in uses}) > 20
    assert [p for u in uses if (p := u.problem(leaves))] == []


def test_docs_table_is_current():
    from ingest_service.dashboards.render import panels_table

    docs = Path(__file__).resolve().parents[1] / "docs" / "dashboards.md"
    assert panels_table() in docs.read_text(), "regenerate the table in docs/dashboards.md (render.panels_table)"
