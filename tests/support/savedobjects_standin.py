"""A local stand-in for the Saved Objects import API of Kibana and OpenSearch Dashboards,
written from their documentation (Kibana "Import objects API", 7.x-8.x; OpenSearch
Dashboards keeps the same API with ``osd-xsrf`` and adds security tenants and data sources):

* ``GET /api/status``: product name header (``kbn-name`` / ``osd-name``) and a status body
  (Kibana 8: ``status.core.elasticsearch``; OpenSearch Dashboards: ``statuses[].id`` like
  ``core:opensearch@2.x``);
* ``POST [/s/<space>]/api/saved_objects/_import[?overwrite=true]``: requires the xsrf header
  of the product, ``multipart/form-data`` with a part named ``file`` whose filename ends in
  ``.ndjson``; ``overwrite`` and ``createNewCopies`` exclude each other;
* the answer: HTTP 200 ``{"success", "successCount", "successResults", "errors"}`` where each
  error is ``{"id", "type", "title", "meta", "error": {"type": "conflict" | "missing_references"
  (with "references": [{"type", "id"}]) | "unsupported_type"}}``; other failures are
  ``{"statusCode", "error", "message"}`` with 400 / 401 / 404 / 415.

Objects are stored per space (Kibana) or per tenant (OpenSearch Dashboards), so conflicts
and missing references behave as on a real server.  Every request is recorded.
"""
from __future__ import annotations

import json
import re
import threading
import urllib.parse
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KIBANA_TYPES = {"index-pattern", "visualization", "search", "dashboard", "config", "tag", "lens", "map", "query"}
OSD_TYPES = {"index-pattern", "visualization", "search", "dashboard", "config", "query", "augment-vis",
             "visualization-visbuilder", "data-source"}
_IMPORT_PATH = re.compile(r"^(?:/s/(?P<space>[a-z0-9_-]+))?/api/saved_objects/_import$")


class SavedObjectsStandIn:
    def __init__(self, flavor: str = "kibana", *, authorization: str | None = None, name_header: bool = True,
                 version: str | None = None):
        if flavor not in ("kibana", "opensearch-dashboards"):
            raise ValueError(flavor)
        self.flavor = flavor
        self.authorization = authorization  # the exact Authorization header required, if any
        self.name_header = name_header
        self.version = version or ("8.15.0" if flavor == "kibana" else "2.19.0")
        self.xsrf_header = "kbn-xsrf" if flavor == "kibana" else "osd-xsrf"
        self.supported = KIBANA_TYPES if flavor == "kibana" else OSD_TYPES
        self.store: dict[tuple[str, str, str], dict] = {}  # (space or tenant, type, id) -> object
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "SavedObjectsStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def objects(self, scope: str | None = None) -> dict[tuple[str, str], dict]:
        scope = scope or self._default_scope()
        return {(t, i): o for (s, t, i), o in self.store.items() if s == scope}

    def _default_scope(self) -> str:
        return "default" if self.flavor == "kibana" else "global"

    # -- the API --------------------------------------------------------------------
    def status(self) -> tuple[int, dict, dict]:
        headers = {("kbn-name" if self.flavor == "kibana" else "osd-name"): "standin"} if self.name_header else {}
        if self.flavor == "kibana":
            body = {"name": "standin", "uuid": "0", "version": {"number": self.version, "build_flavor": "default"},
                    "status": {"overall": {"level": "available", "summary": "All services are available"},
                               "core": {"elasticsearch": {"level": "available"}, "savedObjects": {"level": "available"}}}}
        else:
            body = {"name": "standin", "uuid": "0", "version": {"number": self.version, "build_snapshot": False},
                    "status": {"overall": {"state": "green", "title": "Green"},
                               "statuses": [{"id": f"core:opensearch@{self.version}", "state": "green"},
                                            {"id": f"core:savedObjects@{self.version}", "state": "green"}]}}
        return 200, body, headers

    def import_objects(self, path: str, query: dict, headers: dict, body: bytes) -> tuple[int, dict]:
        match = _IMPORT_PATH.match(path)
        if not match or (match.group("space") and self.flavor != "kibana"):
            return 404, _http_error(404, "Not Found", "Not Found")
        if headers.get(self.xsrf_header) is None:
            return 400, _http_error(400, "Bad Request", f"Request must contain a {self.xsrf_header} header.")
        overwrite = query.get("overwrite", ["false"])[-1] == "true"
        if overwrite and query.get("createNewCopies", ["false"])[-1] == "true":
            return 400, _http_error(400, "Bad Request", "cannot use [overwrite] with [createNewCopies]")
        if "dataSourceId" in query and self.flavor != "opensearch-dashboards":
            return 400, _http_error(400, "Bad Request", "[request query.dataSourceId]: definition for this key is missing")
        content_type = headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data") or "boundary=" not in content_type:
            return 415, _http_error(415, "Unsupported Media Type", "Unsupported Media Type")
        part = _file_part(content_type, body)
        if part is None:
            return 400, _http_error(400, "Bad Request", "[request body.file]: expected value of type [Stream] but got [undefined]")
        filename, content = part
        extension = "." + filename.rsplit(".", 1)[-1] if "." in filename else ""
        if extension != ".ndjson":
            return 400, _http_error(400, "Bad Request", f"Invalid file extension {extension}")
        try:
            incoming = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        except ValueError as exc:
            return 400, _http_error(400, "Bad Request", f"Unexpected token in JSON: {exc}")
        scope = match.group("space") or headers.get("securitytenant") or self._default_scope()
        return 200, self._apply(scope, incoming, overwrite)

    def _apply(self, scope: str, incoming: list[dict], overwrite: bool) -> dict:
        in_file = {(o.get("type"), o.get("id")) for o in incoming}
        errors, results = [], []
        for obj in incoming:
            kind, oid, title = obj.get("type"), obj.get("id"), obj.get("attributes", {}).get("title")
            entry = {"id": oid, "type": kind, "title": title, "meta": {"title": title}}
            if kind not in self.supported:
                errors.append({**entry, "error": {"type": "unsupported_type"}})
                continue
            missing = [{"type": r["type"], "id": r["id"]} for r in obj.get("references", [])
                       if (r["type"], r["id"]) not in in_file and (scope, r["type"], r["id"]) not in self.store]
            if missing:
                errors.append({**entry, "error": {"type": "missing_references", "references": missing}})
                continue
            if (scope, kind, oid) in self.store and not overwrite:
                errors.append({**entry, "error": {"type": "conflict"}})
                continue
            self.store[(scope, kind, oid)] = obj
            results.append({"id": oid, "type": kind, "meta": {"title": title}})
        answer = {"success": not errors, "successCount": len(results), "successResults": results}
        if errors:
            answer["errors"] = errors
        return answer

    # -- HTTP plumbing --------------------------------------------------------------
    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def _record(self, body: bytes = b"") -> tuple[str, dict, dict]:
                url = urllib.parse.urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                standin.requests.append({"method": self.command, "path": url.path, "query": url.query,
                                         "headers": headers, "body": body})
                return url.path, urllib.parse.parse_qs(url.query), headers

            def _authorized(self, headers: dict) -> bool:
                if standin.authorization and headers.get("authorization") != standin.authorization:
                    self._reply(401, _http_error(401, "Unauthorized", "Unauthorized"))
                    return False
                return True

            def do_GET(self):
                path, _, headers = self._record()
                if not self._authorized(headers):
                    return
                if path != "/api/status":
                    return self._reply(404, _http_error(404, "Not Found", "Not Found"))
                status, body, extra = standin.status()
                self._reply(status, body, extra)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path, query, headers = self._record(body)
                if not self._authorized(headers):
                    return
                status, answer = standin.import_objects(path, query, headers, body)
                self._reply(status, answer)

        return Handler


def _http_error(status: int, error: str, message: str) -> dict:
    return {"statusCode": status, "error": error, "message": message}


def _file_part(content_type: str, body: bytes) -> tuple[str, bytes] | None:
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_filename() or "", part.get_payload(decode=True) or b""
    return None
