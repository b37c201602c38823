"""Flow record -> document (Logstash-compatible layout) -> serialized JSON line.

Layout (what Antrea's Logstash collector produced, so existing dashboards keep working)::

    {"@timestamp": <export time>, "@version": "1", "host": <exporter address>,
     "type": "ipfix", "ipfix": {"version": 10, "flowset_id": <template id>, <element>: <value>, ...}}

The target object name is configurable (``ipfix`` by default; e.g. ``netflow`` for
v5/v9).  Values the decoder derived from exporter state (absolute times, sampling
rate, interface names; see ``ipfix.enrich``) sit beside the elements; options records
are marked with ``"options": true``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ipfix.values import iso_from_float
from .records import FlowRecord

try:  # orjson is ~5x faster than the standard library on these documents
    import orjson

    def serialize(document: dict) -> bytes:
        return orjson.dumps(document)

except ImportError:  # pragma: no cover - orjson is a declared dependency
    import json

    def serialize(document: dict) -> bytes:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class DocumentLayout:
    target: str = "ipfix"  # object the elements go under
    netflow_target: str | None = None  # for v5/v9 records, if different (e.g. "netflow")
    type: str = "ipfix"  # the "type" field (Logstash input type)

    def target_for(self, version: int) -> str:
        if version != 10 and self.netflow_target:
            return self.netflow_target
        return self.target


DEFAULT_LAYOUT = DocumentLayout()


def to_document(record: FlowRecord, layout: DocumentLayout = DEFAULT_LAYOUT) -> dict:
    """Build the document for one record. Takes ownership of ``record.fields``."""
    body = record.fields
    body["version"] = record.version
    body["flowset_id"] = record.template_id
    if record.extra:
        for key, value in record.extra.items():
            body.setdefault(key, value)
    if record.options:
        body["options"] = True
    return {
        "@timestamp": iso_from_float(record.export_time),
        "@version": "1",
        "host": record.exporter,
        "type": layout.type,
        layout.target_for(record.version): body,
    }

