"""Conformance: every case of the vendor corpus (../shared/corpus) against its
independent expected decode (tshark 4.0.17), field by field.

Representation differences between our documents and the corpus are mapped here,
never the values: our times are ISO 8601 strings (the corpus uses epoch ms), our
booleans are JSON booleans (the corpus keeps the wire 1/2), and elements unknown to
every registry are named ``<pen>_<id>`` / ``v9_<type>`` (corpus: ``<pen>:<id>``).
"""
from __future__ import annotations

import ipaddress
import json
import struct
from datetime import datetime
from pathlib import Path

import pytest

from ingest_service.ipfix.decoder import FlowDecoder
from ingest_service.ipfix.registry import default_registry

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
CASES = json.loads((CORPUS / "cases.json").read_text()) if CORPUS.exists() else []
TIME_TYPES = {"dateTimeSeconds", "dateTimeMilliseconds", "dateTimeMicroseconds", "dateTimeNanoseconds"}

# Documented differences from tshark (value of the oracle, not a bug of ours):
KNOWN_DIFFERENCES = {
    # Barracuda's "Timestamp" (10704:1): the Logstash codec's definition (which our vendor
    # registry follows, so Logstash users keep their field type) is uint32 seconds; tshark
    # shows it as an absolute time, so the corpus has epoch milliseconds. Same instant.
    ("ipfix_barracuda_extended_uniflow", 0, "10704:1"): lambda ours, expected: ours * 1000 == expected,
    ("ipfix_barracuda_extended_uniflow", 1, "10704:1"): lambda ours, expected: ours * 1000 == expected,
}


REGISTRY = default_registry()


def corpus_key(name: str) -> str:
    """Our field name -> the corpus key: IANA and reverse names stay, the rest is pen:id / v9:type."""
    key = REGISTRY.key_of(name)
    if key is None or key.startswith(("0:", "29305:")):
        return name
    return key


def kept_raw(name: str) -> bool:
    head, _, tail = name.partition("_")
    return (head.isdigit() or head == "v9") and tail.isdigit()


def iso_to_ms(text: str) -> int:
    # floor to whole milliseconds, as the corpus does for micro/nanosecond times
    date, _, frac = text.rstrip("Z").partition(".")
    seconds = int(datetime.fromisoformat(date + "+00:00").timestamp())
    return seconds * 1000 + int((frac + "000")[:3])


def same_value(ours, expected) -> bool:
    if isinstance(ours, bool):
        return expected == (1 if ours else 2)
    if isinstance(ours, str) and isinstance(expected, int) and ours[:1].isdigit() and "T" in ours:
        return iso_to_ms(ours) == expected
    if isinstance(expected, float) or isinstance(ours, float):
        pack = lambda v: struct.pack(">f", float(v))  # noqa: E731 - compare at float32 precision
        return pack(ours) == pack(expected)
    if isinstance(ours, str) and isinstance(expected, str) and ":" in expected and ":" in ours:
        try:
            return ipaddress.ip_address(ours) == ipaddress.ip_address(expected)
        except ValueError:
            return ours == expected
    return ours == expected


def decode_case(case):
    decoder = FlowDecoder()
    session = ("udp", "192.0.2.1", 50000, 0)
    records = []
    for name in case["files"]:
        records.extend(decoder.decode((CORPUS / "raw" / name).read_bytes(), session, received_at=1_600_000_000.0))
    return decoder, records


@pytest.mark.skipif(not CASES, reason="../shared/corpus not present")
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_corpus_case(case):
    meta = json.loads((CORPUS / "expected" / f"{case['name']}.meta.json").read_text())
    decoder, records = decode_case(case)
    if case.get("expect") == "error":
        problems = {k: v for k, v in decoder.stats.items() if k not in ("messages", "records") and not k.startswith("templates")}
        partial = meta.get("tshark_partial_records") or []
        if case["version"] == 9:
            # We ignore the unreliable v9 count and decode what the datagram holds:
            # exactly what tshark decodes once its count is patched.
            assert problems, decoder.stats
            expected_lines = partial
        else:
            assert records == [] and problems.get("malformed_messages"), decoder.stats
            return
    else:
        expected_lines = [json.loads(line) for line in (CORPUS / "expected" / f"{case['name']}.jsonl").read_text().splitlines() if line]
    assert len(records) == len(expected_lines), (len(records), len(expected_lines), dict(decoder.stats))

    tolerated: dict[int, dict[str, dict]] = {}
    for group in ("undecoded", "zero_length_fields", "padding_fields"):
        for item in meta.get(group) or []:
            tolerated.setdefault(item["line"], {})[item["key"]] = item

    mismatches = []
    for line, (record, expected) in enumerate(zip(records, expected_lines)):
        ours = {corpus_key(k): v for k, v in record.fields.items()}
        allowed = tolerated.get(line, {})
        for key, value in expected.items():
            known = KNOWN_DIFFERENCES.get((case["name"], line, key))
            if known is not None:
                assert key in ours and known(ours[key], value), (line, key, ours.get(key), value)
                continue
            if key not in ours:
                mismatches.append((line, key, "missing", value))
            elif not same_value(ours[key], value):
                mismatches.append((line, key, ours[key], value))
        for key, value in ours.items():
            if key in expected:
                continue
            if key not in allowed:
                mismatches.append((line, key, value, "not expected"))
                continue
            raw = allowed[key].get("hex")
            # where we keep an undecoded element raw, its bytes must be the wire bytes
            original = next((k for k in record.fields if corpus_key(k) == key), key)
            if raw is not None and kept_raw(original):
                if value != raw:
                    mismatches.append((line, key, value, raw))
    assert not mismatches, mismatches[:20]


def test_corpus_totals():
    """The whole corpus decodes to the documented number of records."""
    if not CASES:
        pytest.skip("../shared/corpus not present")
    total = 0
    for case in CASES:
        if case.get("expect") == "error":
            continue
        _, records = decode_case(case)
        total += len(records)
    assert total == 484
