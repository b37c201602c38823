"""Engines the collector indexes into: detection (pure) and the client shell."""
from .client import (
    EngineClient,
    EngineConfig,
    EngineHTTPError,
    EngineResponse,
    EngineUnavailable,
    connect,
    probe,
)
from .detect import ELASTICSEARCH, OPENSEARCH, EngineInfo, UnsupportedEngine, detect_engine

__all__ = [
    "ELASTICSEARCH",
    "OPENSEARCH",
    "EngineClient",
    "EngineConfig",
    "EngineHTTPError",
    "EngineInfo",
    "EngineResponse",
    "EngineUnavailable",
    "UnsupportedEngine",
    "connect",
    "detect_engine",
    "probe",
]
