"""JSON flow records -> documents in our Logstash layout, ready for ``Normalizer.normalize``.

Pure: no I/O.  Three shapes are accepted for one record (a JSON object):

(a) our own documents: ``{"@timestamp": "...Z", "@version": "1", "host": ..., "type": "ipfix",
    "ipfix": {...}}``, possibly already normalized (derived fields are recomputed);
(b) raw records of IPFIX element names: ``{"sourceIPv4Address": "10.0.0.1", "octetDeltaCount": 5}``
    (an optional ``"@timestamp"`` gives the document time);
(c) Antrea's JSON records (go-ipfix ``SendJSONRecord``): ``{"@timestamp": "2026-11-27T00:29:04+05:30",
    "ipfix": {...}}`` with dateTimeSeconds as epoch seconds.

Every value of a known element is checked against the element's abstract type (from the
registry) and converted to exactly what the IPFIX decoder produces for the same value
(``ipfix/values.py``): times as ISO 8601 UTC text, canonical address text, lowercase hex,
float32 rounding, strings cut at a NUL.  So a record pushed as JSON and the same flow
received as IPFIX become identical documents; the only difference is ``flowset_id``, which a
JSON record cannot know and which is therefore absent.

Wrong types are rejected with ``(field, reason)``; fields no registry knows are kept as sent.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import orjson

from .documents import DEFAULT_LAYOUT, DocumentLayout, serialize
from .ipfix import values
from .ipfix.registry import default_registry

IPFIX_VERSION = 10

# -- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str  # dotted path in the record ("ipfix.octetDeltaCount"); "" for the record itself
    reason: str


class RecordRejected(Exception):
    """The record cannot become a document; ``errors`` says why, field by field."""

    def __init__(self, errors: list[FieldError]):
        super().__init__("; ".join(f"{e.field or 'record'}: {e.reason}" for e in errors))
        self.errors = errors


class _Bad(Exception):
    """One value is wrong: the reason."""


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# -- times ----------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(?:([Zz])|([+-])(\d\d):?(\d\d))?")
_UTC = timezone.utc
_time_cache: dict[str, tuple[int, int]] = {}
_TIME_CACHE_MAX = 4096  # records of one export share their times


def parse_time(text: str) -> tuple[int, int]:
    """RFC 3339 / ISO 8601 date-time -> (epoch seconds, nanoseconds).  No zone means UTC."""
    cached = _time_cache.get(text)
    if cached is not None:
        return cached
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise _Bad(f"not an RFC 3339 date-time: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) if sign else timedelta(0)
        if sign == "-":
            offset = -offset
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59),
                          tzinfo=timezone(offset) if sign else _UTC)
    except ValueError as exc:
        raise _Bad(f"not a valid date-time: {text[:40]!r} ({exc})") from None
    seconds = int((moment - datetime(1970, 1, 1, tzinfo=_UTC)).total_seconds())
    nanos = int((fraction or "0").ljust(9, "0"))
    result = (seconds, nanos)
    if len(_time_cache) >= _TIME_CACHE_MAX:
        _time_cache.clear()
    _time_cache[text] = result
    return result


def iso_timestamp(value) -> str:
    """@timestamp (RFC 3339 text, any offset) -> our form: UTC with milliseconds."""
    if not isinstance(value, str):
        raise _Bad(f"expected RFC 3339 date-time text, got {_kind(value)}")
    seconds, nanos = parse_time(value)
    return values.iso_from_millis(seconds * 1000 + nanos // 1_000_000)


# -- converters by abstract type: JSON value -> what the decoder produces ------------------------

_INT_RANGES = {
    "unsigned8": (0, 0xFF), "unsigned16": (0, 0xFFFF), "unsigned32": (0, 0xFFFFFFFF),
    "unsigned64": (0, 0xFFFFFFFFFFFFFFFF),
    "signed8": (-0x80, 0x7F), "signed16": (-0x8000, 0x7FFF), "signed32": (-0x80000000, 0x7FFFFFFF),
    "signed64": (-0x8000000000000000, 0x7FFFFFFFFFFFFFFF),
}
_MAC_SEPARATED = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")
_MAC_DOTTED = re.compile(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_FLOAT32 = struct.Struct("f")


def _integer(type_name: str):
    low, high = _INT_RANGES[type_name]

    def convert(value):
        if type(value) is not int:  # bool is not int here: type(True) is bool
            if type(value) is float and value.is_integer():
                value = int(value)
            else:
                raise _Bad(f"expected an integer ({type_name}), got {_kind(value)}")
        if low <= value <= high:
            return value
        raise _Bad(f"{value} is out of range {low}..{high} ({type_name})")

    return convert


def _unsigned256(value):
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not 0 <= value < 1 << 256:
        raise _Bad(f"expected an unsigned256 integer (number or decimal text), got {_kind(value)}")
    return value if value < 1 << 64 else str(value)  # as values.big_unsigned


def _float(type_name: str):
    single = type_name == "float32"

    def convert(value):
        if type(value) not in (int, float):
            raise _Bad(f"expected a number ({type_name}), got {_kind(value)}")
        if single:
            try:  # the decoder reads 4 bytes: the value as float32 holds it
                single_value = _FLOAT32.unpack(_FLOAT32.pack(value))[0]
            except (OverflowError, struct.error):
                single_value = math.inf
            if math.isinf(single_value):
                raise _Bad(f"{value} does not fit a float32")
            return single_value
        return float(value)

    return convert


def _boolean(value):
    if type(value) is bool:
        return value
    if type(value) is int:
        return values.boolean_value(value)  # RFC 7011 encoding: 1 true, 2 false
    raise _Bad(f"expected a boolean, got {_kind(value)}")


def _string(value):
    if type(value) is str:
        return value.split("\0", 1)[0] if "\0" in value else value
    raise _Bad(f"expected a string, got {_kind(value)}")


def _ipv4(value):
    if type(value) is not str:
        raise _Bad(f"expected an IPv4 address (text), got {_kind(value)}")
    if not value:
        return value  # absent, as Antrea sends it; normalization drops it
    try:
        return values.ipv4_text(socket.inet_pton(socket.AF_INET, value))
    except OSError:
        raise _Bad(f"not an IPv4 address: {value[:60]!r}") from None


def _ipv6(value):
    if type(value) is not str:
        raise _Bad(f"expected an IPv6 address (text), got {_kind(value)}")
    if not value:
        return value
    try:
        if ":" in value:
            packed = socket.inet_pton(socket.AF_INET6, value)
        else:  # Go prints an IPv4-mapped IPv6 address as plain IPv4
            packed = b"\0" * 10 + b"\xff\xff" + socket.inet_pton(socket.AF_INET, value)
    except OSError:
        raise _Bad(f"not an IPv6 address: {value[:60]!r}") from None
    return values.ipv6_text(packed)


def _mac(value):
    if type(value) is str:
        if _MAC_SEPARATED.fullmatch(value) or _MAC_DOTTED.fullmatch(value):
            return values.mac_text(bytes.fromhex(value.replace(":", "").replace("-", "").replace(".", "")))
        if len(value) == 12 and _HEX.fullmatch(value):
            return values.mac_text(bytes.fromhex(value))
        if len(value) == 8:  # Go's encoding/json writes a net.HardwareAddr as base64
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) == 6:
                return values.mac_text(raw)
        raise _Bad(f"not a MAC address: {value[:60]!r}")
    raise _Bad(f"expected a MAC address (text), got {_kind(value)}")


def _octets(value):
    if type(value) is str:
        if _HEX.fullmatch(value):
            return value.lower()
        if _UUID.fullmatch(value):  # a UUID element as text: the decoder gives its 16 bytes in hex
            return value.replace("-", "").lower()
        raise _Bad(f"expected hex text (octetArray), got {value[:60]!r}")
    raise _Bad(f"expected hex text (octetArray), got {_kind(value)}")


_ISO_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z")
_ISO_MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _date_time_seconds(value):
    if type(value) is str:
        if _ISO_SECONDS.fullmatch(value) and value in _time_cache:
            return value  # already ours (and known valid)
        seconds = parse_time(value)[0]
    elif type(value) is int or type(value) is float:
        seconds = int(value)  # epoch seconds, as Antrea's JSON records carry them
    else:
        raise _Bad(f"expected epoch seconds or RFC 3339 text (dateTimeSeconds), got {_kind(value)}")
    if not 0 <= seconds <= 0xFFFFFFFF:
        raise _Bad(f"{seconds} is out of range for dateTimeSeconds (0..{0xFFFFFFFF})")
    return values.iso_from_seconds(seconds)


def _date_time_milliseconds(value):
    if type(value) is str:
        if _ISO_MILLIS.fullmatch(value) and value in _time_cache:
            return value
        seconds, nanos = parse_time(value)
        millis = seconds * 1000 + nanos // 1_000_000
    elif type(value) is int or type(value) is float:
        millis = int(value)  # epoch milliseconds (go-ipfix JSON)
    else:
        raise _Bad(f"expected epoch milliseconds or RFC 3339 text (dateTimeMilliseconds), got {_kind(value)}")
    if not 0 <= millis <= 0xFFFFFFFFFFFFFFFF:
        raise _Bad(f"{millis} is out of range for dateTimeMilliseconds")
    return values.iso_from_millis(millis)


def _date_time_fraction(digits: int, type_name: str):
    divisor = 10 ** (9 - digits)

    def convert(value):
        # NTP-based on the wire: a number would be ambiguous, so only text is taken.
        if type(value) is not str:
            raise _Bad(f"expected RFC 3339 text ({type_name}), got {_kind(value)}")
        seconds, nanos = parse_time(value)
        try:
            return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{nanos // divisor:0{digits}d}Z"
        except (OverflowError, OSError, ValueError):
            raise _Bad(f"{value[:40]!r} is out of range ({type_name})") from None

    return convert


def _as_sent(value):
    return value  # structured lists: kept as the JSON structure they arrive in


def converter_for(type_name: str):
    """The converter of one abstract type."""
    if type_name in _INT_RANGES:
        return _integer(type_name)
    return {
        "unsigned256": _unsigned256,
        "float32": _float("float32"),
        "float64": _float("float64"),
        "boolean": _boolean,
        "string": _string,
        "ipv4Address": _ipv4,
        "ipv6Address": _ipv6,
        "macAddress": _mac,
        "octetArray": _octets,
        "dateTimeSeconds": _date_time_seconds,
        "dateTimeMilliseconds": _date_time_milliseconds,
        "dateTimeMicroseconds": _date_time_fraction(6, "dateTimeMicroseconds"),
        "dateTimeNanoseconds": _date_time_fraction(9, "dateTimeNanoseconds"),
    }.get(type_name, _as_sent)


# Fields the collector adds beside the elements (documents.to_document, ipfix/enrich.py).
_COLLECTOR_FIELDS = {
    "version": _integer("unsigned16"),
    "flowset_id": _integer("unsigned16"),
    "options": _boolean,
    "samplingRate": _integer("unsigned64"),
    "ingressInterfaceName": _string,
    "egressInterfaceName": _string,
}

_UNSEEN = object()

UNKNOWN_LAYOUT = ('unknown layout: expected {"@timestamp": ..., "%s": {...}} or an object of IPFIX '
                  'element names')


# -- records ----------------------------------------------------------------------------------


class JsonRecordConverter:
    """One JSON value -> (document in the Logstash layout, its target object name).

    Thread-safe: converters are built per element name on first sight, and a dict
    update under the GIL is atomic.
    """

    def __init__(self, registry=None, layout: DocumentLayout = DEFAULT_LAYOUT):
        self.registry = registry if registry is not None else default_registry()
        self.layout = layout
        self._targets = tuple(dict.fromkeys(t for t in (layout.target, layout.netflow_target) if t))
        self._converters: dict[str, object] = dict(_COLLECTOR_FIELDS)
        self._unknown_layout = UNKNOWN_LAYOUT % layout.target

    def _converter(self, name: str):
        """The converter of a field name: a function, an integer range (low, high, function),
        or None for names no registry knows."""
        found = self._converters.get(name, _UNSEEN)
        if found is not _UNSEEN:
            return found
        element = self.registry.by_name(name)
        if element is None and "#" in name:  # a repeated element, "name#2"
            element = self.registry.by_name(name.split("#", 1)[0])
        converter = None
        if element is not None and not element.skip:
            converter = converter_for(element.type)
            if element.type in _INT_RANGES:
                converter = (*_INT_RANGES[element.type], converter)
        if len(self._converters) < 100_000:  # names come from clients: bound the cache
            self._converters[name] = converter
        return converter

    def convert(self, value, *, host: str | None = None, received_at: float | None = None) -> tuple[dict, str]:
        """Raises :class:`RecordRejected`.  ``host``: the sender, for records that do not name
        one; ``received_at``: epoch seconds, the time of records without ``@timestamp``."""
        if not isinstance(value, dict):
            raise RecordRejected([FieldError("", f"a record must be a JSON object, not {_kind(value)}")])
        target = next((t for t in self._targets if t in value), None)
        errors: list[FieldError] = []
        if target is not None:
            body_in = value[target]
            if not isinstance(body_in, dict):
                raise RecordRejected([FieldError(target, f"expected an object, got {_kind(body_in)}")])
            prefix = target + "."
            extra = value  # top-level fields of a document travel along
        else:
            body_in = {k: v for k, v in value.items() if not k.startswith("@")}
            if not any(k not in _COLLECTOR_FIELDS and self._converter(k) is not None for k in body_in):
                raise RecordRejected([FieldError("", self._unknown_layout)])
            target, prefix = self.layout.target, ""
            extra = {k: v for k, v in value.items() if k.startswith("@")}
        if not body_in:
            raise RecordRejected([FieldError(target, "no fields")])

        body = {}
        converters = self._converters
        for key, item in body_in.items():
            converter = converters.get(key, _UNSEEN)
            if converter is _UNSEEN:
                converter = self._converter(key)
            if converter is None:
                body[key] = item  # unknown fields: kept as they are
                continue
            # Integers in range are most values: checked here, without a call.
            if converter.__class__ is tuple:
                if type(item) is int and converter[0] <= item <= converter[1]:
                    body[key] = item
                    continue
                converter = converter[2]
            try:
                body[key] = converter(item)
            except _Bad as exc:
                errors.append(FieldError(prefix + key, str(exc)))
        if "version" not in body:
            body["version"] = IPFIX_VERSION  # element names are IPFIX names

        stamp = value.get("@timestamp")
        if stamp is None:
            timestamp = values.iso_from_float(time.time() if received_at is None else received_at)
        else:
            try:
                timestamp = iso_timestamp(stamp)
            except _Bad as exc:
                errors.append(FieldError("@timestamp", str(exc)))
        if errors:
            raise RecordRejected(errors)

        # @timestamp first: the NDJSON sink reads the day from the start of the line.
        document = {"@timestamp": timestamp, "@version": "1"}
        for key, item in extra.items():
            if key != "@timestamp" and key != target:
                document[key] = item
        if host is not None:
            document.setdefault("host", host)
        document.setdefault("type", self.layout.type)
        document[target] = body
        return document, target


# -- batches ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    position: int  # index in a JSON array (from 0), or line number of NDJSON (from 1)
    field: str
    reason: str


@dataclass
class BatchOutcome:
    lines: list[bytes] = field(default_factory=list)  # serialized, normalized documents
    rejected: int = 0
    errors: list[Rejection] = field(default_factory=list)  # the first ``max_errors`` problems
    error_count: int = 0  # all problems, listed or not

    @property
    def accepted(self) -> int:
        return len(self.lines)


def numbered_lines(body: bytes) -> list[tuple[int, bytes]]:
    """NDJSON body -> [(line number from 1, line)], blank lines skipped."""
    out = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if line.strip():
            out.append((number, line))
    return out


class DocumentBuilder:
    """Converter + Normalizer + serialization for batches of JSON records, thread-safe.

    The Normalizer keeps per-flow state (throughput intervals), hence the lock around it.
    """

    def __init__(self, converter: JsonRecordConverter, normalizer, max_errors: int = 20):
        self.converter = converter
        self.normalizer = normalizer
        self.max_errors = max_errors
        self._lock = threading.Lock()

    def from_values(self, items, *, host: str | None = None, received_at: float | None = None) -> BatchOutcome:
        """``items``: iterable of (position, JSON value)."""
        return self._build(((p, v, None) for p, v in items), host, received_at)

    def from_lines(self, lines, *, host: str | None = None, received_at: float | None = None) -> BatchOutcome:
        """``lines``: iterable of (line number, bytes of one JSON text)."""
        return self._build((_parsed(number, line) for number, line in lines), host, received_at)

    def _build(self, items, host, received_at) -> BatchOutcome:
        outcome = BatchOutcome()
        converted: list[tuple[int, dict, str]] = []
        if received_at is None:
            received_at = time.time()
        convert = self.converter.convert
        for position, value, problem in items:
            if problem is None:
                try:
                    document, target = convert(value, host=host, received_at=received_at)
                    converted.append((position, document, target))
                    continue
                except RecordRejected as exc:
                    problem = exc.errors
            self._reject(outcome, position, problem)
        normalize = self.normalizer.normalize
        with self._lock:
            for position, document, target in converted:
                try:
                    outcome.lines.append(serialize(normalize(document, target)))
                except Exception as exc:  # one odd value must not fail the batch
                    self._reject(outcome, position, [FieldError("", f"cannot normalize: {exc}")])
        return outcome

    def _reject(self, outcome: BatchOutcome, position: int, errors: list[FieldError]) -> None:
        outcome.rejected += 1
        outcome.error_count += len(errors)
        for error in errors[:max(0, self.max_errors - len(outcome.errors))]:
            outcome.errors.append(Rejection(position, error.field, error.reason))


def _parsed(number: int, line: bytes):
    try:
        return number, orjson.loads(line), None
    except orjson.JSONDecodeError as exc:
        return number, None, [FieldError("", f"malformed JSON: {exc}")]
