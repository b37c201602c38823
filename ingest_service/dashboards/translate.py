"""The search request a dashboard panel makes, as Kibana / OpenSearch Dashboards would
build it: time range on the time field, the dashboard's and the panel's filters, and the
panel's aggregations (legacy visState aggs, TSVB series, input controls, Vega ``url``
bodies with ``%context%``/``%timefield%`` expanded).  Pure; used to run every panel's query
against a real engine in the tests, and by ``flow-ingest dashboards check``.

Simplifications, all harmless for checking fields and values: ``interval: auto`` becomes a
fixed interval, every metric is computed at every bucket level, and the "Other" bucket
(a second request in Kibana) is not asked for.
"""
from __future__ import annotations

import copy

_METRICS = {"sum", "avg", "max", "min", "cardinality", "value_count"}


def filter_clauses(filters: list[dict]) -> tuple[list[dict], list[dict]]:
    """Saved filters -> (must, must_not) query clauses; disabled filters are skipped."""
    must, must_not = [], []
    for flt in filters:
        meta = flt.get("meta", {})
        if meta.get("disabled"):
            continue
        clause = flt.get("query") or {k: v for k, v in flt.items() if k not in ("meta", "$state")}
        (must_not if meta.get("negate") else must).append(clause)
    return must, must_not


def context_query(time_field: str, time_range: tuple[str, str], filters: list[dict]) -> dict:
    must, must_not = filter_clauses(filters)
    time = {"range": {time_field: {"gte": time_range[0], "lte": time_range[1], "format": "strict_date_optional_time"}}}
    return {"bool": {"must": [time, *must], "filter": [], "should": [], "must_not": must_not}}


def _metric_dsl(agg: dict) -> dict | None:
    kind, params = agg["type"], agg.get("params", {})
    if kind == "count":
        return None  # doc_count
    if kind in _METRICS:
        return {kind: {"field": params["field"]}}
    if kind == "top_hits":
        sort_field = params.get("sortField")
        sort = [{sort_field: {"order": params.get("sortOrder", "desc")}}] if isinstance(sort_field, str) else []
        return {"top_hits": {"size": params.get("size", 1), "_source": [params["field"]], "sort": sort}}
    raise ValueError(f"unsupported metric aggregation {kind!r}")


def _bucket_dsl(agg: dict, metrics_by_id: dict, interval: str) -> dict:
    kind, params = agg["type"], agg.get("params", {})
    if kind == "terms":
        order_by = params.get("orderBy", "_count")
        ordered_metric = metrics_by_id.get(order_by)
        if order_by in ("_count", "_key") or ordered_metric is None or ordered_metric["type"] == "count":
            order = {"_key" if order_by == "_key" else "_count": params.get("order", "desc")}
        else:
            order = {order_by: params.get("order", "desc")}
        return {"terms": {"field": params["field"], "size": params.get("size", 5), "order": order}}
    if kind == "date_histogram":
        return {"date_histogram": {"field": params["field"], "fixed_interval": interval,
                                   "min_doc_count": params.get("min_doc_count", 1), "time_zone": "UTC"}}
    raise ValueError(f"unsupported bucket aggregation {kind!r}")


def vis_request(vis_state: dict, filters: list[dict], *, time_field: str, time_range: tuple[str, str],
                interval: str = "1m") -> dict:
    """A legacy aggregation-based visualization -> the body of ``POST <index>/_search``."""
    aggs = [a for a in vis_state.get("aggs", []) if a.get("enabled", True)]
    metrics = [a for a in aggs if a.get("schema") == "metric" or a["type"] in _METRICS | {"count", "top_hits"}]
    buckets = [a for a in aggs if a not in metrics]
    metrics_by_id = {a["id"]: a for a in metrics}
    metric_dsl = {a["id"]: d for a in metrics if (d := _metric_dsl(a)) is not None}
    tree: dict = dict(metric_dsl)
    for agg in reversed(buckets):
        node = _bucket_dsl(agg, metrics_by_id, interval)
        node["aggs"] = copy.deepcopy(tree)
        tree = {agg["id"]: node, **metric_dsl}
    return {"size": 0, "track_total_hits": True, "query": context_query(time_field, time_range, filters), "aggs": tree}


def bucket_rows(response_aggs: dict, vis_state: dict) -> list[dict]:
    """Flatten a response of ``vis_request``: one row per bucket path at every level,
    {"keys": (k1, ...), "count": n, "metrics": {agg id: value}}; the root row has keys ()."""
    aggs = [a for a in vis_state.get("aggs", []) if a.get("enabled", True)]
    bucket_ids = [a["id"] for a in aggs if a.get("schema") != "metric" and a["type"] not in _METRICS | {"count", "top_hits"}]
    metric_ids = [a["id"] for a in aggs if a["id"] not in bucket_ids]
    rows: list[dict] = []

    def visit(node: dict, keys: tuple, count: int, level: int) -> None:
        rows.append({"keys": keys, "count": count,
                     "metrics": {m: (node[m].get("value") if "value" in node.get(m, {}) else node.get(m)) for m in metric_ids
                                 if m in node}})
        if level < len(bucket_ids):
            for bucket in node[bucket_ids[level]]["buckets"]:
                visit(bucket, keys + (bucket["key"],), bucket["doc_count"], level + 1)

    visit(response_aggs, (), None, 0)
    return rows


def tsvb_requests(params: dict, filters: list[dict], *, time_range: tuple[str, str], interval: str = "1m") -> list[dict]:
    """One request per TSVB series (markdown panels ask for nothing)."""
    if params.get("type") == "markdown":
        return []
    time_field = params.get("time_field") or params.get("default_timefield") or "@timestamp"
    requests = []
    for series in params.get("series", []):
        metrics = {m["id"]: {m["type"]: {"field": m["field"]}} for m in series.get("metrics", [])
                   if m.get("type") in _METRICS and m.get("field")}
        histogram = {"date_histogram": {"field": time_field, "fixed_interval": interval, "min_doc_count": 0,
                                        "time_zone": "UTC"}, "aggs": metrics}
        aggs: dict = {"timeseries": histogram}
        if series.get("split_mode") == "terms" and series.get("terms_field"):
            order_by = series.get("terms_order_by")
            order = {order_by: "desc"} if order_by in metrics else {"_count": "desc"}
            aggs = {"split": {"terms": {"field": series["terms_field"], "size": int(series.get("terms_size", 10)),
                                        "order": order}, "aggs": {**aggs, **metrics}}}
        requests.append({"size": 0, "track_total_hits": True,
                         "query": context_query(time_field, time_range, filters), "aggs": aggs})
    return requests


def control_requests(params: dict, filters: list[dict], *, time_field: str, time_range: tuple[str, str]) -> list[dict]:
    """Input controls list their options with a terms aggregation (Antrea's filters)."""
    return [{"size": 0, "query": context_query(time_field, time_range, filters),
             "aggs": {"options": {"terms": {"field": c["fieldName"], "size": c.get("options", {}).get("size", 5)}}}}
            for c in params.get("controls", []) if c.get("type") == "list"]


def vega_requests(spec: dict, filters: list[dict], *, time_range: tuple[str, str]) -> list[tuple[str, dict, str | None]]:
    """(index, body, format.property) of each Elasticsearch data source of a Vega spec,
    with %context% and %timefield% expanded as Kibana does."""
    out = []
    data = spec.get("data", [])
    for entry in data if isinstance(data, list) else [data]:
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, dict) or "index" not in url:
            continue
        body = copy.deepcopy(url.get("body", {}))
        if url.get("%context%"):
            if "query" in body:
                raise ValueError("a Vega body with %context% must not have its own query")
            time_field = url.get("%timefield%")
            if time_field:
                body["query"] = context_query(time_field, time_range, filters)
            else:
                must, must_not = filter_clauses(filters)
                body["query"] = {"bool": {"must": must, "must_not": must_not}}
        out.append((url["index"], body, entry.get("format", {}).get("property")))
    return out
