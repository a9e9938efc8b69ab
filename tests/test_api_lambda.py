"""The inference API Lambda, called directly with real-shaped API Gateway REST proxy events.

DynamoDB is moto; sagemaker-runtime is the handler's own client with a botocore Stubber on it, so every
call the handler makes to the endpoint is checked (a call a test did not expect fails the test).
"""

from __future__ import annotations

import ast
import base64
import gzip
import io
import json
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
import yaml
from botocore.response import StreamingBody
from botocore.stub import Stubber
from openapi_spec_validator import validate as validate_openapi

from workloads.serve.api_lambda import handler

REPO = Path(__file__).resolve().parents[1]
LAMBDA_DIR = REPO / "workloads" / "serve" / "api_lambda"
OPENAPI = REPO / "workloads" / "serve" / "openapi.yaml"
TABLE = "inference-records-test"
ENDPOINT = "iris-endpoint"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
PROBS = {"setosa": 0.97, "versicolor": 0.03, "virginica": 0.0}


# --- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
    return loaded


@pytest.fixture
def api(moto_aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """Env for the handler, a moto table, fresh clients, and a Stubber on sagemaker-runtime."""
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.delenv("MAX_BODY_BYTES", raising=False)
    monkeypatch.delenv("RECORD_TTL_DAYS", raising=False)
    handler._CLIENTS.clear()
    boto3.client("dynamodb").create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    stubber = Stubber(handler._client("sagemaker-runtime"))
    with stubber:
        yield stubber
    stubber.assert_no_pending_responses()
    handler._CLIENTS.clear()


def rest_event(
    body: str | None,
    *,
    content_type: str | None = "application/json",
    base64_encoded: bool = False,
    api_key_id: str = "k3y1d",
    source_ip: str = "203.0.113.7",
    user_agent: str = "python-requests/2.32.3",
) -> dict[str, Any]:
    """An API Gateway REST API (v1) Lambda proxy event as API Gateway sends it."""
    headers: dict[str, str] = {
        "Accept": "*/*",
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "User-Agent": user_agent,
        "X-Amzn-Trace-Id": "Root=1-67890abc-0123456789abcdef01234567",
        "X-Forwarded-For": source_ip,
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        "x-api-key": "secret-key-value",
    }
    if content_type is not None:
        headers["Content-Type"] = content_type
    return {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "a1b2c3",
            "resourcePath": "/predict",
            "httpMethod": "POST",
            "extendedRequestId": "Ab1CdEfGhIjKlMn=",
            "requestTime": "09/Apr/2025:12:34:56 +0000",
            "path": "/dev/predict",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": "dev",
            "domainPrefix": "abc123",
            "requestTimeEpoch": 1744202096000,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "apiKey": "secret-key-value",
                "apiKeyId": api_key_id,
                "sourceIp": source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": user_agent,
                "user": None,
            },
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "apiId": "abc123",
        },
        "body": body,
        "isBase64Encoded": base64_encoded,
    }


def model_answer(n_rows: int, version: str = "3") -> dict[str, Any]:
    raw = json.dumps(
        {"model_version": version, "predictions": [{"label": "setosa", "probabilities": PROBS}] * n_rows}
    ).encode()
    return {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"}


def expect_invoke(stubber: Stubber, body: str | bytes, response: dict[str, Any]) -> None:
    """The model is asked with the body as the client sent it (the model server knows the signature)."""
    stubber.add_response(
        "invoke_endpoint",
        response,
        expected_params={
            "EndpointName": ENDPOINT,
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": body.encode() if isinstance(body, str) else body,
        },
    )


def stored(request_id: str) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(TableName=TABLE, Key={"request_id": {"S": request_id}})
    found: dict[str, Any] = item["Item"]
    return found


def check_against_openapi(spec: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The answer's body against the schema the OpenAPI file gives for its status code."""
    documented = spec["paths"]["/predict"]["post"]["responses"]
    assert str(response["statusCode"]) in documented, f"status {response['statusCode']} is not documented"
    schema_ref = documented[str(response["statusCode"])]["content"]["application/json"]["schema"]
    body = json.loads(response["body"])
    jsonschema.validate(
        body,
        {**schema_ref, "components": spec["components"]},
        format_checker=jsonschema.FormatChecker(),
    )
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["headers"]["X-Request-Id"] == body["request_id"]
    assert response["isBase64Encoded"] is False
    return body


# --- the OpenAPI file -------------------------------------------------------------------------------


def test_openapi_file_is_valid_openapi_3_with_api_key_security(spec: dict[str, Any]) -> None:
    validate_openapi(spec)
    assert spec["openapi"].startswith("3.0")
    assert spec["components"]["securitySchemes"]["api_key"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "An API Gateway API key of the stack's usage plan.",
    }
    assert spec["security"] == [{"api_key": []}]
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert sorted(responses) == ["200", "400", "403", "408", "413", "415", "429", "500", "502", "503", "504"]


def test_openapi_request_schema_accepts_the_documented_forms_and_refuses_others(spec: dict[str, Any]) -> None:
    request_schema = {"$ref": "#/components/schemas/PredictRequest", "components": spec["components"]}
    for good in ({"context": "5.1, 3.5, 1.4, 0.2"}, {"instances": [IRIS_ROW]}):
        jsonschema.validate(good, request_schema)
        assert handler.parse_request(json.dumps(good), 1000) == [IRIS_ROW]
    # Named features, categories and missing values: the model server reads them by the signature.
    named = {
        "instances": [dict(zip(["a", "b", "c"], [1.5, "large", None], strict=True)), [2.5, "small", None]]
    }
    jsonschema.validate(named, request_schema)
    assert handler.parse_request(json.dumps(named), 1000) == [
        {"a": 1.5, "b": "large", "c": None},
        [2.5, "small", None],
    ]
    bad: dict[str, Any]
    for bad in (
        {"instances": []},
        {"context": 5},
        {"context": "1", "instances": [[1]]},
        {"other": 1},
        {"instances": [[1, True]]},
        {"instances": [{"a": [1]}]},
        {"instances": [{}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, request_schema)
        with pytest.raises(handler.RequestError):
            handler.parse_request(json.dumps(bad), 1000)


# --- answers ----------------------------------------------------------------------------------------


def test_one_context_row_is_answered_and_stored_with_every_field(api: Stubber, spec: dict[str, Any]) -> None:
    body_text = json.dumps({"context": "5.1, 3.5, 1.4, 0.2"})
    expect_invoke(api, body_text, model_answer(1, version="7"))
    before = int(time.time())

    response = handler.handler(rest_event(body_text), None)

    assert response["statusCode"] == 200
    body = check_against_openapi(spec, response)
    assert body["model_version"] == "7"
    assert body["predictions"] == [{"label": "setosa", "probabilities": PROBS}]
    assert str(uuid.UUID(body["request_id"])) == body["request_id"]

    item = stored(body["request_id"])
    assert set(item) == {
        "request_id",
        "created_at",
        "input",
        "input_bytes",
        "output",
        "status_code",
        "model_version",
        "latency_ms",
        "caller",
        "expires_at",
    }
    assert item["input"] == {"S": body_text}
    assert item["input_bytes"] == {"N": str(len(body_text))}
    assert item["output"] == {"S": response["body"]}
    assert item["status_code"] == {"N": "200"}
    assert item["model_version"] == {"S": "7"}
    assert 0 < float(item["latency_ms"]["N"]) < 5000
    assert item["caller"] == {
        "M": {
            "api_key_id": {"S": "k3y1d"},
            "source_ip": {"S": "203.0.113.7"},
            "user_agent": {"S": "python-requests/2.32.3"},
        }
    }
    created = item["created_at"]["S"]
    assert created.endswith("Z") and len(created) == len("2025-04-09T12:34:56.789Z")
    ninety_days = 90 * 86_400
    assert before + ninety_days <= int(item["expires_at"]["N"]) <= int(time.time()) + ninety_days


def test_several_context_rows_keep_their_order_and_trailing_blank_lines_are_ignored(
    api: Stubber, spec: dict[str, Any]
) -> None:
    context = "5.1, 3.5, 1.4, 0.2\n6.7,3.0,5.2,2.3\r\n  -1, .5, 1e-3, +2.  \n\n"
    expect_invoke(api, json.dumps({"context": context}), model_answer(3))

    response = handler.handler(rest_event(json.dumps({"context": context})), None)

    assert response["statusCode"] == 200
    body = check_against_openapi(spec, response)
    assert len(body["predictions"]) == 3
    assert stored(body["request_id"])["status_code"] == {"N": "200"}


def test_instances_form_and_a_charset_parameter_are_accepted(api: Stubber, spec: dict[str, Any]) -> None:
    rows = [IRIS_ROW, [7, 3, 6, 2]]
    expect_invoke(api, json.dumps({"instances": rows}), model_answer(2, version="12"))

    response = handler.handler(
        rest_event(json.dumps({"instances": rows}), content_type="application/json; charset=utf-8"), None
    )

    assert response["statusCode"] == 200
    body = check_against_openapi(spec, response)
    assert body["model_version"] == "12"
    assert [p["label"] for p in body["predictions"]] == ["setosa", "setosa"]


def test_base64_body_is_decoded(api: Stubber, spec: dict[str, Any]) -> None:
    raw = json.dumps({"instances": [IRIS_ROW]})
    expect_invoke(api, raw, model_answer(1))
    encoded = base64.b64encode(raw.encode()).decode()

    response = handler.handler(rest_event(encoded, base64_encoded=True), None)

    assert response["statusCode"] == 200
    body = check_against_openapi(spec, response)
    assert stored(body["request_id"])["input"] == {"S": raw}


# --- client mistakes --------------------------------------------------------------------------------

BAD_BODIES = [
    pytest.param(None, "request body is empty", id="no-body"),
    pytest.param("  ", "request body is empty", id="blank-body"),
    pytest.param('{"context": "5.1, 3.5', "not valid JSON: Unterminated string", id="not-json"),
    pytest.param("[[5.1, 3.5, 1.4, 0.2]]", "must be an object, not a list", id="not-an-object"),
    pytest.param('{"contxt": "5.1"}', "unknown field 'contxt'", id="unknown-field"),
    pytest.param("{}", "no rows: send exactly one of", id="neither"),
    pytest.param('{"context": "1", "instances": [[1]]}', "both 'instances' and 'context'", id="both"),
    pytest.param('{"context": 5.1}', "'context' must be a string", id="context-not-string"),
    pytest.param('{"context": " \\n \\n"}', "no rows: the input is empty", id="context-no-rows"),
    pytest.param(
        '{"context": "5.1, \\"large\\", 0.2"}', "row 1, column 2: '\"large\"' holds a quote", id="ctx-quote"
    ),
    pytest.param('{"context": "1, 2\\n\\n3, 4"}', "row 2 is empty", id="context-blank-line"),
    pytest.param('{"context": "1, 2\\n3"}', "row 2 has 1 value; row 1 has 2", id="context-ragged"),
    pytest.param('{"instances": []}', "no rows: 'instances' is empty", id="instances-empty"),
    pytest.param(
        '{"instances": [1, 2]}',
        "row 1 must be a list of values or an object naming the features, not a number",
        id="instances-flat",
    ),
    pytest.param('{"instances": [[1], []]}', "row 2 is empty", id="instances-empty-row"),
    pytest.param('{"instances": [{}]}', "row 1 is an empty object", id="instances-empty-object"),
    pytest.param(
        '{"instances": [[1, true]]}',
        "row 1, column 2: expected a number, a string or null, got a boolean true",
        id="instances-bool",
    ),
    pytest.param(
        '{"instances": [{"a": 1, "b": [2]}]}',
        "row 1, feature 'b': expected a number, a string or null, got a list [2]",
        id="named-list",
    ),
    pytest.param('{"instances": [[1, NaN]]}', "the body has NaN, which is not a finite number", id="i-nan"),
    pytest.param('{"instances": [[1, -Infinity]]}', "-Infinity, which is not a finite number", id="i-inf"),
    pytest.param('{"instances": [[1, 1e400]]}', "row 1, column 2: the number is not finite", id="i-1e400"),
    pytest.param('{"instances": [[1, 2], [3]]}', "row 2 has 1 value; row 1 has 2", id="instances-ragged"),
    # Past Python's 4300-digit integer limit: refused as the infinite float it is, naming the row.
    pytest.param(
        '{"instances": [[' + "9" * 5000 + "]]}",
        "row 1, column 1: the number is not finite (too large for a 64-bit float)",
        id="huge-int",
    ),
    pytest.param('{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply", id="deep"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_input_is_a_400_naming_the_problem_and_is_stored(
    api: Stubber, spec: dict[str, Any], body: str | None, message: str
) -> None:
    # No invoke_endpoint response is queued: a call to the model would fail the test.
    response = handler.handler(rest_event(body), None)

    assert response["statusCode"] == 400
    answer = check_against_openapi(spec, response)
    assert message in answer["error"]
    item = stored(answer["request_id"])
    assert item["status_code"] == {"N": "400"}
    assert item["output"] == {"S": response["body"]}
    assert item["input"] == {"S": body or ""}
    assert item["model_version"] == {"NULL": True}


def test_invalid_base64_and_non_utf8_are_400(api: Stubber, spec: dict[str, Any]) -> None:
    response = handler.handler(rest_event("not base64!!", base64_encoded=True), None)
    assert response["statusCode"] == 400
    assert check_against_openapi(spec, response)["error"] == (
        "request body is marked base64 but is not valid base64"
    )

    latin1 = base64.b64encode('{"context": "5.1, 3.5, 1.4, 0.2 \xe9"}'.encode("latin-1")).decode()
    response = handler.handler(rest_event(latin1, base64_encoded=True), None)
    assert response["statusCode"] == 400
    answer = check_against_openapi(spec, response)
    assert answer["error"] == "the body is not UTF-8 (invalid byte at offset 32)"
    assert stored(answer["request_id"])["input"]["S"].endswith('0.2 \ufffd"}')


@pytest.mark.parametrize("content_type", ["text/csv", "application/x-www-form-urlencoded", "text/plain"])
def test_a_body_that_is_not_json_by_content_type_is_415(
    api: Stubber, spec: dict[str, Any], content_type: str
) -> None:
    response = handler.handler(rest_event("5.1, 3.5, 1.4, 0.2", content_type=content_type), None)

    assert response["statusCode"] == 415
    answer = check_against_openapi(spec, response)
    assert answer["error"] == f"Content-Type must be application/json, not {content_type!r}"
    assert stored(answer["request_id"])["status_code"] == {"N": "415"}


def test_a_missing_content_type_is_read_as_json(api: Stubber, spec: dict[str, Any]) -> None:
    expect_invoke(api, json.dumps({"instances": [IRIS_ROW]}), model_answer(1))
    response = handler.handler(rest_event(json.dumps({"instances": [IRIS_ROW]}), content_type=None), None)
    assert response["statusCode"] == 200
    check_against_openapi(spec, response)


def test_too_large_body_is_413_and_stored_with_its_head_and_size(
    api: Stubber, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "2000")
    body = json.dumps({"context": "\n".join(["5.1, 3.5, 1.4, 0.2"] * 200)})
    assert len(body) > 2000

    response = handler.handler(rest_event(body), None)

    assert response["statusCode"] == 413
    answer = check_against_openapi(spec, response)
    assert answer["error"] == f"request body is {len(body)} bytes; the limit is 2000"
    item = stored(answer["request_id"])
    assert item["input"] == {"S": body[: handler.OVERSIZE_KEEP_CHARS]}
    assert item["input_bytes"] == {"N": str(len(body))}

    # Exactly at the limit is still accepted.
    exact = json.dumps({"instances": [IRIS_ROW]})
    monkeypatch.setenv("MAX_BODY_BYTES", str(len(exact)))
    expect_invoke(api, exact, model_answer(1))
    assert handler.handler(rest_event(exact), None)["statusCode"] == 200


def test_parse_request_is_the_same_contract_for_str_and_bytes() -> None:
    body = '{"context": "5.1, 3.5, 1.4, 0.2\\n4.9, 3.0, 1.4, 0.2"}'
    expected = [IRIS_ROW, [4.9, 3.0, 1.4, 0.2]]
    assert handler.parse_request(body, 1000) == expected
    assert handler.parse_request(body.encode(), 1000) == expected
    with pytest.raises(handler.RequestError) as too_big:
        handler.parse_request(body, 10)
    assert (too_big.value.status_code, too_big.value.message) == (
        413,
        f"request body is {len(body)} bytes; the limit is 10",
    )
    # Characters outside ASCII count by their UTF-8 bytes.
    with pytest.raises(handler.RequestError) as multibyte:
        handler.parse_request('{"context": "\u00e9"}', 15)
    assert multibyte.value.status_code == 413
    assert handler.error_body("x", "id") == {"error": "x", "request_id": "id"}
    assert handler.answer_body("id", "3", []) == {"request_id": "id", "model_version": "3", "predictions": []}


# --- model and endpoint failures --------------------------------------------------------------------


def test_no_endpoint_yet_is_503(api: Stubber, spec: dict[str, Any]) -> None:
    api.add_client_error(
        "invoke_endpoint",
        service_error_code="ValidationError",
        service_message=f"Endpoint {ENDPOINT} of account 123456789012 not found.",
        http_status_code=400,
    )

    response = handler.handler(rest_event(json.dumps({"context": "5.1, 3.5, 1.4, 0.2"})), None)

    assert response["statusCode"] == 503
    answer = check_against_openapi(spec, response)
    assert answer["error"].startswith(f"no model is deployed yet (endpoint '{ENDPOINT}':")
    assert stored(answer["request_id"])["status_code"] == {"N": "503"}


def test_throttled_endpoint_is_503(api: Stubber, spec: dict[str, Any]) -> None:
    api.add_client_error(
        "invoke_endpoint",
        service_error_code="ThrottlingException",
        service_message="Rate exceeded",
        http_status_code=400,
    )
    response = handler.handler(rest_event(json.dumps({"instances": [IRIS_ROW]})), None)
    assert response["statusCode"] == 503
    assert "try again" in check_against_openapi(spec, response)["error"]


def test_model_refusing_the_input_is_a_400_with_the_models_message(
    api: Stubber, spec: dict[str, Any]
) -> None:
    api.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        service_message="Received client error (400) from primary with message ...",
        http_status_code=424,
        modeled_fields={
            "OriginalStatusCode": 400,
            "OriginalMessage": json.dumps({"error": "row 1 has 3 features; the model expects 4"}),
            "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/x",
        },
    )

    response = handler.handler(rest_event(json.dumps({"context": "5.1, 3.5, 1.4"})), None)

    assert response["statusCode"] == 400
    answer = check_against_openapi(spec, response)
    assert answer["error"] == "row 1 has 3 features; the model expects 4"
    assert stored(answer["request_id"])["status_code"] == {"N": "400"}


def test_a_regressors_values_are_answered_as_the_openapi_file_says(
    api: Stubber, spec: dict[str, Any]
) -> None:
    body_text = json.dumps({"instances": [{"age": 0.04, "bmi": 0.06}, [0.01, -0.05]]})
    raw = json.dumps({"model_version": "2", "predictions": [{"value": 151.25}, {"value": 75.0}]}).encode()
    expect_invoke(api, body_text, {"Body": StreamingBody(io.BytesIO(raw), len(raw))})

    response = handler.handler(rest_event(body_text), None)

    assert response["statusCode"] == 200
    body = check_against_openapi(spec, response)
    assert (body["model_version"], body["predictions"]) == ("2", [{"value": 151.25}, {"value": 75.0}])


def test_the_models_400_for_a_named_feature_is_passed_on_as_a_400(api: Stubber, spec: dict[str, Any]) -> None:
    # The API does not know the model's features; it forwards the body as received, and the model
    # server's refusal (SageMaker: ModelError with the container's status and body) is the client's 400.
    body_text = json.dumps({"instances": [{"sepal_length": 5.1, "petal_colour": "red"}]})
    message = "row 1: unknown feature 'petal_colour'; the model's features are sepal_length, sepal_width"
    api.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        service_message="Received client error (400) from primary with message ...",
        http_status_code=424,
        modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": json.dumps({"error": message})},
        expected_params={
            "EndpointName": ENDPOINT,
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": body_text.encode(),
        },
    )

    response = handler.handler(rest_event(body_text), None)

    assert response["statusCode"] == 400
    answer = check_against_openapi(spec, response)
    assert answer["error"] == message
    assert stored(answer["request_id"])["status_code"] == {"N": "400"}


def test_model_failing_is_a_502(api: Stubber, spec: dict[str, Any]) -> None:
    api.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        service_message="Received server error (500) from primary",
        http_status_code=424,
        modeled_fields={"OriginalStatusCode": 500, "OriginalMessage": "Internal Server Error"},
    )

    response = handler.handler(rest_event(json.dumps({"instances": [IRIS_ROW]})), None)

    assert response["statusCode"] == 502
    answer = check_against_openapi(spec, response)
    assert answer["error"] == "model error (HTTP 500): Internal Server Error"
    assert stored(answer["request_id"])["status_code"] == {"N": "502"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"<html>oops</html>", "the model answered something that is not JSON"),
        (b'{"predictions": []}', "without one prediction per row (1 rows sent)"),
        (
            b'{"predictions": [{"label": "setosa"}]}',
            "prediction 1 has neither a label and probabilities nor a value",
        ),
        (
            b'{"predictions": [{"value": "151"}]}',
            "prediction 1 has neither a label and probabilities nor a value",
        ),
    ],
)
def test_model_answering_garbage_is_a_502(
    api: Stubber, spec: dict[str, Any], raw: bytes, message: str
) -> None:
    expect_invoke(
        api, json.dumps({"instances": [IRIS_ROW]}), {"Body": StreamingBody(io.BytesIO(raw), len(raw))}
    )
    response = handler.handler(rest_event(json.dumps({"instances": [IRIS_ROW]})), None)
    assert response["statusCode"] == 502
    assert message in check_against_openapi(spec, response)["error"]


def test_model_error_mapping_is_pure() -> None:
    refused = handler.model_error(422, '{"error": "bad row"}')
    assert (type(refused), refused.status_code, refused.message) == (handler.RequestError, 400, "bad row")
    wrong_path = handler.model_error(404, "Not Found")
    assert (wrong_path.status_code, wrong_path.message) == (502, "model error (HTTP 404): Not Found")
    assert handler.model_error(None, None).message == "model error (HTTP None): no detail"


def test_misconfigured_max_body_bytes_is_a_500_that_is_still_stored(
    api: Stubber, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "1MB")
    response = handler.handler(rest_event(json.dumps({"instances": [IRIS_ROW]})), None)
    assert response["statusCode"] == 500
    answer = check_against_openapi(spec, response)
    assert answer["error"] == "the API is misconfigured: MAX_BODY_BYTES='1MB' is not a whole number"
    assert stored(answer["request_id"])["status_code"] == {"N": "500"}


# --- storage ----------------------------------------------------------------------------------------

EMF_SCHEMA = {
    # The CloudWatch Embedded Metric Format specification's rules for one document.
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1, "maxLength": 250},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                        "Unit": {"enum": ["Count", "None", "Seconds", "Milliseconds"]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def test_storage_failure_still_answers_and_logs_the_whole_record_with_an_emf_metric(
    moto_aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], spec: dict[str, Any]
) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("TABLE_NAME", "table-that-does-not-exist")
    monkeypatch.setenv("RECORD_TTL_DAYS", "0")
    handler._CLIENTS.clear()
    body_text = json.dumps({"context": "5.1, 3.5, 1.4, 0.2"})
    try:
        with Stubber(handler._client("sagemaker-runtime")) as stubber:
            expect_invoke(stubber, body_text, model_answer(1, version="4"))
            response = handler.handler(rest_event(body_text, user_agent="curl/8.5.0"), None)
    finally:
        handler._CLIENTS.clear()

    assert response["statusCode"] == 200
    answer = check_against_openapi(spec, response)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    unstored, emf = lines
    record = unstored["unstored_record"]
    assert "ResourceNotFoundException" in unstored["error"]
    assert set(record) == {
        "request_id",
        "created_at",
        "input",
        "input_bytes",
        "output",
        "status_code",
        "model_version",
        "latency_ms",
        "caller",
    }  # RECORD_TTL_DAYS=0: no expires_at
    assert record["request_id"] == answer["request_id"]
    assert record["input"] == body_text
    assert record["input_bytes"] == len(body_text)
    assert record["output"] == response["body"]
    assert record["status_code"] == 200
    assert record["model_version"] == "4"
    assert record["latency_ms"] > 0
    assert record["caller"] == {"api_key_id": "k3y1d", "source_ip": "203.0.113.7", "user_agent": "curl/8.5.0"}

    jsonschema.validate(emf, EMF_SCHEMA)
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "MLOps/InferenceApi"
    assert directive["Dimensions"] == [["Endpoint"]]
    assert directive["Metrics"] == [{"Name": "RecordsNotStored", "Unit": "Count"}]
    # Every dimension and metric the directive names must be a top-level member, or CloudWatch drops it.
    assert emf["Endpoint"] == ENDPOINT
    assert emf["RecordsNotStored"] == 1
    assert abs(emf["_aws"]["Timestamp"] - time.time() * 1000) < 60_000


def test_clients_use_standard_retries(api: Stubber) -> None:
    for service in ("dynamodb", "sagemaker-runtime"):
        assert handler._client(service).meta.config.retries["mode"] == "standard"
    assert handler._client("dynamodb") is handler._client("dynamodb")
    # Every attempt at its timeouts, plus standard mode's backoff (at most 1 s, then 2 s), fits in the
    # function's 29 s, so a slow model or table still ends in an answer and a record, not a killed invocation.
    worst = 0.0
    for service in ("dynamodb", "sagemaker-runtime"):
        config = handler._client(service).meta.config
        attempts = config.retries["total_max_attempts"]
        worst += attempts * (config.connect_timeout + config.read_timeout) + sum(
            2**i for i in range(attempts - 1)
        )
    assert worst < 29


def test_a_record_over_the_item_limit_is_stored_gzip_compressed(api: Stubber) -> None:
    rows = [[5.1 + i / 1000, 3.5, 1.4, 0.2] for i in range(4000)]
    output = json.dumps({"predictions": [{"label": "setosa", "probabilities": PROBS}] * 4000})
    record: dict[str, Any] = {
        "request_id": "big-1",
        "created_at": "2025-04-09T12:34:56.789Z",
        "input": json.dumps({"instances": rows}),
        "input_bytes": 99,
        "output": output,
        "status_code": 200,
        "model_version": "3",
        "latency_ms": 12.5,
        "caller": {"api_key_id": "k", "source_ip": "203.0.113.7", "user_agent": None},
    }
    assert len(record["input"]) + len(output) > handler.DYNAMODB_ITEM_LIMIT

    assert handler.store_record(record, ENDPOINT) is True

    item = stored("big-1")
    assert "input" not in item and "output" not in item
    assert gzip.decompress(item["input_gzip"]["B"]).decode() == record["input"]
    assert gzip.decompress(item["output_gzip"]["B"]).decode() == output
    assert item["caller"]["M"]["user_agent"] == {"NULL": True}
    small = handler.dynamodb_item({**record, "input": "{}", "output": "{}"})
    assert small["input"] == {"S": "{}"} and "input_gzip" not in small


# --- packaging and cold start ------------------------------------------------------------------------


def test_lambda_directory_zips_under_50_kb_and_holds_only_the_handler_and_its_rules() -> None:
    files = sorted(
        p.relative_to(LAMBDA_DIR).as_posix()
        for p in LAMBDA_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert set(files) <= {"handler.py", "request_rows.py", "README.md"}
    assert "handler.py" in files
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.write(LAMBDA_DIR / name, name)
    assert len(buffer.getvalue()) < 50 * 1024


@pytest.mark.parametrize("name", ["handler.py", "request_rows.py"])
def test_the_lambda_code_imports_only_the_stdlib_boto3_and_its_own_files(name: str) -> None:
    tree = ast.parse((LAMBDA_DIR / name).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports break when the directory is the zip root"
            # The one package import is the fallback for this same directory, outside the Lambda.
            if node.module != "workloads.serve.api_lambda":
                imported.add((node.module or "").split(".")[0])
    siblings = {p.stem for p in LAMBDA_DIR.glob("*.py")}
    outside = {n for n in imported if n not in sys.stdlib_module_names} - {"boto3", "botocore"} - siblings
    assert outside == set(), f"{name} imports {outside}"
    if name == "handler.py":
        assert {"boto3", "botocore", "json", "request_rows"} <= imported
    else:
        assert {"boto3", "botocore"} & imported == set()


def test_importing_the_handler_creates_no_aws_client() -> None:
    # Run as Lambda does: the directory on sys.path, `import handler`, with client creation made to fail.
    code = (
        "import sys, boto3, boto3.session\n"
        "def refuse(*a, **k): raise SystemExit('client created at import time')\n"
        "boto3.client = refuse\n"
        "boto3.session.Session.client = refuse\n"
        f"sys.path.insert(0, {str(LAMBDA_DIR)!r})\n"
        "import handler\n"
        "print(handler.handler.__name__, len(handler._CLIENTS), handler.request_rows.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    # request_rows came from the zip's root, as in Lambda, not from the repository's package.
    assert done.stdout.split() == ["handler", "0", "request_rows"]


@pytest.mark.parametrize(("function_name", "frozen"), [("api-fn", True), ("", False)])
def test_import_time_objects_are_frozen_only_inside_lambda(function_name: str, frozen: bool) -> None:
    code = f"import gc, sys\nsys.path.insert(0, {str(LAMBDA_DIR)!r})\nimport handler\nprint(gc.get_freeze_count())\n"
    env = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_FUNCTION_NAME": function_name}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert (int(done.stdout) > 10_000) is frozen
