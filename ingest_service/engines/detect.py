"""Which engine answers on ``GET /``: the pure rules, no I/O.

Rules, in order:

1. ``version.distribution == "opensearch"`` -> OpenSearch.  An OpenSearch 1.x node
   started with ``compatibility.override_main_response_version`` reports
   ``"number": "7.10.2"`` but keeps the distribution field: that is *compatibility
   mode*, and the real version is unknown (at least 1.0).
2. Otherwise the ``X-Elastic-Product: Elasticsearch`` response header (sent from
   7.14 on) or an Elasticsearch-shaped body (``tagline`` "You Know, for Search",
   a ``build_flavor``) -> Elasticsearch.
3. Anything else is not an engine we can index into.

A node without the ``GET /`` handler (Elasticsearch 8+ keeps it in the ``rest-root``
module, missing from minimal distributions such as the integ-test zip) answers 404/405;
``GET /_nodes/_local`` (``NODES_INFO_PATH``) then gives the same facts, turned into a
``GET /`` body by ``root_from_nodes_info``.

The client library follows from that (``client_library``): OpenSearch speaks to
opensearch-py; Elasticsearch 7.14+ with the product header to elasticsearch-py
8.x (which refuses servers without the header); an Elasticsearch without the header
(7.10.2 OSS, e.g. the legacy flavour of managed services) to opensearch-py, whose
wire protocol is 7.10's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

OPENSEARCH = "opensearch"
ELASTICSEARCH = "elasticsearch"

OPENSEARCH_PY = "opensearch-py"
ELASTICSEARCH_PY = "elasticsearch-py"

_ES_TAGLINE = "You Know, for Search"
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
# What OpenSearch 1.x reports when told to pretend to be Elasticsearch.
_OPENSEARCH_PRETEND_VERSION = (7, 10, 2)


class UnsupportedEngine(Exception):
    """The server is not OpenSearch/Elasticsearch, or a version we cannot index into."""


@dataclass(frozen=True)
class EngineInfo:
    kind: str  # OPENSEARCH or ELASTICSEARCH
    version: tuple[int, int, int]
    number: str  # version string as reported
    distribution: str | None  # "opensearch" or None (Elasticsearch reports none)
    build_flavor: str | None  # Elasticsearch: "default", "oss", "serverless"
    compatibility_mode: bool  # OpenSearch reporting 7.10.2 instead of its version
    product_header: bool  # X-Elastic-Product: Elasticsearch was sent
    cluster_name: str | None = None

    @property
    def major(self) -> int:
        return self.version[0]

    @property
    def client_library(self) -> str:
        if self.kind == ELASTICSEARCH and self.product_header:
            return ELASTICSEARCH_PY
        return OPENSEARCH_PY

    @property
    def media_type_version(self) -> int | None:
        """``compatible-with`` value elasticsearch-py must send, or None for opensearch-py.

        elasticsearch-py 8.x sends ``compatible-with=8``: 8.x and 9.x servers accept it
        (9.x through REST API compatibility); a 7.x server only knows 7.
        """
        if self.client_library != ELASTICSEARCH_PY:
            return None
        return 7 if self.major == 7 else 8

    @property
    def supports_data_streams(self) -> bool:
        if self.kind == OPENSEARCH:
            return self.compatibility_mode or self.version >= (1, 0, 0)
        return self.version >= (7, 9, 0) and self.build_flavor != "oss"

    def describe(self) -> str:
        name = "OpenSearch" if self.kind == OPENSEARCH else "Elasticsearch"
        extra = []
        if self.compatibility_mode:
            extra.append("compatibility mode, reports 7.10.2")
        if self.build_flavor and self.build_flavor != "default":
            extra.append(self.build_flavor)
        suffix = f" ({', '.join(extra)})" if extra else ""
        return f"{name} {self.number}{suffix} via {self.client_library}"


def parse_version(number: str) -> tuple[int, int, int]:
    match = _VERSION.match(number or "")
    if not match:
        raise UnsupportedEngine(f"unreadable version number {number!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


NODES_INFO_PATH = "/_nodes/_local?filter_path=cluster_name,nodes.*.version,nodes.*.build_flavor,nodes.*.build_type"


def root_from_nodes_info(body: object, headers: Mapping[str, str] | None = None) -> dict:
    """A ``GET /``-shaped body from a ``GET /_nodes/_local`` answer (see NODES_INFO_PATH)."""
    nodes = body.get("nodes") if isinstance(body, dict) else None
    if not isinstance(nodes, dict) or not nodes:
        raise UnsupportedEngine(f"no node in {str(body)[:200]!r}")
    node = next(iter(nodes.values()))
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    version = {"number": str(node.get("version", "")), "build_type": node.get("build_type")}
    if node.get("build_flavor") is not None or lowered.get("x-elastic-product", "").lower() == "elasticsearch":
        version["build_flavor"] = node.get("build_flavor", "default")
    else:  # OpenSearch nodes report no flavor
        version["distribution"] = OPENSEARCH
    return {"cluster_name": body.get("cluster_name"), "version": version}


def detect_engine(body: object, headers: Mapping[str, str] | None = None) -> EngineInfo:
    """Classify a parsed ``GET /`` body (and its response headers)."""
    if not isinstance(body, dict) or not isinstance(body.get("version"), dict):
        raise UnsupportedEngine(f"GET / did not answer like a search engine: {str(body)[:200]!r}")
    version_block = body["version"]
    number = str(version_block.get("number", ""))
    version = parse_version(number)
    distribution = version_block.get("distribution")
    flavor = version_block.get("build_flavor")
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    product_header = lowered.get("x-elastic-product", "").strip().lower() == "elasticsearch"
    cluster_name = body.get("cluster_name")

    if distribution == OPENSEARCH:
        pretending = version == _OPENSEARCH_PRETEND_VERSION
        return EngineInfo(OPENSEARCH, version, number, distribution, flavor, pretending, product_header, cluster_name)

    looks_like_es = product_header or body.get("tagline") == _ES_TAGLINE or flavor is not None
    if not looks_like_es:
        raise UnsupportedEngine(f"unknown engine (distribution={distribution!r}, tagline={body.get('tagline')!r})")
    info = EngineInfo(ELASTICSEARCH, version, number, distribution, flavor, False, product_header, cluster_name)
    check_supported(info)
    return info


def check_supported(info: EngineInfo) -> None:
    if info.kind != ELASTICSEARCH:
        return
    if info.major < 7:
        raise UnsupportedEngine(f"Elasticsearch {info.number} is too old: 7.x or later is needed (typeless bulk)")
    if info.major > 9:
        raise UnsupportedEngine(
            f"Elasticsearch {info.number}: elasticsearch-py 8.x speaks compatible-with=8, "
            "which Elasticsearch accepts up to 9.x; upgrade the client")
    if info.major >= 8 and not info.product_header:
        # 8.x always sends the header; without it something sits in between (or it is not Elasticsearch).
        raise UnsupportedEngine(f"Elasticsearch {info.number} without the X-Elastic-Product header")
