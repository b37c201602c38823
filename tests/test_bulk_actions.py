"""The pure _bulk core: action lines, chunking boundaries, reading responses.

The response shapes below were captured from real engines (OpenSearch 2.19.6 and
Elasticsearch 8.19.21, started by tests/engines) with the writer's filter_path
(``took,errors,items.*.status,items.*.error``); the 429/5xx item shapes, which a
healthy single node does not produce on demand, follow the engines' documented form.
"""
from __future__ import annotations

import orjson
import pytest

from ingest_service.bulk.actions import (
    DUPLICATE,
    OK,
    REJECT,
    RETRY,
    SPLIT,
    ActionBuilder,
    ActionSpec,
    BulkItem,
    BulkResponseMismatch,
    bulk_body,
    chunk_items,
    chunk_sizes,
    classify_item,
    classify_request_failure,
    classify_response,
    describe_error,
    document_id,
)

DOC = b'{"@timestamp":"2024-05-01T10:00:00.000Z","host":"10.0.0.1","ipfix":{"octetDeltaCount":10}}'

OPENSEARCH_2_19_MIXED = orjson.loads(
    '{"took":5,"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409,"error":{"type":'
    '"version_conflict_engine_exception","reason":"[a]: version conflict, document already exists (current '
    'version [1])","index":"shape-test","shard":"0"}}},{"create":{"status":400,"error":{"type":'
    '"mapper_parsing_exception","reason":"failed to parse field [n] of type [long] in document with id \'b\'. '
    'Preview of field\'s value: \'notanumber\'","caused_by":{"type":"illegal_argument_exception","reason":'
    '"For input string: \\"notanumber\\""}}}},{"index":{"status":201}}]}')

ELASTICSEARCH_8_19_MIXED = orjson.loads(
    '{"errors":true,"took":5,"items":[{"create":{"status":201}},{"create":{"status":409,"error":{"type":'
    '"version_conflict_engine_exception","reason":"[a]: version conflict, document already exists (current '
    'version [1])","shard":"0","index":"shape-test"}}},{"create":{"status":400,"error":{"type":'
    '"document_parsing_exception","reason":"[1:6] failed to parse field [n] of type [long] in document with '
    'id \'b\'. Preview of field\'s value: \'notanumber\'","caused_by":{"type":"illegal_argument_exception",'
    '"reason":"For input string: \\"notanumber\\""}}}},{"index":{"status":201}}]}')

# Unfiltered forms (what a client without filter_path gets): the extra keys must not matter.
ELASTICSEARCH_REJECTED_EXECUTION = {
    "took": 3, "errors": True, "items": [
        {"index": {"_index": "flow", "_id": "1", "_version": 1, "result": "created", "status": 201,
                   "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": 0, "_primary_term": 1}},
        {"index": {"_index": "flow", "_id": "2", "status": 429, "error": {
            "type": "es_rejected_execution_exception",
            "reason": "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
                      "replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1024, max_coordinating_and_primary_bytes=0]"}}},
        {"index": {"_index": "flow", "_id": "3", "status": 503, "error": {
            "type": "unavailable_shards_exception",
            "reason": "[flow][0] primary shard is not active Timeout: [1m]"}}},
        {"create": {"_index": "flow", "_id": "4", "status": 429, "error": {
            "type": "cluster_block_exception",
            "reason": "index [flow] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage "
                      "watermark, index has read-only-allow-delete block];"}}},
    ]}
OPENSEARCH_REJECTED_EXECUTION = {
    "took": 2, "errors": True, "items": [
        {"index": {"status": 429, "error": {"type": "rejected_execution_exception",
                                            "reason": "rejected execution of primary operation"}}},
        {"index": {"status": 201}},
    ]}


# -- action lines -----------------------------------------------------------------


def test_action_line_create_with_fixed_index():
    builder = ActionBuilder(ActionSpec("flows"))
    assert builder.action(DOC) == b'{"create":{"_index":"flows"}}'


def test_action_line_index_with_id_and_pipeline():
    builder = ActionBuilder(ActionSpec("flows", op_type="index", pipeline="geoip", document_ids=True))
    action = orjson.loads(builder.action(DOC))
    assert action == {"index": {"_index": "flows", "_id": document_id(DOC), "pipeline": "geoip"}}


def test_daily_index_takes_the_day_of_the_timestamp():
    builder = ActionBuilder(ActionSpec("flow-%{+YYYY.MM.dd}"))
    assert orjson.loads(builder.action(DOC)) == {"create": {"_index": "flow-2024.05.01"}}
    other = b'{"@timestamp":"2023-12-31T23:59:59.999Z","x":1}'
    assert orjson.loads(builder.action(other))["create"]["_index"] == "flow-2023.12.31"


def test_index_names_are_json_escaped():
    builder = ActionBuilder(ActionSpec('we"ird'))
    assert orjson.loads(builder.action(DOC)) == {"create": {"_index": 'we"ird'}}


def test_document_ids_are_deterministic_and_distinct():
    assert document_id(DOC) == document_id(bytes(DOC))
    assert document_id(DOC) != document_id(DOC.replace(b"10}", b"11}"))
    assert len(document_id(DOC)) == 22 and "=" not in document_id(DOC)


def test_spec_validation():
    with pytest.raises(ValueError):
        ActionSpec("flows", op_type="update")
    with pytest.raises(ValueError):
        ActionSpec("")
    with pytest.raises(ValueError):
        ActionSpec("flow-%{host}")


def test_bulk_body_is_ndjson_with_final_newline():
    items = [BulkItem(b'{"create":{"_index":"a"}}', b'{"n":1}'), BulkItem(b'{"create":{"_index":"a"}}', b'{"n":2}')]
    body = bulk_body(items)
    assert body == b'{"create":{"_index":"a"}}\n{"n":1}\n{"create":{"_index":"a"}}\n{"n":2}\n'
    assert sum(item.size for item in items) == len(body)


# -- chunking -----------------------------------------------------------------------


def test_chunks_by_count():
    assert list(chunk_sizes([10] * 7, max_docs=3, max_bytes=10**6)) == [(0, 3), (3, 6), (6, 7)]


def test_chunk_exactly_at_byte_limit_stays_whole():
    assert list(chunk_sizes([10, 10, 10], max_docs=100, max_bytes=30)) == [(0, 3)]


def test_chunk_one_byte_over_the_limit_splits():
    assert list(chunk_sizes([10, 10, 11], max_docs=100, max_bytes=30)) == [(0, 2), (2, 3)]


def test_oversized_item_goes_alone():
    assert list(chunk_sizes([5, 100, 5], max_docs=100, max_bytes=30)) == [(0, 1), (1, 2), (2, 3)]


def test_empty_and_invalid_chunking():
    assert list(chunk_sizes([], 10, 10)) == []
    with pytest.raises(ValueError):
        list(chunk_sizes([1], 0, 10))


def test_chunk_items_keeps_order_and_everything():
    items = [BulkItem(b'{"index":{}}', b'{"n":%d}' % n) for n in range(25)]
    chunks = list(chunk_items(items, max_docs=10, max_bytes=10**6))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [i for c in chunks for i in c] == items


# -- responses ------------------------------------------------------------------------


@pytest.mark.parametrize("response", [OPENSEARCH_2_19_MIXED, ELASTICSEARCH_8_19_MIXED], ids=["opensearch", "elasticsearch"])
def test_real_mixed_response(response):
    outcome = classify_response(response, 4)
    assert outcome.ok == 2
    assert outcome.duplicates == 1
    assert outcome.acknowledged == 3
    assert outcome.retry == []
    [rejection] = outcome.rejected
    assert rejection.position == 2 and rejection.status == 400
    assert "failed to parse field [n]" in rejection.reason
    assert "illegal_argument_exception" in rejection.reason


def test_retryable_items_elasticsearch():
    outcome = classify_response(ELASTICSEARCH_REJECTED_EXECUTION, 4)
    assert outcome.ok == 1
    assert outcome.retry == [1, 2, 3]
    assert outcome.retry_reasons == {"es_rejected_execution_exception": 1, "unavailable_shards_exception": 1,
                                     "cluster_block_exception": 1}
    assert outcome.rejected == []


def test_retryable_items_opensearch():
    outcome = classify_response(OPENSEARCH_REJECTED_EXECUTION, 2)
    assert outcome.retry == [0] and outcome.ok == 1


def test_no_errors_fast_path():
    response = {"took": 1, "errors": False, "items": [{"create": {"status": 201}}] * 3}
    outcome = classify_response(response, 3)
    assert outcome.ok == 3 and not outcome.retry and not outcome.rejected


def test_count_mismatch_is_refused():
    with pytest.raises(BulkResponseMismatch):
        classify_response({"errors": False, "items": [{"create": {"status": 201}}]}, 2)
    with pytest.raises(BulkResponseMismatch):
        classify_response({"errors": True}, 1)
    with pytest.raises(BulkResponseMismatch):
        classify_response({"errors": True, "items": [{"create": {}}]}, 1)


@pytest.mark.parametrize("op,status,error,verdict", [
    ("create", 201, None, OK),
    ("index", 200, None, OK),
    ("create", 409, {"type": "version_conflict_engine_exception"}, DUPLICATE),
    ("index", 409, {"type": "version_conflict_engine_exception"}, REJECT),  # index never conflicts without versions
    ("index", 429, {"type": "es_rejected_execution_exception"}, RETRY),
    ("index", 500, {"type": "exception"}, RETRY),
    ("index", 503, {"type": "unavailable_shards_exception"}, RETRY),
    ("index", 400, {"type": "mapper_parsing_exception"}, REJECT),
    ("index", 400, {"type": "illegal_argument_exception"}, REJECT),
    ("create", 404, {"type": "index_not_found_exception"}, REJECT),
    ("index", 403, {"type": "cluster_block_exception"}, RETRY),  # older engines: read-only block as 403
])
def test_classify_item(op, status, error, verdict):
    assert classify_item(op, status, error) == verdict


@pytest.mark.parametrize("status,verdict", [(413, SPLIT), (400, SPLIT), (429, RETRY), (500, RETRY),
                                            (502, RETRY), (503, RETRY), (401, RETRY), (403, RETRY)])
def test_classify_request_failure(status, verdict):
    assert classify_request_failure(status) == verdict


def test_describe_error():
    assert describe_error(400, {"type": "x", "reason": "y"}) == "400 x: y"
    assert describe_error(413, "too big") == "413 too big"
    assert describe_error(500, None) == "500"
