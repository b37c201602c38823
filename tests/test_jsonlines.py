"""JSON lines over TCP and UDP: Antrea's JSON records from the real go-ipfix exporter become the
documents the exporter says it sent, and the same documents as the IPFIX path gives."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from ingest_service.ipfix import values
from ingest_service.ipfix.decoder import FlowDecoder, ipfix_message_length
from ingest_service.ipfix.registry import default_registry
from ingest_service.jsonlines import JsonLinesConfig, JsonLinesServer, LineSplitter
from ingest_service.listener.sockets import open_tcp_socket, set_receive_buffer
from ingest_service.normalize import Normalizer
from tests.support.goexporter import GoExporterError, build_goexporter, run_goexporter

LOCAL = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
REGISTRY = default_registry()
TIMEOUT = 30


@pytest.fixture(scope="module")
def goexporter():
    try:
        build_goexporter()
    except GoExporterError as exc:
        if os.environ.get("FLOW_INGEST_REQUIRE_REAL_EXPORTERS"):
            raise
        pytest.skip(f"go-ipfix exporter unavailable: {exc}")


def wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class CollectingSink:
    """Documents in memory; with a closed ``gate`` its write blocks (a slow output)."""

    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate
        self.documents: list[dict] = []
        self._lock = threading.Lock()

    def write(self, lines):
        if self.gate is not None:
            self.gate.wait(60)
        with self._lock:
            self.documents.extend(orjson.loads(line) for line in lines)
        return len(lines)

    def flush(self):
        return 0

    def close(self):
        return 0

    def count(self) -> int:
        with self._lock:
            return len(self.documents)


class Running:
    def __init__(self, sink=None, **config):
        self.sink = sink or CollectingSink()
        self.tcp = open_tcp_socket(LOCAL, 0)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        set_receive_buffer(self.udp, 8 << 20)  # as the server's own sockets: bursts must not overflow it
        self.udp.bind((LOCAL, 0))
        config.setdefault("flush_interval", 0.05)
        config.setdefault("poll_interval", 0.05)
        self.server = JsonLinesServer(JsonLinesConfig(**config), sink=self.sink, tcp_socket=self.tcp,
                                      udp_socket=self.udp, registry=REGISTRY)
        self.server.start()

    @property
    def tcp_address(self):
        return self.tcp.getsockname()

    @property
    def udp_address(self):
        return self.udp.getsockname()

    def close(self):
        assert self.server.stop(10)
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def running():
    servers = []

    def start(**kwargs):
        server = Running(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.server.stop_event.set()
        if server.sink.gate is not None:
            server.sink.gate.set()
        server.close()


# -- expected documents, built independently of jsoninput from the exporter's -out ----------------


def expected_body(fields: dict) -> dict:
    body = {}
    for name, value in fields.items():
        kind = REGISTRY.by_name(name).type
        body[name] = values.iso_from_seconds(value) if kind == "dateTimeSeconds" else value
    body["version"] = 10
    return body


def expected_documents(sent: list[dict], received: list[dict], host: str) -> list[dict]:
    """The -out records as documents, normalized in order; @timestamp taken from what arrived
    after checking it lies in the export window the exporter reports."""
    normalizer = Normalizer()
    out = []
    for record, document in zip(sent, received, strict=True):
        stamp = datetime.fromisoformat(document["@timestamp"].replace("Z", "+00:00")).timestamp()
        assert record["export_time_min"] - 1 <= stamp <= record["export_time_max"] + 1
        expected = {"@timestamp": document["@timestamp"], "@version": "1", "host": host, "type": "ipfix",
                    "ipfix": expected_body(record["fields"])}
        out.append(normalizer.normalize(expected, "ipfix"))
    return out


def assert_same_documents(received: list[dict], expected: list[dict]) -> None:
    assert len(received) == len(expected)
    for index, (got, want) in enumerate(zip(received, expected, strict=True)):
        assert got.keys() == want.keys(), index
        assert got["ipfix"].keys() == want["ipfix"].keys(), index
        for name in want["ipfix"]:  # field by field, for a readable failure
            assert got["ipfix"][name] == want["ipfix"][name], (index, name)
        assert got == want, index


# -- go-ipfix JSON records ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_go_ipfix_json_records_arrive_as_the_documents_sent(goexporter, running, transport, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # go-ipfix writes @timestamp in local time: +05:30
    server = running()
    address = server.tcp_address if transport == "tcp" else server.udp_address
    count = 60
    sent = run_goexporter(address, transport, count, json_mode=True, mix=True, seed=21, timeout=TIMEOUT)
    assert len(sent) == count
    wait_for(lambda: server.sink.count() >= count, what=f"{count} documents")
    received = server.sink.documents
    assert_same_documents(received, expected_documents(sent, received, LOCAL))
    assert {d["ipfix"]["version"] for d in received} == {10}
    assert any("sourceIPv6Address" in d["ipfix"] for d in received)  # -mix: both templates
    snapshot = server.server.snapshot().counters
    assert snapshot[f"jsonlines_{transport}_lines"] == count and f"jsonlines_{transport}_lines_rejected" not in snapshot


def ipfix_documents(seed: int, count: int, ipv6: bool) -> tuple[list[dict], list[dict], list[float]]:
    """Run the exporter in IPFIX mode over TCP into a FlowDecoder: (documents, -out records, export times)."""
    listener = open_tcp_socket(LOCAL, 0)
    listener.settimeout(TIMEOUT)
    received = bytearray()
    peer = []

    def accept():
        conn, address = listener.accept()
        peer.append(address)
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=accept)
    thread.start()
    sent = run_goexporter(listener.getsockname(), "tcp", count, ipv6=ipv6, uuids=False, seed=seed, timeout=TIMEOUT)
    thread.join(TIMEOUT)
    listener.close()
    decoder = FlowDecoder(REGISTRY)
    normalizer = Normalizer()
    session = ("tcp", LOCAL, peer[0][1], 1)
    documents, export_times = [], []
    data, offset = bytes(received), 0
    while offset < len(data):
        length = ipfix_message_length(data[offset:offset + 4])
        for record in decoder.decode(data[offset:offset + length], session, time.time()):
            export_times.append(record.export_time)
            documents.append(normalizer.document(record))
        offset += length
    assert len(documents) == count
    return documents, sent, export_times


def antrea_json_line(fields: dict, export_time: float) -> bytes:
    """What go-ipfix's JSON mode writes for a record (its -out fields are the values it encodes),
    with @timestamp in RFC 3339 at a +05:30 offset."""
    stamp = datetime.fromtimestamp(export_time, timezone(timedelta(hours=5, minutes=30))).isoformat()
    return orjson.dumps({"ipfix": fields, "@timestamp": stamp}) + b"\n"


TIME_FIELDS = {"flowStartSeconds", "flowEndSeconds", "flowEndSecondsFromSourceNode",
               "flowEndSecondsFromDestinationNode"}


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_json_records_and_ipfix_give_identical_documents(goexporter, running, ipv6):
    seed, count = 33, 40
    ipfix_docs, ipfix_sent, export_times = ipfix_documents(seed, count, ipv6)

    # 1. The same records sent as JSON lines become the very documents the IPFIX path produced;
    #    only flowset_id (the template id) cannot be known from JSON.
    server = running()
    with socket.create_connection(server.tcp_address, timeout=TIMEOUT) as conn:
        conn.sendall(b"".join(antrea_json_line(r["fields"], t) for r, t in zip(ipfix_sent, export_times, strict=True)))
    wait_for(lambda: server.sink.count() >= count, what="JSON documents")
    for json_doc, ipfix_doc in zip(server.sink.documents, ipfix_docs, strict=True):
        assert ipfix_doc["ipfix"].pop("flowset_id") in (256, 257)
        assert json_doc["ipfix"].keys() == ipfix_doc["ipfix"].keys()
        assert json_doc == ipfix_doc

    # 2. go-ipfix's own JSON mode, same seed: the same records apart from the clock (the generator
    #    stamps flows with the current time), hence the same documents apart from times.
    json_server = running()
    json_sent = run_goexporter(json_server.tcp_address, "tcp", count, ipv6=ipv6, json_mode=True, seed=seed,
                               timeout=TIMEOUT)
    for a, b in zip(json_sent, ipfix_sent, strict=True):
        assert {k: v for k, v in a["fields"].items() if k not in TIME_FIELDS} == \
               {k: v for k, v in b["fields"].items() if k not in TIME_FIELDS}
    wait_for(lambda: json_server.sink.count() >= count, what="go-ipfix JSON documents")
    clock_dependent = TIME_FIELDS | {"interval"}
    for json_doc, ipfix_doc in zip(json_server.sink.documents, ipfix_docs, strict=True):
        assert json_doc["ipfix"].keys() == ipfix_doc["ipfix"].keys()
        assert {k: v for k, v in json_doc["ipfix"].items() if k not in clock_dependent} == \
               {k: v for k, v in ipfix_doc["ipfix"].items() if k not in clock_dependent}
        assert {k: v for k, v in json_doc.items() if k not in ("ipfix", "@timestamp")} == \
               {k: v for k, v in ipfix_doc.items() if k not in ("ipfix", "@timestamp")}


# -- bad input, backpressure, drops ---------------------------------------------------------------------


def counters(server: Running) -> dict:
    return {k.removeprefix("jsonlines_"): v for k, v in server.server.snapshot().counters.items()}


GOOD = (b'{"@timestamp": "2026-11-27T00:29:04+05:30", '
        b'"ipfix": {"sourceIPv4Address": "10.0.0.1", "octetDeltaCount": %d}}\n')


def test_malformed_lines_are_counted_and_never_close_connections(running):
    server = running(max_line_bytes=1024)
    other = socket.create_connection(server.tcp_address, timeout=TIMEOUT)
    with socket.create_connection(server.tcp_address, timeout=TIMEOUT) as conn:
        conn.sendall(GOOD % 1 + b"{not json\n" + b'{"ipfix": {"octetDeltaCount": "many"}}\n' + b"[1, 2]\n")
        conn.sendall(b'{"x": "' + b"y" * 5000)  # too long, arriving in pieces
        time.sleep(0.1)
        conn.sendall(b"y" * 5000 + b'"}\n' + b"\n  \n" + GOOD % 2)
        other.sendall(GOOD % 100)
        wait_for(lambda: server.sink.count() >= 3, what="the good lines")
        conn.sendall(GOOD % 3)  # the connection still works after all that
        other.sendall(GOOD % 101 + b'{"unfinished')  # the last line of a stream needs no newline ...
        other.shutdown(socket.SHUT_WR)  # ... but this one is malformed
        wait_for(lambda: server.sink.count() >= 5, what="lines after the bad ones")
    other.close()
    counts = sorted(d["ipfix"]["octetDeltaCount"] for d in server.sink.documents)
    assert counts == [1, 2, 3, 100, 101]
    wait_for(lambda: counters(server).get("tcp_lines_rejected") == 5, what="rejections counted")
    assert counters(server)["tcp_connections"] == 2


def test_udp_datagrams_may_hold_several_lines_and_bad_ones_are_counted(running):
    server = running()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(GOOD % 1 + GOOD % 2 + b'{"octetDeltaCount": 3}', server.udp_address)  # no final newline
        sender.sendto(b"garbage\n", server.udp_address)
        sender.sendto(b'{"@timestamp": 5, "octetDeltaCount": 4}\n', server.udp_address)
    wait_for(lambda: server.sink.count() >= 3 and counters(server).get("udp_lines_rejected") == 2,
             what="UDP lines")
    assert sorted(d["ipfix"]["octetDeltaCount"] for d in server.sink.documents) == [1, 2, 3]
    assert {d["host"] for d in server.sink.documents} == {LOCAL}


def test_tcp_backpressure_pauses_the_sender_and_loses_nothing(running):
    gate = threading.Event()
    server = running(sink=CollectingSink(gate), queue_documents=20)
    total = 0
    with socket.create_connection(server.tcp_address, timeout=TIMEOUT) as conn:
        for burst in range(10):
            conn.sendall(b"".join(GOOD % (burst * 20 + n) for n in range(20)))
            total += 20
            time.sleep(0.03)
        wait_for(lambda: counters(server).get("tcp_backpressure_waits", 0) >= 1, what="backpressure")
        assert server.sink.count() == 0
        gate.set()
    wait_for(lambda: server.sink.count() == total, what="every document after the output recovered")
    assert sorted(d["ipfix"]["octetDeltaCount"] for d in server.sink.documents) == list(range(total))


def test_udp_drops_when_the_queue_is_full_and_counts_them(running):
    gate = threading.Event()
    server = running(sink=CollectingSink(gate), queue_documents=5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for n in range(50):
            sender.sendto(GOOD % n, server.udp_address)
    wait_for(lambda: counters(server).get("udp_datagrams") == 50, what="all datagrams read")
    dropped = counters(server).get("udp_queue_drops", 0)
    assert dropped > 0
    gate.set()
    wait_for(lambda: server.sink.count() == 50 - dropped, what="the documents not dropped")


def test_line_splitter_drops_long_lines_without_buffering_them():
    splitter = LineSplitter(8)
    assert splitter.feed(b"abc\n12345") == [(1, b"abc")]
    assert splitter.feed(b"6789") == []  # 9 bytes without a newline: dropped already
    assert splitter.feed(b"0000\nok\n\n") == [(3, b"ok")]
    assert splitter.too_long == 1
    assert splitter.feed(b"tail") == [] and splitter.finish() == [(5, b"tail")]


# -- the process ---------------------------------------------------------------------------------------


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((LOCAL, 0))
        return probe.getsockname()[1]


def test_run_jsonlines_process_writes_ndjson_and_stops_cleanly(tmp_path):
    tcp_port, udp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    data_dir = tmp_path / "data"
    command = [sys.executable, "-m", "ingest_service.jsonlines", "--address", LOCAL, "--tcp-port", str(tcp_port),
               "--udp-port", str(udp_port), "--data-dir", str(data_dir), "--metrics-dir", str(tmp_path / "metrics")]
    with open(tmp_path / "stderr", "wb") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stderr=stderr)
    try:
        def connects():
            try:
                socket.create_connection((LOCAL, tcp_port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(connects, what="the TCP listener")
        with socket.create_connection((LOCAL, tcp_port), timeout=TIMEOUT) as conn:
            conn.sendall(GOOD % 1 + b"bad\n" + GOOD % 2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(GOOD % 3, (LOCAL, udp_port))
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, (tmp_path / "stderr").read_text()
    finally:
        if process.poll() is None:
            process.kill()
    lines = [orjson.loads(line) for path in data_dir.glob("flow-*.ndjson") for line in path.read_bytes().splitlines()]
    assert sorted(d["ipfix"]["octetDeltaCount"] for d in lines) == [1, 2, 3]
    assert all(path.name == "flow-2026.11.26.ndjson" for path in data_dir.glob("flow-*.ndjson"))
    assert list((tmp_path / "metrics").glob("counter_*.db"))  # counters shared with /metrics
