"""The Flask application (``create_app(config)``) and how it runs under gunicorn.

Process model: gunicorn's master loads the app once (``preload_app``: bad configuration
stops it before any worker starts), then forks ``workers`` processes with ``threads``
request threads each.  Every worker owns one :class:`IngestRuntime`: the sink and the
writer thread in front of it, started after the fork (gunicorn ``post_fork`` hook, or on
the first request) and drained on exit (``worker_exit``).  Several workers append to the
same NDJSON files safely (O_APPEND, whole lines) and each has its own bulk writer.

``run_gunicorn(config)`` starts all that as a subprocess; ``flow-ingest serve`` runs it
beside the IPFIX listener processes.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson
from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from ..documents import DocumentLayout
from ..jsoninput import DocumentBuilder, JsonRecordConverter
from ..normalize import Normalizer
from ..ratelog import RateLimitedLog
from . import error_response
from .auth import TokenAuth, listen_problem

log = logging.getLogger("flow_ingest.web")

CONFIG_ENV = "FLOW_INGEST_WEB_CONFIG"  # run_gunicorn hands the configuration to gunicorn's processes here
OUTPUTS = ("ndjson", "-")
LAYOUTS = ("logstash", "ecs")


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"  # anything but loopback requires tokens
    port: int = 8080
    tls_cert: str | None = None  # PEM: serve HTTPS (gunicorn certfile); else put a reverse proxy in front
    tls_key: str | None = None
    tokens: tuple[str, ...] = ()  # bearer tokens that may push flows (and read metrics)
    read_tokens: tuple[str, ...] = ()  # bearer tokens that may only read /metrics
    metrics_public: bool = False  # /metrics without a token (e.g. behind a network policy)
    max_body_bytes: int = 10 << 20  # compressed and decompressed
    max_records: int = 10_000  # per request
    max_errors: int = 20  # record errors reported per request
    wait_timeout: float = 30.0  # ?wait=true: seconds to wait for the output's acknowledgement
    queue_timeout: float = 5.0  # seconds a request waits for room in a full queue before 503
    queue_documents: int = 100_000  # documents queued per worker process
    flush_interval: float = 1.0  # longest time a document waits in the sink's buffer
    output: str = "ndjson"  # ndjson: daily files in output_dir; -: stdout
    output_dir: str = "./data"
    sink_factory: str | Callable[["WebConfig"], Any] | None = None  # "module:function" (or a callable in-process)
    stats_file: str | None = None  # the IPFIX listener's stats file, re-exposed in /metrics
    layout: str = "logstash"  # logstash | ecs
    target: str = "ipfix"  # object the elements go under
    netflow_target: str | None = None
    definitions: tuple[str, ...] = ()  # Logstash definition files for the registry
    workers: int = 2
    threads: int = 8
    reuse_port: bool = True  # a socket per worker, balanced by the kernel (a 2nd instance on the port would share it)
    metrics_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR shared by the workers (and run_jsonlines)
    graceful_timeout: float = 30.0
    access_log: bool = False
    log_level: str = "info"

    def problems(self) -> list[str]:
        found = []
        problem = listen_problem(self.host, self.tokens, self.read_tokens)
        if problem:
            found.append(problem)
        if not 0 <= self.port <= 65535:
            found.append(f"port {self.port} is not a port number")
        if bool(self.tls_cert) != bool(self.tls_key):
            found.append("tls_cert and tls_key go together")
        if self.sink_factory is None and self.output not in OUTPUTS:
            found.append(f"output must be one of {', '.join(OUTPUTS)}, not {self.output!r}")
        if self.layout not in LAYOUTS:
            found.append(f"layout must be logstash or ecs, not {self.layout!r}")
        for name in ("max_body_bytes", "max_records", "max_errors", "queue_documents", "workers", "threads"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be positive")
        for name in ("wait_timeout", "queue_timeout", "flush_interval", "graceful_timeout"):
            if not getattr(self, name) > 0:
                found.append(f"{name} must be positive")
        return found

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def document_layout(self) -> DocumentLayout:
        return DocumentLayout(target=self.target, netflow_target=self.netflow_target, type=self.target)

    def to_json(self) -> str:
        if callable(self.sink_factory):
            raise ValueError("sink_factory must be given as 'module:function' to run in another process")
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def from_mapping(cls, values: dict) -> "WebConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"unknown web configuration keys: {sorted(unknown)}")
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**converted)


def config_from_environment() -> WebConfig:
    text = os.environ.get(CONFIG_ENV)
    return WebConfig.from_mapping(orjson.loads(text)) if text else WebConfig()


# -- outputs --------------------------------------------------------------------------------------


def resolve_factory(spec: str | Callable) -> Callable:
    if callable(spec):
        return spec
    module, _, attribute = spec.partition(":")
    if not module or not attribute:
        raise ValueError(f"sink_factory must look like 'package.module:function', not {spec!r}")
    target = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def build_sink(config, stream_lock=None):
    """The sink for this process: the configured factory, NDJSON files, or stdout.

    ``config`` is a WebConfig or anything with ``sink_factory``, ``output`` and ``output_dir``;
    a factory is called with it.
    """
    from ..sinks.ndjson import open_ndjson_sink

    if config.sink_factory is not None:
        return resolve_factory(config.sink_factory)(config)
    return open_ndjson_sink(config.output, config.output_dir, stream_lock)


# -- the per-process runtime ----------------------------------------------------------------------

_runtimes: "weakref.WeakSet[IngestRuntime]" = weakref.WeakSet()


class IngestRuntime:
    """What one process needs to take flows: the document builder and, once started, the
    writer thread that owns the sink.  Threads never cross a fork: a forked child starts its own."""

    def __init__(self, config: WebConfig):
        from ..ipfix.registry import default_registry
        from .health import ingest_metrics

        self.config = config
        converter = JsonRecordConverter(default_registry(config.definitions), config.document_layout)
        normalizer = Normalizer(config.layout, config.document_layout)
        self.builder = DocumentBuilder(converter, normalizer, max_errors=config.max_errors)
        self.metrics = ingest_metrics()
        # Workers sharing stdout take turns (created before the fork, inherited by all).
        self._stream_lock = multiprocessing.get_context("fork").Lock() if config.output == "-" else None
        self._writer = None
        self._pid = None
        self._stopped_in: int | None = None  # pid of a process whose runtime was stopped
        self._start_error: str | None = None
        self._lock = threading.Lock()
        self._log = RateLimitedLog(log)
        _runtimes.add(self)

    def writer(self):
        writer = self._writer
        if writer is None or self._pid != os.getpid():
            writer = self.start()
        return writer

    def start(self):
        from .ingest import DocumentWriter, WriterStopped

        with self._lock:
            if self._stopped_in == os.getpid():
                raise WriterStopped()
            if self._writer is not None and self._pid == os.getpid():
                return self._writer
            try:
                sink = build_sink(self.config, self._stream_lock)
            except Exception as exc:
                self._start_error = f"cannot open the output: {exc}"
                self._log.warning("sink_open", "%s", self._start_error)
                raise
            writer = DocumentWriter(sink, max_documents=self.config.queue_documents,
                                    flush_interval=self.config.flush_interval, input_name="http",
                                    name="http-sink-writer")
            writer.start()
            self._writer, self._pid, self._start_error = writer, os.getpid(), None
            return writer

    def stop(self, timeout: float) -> bool:
        with self._lock:
            writer, self._writer = self._writer, None
            self._stopped_in = os.getpid()
        if writer is None or self._pid != os.getpid():
            return True
        finished = writer.stop(timeout)
        if not finished:
            log.error("the HTTP output did not drain within %.1fs: %d documents may be lost", timeout, writer.depth)
        return finished

    def not_ready_reasons(self) -> list[str]:
        from .ingest import WriterStopped

        try:
            writer = self.writer()
        except WriterStopped:
            return ["the service is stopping"]
        except Exception:
            return [self._start_error or "the output cannot be opened"]
        reasons = []
        if not writer.alive():
            reasons.append("the output writer thread is not running")
        if writer.full:
            reasons.append("the output queue is full")
        gauges = getattr(writer.sink, "gauges", None)
        if callable(gauges):
            try:
                state = gauges()
            except Exception as exc:
                state = {}
                reasons.append(f"the output cannot report its state: {exc}")
            if state.get("engine_up") == 0 and getattr(writer.sink, "spool", None) is None:
                reasons.append("the search engine is unreachable")
        return reasons


def start_runtimes() -> None:
    """gunicorn post_fork: start this worker's writer threads now that the fork is done."""
    for runtime in list(_runtimes):
        try:
            runtime.start()
        except Exception:
            pass  # logged; /readyz reports it and requests retry the start


def stop_runtimes(timeout: float) -> bool:
    """gunicorn worker_exit: write and flush everything queued."""
    return all([runtime.stop(timeout) for runtime in list(_runtimes)])


# -- the app ----------------------------------------------------------------------------------------


def create_app(config: WebConfig | None = None) -> Flask:
    """The WSGI app.  Raises ValueError for an unsafe or invalid configuration (for instance a
    non-loopback address without tokens)."""
    config = config or WebConfig()
    config.check()
    from . import health, ingest, openapi

    app = Flask("flow_ingest", static_folder=None)
    app.config["JSON_SORT_KEYS"] = False
    runtime = IngestRuntime(config)
    app.extensions["flow_ingest"] = runtime
    app.extensions["flow_ingest_auth"] = TokenAuth(config.tokens, config.read_tokens)
    app.register_blueprint(ingest.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(openapi.blueprint)

    metrics = runtime.metrics

    @app.after_request
    def count(response):
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.http_requests.labels(rule, str(response.status_code)).inc()
        code = g.get("flow_ingest_error")
        if code:
            metrics.http_request_errors.labels(code).inc()
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "unexpected error; see the server log")

    return app


def app_from_environment() -> Flask:
    """gunicorn's entry point: ``ingest_service.web.app:app_from_environment()``."""
    return create_app(config_from_environment())


# -- gunicorn ---------------------------------------------------------------------------------------


def bind_address(config: WebConfig) -> str:
    if config.host.startswith("unix:"):
        return config.host
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{host}:{config.port}"


def gunicorn_command(python: str = sys.executable) -> list[str]:
    return [python, "-m", "gunicorn", "--config", "python:ingest_service.web.gunicorn_conf",
            "ingest_service.web.app:app_from_environment()"]


def run_gunicorn(config: WebConfig, *, env: dict | None = None, **popen_kwargs) -> subprocess.Popen:
    """Start gunicorn with the app in a subprocess; returns at once.

    Stop it with SIGTERM: workers finish their requests, flush their outputs and exit
    (within ``graceful_timeout``).  The metrics directory (``config.metrics_dir``, else a new
    temporary one) must be empty or hold files of processes of the same service: call
    :func:`~ingest_service.web.health.prepare_metrics_dir` once before starting the processes
    that share it.  Raises ValueError for an invalid configuration.
    """
    config.check()
    metrics_dir = config.metrics_dir or tempfile.mkdtemp(prefix="flow-ingest-metrics-")
    config = dataclasses.replace(config, metrics_dir=metrics_dir)
    environment = dict(os.environ if env is None else env)
    environment[CONFIG_ENV] = config.to_json()
    environment["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # The package must be importable from gunicorn, installed or not.
    root = str(Path(__file__).resolve().parents[2])
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (root, environment.get("PYTHONPATH")) if p)
    return subprocess.Popen(gunicorn_command(), env=environment, **popen_kwargs)
