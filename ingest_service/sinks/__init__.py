"""Where serialized documents go: the sink interface every output implements.

A sink receives batches of serialized documents (one JSON object per item, no
trailing newline) from a single writer thread:

    written = sink.write(lines)   # may buffer; returns lines that reached the destination
    written = sink.flush()        # push what is buffered; returns lines that reached it
    written = sink.close()        # flush, release resources

``write`` may block (a slow destination): the writer thread then stops taking
batches from its bounded queue, which is how backpressure reaches the listeners.
A failure raises :class:`SinkError` carrying how many lines were lost, so the
writer can count them and carry on.
"""
from __future__ import annotations

import re
import time
from typing import Protocol

import orjson


class Sink(Protocol):
    def write(self, lines: list[bytes]) -> int: ...

    def flush(self) -> int: ...

    def close(self) -> int: ...


class SinkError(Exception):
    """Some lines could not be delivered: ``lost`` of them; ``written`` others did arrive."""

    def __init__(self, message: str, lost: int, written: int = 0):
        super().__init__(message)
        self.lost = lost
        self.written = written


# documents.to_document puts @timestamp first, as "YYYY-MM-DDTHH:MM:SS.mmmZ".
_TIMESTAMP_PREFIX = b'{"@timestamp":"'
_DAY_AT = len(_TIMESTAMP_PREFIX)
_ISO_DAY = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)T")


def document_day(line: bytes, clock=time.time) -> str:
    """The UTC day of a serialized document's @timestamp as "YYYY.MM.DD".

    That is what Logstash's ``%{+YYYY.MM.dd}`` gave index and file names.  The fast
    path reads the fixed position to_document writes; anything else is parsed, and a
    document without a usable @timestamp falls on today's date.
    """
    if line.startswith(_TIMESTAMP_PREFIX) and line[_DAY_AT + 4:_DAY_AT + 5] == b"-" and line[_DAY_AT + 10:_DAY_AT + 11] == b"T":
        day = line[_DAY_AT:_DAY_AT + 10]
        return f"{day[0:4].decode()}.{day[5:7].decode()}.{day[8:10].decode()}"
    try:
        stamp = orjson.loads(line).get("@timestamp")
    except (orjson.JSONDecodeError, AttributeError):
        stamp = None
    match = _ISO_DAY.match(stamp) if isinstance(stamp, str) else None
    if match:
        return ".".join(match.groups())
    return time.strftime("%Y.%m.%d", time.gmtime(clock()))
