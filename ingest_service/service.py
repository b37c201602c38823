"""``flow-ingest serve``: listeners, workers and their supervisor.

Process model::

    supervisor (this process: binds the sockets, restarts workers, merges counters)
     ├─ udp-0 … udp-N-1   one per SO_REUSEPORT socket: reader -> decode -> writer threads
     └─ tcp               acceptor + a thread per connection -> decode -> writer threads

Workers are forked, inherit their socket and report counters to the supervisor over a
pipe every second.  The supervisor keeps the sockets open while a worker is replaced,
so nothing is refused meanwhile and each exporter keeps hashing to the same UDP
worker.  SIGTERM/SIGINT: each worker stops reading, decodes what is queued, flushes
its sink and exits; the supervisor then exits 0.

Defaults: UDP and TCP both on 0.0.0.0:4739 (the IANA IPFIX port), so exporters on
other hosts reach a freshly started collector; TLS replaces plain TCP on that port
when --tls-cert/--tls-key are given (Antrea's Flow Aggregator sends TLS to the
collector's TCP port).  With --udp-workers N the kernel's SO_REUSEPORT hash of
(source address, source port, destination address, destination port) keeps every
exporter on one worker, which therefore holds all of that exporter's templates.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import multiprocessing.connection
import os
import dataclasses
import fcntl
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .documents import DocumentLayout
from .listener.pipeline import WorkerSnapshot
from .ratelog import RateLimitedLog

log = logging.getLogger("flow_ingest.serve")

IPFIX_PORT = 4739  # IANA "ipfix" (udp, tcp, sctp)
REPORT_INTERVAL = 1.0  # seconds between a worker's counter reports (and stats file writes)
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Always present in the stats file (zero until something happens), so readers can rely on them.
STABLE_KEYS = (
    "messages", "records", "documents_written", "documents_lost", "sink_errors",
    "udp_datagrams", "udp_queue_drops", "udp_kernel_drops",
    "tcp_connections", "tcp_messages", "tcp_framing_errors", "tcp_backpressure_waits",
    "tls_handshake_failures", "worker_restarts",
)


def _byte_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    clean = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if clean and clean[-1] in units:
            return int(float(clean[:-1]) * units[clean[-1]])
        return int(clean)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte size: {text!r} (e.g. 8388608, 8M, 8MiB)") from None


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value
    return parse


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    udp = parser.add_argument_group("UDP")
    udp.add_argument("--udp-address", default="0.0.0.0", help="address to receive IPFIX/NetFlow datagrams on; "
                     "'::' for IPv6 and IPv4 (default: 0.0.0.0)")
    udp.add_argument("--udp-port", type=int, default=IPFIX_PORT, help=f"0 disables UDP (default: {IPFIX_PORT})")
    udp.add_argument("--udp-workers", type=_positive(int), default=1,
                     help="worker processes sharing the UDP port through SO_REUSEPORT; the kernel hashes "
                          "each exporter (source address and port) to one of them (default: 1)")
    udp.add_argument("--udp-receive-buffer", type=_byte_size, default=8 << 20, metavar="BYTES",
                     help="SO_RCVBUF to request per socket; the kernel caps it at net.core.rmem_max "
                          "unless we may override it (default: 8MiB)")
    udp.add_argument("--udp-queue", type=_positive(int), default=20_000, metavar="DATAGRAMS",
                     help="datagrams queued per worker between reader and decoder; beyond that they are "
                          "dropped and counted (default: 20000)")

    tcp = parser.add_argument_group("TCP and TLS")
    tcp.add_argument("--tcp-address", default="0.0.0.0", help="address to accept IPFIX-over-TCP/TLS on (default: 0.0.0.0)")
    tcp.add_argument("--tcp-port", type=int, default=IPFIX_PORT, help=f"0 disables TCP/TLS (default: {IPFIX_PORT})")
    tcp.add_argument("--tcp-max-connections", type=_positive(int), default=1024, help="(default: 1024)")
    tcp.add_argument("--tcp-queue", type=_positive(int), default=2000, metavar="MESSAGES",
                     help="messages queued between connections and decoder; when full, connections "
                          "pause reading (backpressure) (default: 2000)")
    tcp.add_argument("--tls-cert", metavar="PEM", help="server certificate (chain): the TCP port then speaks TLS "
                     "only, as Antrea's Flow Aggregator expects")
    tcp.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    tcp.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mTLS)")

    decode = parser.add_argument_group("decoding")
    decode.add_argument("--template-lifetime", type=_positive(float), default=1800.0, metavar="SECONDS",
                        help="UDP templates not refreshed for this long are forgotten (default: 1800)")

    out = parser.add_argument_group("output")
    out.add_argument("--output", choices=("ndjson", "-", "engine"), default=None,
                     help="ndjson: daily files DATA_DIR/flow-YYYY.MM.DD.ndjson; -: NDJSON on stdout; engine: "
                          "bulk-index into Elasticsearch/OpenSearch (default: engine when --url is given, else ndjson)")
    out.add_argument("--data-dir", default="./data", help="directory for the NDJSON files (default: ./data)")
    out.add_argument("--flush-interval", type=_positive(float), default=1.0, metavar="SECONDS",
                     help="longest time a document waits in memory before it is written (default: 1)")
    out.add_argument("--output-queue", type=_positive(int), default=64, metavar="BATCHES",
                     help="batches of documents queued per worker for the output (default: 64)")

    http = parser.add_argument_group("HTTP JSON ingest (Flask under gunicorn)")
    http.add_argument("--http-address", default="127.0.0.1",
                      help="address of the HTTP API; anything but loopback requires --http-token (default: 127.0.0.1)")
    http.add_argument("--http-port", type=int, default=8080, help="0 disables the HTTP API (default: 8080)")
    http.add_argument("--http-workers", type=_positive(int), default=2, help="gunicorn worker processes (default: 2)")
    http.add_argument("--http-token", action="append", default=None, metavar="TOKEN",
                      help="bearer token allowed to push flows and read /metrics (repeatable)")
    http.add_argument("--http-read-token", action="append", default=None, metavar="TOKEN",
                      help="bearer token allowed only to read /metrics (repeatable)")
    http.add_argument("--http-tls-cert", metavar="PEM", help="serve the HTTP API over HTTPS with this certificate")
    http.add_argument("--http-tls-key", metavar="PEM", help="private key of --http-tls-cert")
    http.add_argument("--http-max-body-bytes", type=_byte_size, default=10 << 20, metavar="BYTES",
                      help="largest request body, after gzip decompression too (default: 10MiB)")
    http.add_argument("--http-max-records", type=_positive(int), default=10_000,
                      help="most records per request (default: 10000)")

    jsonl = parser.add_argument_group("JSON lines over raw sockets (Antrea recordFormat: JSON)")
    jsonl.add_argument("--jsonlines-address", default="0.0.0.0", help="(default: 0.0.0.0)")
    jsonl.add_argument("--jsonlines-tcp-port", type=int, default=4736, help="0 disables it (default: 4736)")
    jsonl.add_argument("--jsonlines-udp-port", type=int, default=4736, help="0 disables it (default: 4736)")

    bulk = parser.add_argument_group("engine output (bulk writer)")
    bulk.add_argument("--setup", action="store_true",
                      help="run `flow-ingest setup` (templates, pipeline, lifecycle, target) before serving")
    bulk.add_argument("--spool-dir", default=None, metavar="DIR",
                      help="where batches wait on disk while the engine is unreachable (default: DATA_DIR/spool)")
    bulk.add_argument("--spool-max-bytes", type=_byte_size, default=1 << 30, metavar="BYTES",
                      help="disk the spool may use per worker; when full, TCP reading pauses and UDP drops (default: 1GiB)")
    bulk.add_argument("--deadletter", default=None, metavar="PATH",
                      help="documents the engine refuses for good go here with the reason (default: DATA_DIR/deadletter.ndjson)")
    bulk.add_argument("--document-ids", action="store_true",
                      help="deterministic _id per document (hash) so a replay or retry never duplicates")
    bulk.add_argument("--bulk-docs", type=_positive(int), default=1000, help="documents per bulk request (default: 1000)")
    bulk.add_argument("--bulk-in-flight", type=_positive(int), default=2, help="bulk requests in flight per worker (default: 2)")

    ops = parser.add_argument_group("operation")
    ops.add_argument("--stats-file", metavar="PATH", help="write all workers' merged counters here as JSON every second")
    ops.add_argument("--stats-interval", type=_positive(float), default=60.0, metavar="SECONDS",
                     help="log the counters at INFO this often (default: 60)")
    ops.add_argument("--shutdown-timeout", type=_positive(float), default=10.0, metavar="SECONDS",
                     help="on SIGTERM/SIGINT, how long workers may take to drain before they are killed (default: 10)")


@dataclass(frozen=True)
class ServeConfig:
    udp_address: str = "0.0.0.0"
    udp_port: int = IPFIX_PORT
    udp_workers: int = 1
    udp_receive_buffer: int = 8 << 20
    udp_queue: int = 20_000
    tcp_address: str = "0.0.0.0"
    tcp_port: int = IPFIX_PORT
    tcp_max_connections: int = 1024
    tcp_queue: int = 2000
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    template_lifetime: float = 1800.0
    output: str | None = None
    data_dir: str = "./data"
    flush_interval: float = 1.0
    output_queue: int = 64
    stats_file: str | None = None
    stats_interval: float = 60.0
    shutdown_timeout: float = 10.0
    layout: DocumentLayout = field(default_factory=DocumentLayout)
    definitions: tuple[str, ...] = ()
    schema_layout: str = "logstash"  # logstash (ipfix.*) or ecs
    # engine output
    engine: object = None  # EngineConfig, when --url is given
    target: object = None  # schema.render.TargetConfig
    setup: bool = False
    spool_dir: str | None = None
    spool_max_bytes: int = 1 << 30
    deadletter: str | None = None
    document_ids: bool = False
    bulk_docs: int = 1000
    bulk_in_flight: int = 2
    # HTTP API and JSON lines
    http_address: str = "127.0.0.1"
    http_port: int = 8080
    http_workers: int = 2
    http_token: tuple | None = None
    http_read_token: tuple | None = None
    http_tls_cert: str | None = None
    http_tls_key: str | None = None
    http_max_body_bytes: int = 10 << 20
    http_max_records: int = 10_000
    jsonlines_address: str = "0.0.0.0"
    jsonlines_tcp_port: int = 4736
    jsonlines_udp_port: int = 4736

    @classmethod
    def from_args(cls, args) -> "ServeConfig":
        computed = ("layout", "definitions", "schema_layout", "engine", "target", "output")
        names = [f for f in cls.__dataclass_fields__ if f not in computed]
        from .cli import document_layout, engine_config, target_config

        engine = engine_config(args) if getattr(args, "url", None) else None
        output = args.output or ("engine" if engine else "ndjson")
        layout = document_layout(args)  # the same as `flow-ingest decode`
        return cls(**{n: getattr(args, n) for n in names}, layout=layout, definitions=tuple(args.definitions),
                   schema_layout=getattr(args, "layout", None) or "logstash", engine=engine,
                   target=target_config(args), output=output)

    def problems(self) -> list[str]:
        found = []
        if not any((self.udp_port, self.tcp_port, self.http_port, self.jsonlines_tcp_port, self.jsonlines_udp_port)):
            found.append("every port is 0: nothing to listen on")
        if bool(self.http_tls_cert) != bool(self.http_tls_key):
            found.append("--http-tls-cert and --http-tls-key go together")
        loopback = self.http_address in ("127.0.0.1", "::1", "localhost")
        if self.http_port and not loopback and not self.http_token:
            found.append(f"--http-address {self.http_address} is not loopback: --http-token is required")
        for name in ("udp_port", "tcp_port", "http_port", "jsonlines_tcp_port", "jsonlines_udp_port"):
            if not 0 <= getattr(self, name) <= 65535:
                found.append(f"--{name.replace('_', '-')} {getattr(self, name)} is not a port number")
        if bool(self.tls_cert) != bool(self.tls_key):
            found.append("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            found.append("--tls-client-ca needs --tls-cert and --tls-key")
        if self.tls_cert and not self.tcp_port:
            found.append("TLS is served on --tcp-port, which is 0")
        if self.output == "engine" and self.engine is None:
            found.append("--output engine needs --url (or FLOW_INGEST_URL)")
        if self.setup and self.engine is None:
            found.append("--setup needs --url")
        return found

    @property
    def worker_drain_timeout(self) -> float:
        # Workers get a little less than the supervisor waits, so they finish first.
        return max(1.0, self.shutdown_timeout - 1.0)


# -- counters ------------------------------------------------------------------------


class StatsBook:
    """Merges the workers' reports into one set of totals.

    Counters of a worker that died are kept (``retire``) so totals never go back.
    Cumulative values (kernel counters of a socket, which outlives its worker) are
    taken as the highest value reported per worker slot instead of summed over lives.
    """

    def __init__(self):
        self._retired: Counter = Counter()
        self._current: dict[str, WorkerSnapshot] = {}
        self._cumulative: dict[str, dict] = {}
        self.own: Counter = Counter()  # the supervisor's own counters (worker_restarts)

    def update(self, slot: str, snapshot: WorkerSnapshot) -> None:
        self._current[slot] = snapshot
        best = self._cumulative.setdefault(slot, {})
        for key, value in snapshot.cumulative.items():
            best[key] = max(best.get(key, 0), value)

    def retire(self, slot: str) -> None:
        snapshot = self._current.pop(slot, None)
        if snapshot is not None:
            self._retired.update(snapshot.counters)

    def merged(self) -> dict:
        totals: Counter = Counter({key: 0 for key in STABLE_KEYS})
        totals.update(self._retired)
        gauges: Counter = Counter()
        for snapshot in self._current.values():
            totals.update(snapshot.counters)
            gauges.update(snapshot.gauges)
        for values in self._cumulative.values():
            totals.update(values)
        totals.update(self.own)
        return {**dict(sorted(totals.items())), **dict(sorted(gauges.items()))}


def format_counters(counters: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in counters.items() if value) or "(all zero)"


def write_stats_file(path: str, counters: dict) -> None:
    # Readers must never see a half-written file: write aside, then rename over it.
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(orjson.dumps(counters, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(temporary, target)


# -- workers (run in the forked children) --------------------------------------------


def bulk_index_of(target) -> str:
    """What the bulk writer writes to for a target mode (daily: Logstash's flow-%{+YYYY.MM.dd})."""
    return "flow-%{+YYYY.MM.dd}" if target.mode == "daily" else target.name


def _make_sink(config: ServeConfig, stdout_lock, name: str = "worker"):
    from .sinks.ndjson import open_ndjson_sink

    if config.output == "engine":
        from .bulk.writer import BulkWriter, BulkWriterConfig

        data = Path(config.data_dir)
        writer_config = BulkWriterConfig(
            index=bulk_index_of(config.target),
            op_type="create",
            pipeline="_none",  # documents are normalized here; the default pipeline is for other clients
            document_ids=config.document_ids,
            batch_docs=config.bulk_docs,
            in_flight=config.bulk_in_flight,
            spool_dir=str(Path(config.spool_dir or data / "spool") / name),  # one spool per worker slot
            spool_max_bytes=config.spool_max_bytes,
            deadletter_path=config.deadletter or str(data / "deadletter.ndjson"),
            flush_waits=False,  # the writer stage flushes on a timer; close() still waits
        )
        return BulkWriter(config.engine, writer_config)
    return open_ndjson_sink(config.output, config.data_dir, stdout_lock)


SERVE_SINK_ENV = "FLOW_INGEST_SERVE_SINK"  # how gunicorn workers learn the engine output settings


def sink_settings_json(config: ServeConfig) -> str:
    engine = dataclasses.asdict(config.engine) if config.engine is not None else None
    return orjson.dumps({
        "engine": engine, "target": dataclasses.asdict(config.target), "data_dir": config.data_dir,
        "spool_dir": config.spool_dir, "spool_max_bytes": config.spool_max_bytes, "deadletter": config.deadletter,
        "document_ids": config.document_ids, "bulk_docs": config.bulk_docs, "bulk_in_flight": config.bulk_in_flight,
    }).decode()


_slot_locks: list[int] = []  # held for the life of the process


def _claim_slot(directory: Path, prefix: str) -> str:
    """A spool directory name no other live process of this service holds (gunicorn workers
    share one factory; each needs its own spool, and a restarted worker reuses a free one)."""
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(1024):
        fd = os.open(directory / f".{prefix}-{index}.slot", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _slot_locks.append(fd)
        return f"{prefix}-{index}"
    raise RuntimeError(f"no free spool slot under {directory}")


def engine_sink_from_env(web_config=None):
    """sink_factory for the gunicorn workers: a bulk writer built from SERVE_SINK_ENV."""
    from .engines.client import EngineConfig
    from .schema.render import TargetConfig

    settings = orjson.loads(os.environ[SERVE_SINK_ENV])
    engine = settings.pop("engine")
    engine["hosts"] = tuple(engine["hosts"])
    config = ServeConfig(output="engine", engine=EngineConfig(**engine), target=TargetConfig(**settings.pop("target")),
                         **settings)
    spool_root = Path(config.spool_dir or Path(config.data_dir) / "spool")
    return _make_sink(config, None, _claim_slot(spool_root, "http"))


def _new_decoder(config: ServeConfig, registry):
    from .ipfix.decoder import DecoderConfig, FlowDecoder

    return FlowDecoder(registry, DecoderConfig(template_lifetime=config.template_lifetime))


def _new_normalizer(config: ServeConfig):
    from .normalize import Normalizer

    # one per worker process: the throughput state belongs to the exporters that worker owns
    return Normalizer(config.schema_layout, config.layout)


def build_udp_worker(config: ServeConfig, registry, sock, stdout_lock=None, name: str = "udp"):
    from .listener.udp import UdpWorker

    return UdpWorker(sock, _new_decoder(config, registry), _make_sink(config, stdout_lock, name), _new_normalizer(config),
                     queue_size=config.udp_queue, output_queue_size=config.output_queue,
                     flush_interval=config.flush_interval, name=name)


def build_stream_worker(config: ServeConfig, registry, sock, tls, stdout_lock=None, name: str = "tcp"):
    from .listener.tcp import StreamWorker

    return StreamWorker(sock, _new_decoder(config, registry), _make_sink(config, stdout_lock, name), _new_normalizer(config),
                        tls=tls, max_connections=config.tcp_max_connections, queue_size=config.tcp_queue,
                        output_queue_size=config.output_queue, flush_interval=config.flush_interval, name=name)


def _send(conn, snapshot: WorkerSnapshot) -> bool:
    try:
        conn.send(snapshot)
        return True
    except (OSError, EOFError, ValueError):
        return False


def _worker_main(name: str, build, conn, config: ServeConfig) -> None:
    """Body of a worker process: run the worker, report counters, stop on a signal.

    The stop signals arrive blocked (the supervisor forks with them blocked) and stay
    so, in every thread: they are taken synchronously here, with no handler to race.
    """
    worker = build()
    worker.start()
    supervisor = os.getppid()
    while signal.sigtimedwait(_STOP_SIGNALS, REPORT_INTERVAL) is None:
        if not _send(conn, worker.snapshot()) or os.getppid() != supervisor:
            log.warning("%s: supervisor gone, stopping", name)
            break
        if not worker.healthy():
            log.error("%s: a worker thread died; exiting to be restarted", name)
            sys.exit(3)
    finished = worker.stop(config.worker_drain_timeout)
    _send(conn, worker.snapshot())
    if not finished:
        log.error("%s: could not drain in %.1fs; queued documents were lost", name, config.worker_drain_timeout)
        sys.exit(1)


# -- supervisor ----------------------------------------------------------------------


@dataclass
class _Slot:
    name: str
    build: object  # () -> worker, run in the child
    process: multiprocessing.process.BaseProcess | None = None
    conn: multiprocessing.connection.Connection | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    start_after: float = 0.0  # monotonic time of the next (re)start


@dataclass
class _External:
    """A process we start with Popen (gunicorn): restarted when it dies, stopped with SIGTERM."""

    name: str
    start: object  # () -> subprocess.Popen
    process: object = None
    started_at: float = 0.0
    quick_failures: int = 0
    start_after: float = 0.0


def _schedule_restart(child, now: float) -> float:
    """Restart a dead child (a _Slot or an _External) at once, unless it keeps dying young:
    then back off, up to 10 s. Sets ``child.start_after``; returns the delay."""
    child.quick_failures = child.quick_failures + 1 if now - child.started_at < 10.0 else 0
    delay = 0.0 if child.quick_failures <= 1 else min(10.0, 0.5 * 2 ** (child.quick_failures - 2))
    child.start_after = now + delay
    return delay


class Supervisor:
    def __init__(self, config: ServeConfig, slots: list[_Slot], context=None, externals: list[_External] | None = None):
        self.config = config
        self.slots = slots
        self.externals = externals or []
        self.context = context or multiprocessing.get_context("fork")
        self.book = StatsBook()
        self.stop_signal = 0
        self._log = RateLimitedLog(log)

    def run(self) -> int:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        self._write_stats()  # its existence tells watchers that the sockets are bound
        for slot in self.slots:
            self._start(slot)  # even if a stop comes at once: what was received gets drained
        for external in self.externals:
            self._start_external(external)
        next_log = time.monotonic() + self.config.stats_interval
        next_stats = time.monotonic() + REPORT_INTERVAL
        while not self.stop_signal:
            now = time.monotonic()
            for slot in self.slots:
                if slot.process is None and now >= slot.start_after:
                    self._start(slot)
            self._collect(timeout=0.2)
            self._reap()
            self._watch_externals()
            now = time.monotonic()
            if now >= next_stats:
                self._write_stats()
                next_stats = now + REPORT_INTERVAL
            if now >= next_log:
                log.info("stats: %s", format_counters(self.book.merged()))
                next_log = now + self.config.stats_interval
        log.info("received %s: stopping", signal.Signals(self.stop_signal).name)
        return self._shutdown()

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = self.stop_signal or signum  # only a flag: the loop notices it

    def _start(self, slot: _Slot) -> None:
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(target=_worker_main, args=(slot.name, slot.build, sender, self.config),
                                       name=f"flow-ingest-{slot.name}", daemon=False)
        # The child inherits this mask: it takes the stop signals with sigtimedwait.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        sender.close()
        slot.process, slot.conn, slot.started_at = process, receiver, time.monotonic()
        log.debug("started %s (pid %d)", slot.name, process.pid)

    def _collect(self, timeout: float) -> None:
        live = [s for s in self.slots if s.process is not None]
        waitables = [s.conn for s in live] + [s.process.sentinel for s in live]
        if not waitables:
            time.sleep(timeout)
            return
        multiprocessing.connection.wait(waitables, timeout)
        for slot in live:
            self._read_reports(slot)

    def _read_reports(self, slot: _Slot) -> None:
        try:
            while slot.conn.poll():
                self.book.update(slot.name, slot.conn.recv())
        except (EOFError, OSError):
            pass  # the worker is gone; _reap notices

    def _reap(self) -> None:
        for slot in self.slots:
            process = slot.process
            if process is None or process.is_alive():
                continue
            process.join()
            self._read_reports(slot)
            slot.conn.close()
            slot.process = slot.conn = None
            self.book.retire(slot.name)
            self.book.own["worker_restarts"] += 1
            delay = _schedule_restart(slot, time.monotonic())
            log.error("worker %s (pid %d) died with %s; restarting it%s", slot.name, process.pid,
                      _exit_text(process.exitcode), f" in {delay:.1f}s" if delay else "")

    def _start_external(self, external: _External) -> None:
        external.process = external.start()
        external.started_at = time.monotonic()

    def _watch_externals(self) -> None:
        now = time.monotonic()
        for external in self.externals:
            if external.process is None:
                if now >= external.start_after:
                    self._start_external(external)
                continue
            code = external.process.poll()
            if code is None:
                continue
            self.book.own["worker_restarts"] += 1
            delay = _schedule_restart(external, now)
            pid = external.process.pid
            external.process = None
            log.error("%s (pid %d) ended with %s; restarting it%s", external.name, pid,
                      _exit_text(code), f" in {delay:.1f}s" if delay else "")

    def _shutdown(self) -> int:
        for external in self.externals:
            if external.process is not None and external.process.poll() is None:
                external.process.send_signal(signal.SIGTERM)
        live = [s for s in self.slots if s.process is not None]
        for slot in live:
            try:
                os.kill(slot.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.config.shutdown_timeout
        while any(s.process.is_alive() for s in live) and time.monotonic() < deadline:
            self._collect(timeout=0.1)
        clean = True
        for slot in live:
            if slot.process.is_alive():
                log.error("worker %s did not stop within %.1fs: killing it", slot.name, self.config.shutdown_timeout)
                slot.process.kill()
            slot.process.join()
            self._read_reports(slot)
            slot.conn.close()
            if slot.process.exitcode != 0:
                clean = False
                log.error("worker %s ended with %s", slot.name, _exit_text(slot.process.exitcode))
        for external in self.externals:
            if external.process is None:
                continue
            try:
                code = external.process.wait(max(1.0, deadline - time.monotonic()) + 20.0)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop: killing it", external.name)
                external.process.kill()
                code = external.process.wait()
            if code != 0:
                clean = False
                log.error("%s ended with %s", external.name, _exit_text(code))
        self._write_stats()
        log.info("stopped; final stats: %s", format_counters(self.book.merged()))
        return 0 if clean else 1

    def _write_stats(self) -> None:
        if not self.config.stats_file:
            return
        try:
            write_stats_file(self.config.stats_file, self.book.merged())
        except OSError as exc:
            self._log.warning("stats_file", "cannot write %s: %s", self.config.stats_file, exc)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def run_serve(args) -> int:
    from .ipfix.registry import default_registry
    from .listener.sockets import open_tcp_socket, open_udp_sockets
    from .listener.tcp import server_tls_context

    config = ServeConfig.from_args(args)
    problems = config.problems()
    for problem in problems:
        print(f"flow-ingest serve: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:
        registry = default_registry(config.definitions)
        tls = server_tls_context(config.tls_cert, config.tls_key, config.tls_client_ca) if config.tls_cert else None
        if config.output in ("ndjson", "engine"):
            Path(config.data_dir).mkdir(parents=True, exist_ok=True)
        if config.setup:
            from .engines.client import connect
            from .setup import run_setup

            run_setup(connect(config.engine), config.target, out=lambda line: log.info("setup: %s", line))
    except Exception as exc:  # noqa: BLE001 - any start-up failure is reported and ends the start
        print(f"flow-ingest serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2

    context = multiprocessing.get_context("fork")
    stdout_lock = context.Lock() if config.output == "-" else None  # one writer at a time on a shared stream
    slots: list[_Slot] = []
    sockets = []
    try:
        if config.udp_port:
            udp_sockets = open_udp_sockets(config.udp_address, config.udp_port, config.udp_workers,
                                           config.udp_receive_buffer)
            sockets += udp_sockets
            for index, sock in enumerate(udp_sockets):
                name = f"udp-{index}"
                slots.append(_Slot(name, _bound(build_udp_worker, config, registry, sock, stdout_lock, name)))
            log.info("listening on udp %s:%d with %d worker(s)", config.udp_address, config.udp_port, config.udp_workers)
        if config.tcp_port:
            sock = open_tcp_socket(config.tcp_address, config.tcp_port)
            sockets.append(sock)
            slots.append(_Slot("tcp", _bound(build_stream_worker, config, registry, sock, tls, stdout_lock, "tcp")))
            mode = "tcp"
            if tls is not None:
                mode = "tls (client certificates required)" if config.tls_client_ca else "tls"
            log.info("listening on %s %s:%d", mode, config.tcp_address, config.tcp_port)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        print(f"flow-ingest serve: cannot listen: {exc}", file=sys.stderr)
        return 2
    externals: list[_External] = []
    try:
        if config.jsonlines_tcp_port or config.jsonlines_udp_port:
            slots.append(_Slot("jsonlines", _jsonlines_builder(config, sockets, stdout_lock)))
            log.info("listening for JSON lines on tcp %s:%s / udp %s:%s", config.jsonlines_address,
                     config.jsonlines_tcp_port or "-", config.jsonlines_address, config.jsonlines_udp_port or "-")
        if config.http_port:
            externals.append(_gunicorn_external(config))
            log.info("HTTP API on http://%s:%d (gunicorn, %d workers)", config.http_address, config.http_port,
                     config.http_workers)
    except (OSError, ValueError) as exc:
        for sock in sockets:
            sock.close()
        print(f"flow-ingest serve: cannot start: {exc}", file=sys.stderr)
        return 2
    if config.output == "-":
        log.info("writing NDJSON to stdout")
    elif config.output == "engine":
        log.info("bulk-indexing into %s (%s %s), spooling to %s when it is unreachable", ",".join(config.engine.hosts),
                 config.target.mode, bulk_index_of(config.target), config.spool_dir or f"{config.data_dir}/spool")
    else:
        log.info("writing NDJSON to %s/flow-YYYY.MM.DD.ndjson", config.data_dir)
    try:
        return Supervisor(config, slots, context, externals).run()
    finally:
        for sock in sockets:
            sock.close()


def _metrics_dir(config: ServeConfig) -> str:
    return str(Path(config.data_dir) / ".metrics")


def _web_config(config: ServeConfig):
    from .web.app import WebConfig

    return WebConfig(
        host=config.http_address, port=config.http_port, workers=config.http_workers,
        tls_cert=config.http_tls_cert, tls_key=config.http_tls_key,
        tokens=tuple(config.http_token or ()), read_tokens=tuple(config.http_read_token or ()),
        max_body_bytes=config.http_max_body_bytes, max_records=config.http_max_records,
        output="ndjson" if config.output == "engine" else config.output, output_dir=config.data_dir,
        sink_factory="ingest_service.service:engine_sink_from_env" if config.output == "engine" else None,
        stats_file=config.stats_file, layout=config.schema_layout, target=config.layout.target,
        netflow_target=config.layout.netflow_target, definitions=config.definitions,
        metrics_dir=_metrics_dir(config), flush_interval=config.flush_interval,
        graceful_timeout=max(1.0, config.shutdown_timeout - 1.0),
    )


def _gunicorn_external(config: ServeConfig) -> _External:
    from .web.app import run_gunicorn
    from .web.health import prepare_metrics_dir

    web = _web_config(config)
    web.check()  # refuse to start on bad settings (e.g. no token off loopback) before anything runs
    prepare_metrics_dir(web.metrics_dir)
    env = dict(os.environ)
    if config.output == "engine":
        env[SERVE_SINK_ENV] = sink_settings_json(config)
    return _External("http", lambda: run_gunicorn(web, env=env))


def _jsonlines_builder(config: ServeConfig, sockets: list, stdout_lock):
    from .jsonlines import JsonLinesConfig, JsonLinesServer
    from .listener.sockets import open_tcp_socket

    tcp = open_tcp_socket(config.jsonlines_address, config.jsonlines_tcp_port) if config.jsonlines_tcp_port else None
    udp = None
    if config.jsonlines_udp_port:
        from .listener.sockets import open_udp_sockets

        udp = open_udp_sockets(config.jsonlines_address, config.jsonlines_udp_port, 1, config.udp_receive_buffer)[0]
    sockets += [s for s in (tcp, udp) if s is not None]
    jl_config = JsonLinesConfig(
        address=config.jsonlines_address, tcp_port=config.jsonlines_tcp_port, udp_port=config.jsonlines_udp_port,
        output=config.output if config.output != "engine" else "ndjson", output_dir=config.data_dir,
        layout=config.schema_layout, target=config.layout.target, netflow_target=config.layout.netflow_target,
        definitions=config.definitions, metrics_dir=_metrics_dir(config), flush_interval=config.flush_interval,
        shutdown_timeout=max(1.0, config.shutdown_timeout - 1.0),
        sink_factory=(lambda _cfg: _make_sink(config, stdout_lock, "jsonlines")) if config.output in ("engine", "-") else None,
    )
    def build():
        # in the forked child: its metrics go to the directory the HTTP app's /metrics sums
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = jl_config.metrics_dir
        return JsonLinesServer(jl_config, tcp_socket=tcp, udp_socket=udp)

    return build


def _bound(function, *args):
    return lambda: function(*args)
