"""UDP, TCP and TLS listeners end to end, in-process, with messages from tests/support/ipfix_builder.py."""
from __future__ import annotations

import socket
import ssl
import struct
import threading
import time

import orjson
import pytest

from ingest_service.documents import DocumentLayout
from ingest_service.ipfix.decoder import FlowDecoder
from ingest_service.ipfix.registry import default_registry
from ingest_service.listener.sockets import open_tcp_socket, open_udp_sockets
from ingest_service.listener.tcp import StreamWorker, server_tls_context
from ingest_service.listener.udp import UdpWorker
from tests.support.ipfix_builder import Field, data_set, ipfix_message, template_record, template_set
from tests.support.tlscerts import make_tls_files

IP = socket.inet_aton
LOCAL = "127.0.0.1"

# Template 256 of exporter "A" and a different template 256 of exporter "B".
FIELDS_A = [Field(8, 4), Field(12, 4), Field(1, 8), Field(7, 2)]  # src, dst, octetDeltaCount, srcPort
FIELDS_B = [Field(11, 2), Field(2, 8), Field(4, 1)]  # dstPort, packetDeltaCount, protocolIdentifier


def record_a(n: int) -> bytes:
    return IP(f"10.0.0.{n % 250 + 1}") + IP("10.1.0.1") + struct.pack(">QH", 1000 + n, 40000 + n)


def doc_a(n: int) -> dict:
    return {"sourceIPv4Address": f"10.0.0.{n % 250 + 1}", "destinationIPv4Address": "10.1.0.1",
            "octetDeltaCount": 1000 + n, "sourceTransportPort": 40000 + n, "version": 10, "flowset_id": 256}


def record_b(n: int) -> bytes:
    return struct.pack(">HQB", 443, 7 + n, 17)


def doc_b(n: int) -> dict:
    return {"destinationTransportPort": 443, "packetDeltaCount": 7 + n, "protocolIdentifier": 17,
            "version": 10, "flowset_id": 256}


def message_a(*numbers: int, template: bool = True, sequence: int = 0) -> bytes:
    sets = [template_set(template_record(256, FIELDS_A))] if template else []
    sets.append(data_set(256, *[record_a(n) for n in numbers]))
    return ipfix_message(*sets, sequence=sequence)


def message_b(*numbers: int, template: bool = True) -> bytes:
    sets = [template_set(template_record(256, FIELDS_B))] if template else []
    sets.append(data_set(256, *[record_b(n) for n in numbers]))
    return ipfix_message(*sets)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class CollectingSink:
    """Keeps documents in memory; with a closed ``gate`` it blocks in write (a slow output)."""

    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate
        self.documents: list[dict] = []
        self._lock = threading.Lock()

    def write(self, lines: list[bytes]) -> int:
        if self.gate is not None:
            self.gate.wait(30)
        with self._lock:
            self.documents.extend(orjson.loads(line) for line in lines)
        return len(lines)

    def flush(self) -> int:
        return 0

    def close(self) -> int:
        return 0

    def bodies(self) -> list[dict]:
        with self._lock:
            return [d["ipfix"] for d in self.documents]

    def count(self) -> int:
        with self._lock:
            return len(self.documents)


@pytest.fixture(scope="module")
def registry():
    return default_registry()


@pytest.fixture
def workers(registry):
    """Factory for started workers on 127.0.0.1 (free ports); stops them at the end."""
    started, sockets = [], []

    def make(kind: str, sink=None, tls=None, receive_buffer: int = 1 << 20, start: bool = True,
             address: str = LOCAL, **options):
        sink = sink if sink is not None else CollectingSink()
        options = {"poll_interval": 0.05, **options}
        if kind == "udp":
            (sock,) = open_udp_sockets(address, 0, 1, receive_buffer)
            worker = UdpWorker(sock, FlowDecoder(registry), sink, DocumentLayout(), **options)
        else:
            sock = open_tcp_socket(address, 0)
            worker = StreamWorker(sock, FlowDecoder(registry), sink, DocumentLayout(), tls=tls, **options)
        sockets.append(sock)
        worker.port = sock.getsockname()[1]
        worker.sink = sink
        if start:
            worker.start()
            started.append(worker)
        else:
            worker.start_later = lambda: (worker.start(), started.append(worker))
        return worker

    yield make
    for worker in started:
        if isinstance(worker.sink, CollectingSink) and worker.sink.gate is not None:
            worker.sink.gate.set()
        assert worker.stop(10), "worker did not stop in time"
    for sock in sockets:
        sock.close()


def counters(worker) -> dict:
    return worker.snapshot().counters


def udp_sender() -> socket.socket:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((LOCAL, 0))
    return sender


# -- UDP ------------------------------------------------------------------------------


def test_udp_documents_arrive_with_their_values(workers):
    worker = workers("udp")
    sender = udp_sender()
    sender.sendto(message_a(1, 2, 3), (LOCAL, worker.port))
    wait_for(lambda: worker.sink.count() == 3, what="3 documents")
    document = worker.sink.documents[0]
    assert document["host"] == LOCAL
    assert document["@timestamp"] == "2023-11-14T22:13:20.000Z"
    assert document["type"] == "ipfix"
    assert worker.sink.bodies() == [doc_a(1), doc_a(2), doc_a(3)]
    wait_for(lambda: counters(worker)["documents_written"] == 3, what="documents_written")
    stats = counters(worker)
    assert stats["udp_datagrams"] == 1 and stats["records"] == 3 and stats["udp_queue_drops"] == 0
    sender.close()


def test_udp_exporters_sharing_a_template_id_never_mix(workers):
    worker = workers("udp")
    a, b = udp_sender(), udp_sender()
    target = (LOCAL, worker.port)
    # Templates of both first, then data interleaved: a mix-up would decode garbage.
    a.sendto(ipfix_message(template_set(template_record(256, FIELDS_A))), target)
    b.sendto(ipfix_message(template_set(template_record(256, FIELDS_B))), target)
    for n in range(5):
        a.sendto(message_a(n, template=False), target)
        b.sendto(message_b(n, n + 100, template=False), target)
    wait_for(lambda: worker.sink.count() == 15, what="15 documents")
    bodies = worker.sink.bodies()
    assert [d for d in bodies if "sourceIPv4Address" in d] == [doc_a(n) for n in range(5)]
    assert [d for d in bodies if "sourceIPv4Address" not in d] == [doc_b(m) for n in range(5) for m in (n, n + 100)]
    assert counters(worker).get("malformed_records", 0) == 0
    a.close()
    b.close()


def test_udp_queue_overflow_drops_and_counts_without_blocking_the_reader(workers):
    gate = threading.Event()  # the output is stuck until we open it
    worker = workers("udp", sink=CollectingSink(gate), queue_size=2, output_queue_size=1, batch_lines=1)
    sender = udp_sender()
    for n in range(300):
        sender.sendto(message_a(n), (LOCAL, worker.port))
    # The reader keeps receiving although nothing can be written.
    wait_for(lambda: counters(worker)["udp_datagrams"] == 300, what="all datagrams read")
    stats = counters(worker)
    assert stats["udp_queue_drops"] >= 290  # the pipeline holds only a handful
    gate.set()
    kept = 300 - stats["udp_queue_drops"]
    wait_for(lambda: counters(worker)["documents_written"] == kept, what="the kept datagrams written")
    assert worker.snapshot().cumulative["udp_kernel_drops"] == 0
    sender.close()


def udp_receive_queue(port: int) -> int:
    """Bytes waiting in the receive buffer of our UDP socket on ``port`` (/proc/net/udp)."""
    with open("/proc/net/udp") as table:
        for row in table.readlines()[1:]:
            columns = row.split()
            if int(columns[1].split(":")[1], 16) == port:
                return int(columns[4].split(":")[1], 16)
    raise LookupError(port)


def test_udp_kernel_drops_are_reported(workers):
    # A tiny receive buffer and nobody reading: the kernel drops most of a burst.
    worker = workers("udp", receive_buffer=4096, start=False)
    sender = udp_sender()
    for n in range(200):
        sender.sendto(message_a(n), (LOCAL, worker.port))
    assert udp_receive_queue(worker.port) > 0
    worker.start_later()
    wait_for(lambda: udp_receive_queue(worker.port) == 0, what="the reader to empty the socket")
    # The kernel's drop count travels with the next datagram it queues (SO_RXQ_OVFL).
    sender.sendto(message_a(999), (LOCAL, worker.port))
    wait_for(lambda: worker.reader.kernel_drops > 0, what="kernel drops reported with a datagram")
    assert worker.reader.datagrams + worker.reader.kernel_drops == 201
    snapshot = worker.snapshot()
    assert snapshot.counters["udp_datagrams"] + snapshot.cumulative["udp_kernel_drops"] == 201
    sender.close()


def test_udp_kernel_drops_without_a_later_datagram_come_from_proc(workers):
    from ingest_service.listener.udp import proc_socket_drops

    (sock,) = open_udp_sockets(LOCAL, 0, 1, 4096)
    sender = udp_sender()
    for n in range(200):
        sender.sendto(message_a(n), sock.getsockname())
    sock.setblocking(False)
    received = 0
    try:
        while sock.recv(65536):
            received += 1
    except BlockingIOError:
        pass
    assert 0 < received < 200
    assert proc_socket_drops(sock) == 200 - received
    sock.close()
    sender.close()


def test_udp_malformed_datagram_is_counted_and_others_still_decode(workers):
    worker = workers("udp")
    sender = udp_sender()
    sender.sendto(b"\x00\x0a\x00", (LOCAL, worker.port))  # 3 bytes
    sender.sendto(b"\x00\x0a\x00\x30" + b"\xff" * 44, (LOCAL, worker.port))  # IPFIX header, garbage sets
    sender.sendto(message_a(7), (LOCAL, worker.port))
    wait_for(lambda: worker.sink.count() == 1, what="the good datagram")
    assert worker.sink.bodies() == [doc_a(7)]
    stats = counters(worker)
    assert stats["malformed_messages"] == 1 and stats["malformed_sets"] == 1
    sender.close()


# -- TCP ------------------------------------------------------------------------------


def connect(port: int) -> socket.socket:
    return socket.create_connection((LOCAL, port), timeout=10)


def assert_closed_by_peer(conn: socket.socket) -> None:
    # Closed with our bytes unread, the listener's kernel answers with a reset.
    try:
        assert conn.recv(100) == b""
    except ConnectionResetError:
        pass


def test_tcp_documents_arrive_and_templates_die_with_the_connection(workers):
    worker = workers("tcp")
    first = connect(worker.port)
    first.sendall(message_a(1, 2))
    first.sendall(message_a(3, template=False, sequence=2))  # uses the template sent before
    wait_for(lambda: worker.sink.count() == 3, what="3 documents")
    assert worker.sink.bodies() == [doc_a(1), doc_a(2), doc_a(3)]
    # Another connection does not see that template (RFC 7011 8: templates are per session).
    second = connect(worker.port)
    second.sendall(message_a(4, template=False))
    wait_for(lambda: counters(worker).get("data_sets_without_template") == 1, what="the orphan data set")
    first.close()
    second.close()
    wait_for(lambda: worker.snapshot().gauges["tcp_connections_open"] == 0, what="connections closed")
    wait_for(lambda: worker.pipeline.decoder.template_count() == 0, what="templates forgotten")
    stats = counters(worker)
    assert stats["tcp_connections"] == 2 and stats["tcp_messages"] == 3 and stats["documents_written"] == 3


def test_tcp_garbage_closes_that_connection_only(workers):
    worker = workers("tcp")
    good = connect(worker.port)
    good.sendall(message_a(1))
    wait_for(lambda: worker.sink.count() == 1, what="the first document")
    bad = connect(worker.port)
    bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_closed_by_peer(bad)
    # Well framed but malformed inside: counted by the decoder, the connection stays.
    good.sendall(struct.pack(">HHIII", 10, 24, 1_700_000_000, 1, 1) + struct.pack(">HH", 256, 400) + b"\0" * 4)
    good.sendall(message_a(2, template=False, sequence=1))
    wait_for(lambda: worker.sink.count() == 2, what="the second document")
    assert worker.sink.bodies() == [doc_a(1), doc_a(2)]
    stats = counters(worker)
    assert stats["tcp_framing_errors"] == 1 and stats["malformed_sets"] == 1
    good.close()
    bad.close()


def test_tcp_connection_ending_inside_a_message_is_counted(workers):
    worker = workers("tcp")
    conn = connect(worker.port)
    message = message_a(1)
    conn.sendall(message + message[:20])
    conn.close()
    wait_for(lambda: counters(worker).get("tcp_truncated_messages") == 1, what="the truncation")
    wait_for(lambda: worker.sink.count() == 1, what="the complete message")


def test_tcp_backpressure_pauses_reading_and_loses_nothing(workers):
    gate = threading.Event()
    worker = workers("tcp", sink=CollectingSink(gate), queue_size=2, output_queue_size=1, batch_lines=1)
    total = 2000
    conn = connect(worker.port)
    stream = message_a(0) + b"".join(message_a(n, template=False, sequence=n) for n in range(1, total))
    sender = threading.Thread(target=conn.sendall, args=(stream,), daemon=True)
    sender.start()
    wait_for(lambda: counters(worker).get("tcp_backpressure_waits", 0) >= 1, what="backpressure")
    time.sleep(0.3)  # time enough to read on, if the listener did not pause
    # Reading stopped at what the stuck pipeline holds (a few per queue and stage).
    assert counters(worker)["tcp_messages"] <= 10
    gate.set()
    wait_for(lambda: worker.sink.count() == total, timeout=30, what="every document")
    assert worker.sink.bodies() == [doc_a(n) for n in range(total)]
    sender.join(10)
    conn.close()
    stats = counters(worker)
    assert stats["tcp_messages"] == total and stats.get("lost_records", 0) == 0


def test_many_tcp_exporters_at_once(workers):
    worker = workers("tcp")
    connections = [connect(worker.port) for _ in range(20)]
    for i, conn in enumerate(connections):
        conn.sendall(message_a(i))
    for i, conn in enumerate(connections):
        conn.sendall(message_a(i + 100, template=False, sequence=1))
    wait_for(lambda: worker.sink.count() == 40, what="40 documents")
    assert sorted(d["sourceTransportPort"] for d in worker.sink.bodies()) == sorted(
        [40000 + i for i in range(20)] + [40100 + i for i in range(20)])
    for conn in connections:
        conn.close()


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
def test_dual_stack_listeners_name_ipv4_exporters_plainly(workers):
    udp = workers("udp", address="::")
    tcp = workers("tcp", address="::")
    udp_sender().sendto(message_a(1), (LOCAL, udp.port))
    with connect(tcp.port) as conn:
        conn.sendall(message_a(2))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as six:
        six.sendto(message_a(3), ("::1", udp.port))
    wait_for(lambda: udp.sink.count() == 2 and tcp.sink.count() == 1, what="3 documents")
    assert sorted(d["host"] for d in udp.sink.documents + tcp.sink.documents) == ["127.0.0.1", "127.0.0.1", "::1"]


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def tls_connect(port: int, files, with_client_cert: bool) -> ssl.SSLSocket:
    context = files.client_context(with_client_cert=with_client_cert)
    return context.wrap_socket(connect(port), server_hostname=files.server_name)


def test_tls_without_client_certificates(workers, tls_files):
    worker = workers("tcp", tls=server_tls_context(str(tls_files.server_cert), str(tls_files.server_key)))
    conn = tls_connect(worker.port, tls_files, with_client_cert=False)
    conn.sendall(message_a(1, 2))
    wait_for(lambda: worker.sink.count() == 2, what="2 documents")
    assert worker.sink.bodies() == [doc_a(1), doc_a(2)]
    assert [key[0] for key in worker.pipeline.decoder.sessions._sessions] == ["tls"]
    conn.close()


def test_mtls_accepts_certified_clients_and_refuses_others(workers, tls_files):
    context = server_tls_context(str(tls_files.server_cert), str(tls_files.server_key), str(tls_files.ca_cert))
    worker = workers("tcp", tls=context)
    good = tls_connect(worker.port, tls_files, with_client_cert=True)
    good.sendall(message_a(1))
    wait_for(lambda: worker.sink.count() == 1, what="the certified client's document")

    # Without a certificate: with TLS 1.3 the client may finish its side of the
    # handshake, but the server refuses and closes before reading any IPFIX.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        anonymous = tls_connect(worker.port, tls_files, with_client_cert=False)
        anonymous.sendall(message_a(50))
        if anonymous.recv(100) == b"":
            raise ConnectionError("closed")
    # Plain TCP to the TLS port fails the handshake too.
    plain = connect(worker.port)
    plain.sendall(message_a(51))
    try:
        plain.recv(100)
    except ConnectionError:
        pass
    plain.close()
    wait_for(lambda: counters(worker).get("tls_handshake_failures") == 2, what="2 refused handshakes")

    good.sendall(message_a(2, template=False, sequence=1))  # the certified client is unaffected
    wait_for(lambda: worker.sink.count() == 2, what="the second document")
    assert worker.sink.bodies() == [doc_a(1), doc_a(2)]
    good.close()
