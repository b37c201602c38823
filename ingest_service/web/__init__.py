"""HTTP API of flow-ingest: JSON flow records pushed over HTTP, health, metrics, OpenAPI.

    app       WebConfig, create_app(config), run_gunicorn(config): the Flask app and its process
    ingest    POST /api/v1/flows, and the per-process writer that owns the sink
    auth      bearer tokens (constant-time comparison), required off loopback
    health    GET /healthz, /readyz, /metrics (Prometheus, gunicorn multiprocess-aware)
    openapi   GET /openapi.json (openapi.json beside this file)

The small response helpers below are shared by those modules.
"""
from __future__ import annotations

import orjson
from flask import Response, g


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)


def error_response(status: int, code: str, message: str, **extra) -> Response:
    """``{"error": code, "message": ...}``; the code is counted in /metrics."""
    g.flow_ingest_error = code
    return json_response({"error": code, "message": message, **extra}, status)
