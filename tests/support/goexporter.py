"""Build and run ``tests/goexporter``: a real Antrea-style IPFIX exporter built on
go-ipfix v0.17.0 (the library Antrea's Flow Aggregator uses).

    records = run_goexporter("127.0.0.1:4739", "tcp", 50, seed=7)

returns what the exporter sent, one dict per data record, in the order handed to
the exporter::

    {"template_id": 256, "ipv6": False, "export_time_min": 1700000000,
     "export_time_max": 1700000000, "fields": {"flowStartSeconds": ..., ...}}

Field values: integers (uint64 exact), addresses as canonical text, strings,
UUIDs (octetArray) as lowercase hex, dateTimeSeconds as epoch seconds.

The binary is built once per source hash into
``$XDG_CACHE_HOME/flow-ingest/goexporter/<hash>/`` (default ``~/.cache``); needs Go
(>= 1.26, go-ipfix v0.17.0's minimum) and the Go module proxy for the first build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SOURCE_DIR = Path(__file__).resolve().parents[1] / "goexporter"
BINARY_NAME = "goexporter"
BUILD_TIMEOUT = 900  # seconds; a cold module download + build takes ~20-60 s

# Antrea Flow Aggregator templates: IPv4 template first, IPv6 second.
TEMPLATE_ID_V4 = 256
TEMPLATE_ID_V6 = 257

FLOW_TYPES = ("pod-to-pod", "pod-to-service", "pod-to-external", "from-external")

_build_lock = threading.Lock()
_built: Path | None = None


class GoExporterError(RuntimeError):
    """The Go exporter could not be built, or exited with an error."""


def _go() -> str:
    go = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)), None)
    if not go:
        raise GoExporterError("the Go toolchain ('go') was not found on PATH")
    return go


def _source_hash(go: str) -> str:
    h = hashlib.sha256()
    for p in sorted(SOURCE_DIR.iterdir()):
        if p.is_file() and (p.suffix == ".go" or p.name in ("go.mod", "go.sum")):
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    h.update(version.encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flow-ingest" / "goexporter"


def build_goexporter() -> Path:
    """Build the exporter (once per session, reused across sessions while the
    sources and the Go version are unchanged) and return the binary's path."""
    global _built
    with _build_lock:
        if _built is not None and _built.exists():
            return _built
        go = _go()
        out_dir = cache_root() / _source_hash(go)
        binary = out_dir / BINARY_NAME
        if not binary.exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            # Build into a temporary directory, then rename: safe with parallel workers.
            tmp_dir = tempfile.mkdtemp(prefix=".build-", dir=out_dir)
            tmp = os.path.join(tmp_dir, BINARY_NAME)
            env = dict(os.environ, CGO_ENABLED="0")
            try:
                proc = subprocess.run(
                    [go, "build", "-trimpath", "-buildvcs=false", "-o", tmp, "."],
                    cwd=SOURCE_DIR, env=env, capture_output=True, text=True,
                    timeout=BUILD_TIMEOUT, check=False)
                if proc.returncode != 0:
                    raise GoExporterError(
                        f"go build failed (exit {proc.returncode}) in {SOURCE_DIR}:\n"
                        f"{proc.stdout}{proc.stderr}")
                os.replace(tmp, binary)
            finally:
                shutil.rmtree(tmp_dir, ignore_errors=True)
        _built = binary
        return binary


def _addr_text(addr: str | tuple[str, int]) -> str:
    if isinstance(addr, str):
        return addr
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def goexporter_args(addr: str | tuple[str, int], transport: str, count: int, *,
                    ipv6: bool = False, mix: bool = False, json_mode: bool = False,
                    uuids: bool = True, tls: Any = None, client_cert: bool = True,
                    seed: int = 1, flow_types: Sequence[str] | None = None,
                    domain_id: int | None = None, out: str | Path | None = None,
                    extra_args: Sequence[str] = ()) -> list[str]:
    """The command line for one exporter run (the binary is built if needed).

    ``tls``: a :class:`tests.support.tlscerts.TLSFiles` (CA + client certificate when
    ``client_cert``), or a mapping with optional keys ``ca``, ``cert``, ``key``,
    ``server_name``. ``json_mode`` implies no UUIDs (go-ipfix cannot JSON-encode them).
    """
    if transport not in ("udp", "tcp", "tls"):
        raise ValueError(f"transport must be udp, tcp or tls, not {transport!r}")
    args = [str(build_goexporter()), "-addr", _addr_text(addr), "-transport", transport,
            "-count", str(count), "-seed", str(seed)]
    if ipv6:
        args.append("-ipv6")
    if mix:
        args.append("-mix")
    if json_mode:
        args.append("-json")
    elif uuids:
        args.append("-uuids")
    if flow_types:
        args += ["-flow-types", ",".join(flow_types)]
    if domain_id is not None:
        args += ["-domain-id", str(domain_id)]
    if transport == "tls":
        if tls is None:
            raise ValueError("transport 'tls' needs tls=")
        if isinstance(tls, Mapping):
            opts = {k: tls[k] for k in ("ca", "cert", "key", "server_name") if tls.get(k)}
        else:
            opts = {"ca": tls.ca_cert, "server_name": getattr(tls, "server_name", None)}
            if client_cert:
                opts.update(cert=tls.client_cert, key=tls.client_key)
        for k, v in opts.items():
            if v:
                args += ["-" + k.replace("_", "-"), str(v)]
    if out is not None:
        args += ["-out", str(out)]
    args += list(extra_args)
    return args


def read_out_file(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_goexporter(addr: str | tuple[str, int], transport: str, count: int, *,
                   ipv6: bool = False, mix: bool = False, json_mode: bool = False,
                   uuids: bool = True, tls: Any = None, seed: int = 1, timeout: float = 60,
                   **kwargs: Any) -> list[dict]:
    """Run the exporter to completion and return the records it sent (see module doc).

    Raises :class:`GoExporterError` (with the exporter's stderr) on a non-zero exit,
    e.g. when nothing listens on a TCP address; ``subprocess.TimeoutExpired`` after
    ``timeout`` seconds. Extra keyword arguments go to :func:`goexporter_args`
    (``flow_types``, ``domain_id``, ``client_cert``, ``extra_args``).
    """
    with tempfile.TemporaryDirectory(prefix="goexporter-") as tmp:
        out = Path(tmp) / "sent.jsonl"
        args = goexporter_args(addr, transport, count, ipv6=ipv6, mix=mix, json_mode=json_mode,
                               uuids=uuids, tls=tls, seed=seed, out=out, **kwargs)
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise GoExporterError(f"goexporter exited with {proc.returncode}: {' '.join(args)}\n"
                                  f"{proc.stderr}")
        return read_out_file(out)
