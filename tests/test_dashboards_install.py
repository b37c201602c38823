"""`flow-ingest dashboards install` against a local stand-in of the Saved Objects import API
(tests/support/savedobjects_standin.py, written from the Kibana / OpenSearch Dashboards docs)."""
from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import pytest

from ingest_service.dashboards.cli import add_dashboards_arguments
from ingest_service.dashboards.client import (
    DashboardsConfig,
    DashboardsError,
    ImportFailed,
    SavedObjectsClient,
    detect_target,
    multipart_file,
    read_import_answer,
)
from ingest_service.dashboards.inspect import parse_ndjson
from ingest_service.dashboards.render import render_ndjson
from tests.support.savedobjects_standin import SavedObjectsStandIn

ANTREA = Path(__file__).resolve().parents[1].parent / "shared" / "antrea"


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="flow-ingest")
    add_dashboards_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dashboards", *argv])
    return args.func(args)


def imported_request(standin: SavedObjectsStandIn) -> dict:
    posts = [r for r in standin.requests if r["method"] == "POST"]
    assert posts, "no import request"
    return posts[-1]


@pytest.mark.parametrize("flavor", ["kibana", "opensearch-dashboards"])
def test_install_detects_the_product_and_imports_every_object(flavor):
    expected = parse_ndjson(render_ndjson(flavor))
    with SavedObjectsStandIn(flavor) as standin:
        result = SavedObjectsClient(DashboardsConfig(standin.url)).import_ndjson(render_ndjson(flavor),
                                                                                 filename=f"{flavor}.ndjson")
        assert result.target == flavor
        assert result.success_count == len(expected) == len(standin.objects())
        assert {(o["type"], o["id"]) for o in expected} == set(standin.objects())
        request = imported_request(standin)
    assert request["path"] == "/api/saved_objects/_import" and request["query"] == "overwrite=true"
    xsrf = "kbn-xsrf" if flavor == "kibana" else "osd-xsrf"
    assert request["headers"][xsrf] == "true"
    assert request["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="file"; filename="' + flavor.encode() + b'.ndjson"' in request["body"]


def test_detection_from_the_status_body_alone():
    # no kbn-name / osd-name header: the status entries and the version tell
    with SavedObjectsStandIn("opensearch-dashboards", name_header=False) as osd:
        assert SavedObjectsClient(DashboardsConfig(osd.url)).target == "opensearch-dashboards"
    with SavedObjectsStandIn("kibana", name_header=False) as kibana:
        assert SavedObjectsClient(DashboardsConfig(kibana.url)).target == "kibana"
    assert detect_target({"version": {"number": "7.10.2"}}, {}) == "kibana"
    assert detect_target({"version": {"number": "1.3.8"}}, {}) == "opensearch-dashboards"
    with pytest.raises(DashboardsError, match="--target"):
        detect_target({"name": "x"}, {})


def test_kibana_space_and_api_key():
    api_key = "AbCd:secret"
    header = "ApiKey " + base64.b64encode(api_key.encode()).decode()
    with SavedObjectsStandIn("kibana", authorization=header) as standin:
        client = SavedObjectsClient(DashboardsConfig(standin.url, api_key=api_key, space="network-team"))
        client.import_ndjson(render_ndjson("kibana"))
        assert imported_request(standin)["path"] == "/s/network-team/api/saved_objects/_import"
        assert standin.objects("network-team") and not standin.objects("default")


def test_osd_tenant_data_source_and_basic_auth():
    header = "Basic " + base64.b64encode(b"admin:pw").decode()
    with SavedObjectsStandIn("opensearch-dashboards", authorization=header) as standin:
        config = DashboardsConfig(standin.url, username="admin", password="pw", tenant="global", data_source_id="ds-1")
        SavedObjectsClient(config).import_ndjson(render_ndjson("opensearch-dashboards"))
        request = imported_request(standin)
        assert request["headers"]["securitytenant"] == "global"
        assert request["query"] == "overwrite=true&dataSourceId=ds-1"
        assert standin.objects("global")


def test_options_of_the_other_product_are_refused_before_sending():
    with SavedObjectsStandIn("opensearch-dashboards") as standin:
        with pytest.raises(DashboardsError, match="spaces are a Kibana feature"):
            SavedObjectsClient(DashboardsConfig(standin.url, space="x")).import_ndjson(render_ndjson("kibana"))
        assert not [r for r in standin.requests if r["method"] == "POST"]


def test_wrong_credentials_are_a_clear_error():
    with SavedObjectsStandIn("kibana", authorization="Basic Zm9vOmJhcg==") as standin:
        with pytest.raises(DashboardsError, match="401: check the credentials"):
            SavedObjectsClient(DashboardsConfig(standin.url, username="foo", password="wrong")).target


def test_wrong_xsrf_header_is_refused():
    # forcing --target kibana against OpenSearch Dashboards sends kbn-xsrf, which it rejects
    with SavedObjectsStandIn("opensearch-dashboards") as standin:
        client = SavedObjectsClient(DashboardsConfig(standin.url, target="kibana"))
        with pytest.raises(DashboardsError, match="HTTP 400: Request must contain a osd-xsrf header"):
            client.import_ndjson(render_ndjson("kibana"))


def test_conflicts_without_overwrite_name_every_object():
    text = render_ndjson("kibana")
    with SavedObjectsStandIn("kibana") as standin:
        client = SavedObjectsClient(DashboardsConfig(standin.url))
        client.import_ndjson(text)
        client.import_ndjson(text)  # overwrite (the default) replaces our objects
        with pytest.raises(ImportFailed) as failed:
            client.import_ndjson(text, overwrite=False)
    assert failed.value.success_count == 0
    assert len(failed.value.errors) == len(parse_ndjson(text))
    assert {e["error"]["type"] for e in failed.value.errors} == {"conflict"}
    assert "dashboard" in str(failed.value) and "conflict: an object with this id exists" in str(failed.value)


def test_missing_references_are_reported_with_the_references():
    objects = parse_ndjson(render_ndjson("kibana"))
    dashboards_only = "".join(json.dumps(o) + "\n" for o in objects if o["type"] == "dashboard")
    with SavedObjectsStandIn("kibana") as standin:
        with pytest.raises(ImportFailed) as failed:
            SavedObjectsClient(DashboardsConfig(standin.url)).import_ndjson(dashboards_only)
    errors = failed.value.errors
    assert errors and all(e["error"]["type"] == "missing_references" for e in errors)
    assert all(r["type"] in ("visualization", "search") for e in errors for r in e["error"]["references"])
    assert "missing references: visualization" in str(failed.value)


def test_partial_failure_answer_as_documented():
    answer = {"success": False, "successCount": 1,
              "errors": [{"id": "my-pattern", "type": "index-pattern", "title": "my-pattern-*",
                          "error": {"type": "conflict"}},
                         {"id": "my-vis", "type": "visualization", "title": "my-vis",
                          "error": {"type": "missing_references", "references": [{"type": "index-pattern", "id": "p"}]}},
                         {"id": "x", "type": "lens", "title": "x", "error": {"type": "unsupported_type"}}]}
    with pytest.raises(ImportFailed) as failed:
        read_import_answer(200, answer, 4, "kibana")
    text = str(failed.value)
    assert "1 of 4 objects imported" in text
    assert "index-pattern my-pattern (my-pattern-*): conflict" in text
    assert "visualization my-vis (my-vis): missing references: index-pattern p" in text
    assert "lens x (x): type not supported" in text
    # success with fewer objects than sent is a failure too
    with pytest.raises(ImportFailed, match="2 of 3"):
        read_import_answer(200, {"success": True, "successCount": 2}, 3, "kibana")
    with pytest.raises(DashboardsError, match="HTTP 415"):
        read_import_answer(415, {"statusCode": 415, "error": "Unsupported Media Type", "message": "Unsupported Media Type"},
                           1, "kibana")


def test_multipart_body_and_filename_rule():
    body, content_type = multipart_file(b'{"a":1}\n', "x.ndjson", boundary="B")
    assert content_type == "multipart/form-data; boundary=B"
    assert body.startswith(b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.ndjson"\r\n')
    assert body.endswith(b'{"a":1}\n\r\n--B--\r\n')
    with pytest.raises(ValueError, match="ndjson"):
        multipart_file(b"", "x.json")


def test_standin_enforces_the_file_extension_and_the_part_name():
    import urllib.request

    with SavedObjectsStandIn("kibana") as standin:
        for filename, name in (("objects.json", "file"), ("objects.ndjson", "upload")):
            body = (f'--B\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n\r\n{{}}\r\n--B--\r\n'
                    ).encode()
            request = urllib.request.Request(standin.url + "/api/saved_objects/_import", data=body, method="POST",
                                             headers={"kbn-xsrf": "true",
                                                      "Content-Type": "multipart/form-data; boundary=B"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 400


def test_cli_install_export_and_check(tmp_path, capsys):
    with SavedObjectsStandIn("opensearch-dashboards") as standin:
        assert cli("install", "--url", standin.url) == 0
        assert "opensearch-dashboards: imported" in capsys.readouterr().out
        assert cli("install", "--url", standin.url, "--no-overwrite") == 1
        assert "conflict" in capsys.readouterr().err
    assert cli("install", "--url", "http://127.0.0.1:9") == 1  # nothing listens: a clear error, not a traceback
    assert "flow-ingest dashboards install:" in capsys.readouterr().err
    assert cli("export", str(tmp_path)) == 0
    assert (tmp_path / "kibana.ndjson").read_text() == render_ndjson("kibana")
    assert cli("check", str(tmp_path / "kibana.ndjson"), *map(str, sorted(ANTREA.glob("*/kibana.ndjson")))) == 0
