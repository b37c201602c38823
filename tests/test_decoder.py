"""Decoder behaviour on messages built from the RFCs (tests/support/ipfix_builder.py)."""
from __future__ import annotations

import socket
import struct

import pytest

from ingest_service.documents import to_document
from ingest_service.ipfix.decoder import DecoderConfig, FlowDecoder
from tests.support.ipfix_builder import (
    VARIABLE, Field, data_set, ipfix_message, ipfix_set, options_template_set, template_record, template_set,
    v5_packet, v5_record, v9_packet, v9_template_flowset, varlen, withdrawal_record,
)

UDP_A = ("udp", "192.0.2.1", 50000, 0)
UDP_B = ("udp", "192.0.2.1", 50001, 0)
IP = socket.inet_aton


def fresh(**config) -> FlowDecoder:
    return FlowDecoder(config=DecoderConfig(**config))


def test_every_abstract_type():
    fields = [
        Field(4, 1), Field(7, 2), Field(10, 4), Field(1, 8),  # unsigned 8..64
        Field(434, 4),  # mibObjectValueInteger: signed32
        Field(311, 8), Field(320, 4),  # float64 (and float64 sent as 4 bytes)
        Field(276, 1),  # boolean
        Field(56, 6),  # macAddress
        Field(95, VARIABLE),  # applicationId: octetArray
        Field(82, VARIABLE),  # interfaceName: string
        Field(150, 4), Field(152, 8), Field(154, 8), Field(156, 8),  # dateTime s/ms/us/ns
        Field(8, 4), Field(27, 16),
    ]
    ntp_seconds = 1_700_000_000 + 2208988800
    record = (
        b"\x06" + struct.pack(">H", 443) + struct.pack(">I", 7) + struct.pack(">Q", 2**40 + 5)
        + struct.pack(">i", -42) + struct.pack(">d", 0.25) + struct.pack(">f", 1.5)
        + b"\x02" + bytes.fromhex("0a1b2c3d4e5f") + varlen(b"\x03\x00\x00\x50") + varlen("eth0-ü".encode())
        + struct.pack(">I", 1_700_000_000) + struct.pack(">Q", 1_700_000_000_123)
        + struct.pack(">II", ntp_seconds, 1 << 31) + struct.pack(">II", ntp_seconds, 1 << 30)
        + IP("10.1.2.3") + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    )
    message = ipfix_message(template_set(template_record(300, fields)), data_set(300, record))
    (rec,) = fresh().decode(message, UDP_A, 0)
    assert rec.fields == {
        "protocolIdentifier": 6, "sourceTransportPort": 443, "ingressInterface": 7, "octetDeltaCount": 2**40 + 5,
        "mibObjectValueInteger": -42, "samplingProbability": 0.25, "absoluteError": 1.5,
        "dataRecordsReliability": False, "sourceMacAddress": "0a:1b:2c:3d:4e:5f", "applicationId": "03000050",
        "interfaceName": "eth0-ü", "flowStartSeconds": "2023-11-14T22:13:20.000Z",
        "flowStartMilliseconds": "2023-11-14T22:13:20.123Z", "flowStartMicroseconds": "2023-11-14T22:13:20.500000Z",
        "flowStartNanoseconds": "2023-11-14T22:13:20.250000000Z", "sourceIPv4Address": "10.1.2.3",
        "sourceIPv6Address": "2001:db8::1",
    }


def test_reduced_size_encoding_and_long_varlen():
    fields = [Field(1, 4), Field(2, 3), Field(10, 2), Field(84, VARIABLE)]  # octetDeltaCount in 4, packets in 3
    long_name = b"x" * 300  # needs the 3-byte length form
    record = struct.pack(">I", 4026531840) + (70000).to_bytes(3, "big") + struct.pack(">H", 9) + varlen(long_name)
    (rec,) = fresh().decode(ipfix_message(template_set(template_record(400, fields)), data_set(400, record)), UDP_A, 0)
    assert rec.fields == {"octetDeltaCount": 4026531840, "packetDeltaCount": 70000, "ingressInterface": 9, "samplerName": "x" * 300}


def test_three_byte_length_for_short_value_and_zero_length():
    fields = [Field(82, VARIABLE), Field(83, VARIABLE)]
    record = b"\xff\x00\x01A" + b"\x00"
    (rec,) = fresh().decode(ipfix_message(template_set(template_record(401, fields)), data_set(401, record)), UDP_A, 0)
    assert rec.fields == {"interfaceName": "A", "interfaceDescription": ""}


def test_strings_invalid_utf8_and_nul_padding():
    fields = [Field(82, 8), Field(83, VARIABLE)]
    record = b"GET\0\0\0\0\0" + varlen(b"bad\xff\xfe")
    (rec,) = fresh().decode(ipfix_message(template_set(template_record(402, fields)), data_set(402, record)), UDP_A, 0)
    assert rec.fields == {"interfaceName": "GET", "interfaceDescription": "bad\ufffd\ufffd"}


def test_enterprise_elements_known_and_unknown():
    fields = [Field(101, VARIABLE, 56506), Field(1, 8, 29305), Field(7, 2, 99999)]
    record = varlen(b"web-0") + struct.pack(">Q", 77) + b"\xbe\xef"
    (rec,) = fresh().decode(ipfix_message(template_set(template_record(403, fields)), data_set(403, record)), UDP_A, 0)
    assert rec.fields == {"sourcePodName": "web-0", "reverseOctetDeltaCount": 77, "99999_7": "beef"}


def test_padding_and_multiple_records_per_set():
    fields = [Field(8, 4), Field(4, 1)]
    records = [IP(f"10.0.0.{i}") + bytes([17]) for i in range(5)]
    message = ipfix_message(template_set(template_record(404, fields)), data_set(404, *records, pad_to=4))
    decoder = fresh()
    out = decoder.decode(message, UDP_A, 0)
    assert [r.fields["sourceIPv4Address"] for r in out] == [f"10.0.0.{i}" for i in range(5)]
    assert decoder.stats["malformed_records"] == 0


def test_templates_are_scoped_by_exporter_port_and_domain():
    layout_a = template_record(500, [Field(8, 4)])
    layout_b = template_record(500, [Field(7, 2), Field(11, 2)])
    decoder = fresh()
    decoder.decode(ipfix_message(template_set(layout_a)), UDP_A, 0)
    decoder.decode(ipfix_message(template_set(layout_b)), UDP_B, 0)
    decoder.decode(ipfix_message(template_set(layout_b), domain=2), UDP_A, 0)
    (a,) = decoder.decode(ipfix_message(data_set(500, IP("10.9.9.9"))), UDP_A, 0)
    (b,) = decoder.decode(ipfix_message(data_set(500, struct.pack(">HH", 1, 2))), UDP_B, 0)
    (c,) = decoder.decode(ipfix_message(data_set(500, struct.pack(">HH", 3, 4)), domain=2), UDP_A, 0)
    assert a.fields == {"sourceIPv4Address": "10.9.9.9"}
    assert b.fields == {"sourceTransportPort": 1, "destinationTransportPort": 2}
    assert c.fields == {"sourceTransportPort": 3, "destinationTransportPort": 4}


def test_unknown_template_is_counted_other_sets_still_decode_and_pending_replays():
    decoder = fresh()
    known = template_record(600, [Field(8, 4)])
    message = ipfix_message(template_set(known), data_set(601, struct.pack(">H", 80)), data_set(600, IP("10.0.0.1")))
    out = decoder.decode(message, UDP_A, 10.0)
    assert [r.fields for r in out] == [{"sourceIPv4Address": "10.0.0.1"}]
    assert decoder.stats["data_sets_without_template"] == 1
    late = decoder.decode(ipfix_message(template_set(template_record(601, [Field(7, 2)]))), UDP_A, 12.0)
    assert [r.fields for r in late] == [{"sourceTransportPort": 80}]
    assert decoder.stats["pending_sets_decoded"] == 1


def test_pending_sets_expire():
    decoder = fresh(pending_lifetime=5.0)
    decoder.decode(ipfix_message(data_set(700, b"\x00\x50")), UDP_A, 0.0)
    late = decoder.decode(ipfix_message(template_set(template_record(700, [Field(7, 2)]))), UDP_A, 60.0)
    assert late == [] and decoder.stats["pending_sets_expired"] == 1


def test_template_withdrawal_single_and_all():
    decoder = fresh()
    decoder.decode(ipfix_message(template_set(template_record(800, [Field(7, 2)]), template_record(801, [Field(11, 2)]))), UDP_A, 0)
    decoder.decode(ipfix_message(template_set(withdrawal_record(800))), UDP_A, 0)
    assert decoder.decode(ipfix_message(data_set(800, b"\0\1")), UDP_A, 0) == []
    assert len(decoder.decode(ipfix_message(data_set(801, b"\0\1")), UDP_A, 0)) == 1
    decoder.decode(ipfix_message(template_set(withdrawal_record(2))), UDP_A, 0)  # all templates
    assert decoder.decode(ipfix_message(data_set(801, b"\0\1")), UDP_A, 0) == []
    decoder.decode(ipfix_message(template_set(withdrawal_record(999))), UDP_A, 0)
    assert decoder.stats["withdrawals_of_unknown_templates"] == 1


def test_udp_templates_expire_tcp_ones_do_not():
    decoder = fresh(template_lifetime=100.0)
    tcp = ("tcp", "192.0.2.1", 40000, 1)
    for session in (UDP_A, tcp):
        decoder.decode(ipfix_message(template_set(template_record(900, [Field(7, 2)]))), session, 0.0)
    assert decoder.decode(ipfix_message(data_set(900, b"\0\1")), UDP_A, 500.0) == []
    assert len(decoder.decode(ipfix_message(data_set(900, b"\0\1")), tcp, 500.0)) == 1
    assert decoder.stats["templates_expired"] == 1


def test_closing_a_tcp_session_drops_its_templates():
    decoder = fresh()
    tcp = ("tcp", "192.0.2.1", 40000, 1)
    decoder.decode(ipfix_message(template_set(template_record(901, [Field(7, 2)]))), tcp, 0.0)
    decoder.close_session(tcp)
    assert decoder.decode(ipfix_message(data_set(901, b"\0\1")), tcp, 0.0) == []


def test_sequence_gaps_and_restarts():
    decoder = fresh()
    tpl = template_set(template_record(950, [Field(7, 2)]))
    decoder.decode(ipfix_message(tpl, data_set(950, b"\0\1", b"\0\2"), sequence=100), UDP_A, 0)
    decoder.decode(ipfix_message(data_set(950, b"\0\3"), sequence=102), UDP_A, 0)  # in order
    decoder.decode(ipfix_message(data_set(950, b"\0\4"), sequence=110), UDP_A, 0)  # 7 lost
    assert decoder.stats["lost_records"] == 7
    decoder.decode(ipfix_message(tpl, data_set(950, b"\0\5"), sequence=0), UDP_A, 0)  # exporter restarted
    assert decoder.stats["exporter_restarts"] == 1


def test_options_records_apply_sampling_and_interface_names():
    decoder = fresh()
    options = options_template_set(template_record(960, [Field(10, 4), Field(82, VARIABLE)], scope_count=1),
                                   template_record(961, [Field(144, 4), Field(34, 4)], scope_count=1))
    option_data = data_set(960, struct.pack(">I", 3) + varlen(b"eth3")) + data_set(961, struct.pack(">II", 1, 100))
    flows = template_set(template_record(962, [Field(10, 4), Field(1, 8)]))
    out = decoder.decode(ipfix_message(options, option_data, flows, data_set(962, struct.pack(">IQ", 3, 1000))), UDP_A, 0)
    assert [r.options for r in out] == [True, True, False]
    assert out[2].extra == {"samplingRate": 100, "ingressInterfaceName": "eth3"}
    doc = to_document(out[2])
    assert doc["ipfix"]["ingressInterfaceName"] == "eth3" and doc["ipfix"]["octetDeltaCount"] == 1000


def test_subtemplate_list_and_basic_list():
    decoder = fresh()
    inner = template_record(970, [Field(8, 4), Field(7, 2)])
    outer = template_record(971, [Field(4, 1), Field(292, VARIABLE), Field(291, VARIABLE)])
    stl = b"\x03" + struct.pack(">H", 970) + IP("10.0.0.1") + b"\0\x50" + IP("10.0.0.2") + b"\x01\xbb"
    basic = b"\x03" + struct.pack(">HH", 483, 4) + struct.pack(">II", 65000, 65001)  # bgpCommunity x2
    record = b"\x06" + varlen(stl) + varlen(basic)
    (rec,) = decoder.decode(ipfix_message(template_set(inner, outer), data_set(971, record)), UDP_A, 0)
    assert rec.fields["subTemplateList"] == {"semantic": 3, "template_id": 970, "records": [
        {"sourceIPv4Address": "10.0.0.1", "sourceTransportPort": 80},
        {"sourceIPv4Address": "10.0.0.2", "sourceTransportPort": 443}]}
    assert rec.fields["basicList"] == {"semantic": 3, "element": "bgpCommunity", "values": [65000, 65001]}
    assert rec.fields["protocolIdentifier"] == 6


def test_subtemplate_list_loop_is_kept_raw():
    decoder = fresh()
    looping = template_record(972, [Field(292, VARIABLE)])
    payload = b"\x03" + struct.pack(">H", 972)
    for _ in range(8):  # nest the template inside itself
        payload = b"\x03" + struct.pack(">H", 972) + varlen(payload)
    (rec,) = decoder.decode(ipfix_message(template_set(looping), data_set(972, varlen(payload))), UDP_A, 0)
    assert "subTemplateList" in rec.fields  # decoded to the depth limit, rest kept as hex


def test_template_cap_per_session():
    decoder = fresh(max_templates_per_session=10)
    records = [template_record(256 + i, [Field(7, 2)]) for i in range(20)]
    decoder.decode(ipfix_message(template_set(*records)), UDP_A, 0)
    assert decoder.template_count() == 10 and decoder.stats["templates_refused"] == 10


def test_session_cap_evicts_least_recent():
    decoder = fresh(max_sessions=3)
    for port in range(10):
        decoder.decode(ipfix_message(template_set(template_record(256, [Field(7, 2)]))), ("udp", "192.0.2.9", port, 0), 0)
    assert len(decoder.sessions) == 3 and decoder.sessions.evicted == 7


def test_netflow_v9_times_are_made_absolute():
    decoder = fresh()
    tpl = v9_template_flowset(260, [(8, 4), (22, 4), (21, 4)])
    data = struct.pack(">HH", 260, 16) + IP("10.0.0.1") + struct.pack(">II", 90_000, 99_500)
    (rec,) = decoder.decode(v9_packet(tpl, data, sys_uptime=100_000, unix_secs=1_700_000_000), UDP_A, 0)
    assert rec.fields["flowStartSysUpTime"] == 90_000
    assert rec.extra == {"flowStartMilliseconds": "2023-11-14T22:13:10.000Z", "flowEndMilliseconds": "2023-11-14T22:13:19.500Z"}


def test_netflow_v5_with_wrapping_first_switched():
    rec = v5_record(IP("10.0.2.2"), IP("10.0.2.15"), first=0xFFFFFFFF, last=2577, sport=54435, dport=22, packets=5, octets=230)
    out = fresh().decode(v5_packet([rec], sys_uptime=3381, unix_secs=1_430_591_888, unix_nsecs=280_000_000, sampling=0x4064), UDP_A, 0)
    assert out[0].fields["flowStartSysUpTime"] == 0xFFFFFFFF
    assert out[0].extra["flowStartMilliseconds"] == "2015-05-02T18:38:04.898Z"
    assert out[0].extra["samplingRate"] == 100


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x0a", b"\x00\x0a\x00\x10", b"\x00\x07" + b"\0" * 30])
def test_junk_never_raises(payload):
    decoder = fresh()
    assert decoder.decode(payload, UDP_A, 0) == []
    assert sum(v for k, v in decoder.stats.items() if k not in ("messages", "records")) >= 1


def test_reserved_set_ids_are_skipped():
    decoder = fresh()
    message = ipfix_message(ipfix_set(5, b"\0" * 8), template_set(template_record(300, [Field(7, 2)])), data_set(300, b"\0\7"))
    assert len(decoder.decode(message, UDP_A, 0)) == 1 and decoder.stats["reserved_sets"] == 1


def test_several_strings_decoded_together_keep_nul_and_utf8_rules():
    # records with many strings decode them in one pass; a NUL inside a value must still cut
    # that value only, and invalid UTF-8 must not bleed into the next value
    fields = [Field(82, VARIABLE), Field(83, VARIABLE), Field(84, VARIABLE)]
    clean = varlen(b"eth0") + varlen("caf\u00e9".encode()) + varlen(b"s1")
    with_nul = varlen(b"GET\0junk") + varlen(b"b\xc3") + varlen(b"")
    message = ipfix_message(template_set(template_record(403, fields)), data_set(403, clean, with_nul))
    first, second = fresh().decode(message, UDP_A, 0)
    assert first.fields == {"interfaceName": "eth0", "interfaceDescription": "café", "samplerName": "s1"}
    assert second.fields == {"interfaceName": "GET", "interfaceDescription": "b\ufffd", "samplerName": ""}


def test_pmacct_sixteen_byte_microsecond_times():
    # pmacct's nfprobe_tstamp_usec sends IE 154 in 16 bytes: Unix seconds, then microseconds
    record = struct.pack(">QQ", 1_700_000_000, 123_456)
    (rec,) = fresh().decode(ipfix_message(template_set(template_record(410, [Field(154, 16)])), data_set(410, record)), UDP_A, 0)
    assert rec.fields == {"flowStartMicroseconds": "2023-11-14T22:13:20.123456Z"}
