"""``flow-ingest serve`` as a subprocess: UDP and TCP in, NDJSON out, clean shutdown."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from ingest_service.service import STABLE_KEYS
from tests.support.tlscerts import make_tls_files
from tests.test_listeners import LOCAL, doc_a, message_a, udp_sender, wait_for

REPO = Path(__file__).resolve().parents[1]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((LOCAL, 0))
        return probe.getsockname()[1]


class Server:
    """A ``flow-ingest serve`` subprocess on free local ports, logs and stdout in files."""

    def __init__(self, tmp_path: Path, *options: str, udp: bool = True, tcp: bool = True):
        self.data_dir = tmp_path / "data"
        self.stats_file = tmp_path / "stats.json"
        self.stdout_path, self.stderr_path = tmp_path / "stdout", tmp_path / "stderr"
        self.udp_port = free_port(socket.SOCK_DGRAM) if udp else 0
        self.tcp_port = free_port(socket.SOCK_STREAM) if tcp else 0
        command = [sys.executable, "-m", "ingest_service.cli", "serve", "--data-dir", str(self.data_dir),
                   "--udp-address", LOCAL, "--udp-port", str(self.udp_port),
                   "--tcp-address", LOCAL, "--tcp-port", str(self.tcp_port),
                   "--stats-file", str(self.stats_file), "--flush-interval", "0.2",
                   # the HTTP API and JSON lines only where a test asks for them (later options win)
                   "--http-port", "0", "--jsonlines-tcp-port", "0", "--jsonlines-udp-port", "0", *options]
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=stdout, stderr=stderr)
        # The supervisor writes the stats file once its sockets are bound.
        wait_for(lambda: self.stats_file.exists() or self.process.poll() is not None, timeout=20, what="startup")
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited at startup: {self.stderr()}")

    def stats(self) -> dict:
        return json.loads(self.stats_file.read_text())

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, timeout: float = 15.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def documents(self) -> list[dict]:
        found = []
        for path in sorted(self.data_dir.glob("flow-*.ndjson")):
            found += [orjson.loads(line) for line in path.read_bytes().splitlines()]
        return found


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(*options: str, **kinds) -> Server:
        server = Server(tmp_path, *options, **kinds)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


def bodies(documents: list[dict]) -> Counter:
    return Counter(orjson.dumps(d["ipfix"], option=orjson.OPT_SORT_KEYS) for d in documents)


def normalized_doc_a(n: int) -> dict:
    # serve writes schema-normalized documents: the decoded elements plus the derived fields
    body = doc_a(n)
    body.update(bytes=body["octetDeltaCount"], sourceIP=body["sourceIPv4Address"],
                destinationIP=body["destinationIPv4Address"])
    return body


def expected(numbers) -> Counter:
    return Counter(orjson.dumps(normalized_doc_a(n), option=orjson.OPT_SORT_KEYS) for n in numbers)


def test_every_record_is_written_and_sigterm_exits_cleanly(serve):
    server = serve("--udp-workers", "2")
    assert set(STABLE_KEYS) <= set(server.stats())
    exporters = [udp_sender() for _ in range(3)]
    sent = []
    for e, exporter in enumerate(exporters):
        for m in range(20):
            numbers = [e * 1000 + m * 5 + i for i in range(5)]
            exporter.sendto(message_a(*numbers, sequence=m * 5), (LOCAL, server.udp_port))
            sent += numbers
    closed, still_open = (socket.create_connection((LOCAL, server.tcp_port), timeout=10) for _ in range(2))
    for c, conn in enumerate((closed, still_open)):
        stream = b""
        for m in range(20):
            numbers = [10_000 + c * 1000 + m * 5 + i for i in range(5)]
            stream += message_a(*numbers, template=m == 0, sequence=m * 5)
            sent += numbers
        conn.sendall(stream)
    closed.close()
    # No waiting: what the kernel holds when SIGTERM arrives must still be written.
    assert server.stop() == 0, server.stderr()
    still_open.close()
    documents = server.documents()
    assert bodies(documents) == expected(sent)
    assert {d["@timestamp"] for d in documents} == {"2023-11-14T22:13:20.000Z"}
    assert [p.name for p in server.data_dir.iterdir()] == ["flow-2023.11.14.ndjson"]
    stats = server.stats()
    assert stats["documents_written"] == len(sent) == 500
    assert stats["udp_datagrams"] == 60 and stats["tcp_messages"] == 40 and stats["tcp_connections"] == 2
    assert stats["udp_queue_drops"] == 0 and stats["documents_lost"] == 0 and stats["worker_restarts"] == 0
    assert "final stats: " in server.stderr()
    assert server.stdout_path.read_bytes() == b""


def test_output_to_stdout(serve):
    server = serve("--output", "-", "--udp-workers", "2", tcp=False)
    sent = []
    for e in range(4):
        exporter = udp_sender()
        for m in range(10):
            numbers = [e * 100 + m * 2, e * 100 + m * 2 + 1]
            exporter.sendto(message_a(*numbers, sequence=m * 2), (LOCAL, server.udp_port))
            sent += numbers
        exporter.close()
    assert server.stop() == 0, server.stderr()
    documents = [orjson.loads(line) for line in server.stdout_path.read_bytes().splitlines()]
    assert bodies(documents) == expected(sent)
    assert not server.data_dir.exists()


def test_a_dead_worker_is_restarted_and_reported(serve):
    server = serve("--udp-workers", "2")
    wait_for(lambda: len(server.children()) == 3, what="udp-0, udp-1 and tcp")
    workers = server.children()
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: server.stats()["worker_restarts"] == 3, what="restarts")
    wait_for(lambda: len(server.children()) == 3 and not set(server.children()) & set(workers), what="new workers")
    exporter = udp_sender()
    exporter.sendto(message_a(1, 2), (LOCAL, server.udp_port))
    with socket.create_connection((LOCAL, server.tcp_port), timeout=10) as conn:
        conn.sendall(message_a(3))
    wait_for(lambda: server.stats()["documents_written"] == 3, what="documents from the new workers")
    assert server.stop() == 0, server.stderr()
    assert bodies(server.documents()) == expected([1, 2, 3])
    assert server.stderr().count("died with signal SIGKILL; restarting") == 3


def test_mutual_tls_on_the_tcp_port(serve, tmp_path):
    files = make_tls_files(tmp_path / "tls")
    server = serve("--tls-cert", str(files.server_cert), "--tls-key", str(files.server_key),
                   "--tls-client-ca", str(files.ca_cert), udp=False)
    raw = socket.create_connection((LOCAL, server.tcp_port), timeout=10)
    with files.client_context().wrap_socket(raw, server_hostname=files.server_name) as conn:
        conn.sendall(message_a(1, 2))
        wait_for(lambda: server.stats()["documents_written"] == 2, what="2 documents")
    assert server.stop() == 0, server.stderr()
    assert bodies(server.documents()) == expected([1, 2])
    assert "listening on tls (client certificates required)" in server.stderr()


def test_stats_are_logged_while_running(serve):
    server = serve("--stats-interval", "0.3", tcp=False)
    udp_sender().sendto(message_a(1), (LOCAL, server.udp_port))
    wait_for(lambda: "documents_written=1" in server.stderr(), what="a stats log line")
    assert server.stop() == 0


@pytest.mark.parametrize("options, message", [
    (("--udp-port", "0", "--tcp-port", "0", "--http-port", "0", "--jsonlines-tcp-port", "0",
      "--jsonlines-udp-port", "0"), "nothing to listen on"),
    (("--tls-cert", "x.pem"), "--tls-cert and --tls-key go together"),
    (("--tls-client-ca", "ca.pem"), "--tls-client-ca needs --tls-cert"),
])
def test_bad_options_are_refused(options, message):
    result = subprocess.run([sys.executable, "-m", "ingest_service.cli", "serve", *options],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr


def test_a_port_in_use_is_reported(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        result = subprocess.run([sys.executable, "-m", "ingest_service.cli", "serve", "--udp-port", "0",
                                 "--tcp-address", LOCAL, "--tcp-port", str(taken.getsockname()[1]),
                                 "--data-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "cannot listen" in result.stderr
