"""The checked-in, versioned assets: every rendered template, pipeline and policy as a file,
with a manifest saying where each goes (method + path) for people who deploy with their own
tooling.  ``flow-ingest export-assets DIR`` writes the same files; a test proves that
regenerating them changes nothing.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from . import render

REPO_ROOT = Path(__file__).resolve().parents[2]


def desired_assets(engine: str, config: render.TargetConfig, caps: render.Capabilities = render.FULL) -> list[dict]:
    """Ordered install steps for one engine and target: each {kind, name, method, path, body}."""
    names = render.component_names(engine, config)
    steps = []
    if caps.pipeline:
        steps.append({"kind": "pipeline", "name": render.pipeline_name(config.layout), "method": "PUT",
                      "path": f"/_ingest/pipeline/{render.pipeline_name(config.layout)}",
                      "body": render.render_pipeline(engine, config.layout, config.target)})
    policy = render.lifecycle_name(config)
    if not caps.lifecycle:
        pass
    elif engine == "elasticsearch":
        steps.append({"kind": "ilm_policy", "name": policy, "method": "PUT", "path": f"/_ilm/policy/{policy}",
                      "body": render.render_ilm_policy(config)})
    else:
        steps.append({"kind": "ism_policy", "name": policy, "method": "PUT", "path": f"/_plugins/_ism/policies/{policy}",
                      "body": render.render_ism_policy(config)})
    steps.append({"kind": "component_template", "name": names["mappings"], "method": "PUT",
                  "path": f"/_component_template/{names['mappings']}", "body": render.render_mappings_component(config)})
    steps.append({"kind": "component_template", "name": names["settings"], "method": "PUT",
                  "path": f"/_component_template/{names['settings']}",
                  "body": render.render_settings_component(engine, config, caps)})
    template = render.index_template_name(config)
    steps.append({"kind": "index_template", "name": template, "method": "PUT", "path": f"/_index_template/{template}",
                  "body": render.render_index_template(engine, config)})
    return steps


def _files_for(engine: str, config: render.TargetConfig) -> dict[str, dict]:
    folder = {"pipeline": f"pipelines/{engine}", "ilm_policy": "index_templates/lifecycle", "ism_policy": "index_templates/lifecycle",
              "component_template": "index_templates/component", "index_template": f"index_templates/{engine}"}
    out = {}
    for step in desired_assets(engine, config):
        prefix = {"ilm_policy": "ilm-", "ism_policy": "ism-"}.get(step["kind"], "")
        out[f"{folder[step['kind']]}/{prefix}{step['name']}.json"] = step
    return out


def all_asset_files() -> dict[str, str]:
    """relative path -> file text, for every engine, mode and layout, with default settings."""
    files: dict[str, dict] = {}
    for engine in render.ENGINES:
        for mode in render.MODES:
            for layout in ("logstash", "ecs"):
                files.update(_files_for(engine, replace(render.TargetConfig(), mode=mode, layout=layout)))
    manifest = {
        "schema_version": render.schema_version(),
        "template_version": render.template_version(),
        "note": "Install in this order: pipeline, lifecycle policy, component templates, index template. "
                "Rendered with the default target settings (7 days retention, rollover 1d / 50gb); "
                "`flow-ingest setup` renders them with yours.",
        "files": {path: {"method": step["method"], "path": step["path"]} for path, step in sorted(files.items())},
    }
    text = {path: json.dumps(step["body"], indent=2, sort_keys=True) + "\n" for path, step in files.items()}
    text["index_templates/manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    return text


def write_assets(directory: Path) -> list[Path]:
    """Write every asset under DIR/index_templates and DIR/pipelines, removing JSON files there
    that are no longer rendered (e.g. pipelines of an older schema version)."""
    expected = all_asset_files()
    for folder in ("index_templates", "pipelines"):
        root = Path(directory) / folder
        for path in root.rglob("*.json") if root.exists() else []:
            if str(path.relative_to(directory)) not in expected:
                path.unlink()
    written = []
    for relative, text in sorted(expected.items()):
        path = Path(directory) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale_assets(directory: Path = REPO_ROOT) -> list[str]:
    """Checked-in files that differ from a fresh rendering (or are missing / left over)."""
    expected = all_asset_files()
    problems = [p for p, text in expected.items() if not (directory / p).exists() or (directory / p).read_text() != text]
    for folder in ("index_templates", "pipelines"):
        for path in (directory / folder).rglob("*.json") if (directory / folder).exists() else []:
            relative = str(path.relative_to(directory))
            if relative not in expected:
                problems.append(relative)
    return sorted(problems)
