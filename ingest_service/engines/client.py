"""Talking to the engine: detect it with a plain ``GET /``, then use its official client.

    client = connect(EngineConfig(hosts=("https://es1:9200", "https://es2:9200"),
                                  username="flow", password="...", ca_file="ca.pem"))
    client.info            # EngineInfo: kind, version, ...
    client.bulk(body)      # pre-serialized NDJSON bytes -> parsed bulk response (dict)
    client.perform("PUT", "/_index_template/flows", {...})  # -> EngineResponse

Why detect first: elasticsearch-py refuses anything that is not Elasticsearch (it
checks the ``X-Elastic-Product`` header), and opensearch-py is the client made for
OpenSearch; a plain request tells which one to build (rules in ``detect``).

Only the clients' transports are used (connection pools, TLS, auth, multiple hosts):
bodies are already bytes, so nothing is serialized twice.  The clients' own retries
are limited to moving on to the next host after a connection error; status-based
retries are the bulk writer's business (it must know which items failed).

Errors: :class:`EngineUnavailable` when no host could be reached (connection refused,
timeout, TLS failure); :class:`EngineHTTPError` for an HTTP error status from ``bulk``.
``perform`` returns every status in an :class:`EngineResponse` instead.
"""
from __future__ import annotations

import base64
import logging
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from .detect import ELASTICSEARCH_PY, NODES_INFO_PATH, EngineInfo, UnsupportedEngine, detect_engine, root_from_nodes_info

# The clients log every non-2xx answer at WARNING, including the 404s setup expects when it
# looks for what is installed; our callers report real failures themselves.
for _noisy in ("opensearch", "elastic_transport.transport", "elasticsearch"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

# The bulk response only needs, per item, its status and error (positions are kept):
# asking for less saves the engine serializing, and us parsing, ``_index``/``_id``/
# ``_shards``/... for each of thousands of items.
BULK_FILTER_PATH = "took,errors,items.*.status,items.*.error"


class EngineUnavailable(Exception):
    """No host answered: connection refused or reset, timeout, TLS failure."""


class EngineHTTPError(Exception):
    """The engine answered a request with an error status."""

    def __init__(self, status: int, body: Any, message: str | None = None):
        super().__init__(message or f"HTTP {status}: {_short(body)}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class EngineConfig:
    hosts: tuple[str, ...] = ("http://127.0.0.1:9200",)
    username: str | None = None
    password: str | None = None
    # "id:key" or the base64 form Elasticsearch hands out ("encoded").
    api_key: str | None = None
    ca_file: str | None = None  # PEM bundle to verify the engine's certificate with
    verify_certs: bool = True
    client_cert: str | None = None  # PEM, for engines that want client certificates
    client_key: str | None = None
    request_timeout: float = 60.0  # a bulk request of several MiB on a busy engine takes a while
    detect_timeout: float = 10.0
    max_connections: int = 8  # per host; at least the writer's requests in flight
    http_compress: bool = False  # gzip request bodies: less bandwidth, more CPU
    expect_kind: str | None = None  # "opensearch"/"elasticsearch": refuse the other one

    def __post_init__(self):
        if isinstance(self.hosts, str):
            object.__setattr__(self, "hosts", (self.hosts,))
        if not self.hosts:
            raise ValueError("EngineConfig.hosts is empty")
        object.__setattr__(self, "hosts", tuple(_normalize_host(h) for h in self.hosts))
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")

    @property
    def authorization(self) -> str | None:
        """The Authorization header value, if any (API key wins over basic auth)."""
        if self.api_key:
            return f"ApiKey {_encoded_api_key(self.api_key)}"
        if self.username is not None:
            pair = f"{self.username}:{self.password}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        return None


@dataclass(frozen=True)
class EngineResponse:
    status: int
    body: Any  # parsed JSON when the engine answered JSON, else text; None for HEAD

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _normalize_host(host: str) -> str:
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = "http://" + host
    return host


def _encoded_api_key(api_key: str) -> str:
    if ":" in api_key:
        return base64.b64encode(api_key.encode()).decode()
    return api_key


def _short(body: Any, limit: int = 300) -> str:
    text = body if isinstance(body, str) else repr(body)
    return text if len(text) <= limit else text[:limit] + "..."


def _ssl_context(config: EngineConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_file)
    if not config.verify_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.client_cert:
        context.load_cert_chain(config.client_cert, config.client_key)
    return context


# -- detection ----------------------------------------------------------------------


def _get(config: EngineConfig, url: str) -> tuple[int, bytes, dict]:
    """Plain GET: (status, body, headers); raises OSError/URLError when nothing answers."""
    request = urllib.request.Request(url, method="GET", headers={"Accept": "application/json"})
    if config.authorization:
        request.add_header("Authorization", config.authorization)
    context = _ssl_context(config) if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(request, timeout=config.detect_timeout, context=context) as response:
            return response.status, response.read(), dict(response.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers.items())


def _json(host: str, raw: bytes):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UnsupportedEngine(f"{host}: did not answer JSON: {raw[:200]!r}") from None


def probe(config: EngineConfig) -> EngineInfo:
    """``GET /`` on each host in turn until one answers; classify the answer."""
    failures = []
    for host in config.hosts:
        try:
            status, raw, headers = _get(config, host + "/")
            if status in (404, 405):  # no root handler on this node: ask the nodes info API
                status, raw, headers = _get(config, host + NODES_INFO_PATH)
                if status == 200:
                    raw = orjson.dumps(root_from_nodes_info(_json(host, raw), headers))
        except (OSError, urllib.error.URLError) as exc:  # refused, timeout, TLS
            failures.append(f"{host}: {getattr(exc, 'reason', exc)}")
            continue
        if status in (401, 403):
            raise EngineHTTPError(status, raw.decode(errors="replace"),
                                  f"{host}: GET / -> {status}: check the credentials")
        if status != 200:
            failures.append(f"{host}: HTTP {status}")
            continue
        info = detect_engine(_json(host, raw), headers)
        if config.expect_kind and info.kind != config.expect_kind:
            raise UnsupportedEngine(f"{host}: expected {config.expect_kind}, found {info.describe()}")
        return info
    raise EngineUnavailable("no engine answered: " + "; ".join(failures))


def connect(config: EngineConfig) -> "EngineClient":
    info = probe(config)
    if info.client_library == ELASTICSEARCH_PY:
        return _ElasticsearchClient(config, info)
    return _OpenSearchClient(config, info)


# -- the clients --------------------------------------------------------------------


class EngineClient:
    """What the rest of the service needs from an engine; one subclass per client library."""

    def __init__(self, config: EngineConfig, info: EngineInfo):
        self.config = config
        self.info = info

    def bulk(self, body: bytes, *, params: Mapping[str, str] | None = None) -> dict:
        """POST /_bulk with a ready NDJSON body; the parsed response (``errors``, ``items``)."""
        query = {"filter_path": BULK_FILTER_PATH}
        if params:
            query.update(params)
        response = self._request("POST", "/_bulk", body, query, ndjson=True)
        if not response.ok:
            raise EngineHTTPError(response.status, response.body)
        if not isinstance(response.body, dict):
            raise EngineHTTPError(response.status, response.body, f"unexpected bulk response: {_short(response.body)}")
        return response.body

    def perform(self, method: str, path: str, body: Any = None, *,
                params: Mapping[str, str] | None = None) -> EngineResponse:
        """Any request, for setup code (templates, ILM/ISM policies, ...); never raises on a status."""
        if body is not None and not isinstance(body, (bytes, str)):
            body = orjson.dumps(body)
        return self._request(method.upper(), path, body, dict(params or {}), ndjson=path.rstrip("/").endswith("_bulk"))

    def ping(self) -> bool:
        """Does the engine answer?  Any status below 500 counts: a node without a ``GET /``
        handler says 405, one that wants other credentials 401, and both are up."""
        try:
            return self.perform("GET", "/").status < 500
        except EngineUnavailable:
            return False

    _client = None  # the official client object, set by each subclass

    @property
    def native(self):
        """The official client object, for anything not covered here."""
        return self._client

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, body: bytes | str | None, params: dict,
                 *, ndjson: bool) -> EngineResponse:
        raise NotImplementedError


class _OpenSearchClient(EngineClient):
    def __init__(self, config: EngineConfig, info: EngineInfo):
        super().__init__(config, info)
        from opensearchpy import OpenSearch
        from opensearchpy.serializer import JSONSerializer

        class OrjsonSerializer(JSONSerializer):
            def loads(self, s):
                return orjson.loads(s)

            def dumps(self, data):
                if isinstance(data, (str, bytes)):
                    return data
                return orjson.dumps(data)

        headers = {"authorization": config.authorization} if config.api_key else {}
        self._client = OpenSearch(
            hosts=list(config.hosts),
            http_auth=(config.username, config.password) if config.username is not None and not config.api_key else None,
            headers=headers,
            verify_certs=config.verify_certs,
            ca_certs=config.ca_file,
            client_cert=config.client_cert,
            client_key=config.client_key,
            ssl_show_warn=False,
            timeout=config.request_timeout,
            max_retries=len(config.hosts) - 1,  # only to fail over to the next host
            retry_on_status=(),
            retry_on_timeout=False,
            pool_maxsize=config.max_connections,
            http_compress=config.http_compress,
            serializer=OrjsonSerializer(),
        )
        from opensearchpy.exceptions import ConnectionError as OsConnectionError, TransportError

        self._connection_error = OsConnectionError
        self._transport_error = TransportError

    def _request(self, method, path, body, params, *, ndjson):
        headers = {"content-type": "application/x-ndjson" if ndjson else "application/json"}
        try:
            result = self._client.transport.perform_request(method, path, params=params or None,
                                                            body=body, headers=headers)
        except self._connection_error as exc:
            raise EngineUnavailable(f"{self.config.hosts}: {exc}") from exc
        except self._transport_error as exc:
            if not isinstance(exc.status_code, int):
                raise EngineUnavailable(str(exc)) from exc
            return EngineResponse(exc.status_code, exc.info)
        if method == "HEAD":  # the transport reduces HEAD to a bool
            return EngineResponse(200 if result else 404, None)
        # opensearch-py hides a success status; 200 stands for any 2xx.
        return EngineResponse(200, result)


class _ElasticsearchClient(EngineClient):
    def __init__(self, config: EngineConfig, info: EngineInfo):
        super().__init__(config, info)
        from elasticsearch import ApiError, Elasticsearch
        from elasticsearch.serializer import JsonSerializer
        from elastic_transport import TransportError

        class OrjsonSerializer(JsonSerializer):
            def json_dumps(self, data):
                return orjson.dumps(data, default=self.default)

            def json_loads(self, data):
                return orjson.loads(data)

        class BytesNdjsonSerializer(OrjsonSerializer):
            # Our bulk bodies are complete NDJSON bytes: send them as they are
            # (the library's NDJSON serializer would copy them twice).
            mimetype = "application/x-ndjson"

        compat = info.media_type_version
        # elasticsearch-py rewrites application/json and x-ndjson into its own
        # compatible-with=8; a 7.x server needs compatible-with=7 spelled out.
        if compat == 7:
            self._json_type = "application/vnd.elasticsearch+json; compatible-with=7"
            self._ndjson_type = "application/vnd.elasticsearch+x-ndjson; compatible-with=7"
        else:
            self._json_type = "application/json"
            self._ndjson_type = "application/x-ndjson"
        options = {}
        if config.api_key:
            options["api_key"] = _encoded_api_key(config.api_key)
        elif config.username is not None:
            options["basic_auth"] = (config.username, config.password)
        if config.ca_file:
            options["ca_certs"] = config.ca_file
        if config.client_cert:
            options["client_cert"] = config.client_cert
            if config.client_key:
                options["client_key"] = config.client_key
        self._client = Elasticsearch(
            list(config.hosts),
            verify_certs=config.verify_certs,
            ssl_show_warn=False,
            request_timeout=config.request_timeout,
            max_retries=len(config.hosts) - 1,
            retry_on_status=(),
            retry_on_timeout=False,
            connections_per_node=config.max_connections,
            http_compress=config.http_compress,
            headers={"accept": self._json_type},
            serializers={"application/json": OrjsonSerializer(), "application/x-ndjson": BytesNdjsonSerializer()},
            **options,
        )
        self._api_error = ApiError
        self._transport_error = TransportError

    def _request(self, method, path, body, params, *, ndjson):
        headers = {"accept": self._json_type}
        if body is not None:
            headers["content-type"] = self._ndjson_type if ndjson else self._json_type
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        try:
            response = self._client.perform_request(method, path, headers=headers, body=body)
        except self._api_error as exc:
            return EngineResponse(exc.meta.status, exc.body)
        except self._transport_error as exc:  # connection, timeout, TLS, serialization
            raise EngineUnavailable(f"{self.config.hosts}: {exc}") from exc
        if method == "HEAD":
            return EngineResponse(response.meta.status, None)
        return EngineResponse(response.meta.status, response.body)

