"""THE table of flow fields. Every document, index mapping, ingest-pipeline field list and
dashboard is rendered from it; nothing else lists fields.

Each row: the field's name under the target object (the Logstash ``ipfix.*`` layout), where
it comes from (an information element resolved through the registries, or the inputs of a
derived field), its path in the ECS layout, its mapping type, its dashboard role and format,
and a description.  Mapping types of element-backed fields follow the element's abstract
type unless a row says otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from ..ipfix.registry import default_registry


@dataclass(frozen=True)
class FlowField:
    name: str  # key under the target object, e.g. "sourcePodName" -> ipfix.sourcePodName
    mapping: str  # keyword | long | integer | ip | date | double | boolean | object
    description: str
    element: tuple[int, int] | None = None  # (enterprise, id) for decoded fields
    derived_from: tuple[str, ...] = ()  # inputs of a derived field
    ecs: str | None = None  # path in the ECS layout (None: stays under the target object)
    role: str = ""  # dashboard role: time, metric, dimension, pod, node, namespace, policy, ...
    fmt: str = ""  # dashboard format: bytes, bitsps, number, duration_s, ip
    keyword_subfield: bool = False  # add a ".keyword" multi-field (Logstash dynamic-mapping compatibility)

    @property
    def derived(self) -> bool:
        return self.element is None


# Abstract type -> mapping type for element-backed fields.
_MAPPING_OF_TYPE = {
    "unsigned8": "integer", "unsigned16": "integer", "unsigned32": "long", "unsigned64": "long",
    "signed8": "integer", "signed16": "integer", "signed32": "integer", "signed64": "long",
    "float32": "double", "float64": "double", "boolean": "boolean", "macAddress": "keyword",
    "octetArray": "keyword", "string": "keyword", "ipv4Address": "ip", "ipv6Address": "ip",
    "dateTimeSeconds": "date", "dateTimeMilliseconds": "date", "dateTimeMicroseconds": "date",
    "dateTimeNanoseconds": "date",
}

# (name, ecs path, role, format, description) of decoded fields, in document order.
# The element (enterprise, id) and the mapping type come from the registries.
_ELEMENTS: list[tuple[str, str | None, str, str, str]] = [
    ("flowStartSeconds", "event.start", "time", "", "Flow start time"),
    ("flowEndSeconds", "event.end", "time", "", "Flow end time (the time dashboards plot)"),
    ("flowStartMilliseconds", None, "time", "", "Flow start time, millisecond precision"),
    ("flowEndMilliseconds", None, "time", "", "Flow end time, millisecond precision"),
    ("flowEndReason", None, "dimension", "", "Why the flow record was exported (RFC 5102)"),
    ("sourceIPv4Address", None, "address", "ip", "Source IPv4 address"),
    ("destinationIPv4Address", None, "address", "ip", "Destination IPv4 address"),
    ("sourceIPv6Address", None, "address", "ip", "Source IPv6 address"),
    ("destinationIPv6Address", None, "address", "ip", "Destination IPv6 address"),
    ("sourceTransportPort", "source.port", "port", "number", "Source port"),
    ("destinationTransportPort", "destination.port", "port", "number", "Destination port"),
    ("protocolIdentifier", "network.iana_number", "dimension", "number", "IP protocol number"),
    ("tcpControlBits", None, "dimension", "number", "Union of TCP flags seen"),
    ("ipVersion", None, "dimension", "number", "IP version"),
    ("ipClassOfService", None, "dimension", "number", "IP TOS/traffic class"),
    ("ingressInterface", "observer.ingress.interface.id", "dimension", "number", "Ingress ifIndex"),
    ("egressInterface", "observer.egress.interface.id", "dimension", "number", "Egress ifIndex"),
    ("vlanId", "network.vlan.id", "dimension", "number", "VLAN id"),
    ("octetDeltaCount", None, "metric", "bytes", "Bytes since the previous record of the flow"),
    ("packetDeltaCount", None, "metric", "number", "Packets since the previous record of the flow"),
    ("octetTotalCount", None, "metric", "bytes", "Bytes since the flow started"),
    ("packetTotalCount", None, "metric", "number", "Packets since the flow started"),
    ("reverseOctetDeltaCount", None, "metric", "bytes", "Reverse-direction bytes since the previous record"),
    ("reversePacketDeltaCount", None, "metric", "number", "Reverse-direction packets since the previous record"),
    ("reverseOctetTotalCount", None, "metric", "bytes", "Reverse-direction bytes since the flow started"),
    ("reversePacketTotalCount", None, "metric", "number", "Reverse-direction packets since the flow started"),
    ("samplingInterval", None, "dimension", "number", "Packet sampling interval sent by the exporter"),
    ("sourcePodName", None, "pod", "", "Source Pod name"),
    ("sourcePodNamespace", None, "namespace", "", "Source Pod namespace"),
    ("sourceNodeName", None, "node", "", "Node of the source Pod"),
    ("destinationPodName", None, "pod", "", "Destination Pod name"),
    ("destinationPodNamespace", None, "namespace", "", "Destination Pod namespace"),
    ("destinationNodeName", None, "node", "", "Node of the destination Pod"),
    ("destinationClusterIPv4", None, "address", "ip", "Service ClusterIP (IPv4) the flow was sent to"),
    ("destinationClusterIPv6", None, "address", "ip", "Service ClusterIP (IPv6) the flow was sent to"),
    ("destinationServicePort", None, "port", "number", "Service port"),
    ("destinationServicePortName", "service.name", "service", "", "Service port name: namespace/name:port"),
    ("destinationServiceIPv4", None, "address", "ip", "Service IPv4 address"),
    ("destinationServiceIPv6", None, "address", "ip", "Service IPv6 address"),
    ("ingressNetworkPolicyName", None, "policy", "", "Ingress NetworkPolicy name (N/A if none)"),
    ("ingressNetworkPolicyNamespace", None, "policy", "", "Ingress NetworkPolicy namespace (N/A if none)"),
    ("ingressNetworkPolicyType", None, "dimension", "number", "Ingress policy type"),
    ("ingressNetworkPolicyRuleName", None, "policy", "", "Ingress policy rule name"),
    ("ingressNetworkPolicyRuleAction", None, "dimension", "number", "Ingress rule action"),
    ("ingressNetworkPolicyRulePriority", None, "dimension", "number", "Ingress rule priority"),
    ("egressNetworkPolicyName", None, "policy", "", "Egress NetworkPolicy name (N/A if none)"),
    ("egressNetworkPolicyNamespace", None, "policy", "", "Egress NetworkPolicy namespace (N/A if none)"),
    ("egressNetworkPolicyType", None, "dimension", "number", "Egress policy type"),
    ("egressNetworkPolicyRuleName", None, "policy", "", "Egress policy rule name"),
    ("egressNetworkPolicyRuleAction", None, "dimension", "number", "Egress rule action"),
    ("egressNetworkPolicyRulePriority", None, "dimension", "number", "Egress rule priority"),
    ("tcpState", None, "dimension", "", "TCP connection state"),
    ("tcpStatePrevList", None, "dimension", "", "Previous TCP states"),
    ("flowType", None, "dimension", "number", "Antrea flow type number"),
    ("egressName", None, "dimension", "", "Antrea Egress name"),
    ("egressIP", None, "address", "ip", "Antrea Egress SNAT IP"),
    ("egressNodeName", None, "node", "", "Node of the Antrea Egress"),
    ("proxySnatIPv4", None, "address", "ip", "Proxy SNAT IPv4 address"),
    ("proxySnatIPv6", None, "address", "ip", "Proxy SNAT IPv6 address"),
    ("proxySnatPort", None, "port", "number", "Proxy SNAT port"),
    ("appProtocolName", "network.protocol", "dimension", "", "Application protocol"),
    ("httpVals", None, "dimension", "", "HTTP values (JSON text)"),
    ("clusterId", "orchestrator.cluster.id", "dimension", "", "Kubernetes cluster id"),
    ("packetTotalCountFromSourceNode", None, "metric", "number", "Packets since start, seen by the source Node"),
    ("octetTotalCountFromSourceNode", None, "metric", "bytes", "Bytes since start, seen by the source Node"),
    ("packetDeltaCountFromSourceNode", None, "metric", "number", "Packets since previous record, source Node"),
    ("octetDeltaCountFromSourceNode", None, "metric", "bytes", "Bytes since previous record, source Node"),
    ("reversePacketTotalCountFromSourceNode", None, "metric", "number", "Reverse packets since start, source Node"),
    ("reverseOctetTotalCountFromSourceNode", None, "metric", "bytes", "Reverse bytes since start, source Node"),
    ("reversePacketDeltaCountFromSourceNode", None, "metric", "number", "Reverse packets since previous record, source Node"),
    ("reverseOctetDeltaCountFromSourceNode", None, "metric", "bytes", "Reverse bytes since previous record, source Node"),
    ("packetTotalCountFromDestinationNode", None, "metric", "number", "Packets since start, destination Node"),
    ("octetTotalCountFromDestinationNode", None, "metric", "bytes", "Bytes since start, destination Node"),
    ("packetDeltaCountFromDestinationNode", None, "metric", "number", "Packets since previous record, destination Node"),
    ("octetDeltaCountFromDestinationNode", None, "metric", "bytes", "Bytes since previous record, destination Node"),
    ("reversePacketTotalCountFromDestinationNode", None, "metric", "number", "Reverse packets since start, destination Node"),
    ("reverseOctetTotalCountFromDestinationNode", None, "metric", "bytes", "Reverse bytes since start, destination Node"),
    ("reversePacketDeltaCountFromDestinationNode", None, "metric", "number", "Reverse packets since previous record, destination Node"),
    ("reverseOctetDeltaCountFromDestinationNode", None, "metric", "bytes", "Reverse bytes since previous record, destination Node"),
    ("throughput", None, "metric", "bitsps", "Throughput in bits/s (from the exporter, or computed)"),
    ("reverseThroughput", None, "metric", "bitsps", "Reverse throughput in bits/s (from the exporter, or computed)"),
    ("throughputFromSourceNode", None, "metric", "bitsps", "Throughput seen by the source Node, bits/s"),
    ("throughputFromDestinationNode", None, "metric", "bitsps", "Throughput seen by the destination Node, bits/s"),
    ("reverseThroughputFromSourceNode", None, "metric", "bitsps", "Reverse throughput seen by the source Node, bits/s"),
    ("reverseThroughputFromDestinationNode", None, "metric", "bitsps", "Reverse throughput seen by the destination Node, bits/s"),
    ("flowEndSecondsFromSourceNode", None, "time", "", "Flow end time reported by the source Node"),
    ("flowEndSecondsFromDestinationNode", None, "time", "", "Flow end time reported by the destination Node"),
    ("sourcePodLabels", None, "labels", "", "Source Pod labels as JSON text (as sent)"),
    ("destinationPodLabels", None, "labels", "", "Destination Pod labels as JSON text (as sent)"),
    ("sourcePodUUID", None, "uuid", "", "Source Pod UID"),
    ("destinationPodUUID", None, "uuid", "", "Destination Pod UID"),
    ("sourceNodeUUID", None, "uuid", "", "Source Node UID"),
    ("destinationNodeUUID", None, "uuid", "", "Destination Node UID"),
    ("destinationServiceUUID", None, "uuid", "", "Service UID"),
    ("ingressNetworkPolicyUUID", None, "uuid", "", "Ingress NetworkPolicy UID"),
    ("egressNetworkPolicyUUID", None, "uuid", "", "Egress NetworkPolicy UID"),
    ("egressUUID", None, "uuid", "", "Antrea Egress UID"),
    ("egressNodeUUID", None, "uuid", "", "Egress Node UID"),
    ("originalObservationDomainId", None, "dimension", "number", "Observation domain of the original exporter (proxy mode)"),
    ("originalExporterIPv4Address", None, "address", "ip", "Original exporter IPv4 address (proxy mode)"),
    ("originalExporterIPv6Address", None, "address", "ip", "Original exporter IPv6 address (proxy mode)"),
    ("flowDirection", "network.direction", "dimension", "number", "Flow direction (0 ingress, 1 egress)"),
]

# Fields some dashboards query through a ".keyword" multi-field, because Logstash's dynamic
# mapping made every string (and every address) text + keyword.
_KEYWORD_SUBFIELD_ROLES = {"pod", "namespace", "node", "service", "policy", "address", "dimension", "labels", "uuid", "flowkey"}

# The old Logstash filter stored TCP/UDP as text in protocolIdentifier, so dashboards query
# protocolIdentifier.keyword; ours keeps the number there (its .keyword shows "6"; the name is
# in protocolName).
_NUMERIC_KEYWORD_SUBFIELDS = {"protocolIdentifier"}

# Derived fields: (name, mapping, inputs, ecs, role, fmt, description)
_DERIVED: list[tuple[str, str, tuple[str, ...], str | None, str, str, str]] = [
    ("bytes", "long", ("octetTotalCount", "octetDeltaCount"), "network.bytes", "metric", "bytes",
     "Bytes of the flow so far: octetTotalCount, else octetDeltaCount"),
    ("packets", "long", ("packetTotalCount", "packetDeltaCount"), "network.packets", "metric", "number",
     "Packets of the flow so far: packetTotalCount, else packetDeltaCount"),
    ("protocolName", "keyword", ("protocolIdentifier",), "network.transport", "dimension", "",
     "IP protocol name (TCP, UDP, ICMP, ...); the number stays in protocolIdentifier"),
    ("flowTypeStr", "keyword", ("flowType",), None, "dimension", "",
     "Intra-Node, Inter-Node, To External, From External"),
    ("ingressNetworkPolicyRuleActionStr", "keyword", ("ingressNetworkPolicyRuleAction",), None, "policy", "",
     "No Action, Allow, Drop, Reject"),
    ("egressNetworkPolicyRuleActionStr", "keyword", ("egressNetworkPolicyRuleAction",), None, "policy", "",
     "No Action, Allow, Drop, Reject"),
    ("ingressNetworkPolicyTypeStr", "keyword", ("ingressNetworkPolicyType",), None, "policy", "",
     "K8s NetworkPolicy, Antrea NetworkPolicy, Antrea ClusterNetworkPolicy, K8s ClusterNetworkPolicy"),
    ("egressNetworkPolicyTypeStr", "keyword", ("egressNetworkPolicyType",), None, "policy", "",
     "K8s NetworkPolicy, Antrea NetworkPolicy, Antrea ClusterNetworkPolicy, K8s ClusterNetworkPolicy"),
    ("sourceIP", "ip", ("sourceIPv6Address", "sourceIPv4Address"), "source.ip", "address", "ip",
     "Source address: the IPv6 one when present, else the IPv4 one"),
    ("destinationIP", "ip", ("destinationIPv6Address", "destinationIPv4Address"), "destination.ip", "address", "ip",
     "Destination address: the IPv6 one when present, else the IPv4 one"),
    ("flowKey", "keyword", ("sourcePodName", "sourceTransportPort", "destinationPodName", "destinationIP",
                            "destinationTransportPort", "protocolIdentifier", "flowType"), None, "flowkey", "",
     "srcPod:srcPort->dstPod:dstPort proto (dstIP instead of dstPod for flows to external)"),
    ("flowKeyPodToPod", "keyword", ("flowKey",), None, "flowkey", "", "flowKey of a Pod-to-Pod flow"),
    ("flowKeyPodToExternal", "keyword", ("flowKey",), None, "flowkey", "", "flowKey of a Pod-to-External flow"),
    ("flowKeyPodToService", "keyword", ("sourcePodName", "sourceTransportPort", "destinationServicePortName",
                                        "destinationServicePort", "protocolIdentifier"), None, "flowkey", "",
     "srcPod:srcPort->servicePortName servicePort proto, for flows to a Service"),
    ("interval", "long", ("flowEndSeconds", "flowStartSeconds"), None, "metric", "duration_s",
     "Seconds the delta counters cover (since the previous record of the flow, or since it started)"),
    ("sourcePodLabelsMap", "object", ("sourcePodLabels",), "kubernetes.source.labels", "labels", "",
     "Source Pod labels as an object searchable by key (dots in keys become _)"),
    ("destinationPodLabelsMap", "object", ("destinationPodLabels",), "kubernetes.destination.labels", "labels", "",
     "Destination Pod labels as an object searchable by key (dots in keys become _)"),
    ("communityId", "keyword", ("sourceIP", "destinationIP", "sourceTransportPort", "destinationTransportPort",
                                "protocolIdentifier"), "network.community_id", "dimension", "",
     "Community ID flow hash (v1) of the 5-tuple"),
]

# Collector metadata and values the decoder derives from exporter state (ipfix/enrich.py).
_COLLECTOR: list[tuple[str, str, str | None, str, str, str]] = [
    ("version", "integer", None, "dimension", "number", "Export protocol version: 5, 9 or 10 (IPFIX)"),
    ("flowset_id", "integer", None, "dimension", "number", "Template id the record was decoded with"),
    ("options", "boolean", None, "", "", "True for options data records (exporter metadata)"),
    ("samplingRate", "long", None, "metric", "number", "Sampling rate learned from options records or the v5 header"),
    ("ingressInterfaceName", "keyword", "observer.ingress.interface.name", "dimension", "", "Ingress interface name from options records"),
    ("egressInterfaceName", "keyword", "observer.egress.interface.name", "dimension", "", "Egress interface name from options records"),
]

# ECS paths of Kubernetes fields (Beats-style kubernetes.* naming, source/destination split).
_ECS_K8S = {
    "sourcePodName": "kubernetes.source.pod.name", "sourcePodNamespace": "kubernetes.source.namespace",
    "sourceNodeName": "kubernetes.source.node.name", "destinationPodName": "kubernetes.destination.pod.name",
    "destinationPodNamespace": "kubernetes.destination.namespace", "destinationNodeName": "kubernetes.destination.node.name",
    "sourcePodUUID": "kubernetes.source.pod.uid", "destinationPodUUID": "kubernetes.destination.pod.uid",
}


@dataclass(frozen=True)
class Schema:
    fields: tuple[FlowField, ...]
    by_name: dict = field(hash=False, compare=False, default_factory=dict)

    def __getitem__(self, name: str) -> FlowField:
        return self.by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def with_role(self, role: str) -> list[FlowField]:
        return [f for f in self.fields if f.role == role]


@lru_cache(maxsize=1)
def flow_schema() -> Schema:
    registry = default_registry()
    rows: list[FlowField] = []
    for name, ecs, role, fmt, description in _ELEMENTS:
        element = registry.by_name(name)
        if element is None:
            raise LookupError(f"schema field {name!r} is not in the registries")
        mapping = _MAPPING_OF_TYPE.get(element.type, "keyword")
        if name == "egressIP":
            mapping = "ip"  # Antrea's registry types it as string; it always carries an address
        subfield = (mapping in ("keyword", "ip") and role in _KEYWORD_SUBFIELD_ROLES) or name in _NUMERIC_KEYWORD_SUBFIELDS
        rows.append(FlowField(name, mapping, description, (element.enterprise, element.id), (), ecs or _ECS_K8S.get(name),
                              role, fmt, subfield))
    for name, mapping, ecs, role, fmt, description in _COLLECTOR:
        rows.append(FlowField(name, mapping, description, None, (), ecs, role, fmt, False))
    for name, mapping, inputs, ecs, role, fmt, description in _DERIVED:
        rows.append(FlowField(name, mapping, description, None, inputs, ecs, role, fmt,
                              role in _KEYWORD_SUBFIELD_ROLES and mapping in ("keyword", "ip")))
    names = [r.name for r in rows]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"schema fields defined twice: {sorted(duplicates)}")
    return Schema(tuple(rows), {r.name: r for r in rows})
