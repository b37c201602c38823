"""Per-template record decoders, generated once per template layout.

When a template arrives we generate (and cache) a Python function for exactly its
layout: runs of fixed-length fields become one precompiled ``struct`` call, variable-
length fields are read inline, and each value gets only the conversion its type needs.
This keeps per-record work to a few C calls instead of a per-field interpreter loop.

A generated decoder has the signature ``decode(buf, off, end, ctx)`` and returns
``(records, stop_offset, error)``; records decoded before an error are kept.
"""
from __future__ import annotations

import struct
from functools import lru_cache

from . import values
from .structured import decode_basic_list, decode_sub_template_list, decode_sub_template_multi_list
from .templates import VARIABLE_LENGTH, ResolvedField

_UNSIGNED_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_SIGNED_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
_NATURAL_SIZE = {
    "unsigned8": 1, "unsigned16": 2, "unsigned32": 4, "unsigned64": 8,
    "signed8": 1, "signed16": 2, "signed32": 4, "signed64": 8,
}
_STRUCTURED = {
    "basicList": decode_basic_list,
    "subTemplateList": decode_sub_template_list,
    "subTemplateMultiList": decode_sub_template_multi_list,
}


class TruncatedRecord(Exception):
    """A variable-length field claims more bytes than its set holds."""


def _fixed_plan(field: ResolvedField):
    """(struct code, converter or None, needs ctx) for a fixed-length field."""
    kind, n = field.type, field.length
    if kind.startswith("unsigned") and kind != "unsigned256":
        # Reduced-size encoding (RFC 7011 6.2): fewer bytes than the type, big-endian.
        if n in _UNSIGNED_CODES and n <= _NATURAL_SIZE[kind]:
            return _UNSIGNED_CODES[n], None, False
        return f"{n}s", values.big_unsigned, False
    if kind.startswith("signed"):
        if n in _SIGNED_CODES and n <= _NATURAL_SIZE[kind]:
            return _SIGNED_CODES[n], None, False
        return f"{n}s", values.big_signed, False
    if kind in ("float32", "float64"):
        if n == 4:
            return "f", None, False
        if n == 8 and kind == "float64":
            return "d", None, False
    elif kind == "boolean" and n == 1:
        return "B", values.boolean_value, False
    elif kind == "macAddress" and n == 6:
        return "6s", values.mac_text, False
    elif kind == "ipv4Address" and n == 4:
        return "4s", values.ipv4_text, False
    elif kind == "ipv6Address" and n == 16:
        return "16s", values.ipv6_text, False
    elif kind == "string":
        return f"{n}s", values.string_text, False
    elif kind == "dateTimeSeconds" and n == 4:
        return "I", values.iso_from_seconds, False
    elif kind == "dateTimeMilliseconds" and n == 8:
        return "Q", values.iso_from_millis, False
    elif kind == "dateTimeMicroseconds" and n == 8:
        return "Q", values.iso_from_ntp_micro, False
    elif kind == "dateTimeNanoseconds" and n == 8:
        return "Q", values.iso_from_ntp_nano, False
    elif kind == "dateTimeMicroseconds" and n == 16:
        return "16s", values.iso_from_seconds_and_micros, False  # pmacct's non-RFC encoding
    elif kind == "unsigned256":
        return f"{n}s", values.big_unsigned, False
    elif kind in _STRUCTURED:
        return f"{n}s", _STRUCTURED[kind], True
    # octetArray, unknown elements, and lengths a type cannot have (e.g. a 2-byte
    # ipv4Address from H3C): keep the raw bytes as hex rather than guess.
    return f"{n}s", values.hex_text, False


def _variable_converter(field: ResolvedField):
    """(converter, needs ctx) for a variable-length field."""
    kind = field.type
    if kind == "string":
        return values.string_text, False
    if kind in _STRUCTURED:
        return _STRUCTURED[kind], True
    if kind.startswith("unsigned"):
        return _var_unsigned, False
    if kind.startswith("signed"):
        return _var_signed, False
    if kind == "ipv4Address":
        return _var_ipv4, False
    if kind == "ipv6Address":
        return _var_ipv6, False
    if kind == "macAddress":
        return _var_mac, False
    return values.hex_text, False


def _var_unsigned(raw: bytes):
    return values.big_unsigned(raw) if raw else ""


def _var_signed(raw: bytes):
    return values.big_signed(raw) if raw else ""


def _var_ipv4(raw: bytes):
    return values.ipv4_text(raw) if len(raw) == 4 else raw.hex()


def _var_ipv6(raw: bytes):
    return values.ipv6_text(raw) if len(raw) == 16 else raw.hex()


def _var_mac(raw: bytes):
    return values.mac_text(raw) if len(raw) == 6 else raw.hex()


@lru_cache(maxsize=2048)
def compile_fields(fields: tuple[ResolvedField, ...]):
    """Return the decoder for a resolved template layout (cached per layout)."""
    namespace: dict = {
        "TruncatedRecord": TruncatedRecord,
        "struct_error": struct.error,
    }
    groups: list[tuple[str, object]] = []  # ("fixed", [fields]) / ("var", field)
    for field in fields:
        if field.length == VARIABLE_LENGTH:
            groups.append(("var", field))
        elif groups and groups[-1][0] == "fixed":
            groups[-1][1].append(field)
        else:
            groups.append(("fixed", [field]))

    min_length = 0
    body: list[str] = []
    items: list[str] = []  # dict entries of one record
    converter_index = 0

    def bind(function) -> str:
        nonlocal converter_index
        name = f"C{converter_index}"
        converter_index += 1
        namespace[name] = function
        return name

    all_fixed = all(kind == "fixed" for kind, _ in groups)
    string_slots: list[str] = []  # raw slices of variable-length strings, decoded together
    for group_index, (kind, payload) in enumerate(groups):
        if kind == "fixed":
            codes = []
            slot = 0
            unpacked = f"v{group_index}" if not all_fixed else "v"
            for field in payload:
                if field.length == 0:
                    continue  # zero-length fields (v9 type 0, SRX scope) carry nothing
                if field.skip:
                    codes.append(f"{field.length}x")
                    continue
                code, converter, needs_ctx = _fixed_plan(field)
                codes.append(code)
                value = f"{unpacked}[{slot}]"
                if converter is not None:
                    value = f"{bind(converter)}({value}, ctx)" if needs_ctx else f"{bind(converter)}({value})"
                items.append(f"{field.name!r}: {value}")
                slot += 1
            fmt = ">" + "".join(codes)
            size = struct.calcsize(fmt)
            if size == 0:
                continue
            min_length += size
            packer = struct.Struct(fmt)
            if all_fixed:
                namespace["ITER"] = packer.iter_unpack
                namespace["SIZE"] = size
            elif slot == 0:
                body.append(f"off += {size}")
            elif fmt in (">B", ">H") and group_index > 0:
                # a lone small integer between strings: indexing beats a struct call
                expr = "(buf[off],)" if fmt == ">B" else "((buf[off] << 8) | buf[off + 1],)"
                body.append(f"v{group_index} = {expr}; off += {size}")
            else:
                namespace[f"S{group_index}"] = packer.unpack_from
                body.append(f"v{group_index} = S{group_index}(buf, off); off += {size}")

        else:
            field = payload
            min_length += 1
            raw = f"r{group_index}"
            # The common case (length < 255) costs one index, one compare and one
            # slice; bounds are checked once per record, before it is kept.
            body.extend([
                "n = buf[off]",
                "if n < 255:",
                f"    {raw} = buf[off + 1:off + 1 + n]; off += 1 + n",
                "else:",
                "    n = (buf[off + 1] << 8) | buf[off + 2]",
                f"    {raw} = buf[off + 3:off + 3 + n]; off += 3 + n",
            ])
            if not field.skip:
                converter, needs_ctx = _variable_converter(field)
                if converter is values.string_text:
                    string_slots.append(raw)
                    call = f"T[{len(string_slots) - 1}]"
                else:
                    call = f"{bind(converter)}({raw}, ctx)" if needs_ctx else f"{bind(converter)}({raw})"
                items.append(f"{field.name!r}: {call}")

    record = "{" + ", ".join(items) + "}"
    if all_fixed:
        if "ITER" not in namespace:
            source = "def decode(buf, off, end, ctx):\n    return [], off, 'template has no data octets'\n"
        else:
            source = (
                "def decode(buf, off, end, ctx):\n"
                "    stop = off + (end - off) // SIZE * SIZE\n"
                f"    return [{record} for v in ITER(buf[off:stop])], stop, None\n"
            )
    else:
        lines = [
            "def decode(buf, off, end, ctx):",
            "    recs = []",
            "    append = recs.append",
            "    start = off",
            "    try:",
            f"        while end - off >= {min_length}:",
            "            start = off",
        ]
        lines.extend("            " + line for line in body)
        lines.append("            if off > end: raise TruncatedRecord")
        if string_slots:
            # One join + decode + split for all strings of the record: NUL is the separator,
            # so a value containing NUL changes the count and takes the per-value path.
            namespace["STR"] = values.string_text
            joined = ", ".join(string_slots)
            lines.append(f"            T = b'\\0'.join(({joined},)).decode('utf-8', 'replace').split('\\0')")
            lines.append(f"            if len(T) != {len(string_slots)}: T = [STR(x) for x in ({joined},)]")
        lines.append(f"            append({record})")
        lines.extend([
            "    except (TruncatedRecord, struct_error, IndexError):",
            "        return recs, start, 'truncated record'",
            "    return recs, off, None",
        ])
        source = "\n".join(lines) + "\n"
    exec(compile(source, f"<ipfix template decoder {len(fields)} fields>", "exec"), namespace)
    decode = namespace["decode"]
    decode.source = source
    decode.min_length = min_length
    return decode
