"""The OpenAPI document: valid OpenAPI 3, describes every route of the app (and nothing else),
and the running app (real gunicorn) answers schemathesis-generated requests as documented,
never with a 5xx."""
from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingest_service.web.app import WebConfig, create_app
from ingest_service.web.openapi import document
from tests.test_web import AUTH, Gunicorn

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def test_document_is_valid_openapi_3():
    spec = document()
    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_every_route_is_described_and_nothing_else(tmp_path):
    app = create_app(WebConfig(output_dir=str(tmp_path)))
    routes = {(rule.rule.replace("<", "{").replace(">", "}"), method.lower())
              for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    described = {(path, method) for path, item in document()["paths"].items() for method in item
                 if method in HTTP_METHODS}
    assert routes == described
    served = app.test_client().get("/openapi.json")
    assert served.status_code == 200 and served.json == document()


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    instance = Gunicorn(tmp_path_factory.mktemp("fuzz"), max_body_bytes=256 * 1024, max_records=200, workers=2)
    yield instance
    assert instance.stop() == 0, instance.log()


def test_fuzzed_requests_never_get_a_server_error(fuzz_target):
    """About 100 generated requests, valid and invalid per the document, checked against it."""
    api = schemathesis.openapi.from_url(fuzz_target.base + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 4  # schemathesis leaves out the schema's own URL
    statuses = Counter()
    for operation in operations:
        modes = [(schemathesis.GenerationMode.POSITIVE, 50)]
        if operation.method.lower() == "post":  # the GETs take no input there could be a wrong one of
            modes.append((schemathesis.GenerationMode.NEGATIVE, 50))
        for mode, examples in modes:
            @given(case=operation.as_strategy(mode))
            @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def exercise(case):
                response = case.call(base_url=fuzz_target.base, headers=AUTH, timeout=30)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                         content_type_conformance, response_schema_conformance])

            exercise()
    assert sum(statuses.values()) >= 50, statuses
    assert not any(status >= 500 for status in statuses)
    print("fuzzed:", dict(statuses))
