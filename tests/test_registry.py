"""Tests for ingest_service.ipfix.registry and tools/gen_registry.py."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ingest_service.ipfix import registry as reg
from ingest_service.ipfix.registry import (
    ABSTRACT_TYPES,
    ANTREA_ENTERPRISE,
    IANA_ENTERPRISE,
    NON_REVERSIBLE,
    REVERSE_ENTERPRISE,
    Element,
    Registry,
    default_registry,
    load_logstash_definitions,
    logstash_type,
)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"  # ../shared from the repo root
IANA_SOURCE = REPO / "tests" / "data" / "ipfix-information-elements.csv"
IANA_CSV = REPO / "ingest_service" / "ipfix" / "registry_data" / "iana.csv"
GEN = REPO / "tools" / "gen_registry.py"
GEN_VENDOR = REPO / "tools" / "gen_vendor_registry.py"
DATA_DIR = REPO / "ingest_service" / "ipfix" / "registry_data"
VENDOR_IPFIX_CSV = DATA_DIR / "vendor_ipfix.csv"
VENDOR_V9_CSV = DATA_DIR / "vendor_v9.csv"
CODEC_NETFLOW_YAML = REPO / "tests" / "data" / "logstash-codec-netflow.netflow.yaml"
CODEC_IPFIX_YAML = REPO / "tests" / "data" / "logstash-codec-netflow.ipfix.yaml"
LAST_ELK_YML = SHARED / "antrea" / "last-elk" / "ipfix.yml"
V0_11_YML = SHARED / "antrea" / "v0.11.1" / "ipfix.yml"
IANA_IE_JSON = SHARED / "corpus" / "tools" / "iana_ie.json"


def shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (shared/ reference material missing)")
    return path


@pytest.fixture(scope="module")
def base() -> Registry:
    return default_registry()


def elements_of(registry: Registry, enterprise: int) -> list[Element]:
    return [e for e in registry if e.enterprise == enterprise]


# ------------------------------------------------------------------------------------------ built-in data


# Vendor elements per enterprise in vendor_ipfix.csv (logstash-codec-netflow ipfix.yaml, see SOURCES.md).
VENDOR_COUNTS = {
    9: 14,  # Cisco
    637: 3,  # Nokia
    3054: 39,  # Ixia
    5951: 299,  # Netscaler / Citrix
    6871: 98,  # CERT (YAF)
    6876: 10,  # VMware
    9789: 3,  # Sophos UTM
    10704: 12,  # Barracuda
    12326: 12,  # Barracuda (same elements)
    15397: 66,  # Procera / Sandvine
    21373: 2,  # Sophos UTM
    26866: 23,  # Gigamon
    41916: 1,  # vIPtela
}


def test_counts(base):
    iana = elements_of(base, IANA_ENTERPRISE)
    reverse = elements_of(base, REVERSE_ENTERPRISE)
    antrea = elements_of(base, ANTREA_ENTERPRISE)
    assert len(iana) >= 491
    assert len(iana) == 498  # the checked-in copy: ids 1..529, see registry_data/SOURCES.md
    assert max(e.id for e in iana) == 529
    assert all(e.name for e in iana)
    assert len(reverse) == len(iana) - len(NON_REVERSIBLE)
    assert len(antrea) == 73
    vendor = {pen: len(elements_of(base, pen)) for pen in VENDOR_COUNTS}
    assert vendor == VENDOR_COUNTS
    assert sum(vendor.values()) == 582
    assert len(base) == len(iana) + len(reverse) + len(antrea) + 582
    assert {e.enterprise for e in base} == {IANA_ENTERPRISE, REVERSE_ENTERPRISE, ANTREA_ENTERPRISE, *VENDOR_COUNTS}
    assert len(base.v9_default_items()) == 42
    assert base.v9_items() == []


@pytest.mark.parametrize(
    "key, name, type_, semantics, units",
    [
        ((0, 1), "octetDeltaCount", "unsigned64", "deltaCounter", "octets"),
        ((0, 2), "packetDeltaCount", "unsigned64", "deltaCounter", "packets"),
        ((0, 4), "protocolIdentifier", "unsigned8", "identifier", ""),
        ((0, 8), "sourceIPv4Address", "ipv4Address", "default", ""),
        ((0, 27), "sourceIPv6Address", "ipv6Address", "default", ""),
        ((0, 85), "octetTotalCount", "unsigned64", "totalCounter", "octets"),
        ((0, 136), "flowEndReason", "unsigned8", "identifier", ""),
        ((0, 150), "flowStartSeconds", "dateTimeSeconds", "default", "seconds"),
        ((0, 152), "flowStartMilliseconds", "dateTimeMilliseconds", "default", "milliseconds"),
        ((0, 291), "basicList", "basicList", "list", ""),
        ((0, 520), "tcpOptionsFull", "unsigned256", "flags", ""),
        ((29305, 1), "reverseOctetDeltaCount", "unsigned64", "deltaCounter", "octets"),
        ((29305, 86), "reversePacketTotalCount", "unsigned64", "totalCounter", "packets"),
        ((56506, 101), "sourcePodName", "string", "", ""),
        ((56506, 116), "ingressNetworkPolicyRulePriority", "signed32", "", ""),
        ((56506, 151), "flowEndSecondsFromSourceNode", "dateTimeSeconds", "", ""),
        ((56506, 172), "proxySnatPort", "unsigned16", "", ""),
    ],
)
def test_spot_checks(base, key, name, type_, semantics, units):
    assert base.lookup(*key) == Element(key[0], key[1], name, type_, semantics, units)
    assert base.by_name(name) == base.lookup(*key)


def test_deprecated_elements_are_kept(base):
    assert base.lookup(0, 34).name == "samplingInterval"
    assert base.lookup(0, 209).name == "tcpOptions"


def test_unassigned_and_reserved_ids_are_absent(base):
    for element_id in (0, 65, 97, 105, 127, 416, 419, 530, 32767):
        assert base.lookup(0, element_id) is None
    assert base.lookup(56506, 99) is None
    assert base.lookup(12345, 1) is None


def test_all_types_are_abstract_types(base):
    assert {e.type for e in base} <= ABSTRACT_TYPES


def test_antrea_uuids_are_octet_arrays(base):
    uuids = [e for e in elements_of(base, ANTREA_ENTERPRISE) if e.name.endswith("UUID")]
    assert {e.name for e in uuids} >= {"sourcePodUUID", "destinationPodUUID", "destinationServiceUUID",
                                       "ingressNetworkPolicyUUID", "egressNodeUUID"}
    assert len(uuids) == 9
    assert all(e.type == "octetArray" for e in uuids)


def test_reverse_elements_mirror_iana(base):
    for element in elements_of(base, IANA_ENTERPRISE):
        rev = base.lookup(REVERSE_ENTERPRISE, element.id)
        if element.name in NON_REVERSIBLE:
            assert rev is None, element
            continue
        assert rev is not None, element
        assert rev.name == "reverse" + element.name[0].upper() + element.name[1:]
        assert (rev.type, rev.semantics, rev.units) == (element.type, element.semantics, element.units)


def test_non_reversible_names_exist_in_iana(base):
    iana_names = {e.name for e in elements_of(base, IANA_ENTERPRISE)}
    assert NON_REVERSIBLE <= iana_names
    assert base.lookup(REVERSE_ENTERPRISE, 148) is None  # flowId
    assert base.lookup(REVERSE_ENTERPRISE, 210) is None  # paddingOctets


def test_names_agree_with_iana_ie_json(base):
    """Every element of the independent cross-check (netflow 0.12.2's IANA table) matches ours."""
    reference = json.loads(shared(IANA_IE_JSON).read_text())["elements"]
    assert len(reference) == 460
    # IANA changed forwardingStatus from unsigned8 to unsigned32 in revision 2 (2018-02-21,
    # RFC Errata 5262); the cross-check table still has the old type.
    explained_type_differences = {89: ("unsigned8", "unsigned32")}
    type_differences = {}
    for element_id, expected in reference.items():
        ours = base.lookup(0, int(element_id))
        assert ours is not None, element_id
        assert ours.name == expected["name"], element_id
        if ours.type != expected["type"]:
            type_differences[int(element_id)] = (expected["type"], ours.type)
    assert type_differences == explained_type_differences


# ------------------------------------------------------------------------------------- Registry behaviour


def test_default_registry_returns_independent_copies():
    first = default_registry()
    second = default_registry()
    assert first is not second
    first.add(Element(56506, 101, "podNameOverride", "string"))
    first.add(Element(999, 1, "vendorThing", "unsigned32"))
    assert second.lookup(56506, 101).name == "sourcePodName"
    assert second.lookup(999, 1) is None
    assert default_registry().lookup(56506, 101).name == "sourcePodName"
    assert reg._builtin() is reg._builtin()  # CSVs parsed once per process


def test_add_overrides_and_reindexes_names():
    registry = Registry([Element(1, 1, "alpha", "string"), Element(1, 2, "beta", "string")])
    assert len(registry) == 2
    registry.add(Element(1, 1, "gamma", "unsigned8"))
    assert len(registry) == 2
    assert registry.by_name("alpha") is None
    assert registry.by_name("gamma") == Element(1, 1, "gamma", "unsigned8")
    # a name used by two keys survives the override of one of them
    registry.add(Element(2, 5, "beta", "string"))
    registry.add(Element(2, 5, "delta", "string"))
    assert registry.by_name("beta") == Element(1, 2, "beta", "string")
    # skip entries are not indexed by name
    registry.add(Element(1, 2, "", "octetArray"))
    assert registry.lookup(1, 2).skip
    assert registry.by_name("beta") is None
    assert registry.by_name("") is None


def test_element_validation():
    with pytest.raises(ValueError, match="unknown type"):
        Element(0, 1, "x", "uint64")
    with pytest.raises(ValueError, match="out of range"):
        Element(0, 70000, "x", "string")
    element = Element(0, 1, "x", "string")
    with pytest.raises(AttributeError):
        element.name = "y"  # frozen
    assert not element.skip


def test_lookup_v9(base):
    assert base.lookup_v9(1) == base.lookup(0, 1)
    assert base.lookup_v9(1).name == "octetDeltaCount"
    assert base.lookup_v9(8).name == "sourceIPv4Address"
    assert base.lookup_v9(152).type == "dateTimeMilliseconds"
    assert base.lookup_v9(40001) == Element(0, 40001, "xlate_src_addr_ipv4", "ipv4Address")  # vendor default
    assert base.lookup_v9(32768) is None
    assert base.lookup_v9(40006) is None  # not in the codec's netflow.yaml
    assert base.lookup_v9(65) is None  # "Assigned for NetFlow v9 compatibility", unnamed; codec [:skip] not taken
    assert base.lookup_v9(0) is None


def test_add_v9():
    registry = default_registry()
    registry.add_v9(40001, Element(0, 40001, "xlate_src_addr_ipv4", "ipv4Address"))
    registry.add_v9(8, Element(0, 8, "ipv4_src_addr", "ipv4Address"))
    assert registry.lookup_v9(40001).name == "xlate_src_addr_ipv4"
    assert registry.lookup_v9(8).name == "ipv4_src_addr"
    assert registry.lookup(0, 8).name == "sourceIPv4Address"  # IPFIX side untouched
    with pytest.raises(ValueError):
        registry.add_v9(70000, Element(0, 1, "x", "string"))


# ----------------------------------------------------------------------------- Logstash definition files


def test_last_elk_definitions_load():
    ipfix, v9 = load_logstash_definitions(shared(LAST_ELK_YML))
    assert v9 == []
    assert len(ipfix) == 68
    by_key = {(e.enterprise, e.id): e for e in ipfix}
    assert by_key[(56506, 101)] == Element(56506, 101, "sourcePodName", "string")
    assert by_key[(0, 8)] == Element(0, 8, "sourceIPv4Address", "ipv4Address")
    assert by_key[(29305, 1)].name == "reverseOctetDeltaCount"
    assert by_key[(0, 0)].skip and by_key[(0, 0)].type == "octetArray"


def test_last_elk_overrides(base):
    registry = default_registry([shared(LAST_ELK_YML)])
    assert registry.lookup(56506, 101).name == "sourcePodName"
    assert registry.lookup(56506, 143).name == "sourcePodLabels"
    # the file types flowEndSecondsFromSourceNode as uint32 (as Logstash decoded it)
    assert registry.lookup(56506, 151) == Element(56506, 151, "flowEndSecondsFromSourceNode", "unsigned32")
    # same name and a numeric type: IANA semantics and units are kept
    assert registry.lookup(0, 150) == Element(0, 150, "flowStartSeconds", "unsigned32", "default", "seconds")
    assert registry.lookup(0, 1) == base.lookup(0, 1)
    # elements the file does not mention keep their built-in definitions
    assert registry.lookup(56506, 159) == Element(56506, 159, "sourcePodUUID", "octetArray")
    assert registry.lookup(0, 136).name == "flowEndReason"
    assert registry.lookup(0, 0).skip
    assert len(registry) == len(base) + 1  # only 0/0 (skip) is new
    # a single path (str or Path) is accepted as well as an iterable of paths
    assert default_registry(str(LAST_ELK_YML)).lookup(56506, 151).type == "unsigned32"


def test_v0_11_1_definitions_load_and_override(base):
    ipfix, v9 = load_logstash_definitions(shared(V0_11_YML))
    assert v9 == []
    assert len(ipfix) == 1353
    registry = default_registry([V0_11_YML])
    assert registry.lookup(56506, 101).name == "sourcePodName"
    assert registry.lookup(56506, 106) == Element(56506, 106, "destinationClusterIPv4", "ipv4Address")
    assert registry.lookup(0, 8).name == "sourceIPv4Address"
    assert registry.lookup(0, 152) == Element(0, 152, "flowStartMilliseconds", "unsigned64", "default",
                                              "milliseconds")
    assert registry.lookup(0, 210).skip  # [:skip] overrides paddingOctets
    assert registry.lookup(29305, 291).skip
    assert registry.lookup(5951, 192) == Element(5951, 192, "netscalerConnectionChainID", "octetArray")
    assert registry.lookup(5951, 538).type == "unsigned16"  # :uint15
    assert registry.lookup(15397, 38).type == "float32"  # :float
    assert registry.lookup(0, 311).type == "float64"  # :double
    assert registry.lookup(15397, 59).type == "signed8"  # :int8
    assert registry.lookup(56506, 159).name == "sourcePodUUID"  # not in the file: built-in kept
    assert registry.by_name("netscalerConnectionChainID").enterprise == 5951


def test_later_files_override_earlier(tmp_path):
    custom = tmp_path / "custom.yml"
    custom.write_text("56506:\n  101:\n    - :string\n    - :podName\n")
    registry = default_registry([shared(LAST_ELK_YML), custom])
    assert registry.lookup(56506, 101).name == "podName"
    assert registry.by_name("sourcePodName") is None
    registry = default_registry([custom, LAST_ELK_YML])
    assert registry.lookup(56506, 101).name == "sourcePodName"


NETFLOW_YAML = """\
# netflow_definitions: logstash-codec-netflow netflow.yaml format
0:
- :skip
1:
- 4
- :in_bytes
8:
- :ip4_addr
- :ipv4_src_addr
31:
- :uint24
- :ipv6_flow_label
89:
- :forwarding_status
- :forwarding_status
95:
- :application_id
- :application_id
201:
- mpls_label_stack_octets
- mpls_label_stack_octets
152:
- 8
- :flow_start_msec
33000:
- :acl_id_asa
- :ingress_acl_id
40001:
- :ip4_addr
- :xlate_src_addr_ipv4
"""


def test_netflow_definitions(tmp_path):
    path = tmp_path / "netflow.yml"
    path.write_text(NETFLOW_YAML)
    ipfix, v9 = load_logstash_definitions(path)
    assert ipfix == []
    pairs = dict(v9)
    assert [ft for ft, _ in v9] == [0, 1, 8, 31, 89, 95, 201, 152, 33000, 40001]
    assert pairs[0].skip
    assert pairs[1] == Element(0, 1, "in_bytes", "unsigned32")
    assert pairs[152] == Element(0, 152, "flow_start_msec", "unsigned64")
    assert pairs[31].type == "unsigned32"
    assert pairs[89].type == "unsigned32"
    assert pairs[95].type == "octetArray"
    assert pairs[201] == Element(0, 201, "mpls_label_stack_octets", "octetArray")
    assert pairs[33000] == Element(0, 33000, "ingress_acl_id", "octetArray")

    registry = default_registry([path])
    assert registry.lookup_v9(1).name == "in_bytes"
    assert registry.lookup_v9(40001) == Element(0, 40001, "xlate_src_addr_ipv4", "ipv4Address")
    assert registry.lookup_v9(2).name == "packetDeltaCount"  # not in the file: IANA
    assert registry.lookup_v9(40002).name == "xlate_dst_addr_ipv4"  # not in the file: built-in vendor default
    assert registry.lookup_v9(0).skip  # the file's [:skip] applies
    assert registry.lookup_v9(40006) is None
    assert registry.lookup(0, 1).name == "octetDeltaCount"  # IPFIX lookups unaffected
    assert len(registry) == len(default_registry())


@pytest.mark.parametrize(
    "spec, expected",
    [
        (":uint8", "unsigned8"), (":uint16", "unsigned16"), (":uint24", "unsigned32"),
        (":uint32", "unsigned32"), (":uint64", "unsigned64"), (":uint15", "unsigned16"),
        (":int8", "signed8"), (":int16", "signed16"), (":int32", "signed32"), (":int64", "signed64"),
        (":ip4_addr", "ipv4Address"), (":ip6_addr", "ipv6Address"), (":mac_addr", "macAddress"),
        (":string", "string"), (":octetarray", "octetArray"), (":float", "float32"),
        (":double", "float64"), (":boolean", "boolean"), ("uint32", "unsigned32"),
        (":uint16_le", "octetArray"), (":uint32le", "octetArray"), (":uint128", "octetArray"),
        (":acl_id_asa", "octetArray"), (":application_id", "octetArray"),
        (":forwarding_status", "unsigned32"), ("mpls_label_stack_octets", "octetArray"),
        (":ipv4Address", "ipv4Address"), (":dateTimeSeconds", "dateTimeSeconds"),
        (1, "unsigned8"), (2, "unsigned16"), (3, "unsigned32"), (4, "unsigned32"), (8, "unsigned64"),
        (16, "octetArray"), (":skip", None),
    ],
)
def test_logstash_type(spec, expected):
    assert logstash_type(spec) == expected


@pytest.mark.parametrize(
    "content, message",
    [
        ("0:\n  1: [':uint64', ':octetDeltaCount'\n", "not valid YAML"),
        ("", "empty definitions file"),
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("0:\n  1: [':uint65x', ':foo']\n", r"entry 0: element 1: unknown Logstash type ':uint65x'"),
        ("0:\n  1: [':uint64']\n", "entry 0: element 1: .*no name"),
        ("0:\n  1: [':uint64', 7]\n", "element name must be a non-empty string"),
        ("0:\n  1: ':uint64'\n", r"entry 0: element 1: definition must be a list"),
        ("0:\n  1: [':uint64', ':a', ':b']\n", "definition must be a list"),
        ("0:\n  foo: [':uint64', ':a']\n", "element id 'foo' is not a number"),
        ("0:\n  40000: [':uint64', ':a']\n", "element id 40000 out of range"),
        ("abc:\n  1: [':uint64', ':a']\n", "enterprise number 'abc' is not a number"),
        ("56506: 12\n", "entry 56506: expected a mapping"),
        ("70000: [':uint8', ':x']\n", "field type 70000 out of range"),
        ("1: [0, ':in_bytes']\n", "byte length 0 must be positive"),
    ],
)
def test_malformed_definitions_raise_value_error(tmp_path, content, message):
    path = tmp_path / "bad.yml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_logstash_definitions(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError):
        default_registry([path])


def test_missing_definitions_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_logstash_definitions(tmp_path / "nope.yml")


# ------------------------------------------------------------------------------------ tools/gen_registry


def run_gen(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GEN), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, check=False)


def test_regenerating_iana_csv_is_identical(tmp_path):
    assert IANA_SOURCE.stat().st_size < 300_000
    out = tmp_path / "iana.csv"
    result = run_gen(IANA_SOURCE, "-o", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == IANA_CSV.read_bytes()
    check = run_gen(IANA_SOURCE, "--check")
    assert check.returncode == 0, check.stderr


def test_generation_ignores_source_line_endings(tmp_path):
    lf_source = tmp_path / "lf.csv"
    lf_source.write_bytes(IANA_SOURCE.read_bytes().replace(b"\r\n", b"\n"))
    out = tmp_path / "iana.csv"
    assert run_gen(lf_source, "-o", out).returncode == 0
    assert out.read_bytes() == IANA_CSV.read_bytes()


def test_iana_csv_columns():
    header = IANA_CSV.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:6] == ["ElementID", "Name", "Abstract Data Type", "Data Type Semantics", "Status", "Units"]


def test_generator_rejects_unknown_types_and_stale_output(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ElementID,Name,Abstract Data Type,Data Type Semantics,Status,Units\n"
                   "1,octetDeltaCount,unsigned65,deltaCounter,current,octets\n")
    result = run_gen(bad, "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    assert "unknown abstract data type 'unsigned65'" in result.stderr
    stale = tmp_path / "stale.csv"
    stale.write_text("ElementID,Name\n")
    assert run_gen(IANA_SOURCE, "-o", stale, "--check").returncode == 1


# ----------------------------------------------------------------------------------- vendor registries


@pytest.mark.parametrize(
    "field_type, name, type_",
    [
        (33000, "ingress_acl_id", "octetArray"),  # acl_id_asa: three 32-bit ACL ids, kept as bytes
        (33001, "egress_acl_id", "octetArray"),
        (33002, "fw_ext_event", "unsigned16"),
        (40000, "username", "string"),
        (40001, "xlate_src_addr_ipv4", "ipv4Address"),
        (40002, "xlate_dst_addr_ipv4", "ipv4Address"),
        (40003, "xlate_src_port", "unsigned16"),
        (40004, "xlate_dst_port", "unsigned16"),
        (40005, "fw_event", "unsigned8"),
        (56701, "app_id", "string"),
        (56702, "user_id", "string"),
        (57590, "nprobe_proto", "unsigned16"),
        (57591, "nprobe_proto_name", "string"),
        (20000, "wlan_id", "unsigned16"),
        (8192, "streamcore_wan_rtt", "unsigned32"),
        (8256, "streamcore_hostname", "string"),
        (8393, "streamcore_id_rule_10", "unsigned32"),
    ],
)
def test_vendor_v9_spot_checks(base, field_type, name, type_):
    assert base.lookup_v9(field_type) == Element(0, field_type, name, type_)
    assert base.key_of(name) == f"v9:{field_type}"
    assert base.lookup(0, field_type) is None  # v9 only: the IPFIX side is untouched
    assert base.by_name(name) is None


@pytest.mark.parametrize(
    "key, name, type_",
    [
        ((5951, 130), "netscalerHttpReqUrl", "string"),
        ((5951, 128), "netscalerRoundTripTime", "unsigned32"),
        ((5951, 192), "netscalerConnectionChainID", "octetArray"),
        ((5951, 538), "netscalerUnknown538", "unsigned16"),  # :uint15
        ((3054, 110), "ixiaL7AppId", "unsigned32"),
        ((3054, 126), "ixiaSrcLatitude", "float32"),
        ((3054, 194), "ixiaThreatIPv6", "ipv4Address"),  # sic: the codec says ip4_addr
        ((10704, 1), "Timestamp", "unsigned32"),  # the codec's uint32 (epoch seconds), not dateTimeSeconds
        ((10704, 4), "FW_Rule", "string"),
        ((10704, 8), "BindIPv4Address", "ipv4Address"),
        ((6871, 14), "initialTCPFlags", "unsigned8"),
        ((6871, 16398), "reverseInitialTCPFlags", "unsigned8"),
        ((6876, 881), "vmwareTenantSourceIPv4", "ipv4Address"),
        ((6876, 883), "vmwareTenantSourceIPv6", "ipv6Address"),
        ((15397, 1), "proceraService", "string"),
        ((15397, 11), "proceraInternalRtt", "signed32"),
        ((15397, 38), "proceraQoeIncomingInternal", "float32"),
        ((15397, 59), "proceraIncomingDot1qPriorityLevel1", "signed8"),
        ((637, 93), "natSubString", "string"),
        ((41916, 4321), "viptelaVPNId", "unsigned64"),
        ((9, 12235), "ciscoAppHTTPHost", "string"),
        ((9789, 1), "afcProtocol", "unsigned16"),
        ((21373, 6), "conntrack_id", "unsigned32"),
        ((26866, 4676), "http_host", "string"),
    ],
)
def test_vendor_ipfix_spot_checks(base, key, name, type_):
    assert base.lookup(*key) == Element(key[0], key[1], name, type_)
    assert base.by_name(name) == base.lookup(*key)
    assert base.key_of(name) == f"{key[0]}:{key[1]}"


@pytest.mark.parametrize(
    "key, name, logstash_name",
    [
        ((12326, 1), "Timestamp_12326_1", "Timestamp"),  # 10704:1 keeps "Timestamp"
        ((12326, 12), "AuditCounter_12326_12", "AuditCounter"),
        ((26866, 2548), "ssl_server_name_raw_26866_2548", "ssl_server_name_raw"),  # 26866:2539 keeps it
        ((6871, 16671), "reverseRtpPayloadType_6871_16671", "reverseRtpPayloadType"),  # 6871:288 keeps it
        ((6871, 223), "tcpUrgTotalCount_6871_223", "tcpUrgTotalCount"),  # IANA 223's name
        ((9789, 4), "flowDirection_9789_4", "flowDirection"),  # IANA 61's name
    ],
)
def test_vendor_name_disambiguation(base, key, name, logstash_name):
    assert base.lookup(*key).name == name
    assert base.key_of(name) == f"{key[0]}:{key[1]}"
    row = next(r for r in vendor_rows(VENDOR_IPFIX_CSV)
               if (int(r["Enterprise ID"]), int(r["ElementID"])) == key)
    assert row["Logstash Name"] == logstash_name


def test_disambiguation_keeps_the_first_owner(base):
    assert base.lookup(10704, 1).name == "Timestamp"
    assert base.lookup(26866, 2539).name == "ssl_server_name_raw"
    assert base.lookup(6871, 288).name == "reverseRtpPayloadType"
    assert base.key_of("tcpUrgTotalCount") == "0:223"
    assert base.key_of("flowDirection") == "0:61"


def vendor_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_vendor_names_are_unique(base):
    """No two built-in elements (IPFIX or v9 default) share a name, so key_of is unambiguous."""
    names = [e.name for e in base if e.name] + [e.name for _, e in base.v9_default_items()]
    assert len(names) == len(base) + 42
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_key_of_round_trips_every_builtin_name(base):
    for element in base:
        assert base.key_of(element.name) == f"{element.enterprise}:{element.id}", element
    for field_type, element in base.v9_default_items():
        assert base.key_of(element.name) == f"v9:{field_type}", element


def test_v9_defaults_never_shadow_iana(base):
    iana_ids = {e.id for e in elements_of(base, IANA_ENTERPRISE)}
    for field_type, element in base.v9_default_items():
        assert field_type not in iana_ids
        assert element.enterprise == 0 and element.id == field_type and not element.skip
        assert base.lookup_v9(field_type) is element


def test_lookup_v9_precedence():
    registry = default_registry()
    # an enterprise-0 element of that id (IANA, or an ipfix_definitions override) wins over the default
    registry.add(Element(0, 8192, "someFutureIanaElement", "unsigned64"))
    assert registry.lookup_v9(8192).name == "someFutureIanaElement"
    assert registry.key_of("streamcore_wan_rtt") is None  # hidden: the decoder can no longer produce it
    # an explicit v9 definition wins over everything
    registry.add_v9(8192, Element(0, 8192, "my_rtt", "unsigned32"))
    assert registry.lookup_v9(8192).name == "my_rtt"
    assert registry.key_of("my_rtt") == "v9:8192"
    registry.add_v9(40001, Element(0, 40001, "nat_src", "ipv4Address"))
    assert registry.key_of("xlate_src_addr_ipv4") is None
    assert registry.key_of("nat_src") == "v9:40001"
    registry.add_v9_default(45000, Element(0, 45000, "custom_default", "string"))
    assert registry.lookup_v9(45000).name == "custom_default"
    assert registry.key_of("custom_default") == "v9:45000"
    copy = registry.copy()
    assert copy.lookup_v9(45000).name == "custom_default" and copy.key_of("nat_src") == "v9:40001"
    with pytest.raises(ValueError):
        registry.add_v9_default(70000, Element(0, 1, "x", "string"))
    assert default_registry().lookup_v9(8192).name == "streamcore_wan_rtt"  # others unaffected


def test_key_of(base, tmp_path):
    assert base.key_of("sourceIPv4Address") == "0:8"
    assert base.key_of("reverseOctetDeltaCount") == "29305:1"
    assert base.key_of("sourcePodName") == "56506:101"
    assert base.key_of("netscalerHttpReqUrl") == "5951:130"
    assert base.key_of("ingress_acl_id") == "v9:33000"
    # the decoder's names for elements no registry knows (templates.unknown_element_name / unknown_v9_name)
    assert base.key_of("3054_999") == "3054:999"
    assert base.key_of("v9_65") == "v9:65"
    assert base.key_of("v9_0#2") == "v9:0#2"  # repeated field
    assert base.key_of("paddingOctets#3") == "0:210#3"
    for name in ("", "scopeSystem", "nope", "nope#2", "v9_", "12_", "#2", "v9_x"):
        assert base.key_of(name) is None, name
    # names from a netflow_definitions file
    path = tmp_path / "netflow.yml"
    path.write_text(NETFLOW_YAML)
    registry = default_registry([path])
    assert registry.key_of("in_bytes") == "v9:1"
    assert registry.key_of("octetDeltaCount") == "0:1"
    assert registry.key_of("xlate_src_addr_ipv4") == "v9:40001"


def test_decoder_resolution_uses_vendor_names(base):
    from ingest_service.ipfix.templates import FieldSpec, resolve_ipfix_fields, resolve_v9_fields

    v9 = resolve_v9_fields(base, (FieldSpec(40001, 4), FieldSpec(33000, 12), FieldSpec(8, 4), FieldSpec(40100, 2)))
    assert [(f.name, f.type, f.known) for f in v9] == [
        ("xlate_src_addr_ipv4", "ipv4Address", True),
        ("ingress_acl_id", "octetArray", True),
        ("sourceIPv4Address", "ipv4Address", True),
        ("v9_40100", "octetArray", False),
    ]
    assert [base.key_of(f.name) for f in v9] == ["v9:40001", "v9:33000", "0:8", "v9:40100"]
    ipfix = resolve_ipfix_fields(base, (FieldSpec(130, 65535, 5951), FieldSpec(999, 4, 3054)))
    assert [(f.name, f.type, f.known) for f in ipfix] == [
        ("netscalerHttpReqUrl", "string", True),
        ("3054_999", "octetArray", False),
    ]
    assert [base.key_of(f.name) for f in ipfix] == ["5951:130", "3054:999"]


def test_vendor_csvs_match_the_codec_files(base):
    """Every vendor entry of the codec's files is in the registry, with the codec's type mapping."""
    ipfix, _ = load_logstash_definitions(CODEC_IPFIX_YAML)
    vendor = [e for e in ipfix if e.enterprise not in (0, 29305, 56506)]
    assert len(vendor) == 582 and not any(e.skip for e in vendor)
    renamed = 0
    for element in vendor:
        ours = base.lookup(element.enterprise, element.id)
        assert ours.type == element.type, element
        if ours.name != element.name:
            assert ours.name == f"{element.name}_{element.enterprise}_{element.id}"
            renamed += 1
    assert renamed == 16
    _, v9 = load_logstash_definitions(CODEC_NETFLOW_YAML)
    iana_ids = {e.id for e in elements_of(base, IANA_ENTERPRISE)}
    expected = {ft: e for ft, e in v9 if ft not in iana_ids and not e.skip}
    assert dict(base.v9_default_items()) == expected
    assert sorted(ft for ft, e in v9 if ft not in iana_ids and e.skip) == [0, 65, 66, 67, 68, 69]
    for path in (VENDOR_IPFIX_CSV, VENDOR_V9_CSV):
        for row in vendor_rows(path):
            assert logstash_type(row["Logstash Type"]) == row["Abstract Data Type"], row


# ---------------------------------------------------------------------------- tools/gen_vendor_registry

CODEC_SHA256 = {
    CODEC_NETFLOW_YAML: "1fc19749bfc80135cc38aa2cd558a088c2b012ac65bc7ab333fc827ddaeab070",
    CODEC_IPFIX_YAML: "72cadf01183e4ce7b8fd73262cfe797d00c2dc3a5dd45776de1d7d2d917a8f46",
}


def run_gen_vendor(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GEN_VENDOR), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, check=False)


def test_codec_source_copies_are_unmodified():
    """The tests/data copies are byte-for-byte the files named in registry_data/SOURCES.md."""
    for path, digest in CODEC_SHA256.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path
        assert digest in (DATA_DIR / "SOURCES.md").read_text()
    assert (REPO / "tests" / "data" / "LICENSE.logstash-codec-netflow.txt").read_text().lstrip().startswith(
        "Apache License")


def test_regenerating_vendor_csvs_is_identical(tmp_path):
    result = run_gen_vendor("-o", tmp_path, "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "vendor_ipfix.csv").read_bytes() == VENDOR_IPFIX_CSV.read_bytes()
    assert (tmp_path / "vendor_v9.csv").read_bytes() == VENDOR_V9_CSV.read_bytes()
    check = run_gen_vendor("--check", "-q")
    assert check.returncode == 0, check.stderr


def test_vendor_generation_ignores_yaml_order(tmp_path):
    import yaml

    def reverse(src: Path, dst: Path, nested: bool) -> Path:
        document = yaml.safe_load(src.read_text())
        items = list(document.items())[::-1]
        if nested:
            items = [(k, dict(list(v.items())[::-1])) for k, v in items]
        dst.write_text(yaml.safe_dump(dict(items), sort_keys=False))
        return dst

    netflow = reverse(CODEC_NETFLOW_YAML, tmp_path / "netflow.yaml", nested=False)
    ipfix = reverse(CODEC_IPFIX_YAML, tmp_path / "ipfix.yaml", nested=True)
    out = tmp_path / "out"
    result = run_gen_vendor("--netflow", netflow, "--ipfix", ipfix, "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    assert (out / "vendor_ipfix.csv").read_bytes() == VENDOR_IPFIX_CSV.read_bytes()
    assert (out / "vendor_v9.csv").read_bytes() == VENDOR_V9_CSV.read_bytes()


def test_vendor_generation_disambiguates_and_reports(tmp_path):
    netflow = tmp_path / "netflow.yaml"
    netflow.write_text("8:\n- :ip4_addr\n- :ipv4_src_addr\n40001:\n- :ip4_addr\n- :shared\n"
                       "40002:\n- :uint8\n- :octetDeltaCount\n65:\n- :skip\n")
    ipfix = tmp_path / "ipfix.yaml"
    ipfix.write_text("0:\n  1:\n  - :uint64\n  - :octetDeltaCount\n"
                     "77:\n  2:\n  - :string\n  - :shared\n  1:\n  - :uint8\n  - :shared\n"
                     "  1:\n  - :uint16\n  - :shared\n")
    out = tmp_path / "out"
    result = run_gen_vendor("--netflow", netflow, "--ipfix", ipfix, "-o", out)
    assert result.returncode == 0, result.stderr
    assert (out / "vendor_ipfix.csv").read_text() == (
        "Enterprise ID,ElementID,Name,Abstract Data Type,Logstash Name,Logstash Type\n"
        "77,1,shared,unsigned16,shared,uint16\n"  # repeated key 1: the last value
        "77,2,shared_77_2,string,shared,string\n"
    )
    assert (out / "vendor_v9.csv").read_text() == (
        "Field Type,Name,Abstract Data Type,Logstash Name,Logstash Type\n"
        "40001,shared_v9_40001,ipv4Address,shared,ip4_addr\n"
        "40002,octetDeltaCount_v9_40002,unsigned8,octetDeltaCount,uint8\n"
    )
    assert "key 1 repeated" in result.stderr
    assert "v9 type 65 is [:skip]" in result.stderr


@pytest.mark.parametrize(
    "netflow, ipfix, message",
    [
        ("40001:\n- :uint65x\n- :a\n", "77:\n  1:\n  - :uint8\n  - :b\n", "unknown Logstash type"),
        ("40001:\n- :uint8\n", "77:\n  1:\n  - :uint8\n  - :b\n", "is not \\[type, name\\]"),
        ("40001:\n- :uint8\n- :a\n", "77:\n  40000:\n  - :uint8\n  - :b\n", "element id 40000"),
        ("40001:\n- :uint8\n- :a\n", "77: 5\n", "expected a mapping"),
        ("- 1\n", "77:\n  1:\n  - :uint8\n  - :b\n", "top level is not a mapping"),
        ("40001:\n- :uint8\n- :a_v9_40003\n40002:\n- :uint8\n- :a\n40003:\n- :uint8\n- :a\n",
         "77:\n  1:\n  - :uint8\n  - :b\n", "still not unique"),
    ],
)
def test_vendor_generator_rejects_bad_input(tmp_path, netflow, ipfix, message):
    (tmp_path / "n.yaml").write_text(netflow)
    (tmp_path / "i.yaml").write_text(ipfix)
    result = run_gen_vendor("--netflow", tmp_path / "n.yaml", "--ipfix", tmp_path / "i.yaml", "-o", tmp_path / "o")
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "o").exists()


def test_vendor_generator_check_detects_stale_output(tmp_path):
    (tmp_path / "vendor_ipfix.csv").write_bytes(VENDOR_IPFIX_CSV.read_bytes())
    (tmp_path / "vendor_v9.csv").write_text("Field Type,Name\n")
    result = run_gen_vendor("--check", "-o", tmp_path, "-q")
    assert result.returncode == 1
    assert "vendor_v9.csv" in result.stderr and "vendor_ipfix.csv" not in result.stderr
