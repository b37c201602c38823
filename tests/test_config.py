"""Configuration layering: YAML file < environment < command line; bad values name the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ingest_service.cli import build_parser, subcommand_parsers
from ingest_service.config import ConfigError, layered_defaults, settings_table

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
