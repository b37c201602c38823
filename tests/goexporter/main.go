// Command goexporter sends Antrea Flow Aggregator-like flow records to an IPFIX
// collector with the real exporting library Antrea uses (github.com/vmware/go-ipfix
// v0.17.0), the same way the Flow Aggregator does: one ExportingProcess, a
// BufferedIPFIXExporter, an IPv4 and an IPv6 template sent first, then data
// records, a final Flush and CloseConnToCollector.
//
// It is a test tool for flow-ingest's integration tests. With -out FILE it
// writes, one JSON object per line, every record it sent:
//
//	{"template_id": 256, "ipv6": false, "export_time_min": 1700000000,
//	 "export_time_max": 1700000000, "fields": {"flowStartSeconds": 1699999950, ...}}
//
// Values: integers as JSON numbers (uint64 exact), addresses as canonical text,
// strings as text, octetArray (UUIDs) as lowercase hex, dateTimeSeconds as epoch
// seconds. export_time_min/max bound the IPFIX export time (or the JSON
// @timestamp) of the message that carried the record, in epoch seconds.
//
// Records are written in the order they were handed to the exporter. That is
// the wire order, except that with -mix IPv4 and IPv6 records are buffered in
// separate messages (per template), as in Antrea.
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/go-ipfix/pkg/entities"
	"github.com/vmware/go-ipfix/pkg/exporter"
	"github.com/vmware/go-ipfix/pkg/registry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "goexporter: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	addr, transport, out       string
	count                      int
	ipv6, mix, jsonMode, uuids bool
	ca, cert, key, serverName  string
	domainID                   uint
	seed                       uint64
	flowTypes                  string
	pathMTU, maxMsgSize        int
}

func parseFlags() (*options, error) {
	o := &options{}
	flag.StringVar(&o.addr, "addr", "127.0.0.1:4739", "collector address host:port")
	flag.StringVar(&o.transport, "transport", "udp", "udp, tcp or tls (TLS over TCP)")
	flag.IntVar(&o.count, "count", 10, "number of data records to send")
	flag.BoolVar(&o.ipv6, "ipv6", false, "send IPv6 records (IPv6 template)")
	flag.BoolVar(&o.mix, "mix", false, "alternate IPv4 and IPv6 records")
	flag.BoolVar(&o.jsonMode, "json", false, "SendJSONRecord mode: JSON lines instead of IPFIX (Antrea recordFormat: JSON); implies no UUIDs")
	flag.BoolVar(&o.uuids, "uuids", false, "include the 16-byte octetArray UUID elements (Antrea includeK8sUIDs)")
	flag.StringVar(&o.ca, "ca", "", "PEM CA bundle to verify the collector (tls)")
	flag.StringVar(&o.cert, "cert", "", "PEM client certificate for mTLS (tls)")
	flag.StringVar(&o.key, "key", "", "PEM client key for mTLS (tls)")
	flag.StringVar(&o.serverName, "server-name", "", "TLS server name to verify (default: host of -addr)")
	flag.UintVar(&o.domainID, "domain-id", 0xA47EA, "IPFIX observation domain id")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the deterministic record generator")
	flag.StringVar(&o.flowTypes, "flow-types", strings.Join(allKinds, ","), "comma-separated kinds, used in turn: "+strings.Join(allKinds, ", "))
	flag.IntVar(&o.pathMTU, "mtu", 1500, "path MTU for UDP message sizing (Antrea uses eth0's MTU); 0 = library default (512-byte messages)")
	flag.IntVar(&o.maxMsgSize, "max-msg-size", 0, "maximum IPFIX message size (0 = library default)")
	flag.StringVar(&o.out, "out", "", "write the records sent, as JSON lines, to this file")
	flag.Parse()
	if o.transport != "udp" && o.transport != "tcp" && o.transport != "tls" {
		return nil, fmt.Errorf("-transport must be udp, tcp or tls, not %q", o.transport)
	}
	if o.count < 0 {
		return nil, fmt.Errorf("-count must be >= 0")
	}
	if o.jsonMode {
		// go-ipfix's JSON encoder rejects octetArray elements.
		o.uuids = false
	}
	return o, nil
}

func run() error {
	o, err := parseFlags()
	if err != nil {
		return err
	}
	var kinds []string
	for _, k := range strings.Split(o.flowTypes, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(allKinds, k) {
			return fmt.Errorf("unknown flow type %q (want %s)", k, strings.Join(allKinds, ", "))
		}
		kinds = append(kinds, k)
	}
	if len(kinds) == 0 {
		return fmt.Errorf("-flow-types is empty")
	}

	registry.LoadRegistry()
	templates := map[bool][]*entities.InfoElement{
		false: resolve(elementList(false, o.uuids)),
		true:  resolve(elementList(true, o.uuids)),
	}

	input := exporter.ExporterInput{
		CollectorAddress:    o.addr,
		CollectorProtocol:   "udp",
		ObservationDomainID: uint32(o.domainID),
		SendJSONRecord:      o.jsonMode,
		MaxMsgSize:          o.maxMsgSize,
	}
	if o.transport != "udp" {
		input.CollectorProtocol = "tcp"
	} else {
		input.PathMTU = o.pathMTU
	}
	if o.transport == "tls" {
		tc := &exporter.ExporterTLSClientConfig{ServerName: o.serverName}
		if tc.CAData, err = readOptional(o.ca); err != nil {
			return err
		}
		if tc.CertData, err = readOptional(o.cert); err != nil {
			return err
		}
		if tc.KeyData, err = readOptional(o.key); err != nil {
			return err
		}
		input.TLSClientConfig = tc
	}

	ep, err := exporter.InitExportingProcess(input)
	if err != nil {
		return err
	}
	defer ep.CloseConnToCollector() // closes TCP/TLS cleanly (TLS close_notify)
	bufExp := exporter.NewBufferedIPFIXExporter(ep)

	// Like Antrea: the IPv4 then the IPv6 template, whatever is sent afterwards
	// (ignored by the buffered exporter in JSON mode).
	templateID := map[bool]uint16{}
	for _, v6 := range []bool{false, true} {
		templateID[v6] = ep.NewTemplateID()
		elems := make([]entities.InfoElementWithValue, 0, len(templates[v6]))
		for _, ie := range templates[v6] {
			e, err := entities.DecodeAndCreateInfoElementWithValue(ie, nil)
			if err != nil {
				return err
			}
			elems = append(elems, e)
		}
		rec := entities.NewTemplateRecordFromElements(templateID[v6], elems)
		rec.PrepareRecord()
		if err := bufExp.AddRecord(rec); err != nil {
			return fmt.Errorf("sending template %d: %w", templateID[v6], err)
		}
	}

	// With -out, each record's line is encoded (from the go-ipfix record itself)
	// as it is handed to the exporter; only the bytes are kept until the end,
	// when the export-time window is known. Without -out nothing is kept.
	gen := newGenerator(o.seed)
	type sent struct {
		v6     bool
		fields []byte
		before int64
	}
	var sentRecs []sent
	for i := 0; i < o.count; i++ {
		v6 := o.ipv6 || (o.mix && i%2 == 1)
		now := uint32(time.Now().Unix())
		values := gen.record(i, kinds[i%len(kinds)], v6, now)
		elems := make([]entities.InfoElementWithValue, 0, len(templates[v6]))
		for _, ie := range templates[v6] {
			e, err := newValue(ie, values[ie.Name])
			if err != nil {
				return err
			}
			elems = append(elems, e)
		}
		rec := entities.NewDataRecordFromElements(templateID[v6], elems)
		before := time.Now().Unix()
		if err := bufExp.AddRecord(rec); err != nil {
			return fmt.Errorf("sending record %d: %w", i, err)
		}
		if o.out != "" {
			fields, err := encodeFields(rec)
			if err != nil {
				return err
			}
			sentRecs = append(sentRecs, sent{v6, fields, before})
		}
	}
	if err := bufExp.Flush(); err != nil {
		return fmt.Errorf("flushing: %w", err)
	}
	after := time.Now().Unix()
	ep.CloseConnToCollector() // idempotent; closes TCP/TLS now so the collector sees EOF

	if o.out == "" {
		return nil
	}
	f, err := os.Create(o.out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, s := range sentRecs {
		fmt.Fprintf(w, `{"template_id":%d,"ipv6":%t,"export_time_min":%d,"export_time_max":%d,"fields":%s}`+"\n",
			templateID[s.v6], s.v6, s.before, after, s.fields)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readOptional(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return os.ReadFile(path)
}

// newValue wraps a generated value in the go-ipfix type for the element.
func newValue(ie *entities.InfoElement, v any) (entities.InfoElementWithValue, error) {
	bad := func() (entities.InfoElementWithValue, error) {
		return nil, fmt.Errorf("generator gave %T for %s (data type %d)", v, ie.Name, ie.DataType)
	}
	switch ie.DataType {
	case entities.Unsigned8:
		if x, ok := v.(uint8); ok {
			return entities.NewUnsigned8InfoElement(ie, x), nil
		}
	case entities.Unsigned16:
		if x, ok := v.(uint16); ok {
			return entities.NewUnsigned16InfoElement(ie, x), nil
		}
	case entities.Unsigned32:
		if x, ok := v.(uint32); ok {
			return entities.NewUnsigned32InfoElement(ie, x), nil
		}
	case entities.Unsigned64:
		if x, ok := v.(uint64); ok {
			return entities.NewUnsigned64InfoElement(ie, x), nil
		}
	case entities.DateTimeSeconds:
		if x, ok := v.(uint32); ok {
			return entities.NewDateTimeSecondsInfoElement(ie, x), nil
		}
	case entities.String:
		if x, ok := v.(string); ok {
			return entities.NewStringInfoElement(ie, x), nil
		}
	case entities.Ipv4Address, entities.Ipv6Address:
		if x, ok := v.(netip.Addr); ok {
			return entities.NewIPAddressInfoElement(ie, x.AsSlice()), nil
		}
	case entities.OctetArray:
		if x, ok := v.([]byte); ok {
			return entities.NewOctetArrayInfoElement(ie, x), nil
		}
	}
	return bad()
}

// encodeFields renders a data record's values as a JSON object, keeping the
// template's element order. Values are read back from the go-ipfix record.
func encodeFields(rec entities.Record) ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range rec.GetOrderedElementList() {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(e.GetName())
		b.Write(name)
		b.WriteByte(':')
		var val string
		switch e.GetDataType() {
		case entities.Unsigned8:
			val = strconv.FormatUint(uint64(e.GetUnsigned8Value()), 10)
		case entities.Unsigned16:
			val = strconv.FormatUint(uint64(e.GetUnsigned16Value()), 10)
		case entities.Unsigned32, entities.DateTimeSeconds:
			val = strconv.FormatUint(uint64(e.GetUnsigned32Value()), 10)
		case entities.Unsigned64:
			val = strconv.FormatUint(e.GetUnsigned64Value(), 10)
		case entities.Boolean:
			val = strconv.FormatBool(e.GetBooleanValue())
		case entities.String:
			s, _ := json.Marshal(e.GetStringValue())
			val = string(s)
		case entities.Ipv4Address, entities.Ipv6Address:
			a, ok := netip.AddrFromSlice(e.GetIPAddressValue())
			if !ok {
				return nil, fmt.Errorf("bad address in %s", e.GetName())
			}
			val = strconv.Quote(a.String())
		case entities.OctetArray:
			val = strconv.Quote(hex.EncodeToString(e.GetOctetArrayValue()))
		default:
			return nil, fmt.Errorf("no -out encoding for %s (data type %d)", e.GetName(), e.GetDataType())
		}
		b.WriteString(val)
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}
