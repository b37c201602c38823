"""The rendered NDJSON files: one per target, one saved object per line, byte-stable.

``kibana_objects/`` holds them checked in; ``flow-ingest dashboards export DIR`` writes the
same files and a test proves that regenerating them changes nothing.
"""
from __future__ import annotations

from pathlib import Path

from .catalog import build_objects
from .objects import dumps

TARGETS = ("kibana", "opensearch-dashboards")
FILE_NAMES = {"kibana": "kibana.ndjson", "opensearch-dashboards": "opensearch-dashboards.ndjson"}
REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN_DIR = REPO_ROOT / "kibana_objects"


def render_ndjson(target: str, layout: str = "logstash") -> str:
    return "".join(dumps(obj) + "\n" for obj in build_objects(target, layout))


def rendered_files(layout: str = "logstash") -> dict[str, str]:
    """file name -> text, for every target."""
    return {FILE_NAMES[t]: render_ndjson(t, layout) for t in TARGETS}


def write_files(directory: Path, layout: str = "logstash") -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_files(layout).items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_files(directory: Path = CHECKED_IN_DIR) -> list[str]:
    """Checked-in files that differ from a fresh rendering (or are missing)."""
    return sorted(name for name, text in rendered_files().items()
                  if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != text)


def panels_table(target: str = "kibana") -> str:
    """Markdown table: dashboard -> panel -> kind -> fields, from the rendered objects."""
    from .catalog import DASHBOARD_KEYS
    from .inspect import embedded_json, field_uses, parse_ndjson
    from .objects import object_id

    objects = parse_ndjson(render_ndjson(target))
    by_id = {o["id"]: o for o in objects}
    rows = ["| dashboard | panel | kind | fields (use) |", "| --- | --- | --- | --- |"]
    for dashboard in (by_id[object_id("dashboard", key)] for key in DASHBOARD_KEYS):
        for ref in dashboard["references"]:
            panel = by_id[ref["id"]]
            kind = embedded_json(panel)["visState"]["type"] if panel["type"] == "visualization" else "saved search"
            if kind == "markdown":
                continue
            seen: dict[str, str] = {}
            for use in field_uses(panel):
                if use.use != "time":
                    seen.setdefault(use.field.removeprefix("ipfix."), use.use)
            fields_text = ", ".join(f"`{f}` ({u})" for f, u in seen.items())
            rows.append(f"| {dashboard['attributes']['title']} | {panel['attributes']['title']} | {kind} | {fields_text} |")
    return "\n".join(rows) + "\n"
