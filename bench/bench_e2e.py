"""End to end: replayed Antrea IPFIX -> `flow-ingest serve` -> the real OpenSearch, next to the
ceiling measured in the same run by posting pre-serialized `_bulk` bodies of the same
documents directly.

1. The real go-ipfix exporter (tests/goexporter) sends N Antrea records over TCP once; the
   bytes are captured and kept (the replay input).
2. Ceiling: those records are decoded and normalized in-process, serialized, cut into
   `_bulk` bodies of 1000 and POSTed by 2 threads into a data stream set up by `setup`.
3. End to end: `flow-ingest serve --url ...` is started; the captured bytes are replayed
   over one TCP connection as fast as it accepts them; the clock stops when the engine
   counts all N documents.  The collector's CPU time (all its processes) is reported.

    python bench/bench_e2e.py [--records 40000] [--url URL]   # default: starts OpenSearch from tests/engines

Prints the figures and writes bench/results/e2e.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_bulk_ceiling import count_index, run_raw  # noqa: E402
from ingest_service.bulk.actions import ActionBuilder, ActionSpec, BulkItem, bulk_body, chunk_items  # noqa: E402
from ingest_service.cli import iter_raw_messages  # noqa: E402
from ingest_service.documents import serialize  # noqa: E402
from ingest_service.engines.client import EngineConfig, connect  # noqa: E402
from ingest_service.ipfix.decoder import FlowDecoder  # noqa: E402
from ingest_service.normalize import Normalizer  # noqa: E402
from ingest_service.schema.render import TargetConfig  # noqa: E402
from ingest_service.setup import run_setup  # noqa: E402
from tests.support.goexporter import goexporter_args  # noqa: E402


def capture_stream(records: int) -> bytes:
    server = socket.create_server(("127.0.0.1", 0))
    chunks: list[bytes] = []

    def receive():
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1 << 20):
                chunks.append(data)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    subprocess.run(goexporter_args(server.getsockname(), "tcp", records, mix=True, seed=99,
                                   flow_types=["pod-to-pod", "pod-to-service", "pod-to-external"]),
                   check=True, capture_output=True, timeout=300)
    thread.join(60)
    server.close()
    return b"".join(chunks)


def documents_of(stream: bytes) -> list[bytes]:
    decoder, normalizer = FlowDecoder(), Normalizer()
    docs = []
    for message in iter_raw_messages(stream, {}):
        for record in decoder.decode(message, ("tcp", "127.0.0.1", 1, 1), time.time()):
            if not record.options:
                docs.append(serialize(normalizer.document(record)))
    return docs


def process_tree_cpu(pid: int) -> float:
    """utime + stime (s) of a process and its children, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pending += [int(c) for c in children]
        except (OSError, IndexError, ValueError):
            continue
    return total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--url", help="engine URL (default: start OpenSearch from tests/engines)")
    parser.add_argument("--report", default=str(REPO / "bench" / "results" / "e2e.json"))
    args = parser.parse_args()

    engine = None
    url = args.url
    if url is None:
        from tests.engines.engine import start_engine

        engine = start_engine("opensearch")
        url = engine.url
    client = connect(EngineConfig(hosts=(url,)))
    try:
        print(f"engine: {client.info.kind} {client.info.number} at {url}")
        stream = capture_stream(args.records)
        docs = documents_of(stream)
        print(f"captured {len(stream)} bytes of IPFIX, {len(docs)} records")

        ceiling_target = TargetConfig(name="flow-bench-ceiling")
        run_setup(client, ceiling_target, out=lambda _: None)
        builder = ActionBuilder(ActionSpec(ceiling_target.name, "create", "_none", False))
        items = [BulkItem(builder.action(doc), doc) for doc in docs]
        bodies = [(bulk_body(chunk), len(chunk)) for chunk in chunk_items(items, 1000, 5 << 20)]
        ceiling = run_raw(client, bodies, concurrency=2)
        assert count_index(client, ceiling_target.name) == len(docs), "ceiling run lost documents"
        ceiling_rate = ceiling["acknowledged"] / ceiling["seconds"]
        print(f"ceiling (pre-serialized _bulk, 2 in flight): {ceiling_rate:,.0f} docs/s")

        e2e_target = "flow-bench-e2e"
        port = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            serve = subprocess.Popen(
                [sys.executable, "-m", "ingest_service.cli", "--log-level", "WARNING", "serve", "--url", url, "--name", e2e_target, "--setup",
                 "--udp-port", "0", "--tcp-address", "127.0.0.1", "--tcp-port", str(port), "--data-dir", tmp,
                 "--stats-file", f"{tmp}/stats.json", "--http-port", "0", "--jsonlines-tcp-port", "0",
                 "--jsonlines-udp-port", "0"], cwd=REPO)
            deadline = time.time() + 60
            while not Path(f"{tmp}/stats.json").exists():
                if time.time() > deadline or serve.poll() is not None:
                    raise SystemExit("serve did not start")
                time.sleep(0.1)
            cpu_before = process_tree_cpu(serve.pid)
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall(stream)
            while count_index(client, e2e_target) < len(docs):
                time.sleep(0.2)
                if time.perf_counter() - started > 600:
                    raise SystemExit("end-to-end run did not finish in 10 minutes")
            elapsed = time.perf_counter() - started
            cpu = process_tree_cpu(serve.pid) - cpu_before
            serve.send_signal(signal.SIGTERM)
            serve.wait(60)
        e2e_rate = len(docs) / elapsed
        ratio = e2e_rate / ceiling_rate
        print(f"end to end (IPFIX over TCP -> serve -> engine): {e2e_rate:,.0f} docs/s = {ratio:.0%} of the ceiling")
        print(f"collector CPU: {cpu:.1f} s for {len(docs)} records = {cpu / len(docs) * 1e6:.0f} us/record "
              f"({cpu / elapsed:.0%} of one core over the run)")
        report = {
            "benchmark": "end-to-end",
            "command": "python bench/bench_e2e.py --records %d" % args.records,
            "engine": f"{client.info.kind} {client.info.number}",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "records": len(docs),
            "ceiling_docs_per_second": round(ceiling_rate),
            "e2e_docs_per_second": round(e2e_rate),
            "e2e_fraction_of_ceiling": round(ratio, 3),
            "collector_cpu_seconds": round(cpu, 2),
            "collector_cpu_us_per_record": round(cpu / len(docs) * 1e6, 1),
            "target": ">= 0.90 of ceiling",
            "target_met": ratio >= 0.9,
        }
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.report}")
    finally:
        if engine is not None:
            engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
