"""The ``flow-ingest`` command: serve, decode, ..."""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from .config import CONFIG_ENV, ConfigError, apply_config, settings_table
from .documents import DocumentLayout, serialize, to_document
from .logging_setup import configure_logging


def _add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--definitions", action="append", default=[], metavar="YAML",
                        help="Logstash-format ipfix_definitions/netflow_definitions file adding or "
                             "overriding elements (repeatable), e.g. Antrea's ipfix.yml")
    parser.add_argument("--target", default="ipfix", help="document object the elements go under (default: ipfix)")
    parser.add_argument("--netflow-target", default=None, help="object name for NetFlow v5/v9 records (default: same as --target)")


def document_layout(args) -> DocumentLayout:
    return DocumentLayout(target=args.target, netflow_target=args.netflow_target, type=args.target)


def iter_raw_messages(data: bytes, problems: Counter):
    """Split a byte stream of back-to-back IPFIX messages (as sent over TCP)."""
    from .ipfix.decoder import ipfix_message_length

    offset = 0
    while offset + 4 <= len(data):
        try:
            length = ipfix_message_length(data[offset:offset + 4])
        except ValueError:
            problems["framing_errors"] += 1
            return
        if offset + length > len(data):
            problems["truncated_messages"] += 1
            return
        yield data[offset:offset + length]
        offset += length
    if offset != len(data):
        problems["trailing_bytes"] += len(data) - offset


def cmd_decode(args) -> int:
    from .ipfix.decoder import FlowDecoder
    from .ipfix.registry import default_registry
    from .pcapfile import CaptureError, read_datagrams

    decoder = FlowDecoder(default_registry(args.definitions))
    layout = document_layout(args)
    out = sys.stdout.buffer
    problems: Counter = Counter()
    for path in args.files:
        data_path = Path(path)
        if args.raw:
            session = ("tcp", str(data_path), 0, 0)
            for message in iter_raw_messages(data_path.read_bytes(), problems):
                for record in decoder.decode(message, session, received_at=0.0):
                    out.write(serialize(to_document(record, layout)) + b"\n")
            decoder.close_session(session)
            continue
        try:
            with open(data_path, "rb") as stream:
                for datagram in read_datagrams(stream, problems):
                    session = ("udp", datagram.src, datagram.sport, 0)
                    for record in decoder.decode(datagram.payload, session, received_at=datagram.timestamp):
                        out.write(serialize(to_document(record, layout)) + b"\n")
        except CaptureError as exc:
            print(f"flow-ingest decode: {path}: {exc}", file=sys.stderr)
            return 2
    out.flush()
    stats = {k: v for k, v in sorted((decoder.stats + problems).items())}
    if args.stats:
        print(serialize(stats).decode(), file=sys.stderr)
    return 0


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the search engine is and how to reach it."""
    group = parser.add_argument_group("search engine")
    group.add_argument("--url", action="append", default=None, metavar="URL",
                       help="engine URL; repeat for several hosts of one cluster")
    group.add_argument("--username", default=None)
    group.add_argument("--password", default=None)
    group.add_argument("--api-key", default=None, help="id:key or the encoded form")
    group.add_argument("--ca-file", default=None, help="PEM CA bundle for https engines")
    group.add_argument("--insecure", action="store_true", help="do not verify the engine's certificate")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("index target")
    group.add_argument("--mode", choices=("datastream", "alias", "daily"), default="datastream",
                       help="data stream, rollover alias with a write index, or Logstash-style daily flow-YYYY.MM.dd indices")
    group.add_argument("--name", default="flow-ipfix", help="data stream / write alias name (must start with flow-)")
    group.add_argument("--layout", choices=("logstash", "ecs"), default="logstash",
                       help="document layout: Logstash-compatible ipfix.* or ECS")
    group.add_argument("--retention-days", type=int, default=7, help="delete indices this many days after rollover")
    group.add_argument("--rollover-max-age", default="1d", help="roll over after this age")
    group.add_argument("--rollover-max-primary-shard-size", default="50gb", help="... or this primary shard size")
    group.add_argument("--replicas", type=int, default=0, help="replicas per shard")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help=f"settings file (env {CONFIG_ENV}); see the README's table")


def target_config(args):
    from .schema.render import TargetConfig

    return TargetConfig(mode=args.mode, name=args.name, layout=args.layout, target=getattr(args, "target", "ipfix"),
                        retention_days=args.retention_days, rollover_max_age=args.rollover_max_age,
                        rollover_max_primary_shard_size=args.rollover_max_primary_shard_size, replicas=args.replicas)


def engine_config(args):
    from .engines.client import EngineConfig

    urls = args.url or []
    if not urls:
        raise SystemExit("flow-ingest: no engine URL (--url, FLOW_INGEST_URL or url: in the config file)")
    return EngineConfig(hosts=tuple(urls), username=args.username, password=args.password, api_key=args.api_key,
                        ca_file=args.ca_file, verify_certs=not args.insecure)


def cmd_setup(args) -> int:
    from .engines.client import connect
    from .setup import SetupError, run_setup

    client = connect(engine_config(args))
    info = client.info
    print(f"engine: {info.kind} {'.'.join(map(str, info.version))}")
    try:
        require = tuple(x for x in (args.require or "").split(",") if x)
        run_setup(client, target_config(args), dry_run=args.dry_run, require=require)
    except SetupError as exc:
        print(f"flow-ingest setup: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_export_assets(args) -> int:
    from .schema.assets import write_assets

    for path in write_assets(Path(args.directory)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flow-ingest", description="IPFIX/NetFlow/JSON flow collector for Elasticsearch and OpenSearch")
    parser.add_argument("--log-level", default=os.environ.get("FLOW_INGEST_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING, ERROR (env FLOW_INGEST_LOG_LEVEL)")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="text (default) or one JSON object per line (env FLOW_INGEST_LOG_FORMAT)")
    sub = parser.add_subparsers(dest="command", required=True)

    decode = sub.add_parser("decode", help="decode pcap/pcapng captures (or raw IPFIX streams) to JSON documents on stdout")
    decode.add_argument("files", nargs="+", metavar="FILE")
    decode.add_argument("--raw", action="store_true", help="files hold back-to-back IPFIX messages as sent over TCP")
    decode.add_argument("--stats", action="store_true", help="print decoder counters as JSON on stderr at the end")
    _add_registry_arguments(decode)
    decode.set_defaults(func=cmd_decode)

    setup = sub.add_parser("setup", help="install or upgrade pipeline, lifecycle policy, templates and write target (idempotent)")
    add_engine_arguments(setup)
    add_target_arguments(setup)
    setup.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    add_config_argument(setup)
    setup.add_argument("--require", default="", metavar="pipeline,lifecycle",
                       help="fail instead of warning when the engine lacks ingest pipelines or ILM/ISM")
    setup.set_defaults(func=cmd_setup, target="ipfix")

    export = sub.add_parser("export-assets", help="write index templates, pipelines and lifecycle policies as files")
    export.add_argument("directory")
    export.set_defaults(func=cmd_export_assets)

    table = sub.add_parser("config-table", help="print the settings table of `serve` (README) as Markdown")
    table.set_defaults(func=lambda args: print(settings_table(subcommand_parsers(parser)["serve"])) or 0)

    from .dashboards.cli import add_dashboards_arguments

    add_dashboards_arguments(sub)

    try:
        from .service import add_serve_arguments, run_serve
    except ImportError:  # pragma: no cover - during bootstrap only
        pass
    else:
        serve = sub.add_parser("serve", help="run the listeners and write documents")
        _add_registry_arguments(serve)
        add_serve_arguments(serve)
        add_engine_arguments(serve)
        add_target_arguments(serve)
        add_config_argument(serve)
        serve.set_defaults(func=run_serve)
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def main(argv=None) -> int:
    parser = build_parser()
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config")
    known, _ = early.parse_known_args(argv)
    config_path = known.config or os.environ.get(CONFIG_ENV)
    try:
        for name in ("serve", "setup"):
            apply_config(subcommand_parsers(parser)[name], config_path)
    except ConfigError as exc:
        print(f"flow-ingest: invalid configuration: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        configure_logging(args.log_level, args.log_format)
    except ValueError as exc:
        print(f"flow-ingest: invalid configuration: {exc}", file=sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
