"""Bulk indexing ceiling: how many documents/s the engine takes through ``_bulk`` from us.

Builds Antrea-shaped documents (the Flow Aggregator template, decoded and serialized as
``flow-ingest serve`` does), pre-builds the ``_bulk`` bodies, then only POSTs them with
the same engine client the writer uses, from ``--concurrency`` threads.  That is the
ceiling the end-to-end pipeline can approach; ``--writer`` also pushes the same documents
through BulkWriter (queue, batching, response classification) to show its overhead.

    python bench/bench_bulk_ceiling.py --url http://127.0.0.1:9200 [--documents 200000]
    python bench/bench_bulk_ceiling.py --start opensearch      # a throwaway engine from tests/engines
    python bench/bench_bulk_ceiling.py --ndjson docs.ndjson    # your own documents, one per line

Documents/s are wall-clock, measured from the first POST to the last answer; the index is
deleted before each run and refreshed/counted after it, so a run that lost documents says so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest_service.bulk.actions import ActionBuilder, ActionSpec, BulkItem, bulk_body, chunk_items, classify_response  # noqa: E402
from ingest_service.bulk.writer import BulkWriter, BulkWriterConfig  # noqa: E402
from ingest_service.engines import EngineConfig, connect  # noqa: E402


def antrea_documents(count: int) -> list[bytes]:
    from bench.antrea_template import antrea_messages
    from ingest_service.documents import serialize, to_document
    from ingest_service.ipfix.decoder import FlowDecoder

    messages, _ = antrea_messages(records_per_message=20, messages=max(2, count // 20 + 2))
    decoder = FlowDecoder()
    session = ("udp", "192.0.2.1", 4739, 0)
    docs: list[bytes] = []
    for message in messages:
        for record in decoder.decode(message, session, time.time()):
            docs.append(serialize(to_document(record)))
            if len(docs) == count:
                return docs
    while len(docs) < count:  # more than the generator made: repeat (ids off, so no collapse)
        docs.extend(docs[:count - len(docs)])
    return docs


def ndjson_documents(path: str, count: int | None) -> list[bytes]:
    docs = [line for line in Path(path).read_bytes().splitlines() if line.strip()]
    return docs[:count] if count else docs


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def run_raw(client, bodies: list[tuple[bytes, int]], concurrency: int) -> dict:
    """POST prebuilt bodies from ``concurrency`` threads; every item must be acknowledged."""
    cursor = iter(range(len(bodies)))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    acknowledged = [0]

    def worker():
        while True:
            with lock:
                position = next(cursor, None)
            if position is None:
                return
            body, count = bodies[position]
            began = time.perf_counter()
            try:
                outcome = classify_response(client.bulk(body), count)
            except Exception as exc:  # report, keep going: the count check below tells the loss
                failures.append(str(exc)[:200])
                continue
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)
                acknowledged[0] += outcome.acknowledged
                if outcome.retry or outcome.rejected:
                    failures.append(f"{len(outcome.retry)} retryable, {len(outcome.rejected)} rejected items")

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"seconds": wall, "acknowledged": acknowledged[0], "requests": len(latencies),
            "latency_p50": percentile(latencies, 0.5), "latency_p99": percentile(latencies, 0.99),
            "failures": failures[:5], "failure_count": len(failures)}


def run_writer(client, docs: list[bytes], args) -> dict:
    writer = BulkWriter(client, BulkWriterConfig(index=args.index, op_type=args.op_type, document_ids=args.ids,
                                                 batch_docs=args.batch_docs, batch_bytes=args.batch_bytes,
                                                 in_flight=args.concurrency))
    started = time.perf_counter()
    for start in range(0, len(docs), 500):
        writer.write(docs[start:start + 500])
    writer.close()
    wall = time.perf_counter() - started
    counters = writer.counters()
    return {"seconds": wall, "acknowledged": counters["documents_indexed"] + counters["documents_duplicate"],
            "requests": counters["bulk_requests"], "retries": counters["bulk_retries"]}


def reset_index(client, index: str) -> None:
    client.perform("DELETE", f"/{index}")


def count_index(client, index: str) -> int:
    client.perform("POST", f"/{index}/_refresh")
    response = client.perform("GET", f"/{index}/_count")
    return response.body.get("count", -1) if response.ok else -1


def report_line(name: str, result: dict, documents: int, body_bytes: int) -> str:
    rate = result["acknowledged"] / result["seconds"] if result["seconds"] else 0.0
    result["documents_per_second"] = round(rate)
    result["mib_per_second"] = round(body_bytes / result["seconds"] / (1 << 20), 1) if result["seconds"] else 0.0
    extra = ""
    if "latency_p50" in result:
        extra = f", request p50 {result['latency_p50'] * 1000:.0f} ms p99 {result['latency_p99'] * 1000:.0f} ms"
    return (f"{name:8s} {rate:10,.0f} docs/s  {result['mib_per_second']:6.1f} MiB/s  "
            f"({result['acknowledged']}/{documents} acknowledged in {result['seconds']:.2f}s, "
            f"{result['requests']} requests{extra})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", action="append", help="engine URL (repeat for several hosts)")
    where.add_argument("--start", choices=("opensearch", "elasticsearch"), help="start a throwaway engine")
    parser.add_argument("--version", help="with --start: engine version")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--api-key")
    parser.add_argument("--ca-file")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--ndjson", help="documents from this file (one JSON object per line) instead of Antrea's")
    parser.add_argument("--index", default="bench-bulk-ceiling")
    parser.add_argument("--op-type", default="create", choices=("create", "index"))
    parser.add_argument("--ids", action="store_true", help="deterministic document ids (as the writer's document_ids)")
    parser.add_argument("--batch-docs", type=int, default=1000)
    parser.add_argument("--batch-bytes", type=int, default=5 << 20)
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    parser.add_argument("--writer", action="store_true", help="also run the same documents through BulkWriter")
    parser.add_argument("--report", help="write the results as JSON here")
    args = parser.parse_args()

    engine = None
    if args.start:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.engines import start_engine
        engine = start_engine(args.start, args.version)
        urls = [engine.url]
    else:
        urls = args.url
    try:
        client = connect(EngineConfig(hosts=tuple(urls), username=args.username, password=args.password,
                                      api_key=args.api_key, ca_file=args.ca_file, verify_certs=not args.insecure,
                                      max_connections=max(8, args.concurrency)))
        print(f"engine: {client.info.describe()} at {', '.join(urls)}")
        docs = ndjson_documents(args.ndjson, args.documents) if args.ndjson else antrea_documents(args.documents)
        builder = ActionBuilder(ActionSpec(args.index, args.op_type, None, args.ids))
        items = [BulkItem(builder.action(doc), doc) for doc in docs]
        bodies = [(bulk_body(chunk), len(chunk)) for chunk in chunk_items(items, args.batch_docs, args.batch_bytes)]
        body_bytes = sum(len(body) for body, _ in bodies)
        print(f"{len(docs)} documents, {body_bytes / len(docs):.0f} bytes each with its action line, "
              f"{len(bodies)} bodies of up to {args.batch_docs} documents, {args.concurrency} in flight")

        results = {}
        reset_index(client, args.index)
        results["raw"] = run_raw(client, bodies, args.concurrency)
        results["raw"]["counted"] = count_index(client, args.index)
        print(report_line("raw", results["raw"], len(docs), body_bytes))
        if args.writer:
            reset_index(client, args.index)
            results["writer"] = run_writer(client, docs, args)
            results["writer"]["counted"] = count_index(client, args.index)
            print(report_line("writer", results["writer"], len(docs), body_bytes))
        reset_index(client, args.index)
        for name, result in results.items():
            if result["counted"] != len(docs):
                print(f"WARNING: {name}: the index holds {result['counted']} documents, not {len(docs)}")

        if args.report:
            report = {
                "benchmark": "bulk_ceiling",
                "command": " ".join(sys.argv),
                "engine": client.info.describe(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "documents": len(docs),
                "bytes_per_document": round(body_bytes / len(docs)),
                "batch_docs": args.batch_docs,
                "concurrency": args.concurrency,
                "results": results,
            }
            Path(args.report).parent.mkdir(parents=True, exist_ok=True)
            Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
            print(f"report written to {args.report}")
        client.close()
    finally:
        if engine is not None:
            engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
