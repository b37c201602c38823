package main

// The information elements of a Flow Aggregator record, in the order Antrea
// builds its templates (pkg/flowaggregator/infoelements + exporter/ipfix.go):
//
//	IANA common + IPv4|IPv6 address pair
//	IANA reverse (29305) counters
//	Antrea (56506) K8s names and/or UUIDs, policies, egress, proxy SNAT, cluster/service IP
//	aggregation extras: source/destination node counters (interleaved, as
//	Antrea does), flowEndSecondsFrom*, throughput triples, pod labels, clusterId
//
// Every element is looked up in go-ipfix's own registry; an element the
// registry does not know is skipped and reported on stderr. With go-ipfix
// v0.17.0 nothing is skipped: all elements below are registered.

import (
	"fmt"
	"os"

	"github.com/vmware/go-ipfix/pkg/entities"
	"github.com/vmware/go-ipfix/pkg/registry"
)

type ieRef struct {
	name       string
	enterprise uint32
}

const (
	iana    = registry.IANAEnterpriseID         // 0
	reverse = registry.IANAReversedEnterpriseID // 29305
	antrea  = registry.AntreaEnterpriseID       // 56506
)

// elementList returns the template element list for one IP family.
// withUUIDs adds the 16-byte octetArray UUID elements (Antrea's includeK8sUIDs).
func elementList(ipv6, withUUIDs bool) []ieRef {
	fam := func(v4, v6 string) string {
		if ipv6 {
			return v6
		}
		return v4
	}
	var l []ieRef
	add := func(ent uint32, names ...string) {
		for _, n := range names {
			l = append(l, ieRef{n, ent})
		}
	}
	uuid := func(names ...string) {
		if withUUIDs {
			add(antrea, names...)
		}
	}

	add(iana, "flowStartSeconds", "flowEndSeconds", "flowEndReason",
		"sourceTransportPort", "destinationTransportPort", "protocolIdentifier",
		"packetTotalCount", "octetTotalCount", "packetDeltaCount", "octetDeltaCount",
		fam("sourceIPv4Address", "sourceIPv6Address"),
		fam("destinationIPv4Address", "destinationIPv6Address"))
	add(reverse, "reversePacketTotalCount", "reverseOctetTotalCount",
		"reversePacketDeltaCount", "reverseOctetDeltaCount")

	add(antrea, "sourcePodName", "sourcePodNamespace")
	uuid("sourcePodUUID")
	add(antrea, "sourceNodeName")
	uuid("sourceNodeUUID")
	add(antrea, "destinationPodName", "destinationPodNamespace")
	uuid("destinationPodUUID")
	add(antrea, "destinationNodeName")
	uuid("destinationNodeUUID")
	add(antrea, "destinationServicePort", "destinationServicePortName")
	uuid("destinationServiceUUID")
	add(antrea, "ingressNetworkPolicyName", "ingressNetworkPolicyNamespace")
	uuid("ingressNetworkPolicyUUID")
	add(antrea, "ingressNetworkPolicyType", "ingressNetworkPolicyRuleName", "ingressNetworkPolicyRuleAction")
	add(antrea, "egressNetworkPolicyName", "egressNetworkPolicyNamespace")
	uuid("egressNetworkPolicyUUID")
	add(antrea, "egressNetworkPolicyType", "egressNetworkPolicyRuleName", "egressNetworkPolicyRuleAction")
	add(antrea, "tcpState", "flowType", "egressName")
	uuid("egressUUID")
	add(antrea, "egressIP", "egressNodeName")
	uuid("egressNodeUUID")
	add(antrea, "proxySnatPort", fam("proxySnatIPv4", "proxySnatIPv6"),
		fam("destinationClusterIPv4", "destinationClusterIPv6"),
		fam("destinationServiceIPv4", "destinationServiceIPv6"))

	// Aggregation extras. Antrea interleaves source and destination node
	// counters in the order of its StatsElementList.
	for _, s := range []string{"octetDeltaCount", "octetTotalCount", "packetDeltaCount", "packetTotalCount",
		"reverseOctetDeltaCount", "reverseOctetTotalCount", "reversePacketDeltaCount", "reversePacketTotalCount"} {
		add(antrea, s+"FromSourceNode", s+"FromDestinationNode")
	}
	add(antrea, "flowEndSecondsFromSourceNode", "flowEndSecondsFromDestinationNode")
	add(antrea, "throughput", "throughputFromSourceNode", "throughputFromDestinationNode",
		"reverseThroughput", "reverseThroughputFromSourceNode", "reverseThroughputFromDestinationNode")
	add(antrea, "sourcePodLabels", "destinationPodLabels", "clusterId")
	return l
}

// resolve looks every element up in go-ipfix's registry, skipping (and
// reporting) the ones it lacks.
func resolve(refs []ieRef) []*entities.InfoElement {
	out := make([]*entities.InfoElement, 0, len(refs))
	for _, r := range refs {
		ie, err := registry.GetInfoElement(r.name, r.enterprise)
		if err != nil {
			fmt.Fprintf(os.Stderr, "goexporter: skipping %s (enterprise %d): %v\n", r.name, r.enterprise, err)
			continue
		}
		out = append(out, ie)
	}
	return out
}
