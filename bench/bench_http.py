"""HTTP ingest benchmark: NDJSON records/s through the real gunicorn app, next to the IPFIX path.

Records: the Antrea Flow Aggregator records of bench/antrea_template.py (the IEs go-ipfix
v0.17.0 sends), as Antrea's JSON records (``{"@timestamp", "ipfix": {...}}``, dateTimeSeconds
as epoch seconds), in NDJSON batches of 500.  Keep-alive clients (http.client, one
connection per thread) push them to gunicorn (gthread workers) writing NDJSON files, on
this machine: clients and server share its cores.

Also measured in one process, CPU time on one core, for the same records:
  * JSON path:  jsoninput conversion + normalization + serialization (what a worker does per record)
  * IPFIX path: FlowDecoder decode + normalization + serialization

    python bench/bench_http.py [--seconds 8] [--report PATH]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.antrea_template import antrea_messages  # noqa: E402
from ingest_service.documents import serialize  # noqa: E402
from ingest_service.ipfix.decoder import FlowDecoder  # noqa: E402
from ingest_service.ipfix.registry import default_registry  # noqa: E402
from ingest_service.jsoninput import DocumentBuilder, JsonRecordConverter, numbered_lines  # noqa: E402
from ingest_service.normalize import Normalizer  # noqa: E402
from ingest_service.web.app import WebConfig, run_gunicorn  # noqa: E402
from ingest_service.web.health import prepare_metrics_dir  # noqa: E402

BATCH = 500
SESSION = ("udp", "192.0.2.1", 4739, 0)


def antrea_json_records() -> tuple[list[bytes], list[bytes]]:
    """(IPFIX messages, the same records as Antrea JSON lines)."""
    messages, _ = antrea_messages()
    registry = default_registry()
    decoder = FlowDecoder(registry)
    lines = []
    for message in messages:
        for record in decoder.decode(message, SESSION, 1.0):
            fields = {}
            for name, value in record.fields.items():
                element = registry.by_name(name)
                if element is not None and element.type == "dateTimeSeconds":
                    value = int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
                fields[name] = value
            stamp = datetime.fromtimestamp(record.export_time).astimezone().isoformat(timespec="seconds")
            lines.append(orjson.dumps({"ipfix": fields, "@timestamp": stamp}))
    return messages, lines


def ndjson_batches(lines: list[bytes]) -> list[bytes]:
    batches = []
    for start in range(0, len(lines) - BATCH + 1, BATCH):
        batches.append(b"\n".join(lines[start:start + BATCH]) + b"\n")
    return batches


def json_path_rate(lines: list[bytes], seconds: float) -> float:
    builder = DocumentBuilder(JsonRecordConverter(), Normalizer())
    numbered = numbered_lines(b"\n".join(lines))
    total = 0
    start = time.process_time()
    while time.process_time() - start < seconds:
        total += builder.from_lines(numbered, host="192.0.2.1").accepted
    return total / (time.process_time() - start)


def ipfix_path_rate(messages: list[bytes], seconds: float) -> float:
    decoder = FlowDecoder()
    normalizer = Normalizer()
    decoder.decode(messages[0], SESSION, 1.0)
    total = 0
    start = time.process_time()
    while time.process_time() - start < seconds:
        for message in messages[1:]:
            for record in decoder.decode(message, SESSION, 1.0):
                serialize(normalizer.document(record))
                total += 1
    return total / (time.process_time() - start)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_rate(batches: list[bytes], seconds: float, workers: int, clients: int, query: str = "") -> dict:
    directory = Path(tempfile.mkdtemp(prefix="bench-http-"))
    config = WebConfig(port=free_port(), output_dir=str(directory / "data"), workers=workers, threads=4,
                       metrics_dir=prepare_metrics_dir(str(directory / "metrics")), max_records=BATCH)
    log = open(directory / "gunicorn.log", "wb")
    process = run_gunicorn(config, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", config.port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((directory / "gunicorn.log").read_text()) from None
                time.sleep(0.1)
        accepted = [0] * clients
        failures = [0] * clients
        stop_at = [0.0]

        def client(index: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", config.port, timeout=60)
            n = index
            while time.monotonic() < stop_at[0]:
                body = batches[n % len(batches)]
                n += clients
                connection.request("POST", "/api/v1/flows" + query, body=body,
                                   headers={"Content-Type": "application/x-ndjson"})
                response = connection.getresponse()
                answer = response.read()
                if response.status in (200, 202):
                    accepted[index] += orjson.loads(answer)["accepted"]
                else:
                    failures[index] += 1
            connection.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        started = time.monotonic()
        stop_at[0] = started + seconds
        cpu_before = os.times()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        cpu_after = os.times()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        log.close()
    written = sum(len(path.read_bytes().splitlines()) for path in (directory / "data").glob("flow-*.ndjson"))
    shutil.rmtree(directory, ignore_errors=True)
    total = sum(accepted)
    return {
        "records_per_second": round(total / elapsed),
        "records": total,
        "documents_written": written,
        "failed_requests": sum(failures),
        "seconds": round(elapsed, 2),
        "client_cpu_seconds": round((cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system), 2),
        "gunicorn_exit": code,
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=2, help="runs per HTTP setup; the best counts (shared "
                        "machines: other work only ever lowers a figure)")
    parser.add_argument("--report", default=str(Path(__file__).resolve().parent / "results" / "http.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"note: load average {load_before[0]:.2f} before the run: other work shares the cores, "
              f"figures will be low")
    messages, lines = antrea_json_records()
    batches = ndjson_batches(lines)
    body_bytes = sum(map(len, batches)) / len(batches)
    print(f"{len(lines)} distinct Antrea records, {len(batches)} NDJSON batches of {BATCH} "
          f"({body_bytes / 1024:.0f} KiB each)")

    in_process = {
        "json convert+normalize+serialize (1 core)": round(json_path_rate(lines, args.seconds / 2)),
        "ipfix decode+normalize+serialize (1 core)": round(ipfix_path_rate(messages, args.seconds / 2)),
    }
    for name, rate in in_process.items():
        print(f"{name:45s} {rate:10,d} records/s (CPU time)")

    http_runs = {}
    for name, workers, clients, query in (("http 2 workers, 8 clients", 2, 8, ""),
                                          ("http 1 worker, 4 clients", 1, 4, ""),
                                          ("http 2 workers, 8 clients, ?wait=true", 2, 8, "?wait=true")):
        runs = [http_rate(batches, args.seconds, workers, clients, query) for _ in range(args.repeat)]
        result = max(runs, key=lambda run: run["records_per_second"])
        result["all_runs_records_per_second"] = [run["records_per_second"] for run in runs]
        http_runs[name] = result
        print(f"{name:45s} {result['records_per_second']:10,d} records/s (wall clock, best of "
              f"{result['all_runs_records_per_second']}; {result['records']} records, {result['documents_written']} "
              f"written, {result['failed_requests']} failed requests, client CPU {result['client_cpu_seconds']}s)")
        if any(run["documents_written"] != run["records"] or run["failed_requests"] or run["gunicorn_exit"]
               for run in runs):
            print("  WARNING: not every accepted record was written, or gunicorn did not stop cleanly")

    report = {
        "benchmark": "http",
        "command": f"python bench/bench_http.py --seconds {args.seconds} --repeat {args.repeat}",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "batch_records": BATCH,
        "batch_bytes": round(body_bytes),
        "record_fields": len(orjson.loads(lines[0])["ipfix"]),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "in_process_records_per_second": in_process,
        "http": http_runs,
        "notes": "HTTP figures: clients and gunicorn on the same machine (all cores shared); gthread workers "
                 "with 4 threads, NDJSON file output. In-process figures: CPU time of one core.",
    }
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(f"report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
