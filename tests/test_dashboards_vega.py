"""Our Vega specs run in real Vega 5 (the library Kibana and OpenSearch Dashboards embed):
each Sankey, fed the answer its query gets over records from the real go-ipfix exporter,
parses, runs and renders to SVG with every link drawn and both sides summing the same.

vega@5 comes from the npm registry into ``~/.cache/flow-ingest/vega`` on first use.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ingest_service.dashboards import translate
from ingest_service.dashboards.inspect import embedded_json, parse_ndjson
from ingest_service.dashboards.render import TARGETS, render_ndjson
from ingest_service.schema.derive import ThroughputState, derive
from tests.test_dashboards_engine import _iso, dashboard_panels, evaluate, receive_tcp

VEGA_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flow-ingest" / "vega"

RUNNER = r"""
const vega = require('vega');
const specs = JSON.parse(require('fs').readFileSync(0, 'utf8'));
(async () => {
  const out = [];
  for (const {title, spec} of specs) {
    const view = new vega.View(vega.parse({...spec, width: 600, height: 400}), {renderer: 'none'});
    await view.runAsync();
    const svg = await view.toSVG();
    const sum = (rows) => rows.reduce((a, d) => a + d.value, 0);
    out.push({title, links: view.data('links').length, left: sum(view.data('left')), right: sum(view.data('right')),
              broken: view.data('links').filter(d => !(d.width >= 0) || !d.path || d.path.includes('NaN')).length,
              labels: view.data('left').map(d => d.src).concat(view.data('right').map(d => d.dst)),
              paths: (svg.match(/<path /g) || []).length});
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def node_vega() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node/npm not installed")
    if not (VEGA_DIR / "node_modules" / "vega").exists():
        VEGA_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--silent", "--prefix", str(VEGA_DIR), "vega@5"], check=True, timeout=600,
                       capture_output=True)
    return VEGA_DIR


def test_sankeys_render_in_vega(node_vega):
    sent, _ = receive_tcp(200, seed=5)
    state = ThroughputState()
    docs = [{"@timestamp": r["export_time_min"], "ipfix": derive(dict(r["fields"]), state)} for r in sent]
    ends = [r["fields"]["flowEndSeconds"] for r in sent]
    time_range = (_iso(min(ends) - 3600), _iso(max(ends) + 3600))
    specs = []
    for target in TARGETS:
        for _, filters, panel in dashboard_panels(parse_ndjson(render_ndjson(target))):
            parsed = embedded_json(panel)
            if "vegaSpec" in parsed:
                spec = parsed["vegaSpec"]
                (_, body, _), = translate.vega_requests(spec, filters, time_range=time_range)
                source = spec["data"][0]
                source["values"] = evaluate(body, docs)  # what the engine answers (proven equal elsewhere)
                del source["url"]
                specs.append({"title": f"{target}: {panel['attributes']['title']}", "spec": spec})
    assert len(specs) == 18
    run = subprocess.run(["node", "-e", RUNNER], input=json.dumps(specs), capture_output=True, text=True,
                         cwd=node_vega, timeout=300, env={**os.environ, "NODE_PATH": str(node_vega / "node_modules")})
    assert run.returncode == 0, run.stderr
    for result in json.loads(run.stdout):
        where = result["title"]
        assert result["links"] > 0 and result["broken"] == 0, where
        assert result["left"] == result["right"] > 0, where
        assert result["paths"] >= result["links"], where
        assert "" not in result["labels"] and not any(label.endswith("/") for label in result["labels"]), where
