"""Real single-node OpenSearch / Elasticsearch for integration tests.

    from tests.engines import start_engine
    with start_engine("opensearch") as es:
        print(es.url)

CLI: ``python -m tests.engines {fetch,start,stop,list,info} ...``; see docs/engines.md.
"""

from .engine import (
    DEFAULT_VERSIONS,
    KINDS,
    Engine,
    EngineError,
    cache_root,
    cached_distributions,
    default_version,
    fetch,
    start_engine,
)

__all__ = [
    "DEFAULT_VERSIONS",
    "KINDS",
    "Engine",
    "EngineError",
    "cache_root",
    "cached_distributions",
    "default_version",
    "fetch",
    "start_engine",
]
