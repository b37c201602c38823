"""Configuration layering: YAML file < environment < command line; bad values name the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ingest_service.cli import build_parser, subcommand_parsers
from ingest_service.config import ConfigError, layered_defaults, settings_table
from tests.test_serve import serve  # noqa: F401 - pytest fixture

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def serve_parser():
    return subcommand_parsers(build_parser())["serve"]


def test_yaml_then_environment_then_flags(serve_parser, tmp_path):
    config = tmp_path / "flow-ingest.yaml"
    config.write_text("udp_port: 5000\nurl: [http://a:9200, http://b:9200]\nretention_days: 3\ninsecure: true\n")
    values = layered_defaults(serve_parser, str(config), {"FLOW_INGEST_UDP_PORT": "6000", "FLOW_INGEST_MODE": "alias"})
    assert values == {"udp_port": 6000, "url": ["http://a:9200", "http://b:9200"], "retention_days": 3,
                      "insecure": True, "mode": "alias"}
    serve_parser.set_defaults(**values)
    args = serve_parser.parse_args(["--udp-port", "7000"])
    assert args.udp_port == 7000 and args.retention_days == 3 and args.url == ["http://a:9200", "http://b:9200"]


def test_environment_lists_are_comma_separated(serve_parser):
    values = layered_defaults(serve_parser, None, {"FLOW_INGEST_URL": "http://a:9200,http://b:9200"})
    assert values["url"] == ["http://a:9200", "http://b:9200"]


@pytest.mark.parametrize("content, message", [
    ("bogus: 1\n", "unknown key 'bogus'"),
    ("udp_port: many\n", "udp_port"),
    ("mode: weekly\n", "mode"),
    ("- just a list\n", "mapping"),
    ("udp_port: [1, 2]\n", "single value"),
])
def test_invalid_files_name_the_key(serve_parser, tmp_path, content, message):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=message):
        layered_defaults(serve_parser, str(config), {})


def test_invalid_configuration_fails_at_start_naming_the_variable(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ingest_service.cli", "serve", "--data-dir", str(tmp_path)],
                            env={"FLOW_INGEST_UDP_WORKERS": "zero", "PATH": "/usr/bin:/bin"}, cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "FLOW_INGEST_UDP_WORKERS" in result.stderr


def test_readme_documents_every_setting(serve_parser):
    readme = (REPO / "README.md").read_text()
    assert settings_table(serve_parser) in readme, "regenerate the README settings table: python -m ingest_service.cli config-table"


def test_json_logs(serve, monkeypatch):  # noqa: F811
    """FLOW_INGEST_LOG_FORMAT=json (or --log-format json): every log line of serve and its workers is
    one JSON object; bad input is logged (rate-limited) with the exporter."""
    import json

    from tests.test_listeners import LOCAL, udp_sender, wait_for

    monkeypatch.setenv("FLOW_INGEST_LOG_FORMAT", "json")
    server = serve(tcp=False)
    udp_sender().sendto(b"\x00\x0a\x00\x05garbage", (LOCAL, server.udp_port))
    wait_for(lambda: "malformed" in server.stderr(), timeout=20, what="a log line about the bad datagram")
    assert server.stop() == 0
    entries = [json.loads(line) for line in server.stderr().splitlines() if line.strip()]
    warning = next(e for e in entries if "malformed" in e["message"])
    assert warning["level"] == "warning" and warning["logger"].startswith("flow_ingest")
    assert any(e["message"].startswith("listening on udp") for e in entries)
