"""The decoder against a second real exporter: pmacct's pmacctd + nfprobe plugin replaying a known pcap.

The same capture as ``tests/test_softflowd.py`` (``tests/support/pcapgen.py``: 35
conversations, 59 one-way flows, TCP/UDP/ICMP over IPv4 and IPv6) is read by
``pmacctd`` (``pcap_savefile``), whose ``nfprobe`` plugin exports it to a UDP socket of
ours as IPFIX, NetFlow v9 and NetFlow v5 (``tests/support/pmacct.py``; all variants run
in parallel, ~3.2 s in all, because pmacctd sleeps a fixed ~3 s per run).  The
datagrams go, in arrival order, through one ``FlowDecoder`` session, and every decoded
record is compared field by field with the flows of the pcap.

pmacct 1.7.7's nfprobe semantics the expectations follow (read in its source,
``src/nfprobe_plugin/``; see docs/real-exporters.md):

* Its flow cache is softflowd 0.9.7's: a flow is bidirectional, keyed by the address
  pair, the port pair and the protocol, and exported as one record per direction that
  carried packets.  Both records carry the bidirectional flow's first and last packet
  time.  The expectation groups the pcap's one-way flows the same way.
* ICMP: no icmpTypeCode element; ``type << 8 | code`` is the destination port and the
  source port is 0, in IPFIX and v9 as in v5.  Type/code is thereby part of the key: an
  echo request series and its replies are two flows (as in pcapgen).
* ToS: every packet overwrites *both* directions' ToS (its own with its ToS, the other
  with 0), so only the direction that carried the flow's last packet reports a ToS.
* Times: IPFIX and v9 send absolute ``flowStartMilliseconds``/``flowEndMilliseconds``
  (IEs 152/153) taken from the packets' pcap timestamps - exact.  v5 can only send
  sysUpTime-relative times, and pmacct's "boot" is the plugin's start on the wall
  clock, so a replayed capture's times are negative numbers cast to unsigned 32 bits:
  the decoder's absolute times are then the pcap's times plus a multiple of 2^32 ms,
  and that is what is checked.  (pmacct has no equivalent of softflowd's ``-a``.)
* Header export times are the wall clock at sending.  Sequence numbers and the v9
  record count follow RFC 7011 / RFC 3954 (unlike softflowd), so the decoder's loss,
  reordering and count-mismatch counters must stay zero too.

Variants: plain (the configuration of the brief), ``-options`` (``nfprobe_source_ip``
and ``pmacctd_ext_sampling_rate: 1``: pmacct then sends its sampling and exporter
options templates and records, and a samplerId in every data record) and
``ipfix-usec`` (``nfprobe_tstamp_usec: true``: IEs 154/155 in pmacct's own, non-RFC
16-byte encoding, which the decoder reads as seconds + microseconds; see the test).

Skips only if pmacctd is not installed and FLOW_INGEST_REQUIRE_REAL_EXPORTERS is unset.
"""
from __future__ import annotations

from datetime import datetime

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from ingest_service.ipfix.decoder import FlowDecoder
from tests.support import pcapgen
from tests.support.pmacct import PmacctdSpec, PmacctRun, run_pmacctd_parallel
from tests.support.realexporters import ExporterError, require_tool

UPTIME_WRAP_MS = pcapgen.UPTIME_WRAP_MS
V5_TIME_TOLERANCE_MS = 2  # v5: header and record times are truncated to ms separately (observed: 0-1)

# Decoder counters that must stay zero on pmacct's stream: the hard errors, and - since
# pmacct numbers IPFIX/v9/v5 messages as the RFCs say - loss/order/count bookkeeping too.
HARD_ERRORS = ("decoder_errors", "malformed_messages", "truncated_messages", "malformed_sets",
               "malformed_templates", "malformed_records", "reserved_sets", "unsupported_version",
               "data_sets_without_template", "pending_sets_dropped", "templates_refused",
               "withdrawals_of_unknown_templates")
CONFORMANCE = ("lost_records", "lost_packets", "out_of_order_messages", "exporter_restarts",
               "v9_count_mismatches", "trailing_bytes")

OPTIONS = {"nfprobe_source_ip": "127.0.0.1", "pmacctd_ext_sampling_rate": "1"}
VARIANTS = {
    "ipfix": PmacctdSpec(10),
    "ipfix-options": PmacctdSpec(10, OPTIONS),
    "ipfix-usec": PmacctdSpec(10, {"nfprobe_tstamp_usec": "true"}),
    "v9": PmacctdSpec(9),
    "v9-options": PmacctdSpec(9, OPTIONS),
    "v5": PmacctdSpec(5),
}

# pmacct's template ids: 1024 IPv4 / 2048 IPv6 for flows of direction "in" (all of ours:
# nfprobe_direction is unset), 1025 / 2049 for "out" (defined, unused); options
# templates 4096 (sampling) and 4098 (exporter).
TEMPLATE_V4, TEMPLATE_V6 = 1024, 2048
DATA_TEMPLATES = {1024, 1025, 2048, 2049}
SAMPLING_OPTIONS, EXPORTER_OPTIONS = 4096, 4098
LOOPBACK_AS_U32 = 0x7F000001  # 127.0.0.1, pmacct's options scope value (nfprobe_source_ip)

# Every element of a pmacct v9/IPFIX data record (aggregate: src_host, dst_host,
# src_port, dst_port, proto, tos; pmacct adds times, counters, ipVersion, interfaces,
# flowDirection and tcpControlBits itself).  Checked as a set: nothing unchecked slips by.
V9_IPFIX_ELEMENTS = {"flowStartMilliseconds", "flowEndMilliseconds", "octetDeltaCount", "packetDeltaCount",
                     "ipVersion", "ingressInterface", "egressInterface", "flowDirection", "sourceTransportPort",
                     "destinationTransportPort", "ipClassOfService", "tcpControlBits", "protocolIdentifier"}
V5_ELEMENTS = {"sourceIPv4Address", "destinationIPv4Address", "ipNextHopIPv4Address", "ingressInterface",
               "egressInterface", "packetDeltaCount", "octetDeltaCount", "flowStartSysUpTime", "flowEndSysUpTime",
               "sourceTransportPort", "destinationTransportPort", "tcpControlBits", "protocolIdentifier",
               "ipClassOfService", "bgpSourceAsNumber", "bgpDestinationAsNumber", "sourceIPv4PrefixLength",
               "destinationIPv4PrefixLength"}


# -- expectations from the pcap -----------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One record pmacct should export: a one-way flow of the pcap, seen through nfprobe."""

    flow: pcapgen.ExpectedFlow
    start_us: int  # first / last packet of the bidirectional nfprobe flow it belongs to
    end_us: int
    tos: int


def pmacct_expectations(flows: list[pcapgen.ExpectedFlow], version: int) -> dict[tuple, Expected]:
    """The pcap's one-way flows, grouped into nfprobe's bidirectional flows.

    nfprobe keys a flow by protocol and the unordered pair of (address, port) ends; for
    ICMP the ports are (0, type << 8 | code), which is pcapgen's ExpectedFlow sport/dport.
    So two one-way flows belong together iff they have the same protocol and the same
    two ends.  The times of both records are the group's first and last packet; the ToS
    survives only in the direction that sent the group's last packet (see module doc).
    v5 carries no IPv6: those flows are left out.
    """
    groups: dict[tuple, list[pcapgen.ExpectedFlow]] = defaultdict(list)
    for flow in flows:
        if version == 5 and flow.ip_version != 4:
            continue
        groups[(flow.protocol, frozenset({(flow.src, flow.sport), (flow.dst, flow.dport)}))].append(flow)
    out = {}
    for members in groups.values():
        assert len(members) <= 2, members
        start = min(m.first_us for m in members)
        end = max(m.last_us for m in members)
        for member in members:
            tos = member.tos if member.last_us == end else 0
            out[member.key] = Expected(member, start, end, tos)
    return out


# -- fixtures -----------------------------------------------------------------------------


@dataclass
class Scenario:
    flows: list[pcapgen.ExpectedFlow]


@pytest.fixture(scope="module")
def pmacctd_binary() -> str:
    return require_tool("pmacctd", "pmacct")


@pytest.fixture(scope="module")
def scenario_and_runs(pmacctd_binary, tmp_path_factory):
    """Write the pcap, run every variant once (in parallel) for the whole module."""
    directory = tmp_path_factory.mktemp("pmacct")
    pcap = directory / "scenario.pcap"
    flows = pcapgen.write_scenario(pcap, pcapgen.default_scenario())
    try:
        runs = run_pmacctd_parallel(pcap, VARIANTS, binary=pmacctd_binary, workdir=directory)
    except ExporterError as exc:
        pytest.fail(str(exc), pytrace=False)
    return Scenario(flows), runs


def get_run(scenario_and_runs, name: str) -> tuple[Scenario, PmacctRun]:
    scenario, runs = scenario_and_runs
    run = runs[name]
    if isinstance(run, ExporterError):
        pytest.fail(str(run), pytrace=False)
    return scenario, run


# -- helpers ------------------------------------------------------------------------------


def decode_run(run: PmacctRun):
    decoder = FlowDecoder()
    per_message = []
    for datagram in run.datagrams:  # one exporter session, in arrival order
        session = ("udp", datagram.src, datagram.sport, 0)
        per_message.append(decoder.decode(datagram.payload, session, received_at=datagram.time))
    return decoder, per_message


def millis_of(value) -> int:
    """ISO 8601 text ('...Z') as the decoder writes it -> epoch milliseconds."""
    assert isinstance(value, str) and value.endswith("Z"), value
    moment = datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def record_key(fields: dict) -> tuple:
    v = "IPv4" if "sourceIPv4Address" in fields else "IPv6"
    return (fields[f"source{v}Address"], fields[f"destination{v}Address"], fields["sourceTransportPort"],
            fields["destinationTransportPort"], fields["protocolIdentifier"])


def pmacct_usec(value) -> int:
    """pmacct's 16-byte IE 154/155 (8-byte seconds, 8-byte microseconds), as the decoder renders
    it: ISO 8601 with microseconds."""
    assert isinstance(value, str) and value.endswith("Z") and len(value) == 27, value
    seconds = int(datetime.fromisoformat(value[:19] + "+00:00").timestamp())
    return seconds * 1_000_000 + int(value[20:26])


def v5_offset_ms(derived_ms: int, pcap_ms: int) -> int:
    """derived - pcap, folded into [-2^31, 2^31): 0 if equal modulo 2^32 ms."""
    return (derived_ms - pcap_ms + UPTIME_WRAP_MS // 2) % UPTIME_WRAP_MS - UPTIME_WRAP_MS // 2


def mismatches(record, want: Expected, name: str) -> list[str]:
    """Every field of one decoded data record that disagrees with the pcap."""
    fields, extra = record.fields, record.extra or {}
    flow = want.flow
    version = VARIANTS[name].version
    v = "IPv4" if flow.ip_version == 4 else "IPv6"
    expect = {
        f"source{v}Address": flow.src,
        f"destination{v}Address": flow.dst,
        "sourceTransportPort": flow.sport,  # ICMP: 0
        "destinationTransportPort": flow.dport,  # ICMP: type << 8 | code
        "protocolIdentifier": flow.protocol,
        "packetDeltaCount": flow.packets,
        "octetDeltaCount": flow.octets,
        "tcpControlBits": flow.tcp_flags,  # union per direction; 0 for UDP/ICMP
        "ipClassOfService": want.tos,
        "ingressInterface": 0,
        "egressInterface": 0,
    }
    if version == 5:
        names = V5_ELEMENTS
        expect.update(ipNextHopIPv4Address="0.0.0.0", bgpSourceAsNumber=0, bgpDestinationAsNumber=0,
                      sourceIPv4PrefixLength=0, destinationIPv4PrefixLength=0)
    else:
        names = set(V9_IPFIX_ELEMENTS) | {f"source{v}Address", f"destination{v}Address"}
        expect.update(ipVersion=flow.ip_version, flowDirection=0)
        if name == "ipfix-usec":
            names = (names - {"flowStartMilliseconds", "flowEndMilliseconds"}) | {"flowStartMicroseconds",
                                                                                   "flowEndMicroseconds"}
        if name.endswith("-options"):
            names = names | {"samplerId"}
            expect["samplerId"] = 1
    problems = [f"{key}: got {fields.get(key, '<missing>')!r}, pcap has {value!r}"
                for key, value in expect.items() if fields.get(key, "<missing>") != value]
    if set(fields) != names:
        problems.append(f"elements: missing {sorted(names - set(fields))}, unexpected {sorted(set(fields) - names)}")

    # Times: the bidirectional flow's first and last packet.
    if version == 5:
        # sysUpTime-relative to the plugin's wall-clock start: right modulo 2^32 ms only.
        for element, micros in (("flowStartMilliseconds", want.start_us), ("flowEndMilliseconds", want.end_us)):
            if element not in extra:
                problems.append(f"{element} not derived")
                continue
            got = millis_of(extra[element])
            if abs(v5_offset_ms(got, micros // 1000)) > V5_TIME_TOLERANCE_MS:
                problems.append(f"{element}: got {extra[element]}, not the pcap's time modulo 2^32 ms "
                                f"({v5_offset_ms(got, micros // 1000):+d} ms off)")
            if not record.export_time * 1000 - UPTIME_WRAP_MS < got <= record.export_time * 1000 + 1000:
                problems.append(f"{element}: {extra[element]} is not within 2^32 ms before the export time")
    elif name == "ipfix-usec":
        for element, micros in (("flowStartMicroseconds", want.start_us), ("flowEndMicroseconds", want.end_us)):
            if element in fields and pmacct_usec(fields[element]) != micros:
                problems.append(f"{element}: {fields[element]} is not {micros} us as (seconds, microseconds)")
    else:
        for element, micros in (("flowStartMilliseconds", want.start_us), ("flowEndMilliseconds", want.end_us)):
            if element in fields and millis_of(fields[element]) != micros // 1000:
                problems.append(f"{element}: got {fields[element]} "
                                f"({millis_of(fields[element]) - micros // 1000:+d} ms off the pcap)")
    # What the decoder derives: nothing for plain v9/IPFIX (times are absolute already),
    # the sampling rate from the options record, the absolute times for v5.
    derived = set(extra)
    wanted = ({"flowStartMilliseconds", "flowEndMilliseconds"} if version == 5 else
              {"samplingRate"} if name.endswith("-options") else set())
    if derived != wanted:
        problems.append(f"derived values {sorted(derived)}, expected {sorted(wanted)}")
    if name.endswith("-options") and extra.get("samplingRate") != 1:
        problems.append(f"samplingRate: got {extra.get('samplingRate')!r}, options record says 1")
    return problems


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_decoder_matches_pcap(name, scenario_and_runs):
    scenario, run = get_run(scenario_and_runs, name)
    version = VARIANTS[name].version
    expected = pmacct_expectations(scenario.flows, version)
    assert run.datagrams, run.describe()
    assert run.reported_records == len(expected), (
        f"pmacct logged {run.reported_records} records, the pcap has {len(expected)} flows\n{run.describe()}")

    decoder, per_message = decode_run(run)
    errors = {k: decoder.stats[k] for k in HARD_ERRORS if decoder.stats[k]}
    assert not errors, f"decoder problems on pmacct's stream: {errors}"
    quirks = {k: decoder.stats[k] for k in CONFORMANCE if decoder.stats[k]}
    assert not quirks, f"sequence/count bookkeeping flags pmacct's conformant stream: {quirks}"

    records = [r for message in per_message for r in message]
    data = [r for r in records if not r.options]
    assert {r.version for r in records} == {version}
    assert all(r.exporter == "127.0.0.1" and r.exporter_port == run.exporter[1] for r in records)
    assert all(r.domain_id == 0 for r in records)  # nfprobe_engine default: source id / domain 0 (v5: 0:0)
    # Header export times: pmacct's wall clock when sending (not the pcap's).
    assert all(int(run.started_wall) <= r.export_time <= run.finished_wall + 1 for r in records), (
        sorted({r.export_time for r in records}), run.started_wall, run.finished_wall)

    keys = [record_key(r.fields) for r in data]
    duplicates = [k for k, n in Counter(keys).items() if n > 1]
    assert not duplicates, f"flows exported more than once: {duplicates}"
    assert set(keys) == set(expected), (f"not decoded: {sorted(set(expected) - set(keys))}\n"
                                        f"not in the pcap: {sorted(set(keys) - set(expected))}")
    problems = [f"{key}: {p}" for key, record in zip(keys, data) for p in mismatches(record, expected[key], name)]
    assert not problems, "\n".join(problems[:40])

    if version == 5:
        assert all(r.template_id == 0 for r in data) and not any(r.options for r in records)
        # The raw sysUpTimes are the pcap's times shifted by one constant (pmacct's boot
        # time in the pcap's clock), modulo 2^32: one offset for every start and end.
        offsets = {(r.fields[element] - micros // 1000) % UPTIME_WRAP_MS
                   for r, key in zip(data, keys)
                   for element, micros in (("flowStartSysUpTime", expected[key].start_us),
                                           ("flowEndSysUpTime", expected[key].end_us))}
        assert len(offsets) == 1, f"sysUpTimes not one constant shift of the pcap's times: {sorted(offsets)}"
    else:
        assert {r.template_id for r in data} <= {TEMPLATE_V4, TEMPLATE_V6}
        for record in data:
            assert record.template_id == (TEMPLATE_V6 if "sourceIPv6Address" in record.fields else TEMPLATE_V4)


@pytest.mark.parametrize("name", [n for n, s in VARIANTS.items() if s.version != 5])
def test_templates_and_options(name, scenario_and_runs):
    """Templates come once, in the first message, before any data; the options records decode."""
    _, run = get_run(scenario_and_runs, name)
    version = VARIANTS[name].version
    decoder, per_message = decode_run(run)
    with_options = name.endswith("-options")
    # 4 data templates (+ 2 options templates), all in the first message, never redefined.
    assert decoder.stats["templates_added"] == (6 if with_options else 4), dict(decoder.stats)
    assert decoder.stats["templates_redefined"] == 0 and decoder.stats["templates_withdrawn"] == 0
    assert decoder.template_count() == (6 if with_options else 4)
    first = FlowDecoder()
    first.decode(run.datagrams[0].payload, ("udp", "127.0.0.1", run.exporter[1], 0),
                 received_at=run.datagrams[0].time)
    assert first.stats["templates_added"] == decoder.stats["templates_added"]
    assert decoder.stats["pending_sets_kept"] == 0

    options = [r for message in per_message for r in message if r.options]
    if not with_options:
        assert not options  # pmacct sends options only for sampling, classification or a source IP
        return
    # Both options records in the first message, ahead of its data records.
    assert [r.options for r in per_message[0][:2]] == [True, True] and len(options) == 2
    by_template = {r.template_id: r for r in options}
    assert set(by_template) == {SAMPLING_OPTIONS, EXPORTER_OPTIONS}
    if version == 10:
        # IPFIX: scoped by exportingProcessId (IE 144), which pmacct fills with nfprobe_source_ip.
        scope = {"exportingProcessId": LOOPBACK_AS_U32}
    else:
        # v9: scope type 1 (System), 4 bytes = nfprobe_source_ip; the decoder keeps it as hex.
        scope = {"scopeSystem": f"{LOOPBACK_AS_U32:08x}"}
    assert by_template[SAMPLING_OPTIONS].fields == {**scope, "samplerId": 1, "samplerMode": 2,
                                                    "samplerRandomInterval": 1}
    assert by_template[EXPORTER_OPTIONS].fields == {**scope, "exporterIPv4Address": "127.0.0.1",
                                                    "exporterIPv6Address": "::"}
    assert all(r.version == version and r.export_time == options[0].export_time for r in options)


def test_v5_header_and_sampling(scenario_and_runs):
    """v5: 30 records per packet at most, RFC-style flow sequence, no sampling announced."""
    _, run = get_run(scenario_and_runs, "v5")
    decoder, per_message = decode_run(run)
    assert [len(m) for m in per_message][:-1] == [30] * (len(per_message) - 1)
    assert 0 < len(per_message[-1]) <= 30
    assert all("samplingRate" not in (r.extra or {}) for m in per_message for r in m)
    assert decoder.stats["lost_records"] == 0 and decoder.stats["out_of_order_messages"] == 0
