"""``flow-ingest dashboards install | export | check``.

The lead wires it into ``ingest_service/cli.py`` with one line in ``build_parser``::

    add_dashboards_arguments(sub)   # from .dashboards.cli import add_dashboards_arguments
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_dashboards_arguments(subparsers) -> argparse.ArgumentParser:
    env = os.environ.get
    parser = subparsers.add_parser("dashboards", help="Kibana / OpenSearch Dashboards saved objects: install, export, check")
    sub = parser.add_subparsers(dest="dashboards_command", required=True)

    install = sub.add_parser("install", help="import the dashboards through the Saved Objects API (overwrites ours)")
    install.add_argument("--url", default=env("FLOW_INGEST_DASHBOARDS_URL"),
                         help="Kibana or OpenSearch Dashboards base URL (env FLOW_INGEST_DASHBOARDS_URL)")
    install.add_argument("--target", choices=("kibana", "opensearch-dashboards"), default=env("FLOW_INGEST_DASHBOARDS_TARGET"),
                         help="which product answers (default: ask GET /api/status)")
    install.add_argument("--username", default=env("FLOW_INGEST_DASHBOARDS_USERNAME"))
    install.add_argument("--password", default=env("FLOW_INGEST_DASHBOARDS_PASSWORD"))
    install.add_argument("--api-key", default=env("FLOW_INGEST_DASHBOARDS_API_KEY"), help="Kibana API key: id:key or encoded")
    install.add_argument("--space", default=env("FLOW_INGEST_DASHBOARDS_SPACE"), help="Kibana space id")
    install.add_argument("--tenant", default=env("FLOW_INGEST_DASHBOARDS_TENANT"),
                         help="OpenSearch Dashboards security tenant (global, private, or a tenant name)")
    install.add_argument("--data-source-id", default=env("FLOW_INGEST_DASHBOARDS_DATA_SOURCE"),
                         help="OpenSearch Dashboards data source id (multiple data sources)")
    install.add_argument("--ca-file", default=env("FLOW_INGEST_DASHBOARDS_CA_FILE"), help="PEM CA bundle for https")
    install.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    install.add_argument("--layout", choices=("logstash", "ecs"), default=env("FLOW_INGEST_LAYOUT", "logstash"),
                         help="document layout the dashboards read (default logstash)")
    install.add_argument("--file", help="import this NDJSON file instead of the rendered objects")
    install.add_argument("--no-overwrite", action="store_true", help="fail on objects that exist instead of replacing them")
    install.set_defaults(func=run_install)

    export = sub.add_parser("export", help="write kibana.ndjson and opensearch-dashboards.ndjson to DIR")
    export.add_argument("directory")
    export.add_argument("--layout", choices=("logstash", "ecs"), default="logstash")
    export.set_defaults(func=run_export)

    check = sub.add_parser("check", help="check the fields an NDJSON export uses against the rendered mapping")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--layout", choices=("logstash", "ecs"), default="logstash")
    check.set_defaults(func=run_check)
    return parser


def run_install(args) -> int:
    from .client import DashboardsConfig, DashboardsError, SavedObjectsClient
    from .render import render_ndjson

    if not args.url:
        print("flow-ingest dashboards install: no URL (--url or FLOW_INGEST_DASHBOARDS_URL)", file=sys.stderr)
        return 2
    try:
        config = DashboardsConfig(url=args.url, target=args.target, username=args.username, password=args.password,
                                  api_key=args.api_key, space=args.space, tenant=args.tenant,
                                  data_source_id=args.data_source_id, ca_file=args.ca_file, verify_certs=not args.insecure)
        client = SavedObjectsClient(config)
        if args.file:
            text, filename = Path(args.file).read_text(encoding="utf-8"), Path(args.file).name
        else:
            text, filename = render_ndjson(client.target, args.layout), f"flow-ingest-{client.target}.ndjson"
        result = client.import_ndjson(text, filename=filename, overwrite=not args.no_overwrite)
    except (DashboardsError, ValueError, OSError) as exc:
        print(f"flow-ingest dashboards install: {exc}", file=sys.stderr)
        return 1
    print(f"{result.target}: imported {result.success_count} saved objects")
    return 0


def run_export(args) -> int:
    from .render import write_files

    for path in write_files(Path(args.directory), args.layout):
        print(path)
    return 0


def run_check(args) -> int:
    from .fields import mapping_leaves
    from .inspect import field_uses, parse_ndjson

    leaves = mapping_leaves(args.layout)
    problems = []
    for name in args.files:
        for obj in parse_ndjson(Path(name).read_text(encoding="utf-8")):
            problems += [f"{name}: {p}" for use in field_uses(obj) if (p := use.problem(leaves))]
    for problem in problems:
        print(problem)
    if not problems:
        print("every field used exists in the mapping with a type that supports the use")
    return 1 if problems else 0
