"""The bulk writer: a sink that indexes serialized documents into OpenSearch/Elasticsearch.

    writer = BulkWriter(EngineConfig(hosts=("http://127.0.0.1:9200",)),
                        BulkWriterConfig(index="flow-%{+YYYY.MM.dd}", spool_dir="/var/lib/flow-ingest/spool"))
    writer.write(lines)   # blocks while the queue is full: backpressure
    writer.flush()        # everything written so far is acknowledged, dead-lettered or spooled
    writer.close()        # the same, then the threads stop; the spool stays for the next run

How documents travel::

    write() -> bounded queue -> N sender threads -> POST /_bulk -> ok / retry / dead letter
                                       |  engine unreachable beyond the retry budget
                                       v
                                  disk spool  -> replay thread -> POST /_bulk (oldest first)

* Batches close at ``batch_docs`` documents, ``batch_bytes`` bytes or ``batch_age``
  seconds after their oldest document was written, whichever comes first.
* A busy engine (429, rejected execution, item-level 5xx) is retried with capped,
  jittered exponential backoff, only the failed items, for as long as it takes: the
  queue fills up and ``write()`` blocks, which is the backpressure the listeners need.
* An unreachable engine (connection refused, timeout, whole-request 5xx/401/403) is
  retried for ``unreachable_budget`` seconds; then the batch goes to the spool and
  the writer considers the engine down: later batches go straight to the spool
  (so ``write()`` keeps accepting) until the spool is full (then it blocks).  The
  replay thread probes the engine and, once it answers, replays the spool in order.
* Rejected items (mapping errors, other 4xx) go to the dead letters with the reason.
* With ``document_ids`` each action carries a hash of the document as ``_id``: a
  replay or retry of a document that did reach the engine lands on itself (a 409 on
  ``create``, counted as ``documents_duplicate``), so nothing is indexed twice.

Counters (``counters()``, summable across workers) and gauges (``gauges()``) are
listed in ``COUNTER_NAMES`` / ``GAUGE_NAMES``.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from ..engines.client import EngineClient, EngineConfig, EngineHTTPError, EngineUnavailable, connect
from ..engines.detect import UnsupportedEngine
from ..ratelog import RateLimitedLog
from ..sinks import SinkError
from .actions import (
    OP_CREATE,
    SPLIT,
    ActionBuilder,
    ActionSpec,
    BulkItem,
    BulkResponseMismatch,
    bulk_body,
    chunk_items,
    classify_request_failure,
    classify_response,
    describe_error,
)
from .deadletter import DeadLetter, DeadLetterFile, DeadLetterIndex, DeadLetters
from .spool import Spool, SpoolConfig, SpoolFull

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

COUNTER_NAMES = (
    "bulk_requests",  # every POST /_bulk sent (live and replay, including retries)
    "bulk_retries",  # requests that were a retry of failed items or of a failed request
    "bulk_request_failures",  # requests that got no usable answer (unreachable, error status)
    "documents_submitted",  # accepted by write()
    "documents_indexed",  # acknowledged by the engine (live and replayed)
    "documents_duplicate",  # create of an _id already there: acknowledged earlier, not indexed twice
    "documents_dead_lettered",  # rejected for good, stored with the reason
    "documents_spooled",  # written to the disk spool
    "documents_replayed",  # acknowledged by the engine out of the spool (also in documents_indexed)
    "documents_lost",  # could be stored nowhere (dead-letter store failed, close timed out without a spool)
)
GAUGE_NAMES = ("queue_documents", "queue_bytes", "requests_in_flight", "spool_bytes", "spool_segments", "engine_up")


@dataclass(frozen=True)
class BulkWriterConfig:
    # where and how
    index: str = "flow-%{+YYYY.MM.dd}"  # index, alias or data stream; %{+YYYY.MM.dd} = day of @timestamp
    op_type: str = OP_CREATE  # "create" (required by data streams) or "index"
    pipeline: str | None = None  # ingest pipeline, per action
    document_ids: bool = False  # _id = hash of the document: retries and replays never duplicate
    # batching
    batch_docs: int = 1000
    batch_bytes: int = 5 << 20
    batch_age: float = 1.0
    in_flight: int = 2  # concurrent bulk requests (threads)
    queue_docs: int = 20_000  # write() blocks beyond this many queued documents ...
    queue_bytes: int = 64 << 20  # ... or bytes
    # retries
    retry_initial: float = 0.1
    retry_max: float = 10.0  # backoff cap
    unreachable_budget: float = 5.0  # seconds of failed attempts before spooling a batch
    max_item_attempts: int | None = None  # dead-letter an item refused as busy this many times (None: never)
    # spool (None: no spool; an unreachable engine then blocks write() once the queue is full)
    spool_dir: str | None = None
    spool_max_bytes: int = 1 << 30
    spool_segment_bytes: int = 16 << 20
    spool_fsync: str = "always"
    # dead letters (with neither, they are logged at ERROR)
    deadletter_path: str | None = None
    deadletter_index: str | None = None  # e.g. "flow-ingest-deadletter"
    close_timeout: float = 30.0
    # flush() waits for acknowledgements.  A caller that flushes on a timer (the serve
    # pipeline's writer stage) should turn this off: batches close by age anyway, and
    # a waiting flush would stall it once per interval.  close() always waits.
    flush_waits: bool = True

    def __post_init__(self):
        if self.batch_docs < 1 or self.batch_bytes < 1 or self.in_flight < 1:
            raise ValueError("batch sizes and in_flight must be positive")
        if self.queue_docs < 1 or self.queue_bytes < 1:
            raise ValueError("queue bounds must be positive")

    def action_spec(self) -> ActionSpec:
        return ActionSpec(self.index, self.op_type, self.pipeline, self.document_ids)


def backoff_delay(attempt: int, initial: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): capped exponential, half jittered.

    Half of the delay is fixed so retries never hammer; the other half is random so
    several writers that failed together do not come back together.
    """
    ceiling = min(cap, initial * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + rand() * ceiling / 2


class LatencyHistogram:
    """Cumulative buckets, Prometheus style, as flat counter names."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        for position, bound in enumerate(self.buckets):
            if seconds <= bound:
                self.counts[position] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += seconds

    def as_counters(self, name: str = "bulk_latency_seconds") -> dict:
        out, running = {}, 0
        for bound, count in zip((*self.buckets, "inf"), self.counts):
            running += count
            out[f"{name}_bucket_le_{bound}"] = running
        out[f"{name}_sum"] = round(self.total, 6)
        out[f"{name}_count"] = running
        return out


class _Batch:
    """Bookkeeping of documents taken from the queue together, for flush()."""

    __slots__ = ("first", "unsettled")

    def __init__(self, first: int, count: int):
        self.first = first  # sequence number of its first document
        self.unsettled = count


class BulkWriter:
    """Sink interface (``write``/``flush``/``close``) over the engine's ``_bulk`` API.

    ``engine`` is a connected :class:`EngineClient`, or an :class:`EngineConfig` to
    connect with (lazily: an engine that is down at start is connected to later, the
    documents meanwhile spooled).  ``write``/``flush``/``close`` return how many
    documents the engine acknowledged since the previous call; losses (see
    ``documents_lost``) are raised as :class:`SinkError` by the next call.
    """

    def __init__(self, engine: EngineClient | EngineConfig, config: BulkWriterConfig = BulkWriterConfig(),
                 *, clock=time.monotonic, connector=connect):
        self.config = config
        self._builder = ActionBuilder(config.action_spec())
        self._clock = clock
        self._connector = connector
        self._ratelog = RateLimitedLog(log, interval=30.0)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # queue, settlement, engine state
        self._stop = threading.Event()
        self._closing_deadline: float | None = None

        self._engine_config = engine if isinstance(engine, EngineConfig) else engine.config
        self._engine: EngineClient | None = None if isinstance(engine, EngineConfig) else engine
        self._owns_engine = self._engine is None  # a client handed in stays open: the caller's
        self._connect_lock = threading.Lock()
        self._next_connect = 0.0
        if self._engine is None:
            try:
                self._engine = self._connector(self._engine_config)
            except (EngineUnavailable, EngineHTTPError) as exc:
                log.warning("engine not reachable at start (%s); documents will be spooled until it is", exc)
        if self._engine is not None:
            self._check_engine(self._engine)
        self._engine_up = self._engine is not None

        self._queue: deque[BulkItem] = deque()
        self._queue_times: deque[tuple[int, float]] = deque()  # (sequence after a write, when) for batch age
        self._queue_bytes = 0
        self._submitted = 0  # sequence number of the next document written
        self._taken = 0  # sequence number of the next document to leave the queue
        self._open: dict[int, _Batch] = {}
        self._flush_target = 0  # documents before this sequence number go out without waiting for age
        self._in_flight = 0
        self._acknowledged_reported = 0
        self._lost_reported = 0
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        self._latency = LatencyHistogram()

        self.spool = None
        if config.spool_dir:
            self.spool = Spool(SpoolConfig(config.spool_dir, config.spool_max_bytes,
                                           config.spool_segment_bytes, config.spool_fsync))
        deadletter_file = DeadLetterFile(config.deadletter_path) if config.deadletter_path else None
        deadletter_index = DeadLetterIndex(self._client, config.deadletter_index) if config.deadletter_index else None
        self._dead_letters = DeadLetters(deadletter_file, deadletter_index)

        self._threads = [threading.Thread(target=self._send_loop, name=f"bulk-sender-{n}", daemon=True)
                         for n in range(config.in_flight)]
        if self.spool is not None:
            self._threads.append(threading.Thread(target=self._replay_loop, name="bulk-replay", daemon=True))
        for thread in self._threads:
            thread.start()

    # -- the sink interface -------------------------------------------------------

    def write(self, lines: list[bytes]) -> int:
        """Queue serialized documents; blocks while the queue is full."""
        if self._stop.is_set():
            raise RuntimeError("BulkWriter is closed")
        action = self._builder.action
        items = [BulkItem(action(line), line) for line in lines]
        position = 0
        with self._changed:
            while position < len(items):
                # Take what fits; an empty queue takes any write so a huge one cannot wait forever.
                while (self._queue and (len(self._queue) >= self.config.queue_docs
                                        or self._queue_bytes >= self.config.queue_bytes)):
                    self._changed.wait(1.0)
                    if self._stop.is_set():
                        raise RuntimeError("BulkWriter closed while writing")
                room_docs = max(1, self.config.queue_docs - len(self._queue))
                chunk = items[position:position + room_docs]
                position += len(chunk)
                self._queue.extend(chunk)
                self._queue_bytes += sum(item.size for item in chunk)
                self._submitted += len(chunk)
                self._queue_times.append((self._submitted, self._clock()))
                self._counts["documents_submitted"] += len(chunk)
                self._changed.notify_all()
        return self._report()

    def flush(self, timeout: float | None = None, *, wait: bool | None = None) -> int:
        """Send what is queued now, and wait until every document written so far is
        acknowledged, dead-lettered or spooled (unless ``wait`` / ``config.flush_waits`` is off)."""
        wait = self.config.flush_waits if wait is None else wait
        with self._changed:
            target = self._submitted
            self._flush_target = max(self._flush_target, target)
            self._changed.notify_all()
            if not wait:
                target = 0  # nothing to wait for
            deadline = None if timeout is None else self._clock() + timeout
            while not self._settled_before(target):
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(1.0 if remaining is None else min(1.0, remaining))
        return self._report()

    def close(self, timeout: float | None = None) -> int:
        """Flush (spooling what the engine does not take within ``timeout``), then stop."""
        if self._stop.is_set():
            return self._report()
        timeout = self.config.close_timeout if timeout is None else timeout
        with self._changed:
            # Past this point retries stop waiting: leftovers go to the spool.
            self._closing_deadline = self._clock() + timeout
            self._changed.notify_all()
        self.flush(timeout + 1.0, wait=True)
        with self._changed:
            self._stop.set()
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=self._engine_config.request_timeout + 5.0)
        with self._changed:
            leftover = len(self._queue) + sum(batch.unsettled for batch in self._open.values())
            if leftover:
                log.error("closing with %d documents neither acknowledged nor spooled: lost", leftover)
                self._counts["documents_lost"] += leftover
                self._queue.clear()
                self._open.clear()
        if self.spool is not None:
            self.spool.close()
        if self._owns_engine and self._engine is not None:
            try:
                self._engine.close()
            except Exception:  # closing connections must not hide the flush result
                pass
        return self._report()

    # -- observability ------------------------------------------------------------

    def counters(self) -> dict:
        with self._lock:
            out = dict(self._counts)
            out.update(self._latency.as_counters())
        return out

    def gauges(self) -> dict:
        with self._lock:
            out = {
                "queue_documents": len(self._queue),
                "queue_bytes": self._queue_bytes,
                "requests_in_flight": self._in_flight,
                "engine_up": int(self._engine_up),
            }
        out["spool_bytes"] = self.spool.bytes if self.spool else 0
        out["spool_segments"] = self.spool.segments if self.spool else 0
        return out

    def stats(self) -> dict:
        return {**self.counters(), **self.gauges()}

    @property
    def engine_info(self):
        return self._engine.info if self._engine is not None else None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued, in flight or spooled (tests, shutdown scripts)."""
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            with self._changed:
                busy = self._queue or self._open or self._in_flight
            if not busy and (self.spool is None or self.spool.empty):
                return True
            time.sleep(0.05)
        return False

    # -- bookkeeping --------------------------------------------------------------

    def _report(self) -> int:
        """Acknowledged since the last report; raise SinkError for losses not reported yet."""
        with self._lock:
            acknowledged = self._counts["documents_indexed"] + self._counts["documents_duplicate"]
            new, self._acknowledged_reported = acknowledged - self._acknowledged_reported, acknowledged
            lost = self._counts["documents_lost"] - self._lost_reported
            self._lost_reported = self._counts["documents_lost"]
        if lost:
            raise SinkError(f"{lost} documents could not be indexed, dead-lettered nor spooled", lost, new)
        return new

    def _settled_before(self, target: int) -> bool:
        if self._taken < target:
            return False
        return all(batch.first >= target for batch in self._open.values())

    def _settle(self, batch: _Batch | None, count: int, counter: str | None = None) -> None:
        with self._changed:
            if counter:
                self._counts[counter] += count
            if batch is not None:
                batch.unsettled -= count
                if batch.unsettled <= 0:
                    self._open.pop(batch.first, None)
            self._changed.notify_all()

    def _count(self, counter: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[counter] += amount

    # -- engine state -------------------------------------------------------------

    def _check_engine(self, engine: EngineClient) -> None:
        log.info("indexing into %s at %s", engine.info.describe(), ", ".join(engine.config.hosts))

    def _client(self) -> EngineClient:
        """The engine client, connecting first if that never worked yet (throttled)."""
        engine = self._engine
        if engine is not None:
            return engine
        with self._connect_lock:
            if self._engine is not None:
                return self._engine
            now = self._clock()
            if now < self._next_connect:
                raise EngineUnavailable("not connected yet")
            self._next_connect = now + 1.0
            try:
                engine = self._connector(self._engine_config)
            except (EngineHTTPError, UnsupportedEngine) as exc:
                # Credentials or a proxy being fixed: keep the documents, keep trying.
                raise EngineUnavailable(str(exc)) from exc
            self._check_engine(engine)
            self._engine = engine
            return engine

    def _set_engine_up(self, up: bool) -> None:
        with self._changed:
            if self._engine_up != up:
                self._engine_up = up
                if up:
                    log.warning("engine answers again; replaying the spool")
                else:
                    log.warning("engine unreachable; spooling documents to %s", self.config.spool_dir)
                self._changed.notify_all()

    def _closing(self) -> bool:
        deadline = self._closing_deadline
        return deadline is not None and self._clock() >= deadline

    # -- senders ------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            batch, items = taken
            try:
                self._deliver(items, batch, replay=False)
            except Exception:  # a bug must not silently stop a sender: keep the documents
                log.exception("bulk sender failed; spooling its batch")
                self._give_up(items, batch, "sender error")
            finally:
                with self._changed:
                    self._in_flight -= 1
                    self._changed.notify_all()

    def _next_batch(self) -> tuple[_Batch, list[BulkItem]] | None:
        config = self.config
        with self._changed:
            while True:
                if self._queue:
                    oldest = self._oldest_queued_time()
                    due = (len(self._queue) >= config.batch_docs or self._queue_bytes >= config.batch_bytes
                           or self._flush_target > self._taken or self._closing_deadline is not None
                           or self._stop.is_set() or self._clock() - oldest >= config.batch_age)
                    if due:
                        break
                    self._changed.wait(max(0.001, oldest + config.batch_age - self._clock()))
                elif self._stop.is_set():
                    return None
                else:
                    self._changed.wait(1.0)
            items, size = [], 0
            while self._queue and len(items) < config.batch_docs:
                item_size = self._queue[0].size
                if items and size + item_size > config.batch_bytes:
                    break
                items.append(self._queue.popleft())
                size += item_size
            self._queue_bytes -= size
            batch = _Batch(self._taken, len(items))
            self._taken += len(items)
            while self._queue_times and self._queue_times[0][0] <= self._taken:
                self._queue_times.popleft()
            self._open[batch.first] = batch
            self._in_flight += 1
            self._changed.notify_all()  # room in the queue for write()
            return batch, items

    def _oldest_queued_time(self) -> float:
        for end, when in self._queue_times:
            if end > self._taken:
                return when
        return self._clock()

    def _deliver(self, items: list[BulkItem], batch: _Batch | None, *, replay: bool) -> list[BulkItem]:
        """Send until every item is acknowledged, dead-lettered or (live only) spooled.

        Returns the items left undelivered: only a replay gives up that way (they are
        still in the spool), when the engine stays unreachable beyond the budget.
        """
        pending = items
        attempt = 0
        unreachable_since: float | None = None
        while pending:
            if not replay and self.spool is not None and not self._engine_up:
                self._spool_items(pending, batch)
                return []
            failure = None  # "busy" (retry until it works) or "unreachable" (budget, then spool)
            started = self._clock()
            try:
                engine = self._client()
                self._count("bulk_requests")
                response = engine.bulk(bulk_body(pending))
                with self._lock:
                    self._latency.observe(self._clock() - started)
                outcome = classify_response(response, len(pending))
            except EngineUnavailable as exc:
                failure, why = "unreachable", str(exc)
            except EngineHTTPError as exc:
                verdict = classify_request_failure(exc.status)
                if verdict == SPLIT:
                    return self._split(pending, batch, exc, replay=replay)
                failure = "busy" if exc.status == 429 else "unreachable"
                why = f"HTTP {exc.status}: {exc}"
            except BulkResponseMismatch as exc:
                failure, why = "unreachable", str(exc)
            if failure is None:
                pending = self._apply_outcome(outcome, pending, batch, replay=replay)
                if not pending:
                    self._set_engine_up(True)
                    return []
                failure = "busy"
                why = ", ".join(f"{count}x {kind}" for kind, count in outcome.retry_reasons.items())
            else:
                self._count("bulk_request_failures")
            attempt += 1
            now = self._clock()
            if failure == "unreachable":
                if unreachable_since is None:
                    unreachable_since = started
                if now - unreachable_since >= self.config.unreachable_budget:
                    if replay:
                        self._set_engine_up(False)
                        return pending  # still in the spool; the replay thread waits for the engine
                    if self.spool is not None:
                        self._ratelog.warning("unreachable", "engine unreachable for %.1f s (%s); spooling",
                                              now - unreachable_since, why)
                        self._set_engine_up(False)
                        self._spool_items(pending, batch)
                        return []
            else:
                unreachable_since = None
            if replay and self._stop.is_set():
                return pending
            if not replay and (self._closing() or self._stop.is_set()):
                if self.spool is not None:
                    self._spool_items(pending, batch)
                    return []
                if self._stop.is_set():
                    return pending  # no spool and close() is done waiting: it counts them lost
            self._ratelog.warning(f"retry-{failure}", "bulk request to retry (%s, %d documents): %s",
                                  failure, len(pending), why)
            self._count("bulk_retries")
            delay = backoff_delay(attempt, self.config.retry_initial, self.config.retry_max)
            if self._closing_deadline is not None:
                delay = min(delay, max(0.05, self._closing_deadline - now))
            self._stop.wait(delay)
            if failure == "busy":  # an engine that answers "not now" for these very items
                for item in pending:
                    item.attempts += 1
                pending = self._drop_exhausted(pending, batch)
        return []

    def _apply_outcome(self, outcome, pending, batch, *, replay: bool) -> list[BulkItem]:
        with self._changed:
            self._counts["documents_indexed"] += outcome.ok
            self._counts["documents_duplicate"] += outcome.duplicates
            if replay:
                self._counts["documents_replayed"] += outcome.acknowledged
        self._settle(batch, outcome.acknowledged)
        if outcome.rejected:
            self._dead_letter([DeadLetter(pending[r.position], r.status, r.reason, r.error)
                               for r in outcome.rejected], batch)
        return [pending[position] for position in outcome.retry]

    def _split(self, pending, batch, exc: EngineHTTPError, *, replay: bool) -> list[BulkItem]:
        """The engine refused the whole request (400/413): halve it to isolate the culprit."""
        if len(pending) == 1:
            error = exc.body.get("error") if isinstance(exc.body, dict) else exc.body
            self._dead_letter([DeadLetter(pending[0], exc.status, describe_error(exc.status, error), error)], batch)
            return []
        middle = len(pending) // 2
        left = self._deliver(pending[:middle], batch, replay=replay)
        right = self._deliver(pending[middle:], batch, replay=replay)
        return left + right

    def _drop_exhausted(self, pending, batch) -> list[BulkItem]:
        limit = self.config.max_item_attempts
        if limit is None:
            return pending
        keep, exhausted = [], []
        for item in pending:
            (exhausted if item.attempts >= limit else keep).append(item)
        if exhausted:
            self._dead_letter([DeadLetter(item, 0, f"gave up after {item.attempts} retries") for item in exhausted],
                              batch)
        return keep

    def _dead_letter(self, letters: list[DeadLetter], batch) -> None:
        for letter in letters[:3]:
            self._ratelog.warning("dead-letter", "document rejected: %s", letter.reason)
        lost = self._dead_letters.record(letters)
        with self._changed:
            self._counts["documents_dead_lettered"] += len(letters) - lost
            self._counts["documents_lost"] += lost
        self._settle(batch, len(letters))

    def _give_up(self, items, batch, why: str) -> None:
        if self.spool is not None:
            try:
                self._spool_items(items, batch)
                return
            except Exception:
                log.exception("spooling after %s failed", why)
        self._settle(batch, batch.unsettled if batch else len(items), "documents_lost")

    # -- spool --------------------------------------------------------------------

    def _spool_items(self, items: list[BulkItem], batch: _Batch | None) -> None:
        """Append to the spool, waiting for room (that wait is the backpressure)."""
        size = sum(item.size for item in items)
        while True:
            try:
                self.spool.append(items)
                break
            except SpoolFull:
                self._ratelog.warning("spool-full", "spool full (%d bytes); waiting for the engine",
                                      self.spool.bytes)
            except OSError as exc:
                self._ratelog.warning("spool-error", "cannot spool %d bytes: %s; retrying", size, exc)
            if self._stop.wait(0.5) and self._stop.is_set():
                # close() is done waiting: nothing else can take them.
                self._settle(batch, len(items), "documents_lost")
                return
        self._settle(batch, len(items), "documents_spooled")

    def _replay_loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if self.spool.empty:
                with self._changed:
                    self._changed.wait(1.0)
                continue
            if not self._engine_up and not self._probe():
                attempt += 1
                self._stop.wait(backoff_delay(attempt, 0.5, 5.0))
                continue
            attempt = 0
            try:
                self._replay_oldest()
            except Exception:
                log.exception("replaying the spool failed; trying again")
                self._stop.wait(1.0)

    def _probe(self) -> bool:
        try:
            engine = self._client()
            up = engine.ping()
        except EngineUnavailable:
            up = False
        if up:
            self._set_engine_up(True)
        return up

    def _replay_oldest(self) -> None:
        segment = self.spool.oldest()
        if segment is None:
            return
        if not segment.items:  # every line was unreadable, or all acknowledged before a crash
            self.spool.acknowledge(segment, 0)
            return
        for chunk in chunk_items(segment.items, self.config.batch_docs, self.config.batch_bytes):
            if self._stop.is_set():
                return
            with self._changed:
                self._in_flight += 1
            try:
                undelivered = self._deliver(chunk, None, replay=True)
            finally:
                with self._changed:
                    self._in_flight -= 1
                    self._changed.notify_all()
            if undelivered:
                return  # engine gone again; the cursor stays before this chunk
            self.spool.acknowledge(segment, len(chunk))
