"""jsoninput: JSON records -> the documents the IPFIX decoder would produce for the same values."""
from __future__ import annotations

import socket
import struct

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_service.documents import DocumentLayout
from ingest_service.ipfix.decoder import FlowDecoder
from ingest_service.jsoninput import (
    DocumentBuilder,
    FieldError,
    JsonRecordConverter,
    RecordRejected,
    numbered_lines,
    parse_time,
)
from ingest_service.normalize import Normalizer
from tests.support.ipfix_builder import VARIABLE, Field, data_set, ipfix_message, template_record, template_set, varlen

SESSION = ("udp", "192.0.2.1", 50000, 0)
NTP_OFFSET = 2208988800

CONVERTER = JsonRecordConverter()


def convert(value, **kwargs):
    return CONVERTER.convert(value, **kwargs)


def body_of(value, **kwargs) -> dict:
    document, target = convert(value, **kwargs)
    return document[target]


def decoded(fields: list[Field], record: bytes) -> dict:
    message = ipfix_message(template_set(template_record(300, fields)), data_set(300, record))
    (rec,) = FlowDecoder().decode(message, SESSION, 0)
    return rec.fields


def rejection(value) -> list[FieldError]:
    with pytest.raises(RecordRejected) as info:
        convert(value)
    return info.value.errors


# -- every abstract type, against the decoder -------------------------------------------------


def test_every_abstract_type_converts_to_what_the_decoder_produces():
    fields = [
        Field(4, 1), Field(7, 2), Field(10, 4), Field(1, 8),  # unsigned 8..64
        Field(434, 4),  # mibObjectValueInteger: signed32
        Field(311, 8), Field(126, 4, 3054),  # samplingProbability float64, ixiaSrcLatitude float32
        Field(276, 1),  # dataRecordsReliability: boolean
        Field(56, 6),  # sourceMacAddress
        Field(95, VARIABLE),  # applicationId: octetArray
        Field(82, VARIABLE),  # interfaceName: string
        Field(150, 4), Field(152, 8), Field(154, 8), Field(156, 8),  # dateTime s/ms/us/ns
        Field(8, 4), Field(27, 16),
    ]
    ntp_seconds = 1_700_000_000 + NTP_OFFSET
    record = (
        b"\x06" + struct.pack(">H", 443) + struct.pack(">I", 7) + struct.pack(">Q", 2**64 - 1)
        + struct.pack(">i", -42) + struct.pack(">d", 0.1) + struct.pack(">f", 0.1)
        + b"\x02" + bytes.fromhex("0a1b2c3d4e5f") + varlen(b"\x03\x00\x00\x50") + varlen("eth0-ü".encode())
        + struct.pack(">I", 1_700_000_000) + struct.pack(">Q", 1_700_000_000_123)
        + struct.pack(">II", ntp_seconds, 1 << 31) + struct.pack(">II", ntp_seconds, 1 << 30)
        + socket.inet_aton("10.1.2.3") + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    )
    # What JSON producers send: numbers, epoch times, address text in any valid spelling.
    sent = {
        "protocolIdentifier": 6, "sourceTransportPort": 443, "ingressInterface": 7, "octetDeltaCount": 2**64 - 1,
        "mibObjectValueInteger": -42, "samplingProbability": 0.1, "ixiaSrcLatitude": 0.1,
        "dataRecordsReliability": False, "sourceMacAddress": "0A-1B-2C-3D-4E-5F", "applicationId": "03000050",
        "interfaceName": "eth0-ü", "flowStartSeconds": 1_700_000_000, "flowStartMilliseconds": 1_700_000_000_123,
        "flowStartMicroseconds": "2023-11-15T00:13:20.5+02:00", "flowStartNanoseconds": "2023-11-14T22:13:20.25Z",
        "sourceIPv4Address": "10.1.2.3", "sourceIPv6Address": "2001:0DB8:0:0:0:0:0:1",
    }
    expected = decoded(fields, record)
    assert body_of(sent) == {**expected, "version": 10}
    assert expected["ixiaSrcLatitude"] != 0.1  # float32 rounding is applied, as on the wire


def test_float32_values_round_like_the_wire():
    for value in (0.1, 1e-30, 3.4e38, -2.5, 16777217):
        wire = struct.pack(">f", value)
        latitude = decoded([Field(126, 4, 3054)], wire)["ixiaSrcLatitude"]
        assert body_of({"ixiaSrcLatitude": value})["ixiaSrcLatitude"] == latitude


@st.composite
def typed_records(draw):
    """(template fields, wire bytes, the same values as a JSON producer would write them)."""
    fields, wire, sent = [], b"", {}
    if draw(st.booleans()):
        v = draw(st.integers(0, 2**64 - 1))
        fields.append(Field(1, 8)), sent.update(octetDeltaCount=v)
        wire += struct.pack(">Q", v)
    if draw(st.booleans()):
        v = draw(st.integers(0, 2**32 - 1))
        fields.append(Field(2, 4)), sent.update(packetDeltaCount=v)  # unsigned64 in 4 bytes
        wire += struct.pack(">I", v)
    if draw(st.booleans()):
        v = draw(st.integers(-(2**31), 2**31 - 1))
        fields.append(Field(434, 4)), sent.update(mibObjectValueInteger=v)
        wire += struct.pack(">i", v)
    if draw(st.booleans()):
        v = draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
        fields.append(Field(126, 4, 3054)), sent.update(ixiaSrcLatitude=v)
        wire += struct.pack(">f", v)
    if draw(st.booleans()):
        v = draw(st.floats(allow_nan=False, allow_infinity=False))
        fields.append(Field(311, 8)), sent.update(samplingProbability=v)
        wire += struct.pack(">d", v)
    if draw(st.booleans()):
        v = draw(st.booleans())
        fields.append(Field(276, 1)), sent.update(dataRecordsReliability=v)
        wire += b"\x01" if v else b"\x02"
    if draw(st.booleans()):
        raw = draw(st.binary(min_size=6, max_size=6))
        spelling = draw(st.sampled_from([":", "-", "", "."]))
        if spelling == ".":
            text = f"{raw[:2].hex()}.{raw[2:4].hex()}.{raw[4:].hex()}"
        else:
            text = raw.hex(spelling) if spelling else raw.hex()
        fields.append(Field(56, 6)), sent.update(sourceMacAddress=text.upper() if draw(st.booleans()) else text)
        wire += raw
    if draw(st.booleans()):
        raw = draw(st.binary(min_size=4, max_size=4))
        fields.append(Field(8, 4)), sent.update(sourceIPv4Address=socket.inet_ntoa(raw))
        wire += raw
    if draw(st.booleans()):
        raw = draw(st.binary(min_size=16, max_size=16))
        exploded = ":".join(raw[i:i + 2].hex() for i in range(0, 16, 2))  # never compressed
        fields.append(Field(27, 16)), sent.update(sourceIPv6Address=exploded.upper())
        wire += raw
    if draw(st.booleans()):
        text = draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))  # NULs included
        fields.append(Field(82, VARIABLE)), sent.update(interfaceName=text)
        wire += varlen(text.encode())
    if draw(st.booleans()):
        raw = draw(st.binary(max_size=20))
        fields.append(Field(95, VARIABLE)), sent.update(applicationId=raw.hex().upper())
        wire += varlen(raw)
    if draw(st.booleans()):
        v = draw(st.integers(0, 2**32 - 1))
        fields.append(Field(150, 4)), sent.update(flowStartSeconds=v)
        wire += struct.pack(">I", v)
    if draw(st.booleans()):
        v = draw(st.integers(0, 253402300799999))  # up to 9999-12-31
        fields.append(Field(152, 8)), sent.update(flowStartMilliseconds=v)
        wire += struct.pack(">Q", v)
    if not fields:
        v = draw(st.integers(0, 255))
        fields.append(Field(4, 1)), sent.update(protocolIdentifier=v)
        wire += bytes([v])
    return fields, wire, sent


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_records())
def test_json_and_ipfix_give_the_same_fields(case):
    fields, wire, sent = case
    assert body_of(sent) == {**decoded(fields, wire), "version": 10}


def test_strings_are_cut_at_a_nul_like_the_decoder():
    assert body_of({"interfaceName": "eth0\0garbage"})["interfaceName"] == "eth0"


def test_uuid_text_becomes_the_hex_the_decoder_gives_and_normalizes_the_same():
    hex_form = "0f8fad5bd9cb469fa16570867728950e"
    assert body_of({"sourcePodUUID": "0F8FAD5B-D9CB-469F-A165-70867728950E"})["sourcePodUUID"] == hex_form
    assert body_of({"sourcePodUUID": hex_form})["sourcePodUUID"] == hex_form


def test_mac_as_go_json_base64_and_ipv4_in_an_ipv6_field():
    body = body_of({"sourceMacAddress": "ChssPU5f", "sourceIPv6Address": "10.0.0.1"})
    assert body["sourceMacAddress"] == "0a:1b:2c:3d:4e:5f"  # base64 of 0a1b2c3d4e5f, as Go encodes net.HardwareAddr
    assert body["sourceIPv6Address"] == "::ffff:10.0.0.1"  # as the decoder prints the mapped address


# -- the three shapes --------------------------------------------------------------------------

ELEMENTS = {"flowStartSeconds": 1_700_000_000, "flowEndSeconds": 1_700_000_060, "sourceIPv4Address": "10.10.1.2",
            "destinationIPv4Address": "10.10.2.3", "sourceTransportPort": 40000, "destinationTransportPort": 80,
            "protocolIdentifier": 6, "octetDeltaCount": 1500, "packetDeltaCount": 3, "sourcePodName": "web-0",
            "destinationPodName": "db-0", "flowType": 2, "sourcePodLabels": '{"app":"web"}',
            "ingressNetworkPolicyName": "", "egressIP": ""}


def normalized(value, host="192.0.2.9", received_at=1_700_000_100.0) -> dict:
    document, target = convert(value, host=host, received_at=received_at)
    return Normalizer().normalize(document, target)


def test_antrea_raw_and_our_layout_give_one_document():
    antrea = {"@timestamp": "2023-11-15T03:45:00+05:30", "ipfix": dict(ELEMENTS)}
    raw = {"@timestamp": "2023-11-14T22:15:00Z", **ELEMENTS}
    ours = normalized(antrea)
    assert ours["@timestamp"] == "2023-11-14T22:15:00.000Z"
    assert list(ours)[:5] == ["@timestamp", "@version", "host", "type", "ipfix"]
    assert ours["host"] == "192.0.2.9" and ours["type"] == "ipfix" and ours["@version"] == "1"
    assert ours["ipfix"]["flowStartSeconds"] == "2023-11-14T22:13:20.000Z"
    assert ours["ipfix"]["version"] == 10 and "flowset_id" not in ours["ipfix"]
    assert ours["ipfix"]["flowKey"] == "web-0:40000->db-0:80 TCP" and ours["ipfix"]["interval"] == 60
    assert normalized(raw) == ours
    # An already normalized document goes through unchanged (derived fields recomputed).
    again = orjson.loads(orjson.dumps(ours))
    assert normalized(again, host="elsewhere") == ours


def test_document_fields_outside_the_body_are_kept_and_host_is_not_overridden():
    document, _ = convert({"@timestamp": "2023-11-14T22:15:00.5Z", "host": "10.0.0.9", "tags": ["x"],
                           "ipfix": {"octetDeltaCount": 1, "version": 9, "flowset_id": 260}}, host="127.0.0.1")
    assert document == {"@timestamp": "2023-11-14T22:15:00.500Z", "@version": "1", "host": "10.0.0.9",
                        "tags": ["x"], "type": "ipfix",
                        "ipfix": {"octetDeltaCount": 1, "version": 9, "flowset_id": 260}}


def test_record_without_timestamp_takes_the_receive_time():
    document, _ = convert({"octetDeltaCount": 1}, received_at=1_700_000_000.25)
    assert document["@timestamp"] == "2023-11-14T22:13:20.250Z"


def test_unknown_fields_are_kept_as_they_are():
    body = body_of({"octetDeltaCount": 1, "myLabel": {"a": [1, None]}, "56506_999": "x"})
    assert body["myLabel"] == {"a": [1, None]} and body["56506_999"] == "x"


def test_netflow_target_documents_are_recognized():
    converter = JsonRecordConverter(layout=DocumentLayout(netflow_target="netflow"))
    document, target = converter.convert({"netflow": {"version": 9, "octetDeltaCount": 5}})
    assert target == "netflow" and document["netflow"] == {"version": 9, "octetDeltaCount": 5}


# -- rejections ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, field, reason", [
    (5, "", "must be a JSON object, not number"),
    ([{}], "", "not array"),
    ({"foo": 1, "bar": 2}, "", "unknown layout"),
    ({"@timestamp": "2023-11-14T22:15:00Z"}, "", "unknown layout"),
    ({"version": 10}, "", "unknown layout"),
    ({"ipfix": "text"}, "ipfix", "expected an object, got string"),
    ({"ipfix": {}}, "ipfix", "no fields"),
    ({"octetDeltaCount": "5"}, "octetDeltaCount", "expected an integer (unsigned64), got string"),
    ({"octetDeltaCount": True}, "octetDeltaCount", "got boolean"),
    ({"octetDeltaCount": None}, "octetDeltaCount", "got null"),
    ({"octetDeltaCount": 1.5}, "octetDeltaCount", "got number"),
    ({"octetDeltaCount": -1}, "octetDeltaCount", "out of range 0..18446744073709551615"),
    ({"protocolIdentifier": 256}, "protocolIdentifier", "out of range 0..255"),
    ({"ipfix": {"sourceTransportPort": 70000}}, "ipfix.sourceTransportPort", "out of range 0..65535"),
    ({"sourceIPv4Address": "10.0.0.256"}, "sourceIPv4Address", "not an IPv4 address"),
    ({"sourceIPv4Address": "010.0.0.1"}, "sourceIPv4Address", "not an IPv4 address"),
    ({"sourceIPv4Address": 167772161}, "sourceIPv4Address", "expected an IPv4 address (text), got number"),
    ({"sourceIPv6Address": "fe80::1%eth0"}, "sourceIPv6Address", "not an IPv6 address"),
    ({"sourceMacAddress": "00:11:22:33:44"}, "sourceMacAddress", "not a MAC address"),
    ({"applicationId": "abc"}, "applicationId", "expected hex text"),
    ({"sourcePodName": 5}, "sourcePodName", "expected a string, got number"),
    ({"dataRecordsReliability": "yes"}, "dataRecordsReliability", "expected a boolean"),
    ({"flowStartSeconds": "yesterday"}, "flowStartSeconds", "not an RFC 3339 date-time"),
    ({"flowStartSeconds": -1}, "flowStartSeconds", "out of range"),
    ({"flowStartSeconds": 2**32}, "flowStartSeconds", "out of range"),
    ({"flowStartSeconds": "2023-02-30T00:00:00Z"}, "flowStartSeconds", "not a valid date-time"),
    ({"flowStartMicroseconds": 1_700_000_000}, "flowStartMicroseconds", "expected RFC 3339 text"),
    ({"ixiaSrcLatitude": 1e39}, "ixiaSrcLatitude", "does not fit a float32"),
    ({"octetDeltaCount": 1, "@timestamp": 1_700_000_000}, "@timestamp", "expected RFC 3339 date-time text"),
    ({"ipfix": {"octetDeltaCount": 1, "version": "10"}}, "ipfix.version", "expected an integer"),
])
def test_wrong_values_are_rejected_with_field_and_reason(value, field, reason):
    errors = rejection(value)
    assert any(e.field == field and reason in e.reason for e in errors), errors


def test_every_wrong_field_of_a_record_is_reported():
    errors = rejection({"octetDeltaCount": "x", "packetDeltaCount": -1, "sourceIPv4Address": "nope",
                        "@timestamp": "soon"})
    assert [e.field for e in errors] == ["octetDeltaCount", "packetDeltaCount", "sourceIPv4Address", "@timestamp"]


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)  # what orjson parses
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.sampled_from(["ipfix", "@timestamp", "octetDeltaCount", "sourceIPv4Address",
                                                       "flowStartSeconds", "sourceMacAddress", "x"])
                                      | st.text(max_size=8), children, max_size=5), max_leaves=12))
def test_any_json_value_is_converted_or_rejected_never_crashes(value):
    try:
        document, target = convert(value)
    except RecordRejected as exc:
        assert exc.errors and all(isinstance(e, FieldError) for e in exc.errors)
        return
    assert next(iter(document)) == "@timestamp" and isinstance(document[target], dict)
    orjson.dumps(Normalizer().normalize(document, target))


# -- times -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2026-11-27T00:29:04+05:30", (1795719544, 0)),
    ("2026-11-26T18:59:04Z", (1795719544, 0)),
    ("2026-11-26t18:59:04z", (1795719544, 0)),
    ("2026-11-26T18:59:04", (1795719544, 0)),  # no zone: UTC
    ("2026-11-26 13:59:04.123456789-0500", (1795719544, 123456789)),
    ("1969-12-31T23:59:59.5Z", (-1, 500_000_000)),
])
def test_parse_time(text, expected):
    assert parse_time(text) == expected


# -- batches -------------------------------------------------------------------------------------------


def test_batches_keep_valid_records_and_number_the_bad_ones():
    builder = DocumentBuilder(JsonRecordConverter(), Normalizer(), max_errors=2)
    body = (b'{"octetDeltaCount": 1}\n\n{not json\n{"octetDeltaCount": "x"}\r\n'
            b'{"sourcePodName": 3}\n{"packetDeltaCount": 2}\n')
    outcome = builder.from_lines(numbered_lines(body), host="h", received_at=1_700_000_000)
    assert outcome.accepted == 2 and outcome.rejected == 3
    assert [(e.position, e.field) for e in outcome.errors] == [(3, ""), (4, "octetDeltaCount")]  # first two only
    assert outcome.error_count == 3
    assert "malformed JSON" in outcome.errors[0].reason
    first = orjson.loads(outcome.lines[0])
    assert outcome.lines[0].startswith(b'{"@timestamp":"2023-11-14T22:13:20.000Z"')
    assert first["ipfix"] == {"octetDeltaCount": 1, "version": 10, "bytes": 1}

    values = builder.from_values(enumerate([{"octetDeltaCount": 1}, "x", {"nope": 1}]))
    assert values.accepted == 1 and [(e.position, e.field) for e in values.errors] == [(1, ""), (2, "")]
    assert values.error_count == len(values.errors) == 2  # exactly the cap: nothing left out


def test_ecs_layout_moves_fields():
    builder = DocumentBuilder(JsonRecordConverter(), Normalizer("ecs"))
    outcome = builder.from_values([(0, {"sourceIPv4Address": "10.0.0.1", "sourceTransportPort": 5})], host="h")
    document = orjson.loads(outcome.lines[0])
    assert document["source"] == {"port": 5, "ip": "10.0.0.1"} and document["observer"] == {"ip": "h"}
