"""Vega (v5) Sankey diagrams: who sends how much to whom, from one composite aggregation.

Both Kibana and OpenSearch Dashboards run Vega 5 and expand ``%context%``/``%timefield%``
into the dashboard's filters and time range.  A side of the diagram is one or more fields
joined by "/" (e.g. namespace/pod); empty parts are skipped, and a side with no value at
all (traffic to or from outside the cluster) shows the side's fallback label.
"""
from __future__ import annotations

import json

SCHEMA = "https://vega.github.io/schema/vega/v5.json"
PAIRS_PAGE = 1000  # buckets of the composite aggregation: the diagram shows at most this many pairs


# Values that mean "nothing here": absent, empty, or the "N/A" the pipeline writes for no policy.
EMPTY_VALUES = ("", "N/A")


def _label_expr(prefix: str, count: int, fallback: str) -> str:
    parts = [f"datum.key.{prefix}{i}" for i in range(count)]
    # (a ? a + '/' : '') + ... then drop the trailing '/'; an empty side gets the fallback.
    empty = " && ".join(f"{{p}} !== '{v}'" for v in EMPTY_VALUES)
    joined = " + ".join(f"({p} != null && {empty.format(p=p)} ? {p} + '/' : '')" for p in parts)
    return f"length({joined}) > 0 ? slice({joined}, 0, -1) : '{fallback}'"


def sankey_spec(*, index: str, time_field: str, sources: list[str], targets: list[str], metric: str,
                scope: dict | None, unit: str, source_title: str, target_title: str,
                source_fallback: str = "external", target_fallback: str = "external") -> dict:
    composite_sources = (
        [{f"s{i}": {"terms": {"field": f, "missing_bucket": True}}} for i, f in enumerate(sources)]
        + [{f"t{i}": {"terms": {"field": f, "missing_bucket": True}}} for i, f in enumerate(targets)]
    )
    body = {"size": 0, "aggs": {"scope": {
        "filter": scope or {"match_all": {}},
        "aggs": {"pairs": {"composite": {"size": PAIRS_PAGE, "sources": composite_sources},
                           "aggs": {"amount": {"sum": {"field": metric}}}}}}}}
    amount = f"format(datum.value, '.3s') + '{unit}'"
    return {
        "$schema": SCHEMA,
        "description": f"{source_title} -> {target_title}, sum of {metric}",
        "autosize": {"type": "fit", "contains": "padding"},
        "padding": 8,
        "data": [
            {"name": "pairs",
             "url": {"index": index, "%context%": True, "%timefield%": time_field, "body": body},
             "format": {"property": "aggregations.scope.pairs.buckets"},
             "transform": [
                 {"type": "formula", "as": "src", "expr": _label_expr("s", len(sources), source_fallback)},
                 {"type": "formula", "as": "dst", "expr": _label_expr("t", len(targets), target_fallback)},
                 {"type": "formula", "as": "amount", "expr": "datum.amount.value"},
                 {"type": "aggregate", "groupby": ["src", "dst"], "fields": ["amount"], "ops": ["sum"], "as": ["value"]},
                 {"type": "filter", "expr": "datum.value > 0"},
             ]},
            {"name": "left", "source": "pairs",
             "transform": [
                 {"type": "aggregate", "groupby": ["src"], "fields": ["value"], "ops": ["sum"], "as": ["value"]},
                 {"type": "stack", "field": "value", "sort": {"field": "value", "order": "descending"}},
             ]},
            {"name": "right", "source": "pairs",
             "transform": [
                 {"type": "aggregate", "groupby": ["dst"], "fields": ["value"], "ops": ["sum"], "as": ["value"]},
                 {"type": "stack", "field": "value", "sort": {"field": "value", "order": "descending"}},
             ]},
            {"name": "links", "source": "pairs",
             "transform": [
                 {"type": "lookup", "from": "left", "key": "src", "fields": ["src"], "as": ["from"]},
                 {"type": "lookup", "from": "right", "key": "dst", "fields": ["dst"], "as": ["to"]},
                 # each link's slice of its node: stacked within the node, in the other side's order
                 {"type": "formula", "as": "toOrder", "expr": "datum.to.y0"},
                 {"type": "formula", "as": "fromOrder", "expr": "datum.from.y0"},
                 {"type": "stack", "groupby": ["src"], "field": "value", "sort": {"field": "toOrder"}, "as": ["a0", "a1"]},
                 {"type": "stack", "groupby": ["dst"], "field": "value", "sort": {"field": "fromOrder"}, "as": ["b0", "b1"]},
                 {"type": "formula", "as": "fromY", "expr": "datum.from.y0 + (datum.a0 + datum.a1) / 2"},
                 {"type": "formula", "as": "toY", "expr": "datum.to.y0 + (datum.b0 + datum.b1) / 2"},
                 {"type": "linkpath", "orient": "horizontal", "shape": "diagonal",
                  "sourceX": {"expr": "scale('x', 'left') + bandwidth('x')"}, "sourceY": {"expr": "scale('y', datum.fromY)"},
                  "targetX": {"expr": "scale('x', 'right')"}, "targetY": {"expr": "scale('y', datum.toY)"}},
                 {"type": "formula", "as": "width", "expr": "scale('y', datum.value) - scale('y', 0)"},
             ]},
        ],
        "scales": [
            {"name": "x", "type": "band", "range": "width", "domain": ["left", "right"],
             "paddingInner": 0.9, "paddingOuter": 0.02},
            {"name": "y", "type": "linear", "range": [0, {"signal": "height"}], "zero": True,
             "domain": {"data": "left", "field": "y1"}},
            {"name": "color", "type": "ordinal", "range": "category",
             "domain": {"fields": [{"data": "pairs", "field": "src"}, {"data": "pairs", "field": "dst"}]}},
        ],
        "marks": [
            {"type": "path", "from": {"data": "links"},
             "encode": {"update": {
                 "path": {"field": "path"}, "stroke": {"scale": "color", "field": "src"},
                 "strokeWidth": {"field": "width"}, "strokeOpacity": {"value": 0.35},
                 "tooltip": {"signal": f"{{title: datum.src + ' → ' + datum.dst, '{unit or 'value'}': {amount}}}"}},
                 "hover": {"strokeOpacity": {"value": 0.7}}}},
            *[{"type": "rect", "from": {"data": side},
               "encode": {"update": {
                   "x": {"scale": "x", "value": side}, "width": {"scale": "x", "band": 1},
                   "y": {"scale": "y", "field": "y0"}, "y2": {"scale": "y", "field": "y1"},
                   "fill": {"scale": "color", "field": key}, "fillOpacity": {"value": 0.85},
                   "tooltip": {"signal": f"{{title: '{title}: ' + datum.{key}, '{unit or 'value'}': {amount}}}"}}}}
              for side, key, title in (("left", "src", source_title), ("right", "dst", target_title))],
            *[{"type": "text", "from": {"data": side}, "interactive": False,
               "encode": {"update": {
                   "x": {"signal": x}, "align": {"value": align}, "baseline": {"value": "middle"},
                   "yc": {"signal": "(scale('y', datum.y0) + scale('y', datum.y1)) / 2"},
                   "text": {"signal": f"scale('y', datum.y1) - scale('y', datum.y0) > 9 ? datum.{key} : ''"},
                   "fontSize": {"value": 11}}}}
              for side, key, x, align in (("left", "src", "scale('x', 'left') + bandwidth('x') + 4", "left"),
                                          ("right", "dst", "scale('x', 'right') - 4", "right"))],
        ],
    }


def spec_text(spec: dict) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False)
