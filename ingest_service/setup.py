"""``flow-ingest setup``: install or upgrade pipeline, lifecycle policy, templates and the write
target, idempotently.

The core is pure: :func:`plan` compares what the engine has (as read with GETs) with what
the schema renders and returns the steps still needed.  :func:`run_setup` is the thin shell
that reads the current state, and (unless it is a dry run) performs the steps.  Every
rendered body carries a content hash, so "already installed" means byte-identical content,
not merely "exists".
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from .schema import render
from .schema.assets import desired_assets


@dataclass
class Step:
    action: str  # create | update | skip | rollover
    kind: str
    name: str
    method: str = ""
    path: str = ""
    body: dict | None = None
    params: dict = field(default_factory=dict)
    reason: str = ""

    def describe(self) -> str:
        target = f"{self.method} {self.path}" if self.method else ""
        return f"{self.action:8s} {self.kind:18s} {self.name:45s} {target} {self.reason}".rstrip()


class SetupError(RuntimeError):
    pass


def content_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _installed_hash(kind: str, current) -> str | None:
    """The content hash of what the engine has for one asset, if it was installed by us."""
    if current is None:
        return None
    if kind in ("component_template", "index_template", "ilm_policy"):
        meta = current.get("_meta") or (current.get("policy") or {}).get("_meta") or {}
        return meta.get("content_hash")
    description = current.get("description") or (current.get("policy") or {}).get("description") or ""
    marker = description.rsplit("[content ", 1)
    return marker[1].rstrip("]") if len(marker) == 2 else None


def with_hash(kind: str, body: dict) -> dict:
    """Embed the body's content hash where each asset kind can carry it."""
    body = json.loads(json.dumps(body))
    digest = content_hash(body)
    if kind in ("component_template", "index_template"):
        body.setdefault("_meta", {})["content_hash"] = digest
    elif kind == "ilm_policy":
        body["policy"].setdefault("_meta", {})["content_hash"] = digest
    elif kind == "ism_policy":
        body["policy"]["description"] = f"{body['policy'].get('description', '')} [content {digest}]".strip()
    else:  # pipeline
        body["description"] = f"{body.get('description', '')} [content {digest}]".strip()
    return body


def plan(engine: str, config: render.TargetConfig, current: dict, caps: render.Capabilities = render.FULL) -> list[Step]:
    """Steps to bring the engine to the rendered state.

    ``current`` maps (kind, name) -> the asset as the engine returns it (None when absent),
    plus ("target", name) -> True when the data stream / write alias exists, and for ISM
    policies ("ism_seq", name) -> (seq_no, primary_term) needed to update one.
    """
    steps: list[Step] = []
    template_changed = False
    for asset in desired_assets(engine, config, caps):
        kind, name = asset["kind"], asset["name"]
        body = with_hash(kind, asset["body"])
        installed = current.get((kind, name))
        wanted = content_hash(asset["body"])
        if installed is not None and _installed_hash(kind, installed) == wanted:
            steps.append(Step("skip", kind, name, reason="up to date"))
            continue
        params = {}
        if kind == "ism_policy" and installed is not None:
            seq_no, primary_term = current.get(("ism_seq", name), (None, None))
            params = {"if_seq_no": str(seq_no), "if_primary_term": str(primary_term)}
        action = "create" if installed is None else "update"
        steps.append(Step(action, kind, name, asset["method"], asset["path"], body, params,
                          "" if installed is None else "content differs"))
        if kind in ("component_template", "index_template") and installed is not None:
            template_changed = True

    exists = current.get(("target", config.name), False)
    if config.mode == "datastream":
        if exists is None:
            steps.append(Step("skip", "data_stream", config.name,
                              reason="no data stream API on this node: created by the first write"))
        elif not exists:
            steps.append(Step("create", "data_stream", config.name, "PUT", f"/_data_stream/{config.name}"))
        elif template_changed:
            steps.append(Step("rollover", "data_stream", config.name, "POST", f"/{config.name}/_rollover",
                              reason="new mappings apply from the next backing index"))
        else:
            steps.append(Step("skip", "data_stream", config.name, reason="exists"))
    elif config.mode == "alias":
        first = render.first_alias_index(config)
        if not exists:
            steps.append(Step("create", "write_alias", config.name, "PUT", f"/{first}",
                              {"aliases": {config.name: {"is_write_index": True}}}))
        elif template_changed:
            steps.append(Step("rollover", "write_alias", config.name, "POST", f"/{config.name}/_rollover",
                              reason="new mappings apply from the next index"))
        else:
            steps.append(Step("skip", "write_alias", config.name, reason="exists"))
    return steps


# -- the I/O shell -------------------------------------------------------------------

def probe_capabilities(client, engine: str) -> render.Capabilities:
    """Which optional engine features exist (minimal distributions lack some)."""
    needed = {"script", "json", "community_id"}
    nodes = client.perform("GET", "/_nodes/ingest", params={"filter_path": "nodes.*.ingest.processors"})
    processors: set[str] = set()
    if nodes.ok and isinstance(nodes.body, dict):
        for node in (nodes.body.get("nodes") or {}).values():
            processors |= {p.get("type") for p in node.get("ingest", {}).get("processors", [])}
    pipeline = needed <= processors
    if engine == "elasticsearch":
        lifecycle = client.perform("GET", "/_ilm/status").ok
    else:
        plugins = client.perform("GET", "/_cat/plugins", params={"format": "json"})
        names = {p.get("component") for p in plugins.body} if plugins.ok and isinstance(plugins.body, list) else set()
        lifecycle = "opensearch-index-management" in names
    return render.Capabilities(pipeline=pipeline, lifecycle=lifecycle)


_MISSING_HELP = {
    "pipeline": "no ingest pipeline (the node lacks ingest-common/painless): only documents normalized by "
                "flow-ingest itself get the derived fields; plain _bulk writes stay raw",
    "lifecycle": "no lifecycle policy (Elasticsearch without ILM / OpenSearch without the index-management "
                 "plugin): indices are neither rolled over nor deleted automatically",
}


def read_current(client, engine: str, config: render.TargetConfig, caps: render.Capabilities = render.FULL) -> dict:
    current: dict = {}
    for asset in desired_assets(engine, config, caps):
        kind, name = asset["kind"], asset["name"]
        response = client.perform("GET", asset["path"])
        if response.status == 404:
            current[(kind, name)] = None
            continue
        if not response.ok:
            raise SetupError(f"GET {asset['path']}: HTTP {response.status}: {response.body}")
        body = response.body
        if kind == "pipeline":
            current[(kind, name)] = body.get(name)
        elif kind == "ilm_policy":
            current[(kind, name)] = body.get(name, {}).get("policy") and {"policy": body[name]["policy"]}
        elif kind == "ism_policy":
            current[(kind, name)] = {"policy": body.get("policy", {})}
            current[("ism_seq", name)] = (body.get("_seq_no"), body.get("_primary_term"))
        elif kind == "component_template":
            items = body.get("component_templates") or []
            current[(kind, name)] = items[0]["component_template"] if items else None
        elif kind == "index_template":
            items = body.get("index_templates") or []
            current[(kind, name)] = items[0]["index_template"] if items else None
    if config.mode == "datastream":
        response = client.perform("GET", f"/_data_stream/{config.name}")
        current[("target", config.name)] = None if response.status == 405 else response.ok
    elif config.mode == "alias":
        current[("target", config.name)] = client.perform("GET", f"/_alias/{config.name}").ok
    return current


def run_setup(client, config: render.TargetConfig, *, dry_run: bool = False, out=print,
              require: tuple[str, ...] = ()) -> list[Step]:
    """Install or upgrade everything. ``require`` names capabilities whose absence is an error
    (by default a missing pipeline or lifecycle feature is skipped with a warning)."""
    engine = client.info.kind
    caps = probe_capabilities(client, engine)
    for name in caps.missing():
        if name in require:
            raise SetupError(f"the engine lacks {name} support: {_MISSING_HELP[name]}")
        out(f"WARNING: {_MISSING_HELP[name]}")
    steps = plan(engine, config, read_current(client, engine, config, caps), caps)
    for step in steps:
        out(("would " if dry_run and step.action != "skip" else "") + step.describe())
        if dry_run or step.action == "skip":
            continue
        response = client.perform(step.method, step.path, step.body, params=step.params or None)
        if not response.ok:
            raise SetupError(f"{step.method} {step.path}: HTTP {response.status}: {response.body}")
    return steps
