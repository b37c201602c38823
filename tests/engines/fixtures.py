"""pytest fixtures for real engines.

Use them from a test module or conftest with::

    pytest_plugins = ["tests.engines.fixtures"]      # in a conftest.py
    # or
    from tests.engines.fixtures import opensearch, elasticsearch, engine_factory  # noqa: F401

* ``opensearch`` / ``elasticsearch``: session-scoped :class:`~tests.engines.Engine`
  (default versions, or ``FLOW_INGEST_OPENSEARCH_VERSION`` / ``FLOW_INGEST_ELASTICSEARCH_VERSION``).
  Shared by every test of the session: use unique index names, and do not
  ``kill()``/``restart()`` them (use ``engine_factory`` for that).
* ``engine_factory(kind, **start_engine_kwargs)``: function-scoped; starts a
  private engine (e.g. with ``data_dir=tmp_path / "data"`` for crash/restart
  tests) and stops it at teardown.

The fixtures ``pytest.skip`` only when ``FLOW_INGEST_NO_ENGINES=1``; any other
failure to fetch or start an engine is a test *error* with the engine's log tail.
"""

from __future__ import annotations

import os

import pytest

from .engine import Engine, start_engine

NO_ENGINES_ENV = "FLOW_INGEST_NO_ENGINES"
SKIP_REASON = (
    "FLOW_INGEST_NO_ENGINES=1 is set: tests that need a real OpenSearch/Elasticsearch are skipped"
)


def engines_disabled() -> bool:
    return os.environ.get(NO_ENGINES_ENV) == "1"


def require_engines() -> None:
    """Call at the top of a test that runs engines without these fixtures."""
    if engines_disabled():
        pytest.skip(SKIP_REASON)


def _session_engine(kind: str):
    require_engines()
    engine = start_engine(kind)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def opensearch() -> Engine:
    yield from _session_engine("opensearch")


@pytest.fixture(scope="session")
def elasticsearch() -> Engine:
    yield from _session_engine("elasticsearch")


@pytest.fixture
def engine_factory():
    require_engines()
    started: list[Engine] = []

    def make(kind: str, **kwargs) -> Engine:
        engine = start_engine(kind, **kwargs)
        started.append(engine)
        return engine

    yield make
    errors = []
    for engine in reversed(started):
        try:
            engine.stop()
        except Exception as e:  # noqa: BLE001 - stop all, report the first
            errors.append(e)
    if errors:
        raise errors[0]
