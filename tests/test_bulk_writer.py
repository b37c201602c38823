"""The bulk writer, end to end.

Two kinds of engine:

* a REAL OpenSearch (and Elasticsearch) from ``tests/engines``: documents are counted
  with ``_count`` after ``_refresh``; mapping errors are real engine rejections; the
  crash test SIGKILLs the engine mid-stream and restarts it;
* ``FakeEngine``, a tiny HTTP server on 127.0.0.1, ONLY for what a real engine will
  not do on demand: answer 429 / 503 / 413 / 400 to chosen requests or items, stall
  to exercise backpressure, vanish and come back within milliseconds.

Every wait is bounded: the writer's retry timings are shrunk, and each test carries
its own deadlines.
"""
from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import orjson
import pytest

from ingest_service.bulk import BulkWriter, BulkWriterConfig
from ingest_service.bulk.actions import document_id
from ingest_service.documents import serialize
from ingest_service.engines import EngineConfig, EngineUnavailable, connect
from ingest_service.sinks import SinkError
from tests.engines.fixtures import elasticsearch, engine_factory, opensearch  # noqa: F401 - fixtures

FAST_RETRIES = dict(retry_initial=0.01, retry_max=0.1, unreachable_budget=0.3)


def flow_document(n: int, day: int = 1) -> bytes:
    """A document shaped like documents.to_document's output."""
    return serialize({
        "@timestamp": f"2024-05-{day:02d}T10:00:{n % 60:02d}.{n % 1000:03d}Z",
        "@version": "1",
        "host": "10.0.0.1",
        "type": "ipfix",
        "ipfix": {"version": 10, "flowset_id": 256, "sourceIPv4Address": f"10.1.{n // 256 % 256}.{n % 256}",
                  "destinationIPv4Address": "10.2.0.1", "sourceTransportPort": 1024 + n % 60000,
                  "destinationTransportPort": 443, "protocolIdentifier": 6, "octetDeltaCount": n * 10,
                  "packetDeltaCount": n, "sequence": n},
    })


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# -- a scripted fake engine -----------------------------------------------------------

OPENSEARCH_ROOT = {"name": "fake", "cluster_name": "fake",
                   "version": {"distribution": "opensearch", "number": "2.19.6"},
                   "tagline": "The OpenSearch Project: https://opensearch.org/"}


class FakeEngine:
    """OpenSearch-shaped ``GET /`` and ``POST /_bulk`` on 127.0.0.1, answers chosen by ``script``.

    ``script(call_number, pairs)`` returns None (all items created), an int (the whole
    request fails with that status) or a list of per-item statuses.  Created documents
    are kept by ``_id`` (a create of a known ``_id`` is a 409, as on a real engine).
    """

    def __init__(self, script=None, port: int = 0, *, root: dict = None, headers: dict | None = None,
                 tls=None, authorization: str | None = None):
        self.script = script or (lambda call, pairs: None)
        self.root = root or OPENSEARCH_ROOT
        self.extra_headers = headers or {}  # sent with every answer (X-Elastic-Product)
        self.tls = tls  # server-side ssl.SSLContext
        self.authorization = authorization  # the Authorization header required, if any
        self.seen_authorization: list[str | None] = []
        self.requests: list[list[tuple[dict, bytes]]] = []
        self.documents: dict[str, bytes] = {}
        self.anonymous: list[bytes] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.port = port
        self._server = None
        self.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def stored(self) -> int:
        return len(self.documents) + len(self.anonymous)

    def start(self) -> None:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self):
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def log_message(self, *args):
                pass

            def _reply(self, status: int, body) -> None:
                data = orjson.dumps(body)
                self.send_response(status)
                for name, value in fake.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                fake.seen_authorization.append(self.headers.get("Authorization"))
                if fake.authorization and self.headers.get("Authorization") != fake.authorization:
                    self._reply(401, {"error": {"type": "security_exception", "reason": "missing credentials"}})
                    return False
                return True

            def do_GET(self):
                if self._authorized():
                    self._reply(200, fake.root)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self._authorized():
                    return
                if not self.path.startswith("/_bulk"):
                    return self._reply(404, {"error": "no such endpoint"})
                lines = body.split(b"\n")[:-1]
                pairs = [(orjson.loads(lines[i]), lines[i + 1]) for i in range(0, len(lines), 2)]
                with fake._lock:
                    call = len(fake.requests)
                    fake.requests.append(pairs)
                verdict = fake.script(call, pairs)
                if isinstance(verdict, int):
                    return self._reply(verdict, {"error": {"type": "fake", "reason": f"scripted {verdict}"},
                                                 "status": verdict})
                statuses = verdict or [201] * len(pairs)
                items = [fake._apply(action, document, status)
                         for (action, document), status in zip(pairs, statuses)]
                self._reply(200, {"took": 1, "errors": any(i["create"]["status"] >= 300 for i in items),
                                  "items": items})

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _apply(self, action: dict, document: bytes, status: int) -> dict:
        (op, meta), = action.items()
        if status >= 300:
            kind = {429: "es_rejected_execution_exception", 503: "unavailable_shards_exception"}.get(
                status, "mapper_parsing_exception")
            return {"create": {"status": status, "error": {"type": kind, "reason": f"scripted {status}"}}}
        with self._lock:
            doc_id = meta.get("_id")
            if doc_id is None:
                self.anonymous.append(document)
            elif doc_id in self.documents and op == "create":
                return {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception",
                                                            "reason": f"[{doc_id}]: version conflict"}}}
            else:
                self.documents[doc_id] = document
        return {"create": {"status": 201}}

    def stop(self) -> None:
        """Gone: the listening socket and every open connection (like a killed engine)."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for connection in list(self._connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def fake():
    engines = []

    def make(script=None, port: int = 0, **options) -> FakeEngine:
        engine = FakeEngine(script, port, **options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        try:
            engine.stop()
        except Exception:
            pass


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_writer(url: str, tmp_path=None, **overrides) -> BulkWriter:
    options = dict(index="flows", batch_age=0.05, **FAST_RETRIES)
    if tmp_path is not None:
        options.update(spool_dir=str(tmp_path / "spool"), deadletter_path=str(tmp_path / "dead.ndjson"))
    options.update(overrides)
    return BulkWriter(EngineConfig(hosts=(url,), request_timeout=5.0, detect_timeout=2.0), BulkWriterConfig(**options))


# -- fake-engine tests ----------------------------------------------------------------


def test_partial_failure_retries_only_the_failed_items(fake, tmp_path):
    """Fake engine: the first request gets 429 and 503 on two items (a healthy real engine won't)."""
    engine = fake(lambda call, pairs: [201, 429, 201, 503, 201] if call == 0 else None)
    writer = make_writer(engine.url, tmp_path, batch_docs=5)
    docs = [flow_document(n) for n in range(5)]
    writer.write(docs)
    assert writer.flush(timeout=10) == 5
    writer.close()
    assert [len(r) for r in engine.requests] == [5, 2]
    assert [doc for _, doc in engine.requests[1]] == [docs[1], docs[3]]
    counters = writer.counters()
    assert counters["documents_indexed"] == 5 and counters["bulk_retries"] == 1 and counters["bulk_requests"] == 2
    assert engine.stored == 5


def test_whole_request_429_is_retried_until_accepted(fake, tmp_path):
    """Fake engine: the whole _bulk request is refused with 429 three times."""
    engine = fake(lambda call, pairs: 429 if call < 3 else None)
    writer = make_writer(engine.url, tmp_path)
    writer.write([flow_document(n) for n in range(10)])
    writer.flush(timeout=10)
    writer.close()
    counters = writer.counters()
    assert counters["documents_indexed"] == 10 and counters["bulk_retries"] == 3
    assert counters["documents_spooled"] == 0  # busy is not unreachable: no spooling
    assert engine.stored == 10


def test_413_splits_and_a_400_isolates_the_bad_document(fake, tmp_path):
    """Fake engine: 413 for requests over 2 documents, 400 (whole request) for any containing 'poison'."""
    def script(call, pairs):
        if len(pairs) > 2:
            return 413
        if any(b"poison" in doc for _, doc in pairs):
            return 400
        return None

    engine = fake(script)
    writer = make_writer(engine.url, tmp_path, batch_docs=100)
    docs = [flow_document(n) for n in range(6)]
    docs.insert(3, b'{"@timestamp":"2024-05-01T00:00:00.000Z","poison":true}')
    writer.write(docs)
    writer.flush(timeout=10)
    writer.close()
    counters = writer.counters()
    assert counters["documents_indexed"] == 6 and counters["documents_dead_lettered"] == 1
    [letter] = [orjson.loads(line) for line in (tmp_path / "dead.ndjson").read_bytes().splitlines()]
    assert letter["status"] == 400 and "scripted 400" in letter["reason"]
    assert letter["document"] == {"@timestamp": "2024-05-01T00:00:00.000Z", "poison": True}


def test_batches_close_by_count_bytes_and_age(fake, tmp_path):
    """Fake engine: it records each request's size."""
    engine = fake()
    writer = make_writer(engine.url, tmp_path, batch_docs=10, batch_age=10.0)
    writer.write([flow_document(n) for n in range(25)])
    wait_for(lambda: len(engine.requests) >= 2, 5, "two full batches")
    time.sleep(0.2)
    assert [len(r) for r in engine.requests] == [10, 10]  # the 5 left wait for age or flush
    writer.flush(timeout=5)
    assert [len(r) for r in engine.requests] == [10, 10, 5]
    writer.close()

    by_bytes = fake()
    one = len(flow_document(100)) + len(b'{"create":{"_index":"flows"}}') + 2
    writer = make_writer(by_bytes.url, tmp_path / "b", batch_docs=1000, batch_bytes=one * 4, batch_age=10.0)
    writer.write([flow_document(n) for n in range(100, 108)])  # same length each
    wait_for(lambda: len(by_bytes.requests) >= 2, 5, "byte-bounded batches")
    assert [len(r) for r in by_bytes.requests] == [4, 4]
    writer.close()

    by_age = fake()
    writer = make_writer(by_age.url, tmp_path / "c", batch_docs=1000, batch_age=0.2)
    started = time.monotonic()
    writer.write([flow_document(1)])
    wait_for(lambda: by_age.requests, 5, "the age-closed batch")
    assert time.monotonic() - started >= 0.15
    writer.close()


def test_write_blocks_while_the_queue_is_full(fake, tmp_path):
    """Fake engine: it stalls every request until the test lets it go (backpressure)."""
    gate = threading.Event()
    engine = fake(lambda call, pairs: gate.wait(10) and None)
    writer = make_writer(engine.url, tmp_path, batch_docs=5, queue_docs=10, in_flight=1)
    done = threading.Event()

    def feed():
        for n in range(60):
            writer.write([flow_document(n)])
        done.set()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    time.sleep(0.5)
    assert not done.is_set(), "write() should block while the engine stalls and the queue is full"
    assert writer.counters()["documents_submitted"] <= 10 + 5 + 1
    gate.set()
    assert done.wait(10)
    writer.flush(timeout=10)
    writer.close()
    assert engine.stored == 60 and writer.counters()["documents_indexed"] == 60


def test_unreachable_engine_spools_then_replays_exactly_once(fake, tmp_path):
    """Fake engine: it vanishes (listening socket and connections closed) and comes back on the same port."""
    engine = fake()
    writer = make_writer(engine.url, tmp_path, document_ids=True, batch_docs=50)
    docs = [flow_document(n) for n in range(600)]
    writer.write(docs[:200])
    writer.flush(timeout=10)
    engine.stop()
    started = time.monotonic()
    for start in range(200, 600, 50):
        writer.write(docs[start:start + 50])
    writer.flush(timeout=10)  # spooled counts as done
    assert time.monotonic() - started < 8, "writes must keep flowing into the spool"
    counters = writer.counters()
    assert counters["documents_spooled"] == 400 and writer.gauges()["engine_up"] == 0
    assert writer.gauges()["spool_bytes"] > 0

    back = fake(port=engine.port)
    assert writer.wait_idle(20), writer.stats()
    writer.close()
    counters = writer.counters()
    assert counters["documents_replayed"] == 400 and counters["documents_lost"] == 0
    assert back.stored == 400 and engine.stored == 200
    assert set(back.documents) | set(engine.documents) == {document_id(d) for d in docs}


def test_a_new_writer_replays_what_a_closed_one_spooled(fake, tmp_path):
    """Fake engine: absent while the first writer runs (nothing listens), present for the second."""
    port = unused_port()
    first = make_writer(f"http://127.0.0.1:{port}", tmp_path, document_ids=True)
    assert first.engine_info is None
    docs = [flow_document(n) for n in range(300)]
    first.write(docs)
    first.close(timeout=5)
    assert first.counters()["documents_spooled"] == 300
    assert list((tmp_path / "spool").glob("seg-*.ndjson"))

    engine = fake(port=port)
    second = make_writer(engine.url, tmp_path, document_ids=True)
    assert second.wait_idle(20), second.stats()
    second.close()
    assert second.counters()["documents_replayed"] == 300
    assert set(engine.documents) == {document_id(d) for d in docs}
    assert not list((tmp_path / "spool").glob("seg-*.ndjson"))


def test_full_spool_blocks_write_until_the_engine_returns(fake, tmp_path):
    """Fake engine: absent at first, so the spool (bounded to ~40 documents) fills up."""
    port = unused_port()
    one = len(flow_document(0)) + 60
    writer = make_writer(f"http://127.0.0.1:{port}", tmp_path, batch_docs=10, queue_docs=10,
                         spool_max_bytes=one * 40, in_flight=1)
    done = threading.Event()

    def feed():
        for n in range(0, 200, 10):
            writer.write([flow_document(m) for m in range(n, n + 10)])
        done.set()

    threading.Thread(target=feed, daemon=True).start()
    wait_for(lambda: writer.counters()["documents_spooled"] >= 30, 10, "the spool to fill")
    time.sleep(0.5)
    assert not done.is_set(), "write() should block once the spool is full"
    engine = fake(port=port)
    assert done.wait(30)
    writer.flush(timeout=20)
    assert writer.wait_idle(30), writer.stats()
    writer.close()
    assert engine.stored == 200 and writer.counters()["documents_lost"] == 0


def test_item_retries_can_be_capped_into_the_dead_letters(fake, tmp_path):
    """Fake engine: one document is answered 429 forever."""
    engine = fake(lambda call, pairs: [429 if b'"sequence":3}' in doc else 201 for _, doc in pairs])
    writer = make_writer(engine.url, tmp_path, max_item_attempts=3)
    writer.write([flow_document(n) for n in range(5)])
    writer.flush(timeout=10)
    writer.close()
    counters = writer.counters()
    assert counters["documents_indexed"] == 4 and counters["documents_dead_lettered"] == 1
    [letter] = [orjson.loads(line) for line in (tmp_path / "dead.ndjson").read_bytes().splitlines()]
    assert "gave up after 3 retries" in letter["reason"]


def test_close_without_a_spool_reports_what_it_could_not_deliver(tmp_path):
    """No engine at all (nothing listens on the port), and no spool: close() must say so."""
    writer = make_writer(f"http://127.0.0.1:{unused_port()}", None)
    writer.write([flow_document(n) for n in range(7)])
    with pytest.raises(SinkError) as failure:
        writer.close(timeout=0.5)
    assert failure.value.lost == 7
    assert writer.counters()["documents_lost"] == 7


def test_flush_returns_what_was_acknowledged(fake, tmp_path):
    """Fake engine: answers after 0.2 s, so flush() has to wait."""
    engine = fake(lambda call, pairs: time.sleep(0.2))
    writer = make_writer(engine.url, tmp_path, batch_age=5.0)
    assert writer.write([flow_document(n) for n in range(30)]) == 0
    assert writer.flush(timeout=10) == 30
    assert writer.flush(timeout=10) == 0
    writer.close()
    histogram = writer.counters()
    assert histogram["bulk_latency_seconds_count"] == 1 and histogram["bulk_latency_seconds_bucket_le_0.1"] == 0
    assert histogram["bulk_latency_seconds_bucket_le_0.25"] == 1


# -- real engine tests ---------------------------------------------------------------


def _count(client, index: str) -> int:
    assert client.perform("POST", f"/{index}/_refresh").ok
    response = client.perform("GET", f"/{index}/_count")
    assert response.ok, response
    return response.body["count"]


@pytest.fixture(params=["opensearch", "elasticsearch"])
def real_engine(request):
    return request.getfixturevalue(request.param)


def test_every_document_is_indexed_exactly_once(real_engine, tmp_path):
    """Real engine: 20,000 flow documents over two daily indices, counted back."""
    client = connect(EngineConfig(hosts=(real_engine.url,)))
    index = f"once-{tmp_path.name.lower()}"
    docs = [flow_document(n, day=1 + n % 2) for n in range(20_000)]
    writer = BulkWriter(client, BulkWriterConfig(index=index + "-%{+YYYY.MM.dd}", batch_docs=1000,
                                                 deadletter_path=str(tmp_path / "dead.ndjson")))
    started = time.monotonic()
    for start in range(0, len(docs), 500):
        writer.write(docs[start:start + 500])
    writer.close()
    elapsed = time.monotonic() - started
    counters = writer.counters()
    assert counters["documents_indexed"] == 20_000, counters
    assert counters["documents_dead_lettered"] == counters["documents_lost"] == 0
    assert _count(client, f"{index}-2024.05.01") == 10_000
    assert _count(client, f"{index}-2024.05.02") == 10_000
    print(f"{real_engine.kind}: 20000 documents in {elapsed:.2f}s, {counters['bulk_requests']} requests")


def test_mapping_errors_go_to_the_dead_letter_file(real_engine, tmp_path):
    """Real engine: a long field given text is refused by the engine itself."""
    client = connect(EngineConfig(hosts=(real_engine.url,)))
    index = f"mapping-{tmp_path.name.lower()}"
    created = client.perform("PUT", f"/{index}", {"mappings": {"properties": {"ipfix": {"properties": {
        "octetDeltaCount": {"type": "long"}}}}}})
    assert created.ok, created
    good = [flow_document(n) for n in range(50)]
    bad = [orjson.dumps({"@timestamp": "2024-05-01T00:00:00.000Z", "ipfix": {"octetDeltaCount": f"lots-{n}"}})
           for n in range(3)]
    writer = BulkWriter(client, BulkWriterConfig(index=index, document_ids=True,
                                                 deadletter_path=str(tmp_path / "dead.ndjson")))
    writer.write(good[:25] + bad + good[25:])
    writer.close()
    counters = writer.counters()
    assert counters["documents_indexed"] == 50 and counters["documents_dead_lettered"] == 3
    assert _count(client, index) == 50
    letters = [orjson.loads(line) for line in (tmp_path / "dead.ndjson").read_bytes().splitlines()]
    assert sorted(letter["document"]["ipfix"]["octetDeltaCount"] for letter in letters) == ["lots-0", "lots-1", "lots-2"]
    for letter in letters:
        assert letter["status"] == 400
        assert "octetDeltaCount" in letter["reason"] and "parsing_exception" in letter["reason"]
        assert letter["action"]["create"]["_index"] == index


def test_dead_letter_index(opensearch, tmp_path):  # noqa: F811 - fixture
    """Real OpenSearch: rejected documents land in the dead-letter index, as strings."""
    client = connect(EngineConfig(hosts=(opensearch.url,)))
    index = f"dlidx-{tmp_path.name.lower()}"
    deadletters = f"deadletter-{tmp_path.name.lower()}"
    client.perform("PUT", f"/{index}", {"mappings": {"properties": {"n": {"type": "long"}}}})
    writer = BulkWriter(client, BulkWriterConfig(index=index, deadletter_index=deadletters))
    writer.write([b'{"n":1}', b'{"n":"x"}'])
    writer.close()
    assert writer.counters()["documents_dead_lettered"] == 1
    assert _count(client, deadletters) == 1
    hit = client.perform("GET", f"/{deadletters}/_search").body["hits"]["hits"][0]["_source"]
    assert hit["document"] == '{"n":"x"}' and hit["index"] == index and hit["status"] == 400


def test_data_stream_with_create(opensearch, tmp_path):  # noqa: F811 - fixture
    """Real OpenSearch: a data stream takes op_type create, with deterministic ids, replays collapse."""
    client = connect(EngineConfig(hosts=(opensearch.url,)))
    stream = f"flows-ds-{tmp_path.name.lower()}"
    template = client.perform("PUT", f"/_index_template/{stream}",
                              {"index_patterns": [stream], "data_stream": {}, "priority": 500})
    assert template.ok, template
    docs = [flow_document(n) for n in range(1000)]
    writer = BulkWriter(client, BulkWriterConfig(index=stream, op_type="create", document_ids=True))
    writer.write(docs)
    writer.write(docs[:100])  # a replay of the same documents
    writer.close()
    counters = writer.counters()
    assert counters["documents_indexed"] == 1000 and counters["documents_duplicate"] == 100
    assert _count(client, stream) == 1000


def test_engine_killed_mid_stream_everything_arrives_exactly_once(engine_factory, tmp_path):  # noqa: F811
    """Real OpenSearch, SIGKILLed mid-stream and restarted on its data directory.

    The writer must keep accepting (spooling) while the engine is gone, replay once it
    is back, and with deterministic ids nothing may be indexed twice, not even the
    documents of the requests that were in flight when the engine died.
    """
    engine = engine_factory("opensearch", data_dir=tmp_path / "data")
    client_config = EngineConfig(hosts=(engine.url,), request_timeout=10.0, detect_timeout=2.0)
    index = "crash-flows"
    writer = BulkWriter(client_config, BulkWriterConfig(
        index=index, document_ids=True, batch_docs=500, batch_age=0.2, unreachable_budget=1.0,
        retry_initial=0.05, retry_max=0.5, spool_dir=str(tmp_path / "spool"),
        deadletter_path=str(tmp_path / "dead.ndjson")))
    total = 30_000
    docs = [flow_document(n) for n in range(total)]
    chunk = 250
    write_times = []

    def feed():
        for start in range(0, total, chunk):
            began = time.monotonic()
            writer.write(docs[start:start + chunk])
            write_times.append(time.monotonic() - began)
            time.sleep(0.01)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    wait_for(lambda: writer.counters()["documents_indexed"] >= 5_000, 60, "indexing to be under way")
    engine.kill()
    indexed_before_kill = writer.counters()["documents_indexed"]
    feeder.join(timeout=120)
    assert not feeder.is_alive(), "write() must keep accepting while the engine is down"
    assert max(write_times) < 10, f"a write() blocked {max(write_times):.1f}s"
    writer.flush(timeout=60)
    spooled = writer.counters()["documents_spooled"]
    assert spooled > 0 and indexed_before_kill < total, writer.stats()

    engine.restart()
    assert writer.wait_idle(180), writer.stats()
    writer.close()
    counters = writer.counters()
    client = connect(client_config)
    assert _count(client, index) == total, counters
    assert counters["documents_lost"] == 0 and counters["documents_dead_lettered"] == 0
    assert counters["documents_replayed"] >= 1
    # create + deterministic _id: each document is acknowledged once, either created (201) or,
    # when the killed engine had made it durable without answering, found there on replay (409).
    assert counters["documents_indexed"] + counters["documents_duplicate"] == total, counters
    print(json.dumps({k: v for k, v in counters.items() if not k.startswith("bulk_latency")}))


# -- small pure parts and more fake-engine cases --------------------------------------


def test_backoff_is_capped_exponential_with_half_jitter():
    from ingest_service.bulk.writer import backoff_delay

    assert [backoff_delay(n, 0.1, 1.0, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5, 6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert [backoff_delay(n, 0.1, 1.0, rand=lambda: 1.0) for n in (1, 2, 5)] == [0.1, 0.2, 1.0]


def test_latency_histogram_is_cumulative():
    from ingest_service.bulk.writer import LatencyHistogram

    histogram = LatencyHistogram((0.1, 1.0))
    for seconds in (0.05, 0.5, 0.7, 5.0):
        histogram.observe(seconds)
    counters = histogram.as_counters()
    assert counters["bulk_latency_seconds_bucket_le_0.1"] == 1
    assert counters["bulk_latency_seconds_bucket_le_1.0"] == 3
    assert counters["bulk_latency_seconds_bucket_le_inf"] == counters["bulk_latency_seconds_count"] == 4
    assert counters["bulk_latency_seconds_sum"] == pytest.approx(6.25)


def test_whole_request_503_counts_as_unreachable_and_spools(fake, tmp_path):
    """Fake engine: a proxy in front of a dead cluster answering 503 for a while."""
    healthy = threading.Event()
    engine = fake(lambda call, pairs: None if healthy.is_set() else 503)
    writer = make_writer(engine.url, tmp_path, document_ids=True)
    writer.write([flow_document(n) for n in range(40)])
    writer.flush(timeout=10)
    assert writer.counters()["documents_spooled"] == 40
    healthy.set()
    assert writer.wait_idle(20), writer.stats()
    writer.close()
    assert writer.counters()["documents_replayed"] == 40 and engine.stored == 40


def test_second_host_takes_over_when_the_first_is_down(fake, tmp_path):
    """Fake engine behind the second of two hosts; nothing listens on the first."""
    engine = fake()
    dead = f"http://127.0.0.1:{unused_port()}"
    writer = BulkWriter(EngineConfig(hosts=(dead, engine.url), request_timeout=5.0, detect_timeout=2.0),
                        BulkWriterConfig(index="flows", batch_docs=10, batch_age=0.05, **FAST_RETRIES))
    for start in range(0, 100, 10):
        writer.write([flow_document(n) for n in range(start, start + 10)])
        writer.flush(timeout=10)
    writer.close()
    assert engine.stored == 100 and writer.counters()["documents_indexed"] == 100


ELASTICSEARCH_ROOT = {"name": "fake", "cluster_name": "fake", "tagline": "You Know, for Search",
                      "version": {"number": "8.19.21", "build_flavor": "default"}}


@pytest.mark.parametrize("kind", ["opensearch", "elasticsearch"])
def test_tls_with_a_ca_file_and_basic_auth(fake, tmp_path, kind):
    """Fake engine over TLS requiring basic auth (the real test engines run without security)."""
    from tests.support.tlscerts import make_tls_files

    files = make_tls_files(tmp_path / "tls")
    root, headers = ((OPENSEARCH_ROOT, {}) if kind == "opensearch"
                     else (ELASTICSEARCH_ROOT, {"X-Elastic-Product": "Elasticsearch"}))
    engine = fake(root=root, headers=headers, tls=files.server_context(require_client_cert=False),
                  authorization="Basic ZmxvdzpzM2NyZXQ=")  # flow:s3cret
    config = EngineConfig(hosts=(engine.url,), username="flow", password="s3cret", ca_file=str(files.ca_cert))
    client = connect(config)
    assert client.info.kind == kind
    writer = BulkWriter(client, BulkWriterConfig(index="flows", batch_age=0.05))
    writer.write([flow_document(n) for n in range(20)])
    writer.close()
    assert engine.stored == 20
    assert set(engine.seen_authorization) == {"Basic ZmxvdzpzM2NyZXQ="}

    with pytest.raises(EngineUnavailable):  # the default trust store does not know our CA
        connect(EngineConfig(hosts=(engine.url,), username="flow", password="s3cret", detect_timeout=2.0))
    unverified = connect(EngineConfig(hosts=(engine.url,), username="flow", password="s3cret", verify_certs=False))
    assert unverified.perform("GET", "/").ok


@pytest.mark.parametrize("kind", ["opensearch", "elasticsearch"])
def test_api_key_and_client_certificate(fake, tmp_path, kind):
    """Fake engine over mutual TLS requiring an API key."""
    from tests.support.tlscerts import make_tls_files

    files = make_tls_files(tmp_path / "tls")
    root, headers = ((OPENSEARCH_ROOT, {}) if kind == "opensearch"
                     else (ELASTICSEARCH_ROOT, {"X-Elastic-Product": "Elasticsearch"}))
    engine = fake(root=root, headers=headers, tls=files.server_context(require_client_cert=True),
                  authorization="ApiKey aWQ6a2V5")  # id:key
    client = connect(EngineConfig(hosts=(engine.url,), api_key="id:key", ca_file=str(files.ca_cert),
                                  client_cert=str(files.client_cert), client_key=str(files.client_key)))
    response = client.bulk(b'{"create":{"_index":"flows"}}\n{"n":1}\n')
    assert response["errors"] is False and engine.stored == 1


def test_flush_without_waiting_only_sends(fake, tmp_path):
    """Fake engine: stalls until released, so a waiting flush could not return."""
    gate = threading.Event()
    engine = fake(lambda call, pairs: gate.wait(10) and None)
    writer = make_writer(engine.url, tmp_path, batch_age=60.0, flush_waits=False)
    writer.write([flow_document(n) for n in range(5)])
    started = time.monotonic()
    assert writer.flush() == 0
    assert time.monotonic() - started < 1.0
    wait_for(lambda: engine.requests, 5, "the nudged batch to be sent")
    gate.set()
    writer.close()  # close waits whatever flush_waits says
    assert engine.stored == 5 and writer.counters()["documents_indexed"] == 5
