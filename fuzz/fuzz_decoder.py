"""Coverage-guided fuzzing of the decoder with atheris (libFuzzer).

    python fuzz/fuzz_decoder.py -runs=50000 -max_len=4096 [corpus_dir]

Each input is split into messages fed to ONE decoder session (so template state carries over
between them, as from a real exporter). Any exception from ``decode`` is a bug; so is a
non-zero ``decoder_errors`` count (an exception the decoder had to swallow itself).
"""
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ingest_service.ipfix.decoder import DecoderConfig, FlowDecoder

CONFIG = DecoderConfig(max_templates_per_session=64, max_sessions=8)


def test_one_input(data: bytes) -> None:
    decoder = FlowDecoder(config=CONFIG)
    # A 0xFE byte separates messages: lets the fuzzer build template-then-data sequences.
    for index, message in enumerate(data.split(b"\xfe\xfe")[:8]):
        decoder.decode(message, ("udp", "192.0.2.1", 4739 + index % 2, 0), 0.0)
    if decoder.stats["decoder_errors"]:
        raise AssertionError(f"decoder swallowed an internal error: {dict(decoder.stats)}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
