"""Engine detection from ``GET /`` (pure): bodies as the engines send them."""
from __future__ import annotations

import pytest

from ingest_service.engines.client import EngineConfig
from ingest_service.engines.detect import (
    ELASTICSEARCH,
    ELASTICSEARCH_PY,
    OPENSEARCH,
    OPENSEARCH_PY,
    UnsupportedEngine,
    detect_engine,
    root_from_nodes_info,
)

OPENSEARCH_2 = {
    "name": "node-1", "cluster_name": "c", "cluster_uuid": "u",
    "version": {"distribution": "opensearch", "number": "2.19.6", "build_type": "zip", "build_hash": "h",
                "build_date": "2025-01-01T00:00:00Z", "build_snapshot": False, "lucene_version": "9.12.1",
                "minimum_wire_compatibility_version": "7.10.0", "minimum_index_compatibility_version": "7.0.0"},
    "tagline": "The OpenSearch Project: https://opensearch.org/",
}
OPENSEARCH_1_COMPAT = {  # compatibility.override_main_response_version: true
    "name": "n", "cluster_name": "c",
    "version": {"distribution": "opensearch", "number": "7.10.2", "build_type": "tar", "lucene_version": "8.10.1",
                "minimum_wire_compatibility_version": "6.8.0", "minimum_index_compatibility_version": "6.0.0-beta1"},
    "tagline": "The OpenSearch Project: https://opensearch.org/",
}
ELASTICSEARCH_8 = {
    "name": "n", "cluster_name": "c",
    "version": {"number": "8.19.21", "build_flavor": "default", "build_type": "zip", "lucene_version": "9.12.2",
                "minimum_wire_compatibility_version": "7.17.0", "minimum_index_compatibility_version": "7.0.0"},
    "tagline": "You Know, for Search",
}
ELASTICSEARCH_7_17 = {"name": "n", "version": {"number": "7.17.29", "build_flavor": "default", "build_type": "tar"},
                      "tagline": "You Know, for Search"}
ELASTICSEARCH_9 = {"name": "n", "version": {"number": "9.1.0", "build_flavor": "default"}, "tagline": "You Know, for Search"}
ELASTICSEARCH_7_10_OSS = {"name": "n", "version": {"number": "7.10.2", "build_flavor": "oss", "build_type": "tar"},
                          "tagline": "You Know, for Search"}
PRODUCT = {"X-Elastic-Product": "Elasticsearch"}


def test_opensearch_2():
    info = detect_engine(OPENSEARCH_2, {"content-type": "application/json"})
    assert (info.kind, info.version, info.compatibility_mode) == (OPENSEARCH, (2, 19, 6), False)
    assert info.client_library == OPENSEARCH_PY and info.media_type_version is None
    assert info.supports_data_streams


def test_opensearch_in_compatibility_mode():
    info = detect_engine(OPENSEARCH_1_COMPAT, {})
    assert info.kind == OPENSEARCH and info.compatibility_mode
    assert "compatibility mode" in info.describe()


def test_elasticsearch_8_with_product_header():
    info = detect_engine(ELASTICSEARCH_8, PRODUCT)
    assert (info.kind, info.version, info.build_flavor) == (ELASTICSEARCH, (8, 19, 21), "default")
    assert info.client_library == ELASTICSEARCH_PY and info.media_type_version == 8


def test_elasticsearch_7_17_needs_compatible_with_7():
    info = detect_engine(ELASTICSEARCH_7_17, {"x-elastic-product": "Elasticsearch"})
    assert info.client_library == ELASTICSEARCH_PY and info.media_type_version == 7


def test_elasticsearch_9_speaks_compatible_with_8():
    assert detect_engine(ELASTICSEARCH_9, PRODUCT).media_type_version == 8


def test_elasticsearch_oss_without_header_goes_through_opensearch_py():
    info = detect_engine(ELASTICSEARCH_7_10_OSS, {})
    assert info.kind == ELASTICSEARCH and info.client_library == OPENSEARCH_PY
    assert not info.supports_data_streams


@pytest.mark.parametrize("body,headers", [
    ({"version": {"number": "6.8.23", "build_flavor": "default"}, "tagline": "You Know, for Search"}, {}),
    ({"version": {"number": "10.0.0", "build_flavor": "default"}}, PRODUCT),
    ({"version": {"number": "8.1.0", "build_flavor": "default"}}, {}),  # 8.x always sends the header
    ({"version": {"number": "1.2.3"}, "tagline": "something else"}, {}),
    ({"status": "ok"}, {}),
    ("not json object", {}),
    ({"version": {"number": "x.y", "distribution": "opensearch"}}, {}),
])
def test_unsupported(body, headers):
    with pytest.raises(UnsupportedEngine):
        detect_engine(body, headers)


def test_nodes_info_fallback_elasticsearch():
    nodes = {"cluster_name": "c", "nodes": {"abc": {"version": "8.19.21", "build_flavor": "default", "build_type": "zip"}}}
    info = detect_engine(root_from_nodes_info(nodes, PRODUCT), PRODUCT)
    assert info.kind == ELASTICSEARCH and info.version == (8, 19, 21) and info.cluster_name == "c"


def test_nodes_info_fallback_opensearch():
    nodes = {"cluster_name": "c", "nodes": {"abc": {"version": "2.19.6", "build_type": "zip"}}}
    assert detect_engine(root_from_nodes_info(nodes, {}), {}).kind == OPENSEARCH


def test_config_normalizes_hosts_and_auth():
    config = EngineConfig(hosts="127.0.0.1:9200/", username="u", password="p")
    assert config.hosts == ("http://127.0.0.1:9200",)
    assert config.authorization == "Basic dTpw"
    keyed = EngineConfig(api_key="id:secret", username="u", password="p")
    assert keyed.authorization == "ApiKey aWQ6c2VjcmV0"  # the API key wins
    assert EngineConfig(api_key="aWQ6c2VjcmV0").authorization == "ApiKey aWQ6c2VjcmV0"
    with pytest.raises(ValueError):
        EngineConfig(username="u")
