"""The inference API Lambda: `POST /predict` behind API Gateway (REST API, Lambda proxy integration, API key).

Request (at most MAX_BODY_BYTES after base64 decoding). Content-Type: application/json (parameters
such as charset allowed); a request with no Content-Type at all is read as JSON too, since the body must
be JSON anyway and some clients omit the header; any other media type is a 415:
    {"context": "5.1, 3.5, 1.4, 0.2"}          one row, or several separated by newlines
    {"instances": [[5.1, 3.5, 1.4, 0.2], ...]}  or rows naming the features: [{"sepal_length": 5.1, ...}]
Values are numbers, strings (a categorical feature's category) or null (a missing value). This API does
not know the model, so it checks the body's size and shape (request_rows.py without a signature) and
forwards the body as received; the model server reads the rows against the model's signature and
answers a 400 naming the row and feature, passed on here as a 400.
Answer 200: {"request_id": "<uuid>", "model_version": "3", "predictions": [...]}, one per row:
{"label", "probabilities"} from a classifier, {"value"} from a regressor.
Errors, each {"error": "<what is wrong>", "request_id": "<uuid>"}:
    400 bad input, or the model refused the input (its message is passed on); 413 body too large;
    415 not JSON; 500 a bug here; 502 the model failed or answered garbage; 503 no model deployed yet
    (or the endpoint is not ready / throttled). workloads/serve/openapi.yaml is the full description.

Environment: ENDPOINT_NAME, TABLE_NAME, MAX_BODY_BYTES (default 1048576), RECORD_TTL_DAYS (default 90; 0 = keep).

Every request is stored, answered or refused, as one DynamoDB item (docs/contracts.md): request_id,
created_at, input (the body as received; only its first OVERSIZE_KEEP_CHARS characters for a 413),
input_bytes, output (the exact answer body), status_code, model_version, latency_ms, caller
{api_key_id, source_ip, user_agent} and expires_at (TTL). An item over DynamoDB's 400 KB item limit keeps
input/output gzip-compressed as binary `input_gzip`/`output_gzip` instead.

Storage failure policy: the DynamoDB client uses botocore's standard retry mode. If the record still cannot
be written, the client gets its answer anyway (the prediction was made; refusing it helps no one), and the
record is not lost: it is written whole to the function log as one JSON line {"unstored_record": {...},
"error": "..."}, and an Embedded Metric Format line counts it as `RecordsNotStored` (namespace
MLOps/InferenceApi, dimension Endpoint) - the platform alarms on that metric, and the log lines are the
source to backfill the table from.

The pure functions parse_request, answer_body, error_body, parse_model_answer and model_error (and the
ApiError/RequestError/UpstreamError classes) have no side effects; the local platform's API
(mlops/local/api.py) uses them so both APIs serve the same contract.

Cold start: this file is the whole zip, it imports only what boto3 imports anyway, and the AWS clients are
made on first use, once per container (bench/lambda_cold_import.py measures it).
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import logging
import os
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

try:  # in the Lambda, this directory is the zip's root
    import request_rows  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # imported as workloads.serve.api_lambda.handler (the local API, tests)
    from workloads.serve.api_lambda import request_rows

DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_RECORD_TTL_DAYS = 90
METRIC_NAMESPACE = "MLOps/InferenceApi"
RECORDS_NOT_STORED = "RecordsNotStored"
# What is kept of a body refused as too large: enough to see what it was, not the whole upload.
OVERSIZE_KEEP_CHARS = 1024
# DynamoDB's hard item limit; names count too, so the size estimate below includes them.
DYNAMODB_ITEM_LIMIT = 400 * 1024

log = logging.getLogger(__name__)

# SageMaker answers ValidationError both for a missing endpoint and for one that is not InService yet.
_NOT_DEPLOYED = re.compile(r"not found|could not find|not in service|inservice|status", re.IGNORECASE)
_NOT_READY_CODES = {"ModelNotReadyException", "ServiceUnavailable", "ThrottlingException"}

# Worst case inside the function's 29 s timeout (API Gateway's limit), so a slow model or table still ends
# in an answer and a stored or logged record, never a killed invocation: the model gets 2 attempts of
# 1 s connect + 6 s read (the iris model answers in milliseconds), DynamoDB standard mode's 3 attempts of
# 1 s + 2 s; with backoff that is under 28 s.
_CLIENT_CONFIGS = {
    "sagemaker-runtime": Config(
        retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=1, read_timeout=6
    ),
    "dynamodb": Config(
        retries={"mode": "standard", "total_max_attempts": 3}, connect_timeout=1, read_timeout=2
    ),
}
_CLIENTS: dict[str, Any] = {}

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # In a Lambda container everything imported so far (boto3, botocore, this module) lives as long as the
    # container. Freezing it keeps the collector from walking all of it again in the first request's full
    # collection, which otherwise lands in client creation (bench/lambda_cold_import.py: ~30 ms). Only
    # in Lambda: anywhere else importing this module must not change the importer's collector.
    gc.freeze()


class ApiError(Exception):
    """An answer other than 200: the HTTP status and the message for the client."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class RequestError(ApiError):
    """The client's mistake (4xx)."""


class UpstreamError(ApiError):
    """The model endpoint's failure, or no model to ask (5xx)."""


# --- pure functions (shared with the local platform) --------------------------------------------------


def parse_request(body: bytes | str, max_bytes: int, content_type: str | None = None) -> list[Any]:
    """The rows of a /predict body, or RequestError naming what is wrong.

    `content_type`, when given, must be application/json (parameters such as charset are allowed);
    None skips that check. The rows follow request_rows.py, the rules the model server applies too,
    as far as they hold without knowing the model (its width and feature types are the server's).
    """
    if content_type is not None:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise RequestError(
                415, f"Content-Type must be application/json, not {request_rows.shown(content_type)}"
            )
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if len(raw) > max_bytes:
        raise RequestError(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    if not raw.strip():
        raise RequestError(
            400, 'request body is empty; send {"context": "5.1, 3.5, 1.4, 0.2"} or {"instances": [[...]]}'
        )
    try:
        return request_rows.rows_from_json(raw)
    except request_rows.InputError as exc:
        raise RequestError(400, exc.message) from None


def answer_body(request_id: str, model_version: str, predictions: list[Any]) -> dict[str, Any]:
    """The 200 answer."""
    return {"request_id": request_id, "model_version": model_version, "predictions": predictions}


def error_body(message: str, request_id: str) -> dict[str, Any]:
    """The body of every non-200 answer."""
    return {"error": message, "request_id": request_id}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _prediction(prediction: Any) -> bool:
    """A classifier's {"label", "probabilities"} or a regressor's {"value"}."""
    if not isinstance(prediction, dict):
        return False
    if "value" in prediction:
        return _number(prediction["value"])
    probabilities = prediction.get("probabilities")
    return (
        isinstance(prediction.get("label"), str)
        and isinstance(probabilities, dict)
        and all(map(_number, probabilities.values()))
    )


def parse_model_answer(raw: bytes, n_rows: int) -> tuple[str, list[dict[str, Any]]]:
    """(model_version, predictions) from the serving container's 200 body, or UpstreamError(502)."""
    try:
        answer = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamError(502, f"the model answered something that is not JSON: {raw[:80]!r}") from None
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != n_rows:
        raise UpstreamError(502, f"the model answered without one prediction per row ({n_rows} rows sent)")
    for index, prediction in enumerate(predictions):
        if not _prediction(prediction):
            raise UpstreamError(
                502, f"the model's prediction {index + 1} has neither a label and probabilities nor a value"
            )
    version = answer.get("model_version")
    return (version if isinstance(version, str) and version else "unknown"), predictions


def model_error(status: int | None, original_message: str | None) -> ApiError:
    """What a model container's error answer means for the client.

    A 4xx other than 404 is the model refusing this input (e.g. the wrong number of features): the
    client's mistake, passed on as a 400 with the container's message. Anything else is a 502.
    """
    detail = _container_message(original_message)
    if status is not None and 400 <= status < 500 and status != 404:
        return RequestError(400, detail or "the model refused the input")
    return UpstreamError(502, f"model error (HTTP {status}): {detail or 'no detail'}")


def _container_message(original_message: str | None) -> str:
    if not original_message:
        return ""
    try:
        parsed = json.loads(original_message)
    except ValueError:
        return original_message.strip()[:500]
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    return original_message.strip()[:500]


# --- the Lambda ---------------------------------------------------------------------------------------


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """API Gateway REST proxy event in, proxy response out. Never raises: every request gets an answer."""
    started = time.perf_counter()
    request_id = str(uuid.uuid4())
    created_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    endpoint = os.environ.get("ENDPOINT_NAME", "")
    body = b""
    model_version: str | None = None
    try:
        body = _event_body(event)
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        rows = parse_request(
            body, _env_int("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES), headers.get("content-type")
        )
        if not endpoint:
            raise UpstreamError(500, "the API is misconfigured: ENDPOINT_NAME is not set")
        model_version, predictions = _predict(endpoint, body, len(rows))
        status, answer = 200, answer_body(request_id, model_version, predictions)
    except ApiError as exc:
        status, answer = exc.status_code, error_body(exc.message, request_id)
    except Exception:
        log.exception("request %s failed", request_id)
        status, answer = (
            500,
            error_body("internal error; the request id identifies it in the logs", request_id),
        )
    output = json.dumps(answer)
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    text = body.decode("utf-8", "replace")
    record: dict[str, Any] = {
        "request_id": request_id,
        "created_at": created_at,
        "input": text[:OVERSIZE_KEEP_CHARS] if status == 413 else text,
        "input_bytes": len(body),
        "output": output,
        "status_code": status,
        "model_version": model_version,
        "latency_ms": latency_ms,
        "caller": _caller(event),
    }
    ttl_days = _env_int("RECORD_TTL_DAYS", DEFAULT_RECORD_TTL_DAYS)
    if ttl_days > 0:
        record["expires_at"] = int(time.time()) + ttl_days * 86_400
    store_record(record, endpoint)
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "X-Request-Id": request_id},
        "body": output,
        "isBase64Encoded": False,
    }


def store_record(record: dict[str, Any], endpoint: str) -> bool:
    """Put the record in TABLE_NAME; on failure apply the storage failure policy. True if stored."""
    try:
        table = os.environ.get("TABLE_NAME", "")
        if not table:
            raise RuntimeError("TABLE_NAME is not set")
        _client("dynamodb").put_item(TableName=table, Item=dynamodb_item(record))
        return True
    except Exception as exc:  # whatever went wrong, the record must reach the log
        print(json.dumps({"unstored_record": record, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        print(json.dumps(emf_records_not_stored(endpoint)), flush=True)
        return False


def emf_records_not_stored(endpoint: str, count: int = 1) -> dict[str, Any]:
    """One CloudWatch Embedded Metric Format document counting records not stored."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": METRIC_NAMESPACE,
                    "Dimensions": [["Endpoint"]],
                    "Metrics": [{"Name": RECORDS_NOT_STORED, "Unit": "Count"}],
                }
            ],
        },
        "Endpoint": endpoint or "unset",
        RECORDS_NOT_STORED: count,
    }


def dynamodb_item(record: dict[str, Any]) -> dict[str, Any]:
    """The record in DynamoDB's typed form; input/output gzip-compressed if the item would pass 400 KB."""
    item = {key: _typed(value) for key, value in record.items()}
    if _item_size(item) > DYNAMODB_ITEM_LIMIT:
        import gzip  # only for the rare oversized record

        for key in ("input", "output"):
            item[f"{key}_gzip"] = {"B": gzip.compress(record[key].encode("utf-8"))}
            del item[key]
    return item


def _typed(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value)}
    if isinstance(value, dict):
        return {"M": {str(k): _typed(v) for k, v in value.items()}}
    raise TypeError(f"no DynamoDB type for {type(value).__name__}")


def _item_size(item: dict[str, Any]) -> int:
    # DynamoDB counts UTF-8 name and value lengths; numbers take at most 21 bytes, maps 3 bytes overhead.
    size = 0
    for name, typed in item.items():
        size += len(name.encode("utf-8"))
        kind, value = next(iter(typed.items()))
        if kind == "S":
            size += len(value.encode("utf-8"))
        elif kind == "B":
            size += len(value)
        elif kind == "M":
            size += 3 + _item_size(value)
        else:
            size += 21
    return size


def _event_body(event: dict[str, Any]) -> bytes:
    body = event.get("body")
    if body is None:
        return b""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "request body is marked base64 but is not valid base64") from None
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _caller(event: dict[str, Any]) -> dict[str, str | None]:
    identity = (event.get("requestContext") or {}).get("identity") or {}
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    return {
        "api_key_id": identity.get("apiKeyId"),
        "source_ip": identity.get("sourceIp"),
        "user_agent": identity.get("userAgent") or headers.get("user-agent"),
    }


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise UpstreamError(500, f"the API is misconfigured: {name}={raw!r} is not a whole number") from None


def _client(service: str) -> Any:
    """One boto3 client per service per container, made on first use (never at import time)."""
    client = _CLIENTS.get(service)
    if client is None:
        client = boto3.client(service, config=_CLIENT_CONFIGS[service])
        _CLIENTS[service] = client
    return client


def _predict(endpoint: str, body: bytes, n_rows: int) -> tuple[str, list[dict[str, Any]]]:
    """The model's answer to the body as received (the model server reads it by the same rules,
    knowing the model's signature), with one prediction for each of its n_rows rows."""
    try:
        response = _client("sagemaker-runtime").invoke_endpoint(
            EndpointName=endpoint,
            ContentType="application/json",
            Accept="application/json",
            Body=body,
        )
        raw = response["Body"].read()
    except ClientError as exc:
        raise _invoke_error(endpoint, exc) from None
    except BotoCoreError as exc:
        raise UpstreamError(502, f"the model endpoint did not answer: {exc}") from None
    return parse_model_answer(raw, n_rows)


def _invoke_error(endpoint: str, exc: ClientError) -> ApiError:
    code = exc.response.get("Error", {}).get("Code", "")
    message = exc.response.get("Error", {}).get("Message", "")
    if code == "ModelError":
        status = exc.response.get("OriginalStatusCode")
        return model_error(status if isinstance(status, int) else None, exc.response.get("OriginalMessage"))
    if code in ("ValidationError", "ValidationException") and _NOT_DEPLOYED.search(message):
        return UpstreamError(503, f"no model is deployed yet (endpoint {endpoint!r}: {message})")
    if code in _NOT_READY_CODES:
        return UpstreamError(503, f"the model endpoint is not ready; try again shortly ({code})")
    return UpstreamError(502, f"the model endpoint failed: {code}: {message}")
