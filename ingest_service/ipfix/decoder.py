"""Sans-I/O decoder: one message of bytes from one session in, flow records out.

``FlowDecoder.decode(payload, session, received_at)`` handles IPFIX (RFC 7011), NetFlow
v9 (RFC 3954) and NetFlow v5, dispatched on the version field.  It owns the template
state of every session it sees; it never raises on bad input: problems are counted in
``stats`` (a Counter keyed by kind) and reported through a rate-limited logger.
"""
from __future__ import annotations

import logging
import struct
import time
from collections import Counter, deque
from dataclasses import dataclass

from ..ratelog import RateLimitedLog
from ..records import FlowRecord
from .compiler import compile_fields
from .enrich import SYSUPTIME_TIMES, apply_sysuptime
from .session import SessionKey, SessionState, SessionTable
from .structured import DecodeContext
from .templates import FieldSpec, ResolvedField, Template, resolve_ipfix_fields, resolve_v9_fields

log = logging.getLogger("flow_ingest.decoder")

_IPFIX_HEADER = struct.Struct(">HHIII")  # version, length, export time, sequence, domain
_V9_HEADER = struct.Struct(">HHIIII")  # version, count, sysUpTime, unix secs, sequence, source id
_V5_HEADER = struct.Struct(">HHIIIIBBH")
_SET_HEADER = struct.Struct(">HH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
V5_RECORD_LENGTH = 48
V5_MAX_RECORDS = 30

# NetFlow v5's fixed record, expressed as a template so it shares the compiled path.
_V5_LAYOUT = tuple(
    ResolvedField(name, kind, length, True, skip=(name == ""))
    for name, kind, length in (
        ("sourceIPv4Address", "ipv4Address", 4), ("destinationIPv4Address", "ipv4Address", 4),
        ("ipNextHopIPv4Address", "ipv4Address", 4), ("ingressInterface", "unsigned16", 2),
        ("egressInterface", "unsigned16", 2), ("packetDeltaCount", "unsigned32", 4),
        ("octetDeltaCount", "unsigned32", 4), ("flowStartSysUpTime", "unsigned32", 4),
        ("flowEndSysUpTime", "unsigned32", 4), ("sourceTransportPort", "unsigned16", 2),
        ("destinationTransportPort", "unsigned16", 2), ("", "octetArray", 1),
        ("tcpControlBits", "unsigned8", 1), ("protocolIdentifier", "unsigned8", 1),
        ("ipClassOfService", "unsigned8", 1), ("bgpSourceAsNumber", "unsigned16", 2),
        ("bgpDestinationAsNumber", "unsigned16", 2), ("sourceIPv4PrefixLength", "unsigned8", 1),
        ("destinationIPv4PrefixLength", "unsigned8", 1), ("", "octetArray", 2),
    )
)


@dataclass(frozen=True)
class DecoderConfig:
    template_lifetime: float = 1800.0  # seconds a UDP template stays valid without refresh
    max_sessions: int = 10_000  # exporter sessions kept (least recently seen evicted)
    max_templates_per_session: int = 4096
    pending_sets_per_session: int = 32  # data sets kept until their template arrives (0: off)
    pending_lifetime: float = 10.0  # seconds such a data set is kept
    pending_max_bytes: int = 16 * 1024 * 1024  # across all sessions
    reorder_window: int = 1_000_000  # sequence moving back further than this = exporter restart


class _DomainTemplates:
    """Template-id view of one (session, domain), for RFC 6313 sub-template decoding."""

    __slots__ = ("_templates", "_domain")

    def __init__(self, templates: dict, domain: int):
        self._templates = templates
        self._domain = domain

    def get(self, template_id: int):
        return self._templates.get((self._domain, template_id))


@dataclass(slots=True)
class _Message:
    """Header facts a data set needs to turn its records into FlowRecords."""

    version: int
    domain: int
    export_time: int
    sys_uptime: int = 0
    export_ms: int = 0


def ipfix_message_length(prefix: bytes) -> int:
    """Message length from the first 4 bytes of an IPFIX message (stream framing).

    Raises ValueError when the prefix is not an IPFIX header, so a stream reader can
    drop a connection that lost framing instead of reading garbage forever.
    """
    version, length = _SET_HEADER.unpack_from(prefix, 0)
    if version != 10:
        raise ValueError(f"not an IPFIX message (version {version})")
    if length < 16:
        raise ValueError(f"IPFIX message length {length} is shorter than its header")
    return length


class FlowDecoder:
    def __init__(self, registry=None, config: DecoderConfig | None = None, clock=time.time, logger=log):
        if registry is None:
            from .registry import default_registry

            registry = default_registry()
        self.registry = registry
        self.config = config or DecoderConfig()
        self.clock = clock
        self.sessions = SessionTable(self.config.max_sessions, on_evict=self._drop_pending)
        self.stats: Counter = Counter()
        self._log = RateLimitedLog(logger)
        self._pending_bytes = 0

    # -- public API ---------------------------------------------------------------

    def decode(self, payload: bytes, session: SessionKey = ("udp", "0.0.0.0", 0, 0), received_at: float | None = None) -> list[FlowRecord]:
        """Decode one message; returns the flow records (data and options) it yields."""
        now = self.clock() if received_at is None else received_at
        out: list[FlowRecord] = []
        self.stats["messages"] += 1
        if len(payload) < 4:
            self._problem("malformed_messages", session, f"message of {len(payload)} bytes")
            return out
        state = self.sessions.get(session, now)
        version = _U16.unpack_from(payload, 0)[0]
        try:
            if version == 10:
                self._decode_ipfix(payload, state, now, out)
            elif version == 9:
                self._decode_v9(payload, state, now, out)
            elif version == 5:
                self._decode_v5(payload, state, now, out)
            else:
                self._problem("unsupported_version", session, f"version {version}")
        except Exception as exc:  # a decoder bug must never take a listener down
            self._problem("decoder_errors", session, f"{type(exc).__name__}: {exc}")
            log.debug("decoder error", exc_info=True)
        self.stats["records"] += len(out)
        return out

    def close_session(self, session: SessionKey) -> None:
        """Forget a TCP/TLS connection's templates (RFC 7011 8: they die with it)."""
        state = self.sessions._sessions.get(session)
        if state is not None:
            self._drop_pending(state)
            self.sessions.drop(session)

    def expire(self, now: float | None = None) -> None:
        """Housekeeping: expire waiting data sets and idle UDP templates."""
        now = self.clock() if now is None else now
        for state in self.sessions:
            if state.pending:
                self._expire_pending(state, now)
            if state.expires_templates:
                stale = [k for k, t in state.templates.items() if now - t.received_at > self.config.template_lifetime]
                for key in stale:
                    del state.templates[key]
                    self.stats["templates_expired"] += 1

    def template_count(self) -> int:
        return self.sessions.template_count()

    # -- shared helpers -----------------------------------------------------------

    def _problem(self, kind: str, session, detail: str, amount: int = 1) -> None:
        self.stats[kind] += amount
        exporter = f"{session[1]}:{session[2]}" if isinstance(session, tuple) and len(session) > 2 else str(session)
        self._log.warning(kind, "%s from %s: %s", kind.replace("_", " "), exporter, detail)

    def _add_template(self, state: SessionState, message: _Message, template_id: int, fields: tuple,
                      scope_count: int, now: float, out: list, v9_options: bool = False) -> None:
        key = (message.domain, template_id)
        existing = state.templates.get(key)
        if existing is not None and existing.fields == fields and existing.scope_field_count == scope_count:
            existing.received_at = now  # a refresh: nothing to rebuild
            return
        if existing is None and len(state.templates) >= self.config.max_templates_per_session:
            self._problem("templates_refused", state.key, f"more than {self.config.max_templates_per_session} templates")
            return
        if message.version == 9:
            resolved = resolve_v9_fields(self.registry, fields, scope_count)
        else:
            resolved = resolve_ipfix_fields(self.registry, fields)
        template = Template(template_id, fields, scope_count, message.version, now, resolved, compile_fields(resolved))
        if v9_options:
            template.extra["v9_options"] = True
        names = {f.name for f in resolved}
        template.extra["sysuptime"] = any(relative in names for relative, _ in SYSUPTIME_TIMES)
        state.templates[key] = template
        self.stats["templates_redefined" if existing is not None else "templates_added"] += 1
        if key in state.pending:
            self._replay_pending(state, key, now, out)

    def _withdraw(self, state: SessionState, domain: int, template_id: int, options_set: bool) -> None:
        # RFC 7011 8.1: id 2 (template set) / 3 (options template set) withdraws all of that kind.
        if template_id in (2, 3):
            victims = [k for k, t in state.templates.items()
                       if k[0] == domain and (t.scope_field_count > 0) == options_set]
            for key in victims:
                del state.templates[key]
            self.stats["templates_withdrawn"] += len(victims)
        elif state.templates.pop((domain, template_id), None) is not None:
            self.stats["templates_withdrawn"] += 1
        else:
            self._problem("withdrawals_of_unknown_templates", state.key, f"template {template_id} domain {domain}")

    def _lookup_template(self, state: SessionState, key, now: float):
        template = state.templates.get(key)
        if template is not None and state.expires_templates and now - template.received_at > self.config.template_lifetime:
            del state.templates[key]
            self.stats["templates_expired"] += 1
            return None
        return template

    def _data_set(self, state: SessionState, message: _Message, template_id: int, buf: bytes,
                  start: int, end: int, now: float, out: list) -> int | None:
        """Decode one data set. Returns its record count, or None if it could not be decoded."""
        key = (message.domain, template_id)
        template = self._lookup_template(state, key, now)
        if template is None:
            self._problem("data_sets_without_template", state.key,
                          f"template {template_id} domain {message.domain} not known (yet)")
            self._keep_pending(state, key, message, buf[start:end], now)
            return None
        ctx = DecodeContext(self.registry, _DomainTemplates(state.templates, message.domain), 0, message.version == 9)
        records, stop, error = template.decoder(buf, start, end, ctx)
        if error and any(buf[stop:end]):
            self._problem("malformed_records", state.key, f"{error} in data set {template_id}")
        dstate = state.domain(message.domain)
        options = template.is_options
        exporter, port = _exporter_of(state.key)
        make = FlowRecord
        export_time = message.export_time
        version = message.version
        domain = message.domain
        if options:
            for fields in records:
                dstate.options.learn(fields)
                out.append(make(exporter, port, version, domain, template_id, export_time, fields, True, None))
            return len(records)
        learned = dstate.options
        sysuptime = version == 9 and template.extra.get("sysuptime")
        if learned.empty and not sysuptime:
            out.extend([make(exporter, port, version, domain, template_id, export_time, fields, False, None)
                        for fields in records])
        else:
            for fields in records:
                extra: dict = {}
                if sysuptime:
                    apply_sysuptime(fields, extra, message.export_ms, message.sys_uptime)
                if not learned.empty:
                    learned.apply(fields, extra, export_time * 1000)
                out.append(make(exporter, port, version, domain, template_id, export_time, fields, False, extra or None))
        return len(records)

    # -- waiting for templates ------------------------------------------------------

    def _keep_pending(self, state: SessionState, key, message: _Message, content: bytes, now: float) -> None:
        limit = self.config.pending_sets_per_session
        if limit <= 0:
            return
        if state.pending_count >= limit or self._pending_bytes + len(content) > self.config.pending_max_bytes:
            self.stats["pending_sets_dropped"] += 1
            return
        state.pending.setdefault(key, deque()).append((now, message, content))
        state.pending_count += 1
        self._pending_bytes += len(content)
        self.stats["pending_sets_kept"] += 1

    def _replay_pending(self, state: SessionState, key, now: float, out: list) -> None:
        queue = state.pending.pop(key)
        for received, message, content in queue:
            state.pending_count -= 1
            self._pending_bytes -= len(content)
            if now - received > self.config.pending_lifetime:
                self.stats["pending_sets_expired"] += 1
                continue
            count = self._data_set(state, message, key[1], content, 0, len(content), now, out)
            if count is not None:
                self.stats["pending_sets_decoded"] += 1

    def _expire_pending(self, state: SessionState, now: float) -> None:
        for key in list(state.pending):
            queue = state.pending[key]
            while queue and now - queue[0][0] > self.config.pending_lifetime:
                _, _, content = queue.popleft()
                state.pending_count -= 1
                self._pending_bytes -= len(content)
                self.stats["pending_sets_expired"] += 1
            if not queue:
                del state.pending[key]

    def _drop_pending(self, state: SessionState) -> None:
        for queue in state.pending.values():
            for _, _, content in queue:
                self._pending_bytes -= len(content)
        state.pending.clear()
        state.pending_count = 0

    # -- IPFIX ----------------------------------------------------------------------

    def _decode_ipfix(self, buf: bytes, state: SessionState, now: float, out: list) -> None:
        if len(buf) < 16:
            self._problem("malformed_messages", state.key, "IPFIX message shorter than its 16-byte header")
            return
        _, length, export_time, sequence, domain = _IPFIX_HEADER.unpack_from(buf, 0)
        if length < 16:
            self._problem("malformed_messages", state.key, f"IPFIX length field {length}")
            return
        end = length
        if length > len(buf):
            self._problem("truncated_messages", state.key, f"IPFIX length {length} > {len(buf)} bytes received")
            end = len(buf)
        elif length < len(buf):
            self.stats["trailing_bytes"] += len(buf) - length
        message = _Message(10, domain, export_time)
        data_records = 0
        complete = True
        offset = 16
        while end - offset >= 4:
            set_id, set_length = _SET_HEADER.unpack_from(buf, offset)
            if set_length < 4 or offset + set_length > end:
                self._problem("malformed_sets", state.key, f"set {set_id} length {set_length} at offset {offset}")
                complete = False
                break
            body, set_end = offset + 4, offset + set_length
            if set_id == 2 or set_id == 3:
                self._ipfix_template_set(buf, body, set_end, set_id == 3, state, message, now, out)
            elif set_id >= 256:
                count = self._data_set(state, message, set_id, buf, body, set_end, now, out)
                if count is None:
                    complete = False
                else:
                    data_records += count
            else:
                self._problem("reserved_sets", state.key, f"set id {set_id}")
            offset = set_end
        self._track_ipfix_sequence(state, domain, sequence, data_records if complete else None)

    def _ipfix_template_set(self, buf, offset, end, options, state, message, now, out) -> None:
        kind = "options template" if options else "template"
        while end - offset >= 4:
            template_id, count = _SET_HEADER.unpack_from(buf, offset)
            offset += 4
            if count == 0:
                if template_id == 0:
                    return  # zero padding at the end of the set
                self._withdraw(state, message.domain, template_id, options)
                continue
            scope_count = 0
            if options:
                if end - offset < 2:
                    break
                scope_count = _U16.unpack_from(buf, offset)[0]
                offset += 2
                if scope_count == 0 or scope_count > count:
                    self._problem("malformed_templates", state.key, f"{kind} {template_id} scope count {scope_count}")
                    return
            fields = []
            for _ in range(count):
                if end - offset < 4:
                    self._problem("malformed_templates", state.key, f"{kind} {template_id} truncated")
                    return
                element_id, length = _SET_HEADER.unpack_from(buf, offset)
                offset += 4
                enterprise = 0
                if element_id & 0x8000:
                    if end - offset < 4:
                        self._problem("malformed_templates", state.key, f"{kind} {template_id} truncated")
                        return
                    enterprise = _U32.unpack_from(buf, offset)[0]
                    offset += 4
                    element_id &= 0x7FFF
                fields.append(FieldSpec(element_id, length, enterprise))
            if template_id < 256:
                self._problem("malformed_templates", state.key, f"{kind} id {template_id} < 256")
                continue
            self._add_template(state, message, template_id, tuple(fields), scope_count, now, out)
        if offset != end and any(buf[offset:end]):
            self._problem("malformed_templates", state.key, f"{end - offset} stray bytes after {kind}s")

    def _track_ipfix_sequence(self, state: SessionState, domain: int, sequence: int, records: int | None) -> None:
        # RFC 7011 3.1: the sequence number counts data records sent before this message,
        # per observation domain, modulo 2^32.
        dstate = state.domain(domain)
        self._check_sequence(dstate, sequence, "lost_records", restart_window=self.config.reorder_window)
        dstate.expected_sequence = None if records is None else (sequence + records) & 0xFFFFFFFF

    def _check_sequence(self, dstate, sequence: int, lost_key: str, restart_window: int | None = None) -> None:
        """Compare a header sequence number with the expected one (modulo 2^32): a jump ahead is
        loss; a step back is reordering, or, further back than ``restart_window`` (or back to 0),
        an exporter restart."""
        expected = dstate.expected_sequence
        if expected is None:
            return
        delta = (sequence - expected) & 0xFFFFFFFF
        if 0 < delta < 0x80000000:
            dstate.lost += delta
            self.stats[lost_key] += delta
        elif delta >= 0x80000000:
            behind = 0x100000000 - delta
            if restart_window is not None and (behind > restart_window or sequence == 0):
                dstate.restarts += 1
                self.stats["exporter_restarts"] += 1
            else:
                self.stats["out_of_order_messages"] += 1

    # -- NetFlow v9 -----------------------------------------------------------------

    def _decode_v9(self, buf: bytes, state: SessionState, now: float, out: list) -> None:
        if len(buf) < 20:
            self._problem("malformed_messages", state.key, "NetFlow v9 packet shorter than its 20-byte header")
            return
        _, count, sys_uptime, unix_secs, sequence, source_id = _V9_HEADER.unpack_from(buf, 0)
        message = _Message(9, source_id, unix_secs, sys_uptime, unix_secs * 1000)
        self._track_v9_sequence(state, source_id, sequence, sys_uptime)
        end = len(buf)
        offset = 20
        flowsets = 0
        records = 0  # RFC 3954 counts template, options template and data records
        complete = True
        # The header count is unreliable across vendors (flowsets vs records): parse
        # flowsets until the bytes run out.
        while end - offset >= 4:
            set_id, set_length = _SET_HEADER.unpack_from(buf, offset)
            if set_length < 4 or offset + set_length > end:
                if any(buf[offset:end]):
                    self._problem("malformed_sets", state.key, f"flowset {set_id} length {set_length} at offset {offset}")
                break  # trailing zero fill (Palo Alto, ACI) ends the packet quietly
            body, set_end = offset + 4, offset + set_length
            flowsets += 1
            if set_id == 0:
                records += self._v9_template_set(buf, body, set_end, state, message, now, out)
            elif set_id == 1:
                records += self._v9_options_template_set(buf, body, set_end, state, message, now, out)
            elif set_id >= 256:
                decoded = self._data_set(state, message, set_id, buf, body, set_end, now, out)
                if decoded is None:
                    complete = False
                else:
                    records += decoded
            else:
                self._problem("reserved_sets", state.key, f"flowset id {set_id}")
            offset = set_end
        if complete and count not in (records, flowsets):
            # Vendors disagree on what count counts, so this is only reported, never fatal.
            self._problem("v9_count_mismatches", state.key, f"header count {count}, {flowsets} flowsets, {records} records")

    def _v9_template_set(self, buf, offset, end, state, message, now, out) -> int:
        found = 0
        while end - offset >= 4:
            template_id, count = _SET_HEADER.unpack_from(buf, offset)
            offset += 4
            if template_id < 256:
                break  # padding
            if end - offset < 4 * count:
                self._problem("malformed_templates", state.key, f"template {template_id} truncated")
                break
            fields = tuple(FieldSpec(*_SET_HEADER.unpack_from(buf, offset + 4 * i)) for i in range(count))
            offset += 4 * count
            found += 1
            self._add_template(state, message, template_id, fields, 0, now, out)
        return found

    def _v9_options_template_set(self, buf, offset, end, state, message, now, out) -> int:
        found = 0
        while end - offset >= 6:
            template_id, scope_length, option_length = struct.unpack_from(">HHH", buf, offset)
            offset += 6
            if template_id < 256:
                break  # padding
            if scope_length % 4 or option_length % 4 or end - offset < scope_length + option_length:
                self._problem("malformed_templates", state.key, f"options template {template_id} lengths {scope_length}/{option_length}")
                break
            count = (scope_length + option_length) // 4
            fields = tuple(FieldSpec(*_SET_HEADER.unpack_from(buf, offset + 4 * i)) for i in range(count))
            offset += scope_length + option_length
            found += 1
            self._add_template(state, message, template_id, fields, scope_length // 4, now, out, v9_options=True)
        return found

    def _track_v9_sequence(self, state: SessionState, source_id: int, sequence: int, sys_uptime: int) -> None:
        # RFC 3954 5.1: the v9 sequence counts export packets per source id.
        dstate = state.domain(source_id)
        if dstate.last_sys_uptime is not None and sys_uptime < dstate.last_sys_uptime:
            dstate.restarts += 1
            self.stats["exporter_restarts"] += 1
            dstate.expected_sequence = None
        self._check_sequence(dstate, sequence, "lost_packets")
        dstate.last_sys_uptime = sys_uptime
        dstate.expected_sequence = (sequence + 1) & 0xFFFFFFFF

    # -- NetFlow v5 -----------------------------------------------------------------

    def _decode_v5(self, buf: bytes, state: SessionState, now: float, out: list) -> None:
        if len(buf) < 24:
            self._problem("malformed_messages", state.key, "NetFlow v5 packet shorter than its 24-byte header")
            return
        _, count, sys_uptime, secs, nsecs, sequence, engine_type, engine_id, sampling = _V5_HEADER.unpack_from(buf, 0)
        if count == 0 or count > V5_MAX_RECORDS or 24 + count * V5_RECORD_LENGTH > len(buf):
            self._problem("malformed_messages", state.key,
                          f"NetFlow v5 count {count} does not fit {len(buf)} bytes (max {V5_MAX_RECORDS})")
            return
        domain = engine_type << 8 | engine_id
        dstate = state.domain(domain)
        self._check_sequence(dstate, sequence, "lost_records")  # v5 counts flows
        dstate.expected_sequence = (sequence + count) & 0xFFFFFFFF
        records, _, _ = compile_fields(_V5_LAYOUT)(buf, 24, 24 + count * V5_RECORD_LENGTH, None)
        export_ms = secs * 1000 + nsecs // 1_000_000
        interval = sampling & 0x3FFF
        exporter, port = _exporter_of(state.key)
        for fields in records:
            extra: dict = {}
            apply_sysuptime(fields, extra, export_ms, sys_uptime)
            if interval > 1:
                extra["samplingRate"] = interval
            out.append(FlowRecord(exporter, port, 5, domain, 0, secs, fields, False, extra))


def _exporter_of(key) -> tuple[str, int]:
    if isinstance(key, tuple) and len(key) >= 3:
        return str(key[1]), int(key[2])
    return str(key), 0
