"""Self-check of tests/goexporter (real go-ipfix v0.17.0 exporter) against a minimal
inline receiver: the bytes on the wire are IPFIX as Antrea's Flow Aggregator sends
them (or JSON lines in -json mode), and they carry exactly what -out reports.

Independent of the collector under development: this file only uses sockets, ssl,
and a ~60-line IPFIX walker below.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import threading
from datetime import datetime

import pytest

from tests.support.goexporter import (
    TEMPLATE_ID_V4,
    TEMPLATE_ID_V6,
    GoExporterError,
    build_goexporter,
    run_goexporter,
)
from tests.support.tlscerts import make_tls_files

DOMAIN_ID = 0xA47EA  # the exporter's default -domain-id
TIMEOUT = 15  # seconds, per blocking step

# The IPv4 template with UUIDs, in Antrea's order: (name, element id, enterprise).
# 0 = IANA, 29305 = reverse IANA (RFC 5103), 56506 = Antrea.
V4_TEMPLATE = [
    ("flowStartSeconds", 150, 0), ("flowEndSeconds", 151, 0), ("flowEndReason", 136, 0),
    ("sourceTransportPort", 7, 0), ("destinationTransportPort", 11, 0), ("protocolIdentifier", 4, 0),
    ("packetTotalCount", 86, 0), ("octetTotalCount", 85, 0), ("packetDeltaCount", 2, 0),
    ("octetDeltaCount", 1, 0), ("sourceIPv4Address", 8, 0), ("destinationIPv4Address", 12, 0),
    ("reversePacketTotalCount", 86, 29305), ("reverseOctetTotalCount", 85, 29305),
    ("reversePacketDeltaCount", 2, 29305), ("reverseOctetDeltaCount", 1, 29305),
    ("sourcePodName", 101, 56506), ("sourcePodNamespace", 100, 56506), ("sourcePodUUID", 159, 56506),
    ("sourceNodeName", 104, 56506), ("sourceNodeUUID", 161, 56506),
    ("destinationPodName", 103, 56506), ("destinationPodNamespace", 102, 56506),
    ("destinationPodUUID", 160, 56506), ("destinationNodeName", 105, 56506),
    ("destinationNodeUUID", 162, 56506), ("destinationServicePort", 108, 56506),
    ("destinationServicePortName", 109, 56506), ("destinationServiceUUID", 163, 56506),
    ("ingressNetworkPolicyName", 110, 56506), ("ingressNetworkPolicyNamespace", 111, 56506),
    ("ingressNetworkPolicyUUID", 164, 56506), ("ingressNetworkPolicyType", 115, 56506),
    ("ingressNetworkPolicyRuleName", 141, 56506), ("ingressNetworkPolicyRuleAction", 139, 56506),
    ("egressNetworkPolicyName", 112, 56506), ("egressNetworkPolicyNamespace", 113, 56506),
    ("egressNetworkPolicyUUID", 165, 56506), ("egressNetworkPolicyType", 118, 56506),
    ("egressNetworkPolicyRuleName", 142, 56506), ("egressNetworkPolicyRuleAction", 140, 56506),
    ("tcpState", 136, 56506), ("flowType", 137, 56506), ("egressName", 153, 56506),
    ("egressUUID", 166, 56506), ("egressIP", 154, 56506), ("egressNodeName", 157, 56506),
    ("egressNodeUUID", 167, 56506), ("proxySnatPort", 172, 56506), ("proxySnatIPv4", 170, 56506),
    ("destinationClusterIPv4", 106, 56506), ("destinationServiceIPv4", 168, 56506),
    ("octetDeltaCountFromSourceNode", 123, 56506), ("octetDeltaCountFromDestinationNode", 131, 56506),
    ("octetTotalCountFromSourceNode", 121, 56506), ("octetTotalCountFromDestinationNode", 129, 56506),
    ("packetDeltaCountFromSourceNode", 122, 56506), ("packetDeltaCountFromDestinationNode", 130, 56506),
    ("packetTotalCountFromSourceNode", 120, 56506), ("packetTotalCountFromDestinationNode", 128, 56506),
    ("reverseOctetDeltaCountFromSourceNode", 127, 56506),
    ("reverseOctetDeltaCountFromDestinationNode", 135, 56506),
    ("reverseOctetTotalCountFromSourceNode", 125, 56506),
    ("reverseOctetTotalCountFromDestinationNode", 133, 56506),
    ("reversePacketDeltaCountFromSourceNode", 126, 56506),
    ("reversePacketDeltaCountFromDestinationNode", 134, 56506),
    ("reversePacketTotalCountFromSourceNode", 124, 56506),
    ("reversePacketTotalCountFromDestinationNode", 132, 56506),
    ("flowEndSecondsFromSourceNode", 151, 56506), ("flowEndSecondsFromDestinationNode", 152, 56506),
    ("throughput", 145, 56506), ("throughputFromSourceNode", 147, 56506),
    ("throughputFromDestinationNode", 148, 56506), ("reverseThroughput", 146, 56506),
    ("reverseThroughputFromSourceNode", 149, 56506),
    ("reverseThroughputFromDestinationNode", 150, 56506),
    ("sourcePodLabels", 143, 56506), ("destinationPodLabels", 144, 56506), ("clusterId", 158, 56506),
]
_V6_SWAP = {
    "sourceIPv4Address": ("sourceIPv6Address", 27, 0),
    "destinationIPv4Address": ("destinationIPv6Address", 28, 0),
    "proxySnatIPv4": ("proxySnatIPv6", 171, 56506),
    "destinationClusterIPv4": ("destinationClusterIPv6", 107, 56506),
    "destinationServiceIPv4": ("destinationServiceIPv6", 169, 56506),
}
V6_TEMPLATE = [_V6_SWAP.get(e[0], e) for e in V4_TEMPLATE]


def expected_template(ipv6: bool, uuids: bool) -> list[tuple[str, int, int]]:
    t = V6_TEMPLATE if ipv6 else V4_TEMPLATE
    return [e for e in t if uuids or not e[0].endswith("UUID")]


# ---------------------------------------------------------------------------
# A minimal IPFIX walker (RFC 7011): messages -> sets -> template / data records.

def split_stream(buf: bytes) -> list[bytes]:
    """Split a TCP byte stream into IPFIX messages using the header length."""
    msgs, off = [], 0
    while off < len(buf):
        assert len(buf) - off >= 16, "truncated message header"
        version, length = struct.unpack_from("!HH", buf, off)
        assert version == 10, f"version {version} at offset {off}"
        assert length >= 16 and off + length <= len(buf), "bad message length"
        msgs.append(buf[off:off + length])
        off += length
    return msgs


def parse_message(msg: bytes) -> dict:
    version, length, export_time, seq, domain = struct.unpack_from("!HHIII", msg, 0)
    assert version == 10
    assert length == len(msg), "message length field != datagram/frame length"
    sets, off = [], 16
    while off < length:
        set_id, set_len = struct.unpack_from("!HH", msg, off)
        assert set_len >= 4 and off + set_len <= length, "bad set length"
        sets.append((set_id, msg[off + 4:off + set_len]))
        off += set_len
    return {"export_time": export_time, "seq": seq, "domain": domain, "sets": sets}


def parse_templates(body: bytes) -> dict[int, list[tuple[int, int, int]]]:
    """Template set body -> {template id: [(element id, enterprise, length), ...]}."""
    out, off = {}, 0
    while len(body) - off >= 4:
        tid, count = struct.unpack_from("!HH", body, off)
        off += 4
        fields = []
        for _ in range(count):
            eid, flen = struct.unpack_from("!HH", body, off)
            off += 4
            ent = 0
            if eid & 0x8000:
                eid &= 0x7FFF
                (ent,) = struct.unpack_from("!I", body, off)
                off += 4
            fields.append((eid, ent, flen))
        out[tid] = fields
    return out


def parse_data(body: bytes, fields: list[tuple[int, int, int]]) -> list[list[bytes]]:
    """Data set body -> records, each a list of raw field values."""
    records, off = [], 0
    min_len = sum(1 if f[2] == 65535 else f[2] for f in fields)
    while len(body) - off >= min_len and min_len > 0:  # the rest would be padding
        values = []
        for _, _, flen in fields:
            if flen == 65535:
                flen = body[off]
                off += 1
                if flen == 255:
                    (flen,) = struct.unpack_from("!H", body, off)
                    off += 2
            values.append(body[off:off + flen])
            off += flen
        assert off <= len(body), "record overruns its set"
        records.append(values)
    return records


def decode_as_expected(name: str, raw: bytes, expected):
    """Decode a raw field the way -out represents it, for comparison."""
    if isinstance(expected, int):
        return int.from_bytes(raw, "big")
    if name.endswith("UUID"):
        return raw.hex()
    if ("IPv4" in name or "IPv6" in name) and len(raw) in (4, 16):
        return str(ipaddress.ip_address(raw))
    return raw.decode("utf-8")


def check_ipfix(messages: list[bytes], sent: list[dict], *, uuids: bool) -> dict:
    """Validate the received IPFIX messages against what the exporter says it sent."""
    assert messages, "nothing received"
    templates: dict[int, list] = {}
    received: dict[int, list[list[bytes]]] = {}
    data_seen = 0
    t_min = min(r["export_time_min"] for r in sent) if sent else 0
    t_max = max(r["export_time_max"] for r in sent) if sent else 2**32
    set_ids = set()
    for raw in messages:
        m = parse_message(raw)
        assert m["domain"] == DOMAIN_ID
        assert t_min - 1 <= m["export_time"] <= t_max + 1 or not sent
        # Sequence number = data records sent before this message (RFC 7011 3.1).
        assert m["seq"] == data_seen, (m["seq"], data_seen)
        for set_id, body in m["sets"]:
            set_ids.add(set_id)
            if set_id == 2:
                templates.update(parse_templates(body))
            else:
                assert set_id >= 256, f"unexpected set id {set_id}"
                assert set_id in templates, "data before its template"
                recs = parse_data(body, templates[set_id])
                received.setdefault(set_id, []).extend(recs)
                data_seen += len(recs)
    assert 2 in set_ids and any(s >= 256 for s in set_ids), set_ids
    assert data_seen == len(sent)

    # Both templates are sent, IPv4 (256) then IPv6 (257), exactly as Antrea does.
    for tid, v6 in ((TEMPLATE_ID_V4, False), (TEMPLATE_ID_V6, True)):
        exp = expected_template(v6, uuids)
        assert [(e, ent) for e, ent, _ in templates[tid]] == [(i, ent) for _, i, ent in exp]

    # Every received record carries exactly the values of the matching -out record.
    for tid, recs in received.items():
        expected = [r for r in sent if r["template_id"] == tid]
        assert len(recs) == len(expected)
        for values, exp in zip(recs, expected):
            names = list(exp["fields"])
            assert names == [n for n, _, _ in expected_template(exp["ipv6"], uuids)]
            got = {n: decode_as_expected(n, v, exp["fields"][n]) for n, v in zip(names, values)}
            assert got == exp["fields"]
    return {"templates": templates, "set_ids": set_ids}


# ---------------------------------------------------------------------------
# Receivers

class StreamReceiver:
    """Accept one TCP (optionally TLS) connection and read it until EOF, in a thread."""

    def __init__(self, family=socket.AF_INET, host="127.0.0.1", ssl_context=None):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(1)
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.addr = f"[{host}]:{self.port}" if family == socket.AF_INET6 else f"{host}:{self.port}"
        self.ssl_context = ssl_context
        self.data = bytearray()
        self.error: BaseException | None = None
        self.peer_cert = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(TIMEOUT)
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                self.peer_cert = conn.getpeercert()
            with conn:
                while chunk := conn.recv(65536):
                    self.data += chunk
        except BaseException as e:  # reported by result()
            self.error = e
        finally:
            self.sock.close()

    def result(self) -> bytes:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "receiver did not see EOF in time"
        if self.error:
            raise self.error
        return bytes(self.data)


def udp_receiver(family=socket.AF_INET, host="127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((host, 0))
    return s


def drain_udp(s: socket.socket) -> list[bytes]:
    """Everything queued on the socket. Loopback delivery is synchronous, so once
    the exporter has exited all its datagrams are already queued."""
    s.setblocking(False)
    out = []
    while True:
        try:
            out.append(s.recv(65535))
        except BlockingIOError:
            return out


def udp_addr(s: socket.socket) -> str:
    host, port = s.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def goexporter_binary():
    return build_goexporter()


def test_udp_ipv4_records_match_out_file():
    count = 40
    with udp_receiver() as s:
        sent = run_goexporter(udp_addr(s), "udp", count, seed=3, timeout=TIMEOUT)
        msgs = drain_udp(s)
    assert len(sent) == count and all(not r["ipv6"] for r in sent)
    check_ipfix(msgs, sent, uuids=True)
    # UDP messages fit the path MTU (1500 - 28): several records per message.
    assert all(len(m) <= 1472 for m in msgs)
    assert len(msgs) < count

    # Realistic spread of values, deterministic for a seed.
    fields = [r["fields"] for r in sent]
    assert {f["flowType"] for f in fields} == {1, 2, 3, 4}
    assert {f["ingressNetworkPolicyRuleAction"] for f in fields} | \
        {f["egressNetworkPolicyRuleAction"] for f in fields} == {0, 1, 2, 3}
    assert any(f["ingressNetworkPolicyName"] == "" for f in fields)
    assert any(f["octetTotalCount"] > 2**32 for f in fields)
    assert any(len(f["sourcePodLabels"]) > 255 or len(f["destinationPodLabels"]) > 255 for f in fields)
    assert any(f["destinationServicePortName"].startswith("prod/svc-") for f in fields)
    assert "93.184.216.34" in {f["destinationIPv4Address"] for f in fields} or \
        any(f["flowType"] == 3 for f in fields)
    for f in fields:
        assert f["flowStartSeconds"] <= f["flowEndSeconds"] <= f["flowStartSeconds"] + 60
        assert f["octetDeltaCount"] <= f["octetTotalCount"]
        if f["sourcePodLabels"]:
            assert isinstance(json.loads(f["sourcePodLabels"]), dict)

    # Same seed, same records (apart from the clock).
    with udp_receiver() as s2:
        again = run_goexporter(udp_addr(s2), "udp", count, seed=3, timeout=TIMEOUT)
    clock = {"flowStartSeconds", "flowEndSeconds", "flowEndSecondsFromSourceNode",
             "flowEndSecondsFromDestinationNode"}
    strip = lambda rs: [{k: v for k, v in r["fields"].items() if k not in clock} for r in rs]  # noqa: E731
    assert strip(again) == strip(sent)


def test_tcp_mixed_ipv4_ipv6():
    count = 60
    rx = StreamReceiver()
    sent = run_goexporter(rx.addr, "tcp", count, mix=True, seed=5, timeout=TIMEOUT)
    msgs = split_stream(rx.result())
    assert [r["ipv6"] for r in sent] == [i % 2 == 1 for i in range(count)]
    assert {r["template_id"] for r in sent} == {TEMPLATE_ID_V4, TEMPLATE_ID_V6}
    assert any("fd00:10:10::" in r["fields"].get("sourceIPv6Address", "") for r in sent)
    info = check_ipfix(msgs, sent, uuids=True)
    assert {TEMPLATE_ID_V4, TEMPLATE_ID_V6} <= info["set_ids"]


def test_tls_with_client_certificate_ipv6_records(tmp_path):
    tls = make_tls_files(tmp_path)
    rx = StreamReceiver(ssl_context=tls.server_context(require_client_cert=True))
    count = 30
    sent = run_goexporter(rx.addr, "tls", count, ipv6=True, tls=tls, seed=9, timeout=TIMEOUT)
    data = rx.result()
    assert rx.peer_cert, "the exporter presented no client certificate"
    assert dict(x[0] for x in rx.peer_cert["subject"])["commonName"] == "flow-aggregator"
    check_ipfix(split_stream(data), sent, uuids=True)
    assert all(r["ipv6"] and r["template_id"] == TEMPLATE_ID_V6 for r in sent)


def test_tls_rejects_unknown_ca(tmp_path):
    server = make_tls_files(tmp_path / "server")
    other = make_tls_files(tmp_path / "other")  # the exporter trusts another CA
    rx = StreamReceiver(ssl_context=server.server_context(require_client_cert=False))
    with pytest.raises(GoExporterError, match="certificate"):
        run_goexporter(rx.addr, "tls", 1, tls=other, client_cert=False, timeout=TIMEOUT)
    rx.thread.join(TIMEOUT)


def test_tcp_connection_refused_is_an_error():
    with socket.socket() as s:  # bound, not listening: connect gets ECONNREFUSED
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(GoExporterError, match="connection"):
            run_goexporter(f"127.0.0.1:{port}", "tcp", 1, timeout=TIMEOUT)


def test_json_lines_over_tcp():
    count = 25
    rx = StreamReceiver()
    sent = run_goexporter(rx.addr, "tcp", count, json_mode=True, mix=True, seed=11, timeout=TIMEOUT)
    data = rx.result()
    lines = data.decode("utf-8").splitlines()
    assert data.endswith(b"\n") and len(lines) == count == len(sent)
    for line, exp in zip(lines, sent):
        doc = json.loads(line)
        assert set(doc) == {"ipfix", "@timestamp"}
        assert isinstance(doc["ipfix"], dict)
        ts = datetime.fromisoformat(doc["@timestamp"].replace("Z", "+00:00"))
        assert ts.tzinfo is not None
        assert exp["export_time_min"] - 1 <= ts.timestamp() <= exp["export_time_max"] + 1
        # No UUIDs in JSON mode (go-ipfix cannot encode octetArray); values otherwise
        # identical to -out: exact integers, canonical address text, plain strings.
        assert doc["ipfix"] == exp["fields"]
        assert not any(k.endswith("UUID") for k in doc["ipfix"])


def test_udp_over_ipv6_loopback():
    try:
        s = udp_receiver(socket.AF_INET6, "::1")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    with s:
        sent = run_goexporter(udp_addr(s), "udp", 12, uuids=False, seed=2, timeout=TIMEOUT)
        msgs = drain_udp(s)
    check_ipfix(msgs, sent, uuids=False)
    assert all(len(m) <= 1500 - 48 for m in msgs)  # IPv6 + UDP headers deducted
