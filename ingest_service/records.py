"""The flow record: what every input (IPFIX, NetFlow, JSON) hands to normalization."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class FlowRecord:
    exporter: str  # exporter address, canonical text
    exporter_port: int
    version: int  # 5, 9 or 10 (IPFIX)
    domain_id: int  # IPFIX observation domain / v9 source id / v5 engine type<<8|id
    template_id: int  # v5: 0
    export_time: float  # epoch seconds from the message header
    fields: dict  # decoded elements by name, values JSON-ready
    options: bool = False  # an options data record (RFC 7011 3.4.2.2)
    extra: dict | None = None  # applied exporter state: absolute times, sampling rate, names
