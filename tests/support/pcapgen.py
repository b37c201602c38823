"""Write pcap files of synthetic traffic whose flows are known exactly (standard library only).

Two uses in the tests:

* ``write_scenario(path)`` writes an Ethernet pcap of TCP/UDP/ICMP conversations over
  IPv4 and IPv6 and returns the flows it contains, one ``ExpectedFlow`` per direction
  that carried packets: addresses, ports, protocol, packet and byte counts, TCP flags
  union, ToS and first/last packet times.  A real exporter (softflowd) reads the pcap;
  the test compares what the collector decodes with these flows.
* ``write_udp_capture(path, datagrams)`` wraps received export datagrams (NetFlow /
  IPFIX payloads) into UDP/IPv4 frames, as a capture on the collector host would show
  them, for ``flow-ingest decode`` and tshark.

Conventions
-----------
* Times are integer microseconds since the epoch.  The default scenario uses whole
  milliseconds (exporters report milliseconds, so expected values are exact) and ends
  on a whole second (NetFlow v9 headers carry the export time in whole seconds only,
  so the export time equal to the last packet's time is then exact too; see
  ``docs/real-exporters.md``).
* "Octets" are IP-level bytes (IP header included, link layer excluded), which is what
  NetFlow/IPFIX octet counters count.
* ICMP has no ports: like Cisco routers, exporters put ``type << 8 | code`` into the
  destination port (v5) or ``icmpTypeCodeIPv4/IPv6`` (v9/IPFIX).  An ICMP
  ``Conversation`` therefore carries one type/code, in one direction: an echo request
  and its reply are two conversations (and two flows), as flow keys see them.
"""
from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field
from typing import Iterable, Sequence

LINKTYPE_ETHERNET = 1
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# 1700000000 = 2023-11-14T22:13:20Z: a fixed, whole-second base keeps runs reproducible.
DEFAULT_BASE_US = 1_700_000_000 * 1_000_000

_MAC_A = bytes.fromhex("020000000001")
_MAC_B = bytes.fromhex("020000000002")


# -- wire encoders ------------------------------------------------------------------


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def _with_checksum(header: bytes, offset: int, body: bytes, pseudo: bytes, udp: bool = False) -> bytes:
    segment = bytearray(header + body)
    csum = inet_checksum(pseudo + bytes(segment))
    if csum == 0 and udp:  # UDP: a computed 0 is sent as 0xFFFF (0 means "no checksum")
        csum = 0xFFFF
    struct.pack_into("!H", segment, offset, csum)
    return bytes(segment)


def tcp_segment(src: bytes, dst: bytes, sport: int, dport: int, flags: int, payload: bytes,
                seq: int = 0, ack: int = 0, window: int = 65535) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                         5 << 4, flags, window, 0, 0)
    return _with_checksum(header, 16, payload, _pseudo_header(src, dst, PROTO_TCP, len(header) + len(payload)))


def udp_datagram(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    header = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    return _with_checksum(header, 6, payload, _pseudo_header(src, dst, PROTO_UDP, 8 + len(payload)), udp=True)


def icmp_message(icmp_type: int, code: int, rest: bytes, src: bytes = b"", dst: bytes = b"") -> bytes:
    """ICMP (``src``/``dst`` empty) or ICMPv6 (16-byte addresses: pseudo-header checksum)."""
    header = struct.pack("!BBH", icmp_type, code, 0)
    pseudo = _pseudo_header(src, dst, PROTO_ICMPV6, 4 + len(rest)) if len(src) == 16 else b""
    return _with_checksum(header, 2, rest, pseudo)


def ipv4_packet(src: bytes, dst: bytes, proto: int, payload: bytes, tos: int = 0, ttl: int = 64,
                ident: int = 0) -> bytes:
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident & 0xFFFF,
                                   0x4000, ttl, proto, 0, src, dst))  # DF, no fragments
    struct.pack_into("!H", header, 10, inet_checksum(bytes(header)))
    return bytes(header) + payload


def ipv6_packet(src: bytes, dst: bytes, next_header: int, payload: bytes, traffic_class: int = 0,
                flow_label: int = 0, hop_limit: int = 64) -> bytes:
    first = (6 << 28) | (traffic_class << 20) | flow_label
    return struct.pack("!IHBB16s16s", first, len(payload), next_header, hop_limit, src, dst) + payload


def ethernet_frame(packet: bytes, ethertype: int, src_mac: bytes = _MAC_A, dst_mac: bytes = _MAC_B) -> bytes:
    return dst_mac + src_mac + struct.pack("!H", ethertype) + packet


def write_pcap(path, frames: Iterable[tuple[int, bytes]], linktype: int = LINKTYPE_ETHERNET,
               snaplen: int = 65535) -> int:
    """Classic little-endian microsecond pcap; ``frames`` are ``(time_us, frame)``. Returns the count."""
    count = 0
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
        for time_us, frame in frames:
            seconds, micros = divmod(int(time_us), 1_000_000)
            captured = frame[:snaplen]
            out.write(struct.pack("<IIII", seconds, micros, len(captured), len(frame)))
            out.write(captured)
            count += 1
    return count


# -- conversations and the flows they make ------------------------------------------


@dataclass(frozen=True)
class PacketSpec:
    time_us: int
    direction: int  # 0: a -> b, 1: b -> a
    payload: int  # transport payload bytes
    tcp_flags: int = 0


@dataclass
class Conversation:
    """Packets between ``a`` and ``b`` with one transport key (one ICMP type/code)."""

    proto: int
    a: str
    b: str
    a_port: int = 0  # TCP/UDP only
    b_port: int = 0
    packets: list[PacketSpec] = field(default_factory=list)
    tos: int = 0  # IPv4 ToS byte / IPv6 traffic class (softflowd 1.1.0 always reports 0 for IPv6)
    icmp_type: int = 0
    icmp_code: int = 0

    @property
    def ip_version(self) -> int:
        return ipaddress.ip_address(self.a).version

    @property
    def is_icmp(self) -> bool:
        return self.proto in (PROTO_ICMP, PROTO_ICMPV6)

    def ip_packets(self) -> list[tuple[int, int, bytes]]:
        """``(time_us, direction, ip_packet)`` for every packet, in list order."""
        a = ipaddress.ip_address(self.a).packed
        b = ipaddress.ip_address(self.b).packed
        out = []
        seq = [1000, 5000]
        for index, spec in enumerate(self.packets):
            src, dst = (a, b) if spec.direction == 0 else (b, a)
            sport, dport = (self.a_port, self.b_port) if spec.direction == 0 else (self.b_port, self.a_port)
            body = bytes((index + i) & 0xFF for i in range(spec.payload))
            if self.proto == PROTO_TCP:
                d = spec.direction
                transport = tcp_segment(src, dst, sport, dport, spec.tcp_flags, body, seq[d],
                                        seq[d ^ 1] if spec.tcp_flags & ACK else 0)
                seq[d] += spec.payload + (1 if spec.tcp_flags & (SYN | FIN) else 0)
            elif self.proto == PROTO_UDP:
                transport = udp_datagram(src, dst, sport, dport, body)
            elif self.is_icmp:
                rest = struct.pack("!HH", 0x4242, index) + body  # identifier, sequence, data
                transport = icmp_message(self.icmp_type, self.icmp_code, rest,
                                         src if self.proto == PROTO_ICMPV6 else b"",
                                         dst if self.proto == PROTO_ICMPV6 else b"")
            else:
                transport = body
            if len(src) == 4:
                packet = ipv4_packet(src, dst, self.proto, transport, tos=self.tos, ident=index)
            else:
                packet = ipv6_packet(src, dst, self.proto, transport, traffic_class=self.tos)
            out.append((spec.time_us, spec.direction, packet))
        return out


@dataclass(frozen=True)
class ExpectedFlow:
    """One direction of one conversation, as the pcap holds it."""

    ip_version: int
    protocol: int
    src: str
    dst: str
    sport: int  # ICMP: 0
    dport: int  # ICMP: type << 8 | code
    packets: int
    octets: int  # IP bytes, headers included
    tcp_flags: int  # union over this direction's packets
    tos: int
    first_us: int  # this direction's first / last packet
    last_us: int
    conv_first_us: int  # the whole conversation's (both directions) first / last packet
    conv_last_us: int
    icmp_type_code: int | None = None

    @property
    def key(self) -> tuple:
        return (self.src, self.dst, self.sport, self.dport, self.protocol)


def expected_flows(conversations: Sequence[Conversation]) -> list[ExpectedFlow]:
    flows = []
    for conv in conversations:
        packets = conv.ip_packets()
        if not packets:
            continue
        conv_first = min(t for t, _, _ in packets)
        conv_last = max(t for t, _, _ in packets)
        for direction in (0, 1):
            mine = [(t, p) for t, d, p in packets if d == direction]
            if not mine:
                continue
            src, dst = (conv.a, conv.b) if direction == 0 else (conv.b, conv.a)
            sport, dport = (conv.a_port, conv.b_port) if direction == 0 else (conv.b_port, conv.a_port)
            type_code = None
            if conv.is_icmp:
                type_code = conv.icmp_type << 8 | conv.icmp_code
                sport, dport = 0, type_code
            flags = 0
            for spec in conv.packets:
                if spec.direction == direction:
                    flags |= spec.tcp_flags
            flows.append(ExpectedFlow(
                ip_version=conv.ip_version, protocol=conv.proto,
                src=str(ipaddress.ip_address(src)), dst=str(ipaddress.ip_address(dst)),
                sport=sport, dport=dport, packets=len(mine), octets=sum(len(p) for _, p in mine),
                tcp_flags=flags if conv.proto == PROTO_TCP else 0, tos=conv.tos,
                first_us=min(t for t, _ in mine), last_us=max(t for t, _ in mine),
                conv_first_us=conv_first, conv_last_us=conv_last, icmp_type_code=type_code))
    return flows


def scenario_frames(conversations: Sequence[Conversation]) -> list[tuple[int, bytes]]:
    """Every packet as an Ethernet frame, in time order (stable for equal times)."""
    frames = []
    for conv in conversations:
        ethertype = ETHERTYPE_IPV4 if conv.ip_version == 4 else ETHERTYPE_IPV6
        for time_us, direction, packet in conv.ip_packets():
            macs = (_MAC_A, _MAC_B) if direction == 0 else (_MAC_B, _MAC_A)
            frames.append((time_us, ethernet_frame(packet, ethertype, *macs)))
    frames.sort(key=lambda item: item[0])
    return frames


# -- the default scenario -------------------------------------------------------------


def _tcp_session(rng: random.Random, start_us: int, kind: str, sizes: Sequence[int]) -> list[PacketSpec]:
    """A TCP exchange; ``kind``: 'full' (handshake, data, FIN both ways), 'rst' (reset by
    the server), 'syn-only' (unanswered SYN, retransmitted), 'half' (client data only)."""
    t = start_us
    out: list[PacketSpec] = []

    def add(direction, payload, flags):
        nonlocal t
        out.append(PacketSpec(t, direction, payload, flags))
        t += rng.randint(1, 120) * 1000  # whole milliseconds

    if kind == "syn-only":
        for _ in range(3):
            add(0, 0, SYN)
        return out
    add(0, 0, SYN)
    add(1, 0, SYN | ACK)
    add(0, 0, ACK)
    if kind == "half":
        for size in sizes:
            add(0, size, PSH | ACK)
        add(0, 0, FIN | ACK)
        return out
    for i, size in enumerate(sizes):
        add(i % 2, size, PSH | ACK)
        add((i + 1) % 2, 0, ACK)
    if kind == "rst":
        add(1, 0, RST | ACK)
        return out
    add(0, 0, FIN | ACK)
    add(1, 0, FIN | ACK)
    add(0, 0, ACK)
    return out


def _udp_exchange(rng: random.Random, start_us: int, sizes: Sequence[int], one_way: bool) -> list[PacketSpec]:
    t = start_us
    out = []
    for i, size in enumerate(sizes):
        out.append(PacketSpec(t, 0 if one_way else i % 2, size))
        t += rng.randint(1, 300) * 1000
    return out


def _icmp_pair(rng: random.Random, start_us: int, count: int, payload: int):
    requests, replies = [], []
    t = start_us
    for _ in range(count):
        requests.append(PacketSpec(t, 0, payload))
        t += rng.randint(1, 40) * 1000
        replies.append(PacketSpec(t, 0, payload))
        t += rng.randint(200, 400) * 1000
    return requests, replies


def default_scenario(base_us: int = DEFAULT_BASE_US, seed: int = 20240611) -> list[Conversation]:
    """35 conversations (59 one-way flows, 606 packets) over ~8 s, IPv4 and IPv6, ending on a whole second.

    Contents: TCP full sessions, resets, unanswered SYNs and one-way sessions; UDP
    request/response (DNS-, NTP-, syslog-like) and one-way streams, one with 300
    packets; ICMP echo request/reply pairs and a port-unreachable; ICMPv6 echo; ToS
    marks on IPv4; addresses on both sides of each other in byte order (exporters
    that key flows by ordered address pairs file a direction under either slot);
    ports 1 and 65535.
    """
    rng = random.Random(seed)
    if base_us % 1_000_000:
        raise ValueError("base_us must be a whole second")
    convs: list[Conversation] = []

    def start() -> int:
        return base_us + rng.randint(0, 6000) * 1000

    v4_clients = [f"192.0.2.{n}" for n in (10, 11, 12, 200, 201)]
    v4_servers = [f"198.51.100.{n}" for n in (5, 6, 7)] + ["203.0.113.9", "192.0.2.1"]
    # TCP over IPv4
    tcp_kinds = ["full"] * 8 + ["rst", "rst", "syn-only", "half"]
    for i, kind in enumerate(tcp_kinds):
        client = v4_clients[i % len(v4_clients)]
        server = v4_servers[(i * 3) % len(v4_servers)]
        sizes = [rng.choice((0, 1, 40, 517, 1448, 1460)) or 1 for _ in range(rng.randint(1, 6))]
        convs.append(Conversation(PROTO_TCP, client, server, 40000 + i, (443, 80, 22, 25, 8080)[i % 5],
                                  _tcp_session(rng, start(), kind, sizes), tos=(0, 0x10, 0xB8)[i % 3]))
    # one long TCP download, many packets
    bulk = _tcp_session(rng, start(), "full", [1460] * 40)
    convs.append(Conversation(PROTO_TCP, "192.0.2.99", "198.51.100.80", 65535, 1, bulk))
    # UDP over IPv4
    for i in range(6):
        client = v4_clients[(i + 2) % len(v4_clients)]
        server = v4_servers[i % len(v4_servers)]
        port = (53, 123, 514, 161, 5353, 1)[i]
        one_way = port == 514
        sizes = [rng.randint(12, 1200) for _ in range(rng.randint(1, 5))]
        convs.append(Conversation(PROTO_UDP, client, server, 50000 + i, port,
                                  _udp_exchange(rng, start(), sizes, one_way), tos=(0, 0x28)[i % 2]))
    # a 300-packet one-way UDP stream (RTP-like)
    t0 = start()
    convs.append(Conversation(PROTO_UDP, "203.0.113.50", "192.0.2.60", 16384, 16386,
                              [PacketSpec(t0 + 10_000 * k, 0, 160) for k in range(300)], tos=0xB8))
    # ICMP over IPv4: echo request/reply pairs (request and reply are separate flows)
    for client, server in (("192.0.2.10", "198.51.100.5"), ("203.0.113.9", "192.0.2.11")):
        requests, replies = _icmp_pair(rng, start(), rng.randint(1, 4), 56)
        convs.append(Conversation(PROTO_ICMP, client, server, packets=requests, icmp_type=8))
        convs.append(Conversation(PROTO_ICMP, server, client, packets=replies, icmp_type=0))
    # port unreachable (type 3, code 3), carrying a quoted header
    convs.append(Conversation(PROTO_ICMP, "198.51.100.6", "192.0.2.12",
                              packets=[PacketSpec(start(), 0, 28)], icmp_type=3, icmp_code=3))
    # IPv6
    v6_clients = ["2001:db8:1::10", "2001:db8:1::11", "2001:db8:ffff::1"]
    v6_servers = ["2001:db8:2::53", "2001:db8:0:1::80", "2001:db8::1"]
    for i, kind in enumerate(("full", "full", "rst", "half")):
        sizes = [rng.choice((1, 100, 1220)) for _ in range(rng.randint(1, 4))]
        convs.append(Conversation(PROTO_TCP, v6_clients[i % 3], v6_servers[(i + 1) % 3], 41000 + i,
                                  (443, 80, 22, 993)[i], _tcp_session(rng, start(), kind, sizes)))
    for i in range(3):
        sizes = [rng.randint(20, 1000) for _ in range(rng.randint(1, 4))]
        convs.append(Conversation(PROTO_UDP, v6_clients[i], v6_servers[i], 51000 + i, (53, 123, 443)[i],
                                  _udp_exchange(rng, start(), sizes, one_way=False)))
    requests, replies = _icmp_pair(rng, start(), 3, 32)
    convs.append(Conversation(PROTO_ICMPV6, "2001:db8:1::10", "2001:db8:2::53", packets=requests, icmp_type=128))
    convs.append(Conversation(PROTO_ICMPV6, "2001:db8:2::53", "2001:db8:1::10", packets=replies, icmp_type=129))
    # The last packet of the capture falls on a whole second (see the module doc).
    last = max(p.time_us for c in convs for p in c.packets)
    end_us = (last // 1_000_000 + 1) * 1_000_000
    convs.append(Conversation(PROTO_UDP, "192.0.2.250", "198.51.100.250", 33333, 44444,
                              [PacketSpec(end_us - 250_000, 0, 64), PacketSpec(end_us, 1, 32)]))
    return convs


UPTIME_WRAP_MS = 1 << 32  # a 32-bit millisecond sysUpTime wraps after 49.7 days


def wraparound_scenario(base_us: int = DEFAULT_BASE_US, days: int = 50) -> list[Conversation]:
    """A first packet at ``base_us`` (for an exporter replaying the capture with its
    clock set by the pcap, as softflowd ``-a`` does, this is its system init time), then
    TCP, UDP/IPv6 and ICMP traffic ``days`` later: 50 days puts every later time past the
    2^32 ms at which a 32-bit sysUpTime wraps.  Ends on a whole second.

    The first conversation (the "boot marker") is itself a flow; exported 50 days
    after it ended, its sysUpTime-relative times are ambiguous modulo 2^32 ms by
    nature, so tests compare the times of the other flows only.
    """
    late = base_us + days * 86_400_000_000
    end = late + 3_000_000
    return [
        Conversation(PROTO_UDP, "192.0.2.1", "198.51.100.1", 1000, 53, [PacketSpec(base_us + 123_000, 0, 10)]),
        Conversation(PROTO_TCP, "192.0.2.2", "198.51.100.2", 2000, 443,
                     [PacketSpec(late + 500_000, 0, 0, SYN), PacketSpec(late + 600_000, 1, 0, SYN | ACK),
                      PacketSpec(late + 700_000, 0, 0, RST)]),
        Conversation(PROTO_ICMP, "198.51.100.3", "192.0.2.3", packets=[PacketSpec(late + 1_234_000, 0, 8)],
                     icmp_type=11),
        Conversation(PROTO_UDP, "2001:db8::2", "2001:db8::3", 3000, 53,
                     [PacketSpec(end - 1_000_000, 0, 30), PacketSpec(end, 1, 60)]),
    ]


def write_scenario(path, conversations: Sequence[Conversation] | None = None) -> list[ExpectedFlow]:
    """Write the conversations (default: ``default_scenario()``) as a pcap; return their flows."""
    conversations = default_scenario() if conversations is None else conversations
    flows = expected_flows(conversations)
    keys = [f.key for f in flows]
    if len(set(keys)) != len(keys):
        raise ValueError("two conversations share a flow key; their flows would merge")
    write_pcap(path, scenario_frames(conversations))
    return flows


# -- export datagrams as a collector-side capture ------------------------------------


def write_udp_capture(path, datagrams: Iterable[tuple[int, bytes]], src: str = "127.0.0.1", sport: int = 0,
                      dst: str = "127.0.0.1", dport: int = 2055) -> int:
    """Write ``(time_us, payload)`` datagrams as Ethernet/IPv4|IPv6/UDP frames ``src:sport -> dst:dport``."""
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(dst).packed
    frames = []
    for index, (time_us, payload) in enumerate(datagrams):
        udp = udp_datagram(s, d, sport, dport, payload)
        if len(s) == 4:
            frames.append((time_us, ethernet_frame(ipv4_packet(s, d, PROTO_UDP, udp, ident=index), ETHERTYPE_IPV4)))
        else:
            frames.append((time_us, ethernet_frame(ipv6_packet(s, d, PROTO_UDP, udp), ETHERTYPE_IPV6)))
    return write_pcap(path, frames)
