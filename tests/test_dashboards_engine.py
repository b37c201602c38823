"""Every dashboard panel's query on a real OpenSearch loaded with flows from the real
go-ipfix exporter, checked against what the records sent imply.

The exporter's IPFIX is received on a TCP socket opened here, decoded with FlowDecoder,
normalized and bulk-indexed into ``flow-dashtest-*`` created with the rendered mappings.
Each panel (ours and Antrea's original ones) is translated into the search Kibana would
send (``dashboards.translate``) and run on the engine; the same request is evaluated in
Python over the records as the exporter reported sending them (``-out``), and the two
answers must agree bucket for bucket.  A few panels are also checked against sums
written out by hand, independent of the request translation.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import threading
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ingest_service.cli import iter_raw_messages
from ingest_service.dashboards import translate
from ingest_service.dashboards.fields import HIDDEN_NAMESPACES, mapping_leaves
from ingest_service.dashboards.inspect import embedded_json, parse_ndjson
from ingest_service.dashboards.render import render_ndjson
from ingest_service.engines.client import EngineConfig, connect
from ingest_service.ipfix.decoder import FlowDecoder
from ingest_service.normalize import Normalizer
from ingest_service.schema.derive import ThroughputState, derive
from ingest_service.schema.render import render_mappings
from tests.engines.fixtures import opensearch  # noqa: F401 - fixture
from tests.support.goexporter import run_goexporter

ANTREA = Path(__file__).resolve().parents[1].parent / "shared" / "antrea"
ANTREA_FILES = sorted(ANTREA.glob("*/kibana.ndjson"))
RECORDS = 400
AGG_VIS_TYPES = {"pie", "histogram", "horizontal_bar", "line", "area", "heatmap", "table", "metric"}
LEAVES = mapping_leaves("logstash")


# -- loading the engine ------------------------------------------------------------------

def receive_tcp(count: int, seed: int) -> tuple[list[dict], bytes]:
    server = socket.create_server(("127.0.0.1", 0))
    data = bytearray()

    def accept():
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65536):
                data.extend(chunk)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        sent = run_goexporter(server.getsockname()[:2], "tcp", count, seed=seed, timeout=120)
        thread.join(30)
    finally:
        server.close()
    assert not thread.is_alive()
    return sent, bytes(data)


@pytest.fixture(scope="module")
def flows(opensearch):  # noqa: F811
    sent, stream = receive_tcp(RECORDS, seed=11)
    decoder, normalizer = FlowDecoder(), Normalizer()
    session = ("tcp", "127.0.0.1", 1, 0)
    documents = [normalizer.document(record) for message in iter_raw_messages(stream, defaultdict(int))
                 for record in decoder.decode(message, session, received_at=0.0)]
    assert len(documents) == len(sent) == RECORDS

    # What the records sent imply: the exporter's own report, with the derived fields.
    state = ThroughputState()
    expected = [{"@timestamp": r["export_time_min"], "ipfix": derive(dict(r["fields"]), state)} for r in sent]

    client = connect(EngineConfig(hosts=(opensearch.url,)))
    index = f"flow-dashtest-{uuid.uuid4().hex[:8]}"
    created = client.perform("PUT", f"/{index}", {"settings": {"number_of_shards": 1, "number_of_replicas": 0},
                                                 "mappings": render_mappings("logstash")})
    assert created.ok, created.body
    lines = []
    for doc in documents:
        lines += [json.dumps({"index": {"_index": index}}), json.dumps(doc)]
    answer = client.bulk(("\n".join(lines) + "\n").encode(), params={"refresh": "true"})
    assert answer["errors"] is False, json.dumps(answer)[:2000]
    ends = [r["fields"]["flowEndSeconds"] for r in sent]
    time_range = (_iso(min(ends) - 3600), _iso(max(ends) + 3600))
    yield {"client": client, "index": index, "sent": sent, "expected": expected, "time_range": time_range}
    client.perform("DELETE", f"/{index}")


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def search(flows: dict, body: dict, index: str | None = None) -> dict:
    response = flows["client"].perform("POST", f"/{index or flows['index']}/_search", body)
    assert response.ok, f"{json.dumps(body)[:1500]}\n-> {json.dumps(response.body)[:1500]}"
    return response.body


# -- the same request, evaluated in Python ----------------------------------------------

_MISSING = object()


def doc_value(doc: dict, path: str):
    """The value the engine indexes for ``path``, normalized by the mapping type; _MISSING if none."""
    es_type = LEAVES.get(path)
    if es_type is None:
        return _MISSING
    source = path.removesuffix(".keyword")  # a .keyword multi-field indexes its parent's value as text
    node = doc
    for part in source.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    if node is None:
        return _MISSING
    if es_type == "keyword":
        text = str(node).lower() if isinstance(node, bool) else str(node)
        return _MISSING if len(text) > 1024 else text
    if es_type == "date":
        if isinstance(node, (int, float)):
            return int(node * 1000)
        return int(datetime.fromisoformat(node.replace("Z", "+00:00")).timestamp() * 1000)
    if es_type == "ip":
        return str(ipaddress.ip_address(node)) if node != "" else _MISSING
    return node


def matches(doc: dict, query: dict) -> bool:
    (kind, spec), = query.items()
    if kind == "match_all":
        return True
    if kind == "bool":
        must = spec.get("must", []) + spec.get("filter", [])
        if isinstance(must, dict):
            must = [must]
        if not all(matches(doc, q) for q in must):
            return False
        if any(matches(doc, q) for q in spec.get("must_not", [])):
            return False
        should = spec.get("should", [])
        needed = spec.get("minimum_should_match", 1 if should and not must else 0)
        return sum(matches(doc, q) for q in should) >= needed
    if kind == "exists":
        return doc_value(doc, spec["field"]) is not _MISSING
    if kind in ("match_phrase", "term"):
        (path, value), = spec.items()
        value = value.get("value", value.get("query")) if isinstance(value, dict) else value
        return doc_value(doc, path) == value
    if kind == "terms":
        (path, values), = spec.items()
        return doc_value(doc, path) in values
    if kind == "range":
        (path, bounds), = spec.items()
        value = doc_value(doc, path)
        if value is _MISSING:
            return False
        to_ms = lambda v: int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)  # noqa: E731
        return to_ms(bounds["gte"]) <= value <= to_ms(bounds["lte"])
    raise AssertionError(f"evaluator: unsupported query {kind}")


def evaluate(body: dict, docs: list[dict]) -> dict:
    selected = [d for d in docs if matches(d, body.get("query", {"match_all": {}}))]
    return {"hits": {"total": {"value": len(selected)}}, "aggregations": evaluate_aggs(body.get("aggs", {}), selected)}


def _metric(kind: str, spec: dict, docs: list[dict]):
    values = [v for d in docs if (v := doc_value(d, spec["field"])) is not _MISSING]
    if kind == "sum":
        return sum(values)
    if kind == "avg":
        return sum(values) / len(values) if values else None
    if kind in ("max", "min"):
        return (max if kind == "max" else min)(values) if values else None
    if kind == "cardinality":
        return len(set(values))
    if kind == "value_count":
        return len(values)
    raise AssertionError(f"evaluator: unsupported metric {kind}")


def evaluate_aggs(aggs: dict, docs: list[dict]) -> dict:
    out = {}
    for name, agg in aggs.items():
        sub = agg.get("aggs", {})
        kind = next(k for k in agg if k != "aggs")
        spec = agg[kind]
        if kind in ("sum", "avg", "max", "min", "cardinality", "value_count"):
            out[name] = {"value": _metric(kind, spec, docs)}
        elif kind == "filter":
            chosen = [d for d in docs if matches(d, spec)]
            out[name] = {"doc_count": len(chosen), **evaluate_aggs(sub, chosen)}
        elif kind in ("terms", "date_histogram"):
            groups: dict = defaultdict(list)
            for d in docs:
                value = doc_value(d, spec["field"])
                if value is _MISSING:
                    continue
                if kind == "date_histogram":
                    width = {"1m": 60_000, "1h": 3_600_000}[spec["fixed_interval"]]
                    value = value // width * width
                groups[value].append(d)
            buckets = [{"key": k, "doc_count": len(v), **evaluate_aggs(sub, v)} for k, v in groups.items()]
            out[name] = {"buckets": sorted(buckets, key=lambda b: b["key"])}
        elif kind == "composite":
            groups = defaultdict(list)
            sources = [next(iter(s.items())) for s in spec["sources"]]
            for d in docs:
                key = {}
                for source_name, source in sources:
                    terms = source["terms"]
                    value = doc_value(d, terms["field"])
                    if value is _MISSING and not terms.get("missing_bucket"):
                        break
                    key[source_name] = None if value is _MISSING else value
                else:
                    groups[json.dumps(key, sort_keys=True)].append(d)
            out[name] = {"buckets": [{"key": json.loads(k), "doc_count": len(v), **evaluate_aggs(sub, v)}
                                     for k, v in groups.items()]}
        else:
            raise AssertionError(f"evaluator: unsupported aggregation {kind}")
    return out


def close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def compare(aggs: dict, got: dict, want: dict, where: str) -> None:
    """Engine answer vs evaluated answer, for the aggregations requested in ``aggs``."""
    for name, agg in aggs.items():
        kind = next(k for k in agg if k != "aggs")
        sub = agg.get("aggs", {})
        here = f"{where}/{name}"
        if kind in ("sum", "avg", "max", "min", "cardinality", "value_count"):
            assert close(got[name]["value"], want[name]["value"]), f"{here}: {got[name]} != {want[name]}"
        elif kind == "filter":
            assert got[name]["doc_count"] == want[name]["doc_count"], here
            compare(sub, got[name], want[name], here)
        elif kind == "date_histogram":
            engine = [b for b in got[name]["buckets"] if b["doc_count"] > 0]
            assert [b["key"] for b in engine] == [b["key"] for b in want[name]["buckets"]], here
            for g, w in zip(engine, want[name]["buckets"]):
                assert g["doc_count"] == w["doc_count"], here
                compare(sub, g, w, f"{here}[{g['key']}]")
        elif kind == "composite":
            assert "after_key" not in got[name] or len(got[name]["buckets"]) < agg[kind]["size"], f"{here}: more pages"
            engine = {json.dumps(b["key"], sort_keys=True): b for b in got[name]["buckets"]}
            wanted = {json.dumps(b["key"], sort_keys=True): b for b in want[name]["buckets"]}
            assert set(engine) == set(wanted), f"{here}: {set(engine) ^ set(wanted)}"
            for key, bucket in engine.items():
                assert bucket["doc_count"] == wanted[key]["doc_count"], here
                compare(sub, bucket, wanted[key], f"{here}[{key}]")
        elif kind == "terms":
            compare_top_terms(agg[kind], sub, got[name]["buckets"], want[name]["buckets"], here)
        else:
            raise AssertionError(kind)


def compare_top_terms(spec: dict, sub: dict, engine: list[dict], wanted: list[dict], where: str) -> None:
    """The engine's buckets are a top-N of the wanted ones: right values, right size, and no
    bucket left out that ranks strictly higher than one shown (ties may go either way)."""
    by_key = {str(b["key"]): b for b in wanted}
    (order_name, direction), = spec.get("order", {"_count": "desc"}).items()

    def rank(bucket):
        value = bucket["doc_count"] if order_name == "_count" else bucket[order_name]["value"]
        return value if direction == "desc" else -value

    assert len(engine) == min(spec.get("size", 10), len(wanted)), f"{where}: {len(engine)} buckets of {len(wanted)}"
    for bucket in engine:
        key = str(bucket.get("key_as_string", bucket["key"])) if LEAVES.get(spec["field"]) == "ip" else str(bucket["key"])
        assert key in by_key, f"{where}: unexpected bucket {key!r}"
        assert bucket["doc_count"] == by_key[key]["doc_count"], f"{where}[{key}]"
        compare(sub, bucket, by_key[key], f"{where}[{key}]")
    shown = {str(b["key"]) for b in engine}
    lowest = min((rank(by_key[k]) for k in shown), default=None)
    left_out = [b for k, b in by_key.items() if k not in shown]
    assert all(close(rank(b), lowest) or rank(b) < lowest for b in left_out), f"{where}: a higher bucket was left out"


def check_request(flows: dict, body: dict, where: str, index: str | None = None) -> dict:
    got = search(flows, body, index)
    want = evaluate(body, flows["expected"])
    assert got["hits"]["total"]["value"] == want["hits"]["total"]["value"], where
    compare(body.get("aggs", {}), got.get("aggregations", {}), want["aggregations"], where)
    return got


# -- our dashboards ----------------------------------------------------------------------

def dashboard_panels(objects: list[dict]):
    by_id = {o["id"]: o for o in objects}
    for dashboard in (o for o in objects if o["type"] == "dashboard"):
        filters = embedded_json(dashboard)["searchSourceJSON"]["filter"]
        for ref in dashboard["references"]:
            yield dashboard["attributes"]["title"], filters, by_id[ref["id"]]


def run_panel(flows: dict, panel: dict, dashboard_filters: list[dict], where: str) -> list[dict]:
    """Run one panel's requests, check each against the evaluation; the engine answers."""
    parsed = embedded_json(panel)
    panel_filters = parsed.get("searchSourceJSON", {}).get("filter", [])
    filters = dashboard_filters + panel_filters
    answers = []
    if panel["type"] == "search":
        time_field = panel["attributes"]["sort"][0][0]
        body = {"size": 10, "track_total_hits": True, "sort": [{time_field: "desc"}],
                "query": translate.context_query(time_field, flows["time_range"], filters)}
        answer = check_request(flows, body, where)
        for hit in answer["hits"]["hits"]:
            assert all(doc_value(hit["_source"], c) is not _MISSING or c.endswith("Name") or c.endswith("Namespace")
                       for c in panel["attributes"]["columns"]), where
        return [answer]
    vis = parsed["visState"]
    if vis["type"] in AGG_VIS_TYPES:
        body = translate.vis_request(vis, filters, time_field="ipfix.flowEndSeconds", time_range=flows["time_range"])
        answers.append(check_request(flows, body, where))
    elif vis["type"] == "vega":
        for index, body, _ in translate.vega_requests(parsed["vegaSpec"], dashboard_filters, time_range=flows["time_range"]):
            assert index == "flow-*"
            answers.append(check_request(flows, body, where))
    return answers


@pytest.mark.parametrize("target", ["kibana", "opensearch-dashboards"])
def test_every_panel_of_every_dashboard(flows, target):
    objects = parse_ndjson(render_ndjson(target))
    checked = 0
    for title, filters, panel in dashboard_panels(objects):
        where = f"{title} / {panel['attributes']['title']}"
        for answer in run_panel(flows, panel, filters, where):
            checked += 1
            assert answer["hits"]["total"]["value"] > 0, f"{where}: no records"
            text = json.dumps(answer.get("aggregations", {}))
            for namespace in HIDDEN_NAMESPACES:
                assert f'"{namespace}' not in text, f"{where}: {namespace} traffic is shown"
    assert checked >= 40


def _sent_visible(flows: dict) -> list[dict]:
    return [r["fields"] for r in flows["sent"]
            if r["fields"]["sourcePodNamespace"] not in HIDDEN_NAMESPACES
            and r["fields"]["destinationPodNamespace"] not in HIDDEN_NAMESPACES]


def _side(*parts, fallback: str = "external") -> str:
    text = "/".join(str(p) for p in parts if p not in (None, "", "N/A"))
    return text or fallback


def sankey_pairs(flows: dict, title: str, fallback: str = "external") -> dict[tuple[str, str], int]:
    """The (source, destination) -> amount pairs a Sankey panel draws, from the engine's answer,
    labelled as its Vega formula does."""
    objects = parse_ndjson(render_ndjson("kibana"))
    for dashboard_title, filters, panel in dashboard_panels(objects):
        if panel["attributes"]["title"] == title:
            spec = embedded_json(panel)["vegaSpec"]
            (_, body, prop), = translate.vega_requests(spec, filters, time_range=flows["time_range"])
            answer = search(flows, body)
            buckets = answer["aggregations"]["scope"]["pairs"]["buckets"]
            pairs: dict = defaultdict(int)
            for b in buckets:
                key = b["key"]
                src = _side(*(key[k] for k in sorted(key) if k.startswith("s")), fallback=fallback)
                dst = _side(*(key[k] for k in sorted(key) if k.startswith("t")), fallback=fallback)
                pairs[(src, dst)] += int(b["amount"]["value"])
            assert prop == "aggregations.scope.pairs.buckets"
            return {k: v for k, v in pairs.items() if v > 0}
    raise AssertionError(title)


def test_sankeys_match_sums_written_out_by_hand(flows):
    visible = _sent_visible(flows)
    pod_to_pod: dict = defaultdict(int)
    to_service: dict = defaultdict(int)
    to_external: dict = defaultdict(int)
    nodes: dict = defaultdict(int)
    policies: dict = defaultdict(int)
    for f in visible:
        source = _side(f["sourcePodNamespace"], f["sourcePodName"])
        if f["flowType"] in (1, 2):
            pod_to_pod[(source, _side(f["destinationPodNamespace"], f["destinationPodName"]))] += f["octetDeltaCount"]
        if f["destinationServicePortName"] and f["sourcePodName"]:
            to_service[(source, f["destinationServicePortName"])] += f["reverseOctetDeltaCount"]
        if f["flowType"] == 3:
            to_external[(source, f["destinationIPv4Address"])] += f["octetDeltaCount"]
        nodes[(_side(f["sourceNodeName"]), _side(f["destinationNodeName"]))] += f["octetDeltaCount"]
        policy = lambda side: _side(f[f"{side}NetworkPolicyNamespace"], f[f"{side}NetworkPolicyName"],  # noqa: E731
                                    fallback="no policy")
        policies[(policy("egress"), policy("ingress"))] += f["octetDeltaCount"]
    drop_zero = lambda d: {k: v for k, v in d.items() if v > 0}  # noqa: E731
    assert len(pod_to_pod) > 20 and len(to_external) > 5 and len(nodes) >= 9
    assert sankey_pairs(flows, "Pod-to-Pod Flows: bytes") == drop_zero(pod_to_pod)
    assert sankey_pairs(flows, "Pod-to-Service Flows: reverse bytes") == drop_zero(to_service)
    assert sankey_pairs(flows, "Pod-to-External Flows: bytes") == drop_zero(to_external)
    assert sankey_pairs(flows, "Node to Node: bytes") == drop_zero(nodes)
    assert sankey_pairs(flows, "Egress policy to ingress policy: bytes", "no policy") == drop_zero(policies)
    assert ("no policy", "no policy") in policies and ("no policy", "acnp-drop-untrusted") in policies
    # the namespace filter did hide something: DNS flows to kube-system were sent
    assert any(r["fields"]["destinationPodNamespace"] == "kube-system" for r in flows["sent"])


def test_overview_totals_and_denied_traffic_by_hand(flows):
    visible = _sent_visible(flows)
    objects = parse_ndjson(render_ndjson("kibana"))
    panels = {p["attributes"]["title"]: (f, p) for _, f, p in dashboard_panels(objects)}
    filters, tiles = panels["Totals"]
    answer = run_panel(flows, tiles, filters, "Totals")[0]
    aggs = answer["aggregations"]
    assert answer["hits"]["total"]["value"] == len(visible)
    assert aggs["2"]["value"] == sum(f["octetDeltaCount"] for f in visible)
    assert aggs["3"]["value"] == sum(f["reverseOctetDeltaCount"] for f in visible)
    assert aggs["4"]["value"] == sum(f["packetDeltaCount"] for f in visible)

    filters, denied = panels["Drops and rejects by ingress policy"]
    answer = run_panel(flows, denied, filters, "denied")[0]
    by_policy: dict = defaultdict(int)
    for f in visible:
        if f["ingressNetworkPolicyRuleAction"] in (2, 3):
            by_policy[f["ingressNetworkPolicyName"]] += 1
    assert {b["key"]: b["doc_count"] for b in answer["aggregations"]["2"]["buckets"]} == by_policy
    assert set(by_policy) == {"acnp-drop-untrusted", "acnp-reject-legacy"}


# -- Antrea's original objects against our default layout ----------------------------------

@pytest.mark.skipif(not ANTREA_FILES, reason="../shared/antrea not present")
@pytest.mark.parametrize("path", ANTREA_FILES, ids=lambda p: p.parent.name)
def test_antrea_original_panels_query_our_documents(flows, path):
    objects = parse_ndjson(path.read_text())
    time_range = flows["time_range"]
    ran = 0
    for obj in objects:
        if obj["type"] != "visualization":
            continue
        parsed = embedded_json(obj)
        vis = parsed["visState"]
        where = f"{path.parent.name}: {obj['attributes']['title']}"
        filters = parsed.get("searchSourceJSON", {}).get("filter", [])
        if vis["type"] in AGG_VIS_TYPES:
            bodies = [translate.vis_request(vis, filters, time_field="@timestamp", time_range=time_range)]
        elif vis["type"] == "metrics":
            bodies = translate.tsvb_requests(vis["params"], filters, time_range=time_range)
        elif vis["type"] == "input_control_vis":
            bodies = translate.control_requests(vis["params"], filters, time_field="@timestamp", time_range=time_range)
        elif vis["type"] == "vega":
            bodies = [b for _, b, _ in translate.vega_requests(parsed["vegaSpec"], filters, time_range=time_range)]
        else:
            raise AssertionError(f"{where}: unexpected type {vis['type']}")
        for body in bodies:
            answer = check_request(flows, body, where)
            ran += 1
            assert answer["hits"]["total"]["value"] == RECORDS, where
            assert _has_data(answer.get("aggregations", {})), f"{where}: every bucket or value is empty"
    assert ran >= 40


def _has_data(node) -> bool:
    if isinstance(node, dict):
        if node.get("buckets"):
            return True
        if isinstance(node.get("value"), (int, float)) and node["value"] > 0:
            return True
        return any(_has_data(v) for v in node.values())
    return False
