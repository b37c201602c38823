"""Read UDP datagrams out of pcap / pcapng captures (standard library only).

Yields ``Datagram(timestamp, src, sport, dst, dport, payload)`` for UDP over IPv4/IPv6
carried in Ethernet (with VLAN tags), Linux cooked (SLL/SLL2), BSD loopback or raw IP
frames.  Anything else (TCP, fragments, other link types) is skipped and counted.
"""
from __future__ import annotations

import socket
import struct
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO, Iterator

LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_SLL, LINKTYPE_SLL2, LINKTYPE_IPV4, LINKTYPE_IPV6 = 113, 276, 228, 229


@dataclass(frozen=True, slots=True)
class Datagram:
    timestamp: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


class CaptureError(ValueError):
    pass


def read_datagrams(stream: BinaryIO, skipped: Counter | None = None) -> Iterator[Datagram]:
    skipped = skipped if skipped is not None else Counter()
    magic = stream.read(4)
    if len(magic) < 4:
        raise CaptureError("file too short to be a capture")
    if magic == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng(stream, magic, skipped)
    elif magic in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        yield from _pcap(stream, magic, skipped)
    else:
        raise CaptureError(f"not a pcap or pcapng file (magic {magic.hex()})")


def _pcap(stream, magic, skipped) -> Iterator[Datagram]:
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    header = stream.read(20)
    if len(header) < 20:
        raise CaptureError("truncated pcap header")
    linktype = struct.unpack(endian + "HHiIII", header)[5] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    divisor = 1e9 if nano else 1e6
    while True:
        head = stream.read(16)
        if len(head) < 16:
            return
        seconds, fraction, captured, _ = record.unpack(head)
        frame = stream.read(captured)
        if len(frame) < captured:
            skipped["truncated_frames"] += 1
            return
        datagram = _udp_from_frame(linktype, frame, seconds + fraction / divisor, skipped)
        if datagram is not None:
            yield datagram


def _pcapng(stream, magic, skipped) -> Iterator[Datagram]:
    endian = "<"
    interfaces: list[tuple[int, float]] = []  # (linktype, seconds per tick)
    first = True
    while True:
        head = magic if first else stream.read(4)
        first = False
        if len(head) < 4:
            return
        rest = stream.read(4)
        if len(rest) < 4:
            return
        block_type = struct.unpack(endian + "I", head)[0] if head != b"\x0a\x0d\x0d\x0a" else 0x0A0D0D0A
        if block_type == 0x0A0D0D0A:
            bom = stream.read(4)
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            length = struct.unpack(endian + "I", rest)[0]
            body = stream.read(length - 12)
            interfaces = []
            continue
        length = struct.unpack(endian + "I", rest)[0]
        if length < 12:
            raise CaptureError(f"pcapng block length {length}")
        body = stream.read(length - 8)
        if len(body) < length - 8:
            skipped["truncated_frames"] += 1
            return
        if block_type == 1:  # interface description
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            interfaces.append((linktype, _pcapng_resolution(body[8:-4], endian)))
        elif block_type == 6:  # enhanced packet
            iface, high, low, captured = struct.unpack_from(endian + "IIII", body, 0)
            if iface >= len(interfaces):
                skipped["unknown_interface"] += 1
                continue
            linktype, tick = interfaces[iface]
            frame = body[20:20 + captured]
            datagram = _udp_from_frame(linktype, frame, ((high << 32) | low) * tick, skipped)
            if datagram is not None:
                yield datagram
        elif block_type == 3 and interfaces:  # simple packet
            captured = min(struct.unpack_from(endian + "I", body, 0)[0], len(body) - 8)
            datagram = _udp_from_frame(interfaces[0][0], body[4:4 + captured], 0.0, skipped)
            if datagram is not None:
                yield datagram


def _pcapng_resolution(options: bytes, endian: str) -> float:
    offset = 0
    while offset + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, offset)
        if code == 0:
            break
        if code == 9 and length >= 1:  # if_tsresol
            value = options[offset + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -value
        offset += 4 + (length + 3) // 4 * 4
    return 1e-6


def _udp_from_frame(linktype: int, frame: bytes, timestamp: float, skipped: Counter):
    ethertype = None
    offset = 0
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            skipped["short_frames"] += 1
            return None
        ethertype = struct.unpack_from(">H", frame, 12)[0]
        offset = 14
        while ethertype in (0x8100, 0x88A8) and len(frame) >= offset + 4:
            ethertype = struct.unpack_from(">H", frame, offset + 2)[0]
            offset += 4
    elif linktype == LINKTYPE_SLL:
        if len(frame) < 16:
            return None
        ethertype, offset = struct.unpack_from(">H", frame, 14)[0], 16
    elif linktype == LINKTYPE_SLL2:
        if len(frame) < 20:
            return None
        ethertype, offset = struct.unpack_from(">H", frame, 0)[0], 20
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        offset = 4
    elif linktype not in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        skipped[f"linktype_{linktype}"] += 1
        return None
    packet = frame[offset:]
    if not packet:
        return None
    version = packet[0] >> 4
    if ethertype not in (None, 0x0800, 0x86DD):
        skipped["not_ip"] += 1
        return None
    if version == 4:
        if len(packet) < 20:
            return None
        ihl = (packet[0] & 0x0F) * 4
        total, flags_frag, proto = struct.unpack_from(">H", packet, 2)[0], struct.unpack_from(">H", packet, 6)[0], packet[9]
        if flags_frag & 0x3FFF:
            skipped["ip_fragments"] += 1
            return None
        src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
        transport = packet[ihl:total] if total >= ihl else packet[ihl:]
    elif version == 6:
        if len(packet) < 40:
            return None
        proto = packet[6]
        src, dst = socket.inet_ntop(socket.AF_INET6, packet[8:24]), socket.inet_ntop(socket.AF_INET6, packet[24:40])
        offset6 = 40
        while proto in (0, 43, 60) and len(packet) >= offset6 + 8:  # hop-by-hop, routing, destination options
            proto, offset6 = packet[offset6], offset6 + (packet[offset6 + 1] + 1) * 8
        if proto == 44:
            skipped["ip_fragments"] += 1
            return None
        transport = packet[offset6:]
    else:
        skipped["not_ip"] += 1
        return None
    if proto != 17:
        skipped["not_udp"] += 1
        return None
    if len(transport) < 8:
        return None
    sport, dport, length = struct.unpack_from(">HHH", transport, 0)
    payload = transport[8:length] if length >= 8 else transport[8:]
    return Datagram(timestamp, src, sport, dst, dport, bytes(payload))
