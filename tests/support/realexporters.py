"""Run real flow exporters from Debian (softflowd) and helper tools (tshark) in tests.

* ``find_tool("softflowd")``: the binary's path, looking in ``/usr/sbin`` and ``/sbin``
  too (Debian installs softflowd there, and a non-login PATH may lack them).
* ``require_tool(name, package)``: the path, or ``pytest.skip`` with an explicit
  reason; when ``FLOW_INGEST_REQUIRE_REAL_EXPORTERS`` is set (CI sets it) a missing
  tool is a test failure instead, so CI cannot go green by skipping.
* ``run_softflowd(pcap, ["-v", "10"])``: replays a pcap through softflowd with its
  export going to a UDP socket of ours on 127.0.0.1, bounded in time, and returns
  the datagrams in arrival order.

softflowd's run is synchronised without sleeps: it reads the whole file, flushes
every flow at end of file, prints ``Flows exported: F (R records) in P packets`` and
exits; we wait for the process (timeout) and then for exactly P datagrams (poll with
a deadline), then check that nothing else arrives.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

REQUIRE_ENV = "FLOW_INGEST_REQUIRE_REAL_EXPORTERS"
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")

# What CI installs (apt-get install -y ...): tool name -> Debian package.
DEBIAN_PACKAGES = {"softflowd": "softflowd", "tshark": "tshark"}

_EXPORTED = re.compile(r"Flows exported:\s*(\d+)\s*\((\d+) records\)\s*in\s*(\d+)\s*packets\s*\((\d+) failures\)")


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def find_tool(name: str) -> str | None:
    path = shutil.which(name)
    if path:
        return path
    for directory in SBIN_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_tool(name: str, package: str | None = None) -> str:
    """The tool's path; skip (or, with FLOW_INGEST_REQUIRE_REAL_EXPORTERS set, fail) if absent."""
    import pytest

    path = find_tool(name)
    if path:
        return path
    package = package or DEBIAN_PACKAGES.get(name, name)
    reason = (f"{name} is not installed (Debian package '{package}': apt-get install -y {package}); "
              f"set {REQUIRE_ENV}=1 to make this a failure")
    if required():
        pytest.fail(f"{name} is required ({REQUIRE_ENV} is set) but not installed: "
                    f"apt-get install -y {package}", pytrace=False)
    pytest.skip(reason)


def debian_package_version(package: str) -> str | None:
    """``dpkg-query``'s version of an installed package, or None."""
    dpkg = shutil.which("dpkg-query")
    if not dpkg:
        return None
    proc = subprocess.run([dpkg, "-W", "-f", "${Version}", package], capture_output=True, text=True,
                          timeout=10, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


@dataclass(frozen=True)
class Received:
    time: float  # epoch seconds when our socket got it
    src: str
    sport: int
    payload: bytes


@dataclass
class ExporterRun:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    collector: tuple[str, int]  # where the exporter sent to (our socket)
    datagrams: list[Received] = field(default_factory=list)
    reported_flows: int | None = None  # from softflowd's closing statistics
    reported_records: int | None = None
    reported_packets: int | None = None

    @property
    def exporter(self) -> tuple[str, int]:
        first = self.datagrams[0]
        return first.src, first.sport

    def describe(self) -> str:
        return (f"$ {' '.join(self.command)}\n(exit {self.returncode}, {self.elapsed:.2f} s, "
                f"{len(self.datagrams)} datagrams)\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")


class ExporterError(RuntimeError):
    pass


def softflowd_command(binary: str, pcap: str | Path, collector: tuple[str, int],
                      args: Sequence[str]) -> list[str]:
    host, port = collector
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [binary, "-r", str(pcap), "-n", target, "-P", "udp", *args]


def run_softflowd(pcap: str | Path, args: Sequence[str], *, binary: str | None = None,
                  timeout: float = 15.0, host: str = "127.0.0.1") -> ExporterRun:
    """Replay ``pcap`` through softflowd (``args`` e.g. ``["-v", "10", "-a"]``), collect its export.

    Raises ExporterError if softflowd fails, times out, or the datagrams it reports
    having sent do not all arrive within the timeout.
    """
    binary = binary or find_tool("softflowd")
    if not binary:
        raise ExporterError("softflowd not found")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        sock.bind((host, 0))
        collector = (host, sock.getsockname()[1])
        command = softflowd_command(binary, pcap, collector, args)
        started = time.monotonic()
        deadline = started + timeout
        datagrams: list[Received] = []

        def receive(wait: float) -> bool:
            ready, _, _ = select.select([sock], [], [], max(0.0, wait))
            if not ready:
                return False
            payload, address = sock.recvfrom(65535)
            datagrams.append(Received(time.time(), address[0], address[1], payload))
            return True

        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            # Receive while it runs, so a large export cannot overflow our buffer.
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise ExporterError(f"softflowd did not finish within {timeout} s: {' '.join(command)}")
                receive(min(0.05, deadline - time.monotonic()))
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        run = ExporterRun(command, proc.returncode, stdout, stderr, 0.0, collector, datagrams)
        match = _EXPORTED.search(stdout)
        if match:
            run.reported_flows, run.reported_records, run.reported_packets = (int(g) for g in match.groups()[:3])
            if int(match.group(4)):
                raise ExporterError(f"softflowd reports send failures\n{run.describe()}")
        if proc.returncode != 0:
            raise ExporterError(f"softflowd failed\n{run.describe()}")
        if run.reported_packets is not None:
            # Everything it sent is on loopback: wait for the rest, then for strays.
            while len(datagrams) < run.reported_packets and time.monotonic() < deadline:
                receive(deadline - time.monotonic())
            if len(datagrams) < run.reported_packets:
                raise ExporterError(f"softflowd sent {run.reported_packets} packets, "
                                    f"{len(datagrams)} arrived\n{run.describe()}")
            while receive(0.05):
                pass
        else:  # statistics format changed: fall back to a quiet period
            while receive(0.3):
                pass
        run.elapsed = time.monotonic() - started
        return run
    finally:
        sock.close()
