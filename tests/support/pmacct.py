"""Run pmacct's ``pmacctd`` (Debian package ``pmacct``) as a NetFlow/IPFIX exporter in tests.

``pmacctd`` reads a pcap (``pcap_savefile``) and hands every packet to its ``nfprobe``
plugin, a NetFlow v5 / v9 / IPFIX exporter (derived from softflowd 0.9.7), which sends
to a UDP socket of ours on 127.0.0.1.

    runs = run_pmacctd_parallel(pcap, {"ipfix": PmacctdSpec(10), "v5": PmacctdSpec(5)})
    runs["ipfix"].datagrams  # [Received(time, src, sport, payload), ...], arrival order

What pmacctd does with a savefile (pmacct 1.7.7, ``src/pmacctd.c``,
``src/nfprobe_plugin/nfprobe_plugin.c``; keys from ``/usr/share/doc/pmacct/CONFIG-KEYS``):

* The core process forks the plugin, sleeps ``pcap_savefile_delay`` seconds (0 or unset
  means a fixed 2 s; we use 1) so the plugin can start, reads the whole file, then
  (``pcap_savefile_wait: false``) shuts down: it sleeps another fixed 2 s
  (``PM_sigint_handler``, not configurable), sends SIGINT to the plugin, waits for it
  and exits 0.  One run therefore takes ~3.1 s of which ~3 s is sleeping - which is
  why several runs go in parallel here.
* On SIGINT the nfprobe plugin expires *every* cached flow (reason "flush") and exports
  it, then exits.  While it reads a savefile it expires only flows it must (table full:
  ``nfprobe_maxflows``, 8192; or over ``maxlife`` measured in pcap time), never on
  idle timeouts - those would compare pcap times with the wall clock.  So the default
  ``nfprobe_timeouts`` are right for a replay: every flow is exported exactly once, at
  the end.  A short ``maxlife`` would split long flows at points that depend on
  process scheduling (observed with ``maxlife=1:expint=1``: the 2.2 s bulk TCP flow
  came in 3 pieces per direction).
* ``debug: true`` makes the plugin log ``Sent N netflow packets`` for every export and
  one ``EXPIRED: ...`` line per flow.  The sum of the N is the number of datagrams to
  wait for (poll with a deadline, no sleeps), like softflowd's closing statistics in
  ``realexporters.run_softflowd``; the EXPIRED lines give pmacct's own record count.

Output goes to files (not pipes): several processes run at once and a full pipe
would block one of them.  Each run is bounded by ``timeout``; a pmacctd still running
then is killed with its plugin (its own process group, started by us).
"""
from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.realexporters import ExporterError, ExporterRun, Received, find_tool

PACKAGE = "pmacct"  # Debian package that ships /usr/sbin/pmacctd
BINARY = "pmacctd"
AGGREGATE = "src_host, dst_host, src_port, dst_port, proto, tos"  # nfprobe's v9/IPFIX default, stated

_SENT = re.compile(r"nfprobe \): Sent (\d+) netflow packets")
_EXPIRED = re.compile(
    r"EXPIRED: seq:\d+ \[(?P<a>[^\]]+)\]:(?P<a_port>\d+) <> \[(?P<b>[^\]]+)\]:(?P<b_port>\d+) "
    r"proto:(?P<proto>\d+) octets>:(?P<octets_ab>\d+) packets>:(?P<packets_ab>\d+) "
    r"octets<:(?P<octets_ba>\d+) packets<:(?P<packets_ba>\d+)")
# "WARN: [file:line] Unknown key ...", "WARN ( default_nfprobe/nfprobe ): Missing data detected ...",
# "ERROR ( ... )": any of these means the run cannot be trusted.
_TROUBLE = re.compile(r"^(?:ERROR|WARN)\b.*$|Missing data detected", re.MULTILINE)


@dataclass(frozen=True)
class PmacctdSpec:
    """One pmacctd run: ``nfprobe_version`` and extra configuration keys (override the base)."""

    version: int
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass
class PmacctRun(ExporterRun):
    version: int = 0
    config: str = ""
    started_wall: float = 0.0  # time.time() around the run: bounds for header export times
    finished_wall: float = 0.0
    expired: list[dict] = field(default_factory=list)  # pmacct's EXPIRED debug lines, parsed

    def describe(self) -> str:
        log_lines = (self.stdout + self.stderr).splitlines()
        interesting = [line for line in log_lines if "DEBUG" not in line and "'--build" not in line]
        return (f"$ {' '.join(self.command)}\n(exit {self.returncode}, {self.elapsed:.2f} s, "
                f"{len(self.datagrams)} datagrams, {self.reported_packets} reported sent)\n"
                f"--- config\n{self.config}--- log (DEBUG lines left out)\n" + "\n".join(interesting[-40:]))


def pmacctd_config(pcap: str | Path, collector: tuple[str, int], spec: PmacctdSpec) -> str:
    """The configuration file text: keys as documented in pmacct's CONFIG-KEYS."""
    host, port = collector
    keys = {
        "daemonize": "false",  # foreground: we wait for the process
        "debug": "true",  # 'Sent N netflow packets' / 'EXPIRED:' lines (see module doc)
        "pcap_savefile": str(pcap),
        "pcap_savefile_wait": "false",  # exit once the file is read
        "pcap_savefile_delay": "1",  # startup pause for the plugin; unset/0 = 2 s
        "plugins": "nfprobe",
        "nfprobe_receiver": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "nfprobe_version": str(spec.version),
        "aggregate": AGGREGATE,
    }
    keys.update(spec.options)
    return "".join(f"{key}: {value}\n" for key, value in keys.items())


class _Instance:
    """One pmacctd process with its own collector socket, config and log files."""

    def __init__(self, name: str, pcap: Path, spec: PmacctdSpec, binary: str, workdir: Path, host: str):
        self.name = name
        self.spec = spec
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind((host, 0))
        self.collector = (host, self.sock.getsockname()[1])
        self.config = pmacctd_config(pcap, self.collector, spec)
        self.config_path = workdir / f"{name}.conf"
        self.config_path.write_text(self.config)
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.command = [binary, "-f", str(self.config_path)]
        self.datagrams: list[Received] = []
        self.proc: subprocess.Popen | None = None
        self.started = self.started_wall = 0.0
        self.exited_at: float | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        self.started_wall = time.time()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # Own session/process group: on timeout we kill pmacctd's core and plugin together.
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)

    def receive(self) -> bool:
        try:
            payload, address = self.sock.recvfrom(65535)
        except BlockingIOError:
            return False
        self.datagrams.append(Received(time.time(), address[0], address[1], payload))
        return True

    def running(self) -> bool:
        if self.exited_at is None and self.proc is not None and self.proc.poll() is not None:
            self.exited_at = time.monotonic()
        return self.exited_at is None

    def kill(self) -> None:
        # Only while the leader is unreaped: its pid is then still our group's id.
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def result(self) -> PmacctRun:
        stdout = self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""
        stderr = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        returncode = self.proc.returncode if self.proc is not None and self.proc.returncode is not None else -1
        run = PmacctRun(self.command, returncode, stdout, stderr, 0.0, self.collector, self.datagrams,
                        version=self.spec.version, config=self.config, started_wall=self.started_wall)
        log = stdout + stderr
        sent = [int(n) for n in _SENT.findall(log)]
        run.reported_packets = sum(sent) if sent else None
        run.expired = [{k: (int(v) if k not in ("a", "b") else v) for k, v in m.groupdict().items()}
                       for m in _EXPIRED.finditer(log)]
        run.reported_flows = len(run.expired)
        records = 0
        for flow in run.expired:
            if self.spec.version == 5 and ":" in flow["a"]:
                continue  # v5 has no IPv6: pmacct expires such flows but sends nothing
            records += (flow["octets_ab"] > 0) + (flow["octets_ba"] > 0)
        run.reported_records = records
        return run


def run_pmacctd_parallel(pcap: str | Path, specs: Mapping[str, PmacctdSpec], *, binary: str | None = None,
                         timeout: float = 20.0, host: str = "127.0.0.1",
                         workdir: str | Path | None = None) -> dict[str, PmacctRun | ExporterError]:
    """Replay ``pcap`` through one pmacctd per spec, all at once; collect each one's export.

    Returns, per name, the run or the ExporterError saying why it cannot be used (pmacctd
    failed, logged an error or warning, did not finish within ``timeout``, or the
    datagrams it logged as sent did not all arrive).
    """
    binary = binary or find_tool(BINARY)
    if not binary:
        raise ExporterError("pmacctd not found")
    pcap = Path(pcap).resolve()
    own_dir = None
    if workdir is None:
        own_dir = tempfile.TemporaryDirectory(prefix="pmacctd-")
        workdir = own_dir.name
    workdir = Path(workdir)
    instances = [_Instance(name, pcap, spec, binary, workdir, host) for name, spec in specs.items()]
    out: dict[str, PmacctRun | ExporterError] = {}
    try:
        for instance in instances:
            instance.sock.setblocking(False)
            instance.start()
        deadline = time.monotonic() + timeout
        by_socket = {instance.sock: instance for instance in instances}
        # Receive while they run (nothing can overflow), until every process has exited.
        while any(instance.running() for instance in instances) and time.monotonic() < deadline:
            ready, _, _ = select.select(list(by_socket), [], [], min(0.05, max(0.0, deadline - time.monotonic())))
            for sock in ready:
                while by_socket[sock].receive():
                    pass
        for instance in instances:
            if instance.running():
                instance.kill()
                run = instance.result()
                out[instance.name] = ExporterError(f"pmacctd did not finish within {timeout} s\n{run.describe()}")
                continue
            run = instance.result()
            run.elapsed = instance.exited_at - instance.started
            trouble = _TROUBLE.findall(run.stdout + run.stderr)
            if run.returncode != 0:
                out[instance.name] = ExporterError(f"pmacctd failed\n{run.describe()}")
            elif trouble:
                out[instance.name] = ExporterError(f"pmacctd reported problems: {trouble[:5]}\n{run.describe()}")
            elif run.reported_packets is None:
                out[instance.name] = ExporterError(f"pmacctd logged no 'Sent N netflow packets' line "
                                                   f"(debug output format changed?)\n{run.describe()}")
            else:
                out[instance.name] = run
        # Everything they sent is on loopback: wait for what is missing, then for strays.
        pending = {i.sock: i for i in instances if isinstance(out[i.name], PmacctRun)}
        while time.monotonic() < deadline and any(len(i.datagrams) < out[i.name].reported_packets
                                                  for i in pending.values()):
            ready, _, _ = select.select(list(pending), [], [], max(0.0, deadline - time.monotonic()))
            for sock in ready:
                while pending[sock].receive():
                    pass
        while True:
            ready, _, _ = select.select(list(pending), [], [], 0.05)
            if not ready:
                break
            for sock in ready:
                while pending[sock].receive():
                    pass
        for instance in pending.values():
            run = out[instance.name]
            run.finished_wall = time.time()
            if len(instance.datagrams) != run.reported_packets:
                out[instance.name] = ExporterError(f"pmacctd logged {run.reported_packets} datagrams sent, "
                                                   f"{len(instance.datagrams)} arrived\n{run.describe()}")
        return out
    finally:
        for instance in instances:
            instance.kill()
            instance.sock.close()
        if own_dir is not None:
            own_dir.cleanup()


def run_pmacctd(pcap: str | Path, spec: PmacctdSpec, **kwargs) -> PmacctRun:
    """One run; raises ExporterError instead of returning it."""
    result = run_pmacctd_parallel(pcap, {"run": spec}, **kwargs)["run"]
    if isinstance(result, ExporterError):
        raise result
    return result
