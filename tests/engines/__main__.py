"""CLI: ``python -m tests.engines {fetch,start,stop,list,info}``.

    python -m tests.engines fetch all                 # CI pre-warm (both default versions)
    python -m tests.engines fetch opensearch --version 2.19.6
    python -m tests.engines start opensearch          # prints URL, then "pid=... handle=..."
    python -m tests.engines stop <handle-or-pid>      # or: stop --all
    python -m tests.engines list
    python -m tests.engines info
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .engine import (
    KINDS,
    Engine,
    EngineError,
    _human,
    cache_root,
    cached_distributions,
    default_version,
    fetch,
    start_engine,
)


def _run_dir() -> Path:
    d = cache_root() / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _states() -> list[tuple[Path, dict]]:
    out = []
    for p in sorted(_run_dir().glob("*.json")):
        try:
            out.append((p, json.loads(p.read_text())))
        except (OSError, ValueError):
            continue
    return out


def _owned(state: dict) -> bool:
    """Is the recorded pid still our engine (guards against pid reuse)?"""
    try:
        cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return state["home"] in cmdline


def cmd_fetch(args) -> int:
    kinds = KINDS if args.kind == "all" else (args.kind,)
    if args.version and len(kinds) > 1:
        print("--version needs a single kind", file=sys.stderr)
        return 2
    for kind in kinds:
        home = fetch(kind, args.version, force=args.force)
        print(home)
    return 0


def cmd_start(args) -> int:
    engine = start_engine(
        args.kind,
        args.version,
        data_dir=args.data_dir,
        heap=args.heap,
        timeout=args.timeout,
        die_with_parent=False,  # the engine must outlive this command
    )
    state = engine.to_state()
    (_run_dir() / f"{engine.handle}.json").write_text(json.dumps(state, indent=2) + "\n")
    if args.json:
        print(json.dumps(state))
    else:
        print(engine.url)
        print(f"pid={engine.pid} handle={engine.handle} started_in={engine.start_seconds}s log={engine.log_path}")
    sys.stdout.flush()
    # The engine runs in its own session and outlives this process.
    engine._proc = None
    return 0


def cmd_stop(args) -> int:
    states = _states()
    if args.all:
        chosen = states
    else:
        chosen = []
        for target in args.targets:
            match = [
                (p, s)
                for p, s in states
                if target in (s["handle"], str(s["pid"]), s["url"]) or s["url"].endswith(f":{target}")
            ]
            if not match:
                print(f"no engine started by this CLI matches {target!r} (see: python -m tests.engines list)",
                      file=sys.stderr)
                return 1
            chosen.extend(match)
    if not chosen:
        print("nothing to stop", file=sys.stderr)
        return 0
    rc = 0
    for path, state in chosen:
        engine = Engine.from_state(state)
        try:
            if engine.is_running() and not _owned(state):
                print(f"pid {state['pid']} is no longer {state['handle']}; not signalling it", file=sys.stderr)
                engine.pid = None
            if args.kill:
                engine.kill()
                if not args.keep:
                    engine.cleanup()
            else:
                engine.stop(cleanup=not args.keep)
            path.unlink(missing_ok=True)
            print(f"stopped {state['handle']} (pid {state['pid']}, {state['url']})")
        except EngineError as e:
            print(f"failed to stop {state['handle']}: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_list(args) -> int:
    for path, state in _states():
        engine = Engine.from_state(state)
        alive = engine.is_running() and _owned(state)
        print(f"{state['handle']}\t{state['url']}\tpid={state['pid']}\t{'running' if alive else 'DEAD'}")
        if not alive and args.prune:
            path.unlink(missing_ok=True)
    return 0


def cmd_info(args) -> int:
    root = cache_root()
    print(f"cache: {root}")
    for info in cached_distributions():
        print(
            f"  {info['kind']} {info['version']}: {info['home']} "
            f"(downloaded {_human(info['maven_download_bytes'])}, on disk {_human(info['dist_bytes'])}, "
            f"modules: {', '.join(info['modules'])}"
            + (f"; plugins: {', '.join(info['installed_plugins'])}" if info.get("installed_plugins") else "")
            + ")"
        )
    for kind in KINDS:
        print(f"default {kind} version: {default_version(kind)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.engines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    f = sub.add_parser("fetch", help="download (via Maven) and assemble into the cache")
    f.add_argument("kind", choices=(*KINDS, "all"), nargs="?", default="all")
    f.add_argument("--version")
    f.add_argument("--force", action="store_true", help="re-assemble even if cached")
    f.set_defaults(func=cmd_fetch)

    s = sub.add_parser("start", help="start a single-node engine in the background")
    s.add_argument("kind", choices=KINDS)
    s.add_argument("--version")
    s.add_argument("--data-dir")
    s.add_argument("--heap", help="JVM heap, e.g. 512m (default) or 1g")
    s.add_argument("--timeout", type=float, help="seconds to wait for yellow health")
    s.add_argument("--json", action="store_true", help="print the full state as one JSON line")
    s.set_defaults(func=cmd_start)

    t = sub.add_parser("stop", help="stop engines started by `start`")
    t.add_argument("targets", nargs="*", help="handle, pid, url or port")
    t.add_argument("--all", action="store_true")
    t.add_argument("--kill", action="store_true", help="SIGKILL instead of a graceful stop")
    t.add_argument("--keep", action="store_true", help="keep the instance/data dirs")
    t.set_defaults(func=cmd_stop)

    ls = sub.add_parser("list", help="engines started by `start`")
    ls.add_argument("--prune", action="store_true", help="forget dead ones")
    ls.set_defaults(func=cmd_list)

    i = sub.add_parser("info", help="cache location and cached distributions")
    i.set_defaults(func=cmd_info)

    args = ap.parse_args(argv)
    if args.cmd == "stop" and not args.all and not args.targets:
        ap.error("stop: give a handle/pid or --all")
    try:
        return args.func(args)
    except EngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
