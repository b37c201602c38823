"""NDJSON output: one document per line, in daily files or on a stream (stdout).

Files are ``<directory>/flow-YYYY.MM.DD.ndjson``, the day taken from each
document's @timestamp (UTC), as Logstash's ``flow-%{+YYYY.MM.dd}`` did, so a
document arriving late lands in its own day's file.

Several worker processes append to the same files: each opens them with O_APPEND
and writes whole lines, a batch per file in one ``os.write``, so lines of different
processes never interleave (a regular file's write is atomic with respect to other
writers on Linux).  A stream has no such guarantee beyond PIPE_BUF, hence the
optional lock shared by the processes writing to it.

Lines are buffered until ``flush`` (the writer calls it every flush interval) or
until the buffer exceeds ``max_buffer_bytes``.
"""
from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from pathlib import Path

from . import SinkError, document_day

FILE_PREFIX = "flow-"
FILE_SUFFIX = ".ndjson"


def write_all(fd: int, data: bytes) -> None:
    """os.write until done: a regular file only writes short on errors such as a full disk."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _LineBuffer:
    """Lines grouped by destination, with the byte count that triggers a flush."""

    def __init__(self, max_buffer_bytes: int):
        self.max_buffer_bytes = max_buffer_bytes
        self._groups: dict[str, list[bytes]] = {}
        self._bytes = 0

    def add(self, key: str, line: bytes) -> None:
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = []
        group.append(line)
        self._bytes += len(line) + 1

    @property
    def full(self) -> bool:
        return self._bytes >= self.max_buffer_bytes

    def take(self) -> dict[str, list[bytes]]:
        groups, self._groups, self._bytes = self._groups, {}, 0
        return groups


def _join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


class NdjsonFileSink:
    def __init__(self, directory: str | os.PathLike, *, max_buffer_bytes: int = 1 << 20,
                 max_open_files: int = 4, clock=time.time):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._buffer = _LineBuffer(max_buffer_bytes)
        self._max_open_files = max_open_files
        self._files: OrderedDict[str, int] = OrderedDict()  # day -> fd, least recently used first
        self._clock = clock

    def path_for(self, day: str) -> Path:
        return self.directory / f"{FILE_PREFIX}{day}{FILE_SUFFIX}"

    def write(self, lines: list[bytes]) -> int:
        clock = self._clock
        for line in lines:
            self._buffer.add(document_day(line, clock), line)
        return self.flush() if self._buffer.full else 0

    def flush(self) -> int:
        written = lost = 0
        failure: OSError | None = None
        for day, lines in self._buffer.take().items():
            try:
                write_all(self._fd(day), _join(lines))
                written += len(lines)
            except OSError as exc:
                lost += len(lines)
                failure = exc
                self._forget(day)  # reopen next time: the directory may be back
        if failure is not None:
            raise SinkError(f"writing {self.directory}: {failure}", lost, written)
        return written

    def close(self) -> int:
        try:
            return self.flush()
        finally:
            for day in list(self._files):
                self._forget(day)

    def _fd(self, day: str) -> int:
        fd = self._files.get(day)
        if fd is not None:
            self._files.move_to_end(day)
            return fd
        # Days come mostly in order: few files are ever open, the oldest closed first.
        while len(self._files) >= self._max_open_files:
            self._forget(next(iter(self._files)))
        fd = os.open(self.path_for(day), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._files[day] = fd
        return fd

    def _forget(self, day: str) -> None:
        fd = self._files.pop(day, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class NdjsonStreamSink:
    """Lines on an inherited file descriptor (``--output -``: stdout), never closed here."""

    def __init__(self, fd: int = 1, *, lock=None, max_buffer_bytes: int = 1 << 20):
        self.fd = fd
        self._lock = lock  # a multiprocessing.Lock when several processes share the stream
        self._buffer = _LineBuffer(max_buffer_bytes)

    def write(self, lines: list[bytes]) -> int:
        for line in lines:
            self._buffer.add("", line)
        return self.flush() if self._buffer.full else 0

    def flush(self) -> int:
        lines = self._buffer.take().get("")
        if not lines:
            return 0
        try:
            if self._lock is None:
                write_all(self.fd, _join(lines))
            else:
                with self._lock:
                    write_all(self.fd, _join(lines))
        except OSError as exc:
            raise SinkError(f"writing to fd {self.fd}: {exc}", len(lines)) from exc
        return len(lines)

    def close(self) -> int:
        return self.flush()


def open_ndjson_sink(output: str, directory: str, lock=None):
    """The embedded outputs: ``-`` is NDJSON on stdout (``lock`` serializes writers sharing it),
    anything else daily files in ``directory``."""
    if output == "-":
        return NdjsonStreamSink(sys.stdout.fileno(), lock=lock)
    return NdjsonFileSink(directory)
