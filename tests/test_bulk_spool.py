"""The disk spool: bounded, segmented, replayed in order, acknowledged away, restart-proof."""
from __future__ import annotations

import os

import pytest

from ingest_service.bulk.actions import BulkItem, bulk_body
from ingest_service.bulk.spool import Spool, SpoolConfig, SpoolFull, SpoolLocked, parse_segment


def items(start: int, count: int) -> list[BulkItem]:
    return [BulkItem(b'{"create":{"_index":"flows","_id":"%d"}}' % n, b'{"n":%d}' % n) for n in range(start, start + count)]


def numbers(segment_items) -> list[int]:
    return [int(item.document[5:-1]) for item in segment_items]


def drain(spool: Spool) -> list[int]:
    seen = []
    while (segment := spool.oldest()) is not None:
        seen += numbers(segment.items)
        spool.acknowledge(segment, len(segment.items))
    return seen


def test_append_and_replay_in_order(tmp_path):
    spool = Spool(SpoolConfig(str(tmp_path), segment_bytes=200))
    for start in range(0, 50, 5):
        spool.append(items(start, 5))
    assert spool.segments > 3
    assert drain(spool) == list(range(50))
    assert spool.empty and spool.bytes == 0
    assert not list(tmp_path.glob("seg-*"))


def test_a_segment_is_a_valid_bulk_body(tmp_path):
    spool = Spool(SpoolConfig(str(tmp_path)))
    spool.append(items(0, 3))
    spool.close()
    [segment_file] = tmp_path.glob("seg-*.ndjson")
    assert segment_file.read_bytes() == bulk_body(items(0, 3))


def test_size_bound(tmp_path):
    one = len(bulk_body(items(0, 1)))
    spool = Spool(SpoolConfig(str(tmp_path), max_bytes=one * 3))
    spool.append(items(0, 3))
    assert not spool.has_room(one)
    with pytest.raises(SpoolFull):
        spool.append(items(3, 1))
    segment = spool.oldest()
    spool.acknowledge(segment, len(segment.items))
    spool.append(items(3, 1))  # room again once acknowledged


def test_empty_spool_takes_an_oversized_batch(tmp_path):
    spool = Spool(SpoolConfig(str(tmp_path), max_bytes=10))
    spool.append(items(0, 5))
    assert numbers(spool.oldest().items) == list(range(5))


def test_partial_acknowledgement_survives_restart(tmp_path):
    spool = Spool(SpoolConfig(str(tmp_path)))
    spool.append(items(0, 10))
    segment = spool.oldest()
    spool.acknowledge(segment, 4)
    spool.close()

    again = Spool(SpoolConfig(str(tmp_path)))
    segment = again.oldest()
    assert segment.start == 4
    assert numbers(segment.items) == list(range(4, 10))


def test_new_writer_replays_what_the_old_one_left_then_its_own(tmp_path):
    old = Spool(SpoolConfig(str(tmp_path), segment_bytes=150))
    old.append(items(0, 6))
    old.append(items(6, 6))
    old.close()
    new = Spool(SpoolConfig(str(tmp_path), segment_bytes=150))
    new.append(items(12, 3))
    assert drain(new) == list(range(15))


def test_torn_tail_is_skipped(tmp_path):
    spool = Spool(SpoolConfig(str(tmp_path)))
    spool.append(items(0, 3))
    spool.close()
    [segment_file] = tmp_path.glob("seg-*.ndjson")
    with open(segment_file, "ab") as handle:  # a crash in the middle of the next append
        handle.write(b'{"create":{"_index":"flows","_id":"3"}}\n{"n":3')
    again = Spool(SpoolConfig(str(tmp_path)))
    segment = again.oldest()
    assert numbers(segment.items) == [0, 1, 2]
    assert segment.torn == 2  # the torn document and its orphaned action line


def test_parse_segment_skips_garbage_and_resynchronizes():
    good = bulk_body(items(0, 2))
    data = good + b"\0\0\0\0\n" + bulk_body(items(2, 1))
    parsed, torn = parse_segment(data)
    assert numbers(parsed) == [0, 1, 2] and torn == 1
    assert parse_segment(b"") == ([], 0)


def test_one_writer_per_directory(tmp_path):
    spool = Spool(SpoolConfig(str(tmp_path)))
    # flock is per open file description: a second open in this process conflicts too.
    with pytest.raises(SpoolLocked):
        Spool(SpoolConfig(str(tmp_path)))
    spool.close()
    Spool(SpoolConfig(str(tmp_path))).close()


def test_appending_while_replaying_seals_the_active_segment(tmp_path):
    spool = Spool(SpoolConfig(str(tmp_path)))
    spool.append(items(0, 2))
    segment = spool.oldest()  # seals the only (active) segment
    spool.append(items(2, 2))  # goes to a new one
    spool.acknowledge(segment, 2)
    assert drain(spool) == [2, 3]


@pytest.mark.parametrize("policy", ["always", "segment", "never"])
def test_fsync_policies(tmp_path, policy):
    spool = Spool(SpoolConfig(str(tmp_path), fsync=policy, segment_bytes=100))
    spool.append(items(0, 10))
    spool.close()
    assert drain(Spool(SpoolConfig(str(tmp_path), fsync=policy))) == list(range(10))


def test_stale_cursor_files_are_removed(tmp_path):
    (tmp_path / "seg-000000000009.ack").write_text("3\n")
    Spool(SpoolConfig(str(tmp_path))).close()
    assert not (tmp_path / "seg-000000000009.ack").exists()


def test_config_validation(tmp_path):
    with pytest.raises(ValueError):
        SpoolConfig(str(tmp_path), fsync="sometimes")
    with pytest.raises(ValueError):
        SpoolConfig(str(tmp_path), max_bytes=0)
    assert os.path.isdir(tmp_path)
