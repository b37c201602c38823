"""Capture what the real go-ipfix exporter sends over TCP and decode it in-process.

For tests that need realistic Antrea documents without running the whole service:
``capture_antrea(count, seed=...)`` -> (records the exporter says it sent, FlowRecords).
"""
from __future__ import annotations

import socket
import threading

from ingest_service.cli import iter_raw_messages
from ingest_service.ipfix.decoder import FlowDecoder
from tests.support.goexporter import run_goexporter


def _receive_stream(server: socket.socket, chunks: list[bytes]) -> None:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(30)
        while True:
            data = conn.recv(65536)
            if not data:
                return
            chunks.append(data)


def capture_antrea(count: int, *, seed: int = 1, ipv6: bool = False, mix: bool = False, uuids: bool = True,
                   flow_types=None):
    server = socket.create_server(("127.0.0.1", 0))
    chunks: list[bytes] = []
    receiver = threading.Thread(target=_receive_stream, args=(server, chunks), daemon=True)
    receiver.start()
    try:
        sent = run_goexporter(server.getsockname(), "tcp", count, ipv6=ipv6, mix=mix, uuids=uuids, seed=seed,
                              flow_types=flow_types)
        receiver.join(30)
    finally:
        server.close()
    decoder = FlowDecoder()
    session = ("tcp", "127.0.0.1", 1, 1)
    problems: dict = {}
    records = []
    for message in iter_raw_messages(b"".join(chunks), problems):
        records.extend(decoder.decode(message, session, received_at=0.0))
    assert not problems, problems
    return sent, [r for r in records if not r.options]
