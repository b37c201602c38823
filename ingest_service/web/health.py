"""GET /healthz, /readyz and /metrics, and the Prometheus metrics of the JSON inputs.

Metrics work in one process and across gunicorn workers: when ``PROMETHEUS_MULTIPROC_DIR``
is set (``run_gunicorn`` and ``run_jsonlines`` set it), every process writes its values to
files there and a scrape sums them (prometheus_client's multiprocess mode), so counters are
not split across workers and survive a worker's restart.  The directory must be emptied
before the processes start (:func:`prepare_metrics_dir`).

The IPFIX listeners run in other processes and write their counters to a JSON stats file
(``service.write_stats_file``); /metrics re-exposes it, read at each scrape, as
``flow_ingest_ipfix_<key>_total`` (gauges such as queue depths without ``_total``).
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
import threading
import time

import orjson
from flask import Blueprint, Response, current_app

from . import json_response
from .auth import RIGHT_READ, check

log = logging.getLogger("flow_ingest.web")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Keys of the IPFIX stats file that are current values, not totals.
IPFIX_GAUGE_KEYS = frozenset({
    "templates_active", "input_queue_depth", "output_queue_depth", "tcp_connections_open",
    "queue_documents", "queue_bytes", "requests_in_flight", "spool_bytes", "spool_segments", "engine_up",
})

blueprint = Blueprint("health", __name__)


# -- the metrics -------------------------------------------------------------------------------


class IngestMetrics:
    """The JSON inputs' metrics; ``input`` is http, jsonlines_tcp or jsonlines_udp."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

        disable_created_metrics()  # *_created series: noise here, and absent in multiprocess mode
        self.registry = CollectorRegistry(auto_describe=True)  # this process's values (single-process mode)
        r = self.registry
        self.records_received = Counter("flow_ingest_records_received", "JSON records received", ["input"], registry=r)
        self.records_accepted = Counter("flow_ingest_records_accepted", "JSON records accepted (queued for output)",
                                        ["input"], registry=r)
        self.records_rejected = Counter("flow_ingest_records_rejected", "JSON records rejected (malformed, wrong "
                                        "types, unknown layout)", ["input"], registry=r)
        self.documents_written = Counter("flow_ingest_documents_written", "Documents the output acknowledged",
                                         ["input"], registry=r)
        self.documents_lost = Counter("flow_ingest_documents_lost", "Documents the output failed to store",
                                      ["input"], registry=r)
        self.sink_errors = Counter("flow_ingest_sink_errors", "Failed output operations", ["input"], registry=r)
        self.queue_depth = Gauge("flow_ingest_queue_depth", "Documents waiting for the output", ["input"],
                                 registry=r, multiprocess_mode="livesum")
        self.http_requests = Counter("flow_ingest_http_requests", "HTTP requests answered", ["endpoint", "code"],
                                     registry=r)
        self.http_request_errors = Counter("flow_ingest_http_request_errors", "HTTP requests refused, by error code",
                                           ["error"], registry=r)
        self.jsonlines_connections = Counter("flow_ingest_jsonlines_connections", "JSON-lines TCP connections "
                                             "accepted", registry=r)
        self.jsonlines_udp_drops = Counter("flow_ingest_jsonlines_udp_drops", "JSON-lines datagrams dropped "
                                           "because the output queue was full", registry=r)
        self.jsonlines_backpressure_waits = Counter("flow_ingest_jsonlines_backpressure_waits", "Times a JSON-lines "
                                                    "TCP connection paused for a full output queue", registry=r)


_metrics: IngestMetrics | None = None
_metrics_lock = threading.Lock()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def ingest_metrics() -> IngestMetrics:
    """This process's metrics, created on first use (after PROMETHEUS_MULTIPROC_DIR is set)."""
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _use_multiprocess_values_if_configured()
                _metrics = IngestMetrics()
    return _metrics


def _use_multiprocess_values_if_configured() -> None:
    # prometheus_client picks its value class when first imported; a process that set
    # PROMETHEUS_MULTIPROC_DIR afterwards (run_jsonlines in a forked child) must pick again.
    from prometheus_client import values

    if multiprocess_dir() and values.ValueClass is values.MutexValue:
        values.ValueClass = values.get_value_class()


def prepare_metrics_dir(path: str) -> str:
    """Create the multiprocess directory, or empty it of a previous run's files."""
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)
    return path


def mark_process_dead(pid: int) -> None:
    """A gunicorn worker is gone: drop its live gauges (its counters stay in the totals)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


_KEY_CHARACTERS = re.compile(r"[^a-zA-Z0-9_]")


class IpfixStatsCollector:
    """The IPFIX listener's counters, read from its JSON stats file at each scrape."""

    def __init__(self, path: str):
        self.path = path

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            with open(self.path, "rb") as handle:
                stats = orjson.loads(handle.read())
            age = time.time() - os.stat(self.path).st_mtime
        except (OSError, orjson.JSONDecodeError) as exc:
            log.debug("IPFIX stats file %s unreadable: %s", self.path, exc)
            return
        if not isinstance(stats, dict):
            return
        yield GaugeMetricFamily("flow_ingest_ipfix_stats_age_seconds", "Seconds since the IPFIX listener last wrote "
                                "its stats file", value=max(age, 0.0))
        for key, value in sorted(stats.items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if key.startswith("jsonlines_"):
                continue  # a JSON-lines worker of the same supervisor: exported under its own names
            name = "flow_ingest_ipfix_" + _KEY_CHARACTERS.sub("_", key).removesuffix("_total")
            if key in IPFIX_GAUGE_KEYS:
                yield GaugeMetricFamily(name, f"IPFIX listener: {key}", value=value)
            else:
                yield CounterMetricFamily(name, f"IPFIX listener: {key}", value=value)


class _ProcessCollector:
    """This process's own metrics, when not in multiprocess mode."""

    def __init__(self, metrics: IngestMetrics):
        self.metrics = metrics

    def collect(self):
        return self.metrics.registry.collect()


def render_metrics(stats_file: str | None) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    metrics = ingest_metrics()
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessCollector(metrics))
    if stats_file:
        registry.register(IpfixStatsCollector(stats_file))
    return generate_latest(registry), CONTENT_TYPE_LATEST


# -- the endpoints ------------------------------------------------------------------------------


@blueprint.get("/healthz")
def healthz():
    """The process answers: nothing more (liveness)."""
    return json_response({"status": "ok"})


@blueprint.get("/readyz")
def readyz():
    """Ready to take flows: the writer runs, its queue has room, the output is reachable."""
    runtime = current_app.extensions["flow_ingest"]
    reasons = runtime.not_ready_reasons()
    if reasons:
        return json_response({"status": "not ready", "reasons": reasons}, 503)
    return json_response({"status": "ready"})


@blueprint.get("/metrics")
def metrics():
    runtime = current_app.extensions["flow_ingest"]
    if not runtime.config.metrics_public:
        denial = check(RIGHT_READ)
        if denial is not None:
            return denial
    body, content_type = render_metrics(runtime.config.stats_file)
    return Response(body, status=200, content_type=content_type)
