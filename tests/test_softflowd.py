"""The decoder against a real exporter: softflowd (Debian package) replaying a known pcap.

``tests/support/pcapgen.py`` writes a pcap of 35 conversations (TCP, UDP, ICMP over
IPv4 and IPv6; 59 one-way flows) whose every packet is known.  softflowd reads it
(``-r``), flushes all flows at end of file and exports them to a UDP socket of ours as
IPFIX (``-v 10``), NetFlow v9 (``-v 9``) and v5 (``-v 5``), with sysUpTime-relative
times and (IPFIX, v9) with absolute millisecond times (``-A milli``).  We then check:

1. ``FlowDecoder`` (the datagrams fed in arrival order as one UDP exporter session)
   yields exactly the pcap's flows, field by field: addresses, ports or ICMP type/code,
   protocol, packets, octets, TCP flags union, ToS, IP version, softflowd's
   flowDirection / flowEndReason, and absolute start/end times within
   ``TIME_TOLERANCE_MS`` of the packets' times (derived by the decoder from the
   options record's systemInitTimeMilliseconds (IPFIX), the v9/v5 header
   (sysUpTime, export time), or sent as flowStart/EndMilliseconds (``-A milli``)).
2. ``flow-ingest decode`` on a pcap of the same datagrams prints the same values in
   the Logstash-compatible document layout.
3. tshark's cflow dissector reads the same values from the same datagrams.

softflowd semantics the expectations follow (see docs/real-exporters.md):
* a flow is bidirectional inside softflowd and exported as one record per direction
  that carried packets; both records carry the *bidirectional* flow's start and end;
* ICMP "ports" are ``type << 8 | code`` and part of the flow key, so an echo request
  and its reply are two flows;
* ``-a`` makes softflowd's clock the pcap's (system init = first packet, export time
  = last packet); without it sysUpTime-relative times of an old pcap are garbage.

Skips only if softflowd is not installed and FLOW_INGEST_REQUIRE_REAL_EXPORTERS is unset.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ingest_service.documents import serialize, to_document
from ingest_service.ipfix.decoder import FlowDecoder
from tests.support import pcapgen
from tests.support.realexporters import ExporterError, ExporterRun, require_tool, run_softflowd

REPO_ROOT = Path(__file__).resolve().parents[1]
TIME_TOLERANCE_MS = 2  # observed: 0 (the scenario uses whole milliseconds; see pcapgen)
COLLECTOR_PORT_IN_PCAP = 2055

# Decoder counters that must stay zero on a clean softflowd stream.  (Not in the list:
# lost_records / out_of_order_messages - softflowd's IPFIX sequence numbers count the
# message's own records, against RFC 7011 3.1 - and v9_count_mismatches - its v9 header
# count omits template records, against RFC 3954 5.1.  Both are exporter quirks.)
HARD_ERRORS = ("decoder_errors", "malformed_messages", "truncated_messages", "malformed_sets",
               "malformed_templates", "malformed_records", "reserved_sets", "unsupported_version",
               "data_sets_without_template", "pending_sets_dropped", "templates_refused")


@dataclass(frozen=True)
class Variant:
    args: tuple[str, ...]
    version: int
    absolute_times: bool  # -A milli: flowStart/EndMilliseconds on the wire


VARIANTS = {
    "ipfix": Variant(("-v", "10", "-a"), 10, False),
    "ipfix-milli": Variant(("-v", "10", "-a", "-A", "milli"), 10, True),
    "v9": Variant(("-v", "9", "-a"), 9, False),
    "v9-milli": Variant(("-v", "9", "-a", "-A", "milli"), 9, True),
    "v5": Variant(("-v", "5", "-a"), 5, False),
}
ICMP_TYPE_CODE = {4: "icmpTypeCodeIPv4", 6: "icmpTypeCodeIPv6"}


# -- fixtures -----------------------------------------------------------------------


@dataclass
class Scenario:
    pcap: Path
    flows: list[pcapgen.ExpectedFlow]
    first_us: int  # the capture's first and last packet
    last_us: int


@pytest.fixture(scope="module")
def softflowd_binary() -> str:
    return require_tool("softflowd")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    directory = tmp_path_factory.mktemp("softflowd")
    conversations = pcapgen.default_scenario()
    path = directory / "scenario.pcap"
    flows = pcapgen.write_scenario(path, conversations)
    times = [p.time_us for c in conversations for p in c.packets]
    return Scenario(path, flows, min(times), max(times))


class _Exports:
    """One softflowd run per variant, shared by the tests of this module."""

    def __init__(self, binary: str, scenario: Scenario):
        self.binary = binary
        self.scenario = scenario
        self.runs: dict[str, ExporterRun] = {}

    def get(self, name: str) -> ExporterRun:
        if name not in self.runs:
            try:
                self.runs[name] = run_softflowd(self.scenario.pcap, VARIANTS[name].args, binary=self.binary)
            except ExporterError as exc:
                pytest.fail(str(exc), pytrace=False)
        return self.runs[name]


@pytest.fixture(scope="module")
def exports(softflowd_binary, scenario) -> _Exports:
    return _Exports(softflowd_binary, scenario)


# -- helpers --------------------------------------------------------------------------


def expected_for(variant: Variant, scenario: Scenario) -> dict[tuple, pcapgen.ExpectedFlow]:
    flows = [f for f in scenario.flows if variant.version != 5 or f.ip_version == 4]  # v5: IPv4 only
    return {f.key: f for f in flows}


def decode_run(run: ExporterRun):
    decoder = FlowDecoder()
    records = []
    for datagram in run.datagrams:  # one exporter session, in arrival order
        session = ("udp", datagram.src, datagram.sport, 0)
        records.extend(decoder.decode(datagram.payload, session, received_at=datagram.time))
    return decoder, records


def body_of(record) -> dict:
    """Elements plus derived values, as the document body merges them (elements win)."""
    return {**(record.extra or {}), **record.fields}


def record_key(body: dict, version: int) -> tuple:
    if "sourceIPv4Address" in body:
        src, dst = body["sourceIPv4Address"], body["destinationIPv4Address"]
    else:
        src, dst = body["sourceIPv6Address"], body["destinationIPv6Address"]
    proto = body["protocolIdentifier"]
    if proto in (pcapgen.PROTO_ICMP, pcapgen.PROTO_ICMPV6) and version != 5:
        type_code = body.get("icmpTypeCodeIPv4", body.get("icmpTypeCodeIPv6"))
        return (src, dst, 0, type_code, proto)
    return (src, dst, body["sourceTransportPort"], body["destinationTransportPort"], proto)


def millis_of(value) -> int:
    """ISO 8601 text ('...Z') as the decoder writes it -> epoch milliseconds."""
    assert isinstance(value, str) and value.endswith("Z"), value
    moment = datetime.fromisoformat(value[:-1]).replace(tzinfo=timezone.utc)
    return round(moment.timestamp() * 1000)


def softflowd_end_reason(flow: pcapgen.ExpectedFlow, expected: dict) -> int:
    """softflowd's flowEndReason: endOfFlow (3) for TCP reset, or FIN seen both ways; else idleTimeout (1)."""
    if flow.protocol != pcapgen.PROTO_TCP:
        return 1
    reverse = expected.get((flow.dst, flow.src, flow.dport, flow.sport, flow.protocol))
    back = reverse.tcp_flags if reverse else 0
    if (flow.tcp_flags | back) & pcapgen.RST:
        return 3
    if flow.tcp_flags & pcapgen.FIN and back & pcapgen.FIN:
        return 3
    return 1


def softflowd_tos(flow: pcapgen.ExpectedFlow) -> int:
    """softflowd keeps the ToS byte of the packet that created the flow: the other direction reports 0."""
    return flow.tos if flow.first_us == flow.conv_first_us else 0


def flow_mismatches(body: dict, flow: pcapgen.ExpectedFlow, variant: Variant, scenario: Scenario,
                    expected: dict) -> list[str]:
    """Every field of one decoded record (merged body) that disagrees with the pcap."""
    want: dict = {
        "protocolIdentifier": flow.protocol,
        "packetDeltaCount": flow.packets,
        "octetDeltaCount": flow.octets,
        "ipClassOfService": softflowd_tos(flow),
        "ingressInterface": 0,
        "egressInterface": 0,
    }
    v = "IPv4" if flow.ip_version == 4 else "IPv6"
    want[f"source{v}Address"] = flow.src
    want[f"destination{v}Address"] = flow.dst
    is_icmp = flow.icmp_type_code is not None
    if variant.version == 5:
        want.update(sourceTransportPort=flow.sport, destinationTransportPort=flow.dport,
                    tcpControlBits=flow.tcp_flags)
    else:
        want["ipVersion"] = flow.ip_version
        # softflowd files each direction under the slot of its source address in byte order.
        src_bytes = ipaddress.ip_address(flow.src).packed
        dst_bytes = ipaddress.ip_address(flow.dst).packed
        want["flowDirection"] = 0 if src_bytes < dst_bytes else 1
        want["flowEndReason"] = softflowd_end_reason(flow, expected)
        if is_icmp:
            want[ICMP_TYPE_CODE[flow.ip_version]] = flow.icmp_type_code
        else:
            want.update(sourceTransportPort=flow.sport, destinationTransportPort=flow.dport,
                        tcpControlBits=flow.tcp_flags)
    problems = [f"{name}: got {body.get(name, '<missing>')!r}, pcap has {value!r}"
                for name, value in want.items() if body.get(name, "<missing>") != value]
    if is_icmp and variant.version != 5:
        for name in ("sourceTransportPort", "destinationTransportPort", "tcpControlBits"):
            if name in body:
                problems.append(f"{name} present on an ICMP record: {body[name]!r}")
    # Times: softflowd reports the bidirectional flow's first and last packet.
    for element, micros in (("flowStartMilliseconds", flow.conv_first_us),
                            ("flowEndMilliseconds", flow.conv_last_us)):
        if element not in body:
            problems.append(f"{element} missing (absolute time not derived)")
            continue
        got = millis_of(body[element])
        if abs(got - micros // 1000) > TIME_TOLERANCE_MS:
            problems.append(f"{element}: got {body[element]} ({got - micros // 1000:+d} ms off the pcap)")
    if not variant.absolute_times:
        # -a: sysUpTime 0 is the capture's first packet; 32-bit milliseconds.
        boot_ms = scenario.first_us // 1000
        for element, micros in (("flowStartSysUpTime", flow.conv_first_us), ("flowEndSysUpTime", flow.conv_last_us)):
            uptime = (micros // 1000 - boot_ms) % pcapgen.UPTIME_WRAP_MS
            if body.get(element) != uptime:
                problems.append(f"{element}: got {body.get(element)!r}, pcap has {uptime}")
    return problems


def compare_all(bodies: list[dict], variant: Variant, scenario: Scenario) -> list[str]:
    expected = expected_for(variant, scenario)
    keys = [record_key(b, variant.version) for b in bodies]
    problems = []
    duplicates = [k for k, n in Counter(keys).items() if n > 1]
    if duplicates:
        problems.append(f"flows exported more than once: {duplicates}")
    missing = set(expected) - set(keys)
    unexpected = set(keys) - set(expected)
    if missing:
        problems.append(f"{len(missing)} pcap flows not decoded: {sorted(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} decoded flows not in the pcap: {sorted(unexpected)}")
    for key, body in zip(keys, bodies):
        if key in expected:
            problems.extend(f"{key}: {p}" for p in flow_mismatches(body, expected[key], variant, scenario, expected))
    return problems


# -- 1. the decoder, in process -----------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_decoder_matches_pcap(name, exports, scenario):
    variant = VARIANTS[name]
    run = exports.get(name)
    expected = expected_for(variant, scenario)
    assert run.datagrams, run.describe()
    assert run.reported_records == len(expected), (
        f"softflowd exported {run.reported_records} records, the pcap has {len(expected)} flows\n{run.describe()}")

    decoder, records = decode_run(run)
    errors = {k: decoder.stats[k] for k in HARD_ERRORS if decoder.stats[k]}
    assert not errors, f"decoder problems on softflowd's stream: {errors}"

    data = [r for r in records if not r.options]
    options = [r for r in records if r.options]
    assert {r.version for r in records} == {variant.version}
    assert all(r.exporter == "127.0.0.1" and r.exporter_port == run.exporter[1] for r in records)
    # -a: the export time in every header is the capture's last packet (a whole second).
    assert {r.export_time for r in records} == {scenario.last_us // 1_000_000}
    assert len(data) == len(expected)

    problems = compare_all([body_of(r) for r in data], variant, scenario)
    assert not problems, "\n".join(problems[:40])

    # Template ids: softflowd's 1024/1025 (IPv4, ICMP) and 2048/2049 (IPv6, ICMPv6).
    if variant.version != 5:
        for record in data:
            icmp = record.fields["protocolIdentifier"] in (1, 58)
            v6 = "sourceIPv6Address" in record.fields
            assert record.template_id == (2048 if v6 else 1024) + icmp
        # The options record that ties sysUpTime to wall-clock time (IPFIX), or the
        # sampling/interface options (v9): once, in the first message.
        assert len(options) == 1 and options[0].template_id == 256
        if variant.version == 10:
            assert millis_of(options[0].fields["systemInitTimeMilliseconds"]) == scenario.first_us // 1000
            assert options[0].fields["samplingPacketInterval"] == 1
        else:
            assert options[0].fields["samplingInterval"] == 1
    else:
        assert not options and all(r.template_id == 0 for r in data)


# -- 2. the CLI on a capture of the same datagrams ---------------------------------------


def _capture_of(run: ExporterRun, path: Path) -> Path:
    pcapgen.write_udp_capture(path, [(round(d.time * 1_000_000), d.payload) for d in run.datagrams],
                              src=run.exporter[0], sport=run.exporter[1], dport=COLLECTOR_PORT_IN_PCAP)
    return path


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cli_decode_matches(name, exports, scenario, tmp_path):
    variant = VARIANTS[name]
    run = exports.get(name)
    capture = _capture_of(run, tmp_path / f"{name}-export.pcap")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "ingest_service.cli", "decode", "--stats", str(capture)],
                          cwd=REPO_ROOT, env=env, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    documents = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    # Layout: {"@timestamp", "@version": "1", "host", "type": "ipfix", "ipfix": {"version", "flowset_id", ...}}
    last_second = scenario.last_us // 1_000_000
    stamp = datetime.fromtimestamp(last_second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for doc in documents:
        assert set(doc) == {"@timestamp", "@version", "host", "type", "ipfix"}, doc
        assert doc["@version"] == "1" and doc["type"] == "ipfix" and doc["host"] == "127.0.0.1"
        assert doc["@timestamp"] == stamp
        assert doc["ipfix"]["version"] == variant.version
    data = [d["ipfix"] for d in documents if not d["ipfix"].get("options")]
    for body in data:
        assert body["flowset_id"] == (0 if variant.version == 5 else
                                      (2048 if "sourceIPv6Address" in body else 1024)
                                      + (body["protocolIdentifier"] in (1, 58)))

    problems = compare_all(data, variant, scenario)
    assert not problems, "\n".join(problems[:40])

    # Byte for byte what the in-process decoder gives (same order, same serialization).
    _, records = decode_run(run)
    assert proc.stdout.splitlines() == [serialize(to_document(r)) for r in records]
    stats = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    assert not {k: stats[k] for k in HARD_ERRORS if stats.get(k)}, stats


# -- 3. tshark's reading of the same datagrams ----------------------------------------------


def _tshark_flows(document) -> list[dict]:
    out = []

    def walk(node):
        if isinstance(node, dict):
            if "cflow.octets" in node:
                out.append(node)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return out


def _tshark_abs_ms(text: str) -> int:
    # "Nov 14, 2023 22:13:25.100000000 UTC"
    head, _, fraction = text.removesuffix(" UTC").partition(".")
    moment = datetime.strptime(head, "%b %d, %Y %H:%M:%S").replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1000 + int((fraction + "000")[:3])


def _tshark_uptime_ms(times: dict, which: str) -> int:
    relative = times.get(f"cflow.time{which}")
    if relative is not None:
        return round(float(relative) * 1000)
    # tshark 4.0 shows a sysUpTime of exactly 0 as an absolute time of 1970-01-01.
    assert _tshark_abs_ms(times[f"cflow.abstime{which}"]) == 0, times
    return 0


@pytest.mark.parametrize("name", list(VARIANTS))
def test_tshark_agrees(name, exports, tmp_path):
    tshark = require_tool("tshark")
    variant = VARIANTS[name]
    run = exports.get(name)
    capture = _capture_of(run, tmp_path / f"{name}-export.pcap")
    proc = subprocess.run([tshark, "-r", str(capture), "-d", f"udp.port=={COLLECTOR_PORT_IN_PCAP},cflow", "-T", "json"],
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    theirs = {}
    for flow in _tshark_flows(json.loads(proc.stdout)):
        src = flow.get("cflow.srcaddr") or flow.get("cflow.srcaddrv6")
        dst = flow.get("cflow.dstaddr") or flow.get("cflow.dstaddrv6")
        proto = int(flow["cflow.protocol"])
        if "cflow.icmp_type_code_ipv4" in flow:
            key = (src, dst, 0, int(flow["cflow.icmp_type_code_ipv4"], 16), proto)
        elif "cflow.icmp_ipv6_type" in flow:
            key = (src, dst, 0, int(flow["cflow.icmp_ipv6_type"]) << 8 | int(flow["cflow.icmp_ipv6_code"]), proto)
        else:
            key = (src, dst, int(flow["cflow.srcport"]), int(flow["cflow.dstport"]), proto)
        times = flow.get("cflow.timedelta_tree", {})
        if variant.absolute_times:
            start, end = _tshark_abs_ms(times["cflow.abstimestart"]), _tshark_abs_ms(times["cflow.abstimeend"])
        else:  # sysUpTime-relative, in seconds
            start, end = _tshark_uptime_ms(times, "start"), _tshark_uptime_ms(times, "end")
        theirs[key] = {"octets": int(flow["cflow.octets"]), "packets": int(flow["cflow.packets"]),
                       "tcpflags": int(flow.get("cflow.tcpflags", "0"), 16), "tos": int(flow["cflow.tos"], 16),
                       "start": start, "end": end}

    _, records = decode_run(run)
    ours = {}
    for record in records:
        if record.options:
            continue
        body = record.fields
        if variant.absolute_times:
            start, end = millis_of(body["flowStartMilliseconds"]), millis_of(body["flowEndMilliseconds"])
        else:
            start, end = body["flowStartSysUpTime"], body["flowEndSysUpTime"]
        ours[record_key(body, variant.version)] = {
            "octets": body["octetDeltaCount"], "packets": body["packetDeltaCount"],
            "tcpflags": body.get("tcpControlBits", 0), "tos": body["ipClassOfService"], "start": start, "end": end}
    assert set(theirs) == set(ours)
    disagreements = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
    assert not disagreements, disagreements


# -- 4. sysUpTime past 2^32 ms (an exporter up for more than 49.7 days) ---------------------

@pytest.mark.parametrize("name", list(VARIANTS))
def test_sysuptime_wraparound(name, softflowd_binary, tmp_path):
    """softflowd -a replaying traffic 50 days after its first packet: 32-bit sysUpTimes wrap."""
    variant = VARIANTS[name]
    conversations = pcapgen.wraparound_scenario()
    pcap = tmp_path / "wrap.pcap"
    flows = pcapgen.write_scenario(pcap, conversations)
    times = [p.time_us for c in conversations for p in c.packets]
    scenario = Scenario(pcap, flows, min(times), max(times))
    try:
        run = run_softflowd(pcap, variant.args, binary=softflowd_binary)
    except ExporterError as exc:
        pytest.fail(str(exc), pytrace=False)
    decoder, records = decode_run(run)
    assert not {k: decoder.stats[k] for k in HARD_ERRORS if decoder.stats[k]}
    marker = conversations[0]
    marker_key = (marker.a, marker.b, marker.a_port, marker.b_port, marker.proto)
    data = [body_of(r) for r in records if not r.options]
    if not variant.absolute_times:  # the values really wrapped on the wire
        assert any(b["flowStartSysUpTime"] < (scenario.last_us - scenario.first_us) // 1000 - pcapgen.UPTIME_WRAP_MS
                   for b in data if record_key(b, variant.version) != marker_key)
    problems = []
    for problem in compare_all(data, variant, scenario):
        if problem.startswith(str(marker_key)) and ("Milliseconds" in problem or "SysUpTime" in problem):
            continue  # the boot marker's times are ambiguous by nature (see wraparound_scenario)
        problems.append(problem)
    assert not problems, "\n".join(problems)
