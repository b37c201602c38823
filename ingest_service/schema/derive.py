"""Antrea derived fields, computed in-process (pure; the only state is ThroughputState).

The same rules run server-side in the ingest pipeline (``schema/pipeline.py`` renders them
to Painless from the same tables), so a document normalized here and one normalized by the
engine are identical; ``tests/test_pipeline_parity.py`` proves it with ``_simulate``.

The one difference is state: in-process, ``interval``/``throughput`` of the second and later
records of a flow cover the time since the previous record of that flow (as the old
Logstash filter did); the stateless pipeline always uses the time since the flow started.
"""
from __future__ import annotations

import base64
import hashlib
import socket
import time
from collections import OrderedDict
from datetime import datetime

import orjson

from .table import flow_schema

PROTOCOL_NAMES = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 41: "IPv6", 47: "GRE", 50: "ESP", 51: "AH",
                  58: "IPv6-ICMP", 89: "OSPF", 103: "PIM", 112: "VRRP", 132: "SCTP"}
FLOW_TYPES = {1: "Intra-Node", 2: "Inter-Node", 3: "To External", 4: "From External"}
RULE_ACTIONS = {0: "No Action", 1: "Allow", 2: "Drop", 3: "Reject"}
POLICY_TYPES = {1: "K8s NetworkPolicy", 2: "Antrea NetworkPolicy", 3: "Antrea ClusterNetworkPolicy",
                4: "K8s ClusterNetworkPolicy"}
# (derived field, source field, table)
ENUM_FIELDS = (
    ("flowTypeStr", "flowType", FLOW_TYPES),
    ("ingressNetworkPolicyRuleActionStr", "ingressNetworkPolicyRuleAction", RULE_ACTIONS),
    ("egressNetworkPolicyRuleActionStr", "egressNetworkPolicyRuleAction", RULE_ACTIONS),
    ("ingressNetworkPolicyTypeStr", "ingressNetworkPolicyType", POLICY_TYPES),
    ("egressNetworkPolicyTypeStr", "egressNetworkPolicyType", POLICY_TYPES),
)
NOT_APPLICABLE_FIELDS = ("ingressNetworkPolicyName", "ingressNetworkPolicyNamespace",
                         "egressNetworkPolicyName", "egressNetworkPolicyNamespace")
LABEL_FIELDS = (("sourcePodLabels", "sourcePodLabelsMap"), ("destinationPodLabels", "destinationPodLabelsMap"))
COMMUNITY_ID_PROTOCOLS = (6, 17, 132)  # port-based protocols; ICMP needs type/code, not computed


def _schema_lists():
    schema = flow_schema()
    ip_fields = tuple(f.name for f in schema.fields if f.mapping == "ip" and not f.derived)
    uuid_fields = tuple(f.name for f in schema.fields if f.role == "uuid")
    return ip_fields, uuid_fields


IP_FIELDS, UUID_FIELDS = _schema_lists()


class ThroughputState:
    """Last flowEnd per flow key, bounded (LRU) and expiring: never grows without limit."""

    def __init__(self, max_flows: int = 200_000, ttl: float = 900.0, clock=time.monotonic):
        self.max_flows = max_flows
        self.ttl = ttl
        self.clock = clock
        self._last: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.evicted = 0

    def previous_end(self, key: str, end: int) -> int | None:
        """Return the flow's previous end time (if fresh) and remember ``end``."""
        now = self.clock()
        entry = self._last.pop(key, None)
        self._last[key] = (end, now)
        while len(self._last) > self.max_flows:
            self._last.popitem(last=False)
            self.evicted += 1
        if entry is None or now - entry[1] > self.ttl:
            return None
        return entry[0]

    def expire(self) -> None:
        now = self.clock()
        while self._last:
            key, (_, seen) = next(iter(self._last.items()))
            if now - seen <= self.ttl:
                break
            del self._last[key]
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._last)


_epoch_cache: dict[str, int | None] = {}
_labels_cache: dict[str, dict | None] = {}
_uuid_cache: dict[str, str] = {}
_CACHE_MAX = 4096  # records of one export share times and labels: small caches pay off


def epoch_seconds(value) -> int | None:
    """dateTimeSeconds as we render it (ISO text), or epoch seconds from JSON inputs."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value:
        cached = _epoch_cache.get(value, _MISSING)
        if cached is not _MISSING:
            return cached
        try:
            result = int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            result = None
        if len(_epoch_cache) >= _CACHE_MAX:
            _epoch_cache.clear()
        _epoch_cache[value] = result
        return result
    return None


_MISSING = object()


def _text(value) -> str:
    # what Painless string concatenation shows, so pipeline and in-process keys agree
    if value.__class__ is int:
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def protocol_label(number) -> str:
    # The old filter's flow keys show TCP/UDP by name and other protocols by number.
    if number == 6:
        return "TCP"
    if number == 17:
        return "UDP"
    return _text(number)


def labels_object(text) -> dict | None:
    """Pod labels JSON text -> flat {key: text}. The result is shared: never mutate it."""
    if not isinstance(text, str) or not text:
        return None
    cached = _labels_cache.get(text, _MISSING)
    if cached is not _MISSING:
        return cached
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    result = None
    if isinstance(parsed, dict):
        # Dots would turn label keys into nested objects that collide (app vs app.kubernetes.io/name).
        result = {str(k).replace(".", "_"): _text(v) for k, v in parsed.items()}
    if len(_labels_cache) >= _CACHE_MAX:
        _labels_cache.clear()
    _labels_cache[text] = result
    return result


def _packed(address: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
    except OSError as exc:
        raise ValueError(f"not an IP address: {address!r}") from exc


def community_id(src: str, dst: str, proto: int, sport: int, dport: int, seed: int = 0) -> str:
    """Community ID v1 (corelight/community-id-spec) of a port-based flow."""
    a, b = _packed(src), _packed(dst)
    if (a, sport) > (b, dport):
        a, b, sport, dport = b, a, dport, sport
    data = seed.to_bytes(2, "big") + a + b + bytes([proto, 0]) + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def derive(body: dict, state: ThroughputState | None = None) -> dict:
    """Add the derived fields to one document body (the target object), in place."""
    get = body.get
    for name in UUID_FIELDS:
        value = get(name)
        if value.__class__ is str and len(value) == 32:
            text = _uuid_cache.get(value)
            if text is None:  # Pod/Node/policy UIDs repeat across records: format each once
                if len(_uuid_cache) >= _CACHE_MAX:
                    _uuid_cache.clear()
                text = _uuid_cache[value] = f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
            body[name] = text
    for name in IP_FIELDS:
        if get(name) == "":
            del body[name]  # Antrea sends "" for absent addresses; an ip field rejects it

    for target, sources in (("bytes", ("octetTotalCount", "octetDeltaCount")), ("packets", ("packetTotalCount", "packetDeltaCount"))):
        for source in sources:
            value = get(source)
            if isinstance(value, int) and not isinstance(value, bool):
                body[target] = value
                break

    proto = get("protocolIdentifier")
    if isinstance(proto, int) and proto in PROTOCOL_NAMES:
        body["protocolName"] = PROTOCOL_NAMES[proto]
    for target, source, table in ENUM_FIELDS:
        value = get(source)
        if value in table and not isinstance(value, bool):
            body[target] = table[value]

    for side in ("source", "destination"):
        v6 = get(f"{side}IPv6Address")
        address = v6 if v6 else get(f"{side}IPv4Address")
        if address:
            body[f"{side}IP"] = address

    src_pod = get("sourcePodName")
    if src_pod:
        proto_text = protocol_label(proto)
        sport = _text(get("sourceTransportPort"))
        dport = _text(get("destinationTransportPort"))
        service = get("destinationServicePortName")
        if service:
            body["flowKeyPodToService"] = f"{src_pod}:{sport}->{service}{_text(get('destinationServicePort'))} {proto_text}"
        if get("flowType") != 3:
            key = f"{src_pod}:{sport}->{get('destinationPodName') or ''}:{dport} {proto_text}"
            body["flowKey"] = body["flowKeyPodToPod"] = key
        else:
            key = f"{src_pod}:{sport}->{get('destinationIP') or ''}:{dport} {proto_text}"
            body["flowKey"] = body["flowKeyPodToExternal"] = key

    for name in NOT_APPLICABLE_FIELDS:
        if get(name) == "":
            body[name] = "N/A"

    start = epoch_seconds(get("flowStartSeconds"))
    end = epoch_seconds(get("flowEndSeconds"))
    if start is not None and end is not None:
        previous = None
        if state is not None:
            flow = body.get("flowKey") or _five_tuple(body)
            previous = state.previous_end(flow, end)
        interval = end - (previous if previous is not None else start)
        body["interval"] = max(interval, 0)
        for target, sources in (("throughput", ("octetDeltaCountFromSourceNode", "octetDeltaCount")),
                                ("reverseThroughput", ("reverseOctetDeltaCountFromSourceNode", "reverseOctetDeltaCount"))):
            if target in body:
                continue  # newer Flow Aggregators send it: the exporter knows best
            delta = next((get(s) for s in sources if isinstance(get(s), int)), None)
            if delta is not None:
                body[target] = delta * 8 // interval if interval > 0 else 0

    for source, target in LABEL_FIELDS:
        labels = labels_object(get(source))
        if labels is not None:
            body[target] = labels

    src, dst = get("sourceIP"), get("destinationIP")
    sport, dport = get("sourceTransportPort"), get("destinationTransportPort")
    if src and dst and proto in COMMUNITY_ID_PROTOCOLS and isinstance(sport, int) and isinstance(dport, int):
        try:
            body["communityId"] = community_id(src, dst, proto, sport, dport)
        except ValueError:
            pass
    return body


def _five_tuple(body: dict) -> str:
    get = body.get
    return f"{get('sourceIP')}|{get('destinationIP')}|{get('sourceTransportPort')}|{get('destinationTransportPort')}|{get('protocolIdentifier')}"
