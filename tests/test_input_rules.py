"""One set of input rules (workloads/serve/api_lambda/request_rows.py) on both sides of the platform.

The same table goes to the inference API's parser (the Lambda's, which the local API uses) and to the
model server (serve.py's CSV and JSON paths, fast and exact, and serve.py's ASGI app itself): the same
bodies are accepted with the same numbers, and the same are refused with the same message. And a bad
value is quoted by a short prefix only, however long it is.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import orjson
import pytest
from local_daemon_helpers import FEATURES, build_model

from workloads.serve import codec
from workloads.serve.api_lambda import handler, request_rows
from workloads.serve.serve import ModelServer

ROW = [5.1, 3.5, 1.4, 0.2]

# (text of the rows, the rows the rules read from it, or the error they give)
TEXT_ROWS: list[tuple[str, list[list[float]] | str]] = [
    ("5.1, 3.5, 1.4, 0.2", [ROW]),
    ("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n", [ROW, [6.7, 3.0, 5.2, 2.3]]),
    ("-1, +2., .5, 1e-3", [[-1.0, 2.0, 0.5, 0.001]]),
    ("\t1E+2 ,0, -0.0, 7\r\n1,2,3,4\r\n\n\n", [[100.0, 0.0, -0.0, 7.0], [1.0, 2.0, 3.0, 4.0]]),
    ("123456789012345678901234567890, 1, 2, 3", [[1.2345678901234568e29, 1.0, 2.0, 3.0]]),
    # Non-ASCII digits: float() reads these as 5.1 and 5.
    ("\u0665.\u0661, 3.5, 1.4, 0.2", "row 1, column 1 (sepal_length): '\u0665.\u0661' is not a number"),
    ("5.1, \uff15, 1.4, 0.2", "row 1, column 2 (sepal_width): '\uff15' is not a number"),
    ("5.1, 3.5, 1.4, \u00a00.2", "row 1, column 4 (petal_width): '\\xa00.2' is not a number"),
    # float() reads 1_0 as 10.
    ("5.1, 1_0, 1.4, 0.2", "row 1, column 2 (sepal_width): '1_0' is not a number"),
    # Quotes, terminated or not: a number never needs them.
    ('"5.1, 3.5, 1.4, 0.2', "row 1, column 1 (sepal_length): '\"5.1' is not a number"),
    ('"5.1", 3.5, 1.4, 0.2', "row 1, column 1 (sepal_length): '\"5.1\"' is not a number"),
    ("5.1, 3.5, 1.4, 0.2\n6.7, 3.0, \"5.2, 2.3\n5,5,5,5", "row 2, column 3 (petal_length): '\"5.2' is not a number"),
    ("nan, 3.5, 1.4, 0.2", "row 1, column 1 (sepal_length): 'nan' is not a number (no header row: every line is a row of numbers)"),
    ("5.1, 3.5, 1.4, 0.2\n5.1, -inf, 1.4, 0.2", "row 2, column 2 (sepal_width): '-inf' is not a number"),
    ("5.1, 1e999, 1.4, 0.2", "row 1, column 2 (sepal_width): '1e999' is not a finite number (too large for a 64-bit float)"),
    ("0x10, 3.5, 1.4, 0.2", "row 1, column 1 (sepal_length): '0x10' is not a number (no header row: every line is a row of numbers)"),
    ("5 1, 3.5, 1.4, 0.2", "row 1, column 1 (sepal_length): '5 1' is not a number"),
    # A CR is a line end only before LF.
    ("5.1,\r3.5,1.4,0.2", "row 1, column 2 (sepal_width): '\\r3.5' is not a number"),
    ("5.1,3.5,1.4,0.2\r\r\n1,2,3,4", "row 1, column 4 (petal_width): '0.2\\r' is not a number"),
    ("5.1, 3.5,, 0.2", "row 1, column 3 (petal_length): the value is missing; this model was trained without missing "
     "values and cannot score one: send a number"),
    ("5.1, 3.5, 1.4, 0.2\n\n6.7, 3.0, 5.2, 2.3", "row 2 is empty"),
    ("\n5.1, 3.5, 1.4, 0.2", "row 1 is empty"),
]  # fmt: skip

# (the "instances" value, the rows, or the error)
INSTANCES: list[tuple[Any, list[list[float]] | str]] = [
    ([ROW, [7, 3, 6, 2]], [ROW, [7.0, 3.0, 6.0, 2.0]]),
    ([[123456789012345678901234567890, 1, 2, 3]], [[1.2345678901234568e29, 1.0, 2.0, 3.0]]),
    ([[5.1, "3.5", 1.4, 0.2]], 'row 1, column 2 (sepal_width): expected a number, got a string "3.5"'),
    ([ROW, [5.1, 3.5, True, 0.2]], "row 2, column 3 (petal_length): expected a number, got a boolean true"),
    ([[5.1, None, 1.4, 0.2]], "row 1, column 2 (sepal_width): the value is missing; this model was trained without missing "
     "values and cannot score one: send a number"),
    ([ROW, 7], "row 2 must be a list of values or an object naming the features, not a number"),
    ([], "no rows: 'instances' is empty"),
    # Rows naming the features, in any order, beside positional ones.
    ([dict(zip(reversed(FEATURES), reversed(ROW), strict=True)), ROW], [ROW, ROW]),
    ([ROW, {**dict(zip(FEATURES, ROW, strict=True)), "petal_colour": 1}],
     "row 2: unknown feature 'petal_colour'; the model's features are sepal_length, sepal_width, "
     "petal_length, petal_width"),
    ([{"sepal_length": 5.1, "petal_length": 1.4}],
     "row 1: feature 'sepal_width' and 1 more not named; a row names every feature: sepal_length, "
     "sepal_width, petal_length, petal_width"),
    ([{**dict(zip(FEATURES, ROW, strict=True)), "petal_width": "0.2"}],
     "row 1, feature 'petal_width': expected a number, got a string \"0.2\""),
    ([{}], "row 1 is an empty object: name the model's features"),
    # Half a UTF-16 surrogate pair (json.dumps writes "\\ud800"): valid JSON, but not text.
    ([ROW, [5.1, "\ud800", 1.4, 0.2]],
     "row 2, column 2 (sepal_width): '\\ud800' is not text: it holds half of a UTF-16 surrogate pair"),
    ([{**dict(zip(FEATURES, ROW, strict=True)), "petal_width": "\udc00"}],
     "row 1, feature 'petal_width': '\\udc00' is not text: it holds half of a UTF-16 surrogate pair"),
]  # fmt: skip
# Written as JSON text, for what json.dumps cannot produce.
INSTANCES_TEXT: list[tuple[str, str]] = [
    ("[[5.1, 3.5, 1e400, 0.2]]", "row 1, column 3 (petal_length): the number is not finite (too large for a 64-bit float)"),
    ("[[5.1, NaN, 1.4, 0.2]]", "the body has NaN, which is not a finite number"),
    ("[[5.1, 3.5, 1.4, -Infinity]]", "the body has -Infinity, which is not a finite number"),
    # A name twice: json would keep the last value.
    ('[[5.1, 3.5, 1.4, 0.2], {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2, '
     '"sepal_length": 9}]', "row 2 names 'sepal_length' twice"),
    ('[{"petal_width": 0.2, "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]',
     "row 1 names 'petal_width' twice"),
]  # fmt: skip


def _api(body: bytes) -> list[list[float]] | str:
    try:
        return handler.parse_request(body, handler.DEFAULT_MAX_BODY_BYTES, "application/json")
    except handler.RequestError as exc:
        assert exc.status_code == 400
        return exc.message


def _serve(body: bytes, content_type: str) -> list[list[float]] | str:
    try:
        rows: list[list[float]] = codec.parse_request(body, content_type, FEATURES).tolist()
    except codec.RequestError as exc:
        assert exc.status == 400
        return exc.message
    return rows


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> ModelServer:
    app = ModelServer(str(build_model(tmp_path_factory.mktemp("model"))), "1", 6 * 1024 * 1024)
    app.load()
    assert app.model is not None
    return app


def _asgi(app: ModelServer, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": "/invocations",
        "method": "POST",
        "headers": [(b"content-type", content_type.encode())],
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def _check_served(
    app: ModelServer, body: bytes, content_type: str, expected: list[list[float]] | str
) -> None:
    status, answer = _asgi(app, body, content_type)
    if isinstance(expected, str):
        assert (status, answer) == (400, {"error": expected})
    else:
        assert status == 200
        assert len(answer["predictions"]) == len(expected)


def _where(message: str) -> str:
    """The row and column a message names, without the feature name only the model server knows."""
    return re.sub(r" \([a-z_]+\)$", "", message.split(":", 1)[0])


def _check_api(body: bytes, expected: list[list[float]] | str) -> None:
    """The API does not know the model: what it refuses, the model server refuses too, naming the same
    row and column (the same words where no feature type is involved); what it passes on, it counts as
    the model server does (one answer per row)."""
    api = _api(body)
    if isinstance(api, str):
        assert isinstance(expected, str)
        assert _where(api) == _where(expected)
        if "column" not in api:
            assert api == expected
    elif not isinstance(expected, str):
        assert len(api) == len(expected)


@pytest.mark.parametrize(("text", "expected"), TEXT_ROWS)
def test_text_rows_read_the_same_in_the_api_and_the_model_server(
    model_server: ModelServer, text: str, expected: list[list[float]] | str
) -> None:
    as_json = json.dumps({"context": text}).encode()
    # The API, the model server's JSON context (fast path and exact) and its CSV body (fast and exact).
    _check_api(as_json, expected)
    assert _serve(as_json, codec.JSON) == expected
    assert _serve(text.encode(), codec.CSV) == expected
    if "\r" not in text:
        assert _serve(text.encode().replace(b"\n", b"\r\n"), codec.CSV) == expected
    try:
        exact: list[list[float]] | str = request_rows.rows_from_text(text, FEATURES)
    except request_rows.InputError as exc:
        exact = exc.message
    assert exact == expected
    _check_served(model_server, text.encode(), codec.CSV, expected)
    _check_served(model_server, as_json, codec.JSON, expected)


@pytest.mark.parametrize(
    ("body", "expected"),
    [(json.dumps({"instances": value}).encode(), rows) for value, rows in INSTANCES]
    + [(b'{"instances": ' + text.encode() + b"}", error) for text, error in INSTANCES_TEXT],
)
def test_json_rows_read_the_same_in_the_api_and_the_model_server(
    model_server: ModelServer, body: bytes, expected: list[list[float]] | str
) -> None:
    _check_api(body, expected)
    assert _serve(body, codec.JSON) == expected
    _check_served(model_server, body, codec.JSON, expected)


def test_what_the_api_refuses_without_knowing_the_model() -> None:
    # Values no feature of any model takes, rows of different widths, quotes in text: refused before
    # the model is asked. A string or a null may be some model's category or missing value: passed on.
    assert _api(b'{"instances": [[1, true]]}') == (
        "row 1, column 2: expected a number, a string or null, got a boolean true"
    )
    assert _api(b'{"instances": [{"a": [1]}]}') == (
        "row 1, feature 'a': expected a number, a string or null, got a list [1]"
    )
    assert _api(b'{"context": "1, \\"large\\""}') == (
        "row 1, column 2: '\"large\"' holds a quote; text rows are not quoted (write a category bare, "
        'or send one holding a comma or a quote in "instances")'
    )
    assert _api(b'{"instances": [[1, "large", null], {"a": "x"}, [1, 2, 3]]}') == [
        [1.0, "large", None],
        {"a": "x"},
        [1.0, 2.0, 3.0],
    ]
    assert _api(b'{"context": "1, large,\\n2, small, 3"}') == [[1.0, "large", None], [2.0, "small", 3.0]]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"instances": [[9, 9, 9, 9]], "instances": [[5.1, 3.5, 1.4, 0.2]]}', "instances"),
        (b'{"context": "9, 9, 9, 9", "context": "5.1, 3.5, 1.4, 0.2"}', "context"),
    ],
)
def test_a_field_named_twice_is_refused_everywhere(model_server: ModelServer, body: bytes, key: str) -> None:
    # json and orjson keep the last value; the rules refuse the body rather than guess which is meant.
    error = (
        f"the body names {key!r} twice: send exactly one of "
        '{"instances": [[5.1, 3.5, 1.4, 0.2]]} or {"context": "5.1, 3.5, 1.4, 0.2"}'
    )
    assert _api(body) == error
    assert _serve(body, codec.JSON) == error
    assert _asgi(model_server, body, codec.JSON) == (400, {"error": error})


def test_only_the_width_rule_knows_the_model() -> None:
    # The API does not know the model's width, so it holds rows to the first row's; the model server
    # to its feature count. Both name the row.
    body = json.dumps({"context": "1, 2, 3\n1, 2"}).encode()
    assert _api(body) == "row 2 has 2 values; row 1 has 3"
    assert _serve(body, codec.JSON) == (
        "row 1 has 3 values; the model expects 4 (sepal_length, sepal_width, petal_length, petal_width)"
    )


MEGABYTE = "A" * 1_000_000


@pytest.mark.parametrize(
    ("body", "api", "served"),
    [
        # A string may be a category, so only the model server (which knows the types) refuses these.
        (json.dumps({"context": MEGABYTE + ", 3.5, 1.4, 0.2"}), None, "row 1, column 1 (sepal_length): 'AAAA"),
        (json.dumps({"context": "5.1, 3.5, 1.4, " + MEGABYTE}), None, "row 1, column 4 (petal_width): 'AAAA"),
        (json.dumps({"instances": [[5.1, 3.5, 1.4, MEGABYTE]]}), None,
         'row 1, column 4 (petal_width): expected a number, got a string "AAAA'),
        (json.dumps({"instances": [{MEGABYTE: 1}]}), None, "row 1: unknown feature 'AAAA"),
        (json.dumps({MEGABYTE: 1}), "unknown field 'AAAA", "unknown field 'AAAA"),
        (json.dumps({"instances": [[{MEGABYTE: 1}, 1, 2, 3]]}),
         "row 1, column 1: expected a number, a string or null, got an object",
         "row 1, column 1 (sepal_length): expected a number, got an object"),
    ],
)  # fmt: skip
def test_a_megabyte_bad_value_gets_a_short_error_that_still_names_it(
    model_server: ModelServer, body: str, api: str | None, served: str
) -> None:
    raw = body.encode()
    answers = [(_serve(raw, codec.JSON), served)]
    if api is None:
        assert isinstance(_api(raw), list)  # passed on to the model server, which refuses it
    else:
        answers.append((_api(raw), api))
    for error, names in answers:
        assert isinstance(error, str)
        assert error.startswith(names)
        assert "... (" in error and "characters)" in error
        assert len(error) < 200
    status, answer = _asgi(model_server, raw, codec.JSON)
    assert status == 400
    assert len(orjson.dumps(answer)) < 1024
    csv_status, csv_answer = _asgi(model_server, MEGABYTE.encode() + b",3.5,1.4,0.2", codec.CSV)
    assert csv_status == 400
    assert csv_answer["error"] == (
        f"row 1, column 1 (sepal_length): {'A' * 40!r}... (1000000 characters) is not a number "
        "(no header row: every line is a row of numbers)"
    )


def _storing_records(monkeypatch: Any) -> list[dict[str, Any]]:
    """The API Lambda's records, kept in a list instead of DynamoDB (endpoint "e")."""
    stored: list[dict[str, Any]] = []

    def store(record: dict[str, Any], endpoint: str) -> bool:
        stored.append(record)
        return True

    monkeypatch.setattr(handler, "store_record", store)
    monkeypatch.setenv("ENDPOINT_NAME", "e")
    return stored


def test_the_lambda_answers_a_megabyte_bad_value_in_under_a_kibibyte(
    moto_aws: None, monkeypatch: Any
) -> None:
    stored = _storing_records(monkeypatch)
    big = json.dumps({"instances": [[1, {MEGABYTE: 1}]]})
    response = handler.handler({"body": big, "headers": {"Content-Type": "application/json"}}, None)
    assert response["statusCode"] == 400
    assert len(response["body"]) < 1024
    answer = json.loads(response["body"])
    assert answer["error"] == (
        f'row 1, column 2: expected a number, a string or null, got an object {{"{"A" * 38}... '
        "(1000007 characters)"
    )
    # The request is still stored whole: the record is the evidence, the answer need not repeat it.
    assert stored[0]["input"] == big
    # A long Content-Type is cut too.
    response = handler.handler({"body": "{}", "headers": {"Content-Type": "x/" + MEGABYTE}}, None)
    assert response["statusCode"] == 415
    assert len(response["body"]) < 1024


def test_the_lambda_refuses_half_a_surrogate_pair_and_stores_the_request(
    moto_aws: None, monkeypatch: Any
) -> None:
    # "\ud800" is valid JSON but no category: the model could not encode it (a 500, counted by the
    # deployment's alarm). The API refuses it without asking the model, and the record still encodes.
    stored = _storing_records(monkeypatch)
    for body, error in (
        ('{"context": "5.1, \\ud800"}', "row 1, column 2: '\\ud800' is not text"),
        (
            '{"instances": [{"clinic": "\\ud800", "age": 3}]}',
            "row 1, feature 'clinic': '\\ud800' is not text",
        ),
    ):
        response = handler.handler({"body": body, "headers": {"Content-Type": "application/json"}}, None)
        assert response["statusCode"] == 400
        assert json.loads(response["body"])["error"] == error + ": it holds half of a UTF-16 surrogate pair"
        assert stored[-1]["input"] == body
        assert stored[-1]["status_code"] == 400
        item = handler.dynamodb_item(stored[-1])
        assert item["input"] == {"S": body}
        assert orjson.loads(orjson.dumps(item))["output"] == {"S": response["body"]}
