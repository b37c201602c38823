"""Build IPFIX / NetFlow v9 / v5 messages for tests, independently of the decoder.

Encoding follows RFC 7011 / RFC 3954 directly; values are given already as wire
bytes or integers so tests state exactly what is on the wire.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

VARIABLE = 65535


@dataclass(frozen=True)
class Field:
    element_id: int
    length: int
    enterprise: int = 0


def template_record(template_id: int, fields: list[Field], scope_count: int = 0) -> bytes:
    out = bytearray(struct.pack(">HH", template_id, len(fields)))
    if scope_count:
        out += struct.pack(">H", scope_count)
    for f in fields:
        if f.enterprise:
            out += struct.pack(">HHI", f.element_id | 0x8000, f.length, f.enterprise)
        else:
            out += struct.pack(">HH", f.element_id, f.length)
    return bytes(out)


def withdrawal_record(template_id: int) -> bytes:
    return struct.pack(">HH", template_id, 0)


def ipfix_set(set_id: int, body: bytes, pad_to: int = 0) -> bytes:
    padding = b""
    if pad_to:
        padding = b"\0" * ((-(len(body) + 4)) % pad_to)
    return struct.pack(">HH", set_id, 4 + len(body) + len(padding)) + body + padding


def template_set(*records: bytes) -> bytes:
    return ipfix_set(2, b"".join(records))


def options_template_set(*records: bytes) -> bytes:
    return ipfix_set(3, b"".join(records))


def data_set(template_id: int, *records: bytes, pad_to: int = 0) -> bytes:
    return ipfix_set(template_id, b"".join(records), pad_to)


def varlen(value: bytes) -> bytes:
    """RFC 7011 7: 1-byte length, or 255 + 2-byte length."""
    if len(value) < 255:
        return bytes([len(value)]) + value
    return b"\xff" + struct.pack(">H", len(value)) + value


def ipfix_message(*sets: bytes, export_time: int = 1_700_000_000, sequence: int = 0, domain: int = 1) -> bytes:
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body), export_time, sequence, domain) + body


def v9_packet(*flowsets: bytes, count: int | None = None, sys_uptime: int = 100_000,
              unix_secs: int = 1_700_000_000, sequence: int = 0, source_id: int = 0) -> bytes:
    body = b"".join(flowsets)
    return struct.pack(">HHIIII", 9, count if count is not None else len(flowsets), sys_uptime, unix_secs, sequence, source_id) + body


def v9_template_flowset(template_id: int, fields: list[tuple[int, int]]) -> bytes:
    body = struct.pack(">HH", template_id, len(fields)) + b"".join(struct.pack(">HH", t, n) for t, n in fields)
    return struct.pack(">HH", 0, 4 + len(body)) + body


def v5_packet(records: list[bytes], sys_uptime: int = 100_000, unix_secs: int = 1_700_000_000,
              unix_nsecs: int = 0, sequence: int = 0, engine_type: int = 0, engine_id: int = 0, sampling: int = 0) -> bytes:
    header = struct.pack(">HHIIIIBBH", 5, len(records), sys_uptime, unix_secs, unix_nsecs, sequence, engine_type, engine_id, sampling)
    return header + b"".join(records)


def v5_record(src: bytes, dst: bytes, nexthop: bytes = b"\0" * 4, input_if: int = 0, output_if: int = 0,
              packets: int = 1, octets: int = 64, first: int = 0, last: int = 0, sport: int = 0, dport: int = 0,
              tcp_flags: int = 0, proto: int = 6, tos: int = 0, src_as: int = 0, dst_as: int = 0,
              src_mask: int = 0, dst_mask: int = 0) -> bytes:
    return struct.pack(">4s4s4sHHIIIIHHxBBBHHBBxx", src, dst, nexthop, input_if, output_if, packets, octets,
                       first, last, sport, dport, tcp_flags, proto, tos, src_as, dst_as, src_mask, dst_mask)
