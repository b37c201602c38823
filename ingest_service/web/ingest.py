"""POST /api/v1/flows, and the per-process writer that owns the sink.

A request body is one JSON object, a JSON array of objects (``application/json``) or one
object per line (``application/x-ndjson``), optionally gzip-compressed
(``Content-Encoding: gzip``).  Each record is converted on its own (``jsoninput``): valid
records are queued even when others are rejected, and the answer says which were rejected
and why.  Limits apply before any work: the body size (Content-Length, then the bytes read,
then the decompressed size, so a gzip bomb stops at the limit) and the record count.

Acknowledgement: ``202`` means the documents are in this process's writer queue (written
within the flush interval, and on a graceful stop); with ``?wait=true`` the answer waits
until the sink's ``flush()`` returned (file written, or engine acknowledged): ``200``, or
``503`` if the output failed or did not confirm within ``wait_timeout``.
"""
from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque

import orjson
from flask import Blueprint, current_app, request

from ..jsoninput import BatchOutcome, numbered_lines
from ..ratelog import RateLimitedLog
from ..sinks import SinkError
from . import error_response, json_response
from .auth import RIGHT_INGEST, require

log = logging.getLogger("flow_ingest.web")

blueprint = Blueprint("ingest", __name__)

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines", "application/jsonlines"})
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
_READ_CHUNK = 64 * 1024
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


# -- the writer ---------------------------------------------------------------------------------


class QueueFull(Exception):
    """The writer queue stayed full for the whole timeout."""


class WriterStopped(Exception):
    """The writer is stopping: nothing more is taken."""


class Ticket:
    """Settled once the documents of one submission went through ``sink.flush()``."""

    __slots__ = ("_done", "error")

    def __init__(self):
        self._done = threading.Event()
        self.error: Exception | None = None

    def settle(self, error: Exception | None) -> None:
        self.error = error
        self._done.set()

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)


class DocumentWriter:
    """One thread owns the sink (sinks are single-writer): submissions of serialized
    documents are written in order, flushed every ``flush_interval``, and at once when a
    submitter waits for its acknowledgement.  The queue is bounded in documents: a full
    queue makes ``submit`` wait (TCP backpressure) or fail after its timeout.

    Shared by the HTTP app and the JSON-lines listener (one writer per process).
    """

    def __init__(self, sink, *, max_documents: int = 100_000, flush_interval: float = 1.0,
                 input_name: str = "http", name: str = "sink-writer"):
        self.sink = sink
        self.max_documents = max_documents
        self.flush_interval = flush_interval
        self.input_name = input_name
        self._changed = threading.Condition()
        self._pending: deque[tuple[list[bytes], Ticket | None]] = deque()
        self._queued = 0  # documents submitted and not yet handed to the sink
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.documents_written = 0
        self.documents_lost = 0
        self.sink_errors = 0
        self.full_waits = 0  # submissions that had to wait for room
        self._log = RateLimitedLog(log)
        from .health import ingest_metrics

        metrics = ingest_metrics()
        self._written_metric = metrics.documents_written.labels(input_name)
        self._lost_metric = metrics.documents_lost.labels(input_name)
        self._errors_metric = metrics.sink_errors.labels(input_name)
        self._depth_metric = metrics.queue_depth.labels(input_name)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def depth(self) -> int:
        return self._queued

    @property
    def full(self) -> bool:
        return self._queued >= self.max_documents

    def submit(self, lines: list[bytes], *, acknowledge: bool = False, timeout: float | None = None,
               on_wait=None) -> Ticket | None:
        """Queue documents; with ``acknowledge`` the returned ticket settles after the flush.

        Waits up to ``timeout`` seconds (None: for as long as it takes) while the queue is
        full, calling ``on_wait()`` once if it has to; raises :class:`QueueFull` when the
        time is up, :class:`WriterStopped` once the writer stops.
        """
        with self._changed:
            deadline = None if timeout is None else time.monotonic() + timeout
            waited = False
            # An empty queue takes any submission, so an oversized one cannot wait forever.
            while not self._stopping and self._queued and self._queued + len(lines) > self.max_documents:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueFull()
                if not waited:
                    waited = True
                    self.full_waits += 1
                    if on_wait is not None:
                        on_wait()
                self._changed.wait(remaining)
            if self._stopping:
                raise WriterStopped()
            ticket = Ticket() if acknowledge else None
            self._pending.append((lines, ticket))
            self._queued += len(lines)
            self._depth_metric.set(self._queued)
            self._changed.notify_all()
        return ticket

    def stop(self, timeout: float) -> bool:
        """Write and flush what is queued, close the sink; True if done within ``timeout``."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        elif self._thread.ident is None:  # never started: close the sink here
            self._call(self.sink.close)
        return not self._thread.is_alive()

    def _run(self) -> None:
        flush_due: float | None = None  # set while the sink holds unflushed documents
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    if flush_due is None:
                        self._changed.wait()
                        continue
                    remaining = flush_due - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                batch = list(self._pending)
                self._pending.clear()
                stopping = self._stopping
            taken = sum(len(lines) for lines, _ in batch)
            tickets = [ticket for _, ticket in batch if ticket is not None]
            error = None
            if batch:
                lines = batch[0][0] if len(batch) == 1 else [line for part, _ in batch for line in part]
                error = self._call(self.sink.write, lines)
                if flush_due is None:
                    flush_due = time.monotonic() + self.flush_interval
            if flush_due is not None and (tickets or stopping or time.monotonic() >= flush_due):
                error = self._call(self.sink.flush) or error
                flush_due = None
            for ticket in tickets:
                ticket.settle(error)
            with self._changed:
                self._queued -= taken
                self._depth_metric.set(self._queued)
                self._changed.notify_all()
                if stopping and not self._pending:
                    break
        self._call(self.sink.close)

    def _call(self, method, *args) -> Exception | None:
        try:
            self._count_written(method(*args) or 0)
            return None
        except SinkError as exc:
            self.sink_errors += 1
            self._errors_metric.inc()
            self.documents_lost += exc.lost
            self._lost_metric.inc(exc.lost)
            self._count_written(exc.written)
            self._log.warning("sink_errors", "output failed, %d documents lost: %s", exc.lost, exc)
            return exc
        except Exception as exc:  # a sink bug: count it, keep the writer alive
            self.sink_errors += 1
            self._errors_metric.inc()
            self._log.warning("sink_bugs", "output failed unexpectedly: %r", exc)
            log.debug("sink failure", exc_info=True)
            return exc

    def _count_written(self, count: int) -> None:
        if count:
            self.documents_written += count
            self._written_metric.inc(count)

    def counters(self) -> dict:
        return {"documents_written": self.documents_written, "documents_lost": self.documents_lost,
                "sink_errors": self.sink_errors, "queue_full_waits": self.full_waits}


# -- request bodies -----------------------------------------------------------------------------


class BodyError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def read_body(stream, limit: int) -> bytes:
    """Read at most ``limit`` bytes; more is a 413, whatever Content-Length said."""
    chunks, total = [], 0
    while True:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise BodyError(413, "body_too_large", f"the request body exceeds {limit} bytes")


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (members one after another), stopping as soon as the output passes ``limit``."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            # max_length is at least 1 here: 0 would mean "no limit".
            out += inflater.decompress(data, limit + 1 - len(out))
            while inflater.unconsumed_tail and len(out) <= limit:
                out += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(out))
        except zlib.error as exc:
            raise BodyError(400, "bad_gzip", f"the body is not valid gzip: {exc}") from None
        if len(out) > limit:
            raise BodyError(413, "body_too_large", f"the decompressed request body exceeds {limit} bytes")
        if not inflater.eof:
            raise BodyError(400, "bad_gzip", "the gzip body is truncated")
        data = inflater.unused_data
    return bytes(out)


def _media_kind() -> str:
    mimetype = request.mimetype
    if mimetype in JSON_TYPES:
        kind = "json"
    elif mimetype in NDJSON_TYPES:
        kind = "ndjson"
    else:
        raise BodyError(415, "unsupported_media_type",
                        f"Content-Type {mimetype or '(none)'!r} is not supported: send application/json (an "
                        f"object or an array of objects) or application/x-ndjson (one object per line)")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise BodyError(415, "unsupported_media_type", f"charset {charset!r} is not supported: JSON is UTF-8")
    return kind


def _gzipped() -> bool:
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding in GZIP_ENCODINGS:
        return True
    if encoding == "identity":
        return False
    raise BodyError(415, "unsupported_content_encoding",
                    f"Content-Encoding {encoding!r} is not supported: send gzip or identity")


def _wait_requested() -> bool:
    text = request.args.get("wait", "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BodyError(400, "bad_parameter", f"wait must be true or false, not {text[:20]!r}")


def _too_many(count: int, limit: int) -> BodyError:
    return BodyError(413, "too_many_records", f"{count} records in one request; at most {limit} are accepted")


def _outcome_body(outcome: BatchOutcome, position_key: str) -> dict:
    return {
        "accepted": outcome.accepted,
        "rejected": outcome.rejected,
        "errors": [{position_key: e.position, "field": e.field, "reason": e.reason} for e in outcome.errors],
        "errors_truncated": outcome.error_count > len(outcome.errors),
    }


# -- the endpoint -------------------------------------------------------------------------------


@blueprint.post("/api/v1/flows")
@require(RIGHT_INGEST)
def post_flows():
    runtime = current_app.extensions["flow_ingest"]
    config = runtime.config
    try:
        wait = _wait_requested()
        kind = _media_kind()
        gzipped = _gzipped()
        declared = request.content_length
        if declared is not None and declared > config.max_body_bytes:
            raise BodyError(413, "body_too_large",
                            f"Content-Length {declared} exceeds the limit of {config.max_body_bytes} bytes")
        body = read_body(request.stream, config.max_body_bytes)
        if gzipped:
            body = gunzip(body, config.max_body_bytes)
        outcome, position_key = _convert(runtime, kind, body, config.max_records)
    except BodyError as exc:
        return error_response(exc.status, exc.code, exc.message)

    metrics = runtime.metrics
    received = outcome.accepted + outcome.rejected
    metrics.records_received.labels("http").inc(received)
    if outcome.rejected:
        metrics.records_rejected.labels("http").inc(outcome.rejected)
    answer = _outcome_body(outcome, position_key)
    if not outcome.lines:
        return error_response(400, "invalid_records", f"none of the {received} records is valid", **answer)

    try:
        writer = runtime.writer()
    except WriterStopped:
        return error_response(503, "shutting_down", "the service is stopping; retry later",
                              **{**answer, "accepted": 0})
    except Exception as exc:  # the output cannot even be opened (logged by the runtime)
        return error_response(503, "output_unavailable", f"the output cannot be opened: {exc}",
                              **{**answer, "accepted": 0})
    try:
        ticket = writer.submit(outcome.lines, acknowledge=wait, timeout=config.queue_timeout)
    except QueueFull:
        response = error_response(503, "queue_full", "the output queue is full; retry later",
                                  **{**answer, "accepted": 0})
        response.headers["Retry-After"] = "1"
        return response
    except WriterStopped:
        return error_response(503, "shutting_down", "the service is stopping; retry later",
                              **{**answer, "accepted": 0})
    metrics.records_accepted.labels("http").inc(outcome.accepted)
    if not wait:
        return json_response({**answer, "status": "queued"}, 202)
    if not ticket.wait(config.wait_timeout):
        return error_response(503, "not_acknowledged",
                              f"the output did not acknowledge within {config.wait_timeout:g}s; the records stay "
                              f"queued and may still be written", **answer)
    if ticket.error is not None:
        return error_response(503, "output_unavailable", f"the output failed: {ticket.error}", **answer)
    return json_response({**answer, "status": "written"}, 200)


def _convert(runtime, kind: str, body: bytes, max_records: int) -> tuple[BatchOutcome, str]:
    host = request.remote_addr
    received_at = time.time()
    if kind == "ndjson":
        lines = numbered_lines(body)
        if not lines:
            raise BodyError(400, "no_records", "the body holds no records")
        if len(lines) > max_records:
            raise _too_many(len(lines), max_records)
        return runtime.builder.from_lines(lines, host=host, received_at=received_at), "line"
    if not body.strip():
        raise BodyError(400, "no_records", "the body holds no records")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if isinstance(value, dict):
        items = [(0, value)]
    elif isinstance(value, list):
        if not value:
            raise BodyError(400, "no_records", "the array holds no records")
        if len(value) > max_records:
            raise _too_many(len(value), max_records)
        items = enumerate(value)
    else:
        raise BodyError(400, "unknown_layout", "expected a JSON object (one record) or an array of objects")
    return runtime.builder.from_values(items, host=host, received_at=received_at), "index"
