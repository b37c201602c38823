"""GET /openapi.json: the OpenAPI 3 document of this API (``openapi.json`` beside this file)."""
from __future__ import annotations

import functools
from pathlib import Path

import orjson
from flask import Blueprint, Response

DOCUMENT_PATH = Path(__file__).with_name("openapi.json")

blueprint = Blueprint("openapi", __name__)


@functools.lru_cache(maxsize=1)
def document_bytes() -> bytes:
    # Parsed and re-serialized once: a broken file fails here, not at a client.
    return orjson.dumps(orjson.loads(DOCUMENT_PATH.read_bytes()))


def document() -> dict:
    return orjson.loads(document_bytes())


@blueprint.get("/openapi.json")
def openapi_json():
    return Response(document_bytes(), status=200, mimetype="application/json")
