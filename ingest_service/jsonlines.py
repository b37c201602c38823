"""Antrea's JSON records over raw sockets: one JSON object per line, on TCP and UDP.

Antrea's Flow Aggregator (go-ipfix ``SendJSONRecord``, ``recordFormat: JSON``) writes each
record as ``{"@timestamp": ..., "ipfix": {...}}`` and a newline, on a TCP connection or one
record per UDP datagram.  Every line goes through the same conversion as the HTTP API
(``jsoninput``), so the documents equal those of the same flows received as IPFIX.

* A malformed line (bad JSON, wrong types, longer than ``max_line_bytes``) is counted and
  logged (rate-limited) and skipped; the connection and every other one carry on.
* TCP backpressure: a connection whose documents find the output queue full waits, so it
  stops reading and TCP flow control slows the exporter down.  UDP cannot wait: such
  datagrams are dropped and counted.
* The document's ``host`` is the sender's address, as for IPFIX.

``run_jsonlines(config)`` runs the listener until SIGTERM/SIGINT (for a supervisor);
``JsonLinesServer`` is the same thing to embed.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .documents import DocumentLayout
from .jsoninput import DocumentBuilder, JsonRecordConverter
from .listener.pipeline import Counters, WorkerSnapshot
from .listener.sockets import canonical_host, family_of, open_tcp_socket, set_receive_buffer
from .normalize import Normalizer
from .ratelog import RateLimitedLog

log = logging.getLogger("flow_ingest.jsonlines")

JSONLINES_PORT = 4736
MAX_DATAGRAM = 65535


@dataclass(frozen=True)
class JsonLinesConfig:
    address: str = "0.0.0.0"  # like the IPFIX listeners: exporters are elsewhere in the cluster
    tcp_port: int = JSONLINES_PORT  # 0 disables TCP
    udp_port: int = JSONLINES_PORT  # 0 disables UDP
    max_line_bytes: int = 1 << 20
    max_connections: int = 1024
    udp_receive_buffer: int = 8 << 20
    queue_documents: int = 100_000  # beyond this TCP connections wait and datagrams are dropped
    flush_interval: float = 1.0
    output: str = "ndjson"  # ndjson: daily files in output_dir; -: stdout
    output_dir: str = "./data"
    sink_factory: str | Callable[[Any], Any] | None = None  # "module:function", called with this config
    layout: str = "logstash"
    target: str = "ipfix"
    netflow_target: str | None = None
    definitions: tuple[str, ...] = ()
    metrics_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR shared with the HTTP app
    shutdown_timeout: float = 10.0
    poll_interval: float = 0.25

    @property
    def document_layout(self) -> DocumentLayout:
        return DocumentLayout(target=self.target, netflow_target=self.netflow_target, type=self.target)

    def problems(self) -> list[str]:
        found = []
        if not self.tcp_port and not self.udp_port:
            found.append("both the TCP and the UDP port are 0: nothing to listen on")
        for name in ("tcp_port", "udp_port"):
            if not 0 <= getattr(self, name) <= 65535:
                found.append(f"{name} {getattr(self, name)} is not a port number")
        if self.layout not in ("logstash", "ecs"):
            found.append(f"layout must be logstash or ecs, not {self.layout!r}")
        if self.max_line_bytes < 2 or self.queue_documents < 1:
            found.append("max_line_bytes and queue_documents must be positive")
        return found


class LineSplitter:
    """Bytes of a stream -> complete lines, numbered from 1; blank lines skipped.

    A line longer than ``max_line_bytes`` is dropped (counted in ``too_long``) without
    buffering it whole: its bytes are discarded up to its newline.
    """

    def __init__(self, max_line_bytes: int):
        self.max_line_bytes = max_line_bytes
        self.line_number = 0
        self.too_long = 0
        self._partial = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        out = []
        start = 0
        limit = self.max_line_bytes
        while (end := data.find(b"\n", start)) >= 0:
            self.line_number += 1
            if self._discarding:
                self._discarding = False  # the end of a line already counted as too long
            else:
                if self._partial:
                    self._partial += data[start:end]
                    line = bytes(self._partial)
                    self._partial.clear()
                else:
                    line = data[start:end]
                if len(line) > limit:
                    self.too_long += 1
                elif line.strip():
                    out.append((self.line_number, line))
            start = end + 1
        if start < len(data) and not self._discarding:
            self._partial += data[start:]
            if len(self._partial) > limit:
                self._partial.clear()
                self._discarding = True
                self.too_long += 1
        return out

    def finish(self) -> list[tuple[int, bytes]]:
        """The last line, if the stream ended without a newline."""
        if self._discarding or not self._partial.strip():
            self._partial.clear()
            return []
        self.line_number += 1
        line = bytes(self._partial)
        self._partial.clear()
        return [(self.line_number, line)]


class JsonLinesServer:
    """TCP acceptor + a thread per connection, a UDP reader, one writer thread for the sink."""

    def __init__(self, config: JsonLinesConfig, *, sink=None, tcp_socket: socket.socket | None = None,
                 udp_socket: socket.socket | None = None, registry=None):
        from .ipfix.registry import default_registry

        problems = config.problems() if tcp_socket is None and udp_socket is None else []
        if problems:
            raise ValueError("; ".join(problems))
        self.config = config
        registry = registry if registry is not None else default_registry(config.definitions)
        converter = JsonRecordConverter(registry, config.document_layout)
        self.builder = DocumentBuilder(converter, Normalizer(config.layout, config.document_layout), max_errors=1)
        self._sink = sink
        self.tcp_socket = tcp_socket
        self.udp_socket = udp_socket
        self._own_sockets = tcp_socket is None and udp_socket is None
        self.stop_event = threading.Event()
        self.counters = Counters()
        self.writer = None
        self._connections: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._log = RateLimitedLog(log)
        self._metrics = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        from .web.health import ingest_metrics
        from .web.ingest import DocumentWriter

        self._metrics = ingest_metrics()
        if self._own_sockets:
            self._open_sockets()
        if self._sink is None:
            from .web.app import build_sink

            self._sink = build_sink(self.config)
        self.writer = DocumentWriter(self._sink, max_documents=self.config.queue_documents,
                                     flush_interval=self.config.flush_interval, input_name="jsonlines",
                                     name="jsonlines-writer")
        self.writer.start()
        if self.tcp_socket is not None:
            self._threads.append(threading.Thread(target=self._accept_loop, name="jsonlines-acceptor", daemon=True))
        if self.udp_socket is not None:
            self._threads.append(threading.Thread(target=self._udp_loop, name="jsonlines-udp", daemon=True))
        for thread in self._threads:
            thread.start()

    def _open_sockets(self) -> None:
        config = self.config
        try:
            # UDP first: once TCP accepts connections, both are ready.
            if config.udp_port:
                sock = socket.socket(family_of(config.address), socket.SOCK_DGRAM)
                self.udp_socket = sock
                if sock.family == socket.AF_INET6 and config.address in ("::", ""):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                set_receive_buffer(sock, config.udp_receive_buffer)
                sock.bind((config.address, config.udp_port))
                log.info("JSON lines: listening on udp %s:%d", config.address, config.udp_port)
            if config.tcp_port:
                self.tcp_socket = open_tcp_socket(config.address, config.tcp_port)
                log.info("JSON lines: listening on tcp %s:%d", config.address, config.tcp_port)
        except BaseException:
            self._close_sockets()
            raise

    def _close_sockets(self) -> None:
        for sock in (self.tcp_socket, self.udp_socket):
            if sock is not None:
                sock.close()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop reading (taking what senders already sent), write and flush it all."""
        deadline = time.monotonic() + timeout
        self.stop_event.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            connections = list(self._connections)
        for thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        readers_done = not any(t.is_alive() for t in (*self._threads, *connections))
        written = self.writer.stop(max(0.0, deadline - time.monotonic())) if self.writer else True
        if self._own_sockets:
            self._close_sockets()
        return readers_done and written

    def healthy(self) -> bool:
        return all(t.is_alive() for t in self._threads) and self.writer is not None and self.writer.alive()

    def snapshot(self) -> WorkerSnapshot:
        """Counters and gauges, named ``jsonlines_*``: this server can be a worker of
        ``service.Supervisor`` (start/stop/healthy/snapshot), its counters merged into the
        stats file beside the IPFIX ones."""
        counters = self.counters.snapshot()
        if self.writer is not None:
            counters.update(self.writer.counters())
        with self._lock:
            open_connections = len(self._connections)
        gauges = {"queue_documents": self.writer.depth if self.writer is not None else 0,
                  "tcp_connections_open": open_connections}
        return WorkerSnapshot({f"jsonlines_{k}": v for k, v in counters.items()},
                              {f"jsonlines_{k}": v for k, v in gauges.items()}, {})

    # -- TCP ------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        sock = self.tcp_socket
        sock.settimeout(self.config.poll_interval)
        while not self.stop_event.is_set():
            try:
                conn, peer = sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if sock.fileno() < 0:
                    return
                self.counters.add("tcp_accept_errors")
                self._log.warning("accept", "JSON lines: accept failed: %s", exc)
                time.sleep(0.05)
                continue
            self._take(conn, peer)

    def _take(self, conn: socket.socket, peer) -> None:
        self.counters.add("tcp_connections")
        self._metrics.jsonlines_connections.inc()
        with self._lock:
            full = len(self._connections) >= self.config.max_connections
            if not full:
                thread = threading.Thread(target=self._serve, args=(conn, peer), daemon=True,
                                          name=f"jsonlines-{peer[0]}:{peer[1]}")
                self._connections.add(thread)
        if full:
            self.counters.add("tcp_connections_refused")
            self._log.warning("refused", "JSON lines: refusing %s:%s, %d connections open", peer[0], peer[1],
                              self.config.max_connections)
            conn.close()
            return
        thread.start()

    def _serve(self, conn: socket.socket, peer) -> None:
        host, port = canonical_host(peer[0]), peer[1]
        splitter = LineSplitter(self.config.max_line_bytes)
        rejected_long = 0
        try:
            conn.settimeout(self.config.poll_interval)
            while True:
                try:
                    data = conn.recv(1 << 18)
                except TimeoutError:
                    if self.stop_event.is_set():
                        break  # stopping, and the sender has been quiet for a poll interval
                    continue
                if not data:
                    break
                self._ingest(splitter.feed(data), host, port, "tcp")
                if splitter.too_long != rejected_long:
                    self._too_long(splitter.too_long - rejected_long, host, port, "tcp")
                    rejected_long = splitter.too_long
            self._ingest(splitter.finish(), host, port, "tcp")
        except OSError as exc:
            self.counters.add("tcp_read_errors")
            self._log.warning("read", "JSON lines: connection from %s:%s failed: %s", host, port, exc)
        finally:
            conn.close()
            with self._lock:
                self._connections.discard(threading.current_thread())

    # -- UDP ------------------------------------------------------------------------------------

    def _udp_loop(self) -> None:
        sock = self.udp_socket
        sock.settimeout(self.config.poll_interval)
        while not self.stop_event.is_set():
            try:
                data, peer = sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError as exc:
                if sock.fileno() < 0:
                    return
                self.counters.add("udp_receive_errors")
                self._log.warning("udp_receive", "JSON lines: UDP receive failed: %s", exc)
                time.sleep(0.01)
                continue
            self._datagram(data, peer)
        # Stopping: take what already sits in the socket buffer.
        sock.settimeout(0.0)
        while True:
            try:
                data, peer = sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                return
            self._datagram(data, peer)

    def _datagram(self, data: bytes, peer) -> None:
        self.counters.add("udp_datagrams")
        host, port = canonical_host(peer[0]), peer[1]
        splitter = LineSplitter(self.config.max_line_bytes)
        lines = splitter.feed(data) + splitter.finish()  # a datagram ends its last line
        if splitter.too_long:
            self._too_long(splitter.too_long, host, port, "udp")
        self._ingest(lines, host, port, "udp")

    # -- both -----------------------------------------------------------------------------------

    def _too_long(self, count: int, host: str, port: int, transport: str) -> None:
        label = f"jsonlines_{transport}"
        self._metrics.records_received.labels(label).inc(count)
        self._metrics.records_rejected.labels(label).inc(count)
        self.counters.add(f"{transport}_lines_rejected", count)
        self._log.warning(f"{transport}_too_long", "JSON lines: skipped %d line(s) longer than %d bytes from %s:%s",
                          count, self.config.max_line_bytes, host, port)

    def _ingest(self, lines: list[tuple[int, bytes]], host: str, port: int, transport: str) -> None:
        if not lines:
            return
        label = f"jsonlines_{transport}"
        metrics = self._metrics
        outcome = self.builder.from_lines(lines, host=host)
        metrics.records_received.labels(label).inc(len(lines))
        self.counters.add(f"{transport}_lines", len(lines))
        if outcome.rejected:
            metrics.records_rejected.labels(label).inc(outcome.rejected)
            self.counters.add(f"{transport}_lines_rejected", outcome.rejected)
            first = outcome.errors[0]
            self._log.warning(f"{transport}_rejected", "JSON lines: rejected %d line(s) from %s:%s, e.g. line %d: "
                              "%s%s", outcome.rejected, host, port, first.position,
                              f"{first.field}: " if first.field else "", first.reason)
        if not outcome.lines:
            return
        from .web.ingest import QueueFull, WriterStopped

        try:
            if transport == "tcp":
                self.writer.submit(outcome.lines, timeout=None, on_wait=self._backpressure)
            else:
                self.writer.submit(outcome.lines, timeout=0)
        except QueueFull:
            self.counters.add("udp_queue_drops")
            self.counters.add("documents_dropped", outcome.accepted)
            metrics.jsonlines_udp_drops.inc()
            self._log.warning("udp_queue_drops", "JSON lines: output queue full, dropping datagrams")
            return
        except WriterStopped:
            self.counters.add("documents_dropped", outcome.accepted)
            return
        metrics.records_accepted.labels(label).inc(outcome.accepted)

    def _backpressure(self) -> None:
        self.counters.add("tcp_backpressure_waits")
        self._metrics.jsonlines_backpressure_waits.inc()


def run_jsonlines(config: JsonLinesConfig) -> int:
    """Run the JSON-lines listener until SIGTERM/SIGINT; the exit code (for a supervisor).

    Call it in its own process (it installs signal handlers when in the main thread).
    """
    if config.metrics_dir:
        os.makedirs(config.metrics_dir, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = config.metrics_dir
    server = JsonLinesServer(config)
    try:
        server.start()
    except OSError as exc:
        log.error("JSON lines: cannot listen: %s", exc)
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    code = 0
    while not stop.wait(1.0):
        if not server.healthy():
            log.error("JSON lines: a listener thread died; exiting to be restarted")
            code = 3
            break
    if not server.stop(config.shutdown_timeout):
        log.error("JSON lines: could not drain within %.1fs; queued documents were lost", config.shutdown_timeout)
        code = code or 1
    log.info("JSON lines stopped: %s", server.snapshot().counters)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest_service.jsonlines",
                                     description="Antrea JSON records (one per line) over TCP and UDP -> NDJSON files")
    parser.add_argument("--address", default=JsonLinesConfig.address)
    parser.add_argument("--tcp-port", type=int, default=JSONLINES_PORT, help="0 disables TCP")
    parser.add_argument("--udp-port", type=int, default=JSONLINES_PORT, help="0 disables UDP")
    parser.add_argument("--output", choices=("ndjson", "-"), default="ndjson")
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--layout", choices=("logstash", "ecs"), default="logstash")
    parser.add_argument("--metrics-dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = JsonLinesConfig(address=args.address, tcp_port=args.tcp_port, udp_port=args.udp_port,
                             output=args.output, output_dir=args.data_dir, layout=args.layout,
                             metrics_dir=args.metrics_dir)
    problems = config.problems()
    if problems:
        for problem in problems:
            print(f"jsonlines: {problem}", file=sys.stderr)
        return 2
    return run_jsonlines(config)


if __name__ == "__main__":
    sys.exit(main())
