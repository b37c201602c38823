"""Schema fields as the dashboards see them: paths in the documents, index-pattern field
specs and formats, and the role checks that keep every panel honest (pure).

A panel names the schema field it shows; this module turns the name into the document
path for a layout and refuses a field whose role does not fit the use (a sum over a
dimension, a terms split on a metric, a time axis on anything but a time field).
"""
from __future__ import annotations

from ..schema.render import render_mappings
from ..schema.table import FlowField, flow_schema

# Roles a terms split (or a Sankey side, a table row) may use; metrics are summed, never split.
SPLIT_ROLES = frozenset({"pod", "namespace", "node", "service", "policy", "address", "port", "dimension", "flowkey"})
METRIC_ROLES = frozenset({"metric"})
TIME_ROLES = frozenset({"time"})

# The namespaces whose traffic the dashboards hide by default: the system's and the
# flow pipeline's own (Flow Aggregator, this collector), which would otherwise dominate.
HIDDEN_NAMESPACES = ("kube-system", "flow-aggregator", "flow-ingest")

# Elasticsearch type -> Kibana index-pattern field type.
_KIBANA_TYPES = {"keyword": "string", "text": "string", "long": "number", "integer": "number", "double": "number",
                 "float": "number", "ip": "ip", "date": "date", "boolean": "boolean"}
AGGREGATABLE_TYPES = frozenset({"keyword", "long", "integer", "double", "float", "ip", "date", "boolean"})

# Schema fmt -> Kibana/OSD field formatter. bits/s has no formatter of its own: an
# abbreviating number ("1.2m") whose unit the labels carry.
_FORMATS = {
    "bytes": {"id": "bytes"},
    "bitsps": {"id": "number", "params": {"pattern": "0,0.[0]a"}},
    "duration_s": {"id": "duration", "params": {"inputFormat": "seconds", "outputFormat": "humanize"}},
}
_UNITS = {"bytes": "bytes", "bitsps": "bits/s", "duration_s": "s"}


class FieldRoleError(ValueError):
    """A panel uses a field in a way its schema role does not allow."""


def field(name: str) -> FlowField:
    schema = flow_schema()
    if name not in schema:
        raise FieldRoleError(f"dashboard field {name!r} is not in the schema table")
    return schema[name]


def path(name: str, layout: str = "logstash", target: str = "ipfix") -> str:
    """Where the field sits in a document of the layout."""
    f = field(name)
    return f.ecs if layout == "ecs" and f.ecs else f"{target}.{name}"


def checked(name: str, roles: frozenset, use: str) -> FlowField:
    f = field(name)
    if f.role not in roles:
        raise FieldRoleError(f"{name!r} has role {f.role!r}: cannot be used as {use} (needs one of {sorted(roles)})")
    if f.mapping == "object":
        raise FieldRoleError(f"{name!r} is an object: cannot be used as {use}")
    return f


def unit(name: str) -> str:
    return _UNITS.get(field(name).fmt, "")


def with_role(role: str) -> list[str]:
    return [f.name for f in flow_schema().with_role(role)]


def mapping_leaves(layout: str = "logstash", target: str = "ipfix") -> dict[str, str]:
    """Every concrete field of the rendered mapping (multi-fields included) -> its type."""
    leaves: dict[str, str] = {}

    def walk(properties: dict, prefix: str) -> None:
        for name, spec in properties.items():
            full = f"{prefix}{name}"
            if "properties" in spec:
                walk(spec["properties"], full + ".")
                continue
            if spec.get("type", "object") == "object":
                continue  # dynamic objects (labels): their keys appear with the data
            leaves[full] = spec["type"]
            for sub, subspec in spec.get("fields", {}).items():
                leaves[f"{full}.{sub}"] = subspec["type"]

    walk(render_mappings(layout, target)["properties"], "")
    return leaves


def index_pattern_fields(layout: str = "logstash", target: str = "ipfix") -> list[dict]:
    """Field specs as an index pattern stores them, rendered from the mapping."""
    specs = []
    for name, es_type in sorted(mapping_leaves(layout, target).items()):
        spec = {"name": name, "type": _KIBANA_TYPES.get(es_type, "string"), "esTypes": [es_type], "count": 0,
                "scripted": False, "searchable": True, "aggregatable": es_type in AGGREGATABLE_TYPES,
                "readFromDocValues": es_type in AGGREGATABLE_TYPES}
        parent, _, last = name.rpartition(".")
        if last == "keyword" and parent:
            spec["subType"] = {"multi": {"parent": parent}}
        specs.append(spec)
    return specs


def field_formats(layout: str = "logstash", target: str = "ipfix") -> dict[str, dict]:
    """Index-pattern fieldFormatMap from the schema's fmt column."""
    return {path(f.name, layout, target): _FORMATS[f.fmt] for f in flow_schema().fields if f.fmt in _FORMATS}

