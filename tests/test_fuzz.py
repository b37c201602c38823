"""Robustness: truncated, bit-flipped, oversized and adversarial messages never make the
decoder raise or fail internally, every rejected input is counted, and state stays bounded.

``decoder_errors`` counts exceptions the decoder caught from its own code: it must stay 0
(the catch-all is a safety net for production, not a way to pass these tests).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_service.ipfix.decoder import DecoderConfig, FlowDecoder
from tests.support.ipfix_builder import (
    VARIABLE, Field, data_set, ipfix_message, template_record, template_set, v9_packet, varlen,
)

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
SEEDS = [p.read_bytes() for p in sorted((CORPUS / "raw").glob("*.dat"))] if CORPUS.exists() else []
VALID = ipfix_message(
    template_set(template_record(300, [Field(8, 4), Field(82, VARIABLE), Field(101, VARIABLE, 56506), Field(292, VARIABLE)])),
    data_set(300, b"\x0a\0\0\x01" + varlen(b"eth0") + varlen(b"web") + varlen(b"\x03\x01\x2c")),
)
SEEDS.append(VALID)
SESSION = ("udp", "198.51.100.1", 4739, 0)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_healthy(decoder: FlowDecoder) -> None:
    assert decoder.stats["decoder_errors"] == 0, dict(decoder.stats)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(payload):
    decoder = FlowDecoder()
    decoder.decode(payload, SESSION, 0)
    assert_healthy(decoder)


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_bit_flips_and_truncation(seed, data):
    payload = bytearray(seed)
    for _ in range(data.draw(st.integers(0, 8))):
        if payload:
            index = data.draw(st.integers(0, len(payload) - 1))
            payload[index] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(payload)))
    decoder = FlowDecoder()
    decoder.decode(bytes(seed), SESSION, 0)  # learn real templates first
    decoder.decode(bytes(payload[:cut]), SESSION, 0)
    decoder.decode(bytes(payload), SESSION, 0)
    assert_healthy(decoder)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)), max_size=40),
       st.integers(256, 0xFFFF), st.binary(max_size=512))
def test_arbitrary_templates_with_arbitrary_data(fields, template_id, record):
    specs = [Field(eid & 0x7FFF, length, pen if eid & 0x8000 else 0) for eid, length, pen in fields]
    decoder = FlowDecoder()
    decoder.decode(ipfix_message(template_set(template_record(template_id, specs))) if specs else b"", SESSION, 0)
    decoder.decode(ipfix_message(data_set(template_id, record)), SESSION, 0)
    assert_healthy(decoder)


def test_huge_lengths_and_zero_length_sets():
    decoder = FlowDecoder()
    header = struct.pack(">HHIII", 10, 0xFFFF, 0, 0, 0)
    decoder.decode(header + b"\0" * 20, SESSION, 0)  # length claims 65535
    decoder.decode(ipfix_message(struct.pack(">HH", 300, 0)), SESSION, 0)  # zero-length set
    decoder.decode(ipfix_message(struct.pack(">HH", 2, 4)), SESSION, 0)  # empty template set
    decoder.decode(ipfix_message(template_set(struct.pack(">HH", 300, 0xFFFF))), SESSION, 0)  # 65535 fields, none sent
    decoder.decode(v9_packet(struct.pack(">HH", 0, 0xFFFF)), SESSION, 0)
    assert_healthy(decoder)
    assert decoder.stats["truncated_messages"] == 1
    assert decoder.stats["malformed_sets"] >= 1 and decoder.stats["malformed_templates"] >= 1


def test_65535_templates_are_capped():
    decoder = FlowDecoder(config=DecoderConfig(max_templates_per_session=1000))
    batch = []
    for template_id in range(256, 0x10000):
        batch.append(template_record(template_id, [Field(7, 2)]))
        if len(batch) == 1000:
            decoder.decode(ipfix_message(template_set(*batch)), SESSION, 0)
            batch = []
    decoder.decode(ipfix_message(template_set(*batch)), SESSION, 0)
    assert decoder.template_count() == 1000
    assert decoder.stats["templates_refused"] == 0x10000 - 256 - 1000
    assert_healthy(decoder)


def test_many_exporters_are_capped():
    decoder = FlowDecoder(config=DecoderConfig(max_sessions=100))
    message = ipfix_message(template_set(template_record(256, [Field(7, 2)])), data_set(999, b"\0" * 100))
    for port in range(5000):
        decoder.decode(message, ("udp", "203.0.113.5", port, 0), 0)
    assert len(decoder.sessions) == 100
    assert decoder.template_count() == 100
    # pending data sets of evicted sessions are released, not leaked
    assert decoder._pending_bytes == 100 * 100
    assert_healthy(decoder)


def test_withdrawal_of_unknown_ids_and_template_redefinition_loops():
    decoder = FlowDecoder()
    for round_ in range(50):
        layout = [Field(7, 2)] if round_ % 2 else [Field(8, 4), Field(82, VARIABLE)]
        decoder.decode(ipfix_message(template_set(template_record(300, layout)), data_set(300, b"\0" * 9)), SESSION, 0)
        decoder.decode(ipfix_message(template_set(struct.pack(">HH", 40000 + round_, 0))), SESSION, 0)
    assert decoder.stats["withdrawals_of_unknown_templates"] == 50
    assert decoder.stats["templates_redefined"] == 49
    assert_healthy(decoder)


def test_corpus_expectations_file_is_consistent():
    # guards the seeds above: if the corpus moves, this fails loudly instead of fuzzing nothing
    if not CORPUS.exists():
        return
    assert len(SEEDS) > 50
    assert json.loads((CORPUS / "cases.json").read_text())


def test_atheris_coverage_guided_run(tmp_path):
    """A bounded libFuzzer run seeded with the vendor corpus (atheris installs from PyPI here)."""
    import subprocess
    import sys

    atheris = __import__("importlib").util.find_spec("atheris")
    if atheris is None:
        import pytest

        pytest.skip("atheris is not installed (pip install atheris)")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for index, seed in enumerate(SEEDS):
        (seeds / f"seed{index}").write_bytes(seed)
    script = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_decoder.py"
    result = subprocess.run([sys.executable, str(script), "-runs=20000", "-max_len=4096", "-timeout=10",
                             f"-artifact_prefix={tmp_path}/", str(seeds)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 20000 runs" in result.stderr
