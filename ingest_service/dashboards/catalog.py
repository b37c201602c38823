"""What the dashboards show: every dashboard, its panels and the fields they use.

Panels name schema fields; ``fields.checked`` resolves each one to its document path and
refuses a field whose role does not fit the use.  The fields hidden by the namespace
filter and the index pattern's fields and formats come from the schema's roles.  Pure:
``build_objects(target, layout)`` returns the saved objects in import order (index
pattern, then what dashboards reference, then dashboards).
"""
from __future__ import annotations

from ..schema.derive import FLOW_TYPES, RULE_ACTIONS
from . import fields as F
from . import objects as O
from .vega import sankey_spec, spec_text

INDEX_PATTERN_TITLE = "flow-*"  # every target mode writes to flow-*: data stream, alias indices, daily indices
TIME_FIELD = "flowEndSeconds"  # the schema's "time the dashboards plot"
TOP = 10  # buckets of a top-N split

DASHBOARD_KEYS = ("overview", "pod-to-pod", "pod-to-service", "pod-to-external", "flow-records", "node-throughput",
                  "network-policy")
DASHBOARD_TITLES = {"overview": "Flow Overview", "pod-to-pod": "Pod-to-Pod Flows",
                    "pod-to-service": "Pod-to-Service Flows", "pod-to-external": "Pod-to-External Flows",
                    "flow-records": "Flow Records", "node-throughput": "Node Throughput",
                    "network-policy": "Network Policy"}


class Catalog:
    """Builds the objects of one layout; ``objects`` collects them, deduplicated by id."""

    def __init__(self, target: str, layout: str = "logstash", doc_target: str = "ipfix"):
        self.target = target
        self.layout = layout
        self.doc_target = doc_target
        self.index_id = O.object_id("index-pattern", "flow")
        self.objects: dict[str, dict] = {}

    # -- field helpers --------------------------------------------------------------
    def p(self, name: str) -> str:
        return F.path(name, self.layout, self.doc_target)

    def split(self, name: str) -> str:
        F.checked(name, F.SPLIT_ROLES, "a split")
        return self.p(name)

    def metric(self, name: str) -> str:
        F.checked(name, F.METRIC_ROLES, "a metric")
        return self.p(name)

    def time(self) -> str:
        F.checked(TIME_FIELD, F.TIME_ROLES, "the time axis")
        return self.p(TIME_FIELD)

    def label(self, name: str, text: str) -> str:
        unit = F.unit(name)
        return f"{text} ({unit})" if unit else text

    def add(self, obj: dict) -> dict:
        self.objects[obj["id"]] = obj
        return obj

    # -- scopes: which records a panel is about ---------------------------------------
    def scope_filters(self, scope: str | None) -> list[dict]:
        if scope is None:
            return []
        if scope == "pod-to-pod":
            return [O.phrases_filter(self.split("flowTypeStr"), [FLOW_TYPES[1], FLOW_TYPES[2]], alias="Pod-to-Pod flows")]
        if scope == "pod-to-service":
            return [O.exists_filter(self.split("flowKeyPodToService"), alias="flows to a Service")]
        if scope == "pod-to-external":
            return [O.phrases_filter(self.split("flowTypeStr"), [FLOW_TYPES[3]], alias="Pod-to-External flows")]
        if scope.startswith("denied-"):
            side = scope.removeprefix("denied-")
            return [O.phrases_filter(self.split(f"{side}NetworkPolicyRuleActionStr"), [RULE_ACTIONS[2], RULE_ACTIONS[3]],
                                     alias=f"{side} rule drops and rejects")]
        raise ValueError(f"unknown scope {scope!r}")

    def hide_namespaces_filters(self) -> list[dict]:
        return [O.phrases_filter(self.split(name), F.HIDDEN_NAMESPACES, negate=True,
                                 alias=f"hide system and flow-pipeline traffic ({name})")
                for name in F.with_role("namespace")]

    # -- panel kinds ------------------------------------------------------------------
    def _metric_agg(self, agg_id: str, spec: tuple, schema: str = "metric") -> dict:
        kind, name, text = spec
        if kind == "count":
            return O.metric_agg(agg_id, "count", label=text, schema=schema)
        field = self.split(name) if kind == "cardinality" else self.metric(name)
        return O.metric_agg(agg_id, kind, field, self.label(name, text) if kind != "cardinality" else text, schema)

    def pie(self, key: str, title: str, metric: tuple, splits: list[str], scope: str | None = None) -> dict:
        aggs = [self._metric_agg("1", metric)]
        aggs += [O.terms_agg(str(i + 2), "segment", self.split(name), size=TOP, order_by="1") for i, name in enumerate(splits)]
        return self.add(O.visualization(key, title, "pie", aggs, O.pie_params(), index_id=self.index_id,
                                        filters=self.scope_filters(scope)))

    def bars(self, key: str, title: str, metric: tuple, split: str, series: str | None = None,
             scope: str | None = None, horizontal: bool = True) -> dict:
        aggs = [self._metric_agg("1", metric), O.terms_agg("2", "segment", self.split(split), size=TOP, order_by="1")]
        if series:
            aggs.append(O.terms_agg("3", "group", self.split(series), size=5, order_by="1"))
        chart = "horizontal_bar" if horizontal else "histogram"
        params = O.xy_params(chart, ["1"], aggs[0]["params"].get("customLabel", "Count"), horizontal=horizontal,
                             stacked=bool(series))
        return self.add(O.visualization(key, title, chart, aggs, params, index_id=self.index_id,
                                        filters=self.scope_filters(scope)))

    def timeline(self, key: str, title: str, metric: tuple, series: str | None, scope: str | None = None,
                 chart: str = "line") -> dict:
        aggs = [self._metric_agg("1", metric), O.date_histogram_agg("2", self.time(), "Flow end time")]
        if series:
            aggs.append(O.terms_agg("3", "group", self.split(series), size=TOP, order_by="1"))
        params = O.xy_params(chart, ["1"], aggs[0]["params"].get("customLabel", "Count"), stacked=chart == "histogram")
        return self.add(O.visualization(key, title, chart, aggs, params, index_id=self.index_id,
                                        filters=self.scope_filters(scope)))

    def heatmap(self, key: str, title: str, metric: tuple, rows: str) -> dict:
        aggs = [self._metric_agg("1", metric), O.date_histogram_agg("2", self.time(), "Flow end time"),
                O.terms_agg("3", "group", self.split(rows), size=TOP, order_by="1")]
        return self.add(O.visualization(key, title, "heatmap", aggs, O.heatmap_params(), index_id=self.index_id))

    def table(self, key: str, title: str, rows: list[str], metrics: list[tuple], scope: str | None = None) -> dict:
        aggs = [self._metric_agg(str(i + 1), m) for i, m in enumerate(metrics)]
        first_row = len(metrics) + 1
        aggs += [O.terms_agg(str(first_row + i), "bucket", self.split(name), size=TOP if i == 0 else 5, order_by="1")
                 for i, name in enumerate(rows)]
        return self.add(O.visualization(key, title, "table", aggs, O.table_params(), index_id=self.index_id,
                                        filters=self.scope_filters(scope)))

    def tiles(self, key: str, title: str, metrics: list[tuple]) -> dict:
        aggs = [self._metric_agg(str(i + 1), m) for i, m in enumerate(metrics)]
        return self.add(O.visualization(key, title, "metric", aggs, O.metric_params(), index_id=self.index_id))

    def sankey(self, key: str, title: str, sources: list[str], targets: list[str], metric: str,
               source_title: str, target_title: str, scope: str | None = None, fallback: str = "external") -> dict:
        filters = self.scope_filters(scope)
        scope_query = {"bool": {"filter": [f["query"] for f in filters]}} if filters else None
        spec = sankey_spec(index=INDEX_PATTERN_TITLE, time_field=self.time(), sources=[self.split(s) for s in sources],
                           targets=[self.split(t) for t in targets], metric=self.metric(metric), scope=scope_query,
                           unit={"bytes": "B"}.get(F.field(metric).fmt, ""), source_title=source_title,
                           target_title=target_title, source_fallback=fallback, target_fallback=fallback)
        params = {"spec": spec_text(spec)}
        return self.add(O.visualization(key, title, "vega", [], params, index_id=None,
                                        description=f"{source_title} to {target_title}, sum of {metric}"))

    def markdown(self, key: str, title: str, text: str) -> dict:
        return self.add(O.visualization(key, title, "markdown", [], {"fontSize": 12, "openLinksInNewTab": False,
                                                                     "markdown": text}, index_id=None))

    def search(self, key: str, title: str, columns: list[str]) -> dict:
        return self.add(O.saved_search(key, title, [self.p(c) for c in columns], self.time(), self.index_id))

    def dashboard(self, key: str, description: str, panels: list[tuple[dict, int, int]]) -> dict:
        nav = (self.navigation(), 48, 4)
        return self.add(O.dashboard(key, DASHBOARD_TITLES[key], [nav, *panels], self.hide_namespaces_filters(),
                                    description=description))

    def navigation(self) -> dict:
        links = " | ".join(f"[{DASHBOARD_TITLES[k]}](#/view/{O.object_id('dashboard', k)})" for k in DASHBOARD_KEYS)
        hidden = ", ".join(F.HIDDEN_NAMESPACES)
        return self.markdown("navigation", "Flow dashboards", f"**Flow dashboards:** {links}\n\n"
                             f"Traffic of the {hidden} namespaces is hidden by the filters above: disable them to see it.")

    def index_pattern(self) -> dict:
        # No fieldAttrs (Kibana 7.11+ custom labels): older servers may refuse unknown attributes;
        # the panels' labels carry the units instead.
        return self.add(O.index_pattern("flow", INDEX_PATTERN_TITLE, self.time(),
                                        F.index_pattern_fields(self.layout, self.doc_target),
                                        F.field_formats(self.layout, self.doc_target)))


BYTES = ("sum", "octetDeltaCount", "Bytes")
REVERSE_BYTES = ("sum", "reverseOctetDeltaCount", "Reverse bytes")
PACKETS = ("sum", "packetDeltaCount", "Packets")
RECORDS = ("count", None, "Flow records")


def _flow_dashboard(c: Catalog, kind: str, target_fields: list[str], target_title: str, flow_key: str,
                    table_rows: list[str]) -> None:
    title = DASHBOARD_TITLES[kind]
    sankey = c.sankey(f"{kind}-sankey-bytes", f"{title}: bytes", ["sourcePodNamespace", "sourcePodName"], target_fields,
                      "octetDeltaCount", "Source Pod", target_title, scope=kind)
    reverse = c.sankey(f"{kind}-sankey-reverse-bytes", f"{title}: reverse bytes", ["sourcePodNamespace", "sourcePodName"],
                       target_fields, "reverseOctetDeltaCount", "Source Pod", target_title, scope=kind)
    throughput = c.timeline(f"{kind}-throughput", f"{title}: throughput per flow",
                            ("max", "throughput", "Throughput"), flow_key, scope=kind)
    reverse_throughput = c.timeline(f"{kind}-reverse-throughput", f"{title}: reverse throughput per flow",
                                    ("max", "reverseThroughput", "Reverse throughput"), flow_key, scope=kind)
    talkers = c.table(f"{kind}-top-talkers", f"{title}: top talkers", table_rows,
                      [BYTES, REVERSE_BYTES, PACKETS, ("max", "throughput", "Peak throughput"), RECORDS], scope=kind)
    c.dashboard(kind, f"{title}: bytes and reverse bytes between endpoints, throughput per flow, top talkers.",
                [(sankey, 24, 22), (reverse, 24, 22), (throughput, 24, 14), (reverse_throughput, 24, 14),
                 (talkers, 48, 16)])


def build_objects(target: str, layout: str = "logstash", doc_target: str = "ipfix") -> list[dict]:
    if target not in ("kibana", "opensearch-dashboards"):
        raise ValueError(f"target must be kibana or opensearch-dashboards, not {target!r}")
    c = Catalog(target, layout, doc_target)
    c.index_pattern()

    # Overview
    tiles = c.tiles("overview-totals", "Totals", [RECORDS, BYTES, REVERSE_BYTES, PACKETS,
                                                  ("cardinality", "flowKey", "Distinct flows")])
    c.dashboard("overview", "Flow count, bytes and packets by Pod, namespace, IP and protocol.", [
        (tiles, 48, 6),
        (c.pie("bytes-by-source-pod", "Bytes by source Pod", BYTES, ["sourcePodNamespace", "sourcePodName"]), 16, 14),
        (c.pie("bytes-by-destination-pod", "Bytes by destination Pod", BYTES,
               ["destinationPodNamespace", "destinationPodName"]), 16, 14),
        (c.pie("bytes-by-protocol", "Bytes by protocol", BYTES, ["protocolName"]), 16, 14),
        (c.pie("packets-by-source-pod", "Packets by source Pod", PACKETS, ["sourcePodNamespace", "sourcePodName"]), 16, 14),
        (c.pie("packets-by-destination-pod", "Packets by destination Pod", PACKETS,
               ["destinationPodNamespace", "destinationPodName"]), 16, 14),
        (c.pie("records-by-flow-type", "Flow records by flow type", RECORDS, ["flowTypeStr"]), 16, 14),
        (c.pie("bytes-by-source-namespace", "Bytes by source namespace", BYTES, ["sourcePodNamespace"]), 12, 14),
        (c.pie("bytes-by-destination-namespace", "Bytes by destination namespace", BYTES, ["destinationPodNamespace"]), 12, 14),
        (c.bars("bytes-by-source-ip", "Bytes by source IP", BYTES, "sourceIP"), 12, 14),
        (c.bars("bytes-by-destination-ip", "Bytes by destination IP", BYTES, "destinationIP"), 12, 14),
        (c.bars("records-by-source-pod", "Flow records by source Pod", RECORDS, "sourcePodName"), 24, 14),
        (c.bars("records-by-destination-pod", "Flow records by destination Pod", RECORDS, "destinationPodName"), 24, 14),
        (c.timeline("bytes-over-time", "Bytes over time by flow type", BYTES, "flowTypeStr", chart="area"), 48, 14),
    ])

    _flow_dashboard(c, "pod-to-pod", ["destinationPodNamespace", "destinationPodName"], "Destination Pod",
                    "flowKeyPodToPod", ["sourcePodName", "destinationPodName"])
    _flow_dashboard(c, "pod-to-service", ["destinationServicePortName"], "Service", "flowKeyPodToService",
                    ["sourcePodName", "destinationServicePortName"])
    _flow_dashboard(c, "pod-to-external", ["destinationIP"], "External IP", "flowKeyPodToExternal",
                    ["sourcePodName", "destinationIP", "destinationTransportPort"])

    records = c.search("flow-records", "Flow records", [
        "sourcePodNamespace", "sourcePodName", "sourceIP", "sourceTransportPort", "destinationPodNamespace",
        "destinationPodName", "destinationIP", "destinationTransportPort", "destinationServicePortName",
        "protocolName", "flowTypeStr", "octetDeltaCount", "reverseOctetDeltaCount", "throughput",
        "ingressNetworkPolicyName", "egressNetworkPolicyName", "tcpState"])
    c.dashboard("flow-records", "Flow records over time and the records themselves.", [
        (c.timeline("records-over-time", "Flow records over time by flow type", RECORDS, "flowTypeStr",
                    chart="histogram"), 48, 12),
        (records, 48, 24),
    ])

    c.dashboard("node-throughput", "Traffic between Nodes, transmit and receive throughput by Node.", [
        (c.sankey("node-sankey-bytes", "Node to Node: bytes", ["sourceNodeName"], ["destinationNodeName"],
                  "octetDeltaCount", "Source Node", "Destination Node"), 24, 22),
        (c.sankey("node-sankey-reverse-bytes", "Node to Node: reverse bytes", ["sourceNodeName"], ["destinationNodeName"],
                  "reverseOctetDeltaCount", "Source Node", "Destination Node"), 24, 22),
        (c.timeline("node-tx", "Transmit by source Node", ("sum", "throughput", "Throughput"), "sourceNodeName"), 24, 14),
        (c.timeline("node-rx", "Receive by destination Node", ("sum", "throughput", "Throughput"),
                    "destinationNodeName"), 24, 14),
        (c.heatmap("node-tx-heatmap", "Transmit by source Node (heatmap)", ("sum", "throughput", "Throughput"),
                   "sourceNodeName"), 48, 14),
    ])

    policy_panels = []
    for side in ("ingress", "egress"):
        policy_panels.append((c.pie(f"bytes-by-{side}-policy", f"Bytes by {side} NetworkPolicy", BYTES,
                                    [f"{side}NetworkPolicyNamespace", f"{side}NetworkPolicyName"]), 24, 14))
    for side in ("ingress", "egress"):
        policy_panels.append((c.table(f"{side}-policy-rules", f"Traffic by {side} policy rule",
                                      [f"{side}NetworkPolicyName", f"{side}NetworkPolicyRuleName",
                                       f"{side}NetworkPolicyRuleActionStr"], [RECORDS, BYTES, PACKETS]), 24, 16))
    for side in ("ingress", "egress"):
        policy_panels.append((c.bars(f"{side}-denied", f"Drops and rejects by {side} policy", RECORDS,
                                     f"{side}NetworkPolicyName", series=f"{side}NetworkPolicyRuleActionStr",
                                     scope=f"denied-{side}"), 24, 14))
    policy_panels.append((c.sankey("policy-sankey-bytes", "Egress policy to ingress policy: bytes",
                                   ["egressNetworkPolicyNamespace", "egressNetworkPolicyName"],
                                   ["ingressNetworkPolicyNamespace", "ingressNetworkPolicyName"], "octetDeltaCount",
                                   "Egress policy", "Ingress policy", fallback="no policy"), 48, 22))
    c.dashboard("network-policy", "Traffic, drops and rejects by ingress and egress policy and rule.", policy_panels)

    return _ordered(list(c.objects.values()))


_ORDER = {"index-pattern": 0, "visualization": 1, "search": 1, "dashboard": 2}


def _ordered(objs: list[dict]) -> list[dict]:
    # referenced objects first, then by id: stable files and an import order that never
    # meets a reference before its object
    return sorted(objs, key=lambda o: (_ORDER[o["type"]], o["type"], o["id"]))
