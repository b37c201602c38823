"""A disk spool for bulk items the engine could not take: append now, replay in order later.

Layout of the spool directory::

    .lock                      flock'ed by the one writer using the directory
    seg-000000000007.ndjson    sealed segments: complete _bulk bodies (action + document lines)
    seg-000000000007.ack       how many of its items were acknowledged (written on progress)
    seg-000000000008.ndjson    the segment being appended to

A segment is a valid ``_bulk`` body, so an operator can replay one by hand with curl.
Appends go to the newest segment; once it exceeds ``segment_bytes`` it is sealed and
the next append starts a new one.  Replay reads the oldest segment, the writer sends
it on and reports progress (``acknowledge``); a fully acknowledged segment is deleted.

Crash safety: a process that dies mid-append leaves a torn tail (a line without its
newline, an action without its document); reading stops short of it.  The ``.ack``
cursor is replaced atomically, so at worst one chunk is sent twice (deterministic
ids make that harmless).  Nothing is kept in memory between restarts: a new writer
opening the directory finds the old one's segments and replays them first.

``fsync``: "always" syncs each append before it returns (a spooled batch survives a
power cut); "segment" only when a segment is sealed; "never" leaves it to the kernel
(survives a process crash, not a power cut).
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .actions import BulkItem

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "segment", "never")
_SEGMENT_NAME = re.compile(r"^seg-(\d{12})\.ndjson$")
_ACTION_PREFIXES = (b'{"create":{', b'{"index":{')


class SpoolFull(Exception):
    """Appending would take the spool past its size limit."""


class SpoolLocked(Exception):
    """Another writer (process) uses this spool directory."""


@dataclass(frozen=True)
class SpoolConfig:
    directory: str
    max_bytes: int = 1 << 30
    segment_bytes: int = 16 << 20
    fsync: str = "always"

    def __post_init__(self):
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {self.fsync!r}")
        if self.max_bytes <= 0 or self.segment_bytes <= 0:
            raise ValueError("spool sizes must be positive")


@dataclass
class Segment:
    """A sealed segment's items from the first one not yet acknowledged."""

    sequence: int
    items: list[BulkItem]
    start: int  # items before this one were acknowledged earlier (already skipped)
    torn: int  # lines dropped as unreadable (torn tail, garbage)


def parse_segment(data: bytes) -> tuple[list[BulkItem], int]:
    """Items in a segment's bytes, and how many lines were dropped as unreadable.

    Pure: a well-formed pair is an action line (``{"create":{...}}``/``{"index":...``)
    followed by a JSON object line.  Anything else (a torn tail, zeros left by a crash
    before the data reached the disk) is skipped line by line until pairs resume.
    """
    if not data:
        return [], 0
    lines = data.split(b"\n")
    # After the last newline: nothing, or a line whose write was torn.
    torn = 0 if lines.pop() == b"" else 1
    items = []
    position = 0
    while position < len(lines):
        action = lines[position]
        document = lines[position + 1] if position + 1 < len(lines) else None
        if (document is not None and action.startswith(_ACTION_PREFIXES) and action.endswith(b"}}")
                and document.startswith(b"{") and document.endswith(b"}") and b"\0" not in document
                and b"\0" not in action):
            items.append(BulkItem(action, document))
            position += 2
        else:
            torn += 1
            position += 1
    return items, torn


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, config: SpoolConfig):
        self.config = config
        self.directory = Path(config.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked(f"spool {self.directory} is in use by another writer "
                              "(give each worker process its own directory)") from None
        self._mutex = threading.Lock()
        self._sizes: dict[int, int] = {}  # sequence -> bytes on disk, sealed and active
        for entry in self.directory.iterdir():
            match = _SEGMENT_NAME.match(entry.name)
            if match:
                self._sizes[int(match.group(1))] = entry.stat().st_size
        for entry in self.directory.glob("seg-*.ack"):  # cursors whose segment is gone
            if int(entry.stem[4:]) not in self._sizes:
                entry.unlink(missing_ok=True)
        self._next_sequence = max(self._sizes, default=0) + 1
        self._active: int | None = None  # segments left by an earlier process count as sealed
        self._active_fd: int | None = None
        self._closed = False
        if self._sizes:
            log.info("spool %s: %d segment(s), %d bytes left by an earlier run, to replay",
                     self.directory, len(self._sizes), sum(self._sizes.values()))

    # -- sizes --------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        with self._mutex:
            return sum(self._sizes.values())

    @property
    def segments(self) -> int:
        with self._mutex:
            return len(self._sizes)

    @property
    def empty(self) -> bool:
        with self._mutex:
            return not self._sizes

    def has_room(self, nbytes: int) -> bool:
        with self._mutex:
            return self._has_room(nbytes)

    def _has_room(self, nbytes: int) -> bool:
        used = sum(self._sizes.values())
        # An empty spool takes any one batch, however large: refusing could never end.
        return used == 0 or used + nbytes <= self.config.max_bytes

    # -- appending ----------------------------------------------------------------

    def append(self, items: Sequence[BulkItem]) -> int:
        """Write ``items`` to the active segment; raises SpoolFull, OSError. Returns bytes written."""
        if not items:
            return 0
        parts = []
        for item in items:
            parts += (item.action, b"\n", item.document, b"\n")
        data = b"".join(parts)
        with self._mutex:
            if self._closed:
                raise OSError("spool is closed")
            if not self._has_room(len(data)):
                raise SpoolFull(f"spool {self.directory} holds {sum(self._sizes.values())} of "
                                f"{self.config.max_bytes} bytes; {len(data)} more do not fit")
            if self._active is None:
                self._open_segment()
            sequence, fd = self._active, self._active_fd
            try:
                _write_all(fd, data)
                if self.config.fsync == "always":
                    os.fsync(fd)
            except OSError:
                # What reached the file may be partial: seal it, the reader skips a torn tail.
                self._sizes[sequence] = os.fstat(fd).st_size
                self._seal()
                raise
            self._sizes[sequence] += len(data)
            if self._sizes[sequence] >= self.config.segment_bytes:
                self._seal()
        return len(data)

    def _open_segment(self) -> None:
        sequence = self._next_sequence
        self._next_sequence += 1
        path = self._segment_path(sequence)
        self._active_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._active = sequence
        self._sizes[sequence] = 0
        if self.config.fsync != "never":
            _fsync_directory(self.directory)

    def _seal(self) -> None:
        if self._active_fd is None:
            return
        try:
            if self.config.fsync == "segment":
                os.fsync(self._active_fd)
        finally:
            os.close(self._active_fd)
            self._active = self._active_fd = None

    # -- replaying ----------------------------------------------------------------

    def oldest(self) -> Segment | None:
        """The oldest segment's unacknowledged items (sealing the active one if it is the only one)."""
        with self._mutex:
            if not self._sizes:
                return None
            sequence = min(self._sizes)
            if sequence == self._active:
                self._seal()
        data = self._segment_path(sequence).read_bytes()
        items, torn = parse_segment(data)
        if torn:
            log.warning("spool segment %d: %d unreadable line(s) skipped (torn write?)", sequence, torn)
        start = min(self._read_cursor(sequence), len(items))
        return Segment(sequence, items[start:], start, torn)

    def acknowledge(self, segment: Segment, count: int) -> None:
        """``count`` more items of ``segment`` (from where it started) are done with."""
        done = segment.start + count
        segment.start, segment.items = done, segment.items[count:]
        if not segment.items:
            self._delete(segment.sequence)
        else:
            self._write_cursor(segment.sequence, done)

    def _delete(self, sequence: int) -> None:
        with self._mutex:
            self._segment_path(sequence).unlink(missing_ok=True)
            self._cursor_path(sequence).unlink(missing_ok=True)
            self._sizes.pop(sequence, None)
            if self.config.fsync != "never":
                _fsync_directory(self.directory)

    def _read_cursor(self, sequence: int) -> int:
        try:
            return int(self._cursor_path(sequence).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _write_cursor(self, sequence: int, done: int) -> None:
        path = self._cursor_path(sequence)
        temporary = path.with_suffix(".ack.tmp")
        with open(temporary, "w") as handle:
            handle.write(f"{done}\n")
            if self.config.fsync != "never":
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)

    def _segment_path(self, sequence: int) -> Path:
        return self.directory / f"seg-{sequence:012d}.ndjson"

    def _cursor_path(self, sequence: int) -> Path:
        return self.directory / f"seg-{sequence:012d}.ack"

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._seal()
            if self.config.fsync != "never":
                _fsync_directory(self.directory)
        os.close(self._lock_fd)  # releases the flock


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
