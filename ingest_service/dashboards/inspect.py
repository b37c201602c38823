"""Reading saved objects back: the JSON kept in strings, Vega specs (HJSON, as Kibana
accepts them), and every field an object uses with how it uses it.  Pure.

Used by the tests on our own objects and on Antrea's original ``kibana.ndjson``, and by
``flow-ingest dashboards check`` to tell whether a file fits the rendered mapping.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .fields import AGGREGATABLE_TYPES

# Attributes holding JSON text, per object type.
JSON_ATTRIBUTES = ("visState", "uiStateJSON", "panelsJSON", "optionsJSON", "fields", "fieldFormatMap", "fieldAttrs")
NUMERIC_TYPES = frozenset({"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float"})
# TSVB metrics that compute from other metrics, not from a field.
_TSVB_PIPELINE = {"calculation", "cumulative_sum", "derivative", "series_agg", "math", "moving_average", "serial_diff",
                  "positive_only", "static"}
_DSL_FIELD_AGGS = {"terms", "sum", "avg", "max", "min", "cardinality", "value_count", "date_histogram", "histogram",
                   "percentiles", "stats", "extended_stats", "top_hits", "significant_terms", "rare_terms"}


def parse_ndjson(text: str) -> list[dict]:
    """Saved objects of an export; the trailing export summary line (no type) is skipped."""
    objects = []
    for line in text.splitlines():
        if line.strip():
            value = json.loads(line)
            if "type" in value and "id" in value:
                objects.append(value)
    return objects


def loose_json(text: str):
    """JSON with the HJSON leniencies Kibana's Vega editor allows and Antrea's specs use:
    // and /* */ comments, trailing commas, and a line break instead of a comma between
    two values (all outside strings)."""
    out, i, n, in_string = [], 0, len(text), False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                in_string = False
            i += 1
            continue
        if ch == '"':
            in_string = True
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        elif ch in "]}":
            # drop a trailing comma before the closer
            j = len(out) - 1
            while j >= 0 and out[j].isspace():
                j -= 1
            if j >= 0 and out[j] == ",":
                del out[j]
        elif ch == "\n":
            _comma_if_values_meet(out, text, i + 1)
        out.append(ch)
        i += 1
    return json.loads("".join(out))


_VALUE_ENDS = set('}]"0123456789el')
_VALUE_STARTS = set('{["-0123456789tfn')


def _comma_if_values_meet(out: list[str], text: str, after: int) -> None:
    """At a line break: a value ended before it and another starts after it -> a comma."""
    j = len(out) - 1
    while j >= 0 and out[j].isspace():
        j -= 1
    k = after
    while k < len(text) and text[k].isspace():
        k += 1
    if j >= 0 and k < len(text) and out[j] in _VALUE_ENDS and text[k] in _VALUE_STARTS:
        out.insert(j + 1, ",")


def embedded_json(obj: dict) -> dict:
    """attribute name -> parsed value, for every JSON-in-string attribute of the object
    (the Vega spec under "visState.params.spec"). Raises ValueError naming a bad one."""
    attributes = obj.get("attributes", {})
    parsed = {}
    for name in JSON_ATTRIBUTES:
        if isinstance(attributes.get(name), str):
            parsed[name] = _loads(attributes[name], obj, name)
    meta = attributes.get("kibanaSavedObjectMeta", {})
    if isinstance(meta.get("searchSourceJSON"), str):
        parsed["searchSourceJSON"] = _loads(meta["searchSourceJSON"], obj, "searchSourceJSON")
    vis = parsed.get("visState")
    if isinstance(vis, dict) and vis.get("type") == "vega":
        try:
            parsed["vegaSpec"] = loose_json(vis["params"]["spec"])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{obj['type']} {obj['id']}: Vega spec does not parse: {exc}") from exc
    return parsed


def _loads(text: str, obj: dict, name: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{obj['type']} {obj['id']}: {name} is not JSON: {exc}") from exc


@dataclass(frozen=True)
class FieldUse:
    field: str
    use: str  # an aggregation type (terms, sum, ...), or time, column, sort, filter
    where: str  # object title and the place in it

    def problem(self, leaves: dict[str, str]) -> str | None:
        """Why the mapping (path -> type) does not support this use, or None."""
        es_type = leaves.get(self.field)
        if es_type is None:
            return f"{self.where}: field {self.field!r} ({self.use}) is not in the mapping"
        if self.use in ("sum", "avg", "stats", "extended_stats", "percentiles", "histogram") and es_type not in NUMERIC_TYPES:
            return f"{self.where}: {self.use} on {self.field!r} needs a number, the mapping has {es_type}"
        if self.use in ("max", "min") and es_type not in NUMERIC_TYPES | {"date"}:
            return f"{self.where}: {self.use} on {self.field!r} needs a number or date, the mapping has {es_type}"
        if self.use in ("date_histogram", "time") and es_type != "date":
            return f"{self.where}: {self.use} on {self.field!r} needs a date, the mapping has {es_type}"
        if self.use in ("terms", "cardinality", "sort", "significant_terms", "rare_terms", "value_count") \
                and es_type not in AGGREGATABLE_TYPES:
            return f"{self.where}: {self.use} on {self.field!r} needs an aggregatable field, the mapping has {es_type}"
        return None


def field_uses(obj: dict) -> list[FieldUse]:
    """Every field the object reads, with the way it reads it."""
    parsed = embedded_json(obj)
    title = obj.get("attributes", {}).get("title", obj["id"])
    uses: list[FieldUse] = []
    attributes = obj.get("attributes", {})
    if obj["type"] == "index-pattern" and attributes.get("timeFieldName"):
        uses.append(FieldUse(attributes["timeFieldName"], "time", f"{title}: timeFieldName"))
    for column in attributes.get("columns", []) if obj["type"] == "search" else []:
        if column != "_source":
            uses.append(FieldUse(column, "column", f"{title}: column"))
    for sort in attributes.get("sort", []) if obj["type"] == "search" else []:
        if isinstance(sort, list) and sort:
            uses.append(FieldUse(sort[0], "sort", f"{title}: sort"))
    for flt in parsed.get("searchSourceJSON", {}).get("filter", []):
        key = flt.get("meta", {}).get("key")
        if key and key != "query":
            uses.append(FieldUse(key, "filter", f"{title}: filter"))
    vis = parsed.get("visState")
    if isinstance(vis, dict):
        uses += _vis_uses(vis, title)
    if "vegaSpec" in parsed:
        uses += _vega_uses(parsed["vegaSpec"], title)
    return uses


def _vis_uses(vis: dict, title: str) -> list[FieldUse]:
    uses = []
    for agg in vis.get("aggs", []):
        field = agg.get("params", {}).get("field")
        if field and agg.get("enabled", True):
            uses.append(FieldUse(field, agg["type"], f"{title}: agg {agg.get('id')}"))
    params = vis.get("params", {})
    if vis.get("type") == "metrics" and params.get("type") != "markdown":
        time_field = params.get("time_field") or params.get("default_timefield")
        if time_field:
            uses.append(FieldUse(time_field, "date_histogram", f"{title}: TSVB time field"))
        for series in params.get("series", []):
            where = f"{title}: TSVB series {series.get('label') or series.get('id')}"
            if series.get("split_mode") == "terms" and series.get("terms_field"):
                uses.append(FieldUse(series["terms_field"], "terms", where))
            if series.get("override_index_pattern") and series.get("series_time_field"):
                uses.append(FieldUse(series["series_time_field"], "date_histogram", where))
            for metric in series.get("metrics", []):
                if metric.get("type") not in _TSVB_PIPELINE and metric.get("field"):
                    uses.append(FieldUse(metric["field"], metric["type"], where))
    if vis.get("type") == "input_control_vis":
        for control in params.get("controls", []):
            use = "terms" if control.get("type") == "list" else "min"
            uses.append(FieldUse(control["fieldName"], use, f"{title}: control {control.get('label')}"))
    return uses


def _vega_uses(spec: dict, title: str) -> list[FieldUse]:
    uses = []
    data = spec.get("data", [])
    for entry in data if isinstance(data, list) else [data]:
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, dict):
            continue
        where = f"{title}: Vega data {entry.get('name')}"
        if isinstance(url.get("%timefield%"), str):
            uses.append(FieldUse(url["%timefield%"], "time", where))
        _walk_dsl(url.get("body", {}), where, uses)
    return uses


def _walk_dsl(node, where: str, uses: list[FieldUse]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _DSL_FIELD_AGGS and isinstance(value, dict) and isinstance(value.get("field"), str):
                uses.append(FieldUse(value["field"], key, where))
            _walk_dsl(value, where, uses)
    elif isinstance(node, list):
        for value in node:
            _walk_dsl(value, where, uses)
