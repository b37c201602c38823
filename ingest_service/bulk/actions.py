"""The ``_bulk`` protocol without I/O: action lines, chunking, and reading the answer.

A bulk body is NDJSON: an action line, then the document, per item::

    {"create":{"_index":"flow-2024.05.01","_id":"q1V..."}}
    {"@timestamp":"2024-05-01T10:00:00.000Z", ...}

The engine answers with one entry in ``items`` per action, *in the same order*; that
position is the only link between an answer and the document it is about (the
writer asks for ``filter_path=items.*.status,items.*.error``, so ``_id`` is not even
there).  Each item is then ok, retryable (the engine was busy or a shard missing:
try again later) or rejected for good (the document itself is wrong: dead letter).
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import orjson

from ..sinks import document_day

OP_INDEX = "index"
OP_CREATE = "create"
OP_TYPES = (OP_INDEX, OP_CREATE)

# Logstash's daily index pattern (``flow-%{+YYYY.MM.dd}``), the day taken from the
# document's @timestamp as the NDJSON sink does.
DAY_PATTERN = "%{+YYYY.MM.dd}"

OK = "ok"
DUPLICATE = "duplicate"  # create of an _id that already exists: the document is there
RETRY = "retry"
REJECT = "reject"
SPLIT = "split"  # whole request refused for its size/content: send halves

# Item errors that say "not now" rather than "never", whatever their status.
RETRYABLE_ERROR_TYPES = frozenset({
    "es_rejected_execution_exception",
    "rejected_execution_exception",  # OpenSearch's name for it
    "opensearch_rejected_execution_exception",
    "circuit_breaking_exception",
    "unavailable_shards_exception",
    "no_shard_available_action_exception",
    "process_cluster_event_timeout_exception",
    "cluster_block_exception",  # e.g. read-only after the disk flood stage: lifted later
    "timeout_exception",
    "receive_timeout_transport_exception",
    "node_not_connected_exception",
    "node_closed_exception",
})


def document_id(document: bytes) -> str:
    """A deterministic ``_id``: the same serialized document always gets the same id.

    A replayed or retried document then lands on itself instead of beside itself.
    128 bits of BLAKE2b in URL-safe base64 (22 characters, as short as the engines'
    own ids).  Byte-identical documents collapse into one, by design.
    """
    digest = hashlib.blake2b(document, digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class ActionSpec:
    """What each action line says: where to, how, with which id and pipeline."""

    index: str  # index, alias or data stream name; may contain %{+YYYY.MM.dd}
    op_type: str = OP_CREATE  # data streams accept only create
    pipeline: str | None = None
    document_ids: bool = False  # deterministic ids (document_id): replays never duplicate

    def __post_init__(self):
        if self.op_type not in OP_TYPES:
            raise ValueError(f"op_type must be one of {OP_TYPES}, not {self.op_type!r}")
        if not self.index:
            raise ValueError("index name is empty")
        if "%{" in self.index.replace(DAY_PATTERN, ""):
            raise ValueError(f"unsupported pattern in index name {self.index!r}; only {DAY_PATTERN} is known")

    @property
    def daily(self) -> bool:
        return DAY_PATTERN in self.index


class ActionBuilder:
    """Builds action lines for one ActionSpec, caching the constant part per index."""

    def __init__(self, spec: ActionSpec, clock=None):
        self.spec = spec
        self._clock = clock
        self._heads: dict[str, bytes] = {}
        self._tail = b"," + orjson.dumps({"pipeline": spec.pipeline})[1:-1] if spec.pipeline else b""

    def index_for(self, document: bytes) -> str:
        if not self.spec.daily:
            return self.spec.index
        day = document_day(document) if self._clock is None else document_day(document, self._clock)
        return self.spec.index.replace(DAY_PATTERN, day)

    def action(self, document: bytes) -> bytes:
        index = self.index_for(document)
        head = self._heads.get(index)
        if head is None:
            if len(self._heads) > 64:  # daily names: a few days at a time
                self._heads.clear()
            head = self._heads[index] = b'{"' + self.spec.op_type.encode() + b'":{"_index":' + orjson.dumps(index)
        if self.spec.document_ids:
            return head + b',"_id":"' + document_id(document).encode() + b'"' + self._tail + b"}}"
        return head + self._tail + b"}}"


class BulkItem:
    """One document on its way: its action line, the document, and how often it was tried."""

    __slots__ = ("action", "document", "attempts")

    def __init__(self, action: bytes, document: bytes, attempts: int = 0):
        self.action = action
        self.document = document
        self.attempts = attempts

    @property
    def size(self) -> int:
        return len(self.action) + len(self.document) + 2  # two newlines

    def __repr__(self) -> str:
        return f"BulkItem({self.action!r}, {self.document[:60]!r}..., attempts={self.attempts})"


def bulk_body(items: Iterable[BulkItem]) -> bytes:
    parts = []
    for item in items:
        parts += (item.action, b"\n", item.document, b"\n")
    return b"".join(parts)


def chunk_sizes(sizes: Sequence[int], max_docs: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """(start, end) ranges of consecutive items, each at most max_docs and max_bytes.

    An item larger than max_bytes on its own still goes, alone: refusing it here
    would lose it; the engine decides (http.max_content_length) and a 413 splits
    or dead-letters it.
    """
    if max_docs < 1 or max_bytes < 1:
        raise ValueError("max_docs and max_bytes must be positive")
    start, total = 0, 0
    for position, size in enumerate(sizes):
        if position > start and (position - start >= max_docs or total + size > max_bytes):
            yield start, position
            start, total = position, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)


def chunk_items(items: Sequence[BulkItem], max_docs: int, max_bytes: int) -> Iterator[list[BulkItem]]:
    for start, end in chunk_sizes([item.size for item in items], max_docs, max_bytes):
        yield list(items[start:end])


# -- reading the answer -------------------------------------------------------------


class BulkResponseMismatch(Exception):
    """The answer does not have one item per action: positions cannot be trusted."""


@dataclass
class Rejection:
    position: int
    status: int
    error: object  # the engine's error object (type, reason, caused_by, ...)

    @property
    def reason(self) -> str:
        return describe_error(self.status, self.error)


@dataclass
class BulkOutcome:
    count: int
    ok: int = 0
    duplicates: int = 0
    retry: list[int] = field(default_factory=list)  # positions to send again
    retry_reasons: dict[str, int] = field(default_factory=dict)  # error type -> count, for logs
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def acknowledged(self) -> int:
        """Documents now in the engine: indexed, or found already there."""
        return self.ok + self.duplicates


def classify_item(op: str, status: int, error: object) -> str:
    error_type = error.get("type") if isinstance(error, dict) else None
    if 200 <= status < 300:
        return OK
    if status == 409 and op == OP_CREATE and error_type == "version_conflict_engine_exception":
        return DUPLICATE
    if status == 429 or status >= 500 or error_type in RETRYABLE_ERROR_TYPES:
        return RETRY
    return REJECT


def classify_response(response: dict, count: int) -> BulkOutcome:
    """Pair a parsed bulk response with the ``count`` actions sent, by position."""
    items = response.get("items")
    if items is None:
        if response.get("errors") is False:  # filtered down to nothing but "all fine"
            return BulkOutcome(count, ok=count)
        raise BulkResponseMismatch(f"bulk response without items: {str(response)[:200]}")
    if len(items) != count:
        raise BulkResponseMismatch(f"{count} actions sent, {len(items)} items answered")
    outcome = BulkOutcome(count)
    if response.get("errors") is False:
        outcome.ok = count
        return outcome
    for position, entry in enumerate(items):
        # Each entry is {"<op>": {"status": ..., "error": ...}}.
        if not isinstance(entry, dict) or len(entry) != 1:
            raise BulkResponseMismatch(f"unreadable bulk item {position}: {str(entry)[:200]}")
        (op, result), = entry.items()
        status = result.get("status") if isinstance(result, dict) else None
        if not isinstance(status, int):
            raise BulkResponseMismatch(f"bulk item {position} has no status: {str(entry)[:200]}")
        error = result.get("error")
        verdict = classify_item(op, status, error)
        if verdict == OK:
            outcome.ok += 1
        elif verdict == DUPLICATE:
            outcome.duplicates += 1
        elif verdict == RETRY:
            outcome.retry.append(position)
            kind = error.get("type", str(status)) if isinstance(error, dict) else str(status)
            outcome.retry_reasons[kind] = outcome.retry_reasons.get(kind, 0) + 1
        else:
            outcome.rejected.append(Rejection(position, status, error))
    return outcome


def classify_request_failure(status: int) -> str:
    """What to do when the whole ``_bulk`` request got an error status."""
    if status == 413:  # body larger than http.max_content_length
        return SPLIT
    if status == 400:  # something in the body is malformed: bisect to find it
        return SPLIT
    # 429/5xx: busy or down.  401/403/404/407/...: credentials, proxy or privileges
    # being fixed; the documents are fine, so keep them (spool) rather than drop them.
    return RETRY


def describe_error(status: int, error: object) -> str:
    """One line: ``400 mapper_parsing_exception: failed to parse field [x] ... (caused by ...)``."""
    if isinstance(error, dict):
        text = f"{status} {error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, dict):
            text += f" (caused by {cause.get('type', '?')}: {cause.get('reason', '')})"
        return text
    return f"{status} {error}" if error else str(status)
