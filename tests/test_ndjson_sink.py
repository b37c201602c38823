"""The NDJSON sink: daily files by document date, whole-line appends, flushing."""
from __future__ import annotations

import fcntl
import multiprocessing
import os

import orjson
import pytest

from ingest_service.documents import serialize, to_document
from ingest_service.records import FlowRecord
from ingest_service.sinks import SinkError, document_day
from ingest_service.sinks.ndjson import NdjsonFileSink, NdjsonStreamSink

NOV_14 = 1_700_000_000  # 2023-11-14T22:13:20Z
NOV_15 = NOV_14 + 86_400


def line(export_time: float, n: int = 0) -> bytes:
    record = FlowRecord("192.0.2.1", 4739, 10, 1, 256, export_time, {"n": n})
    return serialize(to_document(record))


def read_lines(path) -> list[dict]:
    return [orjson.loads(raw) for raw in path.read_bytes().splitlines()]


def test_document_day_uses_the_utc_date_of_the_timestamp():
    assert document_day(line(NOV_14)) == "2023.11.14"
    assert document_day(line(NOV_14 + 6399)) == "2023.11.14"  # 23:59:59 UTC
    assert document_day(line(NOV_14 + 6400)) == "2023.11.15"  # midnight UTC
    # Not what to_document writes: parsed instead of sliced.
    assert document_day(b'{"host":"x","@timestamp":"2024-02-29T10:00:00Z"}') == "2024.02.29"
    assert document_day(b'{"@timestamp":"318857-05-20T17:46:40.000Z"}') == "318857.05.20"
    assert document_day(b'{"@timestamp":1}', clock=lambda: NOV_15) == "2023.11.15"
    assert document_day(b"not json", clock=lambda: NOV_15) == "2023.11.15"


def test_rotates_by_document_date(tmp_path):
    sink = NdjsonFileSink(tmp_path / "data")
    assert sink.write([line(NOV_14, 1), line(NOV_15, 2), line(NOV_14, 3)]) == 0  # buffered
    assert sink.flush() == 3
    sink.write([line(NOV_15, 4)])
    assert sink.close() == 1
    day14, day15 = tmp_path / "data" / "flow-2023.11.14.ndjson", tmp_path / "data" / "flow-2023.11.15.ndjson"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [day14.name, day15.name]
    assert [d["ipfix"]["n"] for d in read_lines(day14)] == [1, 3]
    assert [d["ipfix"]["n"] for d in read_lines(day15)] == [2, 4]


def test_nothing_reaches_the_file_before_flush_unless_the_buffer_fills(tmp_path):
    sink = NdjsonFileSink(tmp_path, max_buffer_bytes=1000)
    small = [line(NOV_14, 1)]
    assert sink.write(small) == 0
    assert not (tmp_path / "flow-2023.11.14.ndjson").exists()
    many = [line(NOV_14, n) for n in range(2, 20)]
    assert sink.write(many) == 19  # over the limit: written out at once
    assert len(read_lines(tmp_path / "flow-2023.11.14.ndjson")) == 19
    assert sink.flush() == 0
    sink.close()


def test_files_are_opened_for_append_and_reopened_after_too_many_days(tmp_path):
    (tmp_path / "flow-2023.11.14.ndjson").write_bytes(b'{"earlier":true}\n')
    sink = NdjsonFileSink(tmp_path, max_open_files=1)
    sink.write([line(NOV_14, 1)])
    sink.flush()
    (fd,) = sink._files.values()
    assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
    sink.write([line(NOV_15, 2)])
    sink.flush()  # the Nov 14 file was closed to open Nov 15
    sink.write([line(NOV_14, 3)])
    sink.close()
    assert read_lines(tmp_path / "flow-2023.11.14.ndjson") == [{"earlier": True}, orjson.loads(line(NOV_14, 1)),
                                                               orjson.loads(line(NOV_14, 3))]
    assert not sink._files


def test_one_write_call_per_file_and_batch(tmp_path, monkeypatch):
    calls = []
    real_write = os.write

    def counting_write(fd, data):
        calls.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    sink = NdjsonFileSink(tmp_path)
    sink.write([line(NOV_14, n) for n in range(100)] + [line(NOV_15, 100)])
    sink.close()
    assert len(calls) == 2
    assert all(chunk.endswith(b"\n") for chunk in calls)
    assert sorted(chunk.count(b"\n") for chunk in calls) == [1, 100]


def _append_many(directory: str, worker: int, batches: int, per_batch: int) -> None:
    sink = NdjsonFileSink(directory, max_buffer_bytes=1 << 30)
    padding = "x" * (500 + 300 * worker)  # lines of different lengths make torn lines visible
    for b in range(batches):
        lines = [orjson.dumps({"@timestamp": "2023-11-14T00:00:00.000Z", "w": worker, "b": b, "i": i, "p": padding})
                 for i in range(per_batch)]
        sink.write(lines)
        sink.flush()
    sink.close()


def test_processes_appending_to_the_same_file_never_tear_lines(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), w, 50, 40)) for w in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    documents = read_lines(tmp_path / "flow-2023.11.14.ndjson")  # every line parses
    assert len(documents) == 3 * 50 * 40
    for w in range(3):
        mine = [(d["b"], d["i"]) for d in documents if d["w"] == w]
        assert mine == [(b, i) for b in range(50) for i in range(40)]  # each process's order kept


def test_write_failure_reports_lost_lines_and_recovers(tmp_path):
    target = tmp_path / "data"
    sink = NdjsonFileSink(target)
    target.rmdir()
    target.write_bytes(b"")  # a file where the directory was: open() fails
    sink.write([line(NOV_14, 1), line(NOV_14, 2)])
    with pytest.raises(SinkError) as failure:
        sink.flush()
    assert failure.value.lost == 2
    target.unlink()
    target.mkdir()
    sink.write([line(NOV_14, 3)])
    assert sink.close() == 1
    assert [d["ipfix"]["n"] for d in read_lines(target / "flow-2023.11.14.ndjson")] == [3]


def test_stream_sink_writes_whole_lines_and_leaves_the_descriptor_open(tmp_path):
    read_end, write_end = os.pipe()
    lock = multiprocessing.get_context("fork").Lock()
    sink = NdjsonStreamSink(write_end, lock=lock)
    assert sink.write([line(NOV_14, 1), line(NOV_15, 2)]) == 0
    assert sink.flush() == 2
    assert sink.close() == 0
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        assert [orjson.loads(raw)["ipfix"]["n"] for raw in stream.read().splitlines()] == [1, 2]
