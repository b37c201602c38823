"""Importing saved objects through the Saved Objects API of Kibana or OpenSearch Dashboards.

    POST [/s/<space>]/api/saved_objects/_import?overwrite=true
    kbn-xsrf: true   (Kibana)  |  osd-xsrf: true  (OpenSearch Dashboards)
    multipart/form-data, one part named "file" with a filename ending in .ndjson

The answer is read whole: ``success``, ``successCount`` and every entry of ``errors``
(conflict, missing_references, unsupported_type, unknown); anything short of every object
imported is a :class:`ImportFailed` naming each object and why.  Which product answers is
told by ``GET /api/status`` unless the caller says it.  The request and answer shapes
follow the Kibana / OpenSearch Dashboards import API documentation; the pure parts
(detection, multipart body, answer reading) are separate from the one HTTP call.
"""
from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

KIBANA = "kibana"
OPENSEARCH_DASHBOARDS = "opensearch-dashboards"
XSRF_HEADERS = {KIBANA: "kbn-xsrf", OPENSEARCH_DASHBOARDS: "osd-xsrf"}


class DashboardsError(Exception):
    """The server could not be reached, refused the request, or answered unexpectedly."""


class ImportFailed(DashboardsError):
    """The import answered, but not every object was imported."""

    def __init__(self, message: str, success_count: int, errors: list[dict]):
        super().__init__(message)
        self.success_count = success_count
        self.errors = errors


@dataclass(frozen=True)
class DashboardsConfig:
    url: str
    target: str | None = None  # kibana | opensearch-dashboards; None: ask GET /api/status
    username: str | None = None
    password: str | None = None
    api_key: str | None = None  # Kibana: "id:key" or the encoded form
    space: str | None = None  # Kibana space
    tenant: str | None = None  # OpenSearch Dashboards security tenant ("global", "private", or a name)
    data_source_id: str | None = None  # OpenSearch Dashboards multiple data sources
    ca_file: str | None = None
    verify_certs: bool = True
    timeout: float = 60.0

    def __post_init__(self):
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if self.target not in (None, KIBANA, OPENSEARCH_DASHBOARDS):
            raise ValueError(f"target must be {KIBANA} or {OPENSEARCH_DASHBOARDS}, not {self.target!r}")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")

    @property
    def authorization(self) -> str | None:
        if self.api_key:
            key = self.api_key
            encoded = base64.b64encode(key.encode()).decode() if ":" in key else key
            return f"ApiKey {encoded}"
        if self.username is not None:
            return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return None


@dataclass(frozen=True)
class ImportResult:
    target: str
    success_count: int
    results: list[dict] = field(default_factory=list)  # successResults, when the server sends them


# -- pure parts -----------------------------------------------------------------------

def detect_target(status: dict | None, headers: dict[str, str]) -> str:
    """Kibana or OpenSearch Dashboards, from the answer of ``GET /api/status``."""
    names = {k.lower() for k in headers}
    if "osd-name" in names:
        return OPENSEARCH_DASHBOARDS
    if "kbn-name" in names:
        return KIBANA
    if isinstance(status, dict):
        text = json.dumps(status.get("status", {}))
        if "core:opensearch" in text or '"opensearch"' in text:
            return OPENSEARCH_DASHBOARDS
        if "core:elasticsearch" in text or '"elasticsearch"' in text:
            return KIBANA
        number = str(status.get("version", {}).get("number", "")) if isinstance(status.get("version"), dict) else ""
        major = number.split(".")[0]
        if major.isdigit():
            # OpenSearch Dashboards counts 1.x-3.x, Kibana 7.x and later
            return OPENSEARCH_DASHBOARDS if int(major) < 7 else KIBANA
    raise DashboardsError("cannot tell Kibana from OpenSearch Dashboards from GET /api/status: use --target")


def multipart_file(content: bytes, filename: str, boundary: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request with one part "file"."""
    if not filename.endswith(".ndjson"):
        raise ValueError("the import API only accepts files named *.ndjson")
    boundary = boundary or f"flow-ingest-{uuid.uuid4().hex}"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/ndjson\r\n\r\n").encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def import_path(config: DashboardsConfig, target: str, overwrite: bool = True) -> str:
    if config.space and target != KIBANA:
        raise DashboardsError("spaces are a Kibana feature: use --tenant with OpenSearch Dashboards")
    if (config.tenant or config.data_source_id) and target != OPENSEARCH_DASHBOARDS:
        raise DashboardsError("tenants and data sources are OpenSearch Dashboards features: use --space with Kibana")
    prefix = f"/s/{urllib.parse.quote(config.space, safe='')}" if config.space else ""
    query = {"overwrite": "true" if overwrite else "false"}
    if config.data_source_id:
        query["dataSourceId"] = config.data_source_id
    return f"{prefix}/api/saved_objects/_import?{urllib.parse.urlencode(query)}"


def describe_error(entry: dict) -> str:
    """One entry of the answer's errors[] as a sentence."""
    what = f"{entry.get('type', '?')} {entry.get('id', '?')}"
    title = entry.get("title") or entry.get("meta", {}).get("title")
    if title:
        what += f" ({title})"
    error = entry.get("error", {})
    kind = error.get("type", "unknown")
    if kind == "conflict":
        return f"{what}: conflict: an object with this id exists (import with overwrite)"
    if kind == "ambiguous_conflict":
        return f"{what}: ambiguous conflict with {len(error.get('destinations', []))} existing objects"
    if kind == "missing_references":
        refs = ", ".join(f"{r.get('type')} {r.get('id')}" for r in error.get("references", []))
        return f"{what}: missing references: {refs or '?'}"
    if kind == "unsupported_type":
        return f"{what}: type not supported by this server"
    return f"{what}: {kind}: {error.get('message') or error.get('reason') or json.dumps(error)}"


def read_import_answer(status: int, body, expected: int, target: str) -> ImportResult:
    """Check an import answer completely; raise unless all ``expected`` objects were imported."""
    if not isinstance(body, dict):
        raise DashboardsError(f"import: HTTP {status}, not a JSON object: {str(body)[:300]}")
    if status != 200:
        message = body.get("message") or body.get("error") or json.dumps(body)[:300]
        raise DashboardsError(f"import refused: HTTP {status}: {message}")
    if not isinstance(body.get("success"), bool) or not isinstance(body.get("successCount"), int):
        raise DashboardsError(f"import: unexpected answer (no success/successCount): {json.dumps(body)[:300]}")
    errors = body.get("errors") or []
    count = body["successCount"]
    if body["success"] and not errors and count == expected:
        return ImportResult(target, count, body.get("successResults", []))
    lines = [describe_error(e) for e in errors]
    if not lines:
        lines = [f"the server imported {count} of {expected} objects without saying why"]
    raise ImportFailed(f"import failed: {count} of {expected} objects imported:\n  " + "\n  ".join(lines), count, errors)


# -- the I/O shell --------------------------------------------------------------------

class SavedObjectsClient:
    def __init__(self, config: DashboardsConfig):
        self.config = config
        self._target = config.target

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, object, dict[str, str]]:
        request = urllib.request.Request(self.config.url + path, data=body, method=method,
                                         headers={"Accept": "application/json", **(headers or {})})
        if self.config.authorization:
            request.add_header("Authorization", self.config.authorization)
        context = None
        if self.config.url.startswith("https://"):
            context = ssl.create_default_context(cafile=self.config.ca_file)
            if not self.config.verify_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout, context=context) as response:
                status, raw, answer_headers = response.status, response.read(), dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            status, raw, answer_headers = exc.code, exc.read(), dict(exc.headers.items())
        except (OSError, urllib.error.URLError) as exc:
            raise DashboardsError(f"{self.config.url}: {getattr(exc, 'reason', exc)}") from exc
        if status in (401, 403):
            raise DashboardsError(f"{method} {path}: HTTP {status}: check the credentials (and the tenant or space)")
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return status, parsed, answer_headers

    @property
    def target(self) -> str:
        if self._target is None:
            status, body, headers = self._request("GET", "/api/status")
            if status != 200:
                raise DashboardsError(f"GET /api/status: HTTP {status}: {str(body)[:300]}")
            self._target = detect_target(body if isinstance(body, dict) else None, headers)
        return self._target

    def import_ndjson(self, text: str, *, filename: str = "flow-ingest.ndjson", overwrite: bool = True) -> ImportResult:
        target = self.target
        expected = sum(1 for line in text.splitlines() if line.strip())
        body, content_type = multipart_file(text.encode(), filename)
        headers = {"Content-Type": content_type, XSRF_HEADERS[target]: "true"}
        if self.config.tenant and target == OPENSEARCH_DASHBOARDS:
            headers["securitytenant"] = self.config.tenant
        status, answer, _ = self._request("POST", import_path(self.config, target, overwrite), body, headers)
        return read_import_answer(status, answer, expected, target)
