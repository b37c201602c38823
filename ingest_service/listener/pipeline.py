"""The stages behind every listener: inbox -> decode thread -> outbox -> writer thread -> sink.

Readers put ``(payload, session_key, received_at)`` into the bounded inbox
(``(None, session_key, 0.0)`` asks the decoder to forget a closed TCP/TLS session,
in order with that session's messages).  One decode thread owns the FlowDecoder
(it is not thread-safe) and ships batches of serialized documents into the bounded
outbox; one writer thread hands them to the sink and flushes it every flush
interval.  A slow sink fills the outbox, which blocks the decode thread, which
fills the inbox: UDP readers then drop (and count), TCP readers pause.

Counters that one thread writes are plain attributes or the decoder's Counter,
read by the reporting thread without locks (a dict copy is atomic under the GIL);
counters several threads write go through :class:`Counters`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from queue import Empty, Full, Queue

from ..documents import DocumentLayout, serialize, to_document
from ..ratelog import RateLimitedLog
from ..sinks import Sink, SinkError

log = logging.getLogger("flow_ingest.pipeline")

STOP = None  # end of stream, put by whoever feeds a queue once it is done


@dataclass
class WorkerSnapshot:
    """What a worker reports: counters (sum across workers), gauges (current values),
    and per-socket cumulative values (kernel counters that survive a worker restart)."""

    counters: dict = field(default_factory=dict)
    gauges: dict = field(default_factory=dict)
    cumulative: dict = field(default_factory=dict)


class Counters:
    """Named counters that several threads add to."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: Counter = Counter()

    def add(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._values[key] += amount

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._values)


def copy_counter(counter: Counter) -> dict:
    # dict() of a dict copies in C without releasing the GIL, so it is safe while the
    # owning thread keeps counting; the retry only guards other interpreters.
    for _ in range(10):
        try:
            return dict(counter)
        except RuntimeError:
            continue
    return {}


class DecodeStage(threading.Thread):
    def __init__(self, decoder, layout: DocumentLayout, inbox: Queue, outbox: Queue, *,
                 batch_lines: int = 1000, expire_interval: float = 5.0, idle_poll: float = 0.5,
                 clock=time.time, name: str = "decode"):
        super().__init__(name=name, daemon=True)
        self.decoder = decoder
        self.layout = layout
        self.inbox = inbox
        self.outbox = outbox
        self.batch_lines = batch_lines
        self.expire_interval = expire_interval
        self.idle_poll = idle_poll
        self.clock = clock
        self.document_errors = 0
        self.templates_active = 0
        self._log = RateLimitedLog(log)

    def run(self) -> None:
        decoder, inbox, layout = self.decoder, self.inbox, self.layout
        # A Normalizer (schema-driven derived fields and layout) or a bare DocumentLayout.
        make_document = layout.document if hasattr(layout, "document") else (lambda r: to_document(r, layout))
        batch: list[bytes] = []
        next_housekeeping = time.monotonic() + self.expire_interval
        while True:
            try:
                # Ship what we have as soon as the inbox runs dry: latency stays low at
                # low rates, batches grow by themselves at high rates.
                item = inbox.get_nowait() if batch else inbox.get(timeout=self.idle_poll)
            except Empty:
                if batch:
                    self.outbox.put(batch)
                    batch = []
                item = False
            if item is STOP:
                break
            if item:
                payload, session, received_at = item
                if payload is None:
                    decoder.close_session(session)
                else:
                    for record in decoder.decode(payload, session, received_at):
                        try:
                            batch.append(serialize(make_document(record)))
                        except Exception as exc:  # one odd value must not stop the stage
                            self.document_errors += 1
                            self._log.warning("document_errors", "cannot serialize a record from %s: %s",
                                              record.exporter, exc)
                    if len(batch) >= self.batch_lines:
                        self.outbox.put(batch)
                        batch = []
            if time.monotonic() >= next_housekeeping:
                decoder.expire(self.clock())
                self.templates_active = decoder.template_count()
                next_housekeeping = time.monotonic() + self.expire_interval
        if batch:
            self.outbox.put(batch)
        self.templates_active = decoder.template_count()
        self.outbox.put(STOP)


class WriterStage(threading.Thread):
    def __init__(self, sink: Sink, outbox: Queue, *, flush_interval: float = 1.0, name: str = "writer"):
        super().__init__(name=name, daemon=True)
        self.sink = sink
        self.outbox = outbox
        self.flush_interval = flush_interval
        self.documents_written = 0  # handed to the destination (after the sink's own buffering)
        self.documents_lost = 0
        self.sink_errors = 0
        self._log = RateLimitedLog(log)

    def run(self) -> None:
        flush_due: float | None = None  # set while the sink holds unflushed lines
        while True:
            timeout = None if flush_due is None else max(0.0, flush_due - time.monotonic())
            try:
                batch = self.outbox.get(timeout=timeout)
            except Empty:
                self._call(self.sink.flush)
                flush_due = None
                continue
            if batch is STOP:
                break
            self._call(self.sink.write, batch)
            if flush_due is None:
                flush_due = time.monotonic() + self.flush_interval
            elif time.monotonic() >= flush_due:
                self._call(self.sink.flush)
                flush_due = None
        self._call(self.sink.close)

    def _call(self, method, *args) -> None:
        try:
            self.documents_written += method(*args) or 0
        except SinkError as exc:
            self.sink_errors += 1
            self.documents_lost += exc.lost
            self.documents_written += exc.written
            self._log.warning("sink_errors", "output failed, %d documents lost: %s", exc.lost, exc)
        except Exception as exc:  # a sink bug: count it, keep the worker alive
            self.sink_errors += 1
            self._log.warning("sink_bugs", "output failed unexpectedly: %r", exc)
            log.debug("sink failure", exc_info=True)


class Pipeline:
    """Decode and write stages with their two bounded queues."""

    def __init__(self, decoder, sink: Sink, layout: DocumentLayout, *, inbox_size: int = 10_000,
                 outbox_size: int = 64, batch_lines: int = 1000, flush_interval: float = 1.0,
                 expire_interval: float = 5.0, name: str = "pipeline"):
        self.decoder = decoder
        self.inbox: Queue = Queue(inbox_size)
        self.outbox: Queue = Queue(outbox_size)
        self.decode = DecodeStage(decoder, layout, self.inbox, self.outbox, batch_lines=batch_lines,
                                  expire_interval=expire_interval, name=f"{name}-decode")
        self.writer = WriterStage(sink, self.outbox, flush_interval=flush_interval, name=f"{name}-writer")

    def start(self) -> None:
        self.decode.start()
        self.writer.start()

    def finish(self, timeout: float) -> bool:
        """Called once the readers are done: decode what is queued, flush, close the sink."""
        deadline = time.monotonic() + timeout
        try:
            self.inbox.put(STOP, timeout=max(0.0, timeout))
        except Full:
            return False
        for thread in (self.decode, self.writer):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not (self.decode.is_alive() or self.writer.is_alive())

    def alive(self) -> bool:
        return self.decode.is_alive() and self.writer.is_alive()

    def counters(self) -> dict:
        counters = copy_counter(self.decoder.stats)
        counters["documents_written"] = self.writer.documents_written
        counters["documents_lost"] = self.writer.documents_lost
        counters["sink_errors"] = self.writer.sink_errors
        counters["document_errors"] = self.decode.document_errors
        sink_counters = getattr(self.writer.sink, "counters", None)
        if callable(sink_counters):  # the bulk writer: indexed, spooled, dead-lettered, retries, latency
            counters.update(sink_counters())
        return counters

    def gauges(self) -> dict:
        gauges = {
            "templates_active": self.decode.templates_active,
            "input_queue_depth": self.inbox.qsize(),
            "output_queue_depth": self.outbox.qsize(),
        }
        sink_gauges = getattr(self.writer.sink, "gauges", None)
        if callable(sink_gauges):
            gauges.update(sink_gauges())
        return gauges
