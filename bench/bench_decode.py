"""Decoder benchmark: records/s on one core, decode only and decode + document serialization.

Replays (1) an Antrea Flow Aggregator template (the IEs go-ipfix v0.17.0 sends, strings
included) and (2) a fixed-length softflowd-like template through FlowDecoder, in one
process.  Prints the figures and writes a JSON report (default bench/results/decode.json).

    python bench/bench_decode.py [--seconds 3] [--report PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.antrea_template import antrea_messages  # noqa: E402
from ingest_service.documents import serialize, to_document  # noqa: E402
from ingest_service.ipfix.decoder import FlowDecoder  # noqa: E402

SOFTFLOWD_FIELDS = [(8, 4), (12, 4), (1, 8), (2, 8), (10, 4), (14, 4), (7, 2), (11, 2), (4, 1), (6, 1), (60, 1),
                    (5, 1), (32, 2), (58, 2), (22, 4), (21, 4)]  # what softflowd -v 10 sends for IPv4


def softflowd_messages(records_per_message=30, messages=50):
    tid = 1024
    body = struct.pack(">HH", tid, len(SOFTFLOWD_FIELDS)) + b"".join(struct.pack(">HH", i, n) for i, n in SOFTFLOWD_FIELDS)
    template = struct.pack(">HH", 2, 4 + len(body)) + body
    record_struct = struct.Struct(">4s4sQQIIHHBBBBHHII")
    out = []
    for m in range(messages):
        records = b"".join(record_struct.pack(bytes([10, 0, m % 250, r]), bytes([192, 168, 1, r]), 1000 + r, 10 + r, 1, 2,
                                              40000 + r, 443, 6, 0x1b, 4, 0, 0, 0, 1000, 2000)
                           for r in range(records_per_message))
        sets = (template if m == 0 else b"") + struct.pack(">HH", tid, 4 + len(records)) + records
        out.append(struct.pack(">HHIII", 10, 16 + len(sets), 1_700_000_000, m * records_per_message, 0) + sets)
    return out


def run(messages, seconds: float, serialize_docs: bool) -> tuple[float, int]:
    decoder = FlowDecoder()
    session = ("udp", "192.0.2.1", 4739, 0)
    decoder.decode(messages[0], session, 1.0)  # learn the template
    data = messages[1:]
    total = 0
    start = time.process_time()
    deadline = start + seconds
    while time.process_time() < deadline:
        for message in data:
            records = decoder.decode(message, session, 1.0)
            if serialize_docs:
                for record in records:
                    serialize(to_document(record))
            total += len(records)
    elapsed = time.process_time() - start
    return total / elapsed, total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--report", default=str(Path(__file__).resolve().parent / "results" / "decode.json"))
    args = parser.parse_args()
    antrea, fields = antrea_messages()
    soft = softflowd_messages()
    results = {}
    for name, messages in (("antrea", antrea), ("softflowd_fixed", soft)):
        for mode, flag in (("decode", False), ("decode+serialize", True)):
            rate, total = run(messages, args.seconds, flag)
            results[f"{name} {mode}"] = round(rate)
            print(f"{name:16s} {mode:17s} {rate:12,.0f} records/s (CPU time, one core; {total} records)")
    report = {
        "benchmark": "decode",
        "command": "python bench/bench_decode.py --seconds %s" % args.seconds,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "antrea_template_fields": len(fields),
        "antrea_record_bytes": (len(antrea[1]) - 20) // 20,
        "records_per_second": results,
        "targets": {"antrea decode+serialize": 50_000, "softflowd_fixed decode": 200_000},
    }
    report["targets_met"] = {k: results[k] >= v for k, v in report["targets"].items()}
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(f"report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
