package main

// Deterministic (per -seed) generator of realistic Flow Aggregator records.
// Only the times depend on the clock: flowEnd = now, flowStart in [now-60s, now-1s].

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
)

// Flow kinds selectable with -flow-types.
const (
	podToPod      = "pod-to-pod"
	podToService  = "pod-to-service"
	podToExternal = "pod-to-external"
	fromExternal  = "from-external"
)

var allKinds = []string{podToPod, podToService, podToExternal, fromExternal}

type generator struct {
	rng       *rand.Rand
	seed      uint64
	clusterID string
}

func newGenerator(seed uint64) *generator {
	g := &generator{rng: rand.New(rand.NewPCG(seed, 0x5eed)), seed: seed}
	g.clusterID = uuidString(g.uuid("cluster", "antrea"))
	return g
}

// uuid derives a stable 16-byte version-4 style UUID from a kind and a name,
// so that e.g. pod "prod/web-3" keeps the same UUID in every record of a run.
// An absent object ("" or "<namespace>/") gets the all-zero UUID.
func (g *generator) uuid(kind, name string) []byte {
	if name == "" || strings.HasSuffix(name, "/") {
		return make([]byte, 16) // absent object: all-zero UUID
	}
	h := sha256.Sum256([]byte(fmt.Sprintf("%d|%s|%s", g.seed, kind, name)))
	u := h[:16]
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

func uuidString(u []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func (g *generator) pick(s ...string) string { return s[g.rng.IntN(len(s))] }

// Address helpers. Pod IPs: 10.10.<node>.<n+2> / fd00:10:10::<node>:<n+2>.
func podIP(node, n int, ipv6 bool) netip.Addr {
	if ipv6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00:10:10::%x:%x", node, n+2))
	}
	return netip.AddrFrom4([4]byte{10, 10, byte(node), byte(n + 2)})
}

func clusterIP(k int, ipv6 bool) netip.Addr {
	if ipv6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00:10:96::%x", k+10))
	}
	return netip.AddrFrom4([4]byte{10, 96, 0, byte(k + 10)})
}

func nodeIP(node int, ipv6 bool) netip.Addr {
	if ipv6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00:192:168:77::%x", node+10))
	}
	return netip.AddrFrom4([4]byte{192, 168, 77, byte(node + 10)})
}

func zeroIP(ipv6 bool) netip.Addr {
	if ipv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

var (
	externalV4 = []string{"93.184.216.34", "151.101.1.69", "104.16.132.229", "142.250.74.46"}
	externalV6 = []string{"2606:2800:220:1:248:1893:25c8:1946", "2a04:4e42::81", "2606:4700::6810:84e5"}
	clientsV4  = []string{"203.0.113.7", "198.51.100.23", "192.0.2.44"}
	clientsV6  = []string{"2001:db8::7", "2001:db8:1::23"}
)

// labels returns Pod labels as the JSON text Antrea sends; now and then a
// long label set (> 255 bytes, which IPFIX encodes with a 3-byte length).
func (g *generator) labels(app, tier string) string {
	switch g.rng.IntN(10) {
	case 0:
		return "{}"
	case 1:
		var b strings.Builder
		fmt.Fprintf(&b, `{"app":%q,"tier":%q`, app, tier)
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
			"app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"} {
			fmt.Fprintf(&b, `,%q:"%s-%s-long-label-value"`, k, app, tier)
		}
		b.WriteString(`,"pod-template-hash":"7d4b9c8f6d"}`)
		return b.String()
	}
	return fmt.Sprintf(`{"app":%q,"tier":%q}`, app, tier)
}

// policy fills one direction's ("ingress"/"egress") NetworkPolicy fields.
// Types: 1 K8s NetworkPolicy, 2 Antrea NetworkPolicy, 3 Antrea ClusterNetworkPolicy.
// Actions: 0 No Action, 1 Allow, 2 Drop, 3 Reject. Empty names are common (no
// policy); there is never one on the side without a Pod (ns == "").
func (g *generator) policy(f map[string]any, dir, ns string) {
	name, pns, rule := "", "", ""
	var typ, action uint8
	c := g.rng.IntN(6)
	if ns == "" {
		c = 0
	}
	switch c {
	case 0, 1: // no policy applied: empty name/namespace (collector derives "N/A")
	case 2:
		name, pns, typ, action = "allow-web", ns, 1, 1
	case 3:
		name, pns, typ, rule, action = "anp-web", ns, 2, dir+"-allow-http", 1
	case 4:
		name, typ, rule, action = "acnp-drop-untrusted", 3, "drop-all", 2
	case 5:
		name, typ, rule, action = "acnp-reject-legacy", 3, "reject-legacy", 3
	}
	f[dir+"NetworkPolicyName"] = name
	f[dir+"NetworkPolicyNamespace"] = pns
	f[dir+"NetworkPolicyType"] = typ
	f[dir+"NetworkPolicyRuleName"] = rule
	f[dir+"NetworkPolicyRuleAction"] = action
	f[dir+"NetworkPolicyUUID"] = g.uuid("policy", pns+"/"+name)
}

// counters returns packet and octet totals and deltas; one record in five has
// an octet total above 2^32.
func (g *generator) counters(big bool) (pt, ot, pd, od uint64) {
	if big {
		ot = 1<<32 + g.rng.Uint64N(50_000_000_000)
		pt = ot / (1000 + g.rng.Uint64N(400))
	} else {
		pt = 1 + g.rng.Uint64N(50_000)
		ot = pt * (60 + g.rng.Uint64N(1440))
	}
	div := 1 + g.rng.Uint64N(4)
	return pt, ot, pt / div, ot / div
}

// record returns the field values of record i (typed as the go-ipfix element
// data types: uint8/16/32/64, string, netip.Addr, []byte for UUIDs).
func (g *generator) record(i int, kind string, ipv6 bool, now uint32) map[string]any {
	r := g.rng
	f := map[string]any{}
	dur := uint32(1 + r.IntN(60))
	start, end := now-dur, now

	srcNode, dstNode := 1+r.IntN(3), 1+r.IntN(3)
	srcN, dstN := r.IntN(20), r.IntN(20)
	srcNS, dstNS := g.pick("default", "prod"), g.pick("default", "prod")
	srcPod, dstPod := fmt.Sprintf("web-%d", srcN), fmt.Sprintf("web-%d", dstN)
	srcIP, dstIP := podIP(srcNode, srcN, ipv6), podIP(dstNode, dstN, ipv6)
	proto := uint8(6)
	dport := uint16(g.pick4(80, 443, 8080, 5432))
	var svcPort uint16
	svcName, egressName, egressIP, egressNode := "", "", "", ""
	cIP, sIP, snatIP := zeroIP(ipv6), zeroIP(ipv6), zeroIP(ipv6)
	var snatPort uint16
	var flowType uint8

	switch kind {
	case podToPod:
		flowType = 2
		if srcNode == dstNode {
			flowType = 1
		}
	case podToService:
		flowType = 2
		if srcNode == dstNode {
			flowType = 1
		}
		k := r.IntN(5)
		cIP, sIP = clusterIP(k, ipv6), clusterIP(k, ipv6)
		if r.IntN(5) == 0 { // DNS over UDP via kube-dns
			proto, svcPort, dport = 17, 53, 53
			svcName, dstNS, dstPod = "kube-system/kube-dns:dns", "kube-system", fmt.Sprintf("coredns-%d", dstN%2)
		} else {
			svcPort, dport = 80, 8080
			svcName, dstNS = fmt.Sprintf("prod/svc-%d:http", k), "prod"
		}
	case podToExternal:
		flowType = 3
		dstNode, dstPod, dstNS = 0, "", ""
		if ipv6 {
			dstIP = netip.MustParseAddr(g.pick(externalV6...))
		} else {
			dstIP = netip.MustParseAddr(g.pick(externalV4...))
		}
		dport = 443
		if r.IntN(2) == 0 {
			egressName, egressNode = "egress-prod", fmt.Sprintf("node-%d", 1+r.IntN(3))
			egressIP = g.pick("198.51.100.7", "198.51.100.8")
			if ipv6 {
				egressIP = "2001:db8:e::7"
			}
		}
	case fromExternal: // a client reaching a NodePort Service; kube-proxy SNATs it
		flowType = 4
		srcNode, srcPod, srcNS = 0, "", ""
		if ipv6 {
			srcIP = netip.MustParseAddr(g.pick(clientsV6...))
		} else {
			srcIP = netip.MustParseAddr(g.pick(clientsV4...))
		}
		k := r.IntN(5)
		svcPort, dport, dstNS = 30080, 8080, "prod"
		svcName = fmt.Sprintf("prod/svc-%d:http", k)
		cIP, sIP = clusterIP(k, ipv6), nodeIP(dstNode, ipv6)
		snatIP, snatPort = nodeIP(dstNode, ipv6), uint16(32768+r.IntN(28000))
	}

	tcpState := ""
	reason := uint8(2) // active timeout
	if proto == 6 {
		tcpState = g.pick("ESTABLISHED", "ESTABLISHED", "ESTABLISHED", "TIME_WAIT", "CLOSE", "SYN_SENT")
		if tcpState == "TIME_WAIT" || tcpState == "CLOSE" {
			reason = 3 // end of flow
		}
	} else if r.IntN(3) == 0 {
		reason = 1 // idle timeout
	}

	node := func(n int) string {
		if n == 0 {
			return ""
		}
		return fmt.Sprintf("node-%d", n)
	}
	family := func(v4, v6 string) string {
		if ipv6 {
			return v6
		}
		return v4
	}

	f["flowStartSeconds"], f["flowEndSeconds"], f["flowEndReason"] = start, end, reason
	f["sourceTransportPort"] = uint16(32768 + r.IntN(28232))
	f["destinationTransportPort"], f["protocolIdentifier"] = dport, proto
	pt, ot, pd, od := g.counters(i%5 == 4)
	rpt, rot, rpd, rod := g.counters(i%10 == 9)
	f["packetTotalCount"], f["octetTotalCount"], f["packetDeltaCount"], f["octetDeltaCount"] = pt, ot, pd, od
	f["reversePacketTotalCount"], f["reverseOctetTotalCount"] = rpt, rot
	f["reversePacketDeltaCount"], f["reverseOctetDeltaCount"] = rpd, rod
	f[family("sourceIPv4Address", "sourceIPv6Address")] = srcIP
	f[family("destinationIPv4Address", "destinationIPv6Address")] = dstIP

	f["sourcePodName"], f["sourcePodNamespace"], f["sourceNodeName"] = srcPod, srcNS, node(srcNode)
	f["destinationPodName"], f["destinationPodNamespace"], f["destinationNodeName"] = dstPod, dstNS, node(dstNode)
	f["sourcePodUUID"], f["sourceNodeUUID"] = g.uuid("pod", srcNS+"/"+srcPod), g.uuid("node", node(srcNode))
	f["destinationPodUUID"], f["destinationNodeUUID"] = g.uuid("pod", dstNS+"/"+dstPod), g.uuid("node", node(dstNode))
	f["destinationServicePort"], f["destinationServicePortName"] = svcPort, svcName
	f["destinationServiceUUID"] = g.uuid("service", strings.Split(svcName, ":")[0])
	g.policy(f, "ingress", dstNS)
	g.policy(f, "egress", srcNS)
	f["tcpState"], f["flowType"] = tcpState, flowType
	f["egressName"], f["egressIP"], f["egressNodeName"] = egressName, egressIP, egressNode
	f["egressUUID"], f["egressNodeUUID"] = g.uuid("egress", egressName), g.uuid("node", egressNode)
	f["proxySnatPort"], f[family("proxySnatIPv4", "proxySnatIPv6")] = snatPort, snatIP
	f[family("destinationClusterIPv4", "destinationClusterIPv6")] = cIP
	f[family("destinationServiceIPv4", "destinationServiceIPv6")] = sIP

	// Per-node counters: the source Node reports unless the source is external;
	// the destination Node reports for inter-node and from-external flows.
	fromSrc := srcNode != 0
	fromDst := flowType == 2 || flowType == 4
	lost := uint64(r.IntN(3)) // a few packets lost between the two Nodes
	set := func(suffix string, on bool, vals [8]uint64) {
		names := []string{"packetTotalCount", "octetTotalCount", "packetDeltaCount", "octetDeltaCount",
			"reversePacketTotalCount", "reverseOctetTotalCount", "reversePacketDeltaCount", "reverseOctetDeltaCount"}
		for j, n := range names {
			if on {
				f[n+suffix] = vals[j]
			} else {
				f[n+suffix] = uint64(0)
			}
		}
	}
	all := [8]uint64{pt, ot, pd, od, rpt, rot, rpd, rod}
	set("FromSourceNode", fromSrc, all)
	dstVals := all
	if fromSrc && fromDst && pd > lost {
		dstVals[0], dstVals[2] = pt-lost, pd-lost
	}
	set("FromDestinationNode", fromDst, dstVals)
	endIf := func(on bool) uint32 {
		if on {
			return end
		}
		return 0
	}
	f["flowEndSecondsFromSourceNode"], f["flowEndSecondsFromDestinationNode"] = endIf(fromSrc), endIf(fromDst)

	// Throughput in bits/s over the interval the delta counters cover.
	tp := func(octets uint64, on bool) uint64 {
		if !on {
			return 0
		}
		return octets * 8 / uint64(dur)
	}
	f["throughput"], f["reverseThroughput"] = tp(od, true), tp(rod, true)
	f["throughputFromSourceNode"], f["reverseThroughputFromSourceNode"] = tp(od, fromSrc), tp(rod, fromSrc)
	f["throughputFromDestinationNode"], f["reverseThroughputFromDestinationNode"] = tp(od, fromDst), tp(rod, fromDst)

	f["sourcePodLabels"], f["destinationPodLabels"] = "", ""
	if srcPod != "" {
		f["sourcePodLabels"] = g.labels("web", "front")
	}
	if dstPod != "" {
		f["destinationPodLabels"] = g.labels(strings.SplitN(dstPod, "-", 2)[0], "back")
	}
	f["clusterId"] = g.clusterID
	return f
}

func (g *generator) pick4(a, b, c, d int) int { return []int{a, b, c, d}[g.rng.IntN(4)] }
