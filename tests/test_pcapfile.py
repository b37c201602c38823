"""Capture reading for `flow-ingest decode`: pcap and pcapng, Ethernet/VLAN, IPv4 and IPv6."""
from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections import Counter
from io import BytesIO
from pathlib import Path

import orjson

from ingest_service.pcapfile import read_datagrams
from tests.support.ipfix_builder import Field, data_set, ipfix_message, template_record, template_set

REPO = Path(__file__).resolve().parents[1]
MESSAGE = ipfix_message(template_set(template_record(300, [Field(8, 4), Field(7, 2)])),
                        data_set(300, socket.inet_aton("10.1.1.1") + struct.pack(">H", 443)))


def udp_ipv4_frame(payload: bytes, sport=50000, dport=4739, vlan=False) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton("192.0.2.7"), socket.inet_aton("192.0.2.1")) + udp
    ether = b"\x02" * 6 + b"\x04" * 6
    if vlan:
        ether += struct.pack(">HH", 0x8100, 42)
    return ether + struct.pack(">H", 0x0800) + ip


def udp_ipv6_frame(payload: bytes, sport=50001, dport=4739) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(">IHBB16s16s", 0x60000000, len(udp), 17, 64, socket.inet_pton(socket.AF_INET6, "2001:db8::7"),
                     socket.inet_pton(socket.AF_INET6, "2001:db8::1")) + udp
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack(">H", 0x86DD) + ip


def pcapng(frames: list[bytes]) -> bytes:
    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        length = 12 + len(body)
        return struct.pack("<II", kind, length) + body + struct.pack("<I", length)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HHB3x", 9, 1, 6) + struct.pack("<HH", 0, 0))
    for index, frame in enumerate(frames):
        ticks = (1_700_000_000 + index) * 1_000_000
        out += block(6, struct.pack("<IIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame)) + struct.pack("<I", len(frame)) + frame)
    return out


def pcap(frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for index, frame in enumerate(frames):
        out += struct.pack("<IIII", 1_700_000_000 + index, 0, len(frame), len(frame)) + frame
    return out


def test_pcapng_and_pcap_yield_the_same_datagrams():
    frames = [udp_ipv4_frame(MESSAGE), udp_ipv4_frame(MESSAGE, vlan=True), udp_ipv6_frame(MESSAGE),
              udp_ipv4_frame(b"not udp?")[:-3]]  # a truncated-looking frame is still read as far as it goes
    for data in (pcapng(frames), pcap(frames)):
        skipped: Counter = Counter()
        datagrams = list(read_datagrams(BytesIO(data), skipped))
        assert [(d.src, d.sport) for d in datagrams[:3]] == [("192.0.2.7", 50000), ("192.0.2.7", 50000), ("2001:db8::7", 50001)]
        assert datagrams[0].payload == MESSAGE and datagrams[2].payload == MESSAGE
        assert abs(datagrams[1].timestamp - 1_700_000_001) < 1e-6


def test_decode_cli_on_pcapng(tmp_path):
    capture = tmp_path / "flows.pcapng"
    capture.write_bytes(pcapng([udp_ipv4_frame(MESSAGE), udp_ipv6_frame(MESSAGE)]))
    result = subprocess.run([sys.executable, "-m", "ingest_service.cli", "decode", "--stats", str(capture)],
                            cwd=REPO, capture_output=True, timeout=60, check=True)
    documents = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [d["host"] for d in documents] == ["192.0.2.7", "2001:db8::7"]  # two exporters, two sessions
    assert all(d["ipfix"]["sourceIPv4Address"] == "10.1.1.1" and d["ipfix"]["sourceTransportPort"] == 443 for d in documents)
    assert orjson.loads(result.stderr.splitlines()[-1])["templates_added"] == 2


def test_not_a_capture_is_refused(tmp_path):
    bogus = tmp_path / "bogus.pcap"
    bogus.write_bytes(b"hello world")
    result = subprocess.run([sys.executable, "-m", "ingest_service.cli", "decode", str(bogus)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a pcap or pcapng file" in result.stderr
