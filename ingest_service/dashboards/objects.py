"""Builders for saved objects in the legacy format both Kibana (7.10+, 8.x) and OpenSearch
Dashboards (1.x, 2.x) import: JSON-in-string attributes, named references, and the
migration versions Antrea's export carried (so every later migration still runs).  Pure.
"""
from __future__ import annotations

import json
import uuid

# Stable ids: uuid5 of a readable name, so a re-render never changes an id and an
# import with overwrite replaces the previous version of the same object.
_ID_NAMESPACE = uuid.UUID("6b3f6c1e-5a0d-4a8e-9b1e-0f10e0a7d5b2")

MIGRATION_VERSIONS = {"index-pattern": "7.6.0", "visualization": "7.8.0", "search": "7.4.0", "dashboard": "7.3.0"}
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
EMPTY_QUERY = {"query": "", "language": "kuery"}


def object_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"flow-ingest:{kind}:{name}"))


def dumps(value) -> str:
    # Compact and key-sorted: the rendered files are stable byte for byte.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def saved_object(kind: str, object_id_: str, attributes: dict, references: list[dict]) -> dict:
    return {"id": object_id_, "type": kind, "attributes": attributes, "references": references,
            "migrationVersion": {kind: MIGRATION_VERSIONS[kind]}}


# -- filters (the query DSL Kibana sends is embedded, so a filter means the same everywhere) --

def phrases_filter(path: str, values, *, negate: bool = False, alias: str | None = None) -> dict:
    values = list(values)
    return {"$state": {"store": "appState"},
            "meta": {"alias": alias, "disabled": False, "key": path, "negate": negate, "params": values,
                     "type": "phrases", "value": ", ".join(values)},
            "query": {"bool": {"minimum_should_match": 1,
                               "should": [{"match_phrase": {path: value}} for value in values]}}}


def exists_filter(path: str, *, negate: bool = False, alias: str | None = None) -> dict:
    return {"$state": {"store": "appState"},
            "meta": {"alias": alias, "disabled": False, "key": path, "negate": negate, "type": "exists", "value": "exists"},
            "query": {"exists": {"field": path}}}


def search_source(filters: list[dict], *, with_index: bool) -> str:
    source: dict = {"filter": filters, "query": EMPTY_QUERY}
    if with_index:
        source["indexRefName"] = INDEX_REF
    return dumps(source)


# -- aggregations of a visState ------------------------------------------------------

def metric_agg(agg_id: str, kind: str, field: str | None = None, label: str = "", schema: str = "metric") -> dict:
    params: dict = {}
    if field:
        params["field"] = field
    if label:
        params["customLabel"] = label
    return {"id": agg_id, "enabled": True, "type": kind, "schema": schema, "params": params}


def terms_agg(agg_id: str, schema: str, field: str, *, size: int, order_by: str, label: str = "") -> dict:
    params = {"field": field, "orderBy": order_by, "order": "desc", "size": size, "otherBucket": False,
              "otherBucketLabel": "Other", "missingBucket": False, "missingBucketLabel": "Missing"}
    if label:
        params["customLabel"] = label
    return {"id": agg_id, "enabled": True, "type": "terms", "schema": schema, "params": params}


def date_histogram_agg(agg_id: str, field: str, label: str = "") -> dict:
    params = {"field": field, "useNormalizedEsInterval": True, "scaleMetricValues": False, "interval": "auto",
              "drop_partials": False, "min_doc_count": 1, "extended_bounds": {}}
    if label:
        params["customLabel"] = label
    return {"id": agg_id, "enabled": True, "type": "date_histogram", "schema": "segment", "params": params}


# -- visualization params per legacy type ---------------------------------------------

def pie_params() -> dict:
    return {"type": "pie", "addTooltip": True, "addLegend": True, "legendPosition": "right", "isDonut": True,
            "labels": {"show": False, "values": True, "last_level": True, "truncate": 100}}


def xy_params(chart: str, metric_ids: list[str], value_title: str, *, horizontal: bool = False,
              stacked: bool = False) -> dict:
    """line / area / histogram / horizontal_bar: one value axis, one series per metric."""
    category_position, value_position = ("left", "bottom") if horizontal else ("bottom", "left")
    series_type = {"horizontal_bar": "histogram"}.get(chart, chart)
    return {
        "type": chart, "addTooltip": True, "addLegend": True, "legendPosition": "right", "times": [],
        "addTimeMarker": False, "labels": {"show": False},
        "grid": {"categoryLines": False, "valueAxis": "ValueAxis-1"},
        "categoryAxes": [{"id": "CategoryAxis-1", "type": "category", "position": category_position, "show": True,
                          "style": {}, "scale": {"type": "linear"},
                          "labels": {"show": True, "filter": True, "truncate": 100}, "title": {}}],
        "valueAxes": [{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value", "position": value_position,
                       "show": True, "style": {}, "scale": {"type": "linear", "mode": "normal"},
                       "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                       "title": {"text": value_title}}],
        "seriesParams": [{"show": True, "type": series_type, "mode": "stacked" if stacked else "normal",
                          "valueAxis": "ValueAxis-1", "drawLinesBetweenPoints": True, "lineWidth": 2,
                          "showCircles": True, "interpolate": "linear", "data": {"id": metric_id, "label": ""}}
                         for metric_id in metric_ids],
        "thresholdLine": {"show": False, "value": 10, "width": 1, "style": "full", "color": "#E7664C"},
    }


def heatmap_params() -> dict:
    return {"type": "heatmap", "addTooltip": True, "addLegend": True, "enableHover": False, "legendPosition": "right",
            "times": [], "colorsNumber": 8, "colorSchema": "Greens", "setColorRange": False, "colorsRange": [],
            "invertColors": False, "percentageMode": False,
            "valueAxes": [{"show": False, "id": "ValueAxis-1", "type": "value",
                           "scale": {"type": "linear", "defaultYExtents": False},
                           "labels": {"show": False, "rotate": 0, "overwriteColor": False, "color": "black"}}]}


def table_params(per_page: int = 10) -> dict:
    return {"perPage": per_page, "showPartialRows": False, "showMetricsAtAllLevels": False,
            "sort": {"columnIndex": None, "direction": None}, "showTotal": True, "totalFunc": "sum",
            "percentageCol": ""}


def metric_params() -> dict:
    return {"addTooltip": True, "addLegend": False, "type": "metric",
            "metric": {"percentageMode": False, "useRanges": False, "colorSchema": "Green to Red",
                       "metricColorMode": "None", "colorsRange": [{"from": 0, "to": 10000}],
                       "labels": {"show": True}, "invertColors": False,
                       "style": {"bgFill": "#000", "bgColor": False, "labelColor": False, "subText": "", "fontSize": 36}}}


def visualization(name: str, title: str, vis_type: str, aggs: list[dict], params: dict, *, index_id: str | None,
                  filters: list[dict] | None = None, description: str = "") -> dict:
    vis_state = {"title": title, "type": vis_type, "aggs": aggs, "params": params}
    references = [{"name": INDEX_REF, "type": "index-pattern", "id": index_id}] if index_id else []
    attributes = {"title": title, "description": description, "version": 1, "uiStateJSON": "{}",
                  "visState": dumps(vis_state),
                  "kibanaSavedObjectMeta": {"searchSourceJSON": search_source(filters or [], with_index=bool(index_id))}}
    return saved_object("visualization", object_id("visualization", name), attributes, references)


def saved_search(name: str, title: str, columns: list[str], sort_field: str, index_id: str,
                 filters: list[dict] | None = None, description: str = "") -> dict:
    source = {"filter": filters or [], "query": EMPTY_QUERY, "highlightAll": True, "version": True,
              "indexRefName": INDEX_REF}
    attributes = {"title": title, "description": description, "hits": 0, "version": 1, "columns": columns,
                  "sort": [[sort_field, "desc"]], "kibanaSavedObjectMeta": {"searchSourceJSON": dumps(source)}}
    return saved_object("search", object_id("search", name), attributes,
                        [{"name": INDEX_REF, "type": "index-pattern", "id": index_id}])


GRID_COLUMNS = 48


def layout_panels(sizes: list[tuple[int, int]]) -> list[dict]:
    """(width, height) per panel -> gridData, filling rows of the 48-column grid left to right."""
    grids, x, y, row_height = [], 0, 0, 0
    for index, (width, height) in enumerate(sizes):
        if x + width > GRID_COLUMNS:
            x, y, row_height = 0, y + row_height, 0
        grids.append({"x": x, "y": y, "w": width, "h": height, "i": str(index + 1)})
        x += width
        row_height = max(row_height, height)
    return grids


def dashboard(name: str, title: str, panels: list[tuple[dict, int, int]], filters: list[dict], *,
              description: str = "", time_from: str = "now-1h") -> dict:
    """``panels``: (saved object, width, height) in reading order."""
    grids = layout_panels([(w, h) for _, w, h in panels])
    panels_json, references = [], []
    for index, ((panel, _, _), grid) in enumerate(zip(panels, grids)):
        ref = f"panel_{index}"
        panels_json.append({"version": "7.8.0", "gridData": grid, "panelIndex": grid["i"], "embeddableConfig": {},
                            "panelRefName": ref})
        references.append({"name": ref, "type": panel["type"], "id": panel["id"]})
    attributes = {"title": title, "description": description, "hits": 0, "version": 1, "timeRestore": True,
                  "timeFrom": time_from, "timeTo": "now", "refreshInterval": {"pause": True, "value": 0},
                  "panelsJSON": dumps(panels_json),
                  "optionsJSON": dumps({"hidePanelTitles": False, "useMargins": True}),
                  "kibanaSavedObjectMeta": {"searchSourceJSON": search_source(filters, with_index=False)}}
    return saved_object("dashboard", object_id("dashboard", name), attributes, references)


def index_pattern(name: str, title: str, time_field: str, fields: list[dict], formats: dict) -> dict:
    attributes = {"title": title, "timeFieldName": time_field, "fields": dumps(fields),
                  "fieldFormatMap": dumps(formats)}
    return saved_object("index-pattern", object_id("index-pattern", name), attributes, [])
