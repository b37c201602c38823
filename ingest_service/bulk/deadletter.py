"""Documents the engine rejected for good: kept with the reason, never dropped silently.

Destinations (either or both):

* an NDJSON file, one line per document::

    {"@timestamp":"2024-05-01T10:00:00.123Z","reason":"400 mapper_parsing_exception: failed to
     parse field [x] ...","status":400,"error":{...},"action":{"create":{"_index":"flow-..."}},
     "document":{...the document as it was sent...}}

  (``document_text`` instead of ``document`` when the document is not valid JSON);
* an index (``flow-ingest-deadletter`` by default) holding the same fields, the
  document as a string (its own fields are what the target index refused, so they
  must not be mapped again).  When the index cannot take them, they go to the file;
  without a file they are logged at ERROR with their reason and counted as lost.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import orjson

from .actions import BulkItem, classify_response

log = logging.getLogger(__name__)

DEFAULT_DEADLETTER_INDEX = "flow-ingest-deadletter"

_INDEX_SETTINGS = {
    "mappings": {
        "dynamic": False,
        "properties": {
            "@timestamp": {"type": "date"},
            "reason": {"type": "text"},
            "status": {"type": "integer"},
            "error_type": {"type": "keyword"},
            "index": {"type": "keyword"},
            "document": {"type": "text", "index": False},
        },
    }
}


@dataclass
class DeadLetter:
    item: BulkItem
    status: int  # the item's status, or the whole request's
    reason: str  # one line, for people
    error: object = None  # the engine's error object, as it came


def _now_iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _valid_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
        return True
    except orjson.JSONDecodeError:
        return False


def file_record(letter: DeadLetter, now: float) -> bytes:
    """The NDJSON line for one dead letter (pure).  The document is embedded as sent."""
    head = orjson.dumps({"@timestamp": _now_iso(now), "reason": letter.reason, "status": letter.status,
                         "error": letter.error})[:-1]
    action = letter.item.action if _valid_json(letter.item.action) else orjson.dumps(letter.item.action.decode(errors="replace"))
    document = letter.item.document
    if _valid_json(document):
        return head + b',"action":' + action + b',"document":' + document + b"}"
    return head + b',"action":' + action + b',"document_text":' + orjson.dumps(document.decode(errors="replace")) + b"}"


def _target_index(action: bytes) -> str | None:
    try:
        (_, meta), = orjson.loads(action).items()
        return meta.get("_index")
    except (orjson.JSONDecodeError, ValueError, AttributeError):
        return None


def index_document(letter: DeadLetter, now: float) -> bytes:
    """The document stored in the dead-letter index for one dead letter (pure)."""
    error_type = letter.error.get("type") if isinstance(letter.error, dict) else None
    return orjson.dumps({
        "@timestamp": _now_iso(now),
        "reason": letter.reason,
        "status": letter.status,
        "error_type": error_type,
        "index": _target_index(letter.item.action),
        "document": letter.item.document.decode(errors="replace"),
    })


class DeadLetterFile:
    def __init__(self, path: str | os.PathLike, *, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock = threading.Lock()

    def write(self, letters: Sequence[DeadLetter], now: float | None = None) -> None:
        """Append; raises OSError when the lines could not be written."""
        if not letters:
            return
        now = time.time() if now is None else now
        data = b"".join(file_record(letter, now) + b"\n" for letter in letters)
        with self._lock:
            # O_APPEND and one write per batch: lines of worker processes sharing the file never interleave.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)


class DeadLetterIndex:
    """Dead letters as documents of an index, through the same engine client."""

    def __init__(self, client_source, index: str = DEFAULT_DEADLETTER_INDEX):
        self._client_source = client_source  # callable -> EngineClient (raises when unreachable)
        self.index = index
        self._ready = False
        self._action = b'{"index":{"_index":' + orjson.dumps(index) + b"}}"

    def write(self, letters: Sequence[DeadLetter], now: float | None = None) -> list[DeadLetter]:
        """Index them; returns those that did not make it (for the file, or the log)."""
        if not letters:
            return []
        now = time.time() if now is None else now
        try:
            client = self._client_source()
            if not self._ready:
                response = client.perform("PUT", f"/{self.index}", _INDEX_SETTINGS)
                if not response.ok and "resource_already_exists" not in str(response.body):
                    log.warning("creating dead-letter index %s: %s %s", self.index, response.status, response.body)
                self._ready = True
            body = b"".join(self._action + b"\n" + index_document(letter, now) + b"\n" for letter in letters)
            outcome = classify_response(client.bulk(body), len(letters))
        except Exception as exc:  # unreachable, refused, odd answer: the file takes them
            log.warning("dead-letter index %s unavailable: %s", self.index, exc)
            return list(letters)
        failed = {rejection.position for rejection in outcome.rejected} | set(outcome.retry)
        return [letter for position, letter in enumerate(letters) if position in failed]


class DeadLetters:
    """Where rejected documents go: the index first (if any), then the file (if any), then the log."""

    def __init__(self, file: DeadLetterFile | None = None, index: DeadLetterIndex | None = None):
        self.file = file
        self.index = index

    def record(self, letters: Sequence[DeadLetter]) -> int:
        """Store ``letters``; returns how many could be stored nowhere (logged at ERROR)."""
        if not letters:
            return 0
        remaining = list(letters)
        if self.index is not None:
            remaining = self.index.write(remaining)
        if remaining and self.file is not None:
            try:
                self.file.write(remaining)
                remaining = []
            except OSError as exc:
                log.error("dead-letter file %s: %s", self.file.path, exc)
        for letter in remaining:
            log.error("document rejected and not stored anywhere: %s; action %s; document %s",
                      letter.reason, letter.item.action[:200], letter.item.document[:500])
        return len(remaining)
