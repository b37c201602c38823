"""IPFIX ingest through `flow-ingest serve` (one TCP worker) into NDJSON files: records/s.

The service-level counterpart of bench_http.py: the real go-ipfix exporter's Antrea records
(captured once), replayed over one TCP connection; the clock stops when the stats file says
every document was written.  Prints the figure and writes bench/results/ipfix_serve.json.

    python bench/bench_ipfix_serve.py [--records 60000]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_e2e import capture_stream, documents_of, free_port, process_tree_cpu  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--report", default=str(REPO / "bench" / "results" / "ipfix_serve.json"))
    args = parser.parse_args()
    stream = capture_stream(args.records)
    expected = len(documents_of(stream))
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.json"
        serve = subprocess.Popen([sys.executable, "-m", "ingest_service.cli", "--log-level", "WARNING", "serve",
                                  "--udp-port", "0", "--tcp-address", "127.0.0.1", "--tcp-port", str(port),
                                  "--http-port", "0", "--jsonlines-tcp-port", "0", "--jsonlines-udp-port", "0",
                                  "--data-dir", tmp, "--stats-file", str(stats)], cwd=REPO)
        while not stats.exists():
            time.sleep(0.05)
        cpu_before = process_tree_cpu(serve.pid)
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(stream)
        while json.loads(stats.read_text()).get("documents_written", 0) < expected:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = process_tree_cpu(serve.pid) - cpu_before
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
    rate = expected / elapsed
    print(f"IPFIX over TCP -> serve (1 TCP worker) -> NDJSON: {rate:,.0f} records/s "
          f"({expected} records, {elapsed:.2f} s, collector CPU {cpu:.1f} s; stats are written every second, "
          "so the figure is a lower bound)")
    report = {"benchmark": "ipfix_serve", "command": f"python bench/bench_ipfix_serve.py --records {args.records}",
              "records": expected, "seconds": round(elapsed, 2), "records_per_second": round(rate),
              "collector_cpu_seconds": round(cpu, 2), "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
