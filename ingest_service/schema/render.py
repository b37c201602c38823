"""Render the search-engine assets from the schema table (pure: dicts in, dicts out).

* mappings (per layout), as a component template;
* settings (per engine: Elasticsearch and OpenSearch reject each other's lifecycle settings);
* the composable index template tying them together, per target mode;
* the ingest pipeline doing the same normalization as ``derive.py`` server-side;
* the ILM (Elasticsearch) and ISM (OpenSearch) lifecycle policies.

The schema version is a hash of every rendered mapping: any mapping change changes it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .derive import ENUM_FIELDS, IP_FIELDS, LABEL_FIELDS, NOT_APPLICABLE_FIELDS, PROTOCOL_NAMES, UUID_FIELDS
from .layout import ecs_moves
from .table import flow_schema

ENGINES = ("elasticsearch", "opensearch")
MODES = ("datastream", "alias", "daily")
PREFIX = "flow-ingest"


@dataclass(frozen=True)
class TargetConfig:
    """Where documents go and how long they live."""

    mode: str = "datastream"  # datastream | alias | daily
    name: str = "flow-ipfix"  # data stream / write alias name; daily indices are flow-YYYY.MM.dd
    layout: str = "logstash"  # logstash | ecs
    target: str = "ipfix"  # object the elements go under
    retention_days: int = 7
    rollover_max_age: str = "1d"
    rollover_max_primary_shard_size: str = "50gb"
    shards: int = 1
    replicas: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"target mode must be one of {MODES}, not {self.mode!r}")
        if self.layout not in ("logstash", "ecs"):
            raise ValueError(f"layout must be logstash or ecs, not {self.layout!r}")
        if not self.name.startswith("flow-"):
            raise ValueError(f"target name {self.name!r} must start with 'flow-' so Antrea's flow-* index pattern matches")
        if self.retention_days < 1:
            raise ValueError("retention_days must be >= 1")



# -- mappings -------------------------------------------------------------------------

_DATE_FORMATS = {
    # dateTimeSeconds arrive as ISO text from our decoder and as epoch seconds in Antrea's JSON
    "seconds": "strict_date_optional_time||epoch_second",
    "millis": "strict_date_optional_time||epoch_millis",
}


def _leaf(field) -> dict:
    mapping: dict = {"type": field.mapping}
    if field.mapping == "keyword":
        mapping["ignore_above"] = 1024
    elif field.mapping == "date":
        mapping["format"] = _DATE_FORMATS["seconds" if field.name.endswith("Seconds") or "Seconds" in field.name else "millis"]
    elif field.mapping == "object":
        return {"type": "object", "dynamic": True}
    if field.keyword_subfield and field.mapping in ("keyword", "ip", "integer", "long"):
        mapping["fields"] = {"keyword": {"type": "keyword", "ignore_above": 1024}}
    return mapping


def _insert(properties: dict, path: str, leaf: dict) -> None:
    parts = path.split(".")
    node = properties
    for part in parts[:-1]:
        node = node.setdefault(part, {"properties": {}}).setdefault("properties", {})
    node[parts[-1]] = leaf


def render_mappings(layout: str = "logstash", target: str = "ipfix") -> dict:
    schema = flow_schema()
    properties: dict = {"@timestamp": {"type": "date"}}
    if layout == "logstash":
        properties.update({"@version": {"type": "keyword"}, "host": {"type": "keyword"}, "type": {"type": "keyword"}})
    else:
        properties["observer"] = {"properties": {"ip": {"type": "ip"}}}
    target_props: dict = {}
    for field in schema.fields:
        leaf = _leaf(field)
        if layout == "ecs" and field.ecs:
            _insert(properties, field.ecs, leaf)
        else:
            target_props[field.name] = leaf
    properties[target] = {"properties": target_props}
    return {
        "dynamic": True,
        # elements outside the table (vendor, rarely used IANA) still get sensible types
        "dynamic_templates": [
            {"labels_as_keywords": {"path_match": "*LabelsMap.*", "mapping": {"type": "keyword", "ignore_above": 1024}}},
            {"ecs_labels_as_keywords": {"path_match": "kubernetes.*.labels.*", "mapping": {"type": "keyword", "ignore_above": 1024}}},
            {"strings_as_keywords": {"match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 1024}}},
            {"floats_as_doubles": {"match_mapping_type": "double", "mapping": {"type": "double"}}},
        ],
        "properties": properties,
    }


def schema_version() -> str:
    """Hash of every rendered mapping; the version carried by templates and pipelines."""
    rendered = {layout: render_mappings(layout) for layout in ("logstash", "ecs")}
    rendered["pipeline_script"] = PAINLESS_NORMALIZE
    digest = hashlib.sha256(json.dumps(rendered, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def template_version() -> int:
    # index/component templates take an integer version
    return int(schema_version()[:7], 16)


# -- the ingest pipeline --------------------------------------------------------------

# One Painless script doing what derive.py does (stateless), parameterised by the same
# tables rendered from the schema. Kept as readable source here; the pipeline embeds it.
PAINLESS_NORMALIZE = """
def b = ctx[params.target];
if (b == null) { return; }
for (def f : params.uuid_fields) {
  def v = b[f];
  if (v instanceof String && v.length() == 32) {
    b[f] = v.substring(0, 8) + '-' + v.substring(8, 12) + '-' + v.substring(12, 16) + '-' + v.substring(16, 20) + '-' + v.substring(20);
  }
}
for (def f : params.ip_fields) { if (b[f] instanceof String && b[f].isEmpty()) { b.remove(f); } }
for (def pair : params.counters) {
  for (def s : pair.sources) {
    def v = b[s];
    if (v instanceof Number) { b[pair.target] = v; break; }
  }
}
def proto = b.protocolIdentifier;
if (proto instanceof Number && params.protocols.containsKey(String.valueOf(proto))) {
  b.protocolName = params.protocols[String.valueOf(proto)];
}
for (def e : params.enums) {
  def v = b[e.source];
  if (v instanceof Number && e.table.containsKey(String.valueOf(v))) { b[e.target] = e.table[String.valueOf(v)]; }
}
for (def side : ['source', 'destination']) {
  def v6 = b[side + 'IPv6Address'];
  def addr = (v6 != null && v6 != '') ? v6 : b[side + 'IPv4Address'];
  if (addr != null && addr != '') { b[side + 'IP'] = addr; }
}
def pod = b.sourcePodName;
if (pod != null && pod != '') {
  def protoText = proto == 6 ? 'TCP' : (proto == 17 ? 'UDP' : String.valueOf(proto));
  def svc = b.destinationServicePortName;
  if (svc != null && svc != '') {
    b.flowKeyPodToService = pod + ':' + b.sourceTransportPort + '->' + svc + b.destinationServicePort + ' ' + protoText;
  }
  if (b.flowType != 3) {
    def dst = b.destinationPodName == null ? '' : b.destinationPodName;
    def key = pod + ':' + b.sourceTransportPort + '->' + dst + ':' + b.destinationTransportPort + ' ' + protoText;
    b.flowKey = key; b.flowKeyPodToPod = key;
  } else {
    def dst = b.destinationIP == null ? '' : b.destinationIP;
    def key = pod + ':' + b.sourceTransportPort + '->' + dst + ':' + b.destinationTransportPort + ' ' + protoText;
    b.flowKey = key; b.flowKeyPodToExternal = key;
  }
}
for (def f : params.not_applicable) { if (b[f] instanceof String && b[f].isEmpty()) { b[f] = 'N/A'; } }
def start = b.flowStartSeconds; def end = b.flowEndSeconds;
if (start != null && end != null) {
  long s = start instanceof Number ? ((Number) start).longValue() : ZonedDateTime.parse(start).toEpochSecond();
  long e = end instanceof Number ? ((Number) end).longValue() : ZonedDateTime.parse(end).toEpochSecond();
  long interval = e - s;
  if (interval < 0) { interval = 0; }
  b.interval = interval;
  for (def t : params.throughputs) {
    if (b.containsKey(t.target)) { continue; }
    for (def src : t.sources) {
      def v = b[src];
      if (v instanceof Number) { b[t.target] = interval > 0 ? ((Number) v).longValue() * 8 / interval : 0L; break; }
    }
  }
}
for (def l : params.labels) {
  def m = b[l.target];
  if (m instanceof Map) {
    def clean = new HashMap();
    for (def k : m.keySet()) { clean[k.replace('.', '_')] = String.valueOf(m[k]); }
    b[l.target] = clean;
  } else if (m != null) { b.remove(l.target); }
}
if (params.ecs) {
  for (def entry : params.ecs_moves.entrySet()) {
    if (!b.containsKey(entry.getKey())) { continue; }
    def value = b.remove(entry.getKey());
    def parts = entry.getValue().splitOnToken('.');
    def node = ctx;
    for (int i = 0; i < parts.length - 1; i++) {
      if (!node.containsKey(parts[i])) { node[parts[i]] = new HashMap(); }
      node = node[parts[i]];
    }
    node[parts[parts.length - 1]] = value;
  }
  if (ctx.containsKey('host')) { def h = ctx.remove('host'); if (!ctx.containsKey('observer')) { ctx.observer = new HashMap(); } ctx.observer.ip = h; }
  ctx.remove('type'); ctx.remove('@version');
}
""".strip()


def pipeline_name(layout: str = "logstash") -> str:
    return f"{PREFIX}-{layout}-{schema_version()}"


def render_pipeline(engine: str, layout: str = "logstash", target: str = "ipfix") -> dict:
    params = {
        "target": target,
        "ecs": layout == "ecs",
        "uuid_fields": list(UUID_FIELDS),
        "ip_fields": list(IP_FIELDS),
        "counters": [{"target": "bytes", "sources": ["octetTotalCount", "octetDeltaCount"]},
                     {"target": "packets", "sources": ["packetTotalCount", "packetDeltaCount"]}],
        "protocols": {str(k): v for k, v in sorted(PROTOCOL_NAMES.items())},
        "enums": [{"target": t, "source": s, "table": {str(k): v for k, v in table.items()}} for t, s, table in ENUM_FIELDS],
        "not_applicable": list(NOT_APPLICABLE_FIELDS),
        "throughputs": [{"target": "throughput", "sources": ["octetDeltaCountFromSourceNode", "octetDeltaCount"]},
                        {"target": "reverseThroughput", "sources": ["reverseOctetDeltaCountFromSourceNode", "reverseOctetDeltaCount"]}],
        "labels": [{"source": s, "target": t} for s, t in LABEL_FIELDS],
        "ecs_moves": dict(sorted(ecs_moves().items())) if layout == "ecs" else {},
    }
    processors: list[dict] = [
        {"json": {"field": f"{target}.{source}", "target_field": f"{target}.{dest}",
                  "if": f"ctx.{target}?.{source} instanceof String && ctx.{target}.{source} != ''",
                  "ignore_failure": True, "tag": f"parse-{source}"}}
        for source, dest in LABEL_FIELDS
    ]
    processors.append({"script": {"lang": "painless", "source": PAINLESS_NORMALIZE, "params": params, "tag": "normalize"}})
    schema = flow_schema()

    def path(name: str) -> str:
        field = schema[name]
        return field.ecs if layout == "ecs" and field.ecs else f"{target}.{name}"

    proto = path("protocolIdentifier")
    condition = " || ".join(f"ctx.{proto.replace('.', '?.')} == {n}" for n in (6, 17, 132))
    # Both engines have a community_id processor, under different parameter names (and
    # Painless cannot hash bytes on either), so this one processor is rendered per engine.
    suffix = "_field" if engine == "opensearch" else ""
    number = "iana_protocol_number_field" if engine == "opensearch" else "iana_number"
    processors.append({"community_id": {
        f"source_ip{suffix}": path("sourceIP"), f"destination_ip{suffix}": path("destinationIP"),
        f"source_port{suffix}": path("sourceTransportPort"), f"destination_port{suffix}": path("destinationTransportPort"),
        number: proto, "target_field": path("communityId"), "ignore_missing": True,
        "if": condition, "ignore_failure": True, "tag": "community-id"}})
    return {
        "description": f"flow-ingest normalization ({layout} layout), schema {schema_version()}: the same "
                       "derived fields as in-process normalization, for documents written by any client",
        "version": template_version(),  # OpenSearch pipelines take no _meta: the version says it
        "processors": processors,
        "on_failure": [{"set": {"field": "error.message", "value": "{{ _ingest.on_failure_message }}"}}],
    }


# -- templates ------------------------------------------------------------------------

def _scope(config: TargetConfig) -> str:
    # Per target name (several data streams / aliases can live side by side); daily indices
    # are always flow-YYYY.MM.dd, so that mode has one scope.
    return "daily" if config.mode == "daily" else f"{config.mode}-{config.name}"


def component_names(engine: str, config: TargetConfig) -> dict[str, str]:
    return {"mappings": f"{PREFIX}-mappings-{config.layout}", "settings": f"{PREFIX}-settings-{engine}-{_scope(config)}"}


def lifecycle_name(config: TargetConfig) -> str:
    # Not versioned by retention: changing it updates the one policy (two OpenSearch ISM
    # policies with the same ism_template patterns would conflict).
    return f"{PREFIX}-{_scope(config)}"


@dataclass(frozen=True)
class Capabilities:
    """What the engine can do; setup probes it, checked-in assets assume everything."""

    pipeline: bool = True  # ingest-common processors (script, json, community_id) and painless
    lifecycle: bool = True  # ILM (Elasticsearch) / ISM plugin (OpenSearch)

    def missing(self) -> list[str]:
        return [name for name in ("pipeline", "lifecycle") if not getattr(self, name)]


FULL = Capabilities()


def render_settings_component(engine: str, config: TargetConfig, caps: Capabilities = FULL) -> dict:
    settings: dict = {
        "number_of_shards": config.shards,
        "number_of_replicas": config.replicas,
        "refresh_interval": "5s",
        "mapping": {"total_fields": {"limit": 2000}},
    }
    if caps.pipeline:
        settings["default_pipeline"] = pipeline_name(config.layout)
    if not caps.lifecycle:
        pass
    elif engine == "elasticsearch":
        settings["lifecycle"] = {"name": lifecycle_name(config)}
        if config.mode == "alias":
            settings["lifecycle"]["rollover_alias"] = config.name
    elif config.mode == "alias":
        settings["plugins"] = {"index_state_management": {"rollover_alias": config.name}}
    return _component({"settings": {"index": settings}}, "settings for " + engine)


def render_mappings_component(config: TargetConfig) -> dict:
    return _component({"mappings": render_mappings(config.layout, config.target)}, f"{config.layout} layout mappings")


def _component(template: dict, what: str) -> dict:
    return {"template": template, "version": template_version(),
            "_meta": {"schema_version": schema_version(), "managed_by": "flow-ingest", "description": what}}


def index_template_name(config: TargetConfig) -> str:
    return f"{PREFIX}-{_scope(config)}"


def render_index_template(engine: str, config: TargetConfig) -> dict:
    names = component_names(engine, config)
    if config.mode == "daily":
        patterns = ["flow-2*"]  # flow-YYYY.MM.dd, as Logstash wrote them
    elif config.mode == "alias":
        patterns = [f"{config.name}-*"]
    else:
        patterns = [config.name]
    body: dict = {
        "index_patterns": patterns,
        "composed_of": [names["mappings"], names["settings"]],
        # above the built-in logs-*-* (100) and typical user templates; our patterns never overlap theirs
        "priority": 210,
        "version": template_version(),
        "_meta": {"schema_version": schema_version(), "layout": config.layout, "mode": config.mode, "managed_by": "flow-ingest"},
    }
    if config.mode == "datastream":
        body["data_stream"] = {}
    return body


def render_ilm_policy(config: TargetConfig) -> dict:
    hot_actions: dict = {}
    if config.mode != "daily":
        hot_actions["rollover"] = {"max_age": config.rollover_max_age,
                                   "max_primary_shard_size": config.rollover_max_primary_shard_size}
    return {"policy": {
        "phases": {
            "hot": {"min_age": "0ms", "actions": hot_actions},
            "delete": {"min_age": f"{config.retention_days}d", "actions": {"delete": {}}},
        },
        "_meta": {"managed_by": "flow-ingest", "schema_version": schema_version()},
    }}


def render_ism_policy(config: TargetConfig) -> dict:
    hot_actions = []
    if config.mode != "daily":
        hot_actions.append({"rollover": {"min_index_age": config.rollover_max_age,
                                         "min_primary_shard_size": config.rollover_max_primary_shard_size}})
    if config.mode == "datastream":
        ism_patterns = [f".ds-{config.name}-*"]
    elif config.mode == "alias":
        ism_patterns = [f"{config.name}-*"]
    else:
        ism_patterns = ["flow-2*"]
    return {"policy": {
        "description": f"flow-ingest {config.mode}: rollover at {config.rollover_max_age} or "
                       f"{config.rollover_max_primary_shard_size} per primary shard, delete after {config.retention_days} days",
        "default_state": "hot",
        "states": [
            {"name": "hot", "actions": hot_actions,
             "transitions": [{"state_name": "delete", "conditions": {"min_index_age": f"{config.retention_days}d"}}]},
            {"name": "delete", "actions": [{"delete": {}}], "transitions": []},
        ],
        "ism_template": [{"index_patterns": ism_patterns, "priority": 100}],
    }}


def first_alias_index(config: TargetConfig) -> str:
    return f"{config.name}-000001"


def daily_index(timestamp: str) -> str:
    """flow-YYYY.MM.dd from an ISO @timestamp, as Logstash's flow-%{+YYYY.MM.dd} did (UTC)."""
    return f"flow-{timestamp[0:4]}.{timestamp[5:7]}.{timestamp[8:10]}"
