"""Flow record or JSON document -> normalized document, driven by the schema.

One place turns every input into the documents the index template expects: derived fields
(``schema/derive.py``), then the configured layout (``schema/layout.py``).
"""
from __future__ import annotations

from .documents import DEFAULT_LAYOUT, DocumentLayout, to_document
from .records import FlowRecord
from .schema.derive import ThroughputState, derive
from .schema.layout import to_ecs


class Normalizer:
    def __init__(self, layout: str = "logstash", document_layout: DocumentLayout = DEFAULT_LAYOUT,
                 throughput_state: ThroughputState | None = None):
        if layout not in ("logstash", "ecs"):
            raise ValueError(f"layout must be logstash or ecs, not {layout!r}")
        self.layout = layout
        self.document_layout = document_layout
        self.state = throughput_state if throughput_state is not None else ThroughputState()

    def document(self, record: FlowRecord) -> dict:
        doc = to_document(record, self.document_layout)
        return self.normalize(doc, self.document_layout.target_for(record.version))

    def normalize(self, doc: dict, target: str | None = None) -> dict:
        target = target or self.document_layout.target
        body = doc.get(target)
        if isinstance(body, dict) and not body.get("options"):
            derive(body, self.state)
        if self.layout == "ecs":
            to_ecs(doc, target)
        return doc
