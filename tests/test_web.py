"""The HTTP API under the real gunicorn (2 gthread workers) on 127.0.0.1: pushes of every body
kind, a battery of bad inputs with their documented answers, auth, metrics summed across
workers, acknowledgement and graceful stop, output failures."""
from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ingest_service.sinks.ndjson import NdjsonFileSink
from ingest_service.web.app import CONFIG_ENV, WebConfig, create_app, gunicorn_command, run_gunicorn
from ingest_service.web.health import prepare_metrics_dir

LOCAL = "127.0.0.1"
TOKEN = "ingest-secret"
READ_TOKEN = "read-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[1]
STATS = {"records": 123, "malformed_messages": 2, "lost_records": 7, "data_sets_without_template": 1,
         "udp_kernel_drops": 5, "udp_queue_drops": 3, "templates_active": 4, "tcp_connections_open": 1,
         "note": "not a number", "jsonlines_tcp_lines": 9}

RECORD = {"@timestamp": "2026-11-27T00:29:04+05:30",
          "ipfix": {"flowStartSeconds": 1795719500, "flowEndSeconds": 1795719544, "sourceIPv4Address": "10.10.1.2",
                    "destinationIPv4Address": "10.10.2.3", "sourceTransportPort": 40000,
                    "destinationTransportPort": 80, "protocolIdentifier": 6, "octetDeltaCount": 1500,
                    "packetDeltaCount": 3, "sourcePodName": "web-0", "destinationPodName": "db-0", "flowType": 2}}


def record(n: int) -> dict:
    return {**RECORD, "ipfix": {**RECORD["ipfix"], "octetDeltaCount": n}}


def ndjson(records) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Gunicorn:
    """``run_gunicorn`` on a free local port, logs in a file."""

    def __init__(self, directory: Path, **overrides):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.data_dir = directory / "data"
        self.metrics_dir = prepare_metrics_dir(str(directory / "metrics"))
        settings = dict(port=free_port(), tokens=(TOKEN,), read_tokens=(READ_TOKEN,), output_dir=str(self.data_dir),
                        metrics_dir=self.metrics_dir, flush_interval=0.2, workers=2, threads=4,
                        graceful_timeout=10)
        settings.update(overrides)
        self.config = WebConfig(**settings)
        self.log_path = directory / "gunicorn.log"
        with open(self.log_path, "wb") as log:
            self.process = run_gunicorn(self.config, stdout=log, stderr=subprocess.STDOUT)
        self.base = f"http://{LOCAL}:{self.config.port}"
        wait_for(self._up, what=f"gunicorn on port {self.config.port}")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {self.log()}")
        try:
            return requests.get(self.base + "/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, body=None, *, json=None, content_type="application/json", headers=None, query="", session=None,
             **kwargs) -> requests.Response:
        all_headers = {**AUTH, **({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        if json is not None:
            body = orjson.dumps(json)
        return (session or requests).post(f"{self.base}/api/v1/flows{query}", data=body, headers=all_headers,
                                          timeout=30, **kwargs)

    def metrics(self) -> Counter:
        text = requests.get(self.base + "/metrics", headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=10).text
        values = Counter()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}" if labels else sample.name] += sample.value
        return values

    def documents(self) -> list[dict]:
        return [orjson.loads(line) for path in sorted(self.data_dir.glob("flow-*.ndjson"))
                for line in path.read_bytes().splitlines()]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("web")
    stats_file = directory / "ipfix-stats.json"
    stats_file.write_bytes(orjson.dumps(STATS))
    instance = Gunicorn(directory, max_body_bytes=64 * 1024, max_records=50, max_errors=5, stats_file=str(stats_file))
    yield instance
    assert instance.stop() == 0, instance.log()


# -- good pushes --------------------------------------------------------------------------------------


def test_single_object_with_wait_is_written_before_the_answer(server):
    response = server.post(json=record(424242), query="?wait=true")
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "rejected": 0, "errors": [], "errors_truncated": False,
                               "status": "written"}
    (document,) = [d for d in server.documents() if d["ipfix"]["octetDeltaCount"] == 424242]
    assert document["@timestamp"] == "2026-11-26T18:59:04.000Z" and document["host"] == LOCAL
    assert document["ipfix"]["flowEndSeconds"] == "2026-11-26T18:59:04.000Z"
    assert document["ipfix"]["flowKey"] == "web-0:40000->db-0:80 TCP" and document["ipfix"]["version"] == 10


@pytest.mark.parametrize("kind", ["array", "ndjson", "gzip-ndjson", "gzip-array", "chunked-ndjson", "raw-elements"])
def test_every_body_kind_is_accepted(server, kind):
    base = {"array": 1000, "ndjson": 2000, "gzip-ndjson": 3000, "gzip-array": 4000, "chunked-ndjson": 5000,
            "raw-elements": 6000}[kind]
    records = [record(base + n) for n in range(20)]
    if kind == "array":
        response = server.post(orjson.dumps(records))
    elif kind == "ndjson":
        response = server.post(ndjson(records), content_type="application/x-ndjson")
    elif kind == "gzip-ndjson":
        response = server.post(gzip.compress(ndjson(records)), content_type="application/x-ndjson",
                               headers={"Content-Encoding": "gzip"})
    elif kind == "gzip-array":
        response = server.post(gzip.compress(orjson.dumps(records)), headers={"Content-Encoding": "gzip"})
    elif kind == "chunked-ndjson":
        body = ndjson(records)
        response = server.post((body[i:i + 100] for i in range(0, len(body), 100)),  # no Content-Length
                               content_type="application/x-ndjson")
    else:
        records = [{**r["ipfix"], "@timestamp": r["@timestamp"]} for r in records]
        response = server.post(orjson.dumps(records))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 20, "rejected": 0, "errors": [], "errors_truncated": False,
                               "status": "queued"}
    wait_for(lambda: sum(base <= d["ipfix"]["octetDeltaCount"] < base + 20 for d in server.documents()) == 20,
             what="the queued documents in the NDJSON files")


def test_partially_valid_ndjson_queues_the_valid_records_and_names_the_bad_lines(server):
    body = (orjson.dumps(record(7001)) + b"\n{oops\n\n" + orjson.dumps({"ipfix": {"octetDeltaCount": -1}}) + b"\n"
            + orjson.dumps(record(7002)) + b"\n" + b'{"sourceIPv4Address": "300.1.1.1"}\n')
    response = server.post(body, content_type="application/x-ndjson", query="?wait=1")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"], answer["errors_truncated"]) == (2, 3, False)
    assert [(e["line"], e["field"]) for e in answer["errors"]] == [(2, ""), (4, "ipfix.octetDeltaCount"),
                                                                   (6, "sourceIPv4Address")]
    assert "malformed JSON" in answer["errors"][0]["reason"]
    assert "out of range" in answer["errors"][1]["reason"]


def test_error_list_is_capped(server):
    response = server.post(orjson.dumps([{"octetDeltaCount": "x"}] * 8 + [record(8001)]))
    answer = response.json()
    assert response.status_code == 202 and answer["accepted"] == 1 and answer["rejected"] == 8
    assert len(answer["errors"]) == 5 and answer["errors_truncated"] is True
    assert [e["index"] for e in answer["errors"]] == [0, 1, 2, 3, 4]
    exactly = server.post(orjson.dumps([{"octetDeltaCount": "x"}] * 5 + [record(8002)])).json()
    assert len(exactly["errors"]) == 5 and exactly["errors_truncated"] is False


# -- bad input ----------------------------------------------------------------------------------------


def _bomb() -> bytes:
    return gzip.compress(b"[" + b" " * (5 << 20) + b"]")  # ~5 KiB that inflate to 5 MiB


BAD_INPUTS = [
    # (name, request kwargs, status, error code, text in the message)
    ("malformed JSON", dict(body=b'{"ipfix": {'), 400, "malformed_json", "not valid JSON"),
    ("invalid UTF-8", dict(body=b'{"sourcePodName": "\xff"}'), 400, "malformed_json", "not valid JSON"),
    ("a JSON scalar", dict(body=b"42"), 400, "unknown_layout", "expected a JSON object"),
    ("an empty body", dict(body=b""), 400, "no_records", "no records"),
    ("an empty array", dict(body=b"[]"), 400, "no_records", "no records"),
    ("blank NDJSON", dict(body=b"\n \n", content_type="application/x-ndjson"), 400, "no_records", "no records"),
    ("wrong types only", dict(json=[{"octetDeltaCount": "x"}]), 400, "invalid_records", "none of the 1 records"),
    ("unknown layout", dict(json={"foo": 1}), 400, "invalid_records", "none of the 1 records"),
    ("Content-Length over the limit", dict(body=b"[" + b" " * (70 * 1024) + b"]"), 413, "body_too_large",
     "Content-Length"),
    ("chunked body over the limit", dict(body=(b" " * 8192 for _ in range(10))), 413, "body_too_large",
     "exceeds 65536 bytes"),
    ("gzip bomb", dict(body=_bomb(), headers={"Content-Encoding": "gzip"}), 413, "body_too_large",
     "decompressed"),
    ("not gzip", dict(body=b"[{}]", headers={"Content-Encoding": "gzip"}), 400, "bad_gzip", "not valid gzip"),
    ("truncated gzip", dict(body=gzip.compress(b"[{}]" * 100)[:-12], headers={"Content-Encoding": "gzip"}), 400,
     "bad_gzip", "truncated"),
    ("brotli", dict(body=b"[]", headers={"Content-Encoding": "br"}), 415, "unsupported_content_encoding", "'br'"),
    ("text/plain", dict(body=b"{}", content_type="text/plain"), 415, "unsupported_media_type", "text/plain"),
    ("no Content-Type", dict(body=b"{}", content_type=None), 415, "unsupported_media_type", "(none)"),
    ("latin-1", dict(body=b"{}", content_type="application/json; charset=latin-1"), 415, "unsupported_media_type",
     "charset"),
    ("too many records (array)", dict(json=[record(1)] * 51), 413, "too_many_records", "51 records"),
    ("too many records (NDJSON)", dict(body=ndjson([record(1)] * 51), content_type="application/x-ndjson"), 413,
     "too_many_records", "at most 50"),
    ("a bad wait parameter", dict(json=record(1), query="?wait=maybe"), 400, "bad_parameter", "wait"),
]


def test_bad_inputs_get_their_documented_answer_and_move_the_counters(server):
    before = server.metrics()
    for name, kwargs, status, code, text in BAD_INPUTS:
        response = server.post(**kwargs)
        assert response.status_code == status, (name, response.text)
        assert response.headers["Content-Type"] == "application/json", name
        answer = response.json()
        assert answer["error"] == code and text in answer["message"], (name, answer)
        if code == "invalid_records":
            assert answer["accepted"] == 0 and answer["rejected"] == 1 and answer["errors"][0]["index"] == 0
    response = requests.get(server.base + "/api/v1/flows", headers=AUTH, timeout=10)
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"

    after = server.metrics()
    codes = Counter(code for _, _, _, code, _ in BAD_INPUTS)
    for code, count in codes.items():
        assert after[f"flow_ingest_http_request_errors_total{{error={code}}}"] - \
               before[f"flow_ingest_http_request_errors_total{{error={code}}}"] == count, code
    for status in (400, 413, 415):
        key = f"flow_ingest_http_requests_total{{code={status},endpoint=/api/v1/flows}}"
        expected = sum(1 for _, _, s, _, _ in BAD_INPUTS if s == status)
        assert after[key] - before[key] == expected, status
    rejected = "flow_ingest_records_rejected_total{input=http}"
    assert after[rejected] - before[rejected] == 2
    accepted = "flow_ingest_records_accepted_total{input=http}"
    assert after[accepted] == before[accepted]
    assert server.process.poll() is None  # and the service is fine
    assert server.post(json=record(9001), query="?wait=true").status_code == 200


def test_bad_requests_never_affect_concurrent_good_ones(server):
    good = ndjson([record(10_000 + n) for n in range(25)])

    def push(n: int) -> tuple[int, int]:
        if n % 2:
            response = server.post(good, content_type="application/x-ndjson")
            return response.status_code, response.json()["accepted"]
        bad = [b"{", b"[1,2]", _bomb()][n % 3]
        response = server.post(bad, headers={"Content-Encoding": "gzip"} if n % 3 == 2 else None)
        return response.status_code, 0

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(push, range(120)))
    assert all(status == 202 and accepted == 25 for status, accepted in results[1::2])
    assert all(status in (400, 413) for status, _ in results[0::2])


# -- auth ---------------------------------------------------------------------------------------------


def test_auth(server):
    url = server.base + "/api/v1/flows"
    body = orjson.dumps(record(1))
    response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Bearer wrong", "Basic " + TOKEN, "Bearer", f"Bearer {TOKEN}x", f"bearer  {TOKEN[:-1]}"):
        response = requests.post(url, data=body, headers={"Content-Type": "application/json", "Authorization": header},
                                 timeout=10)
        assert response.status_code == 401, header
    read_only = {"Content-Type": "application/json", "Authorization": f"Bearer {READ_TOKEN}"}
    response = requests.post(url, data=body, headers=read_only, timeout=10)
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    assert server.post(body, headers={"Authorization": f"bearer {TOKEN}"}).status_code == 202  # scheme: any case

    metrics = server.base + "/metrics"
    assert requests.get(metrics, timeout=10).status_code == 401
    assert requests.get(metrics, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    assert requests.get(metrics, headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=10).status_code == 200
    assert requests.get(metrics, headers=AUTH, timeout=10).status_code == 200
    for open_path in ("/healthz", "/readyz", "/openapi.json"):
        assert requests.get(server.base + open_path, timeout=10).status_code == 200, open_path


def test_refuses_to_listen_off_loopback_without_tokens(tmp_path):
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.org"):
        with pytest.raises(ValueError, match="without authentication"):
            run_gunicorn(WebConfig(host=host))
        with pytest.raises(ValueError, match="without authentication"):
            create_app(WebConfig(host=host, output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="non-empty"):
        create_app(WebConfig(tokens=("",), output_dir=str(tmp_path)))
    create_app(WebConfig(host="::1", output_dir=str(tmp_path)))  # loopback: tokens optional
    # gunicorn started by hand with such a configuration stops before binding anything.
    env = dict(os.environ, PYTHONPATH=str(REPO), **{CONFIG_ENV: WebConfig(host="0.0.0.0", port=free_port()).to_json()})
    finished = subprocess.run(gunicorn_command(), env=env, capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    assert "without authentication" in finished.stdout + finished.stderr


# -- metrics ------------------------------------------------------------------------------------------


def test_metrics_sum_all_workers_and_include_the_ipfix_listener_stats(server):
    before = server.metrics()
    body = ndjson([record(20_000 + n) for n in range(10)])
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: server.post(body, content_type="application/x-ndjson").status_code,
                                 range(60)))
    assert statuses == [202] * 60
    after = server.metrics()
    assert after["flow_ingest_records_received_total{input=http}"] - \
        before["flow_ingest_records_received_total{input=http}"] == 600
    assert after["flow_ingest_records_accepted_total{input=http}"] - \
        before["flow_ingest_records_accepted_total{input=http}"] == 600
    key = "flow_ingest_http_requests_total{code=202,endpoint=/api/v1/flows}"
    assert after[key] - before[key] == 60
    pids = {path.stem.rsplit("_", 1)[1] for path in Path(server.metrics_dir).glob("counter_*.db")}
    assert len(pids) >= 2  # both workers counted, and their counts were summed
    wait_for(lambda: server.metrics()["flow_ingest_queue_depth{input=http}"] == 0, what="the queues to drain")
    written = server.metrics()["flow_ingest_documents_written_total{input=http}"]
    assert written == len(server.documents())

    for key, value in STATS.items():
        if key in ("note", "jsonlines_tcp_lines"):
            continue
        name = f"flow_ingest_ipfix_{key}" if key in ("templates_active", "tcp_connections_open") \
            else f"flow_ingest_ipfix_{key}_total"
        assert after[name] == value, name
    assert "flow_ingest_ipfix_note_total" not in after
    assert not any("ipfix_jsonlines" in name for name in after)  # a JSON-lines worker's: exported natively
    assert 0 <= after["flow_ingest_ipfix_stats_age_seconds"] < 3600


# -- acknowledgement, failures, shutdown --------------------------------------------------------------


def test_everything_acknowledged_is_written_by_a_graceful_stop(tmp_path):
    # A flush interval far beyond the test: only the stop can write the 202-acknowledged records.
    instance = Gunicorn(tmp_path, flush_interval=600)
    try:
        accepted = 0
        with requests.Session() as session:
            for batch in range(20):  # ~500 KB: below the NDJSON sink's own buffer limit
                response = instance.post(ndjson([record(batch * 25 + n) for n in range(25)]),
                                         content_type="application/x-ndjson", session=session)
                assert response.status_code == 202
                accepted += response.json()["accepted"]
        assert instance.documents() == []  # still queued or buffered
    finally:
        assert instance.stop() == 0, instance.log()
    counts = sorted(d["ipfix"]["octetDeltaCount"] for d in instance.documents())
    assert counts == list(range(accepted))


def test_output_failure_is_a_503_with_wait_and_does_not_stop_the_service(tmp_path):
    instance = Gunicorn(tmp_path, workers=1)
    try:
        (instance.data_dir / "flow-2026.11.26.ndjson").mkdir(parents=True)  # that day's file cannot be opened
        response = instance.post(json=record(1), query="?wait=true")
        assert response.status_code == 503, response.text
        answer = response.json()
        assert answer["error"] == "output_unavailable" and "writing" in answer["message"]
        other_day = {**record(2), "@timestamp": "2026-11-28T10:00:00Z"}
        assert instance.post(json=other_day, query="?wait=true").status_code == 200
        metrics = instance.metrics()
        assert metrics["flow_ingest_sink_errors_total{input=http}"] >= 1
        assert metrics["flow_ingest_documents_lost_total{input=http}"] >= 1
    finally:
        assert instance.stop() == 0, instance.log()


class GatedSink(NdjsonFileSink):
    """NDJSON files, but write() waits while ``<output_dir>/GATE`` exists (a stalled output)."""

    def __init__(self, config):
        super().__init__(config.output_dir)
        self.gate = Path(config.output_dir) / "GATE"

    def write(self, lines):
        while self.gate.exists():
            time.sleep(0.02)
        return super().write(lines)


def gated_sink(config):
    return GatedSink(config)


def test_full_queue_gives_503_with_retry_after_and_readyz_says_why(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "GATE").touch()
    instance = Gunicorn(tmp_path, workers=1, queue_documents=30, queue_timeout=0.3,
                        sink_factory="tests.test_web:gated_sink")
    try:
        first = instance.post(ndjson([record(n) for n in range(20)]), content_type="application/x-ndjson")
        assert first.status_code == 202, first.text  # taken by the writer, stuck in write(): still counted
        ready = requests.get(instance.base + "/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        second = instance.post(ndjson([record(n) for n in range(10)]), content_type="application/x-ndjson")
        assert second.status_code == 202, second.text  # queued: 30 documents, the queue is full
        response = instance.post(json=record(99))
        assert response.status_code == 503 and response.headers["Retry-After"] == "1", response.text
        assert response.json()["error"] == "queue_full" and response.json()["accepted"] == 0
        ready = requests.get(instance.base + "/readyz", timeout=5)
        assert ready.status_code == 503 and "the output queue is full" in ready.json()["reasons"], ready.text
        assert requests.get(instance.base + "/healthz", timeout=5).status_code == 200
        (data_dir / "GATE").unlink()
        last = instance.post(json=record(100), query="?wait=true")
        assert last.status_code == 200, last.text
    finally:
        (data_dir / "GATE").unlink(missing_ok=True)
        assert instance.stop() == 0, instance.log()
    assert len(instance.documents()) == 31, instance.log()


def test_an_output_that_cannot_be_opened_is_a_503_and_not_ready(tmp_path):
    def broken(config):
        raise OSError("engine at 127.0.0.1:1 refused the connection")

    client = create_app(WebConfig(sink_factory=broken, output_dir=str(tmp_path))).test_client()
    response = client.post("/api/v1/flows", json=record(1))
    assert response.status_code == 503 and response.json["error"] == "output_unavailable"
    assert "refused" in response.json["message"] and response.json["accepted"] == 0
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "refused" in ready.json["reasons"][0]
    assert client.get("/healthz").status_code == 200


def test_after_the_stop_nothing_more_is_taken(tmp_path):
    app = create_app(WebConfig(output_dir=str(tmp_path)))
    client = app.test_client()
    assert client.post("/api/v1/flows", json=record(1)).status_code == 202
    assert app.extensions["flow_ingest"].stop(5)  # gunicorn's worker_exit: drained and closed
    response = client.post("/api/v1/flows", json=record(2))
    assert response.status_code == 503 and response.json["error"] == "shutting_down"
    assert client.get("/readyz").json["reasons"] == ["the service is stopping"]
    written = [orjson.loads(line) for path in tmp_path.glob("flow-*.ndjson") for line in path.read_bytes().splitlines()]
    assert [d["ipfix"]["octetDeltaCount"] for d in written] == [1]
