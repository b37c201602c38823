"""Configuration: one YAML file plus environment variables, layered under the command line.

Precedence: command-line flag > environment variable > YAML file > built-in default.
The keys are the long option names of ``serve`` / ``setup`` with ``_`` for ``-``
(``udp_port``, ``url``, ``retention_days``, ...); the environment variable of a key is
``FLOW_INGEST_`` + the key in capitals (``FLOW_INGEST_UDP_PORT``).  List-valued keys
(``url``, ``definitions``, ``http_tokens``) take YAML lists or comma-separated text.

This module is the only reader of the environment for those settings.  Invalid values
fail at start with a message naming the key and where it came from.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

ENV_PREFIX = "FLOW_INGEST_"
CONFIG_ENV = "FLOW_INGEST_CONFIG"  # path of the YAML file when --config is not given
# Options that are not settings (one-shot actions or the config path itself).
NOT_SETTINGS = {"help", "config", "func", "command", "dry_run", "log_level"}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Setting:
    key: str
    env: str
    default: object
    help: str
    group: str
    kind: str  # "value", "list" or "flag"


def settings_of(parser: argparse.ArgumentParser) -> list[Setting]:
    """Every configurable option of one subcommand parser, in help order."""
    out = []
    for group in parser._action_groups:  # argparse keeps no public accessor for this
        for action in group._group_actions:
            if action.dest in NOT_SETTINGS or not action.option_strings:
                continue
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                kind = "flag"
            elif isinstance(action, argparse._AppendAction):
                kind = "list"
            else:
                kind = "value"
            out.append(Setting(action.dest, ENV_PREFIX + action.dest.upper(), action.default,
                               (action.help or "").replace("%%", "%"), group.title or "", kind))
    return out


def _convert(action: argparse.Action, raw, origin: str):
    """A YAML or environment value -> what argparse would have stored for it."""
    try:
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true or false, not {raw!r}")
        if isinstance(action, argparse._AppendAction):
            items = raw if isinstance(raw, list) else [p for p in str(raw).split(",") if p.strip()]
            return [action.type(str(i)) if action.type else str(i).strip() for i in items]
        if isinstance(raw, (list, dict)):
            raise ValueError(f"expected a single value, not {type(raw).__name__}")
        value = action.type(str(raw)) if action.type else (raw if isinstance(raw, (int, float)) else str(raw))
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"{value!r} is not one of {sorted(action.choices)}")
        return value
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{origin}: {exc}") from exc


def load_yaml(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings at the top level")
    return data


def layered_defaults(parser: argparse.ArgumentParser, config_path: str | None, environ=os.environ) -> dict:
    """Defaults for ``parser`` from the YAML file, then the environment (which wins)."""
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in NOT_SETTINGS}
    values: dict = {}
    if config_path:
        for key, raw in load_yaml(config_path).items():
            normalized = str(key).replace("-", "_")
            if normalized not in actions:
                raise ConfigError(f"config file {config_path}: unknown key {key!r} (known: {', '.join(sorted(actions))})")
            values[normalized] = _convert(actions[normalized], raw, f"config file {config_path}: {key}")
    for dest, action in actions.items():
        name = ENV_PREFIX + dest.upper()
        if name in environ:
            values[dest] = _convert(action, environ[name], f"environment variable {name}")
    return values


def apply_config(parser: argparse.ArgumentParser, config_path: str | None, environ=os.environ) -> None:
    parser.set_defaults(**layered_defaults(parser, config_path, environ))


def settings_table(parser: argparse.ArgumentParser) -> str:
    """The README table: key, environment variable, default, meaning."""
    rows = ["| key (YAML) | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for s in settings_of(parser):
        default = "" if s.default in (None, [], ()) else f"`{s.default}`"
        text = " ".join(s.help.split()).replace("|", "\\|")
        rows.append(f"| `{s.key}` | `{s.env}` | {default} | {text} |")
    return "\n".join(rows)
