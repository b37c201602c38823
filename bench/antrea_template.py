"""The template and records an Antrea Flow Aggregator sends (go-ipfix v0.17.0 element set),
built for benchmarks and tests from the registry by name.

Element order follows Antrea's pkg/flowaggregator/infoelements (see
../shared/antrea/README.md): IANA, reverse (29305), Antrea (56506), aggregation extras.
"""
from __future__ import annotations

import json
import random
import socket
import struct

from ingest_service.ipfix.registry import default_registry

IANA_V4 = ["flowStartSeconds", "flowEndSeconds", "flowEndReason", "sourceTransportPort", "destinationTransportPort",
           "protocolIdentifier", "packetTotalCount", "octetTotalCount", "packetDeltaCount", "octetDeltaCount",
           "sourceIPv4Address", "destinationIPv4Address"]
REVERSE = ["reversePacketTotalCount", "reverseOctetTotalCount", "reversePacketDeltaCount", "reverseOctetDeltaCount"]
ANTREA = ["sourcePodName", "sourcePodNamespace", "sourceNodeName", "destinationPodName", "destinationPodNamespace",
          "destinationNodeName", "destinationServicePort", "destinationServicePortName", "ingressNetworkPolicyName",
          "ingressNetworkPolicyNamespace", "ingressNetworkPolicyType", "ingressNetworkPolicyRuleName",
          "ingressNetworkPolicyRuleAction", "egressNetworkPolicyName", "egressNetworkPolicyNamespace",
          "egressNetworkPolicyType", "egressNetworkPolicyRuleName", "egressNetworkPolicyRuleAction", "tcpState",
          "flowType", "egressName", "egressIP", "egressNodeName", "destinationClusterIPv4",
          "packetTotalCountFromSourceNode", "octetTotalCountFromSourceNode", "packetDeltaCountFromSourceNode",
          "octetDeltaCountFromSourceNode", "reversePacketTotalCountFromSourceNode",
          "reverseOctetTotalCountFromSourceNode", "reversePacketDeltaCountFromSourceNode",
          "reverseOctetDeltaCountFromSourceNode", "packetTotalCountFromDestinationNode",
          "octetTotalCountFromDestinationNode", "packetDeltaCountFromDestinationNode",
          "octetDeltaCountFromDestinationNode", "reversePacketTotalCountFromDestinationNode",
          "reverseOctetTotalCountFromDestinationNode", "reversePacketDeltaCountFromDestinationNode",
          "reverseOctetDeltaCountFromDestinationNode", "sourcePodLabels", "destinationPodLabels", "throughput",
          "reverseThroughput", "throughputFromSourceNode", "throughputFromDestinationNode",
          "reverseThroughputFromSourceNode", "reverseThroughputFromDestinationNode",
          "flowEndSecondsFromSourceNode", "flowEndSecondsFromDestinationNode"]

_FIXED = {"unsigned8": 1, "unsigned16": 2, "unsigned32": 4, "unsigned64": 8, "ipv4Address": 4,
          "ipv6Address": 16, "dateTimeSeconds": 4, "dateTimeMilliseconds": 8, "boolean": 1, "signed32": 4}


def antrea_fields(registry=None):
    """[(enterprise, id, length, name, type)] in Antrea's order; strings are variable-length."""
    registry = registry or default_registry()
    out = []
    for name in IANA_V4 + REVERSE + ANTREA:
        element = registry.by_name(name)
        if element is None:
            continue  # not in this registry version
        length = _FIXED.get(element.type, 65535)
        out.append((element.enterprise, element.id, length, name, element.type))
    return out


def template_bytes(template_id: int, fields) -> bytes:
    body = bytearray(struct.pack(">HH", template_id, len(fields)))
    for enterprise, element_id, length, _, _ in fields:
        if enterprise:
            body += struct.pack(">HHI", element_id | 0x8000, length, enterprise)
        else:
            body += struct.pack(">HH", element_id, length)
    return struct.pack(">HH", 2, 4 + len(body)) + bytes(body)


def record_bytes(fields, rng: random.Random, now: int) -> bytes:
    out = bytearray()
    n = rng.randrange(1, 50)
    for _, _, length, name, kind in fields:
        if kind == "string":
            if "Labels" in name:
                value = json.dumps({"app": f"web-{n}", "tier": "front"}).encode()
            elif "Policy" in name and "Name" in name:
                value = f"allow-web-{n}".encode() if n % 3 else b""
            elif "Namespace" in name:
                value = b"prod" if n % 2 else b"default"
            elif name == "egressIP":
                value = f"10.10.9.{n}".encode() if n % 2 else b""
            elif name == "tcpState":
                value = b"ESTABLISHED"
            elif "Node" in name:
                value = f"node-{n % 3 + 1}".encode()
            else:
                value = f"web-{n}-7d9c6b5f4-x2k{n % 10}".encode()
            out += bytes([len(value)]) + value
        elif kind == "ipv4Address":
            out += socket.inet_aton(f"10.10.{n % 4}.{n}")
        elif kind == "dateTimeSeconds":
            out += struct.pack(">I", now - (60 if "Start" in name else 0))
        elif kind == "unsigned8":
            out += struct.pack(">B", n % 4)
        elif kind == "unsigned16":
            out += struct.pack(">H", 1024 + n)
        elif kind == "unsigned32":
            out += struct.pack(">I", n * 1000)
        elif kind == "unsigned64":
            out += struct.pack(">Q", n * 123_456)
        else:
            out += b"\0" * length
    return bytes(out)


def antrea_messages(records_per_message: int = 20, messages: int = 50, seed: int = 1, template_id: int = 256):
    """IPFIX messages: the first carries the template, every message carries data."""
    fields = antrea_fields()
    rng = random.Random(seed)
    now = 1_700_000_000
    out = []
    for index in range(messages):
        data = b"".join(record_bytes(fields, rng, now) for _ in range(records_per_message))
        sets = (template_bytes(template_id, fields) if index == 0 else b"") + struct.pack(">HH", template_id, 4 + len(data)) + data
        out.append(struct.pack(">HHIII", 10, 16 + len(sets), now, index * records_per_message, 1) + sets)
    return out, fields
