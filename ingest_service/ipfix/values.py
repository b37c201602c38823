"""Pure converters from wire values to the JSON-ready values our documents carry.

Every converter takes the already-unpacked wire value (an int or a bytes slice) and
returns a JSON-friendly value: canonical address text, lowercase hex, ISO 8601 UTC
times.  They are plain module-level functions so the per-template decoders generated
in :mod:`ingest_service.ipfix.compiler` can bind them as globals.
"""
from __future__ import annotations

import socket
import time

NTP_UNIX_OFFSET = 2208988800  # seconds between 1900-01-01 (NTP era 0) and 1970-01-01
_AF_INET6 = socket.AF_INET6
_inet_ntop = socket.inet_ntop
_gmtime = time.gmtime
_strftime = time.strftime

ipv4_text = socket.inet_ntoa


def ipv6_text(raw: bytes) -> str:
    return _inet_ntop(_AF_INET6, raw)


def mac_text(raw: bytes) -> str:
    return raw.hex(":")


def hex_text(raw: bytes) -> str:
    return raw.hex()


def string_text(raw: bytes) -> str:
    # Exporters pad strings with NULs (PAN, Netscaler) or leave garbage after a NUL
    # (nprobe): the value is what precedes the first NUL, as C-style readers show it.
    if b"\0" in raw:
        raw = raw.split(b"\0", 1)[0]
    return raw.decode("utf-8", "replace")


def boolean_value(raw: int):
    # RFC 7011 6.1.5: 1 = true, 2 = false; anything else is kept as the number sent.
    if raw == 1:
        return True
    if raw == 2:
        return False
    return raw


def big_unsigned(raw: bytes):
    """Unsigned integers in odd widths (reduced-size 3/5/6/7 bytes, or unsigned256)."""
    value = int.from_bytes(raw, "big")
    # JSON numbers beyond 64 bits are not portable (orjson, Elasticsearch long): text.
    return value if value < 1 << 64 else str(value)


def big_signed(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


# ISO formatting dominates the cost of time fields; flows of one export share their
# timestamps, so a small cache of recently formatted seconds pays off.
_second_cache: dict[int, str] = {}
_SECOND_CACHE_MAX = 8192


def _iso_second_prefix(seconds: int) -> str:
    text = _second_cache.get(seconds)
    if text is None:
        if len(_second_cache) >= _SECOND_CACHE_MAX:
            _second_cache.clear()
        text = _strftime("%Y-%m-%dT%H:%M:%S", _gmtime(seconds))
        _second_cache[seconds] = text
    return text


def iso_from_seconds(seconds: int):
    try:
        return _iso_second_prefix(seconds) + ".000Z"
    except (OverflowError, OSError, ValueError):
        return seconds


def iso_from_millis(millis: int):
    try:
        seconds, ms = divmod(millis, 1000)
        return f"{_iso_second_prefix(seconds)}.{ms:03d}Z"
    except (OverflowError, OSError, ValueError):
        return millis


def iso_from_float(epoch: float) -> str:
    """Epoch seconds (float) -> ISO with milliseconds, e.g. for @timestamp."""
    return iso_from_millis(int(round(epoch * 1000)))


def iso_from_ntp_micro(raw: int):
    # RFC 7011 6.1.9: NTP 64-bit timestamp; the microsecond variant ignores the low
    # 11 bits of the fraction.
    seconds = (raw >> 32) - NTP_UNIX_OFFSET
    fraction = raw & 0xFFFFF800
    micros = (fraction * 1_000_000) >> 32
    try:
        return f"{_iso_second_prefix(seconds)}.{micros:06d}Z"
    except (OverflowError, OSError, ValueError):
        return raw


def iso_from_ntp_nano(raw: int):
    seconds = (raw >> 32) - NTP_UNIX_OFFSET
    nanos = ((raw & 0xFFFFFFFF) * 1_000_000_000) >> 32
    try:
        return f"{_iso_second_prefix(seconds)}.{nanos:09d}Z"
    except (OverflowError, OSError, ValueError):
        return raw


def iso_from_seconds_and_micros(raw: bytes):
    """pmacct's 16-byte dateTimeMicroseconds (nfprobe_tstamp_usec): 8 bytes of Unix seconds
    then 8 bytes of microseconds, instead of RFC 7011's 8-byte NTP format."""
    seconds = int.from_bytes(raw[:8], "big")
    micros = int.from_bytes(raw[8:], "big")
    if micros >= 1_000_000:
        return raw.hex()
    try:
        return f"{_iso_second_prefix(seconds)}.{micros:06d}Z"
    except (OverflowError, OSError, ValueError):
        return raw.hex()
