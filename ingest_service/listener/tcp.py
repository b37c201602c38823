"""IPFIX over TCP and TLS (RFC 7011 10.4): one thread per connection, one decoder for all.

Framing: read the 4-byte message header, take the length from it
(``ipfix_message_length``), read the rest.  A header that is not IPFIX means the
stream lost framing: the connection is closed and counted (``tcp_framing_errors``);
other connections carry on.  Each accepted connection is its own template session
(``("tcp"|"tls", address, port, conn_id)``), closed in the decoder when the
connection ends.

Backpressure: a connection thread hands each message to the bounded inbox with a
blocking put, so a full pipeline stops it reading; TCP flow control then slows the
exporter down.  Each pause is counted (``tcp_backpressure_waits``).

TLS: with a server certificate the listener speaks only TLS (Antrea's Flow
Aggregator sends IPFIX over TLS to the collector's TCP port); with a client CA it
requires and verifies client certificates.  The handshake runs in the connection's
thread under a timeout, so a stalled client cannot hold up others.
"""
from __future__ import annotations

import itertools
import logging
import socket
import ssl
import threading
import time
from queue import Full, Queue

from ..documents import DocumentLayout
from ..ipfix.decoder import ipfix_message_length
from ..ratelog import RateLimitedLog
from ..sinks import Sink
from .pipeline import Counters, Pipeline, WorkerSnapshot
from .sockets import canonical_host

log = logging.getLogger("flow_ingest.tcp")


def server_tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


class _ConnectionEnded(Exception):
    """The peer closed (or we stopped) exactly between two messages."""


class _Truncated(Exception):
    """The stream ended inside a message."""


class _FramedReader:
    """Exact-size reads from a stream, through one buffer (few syscalls per message)."""

    CHUNK = 65536

    def __init__(self, conn: socket.socket, stop: threading.Event, drain_seconds: float):
        self.conn = conn
        self.stop = stop
        self.drain_seconds = drain_seconds
        self._buffer = bytearray()
        self._drain_deadline: float | None = None

    def read_exact(self, size: int, at_boundary: bool) -> bytes:
        buffer = self._buffer
        while len(buffer) < size:
            between_messages = at_boundary and not buffer
            if between_messages and self._drain_over():
                raise _ConnectionEnded()
            try:
                chunk = self.conn.recv(self.CHUNK)
            except TimeoutError:
                if self.stop.is_set():
                    # Stopping, and the exporter sent nothing for a poll interval: all it
                    # sent before the stop has been read.
                    raise (_ConnectionEnded if between_messages else _Truncated)() from None
                continue
            if not chunk:
                raise (_ConnectionEnded if between_messages else _Truncated)()
            buffer += chunk
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def _drain_over(self) -> bool:
        # While stopping, keep reading what is in flight, but a chatty exporter must
        # not delay the stop forever.
        if not self.stop.is_set():
            return False
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self.drain_seconds
        return time.monotonic() > self._drain_deadline


class StreamListener:
    """Accepts connections on a listening socket and feeds their messages into ``inbox``."""

    def __init__(self, sock: socket.socket, inbox: Queue, counters: Counters, stop: threading.Event, *,
                 tls: ssl.SSLContext | None = None, max_connections: int = 1024,
                 handshake_timeout: float = 10.0, poll_interval: float = 0.25, drain_seconds: float = 2.0):
        self.sock = sock
        self.inbox = inbox
        self.counters = counters
        self.stop_event = stop
        self.tls = tls
        self.transport = "tls" if tls is not None else "tcp"
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.poll_interval = poll_interval
        self.drain_seconds = drain_seconds
        self._connection_ids = itertools.count(1)
        self._connections: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._log = RateLimitedLog(log)
        self.acceptor = threading.Thread(target=self._accept_loop, name="tcp-acceptor", daemon=True)

    def start(self) -> None:
        self.acceptor.start()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def join(self, timeout: float) -> bool:
        """After the stop event: wait for the acceptor and every connection to finish."""
        deadline = time.monotonic() + timeout
        self.acceptor.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            connections = list(self._connections)
        for thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self.acceptor.is_alive() and self.open_connections() == 0

    def _accept_loop(self) -> None:
        self.sock.settimeout(self.poll_interval)
        while not self.stop_event.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self.sock.fileno() < 0:
                    return
                self.counters.add("tcp_accept_errors")
                self._log.warning("tcp_accept_errors", "accept failed: %s", exc)
                time.sleep(0.05)  # e.g. out of file descriptors: do not spin
                continue
            self._take(conn, peer)
        # Stopping: connections the kernel already completed may carry data; read them too.
        self.sock.settimeout(0.0)
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self._take(conn, peer)

    def _take(self, conn: socket.socket, peer) -> None:
        self.counters.add("tcp_connections")
        with self._lock:
            full = len(self._connections) >= self.max_connections
            if not full:
                thread = threading.Thread(target=self._serve, args=(conn, peer, next(self._connection_ids)),
                                          name=f"tcp-{peer[0]}:{peer[1]}", daemon=True)
                self._connections.add(thread)
        if full:
            self.counters.add("tcp_connections_refused")
            self._log.warning("tcp_connections_refused", "refusing %s:%s: %d connections open",
                              peer[0], peer[1], self.max_connections)
            conn.close()
            return
        thread.start()

    def _serve(self, conn: socket.socket, peer, connection_id: int) -> None:
        host, port = canonical_host(peer[0]), peer[1]
        session = (self.transport, host, port, connection_id)
        delivered = False
        try:
            if self.tls is not None:
                tls_conn = self._handshake(conn, host, port)
                if tls_conn is None:
                    return
                conn = tls_conn
            conn.settimeout(self.poll_interval)
            reader = _FramedReader(conn, self.stop_event, self.drain_seconds)
            while True:
                header = reader.read_exact(4, at_boundary=True)
                try:
                    length = ipfix_message_length(header)
                except ValueError as exc:
                    self.counters.add("tcp_framing_errors")
                    self._log.warning("tcp_framing_errors", "closing %s:%s: stream lost framing (%s)", host, port, exc)
                    return
                message = header + reader.read_exact(length - 4, at_boundary=False)
                self.counters.add("tcp_messages")
                self._deliver((message, session, time.time()))
                delivered = True
        except _ConnectionEnded:
            pass
        except _Truncated:
            self.counters.add("tcp_truncated_messages")
            self._log.warning("tcp_truncated_messages", "connection from %s:%s ended inside a message", host, port)
        except (OSError, ssl.SSLError) as exc:
            self.counters.add("tcp_read_errors")
            self._log.warning("tcp_read_errors", "connection from %s:%s failed: %s", host, port, exc)
        finally:
            conn.close()
            self.counters.add("tcp_connections_closed")
            if delivered:
                self.inbox.put((None, session, 0.0))  # its templates die with it (RFC 7011 8)
            with self._lock:
                self._connections.discard(threading.current_thread())

    def _handshake(self, conn: socket.socket, host: str, port: int) -> ssl.SSLSocket | None:
        conn.settimeout(self.handshake_timeout)
        try:
            return self.tls.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.counters.add("tls_handshake_failures")
            self._log.warning("tls_handshake_failures", "TLS handshake with %s:%s failed: %s", host, port, exc)
            return None

    def _deliver(self, item) -> None:
        try:
            self.inbox.put_nowait(item)
        except Full:
            self.counters.add("tcp_backpressure_waits")
            self.inbox.put(item)  # stop reading this connection until the pipeline catches up


class StreamWorker:
    """Listener + pipeline for the TCP/TLS socket."""

    def __init__(self, sock: socket.socket, decoder, sink: Sink, layout: DocumentLayout, *,
                 tls: ssl.SSLContext | None = None, max_connections: int = 1024, queue_size: int = 1000,
                 output_queue_size: int = 64, batch_lines: int = 1000, flush_interval: float = 1.0,
                 poll_interval: float = 0.25, drain_seconds: float = 2.0, handshake_timeout: float = 10.0,
                 name: str = "tcp"):
        self.stop_event = threading.Event()
        self.counters = Counters()
        self.pipeline = Pipeline(decoder, sink, layout, inbox_size=queue_size, outbox_size=output_queue_size,
                                 batch_lines=batch_lines, flush_interval=flush_interval, name=name)
        self.listener = StreamListener(sock, self.pipeline.inbox, self.counters, self.stop_event, tls=tls,
                                       max_connections=max_connections, handshake_timeout=handshake_timeout,
                                       poll_interval=poll_interval, drain_seconds=drain_seconds)

    def start(self) -> None:
        self.pipeline.start()
        self.listener.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop accepting, read what connections already sent, decode and write it all."""
        deadline = time.monotonic() + timeout
        self.stop_event.set()
        readers_done = self.listener.join(max(0.0, deadline - time.monotonic()))
        return self.pipeline.finish(max(0.0, deadline - time.monotonic())) and readers_done

    def healthy(self) -> bool:
        return self.listener.acceptor.is_alive() and self.pipeline.alive()

    def snapshot(self) -> WorkerSnapshot:
        counters = self.pipeline.counters()
        counters.update(self.counters.snapshot())
        gauges = self.pipeline.gauges()
        gauges["tcp_connections_open"] = self.listener.open_connections()
        return WorkerSnapshot(counters, gauges, {})
