"""Issue 12: `mlops --target aws requests` reads the records the API Lambda stored in DynamoDB.

The records are written by the Lambda's own code (handler.handler for a refused request, and
handler.store_record with the handler's record shape, an oversized one included) into a moto table,
then read back through the CLI, as a user would on AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from test_api_lambda import rest_event
from test_cli import run

from mlops import aws
from workloads.serve.api_lambda import handler

TABLE = "mlops-dev-records"


def record(
    request_id: str, created_at: str, status: int, version: str | None, **extra: Any
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "created_at": created_at,
        "input": '{"context": "5.1, 3.5, 1.4, 0.2"}',
        "input_bytes": 34,
        "output": json.dumps({"request_id": request_id, "model_version": version}),
        "status_code": status,
        "model_version": version,
        "latency_ms": 12.5,
        "caller": {"api_key_id": "k3y1d", "source_ip": "203.0.113.7", "user_agent": "curl/8"},
        **extra,
    }


@pytest.fixture
def table(moto_aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("MLOPS_STACK", "MLOPS_STACK_OUTPUTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL_PACKAGE_GROUP_NAME", "mlops-dev-models")
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("ENDPOINT_NAME", "mlops-dev-endpoint")
    handler._CLIENTS.clear()
    boto3.client("dynamodb").create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for rec in (
        record("r-1", "2026-12-01T10:00:00.000Z", 200, "1"),
        record("r-2", "2026-12-01T10:01:00.000Z", 200, "2"),
        record("r-3", "2026-12-01T10:02:00.000Z", 502, "2"),
        # Over DynamoDB's 400 KB item limit: the Lambda stores input and output gzip-compressed.
        record("r-big", "2026-12-01T10:03:00.000Z", 200, "2", input="9" * 500_000),
    ):
        assert handler.store_record(rec, "mlops-dev-endpoint")
    yield
    handler._CLIENTS.clear()


def test_requests_on_aws_come_from_the_records_table_newest_first_with_filters(
    table: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 400 the Lambda gives itself (it checks shapes; values are the model's to judge), and stores.
    refused = handler.handler(rest_event('{"context": 5}'))
    assert refused["statusCode"] == 400
    refused_id = json.loads(refused["body"])["request_id"]

    code, listed, _ = run(capsys, "--target", "aws", "requests", "--json")
    assert code == 0
    assert [r["request_id"] for r in listed][1:] == ["r-big", "r-3", "r-2", "r-1"]
    assert listed[0]["request_id"] == refused_id and listed[0]["status_code"] == 400
    assert [
        r["request_id"] for r in run(capsys, "--target", "aws", "requests", "--status", "5xx", "--json")[1]
    ] == ["r-3"]
    by_version = run(capsys, "--target", "aws", "requests", "--version", "1", "--json")[1]
    assert [r["request_id"] for r in by_version] == ["r-1"]
    window = run(
        capsys,
        "--target",
        "aws",
        "requests",
        "--since",
        "2026-12-01T10:00:30",
        "--until",
        "2026-12-01T10:02:30",
        "--json",
    )[1]
    assert [r["request_id"] for r in window] == ["r-3", "r-2"]

    code, one, _ = run(capsys, "--target", "aws", "requests", "r-2", "--json")
    assert (code, one["status_code"], one["model_version"], one["latency_ms"]) == (0, 200, "2", 12.5)
    assert one["caller"] == {"api_key_id": "k3y1d", "source_ip": "203.0.113.7", "user_agent": "curl/8"}
    big = run(capsys, "--target", "aws", "requests", "r-big", "--json")[1]
    assert big["input"] == "9" * 500_000  # decompressed back
    code, _, err = run(capsys, "--target", "aws", "requests", "nope")
    assert (code, err) == (
        1,
        f"mlops: error: no stored request has id 'nope' in {TABLE} (see `mlops requests`)\n",
    )


def test_requests_on_aws_refuse_to_scan_a_huge_table_without_a_narrower_search(
    table: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(aws, "REQUEST_SCAN_ITEMS", 2)

    class Pages:
        """DynamoDB pages of 2 items each (moto returns the whole small table in one page)."""

        def __init__(self) -> None:
            self.calls = 0

        def scan(self, **kwargs: Any) -> dict[str, Any]:
            self.calls += 1
            return {
                "Items": [],
                "ScannedCount": 2,
                "LastEvaluatedKey": {"request_id": {"S": f"k{self.calls}"}},
            }

    pages = Pages()
    monkeypatch.setattr(aws.AwsBackend, "client", lambda self, service: pages)
    code, _, err = run(capsys, "--target", "aws", "requests")
    assert code == 1
    assert err == (
        f"mlops: error: {TABLE} holds more than 2 records; narrow the search (--since/--until, --version, "
        "--status) or read one by id (`mlops requests <id>`)\n"
    )
    assert pages.calls == 1
