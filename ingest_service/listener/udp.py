"""UDP worker: a reader thread that only receives, in front of a decode/write pipeline.

The reader never waits for anything downstream: a datagram that finds the inbox full
is dropped and counted (``udp_queue_drops``), so a slow output costs datagrams we can
count rather than kernel drops we only learn about afterwards.  The kernel's own
drops (receive buffer full) come with every datagram as SO_RXQ_OVFL ancillary data,
and are read from /proc/net/udp when reporting: a per-socket total, reported as
``udp_kernel_drops``.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from queue import Full, Queue

from ..documents import DocumentLayout
from ..ratelog import RateLimitedLog
from ..sinks import Sink
from .pipeline import Pipeline, WorkerSnapshot
from .sockets import SO_RXQ_OVFL, canonical_host

log = logging.getLogger("flow_ingest.udp")

MAX_DATAGRAM = 65536
_ANCILLARY_SPACE = socket.CMSG_SPACE(4)


class UdpReader(threading.Thread):
    def __init__(self, sock: socket.socket, inbox: Queue, stop: threading.Event, *,
                 poll_interval: float = 0.25, drain_seconds: float = 1.0, name: str = "udp-reader"):
        super().__init__(name=name, daemon=True)
        self.sock = sock
        self.inbox = inbox
        self.stop_event = stop
        self.poll_interval = poll_interval
        self.drain_seconds = drain_seconds
        # Written by this thread only.
        self.datagrams = 0
        self.bytes = 0
        self.queue_drops = 0
        self.kernel_drops = 0  # the socket's total, as of the last datagram
        self.truncated = 0
        self.receive_errors = 0
        self._log = RateLimitedLog(log)

    def run(self) -> None:
        sock = self.sock
        sock.settimeout(self.poll_interval)  # wake up now and then to notice a stop
        receive = sock.recvmsg
        accept = self._accept
        while not self.stop_event.is_set():
            try:
                data, ancillary, flags, peer = receive(MAX_DATAGRAM, _ANCILLARY_SPACE)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._receive_failed(exc):
                    return
                continue
            accept(data, ancillary, flags, peer, None)
        self._drain()

    def _drain(self) -> None:
        # Stopping: take what already sits in the socket buffer, waiting for queue room
        # now since nothing else needs this thread, but only for so long.
        deadline = time.monotonic() + self.drain_seconds
        self.sock.settimeout(0.0)
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                data, ancillary, flags, peer = self.sock.recvmsg(MAX_DATAGRAM, _ANCILLARY_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._receive_failed(exc):
                    return
                continue
            self._accept(data, ancillary, flags, peer, remaining)

    def _accept(self, data: bytes, ancillary, flags: int, peer, wait: float | None) -> None:
        received_at = time.time()
        self.datagrams += 1
        self.bytes += len(data)
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                self.kernel_drops = int.from_bytes(value[:4], sys.byteorder)
        if flags & socket.MSG_TRUNC:
            self.truncated += 1
            self._log.warning("udp_truncated", "datagram from %s:%s larger than %d bytes dropped",
                              peer[0], peer[1], MAX_DATAGRAM)
            return
        item = (data, ("udp", canonical_host(peer[0]), peer[1], 0), received_at)
        try:
            if wait is None:
                self.inbox.put_nowait(item)
            else:
                self.inbox.put(item, timeout=wait)
        except Full:
            self.queue_drops += 1
            self._log.warning("udp_queue_drops", "decode queue full: dropping datagrams (output too slow?)")

    def _receive_failed(self, exc: OSError) -> bool:
        """Count a receive error; True when the socket is unusable (stop reading)."""
        self.receive_errors += 1
        if self.sock.fileno() < 0:
            return True
        self._log.warning("udp_receive_errors", "UDP receive failed: %s", exc)
        time.sleep(0.01)  # an error repeating at once must not spin a core
        return False


def proc_socket_drops(sock: socket.socket) -> int | None:
    """The kernel's drop count for ``sock`` from /proc/net/udp{,6} (Linux), None if not found.

    SO_RXQ_OVFL reports drops only with the next datagram queued; after a burst that
    overflowed the buffer and then stopped, only this table shows them.
    """
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
        table = "/proc/net/udp6" if sock.family == socket.AF_INET6 else "/proc/net/udp"
        with open(table) as rows:
            next(rows)
            for row in rows:
                columns = row.split()
                if len(columns) >= 13 and columns[9] == inode:
                    return int(columns[12])
    except (OSError, ValueError, StopIteration):
        pass
    return None


class UdpWorker:
    """Reader + pipeline for one UDP socket; one decoder owns all its exporters."""

    def __init__(self, sock: socket.socket, decoder, sink: Sink, layout: DocumentLayout, *,
                 queue_size: int = 10_000, output_queue_size: int = 64, batch_lines: int = 1000,
                 flush_interval: float = 1.0, poll_interval: float = 0.25, drain_seconds: float = 1.0,
                 name: str = "udp"):
        self.stop_event = threading.Event()
        self.pipeline = Pipeline(decoder, sink, layout, inbox_size=queue_size, outbox_size=output_queue_size,
                                 batch_lines=batch_lines, flush_interval=flush_interval, name=name)
        self.reader = UdpReader(sock, self.pipeline.inbox, self.stop_event, poll_interval=poll_interval,
                                drain_seconds=drain_seconds, name=f"{name}-reader")

    def start(self) -> None:
        self.pipeline.start()
        self.reader.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop receiving, decode and write everything received; True if all finished in time."""
        deadline = time.monotonic() + timeout
        self.stop_event.set()
        self.reader.join(max(0.0, deadline - time.monotonic()))
        return self.pipeline.finish(max(0.0, deadline - time.monotonic())) and not self.reader.is_alive()

    def healthy(self) -> bool:
        return self.reader.is_alive() and self.pipeline.alive()

    def snapshot(self) -> WorkerSnapshot:
        reader = self.reader
        counters = self.pipeline.counters()
        counters.update(udp_datagrams=reader.datagrams, udp_bytes=reader.bytes, udp_queue_drops=reader.queue_drops,
                        udp_truncated_datagrams=reader.truncated, udp_receive_errors=reader.receive_errors)
        kernel_drops = max(reader.kernel_drops, proc_socket_drops(reader.sock) or 0)
        return WorkerSnapshot(counters, self.pipeline.gauges(), {"udp_kernel_drops": kernel_drops})
