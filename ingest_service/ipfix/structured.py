"""RFC 6313 structured data: basicList, subTemplateList, subTemplateMultiList.

Each decoder gets the raw field content and the decode context of the data set (the
session's templates and registry).  Anything it cannot decode (unknown template,
truncation, nesting deeper than MAX_DEPTH) falls back to raw hex for that field only,
so the rest of the record is always kept.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAX_DEPTH = 4  # nested lists deeper than this are kept raw (guards template loops)
_HEADER_BL = struct.Struct(">BHH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


@dataclass(slots=True)
class DecodeContext:
    """What a data-set decode needs beyond the bytes: templates of the same scope."""

    registry: object
    templates: dict = field(default_factory=dict)  # template id -> Template
    depth: int = 0
    v9: bool = False


def _nested(ctx: DecodeContext) -> DecodeContext:
    return DecodeContext(ctx.registry, ctx.templates, ctx.depth + 1, ctx.v9)


def decode_basic_list(raw: bytes, ctx: DecodeContext):
    from .compiler import compile_fields
    from .templates import FieldSpec, resolve_ipfix_fields

    if ctx is None or ctx.depth >= MAX_DEPTH or len(raw) < 5:
        return raw.hex()
    semantic, element_id, length = _HEADER_BL.unpack_from(raw, 0)
    offset = 5
    enterprise = 0
    if element_id & 0x8000:
        if len(raw) < 9:
            return raw.hex()
        enterprise = _U32.unpack_from(raw, 5)[0]
        element_id &= 0x7FFF
        offset = 9
    (item,) = resolve_ipfix_fields(ctx.registry, (FieldSpec(element_id, length, enterprise),))
    if length == 0:
        return {"semantic": semantic, "element": item.name, "values": []}
    decoder = compile_fields((item,))
    records, stop, error = decoder(raw, offset, len(raw), _nested(ctx))
    if error or stop != len(raw):
        return raw.hex()
    return {"semantic": semantic, "element": item.name, "values": [r.get(item.name) for r in records]}


def _records_of(template_id: int, raw: bytes, start: int, end: int, ctx: DecodeContext):
    template = ctx.templates.get(template_id)
    if template is None or template.decoder is None:
        return None
    records, stop, error = template.decoder(raw, start, end, _nested(ctx))
    if error:
        return None
    return records


def decode_sub_template_list(raw: bytes, ctx: DecodeContext):
    if ctx is None or ctx.depth >= MAX_DEPTH or len(raw) < 3:
        return raw.hex()
    semantic = raw[0]
    template_id = _U16.unpack_from(raw, 1)[0]
    records = _records_of(template_id, raw, 3, len(raw), ctx)
    if records is None:
        return raw.hex()
    return {"semantic": semantic, "template_id": template_id, "records": records}


def decode_sub_template_multi_list(raw: bytes, ctx: DecodeContext):
    if ctx is None or ctx.depth >= MAX_DEPTH or len(raw) < 1:
        return raw.hex()
    semantic = raw[0]
    offset = 1
    lists = []
    while offset + 4 <= len(raw):
        template_id, length = struct.unpack_from(">HH", raw, offset)
        if length < 4 or offset + length > len(raw):
            return raw.hex()
        records = _records_of(template_id, raw, offset + 4, offset + length, ctx)
        if records is None:
            lists.append({"template_id": template_id, "raw": raw[offset + 4:offset + length].hex()})
        else:
            lists.append({"template_id": template_id, "records": records})
        offset += length
    return {"semantic": semantic, "lists": lists}
