"""The model server (workloads/serve/serve.py) over real HTTP, and its parser, encoder and predictor directly."""

from __future__ import annotations

import asyncio
import csv
import http.client
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from workloads import model_io
from workloads.serve import codec
from workloads.serve.predictor import AffinePredictor, EstimatorPredictor, make_predictor
from workloads.serve.serve import LoadedModel, ModelServer, parse_args

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MAX_BODY = 256 * 1024


def _iris() -> tuple[np.ndarray, np.ndarray]:
    with (REPO_ROOT / "data" / "iris.csv").open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    return np.array([[float(v) for v in r[:-1]] for r in rows]), np.array([r[-1] for r in rows])


def _pipeline(classifier: Any) -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _iris()
    return Pipeline([("scaler", StandardScaler()), ("classifier", classifier)]).fit(x, y)


def _save(directory: Path, estimator: Any) -> Path:
    model_io.save_model(
        directory,
        estimator,
        model_io.ModelMetadata(
            feature_names=FEATURES,
            class_labels=[str(c) for c in estimator.classes_],
            target="species",
            algorithm=type(estimator).__name__,
        ),
    )
    return directory


@pytest.fixture(scope="module")
def estimator() -> Any:
    from sklearn.linear_model import LogisticRegression

    return _pipeline(LogisticRegression(max_iter=1000))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, estimator: Any) -> Path:
    return _save(tmp_path_factory.mktemp("model"), estimator)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def invoke(
        self, body: bytes | str, content_type: str | None = "application/json", accept: str | None = None
    ) -> tuple[int, dict[str, str], Any]:
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        data = body.encode() if isinstance(body, str) else body
        status, hdrs, raw = self.request("POST", "/invocations", data, headers)
        parsed = orjson.loads(raw) if hdrs.get("content-type", "").startswith("application/json") else raw
        return status, hdrs, parsed


def _start(
    tmp_path: Path, env_extra: dict[str, str], *, script: bool = False, wait_for: int | None = 200
) -> Server:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "MODEL_VERSION"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        SAGEMAKER_BIND_TO_HOST="127.0.0.1",
        SAGEMAKER_BIND_TO_PORT=str(port),
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
    )
    env.update(env_extra)
    cmd = (
        [sys.executable, str(REPO_ROOT / "workloads/serve/serve.py")]
        if script
        else [sys.executable, "-m", "workloads.serve.serve"]
    )
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log.read_text()}"
        try:
            status, _, _ = server.request("GET", "/ping")
        except OSError:
            time.sleep(0.05)
            continue
        if wait_for is None or status == wait_for:
            return server
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server never answered /ping {wait_for}:\n{log.read_text()}")


def _stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(
        tmp_path_factory.mktemp("serve"),
        {"SM_MODEL_DIR": str(model_dir), "MODEL_VERSION": "7", "MAX_BODY_BYTES": str(MAX_BODY)},
    )
    yield srv
    _stop(srv)


# --- the HTTP contract -------------------------------------------------------------------------------


def test_ping_answers_200_with_the_model_version(server: Server) -> None:
    status, headers, body = server.request("GET", "/ping")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body) == {"status": "ok", "model_version": "7"}


def test_json_instances_get_label_and_the_estimators_probabilities(server: Server, estimator: Any) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    status, headers, answer = server.invoke(orjson.dumps({"instances": rows}))
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert answer["model_version"] == "7"
    expected = estimator.predict_proba(np.array(rows))
    assert [p["label"] for p in answer["predictions"]] == ["setosa", "virginica", "versicolor"]
    for prediction, probs in zip(answer["predictions"], expected, strict=True):
        assert list(prediction["probabilities"]) == ["setosa", "versicolor", "virginica"]
        assert np.allclose(list(prediction["probabilities"].values()), probs, atol=1e-12)


def test_single_row_context_in_the_seed_format(server: Server, estimator: Any) -> None:
    status, _, answer = server.invoke('{"context": "5.1, 3.5, 1.4, 0.2"}')
    assert status == 200
    [prediction] = answer["predictions"]
    assert prediction["label"] == "setosa"
    expected = estimator.predict_proba(np.array([[5.1, 3.5, 1.4, 0.2]]))[0]
    assert np.allclose(list(prediction["probabilities"].values()), expected, atol=1e-12)


def test_context_with_rows_separated_by_newlines(server: Server) -> None:
    status, _, answer = server.invoke(orjson.dumps({"context": "5.1, 3.5, 1.4, 0.2\n6.7, 3.0, 5.2, 2.3\n"}))
    assert status == 200
    assert [p["label"] for p in answer["predictions"]] == ["setosa", "virginica"]


def test_csv_in_json_out_and_csv_out(server: Server, estimator: Any) -> None:
    body = "5.1,3.5,1.4,0.2\r\n6.7,3.0,5.2,2.3\r\n"
    status, _, answer = server.invoke(body, content_type="text/csv")
    assert status == 200
    assert [p["label"] for p in answer["predictions"]] == ["setosa", "virginica"]

    status, headers, raw = server.invoke(body, content_type="text/csv; charset=utf-8", accept="text/csv")
    assert status == 200
    assert headers["content-type"] == "text/csv; charset=utf-8"
    lines = list(csv.reader(io.StringIO(raw.decode())))
    assert [line[0] for line in lines] == ["setosa", "virginica"]
    expected = estimator.predict_proba(np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
    assert np.allclose([[float(v) for v in line[1:]] for line in lines], expected, atol=1e-12)


def test_a_large_batch_matches_predict_proba_in_json_and_csv(server: Server, estimator: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 8, (2000, 4))
    expected = estimator.predict_proba(x)
    labels = np.array(["setosa", "versicolor", "virginica"])[expected.argmax(axis=1)].tolist()

    status, _, answer = server.invoke(orjson.dumps({"instances": x.tolist()}))
    assert status == 200
    assert [p["label"] for p in answer["predictions"]] == labels
    got = np.array([list(p["probabilities"].values()) for p in answer["predictions"]])
    assert np.allclose(got, expected, atol=1e-12)

    body = "\n".join(",".join(repr(v) for v in row) for row in x.tolist())
    status, _, raw = server.invoke(body, content_type="text/csv", accept="text/csv")
    assert status == 200
    lines = list(csv.reader(io.StringIO(raw.decode())))
    assert [line[0] for line in lines] == labels
    assert np.allclose([[float(v) for v in line[1:]] for line in lines], expected, atol=1e-12)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("text/*", "text/csv"),
        ("text/csv;q=0.5, application/json", "application/json"),
        ("application/json;q=0.2, text/csv;q=0.9", "text/csv"),
        ("application/xml, text/csv;q=0.1", "text/csv"),
    ],
)
def test_accept_picks_the_answer_type(server: Server, accept: str | None, expected: str) -> None:
    status, headers, _ = server.invoke('{"context": "5.1, 3.5, 1.4, 0.2"}', accept=accept)
    assert status == 200
    assert headers["content-type"].split(";")[0] == expected


BAD_INPUTS: list[tuple[str, str | bytes, int, str | None]] = [
    # (content type, body, status, exact error message)
    ("application/json", '{"instances": [[5.1, 3.5, 1.4]]}', 400,
     "row 1 has 3 values; the model expects 4 (sepal_length, sepal_width, petal_length, petal_width)"),
    ("text/csv", "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3,9\n", 400,
     "row 2 has 5 values; the model expects 4 (sepal_length, sepal_width, petal_length, petal_width)"),
    ("text/csv", "5.1,3.5,abc,0.2\n", 400, "row 1, column 3 (petal_length): 'abc' is not a number (no header row: every line is a row of numbers)"),
    ("text/csv", "5.1,3.5,1.4,0.2\n5.1,x,1.4,0.2\n", 400, "row 2, column 2 (sepal_width): 'x' is not a number"),
    ("text/csv", "5.1,3.5,1.4,0.2\n\n5.1,3.5,1.4,0.2\n", 400, "row 2 is empty"),
    ("text/csv", "5.1,nan,1.4,0.2\n", 400, "row 1, column 2 (sepal_width): 'nan' is not a number (no header row: every line is a row of numbers)"),
    ("text/csv", "5.1,3.5,1.4,0.2\n5.1,3.5,-inf,0.2\n", 400, "row 2, column 3 (petal_length): '-inf' is not a number"),
    ("text/csv", b"5.1,3.5,1.4,\xff\n", 400, None),
    ("application/json", '{"context": "5.1, 3.5, 1e999, 0.2"}', 400, "row 1, column 3 (petal_length): '1e999' is not a finite number (too large for a 64-bit float)"),
    ("application/json", '{"context": "5.1, 3.5, Infinity, 0.2"}', 400,
     "row 1, column 3 (petal_length): 'Infinity' is not a number (no header row: every line is a row of numbers)"),
    ("application/json", '{"instances": [[5.1, 3.5, 1e999, 0.2]]}', 400, None),
    ("application/json", '{"instances": [[5.1, 3.5, 1.4, 0.2], [5.1, "3.5", 1.4, 0.2]]}', 400,
     'row 2, column 2 (sepal_width): expected a number, got a string "3.5"'),
    ("application/json", '{"instances": [[5.1, 3.5, true, 0.2]]}', 400, "row 1, column 3 (petal_length): expected a number, got a boolean true"),
    ("application/json", '{"instances": [[5.1, 3.5, null, 0.2]]}', 400, "row 1, column 3 (petal_length): the value is missing; this model was trained without missing values and cannot score one: send a number"),
    ("application/json", '{"instances": [5.1, 3.5, 1.4, 0.2]}', 400, "row 1 must be a list of values or an object naming the features, not a number"),
    ("application/json", '{"instances": []}', 400, "no rows: 'instances' is empty"),
    ("application/json", '{"instances": {"a": 1}}', 400, "'instances' must be a list of rows, not an object"),
    ("application/json", '{"context": ""}', 400, "no rows: the input is empty"),
    ("application/json", '{"context": 5.1}', 400, "'context' must be a string of comma-separated values, not a number"),
    ("application/json", '{"inputs": [[5.1, 3.5, 1.4, 0.2]]}', 400,
     """unknown field 'inputs': send exactly one of {"instances": [[5.1, 3.5, 1.4, 0.2]]} or {"context": "5.1, 3.5, 1.4, 0.2"}"""),
    ("application/json", '{"instances": [[5.1, 3.5, 1.4, 0.2]], "context": "5.1, 3.5, 1.4, 0.2"}', 400,
     """both 'instances' and 'context': send exactly one of {"instances": [[5.1, 3.5, 1.4, 0.2]]} or {"context": "5.1, 3.5, 1.4, 0.2"}"""),
    ("application/json", "[[5.1, 3.5, 1.4, 0.2]]", 400, None),
    ("application/json", '{"instances": [[5.1, 3.5, 1.4, 0.2]', 400, None),
    ("application/json", "", 400, "the request body is empty"),
    ("text/csv", " \n\n", 400, "the request body is empty"),
    ("application/json", '{"instances": [[1e308, 1e308, 1e308, 1e308]]}', 400,
     "row 1: the values are too large in magnitude for the model to score (its probabilities are not finite numbers)"),
    ("application/x-www-form-urlencoded", "a=1", 415,
     "unsupported Content-Type 'application/x-www-form-urlencoded'; send application/json or text/csv"),
    ("text/plain", "5.1,3.5,1.4,0.2", 415, "unsupported Content-Type 'text/plain'; send application/json or text/csv"),
]  # fmt: skip


@pytest.mark.parametrize(("content_type", "body", "status", "message"), BAD_INPUTS)
def test_bad_input_gets_a_4xx_naming_the_problem(
    server: Server, content_type: str, body: str | bytes, status: int, message: str | None
) -> None:
    got, headers, answer = server.invoke(body, content_type=content_type)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert set(answer) == {"error"}
    if message is not None:
        assert answer["error"] == message


@pytest.mark.parametrize(
    ("body", "prefix"),
    [
        (b"5.1,3.5,1.4,\xff\n", "the body is not UTF-8 (invalid byte at offset 12)"),
        (
            b'{"instances": [[5.1, 3.5, 1e999, 0.2]]}',
            "row 1, column 3 (petal_length): the number is not finite",
        ),
        (b"[[5.1, 3.5, 1.4, 0.2]]", "the JSON body must be an object, not a list"),
        (b'{"instances": [[5.1, 3.5, 1.4, 0.2]', "the body is not valid JSON: "),
    ],
)
def test_undecodable_bodies_say_why(server: Server, body: bytes, prefix: str) -> None:
    content_type = "text/csv" if b"{" not in body and b"[" not in body else "application/json"
    status, _, answer = server.invoke(body, content_type=content_type)
    assert status == 400
    assert answer["error"].startswith(prefix), answer


def test_406_when_no_acceptable_answer_type(server: Server) -> None:
    status, _, answer = server.invoke(
        '{"context": "5.1, 3.5, 1.4, 0.2"}', accept="application/xml, text/csv;q=0"
    )
    assert status == 406
    assert answer == {
        "error": "cannot answer in any type of Accept 'application/xml, text/csv;q=0'; "
        "this server produces application/json or text/csv"
    }


def test_a_body_over_max_body_bytes_is_413_whether_declared_or_chunked(server: Server) -> None:
    row = b"5.1,3.5,1.4,0.2\n"
    big = row * (MAX_BODY // len(row) + 1)
    status, _, answer = server.invoke(big, content_type="text/csv")
    assert status == 413
    assert answer == {"error": f"the request body is {len(big)} bytes or more; the limit is {MAX_BODY} bytes"}

    # No Content-Length: the server counts as it reads and stops at the limit.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/invocations",
            body=iter([row * 1024] * (MAX_BODY // (len(row) * 1024) + 2)),
            headers={"Content-Type": "text/csv"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        assert resp.status == 413
        assert orjson.loads(resp.read())["error"].endswith(f"the limit is {MAX_BODY} bytes")
    finally:
        conn.close()
    # Just under the limit is served.
    fits = row * (MAX_BODY // len(row))
    status, _, answer = server.invoke(fits, content_type="text/csv")
    assert status == 200
    assert len(answer["predictions"]) == MAX_BODY // len(row)


def test_unknown_paths_are_404_and_wrong_methods_405(server: Server) -> None:
    status, _, body = server.request("GET", "/predict")
    assert status == 404
    assert orjson.loads(body) == {
        "error": "no such path '/predict'; this server answers /ping and /invocations"
    }
    status, headers, body = server.request("GET", "/invocations")
    assert (status, headers["allow"]) == (405, "POST")
    assert orjson.loads(body) == {"error": "GET is not allowed on /invocations; use POST"}
    status, headers, body = server.request("POST", "/ping", b"{}")
    assert (status, headers["allow"]) == (405, "GET")
    assert orjson.loads(body) == {"error": "POST is not allowed on /ping; use GET"}


def test_a_hundred_bad_requests_in_a_row_do_not_hurt_it(server: Server) -> None:
    statuses = []
    for i in range(100):
        content_type, body, _, _ = BAD_INPUTS[i % len(BAD_INPUTS)]
        statuses.append(server.invoke(body, content_type=content_type)[0])
    assert all(400 <= s < 500 for s in statuses), statuses
    assert server.proc.poll() is None
    assert server.request("GET", "/ping")[0] == 200
    status, _, answer = server.invoke('{"context": "6.7, 3.0, 5.2, 2.3"}')
    assert (status, answer["predictions"][0]["label"]) == (200, "virginica")
    assert "Traceback" not in server.log.read_text()


def test_a_bad_model_dir_keeps_the_server_up_answering_503_with_the_reason(tmp_path: Path) -> None:
    # Started as a script, with two workers: each answers 503 with the same reason.
    missing = tmp_path / "nowhere"
    srv = _start(
        tmp_path,
        {"SM_MODEL_DIR": str(missing), "SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
        script=True,
        wait_for=503,
    )
    try:
        expected = (
            f"the model in {missing} could not be loaded: {missing}/metadata.json is missing: "
            "not a model directory written by this platform"
        )
        # Each worker loads on its own; once both have tried, every answer carries the reason and says
        # the failure is final, so a deployer need not wait for a load that will never succeed.
        failed = {"error": expected, "state": "failed"}
        answers: list[tuple[int, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, _, body = srv.request("GET", "/ping")
            answers = [*answers[-9:], (status, orjson.loads(body))]
            if len(answers) == 10 and all(a == (503, failed) for a in answers):
                break
            time.sleep(0.05)
        assert answers[-1] == (503, failed)
        assert all(a[0] == 503 for a in answers)
        status, _, answer = srv.invoke('{"context": "5.1, 3.5, 1.4, 0.2"}')
        assert (status, answer) == (503, {"error": expected})
        assert srv.proc.poll() is None
    finally:
        _stop(srv)


def test_a_model_whose_estimator_disagrees_with_its_metadata_fails_requests_not_clients(
    tmp_path: Path,
) -> None:
    # Fit on 3 features but metadata names 4: loads (so /ping is 200) and every prediction is a 500,
    # the model's fault - which is what the deployer's error-rate alarm must see.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _iris()
    broken = Pipeline([("scaler", StandardScaler()), ("classifier", LogisticRegression())]).fit(x[:, :3], y)
    srv = _start(tmp_path, {"SM_MODEL_DIR": str(_save(tmp_path / "model", broken))})
    try:
        status, _, answer = srv.invoke('{"context": "5.1, 3.5, 1.4, 0.2"}')
        assert (status, answer) == (500, {"error": "internal error while predicting: ValueError"})
        assert srv.request("GET", "/ping")[0] == 200
    finally:
        _stop(srv)


def test_ping_is_503_while_the_model_loads(model_dir: Path) -> None:
    app = ModelServer(str(model_dir), "3", MAX_BODY)

    async def call(method: str, path: str) -> tuple[int, dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b'{"context": "5.1, 3.5, 1.4, 0.2"}', "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        await app({"type": "http", "path": path, "method": method, "headers": []}, receive, send)
        return sent[0]["status"], orjson.loads(sent[1]["body"])

    assert asyncio.run(call("GET", "/ping")) == (
        503,
        {"error": f"the model in {model_dir} is loading", "state": "loading"},
    )
    assert asyncio.run(call("POST", "/invocations")) == (
        503,
        {"error": f"the model in {model_dir} is loading"},
    )
    app.load()
    assert asyncio.run(call("GET", "/ping")) == (200, {"status": "ok", "model_version": "3"})
    status, answer = asyncio.run(call("POST", "/invocations"))
    assert (status, answer["predictions"][0]["label"]) == (200, "setosa")


def test_ping_says_a_failed_load_is_final(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    app = ModelServer(str(missing), "3", MAX_BODY)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    app.load()
    asyncio.run(app({"type": "http", "path": "/ping", "method": "GET", "headers": []}, receive, send))
    assert (sent[0]["status"], orjson.loads(sent[1]["body"])) == (
        503,
        {
            "error": f"the model in {missing} could not be loaded: {missing}/metadata.json is missing: "
            "not a model directory written by this platform",
            "state": "failed",
        },
    )


# --- settings ----------------------------------------------------------------------------------------


def test_settings_come_from_sagemakers_environment_variables() -> None:
    args = parse_args(
        [],
        {
            "SM_MODEL_DIR": "/m",
            "MODEL_VERSION": "12",
            "SAGEMAKER_BIND_TO_HOST": "127.0.0.1",
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "MAX_BODY_BYTES": "1000",
        },
    )
    assert (args.model_dir, args.model_version, args.host, args.port, args.workers, args.max_body_bytes) == (
        "/m",
        "12",
        "127.0.0.1",
        9090,
        3,
        1000,
    )
    defaults = parse_args([], {})
    assert (defaults.model_dir, defaults.model_version, defaults.host, defaults.port) == (
        "/opt/ml/model",
        "unknown",
        "0.0.0.0",
        8080,
    )
    assert (defaults.workers, defaults.max_body_bytes) == (os.cpu_count(), 6 * 1024 * 1024)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SAGEMAKER_BIND_TO_PORT": "http"}, "port must be an integer, got 'http'"),
        ({"SAGEMAKER_BIND_TO_PORT": "70000"}, "port must be at most 65535, got 70000"),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "0"}, "SAGEMAKER_MODEL_SERVER_WORKERS must be positive, got 0"),
        ({"MAX_BODY_BYTES": "6MB"}, "MAX_BODY_BYTES must be an integer, got '6MB'"),
    ],
)
def test_bad_settings_stop_the_server_with_a_message(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args([], env)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# --- parsing, directly -------------------------------------------------------------------------------


def test_the_csv_fast_path_and_the_exact_parser_agree_on_random_bodies() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        x = rng.normal(0, 10.0 ** rng.integers(-3, 6), (int(rng.integers(1, 40)), 4))
        formatter = rng.choice(["repr", "g", "e", "spaced"])
        rows = []
        for row in x.tolist():
            if formatter == "repr":
                rows.append(",".join(repr(v) for v in row))
            elif formatter == "g":
                rows.append(",".join(f"{v:g}" for v in row))
            elif formatter == "e":
                rows.append(",".join(f"{v:.6E}" for v in row))
            else:
                rows.append(", ".join(repr(v) for v in row))
        end = str(rng.choice(["\n", "\r\n"]))
        body = (end.join(rows) + rng.choice(["", end, end + end])).encode()
        fast = codec.parse_csv(body, FEATURES)
        exact = codec.rows_from_csv_text(body.decode(), FEATURES)
        assert fast.dtype == np.float64
        assert np.array_equal(fast, exact)


def test_the_json_fast_path_and_the_exact_parser_agree() -> None:
    rng = np.random.default_rng(12)
    for _ in range(100):
        x = rng.normal(0, 100, (int(rng.integers(1, 40)), 4))
        rows: list[list[float | int]] = x.tolist()
        rows[0][0] = int(rng.integers(-5, 5))  # integers are numbers too
        body = orjson.dumps({"instances": rows})
        assert np.array_equal(codec.parse_json(body, FEATURES), codec.rows_from_json(body, FEATURES))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # Inputs the fast path must hand to the exact parser, which names the row.
        (b'{"instances": [[1, 2, 3, 4], [1, 2, 3]]}', "row 2 has 3 values"),
        (b'{"instances": [[1, 2, 3, 4, 5], [1, 2, 3]]}', "row 1 has 5 values"),
        (
            b'{"instances": [[1, 2, 3, 4], [[1], 2, 3, 4]]}',
            "row 2, column 1 (sepal_length): expected a number, got a list [1]",
        ),
        (
            b'{"instances": [[1, 2, 3, 4], [1, 2, 3, false]]}',
            "row 2, column 4 (petal_width): expected a number, got a boolean",
        ),
        (
            b'{"instances": [[1, 2, 3, 4], 7]}',
            "row 2 must be a list of values or an object naming the features, not a number",
        ),
        (
            b'{"instances": [[1, 2, 3, 4], [1, 2, 3, 1e400]]}',
            "row 2, column 4 (petal_width): the number is not finite",
        ),
        (b'{"instances": [[1, 2, 3, 4], [1, 2, 3, 123456789012345678901234567890]]}', None),
        # Past Python's 4300-digit integer conversion: it said so, and to call sys.set_int_max_str_digits.
        (
            b'{"instances": [[1, 2, 3, 4], [1, 2, 3, -' + b"9" * 5000 + b"]]}",
            "row 2, column 4 (petal_width): the number is not finite (too large for a 64-bit float)",
        ),
    ],
)
def test_json_inputs_the_fast_path_cannot_take_are_refused_by_row(body: bytes, message: str | None) -> None:
    if message is None:  # a big integer is a valid (finite) number
        assert codec.parse_json(body, FEATURES)[1, 3] == pytest.approx(1.2345678901234568e29)
        return
    with pytest.raises(codec.RequestError) as err:
        codec.parse_json(body, FEATURES)
    assert err.value.status == 400
    assert message in err.value.message


@pytest.mark.parametrize(
    ("features", "body"),
    [
        # Bodies of nothing but numbers and lists whose numbers flatten to whole rows of the width, so
        # only the brackets and commas tell that the rows are wrong.
        (["a", "b"], b'{"instances": [[1, [2, 3]], 4, [5, 6]]}'),
        (["a", "b"], b'{"instances": [[1, [2], 3], 4]}'),  # one comma in each (open, close) pair
        (["a", "b"], b'{"instances": [[1, 2, 3], [4]]}'),
        (["a", "b"], b'{"instances": [[1], [2, 3], [4]]}'),
        (["a", "b"], b'{"instances": [[1, 2], [[3, 4]]]}'),
        (["a", "b"], b'{"instances": [[1, 2, 3, 4]]}'),
        (["a", "b"], b'{"instances": [1, 2, [3, 4]]}'),
        (["a", "b"], b'{"instances": [[1, 2], 3, 4]}'),
        (["a"], b'{"instances": [[], 5, [6]]}'),
        (["a"], b'{"instances": [[5, 6], []]}'),
        (FEATURES, b'{"instances": [1, 2, 3, 4]}'),
    ],
)
def test_rows_hidden_by_a_flattening_parse_are_refused_as_the_exact_parser_refuses_them(
    features: list[str], body: bytes
) -> None:
    body = body[:-1] + b" " * codec.SIMDJSON_BYTES + b"}"  # big enough for simdjson's path
    flat = codec.simdjson.Parser().parse(body)["instances"].as_buffer(of_type="d")  # type: ignore[index,union-attr]
    numbers = len(np.frombuffer(flat, dtype=np.float64))
    assert numbers and numbers % len(features) == 0  # the flattened numbers alone would make whole rows
    with pytest.raises(codec.RequestError) as fast:
        codec.parse_json(body, features)
    with pytest.raises(codec.RequestError) as exact:
        codec.rows_from_json(body, features)
    assert (fast.value.status, fast.value.message) == (exact.value.status, exact.value.message)
    assert fast.value.status == 400


def test_a_few_numeric_rows_are_parsed_by_orjson_where_simdjson_costs_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # simdjson and the numpy proof of the rows cost ~11 us more than orjson for one row (a single-row
    # request's parse went from 5 to 16 us when every numeric body took that path).
    def not_here(body: bytes, n_features: int) -> None:
        raise AssertionError(f"a {len(body)}-byte body went to simdjson")

    monkeypatch.setattr(codec, "_numeric_instances", not_here)
    body = b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6, 2.2, 4, 1]]}'
    assert codec.parse_json(body, FEATURES).tolist() == [[5.1, 3.5, 1.4, 0.2], [6.0, 2.2, 4.0, 1.0]]
    with pytest.raises(codec.RequestError, match="row 2 has 3 values"):
        codec.parse_json(b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6, 2.2, 4]]}', FEATURES)


def _numbers_body(rows: list[list[str]], spaced: bool) -> bytes:
    sep = ", " if spaced else ","
    inner = sep.join("[" + sep.join(row) + "]" for row in rows)
    return ('{"instances": [' + inner + "]}" if spaced else '{"instances":[' + inner + "]}").encode()


def test_numeric_rows_are_read_to_the_bit_as_the_exact_parser_reads_them_and_without_python_floats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    edge = [
        "0", "-0", "-0.0", "5e-324", "4.9e-324", "1e-320", "2.2250738585072011e-308",
        "1.7976931348623157e308", "9007199254740993", "18446744073709551615", "-9223372036854775808",
        "0.1e1", "1E+2", "1e-2", "123456789.123456789", "0.30000000000000004", "7", "-12",
    ]  # fmt: skip
    rng = np.random.default_rng(21)
    doubles = rng.normal(0, 1, 400) * 10.0 ** rng.integers(-300, 300, 400)
    texts = edge + [repr(v) for v in doubles[:200].tolist()] + [f"{v:.25e}" for v in doubles[200:].tolist()]
    texts += [str(v) for v in rng.integers(-(2**62), 2**62, 38)]
    assert len(texts) % 4 == 0
    rows = [texts[i : i + 4] for i in range(0, len(texts), 4)]
    # The exact parser (the API's rules) reads numbers as float() does, and "-0", an integer, as 0.
    expected = codec.rows_from_json(_numbers_body(rows, False), FEATURES)
    as_float = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
    integer_minus_zero = np.array([[v == "-0" for v in row] for row in rows])
    assert integer_minus_zero.sum() == 1 and not np.signbit(expected[integer_minus_zero]).any()
    assert expected[~integer_minus_zero].tobytes() == as_float[~integer_minus_zero].tobytes()
    # Neither orjson (Python floats) nor the exact parser: the numbers go straight into doubles.
    monkeypatch.setattr(codec, "orjson", None)
    monkeypatch.setattr(codec, "rows_from_json", None)
    assert len(_numbers_body(rows, False)) >= codec.SIMDJSON_BYTES  # simdjson's path, not orjson's
    for spaced in (False, True):
        got = codec.parse_json(_numbers_body(rows, spaced), FEATURES)
        assert got.dtype == np.float64 and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()
    # CSV too, where the exact parser reads "-0" as -0.0 and the fast path as 0.0 (equal numbers; + 0.0
    # makes every zero +0.0 for the comparison of bits).
    csv_body = "\n".join(",".join(row) for row in rows).encode()
    got = codec.parse_csv(csv_body, FEATURES)
    assert (got + 0.0).tobytes() == (as_float + 0.0).tobytes()


def test_numeric_rows_parsed_on_many_threads_at_once_are_each_their_own_in_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies = [
        orjson.dumps({"instances": [[float(t), float(i), 1.5, -2.0] for i in range(200 + t)]})
        for t in range(4)
    ]
    assert min(map(len, bodies)) >= codec.SIMDJSON_BYTES  # simdjson's path, not orjson's
    expected = [codec.rows_from_json(body, FEATURES) for body in bodies]
    start = threading.Barrier(len(bodies))
    wrong: list[str] = []
    exact_calls: list[int] = []
    rows_from_json = codec.rows_from_json

    def exact(body: bytes, signature: Any) -> np.ndarray:
        exact_calls.append(len(body))
        return rows_from_json(body, signature)

    # A parser shared by threads would refuse to parse while another thread's document is alive, and
    # send the body to the exact parser: the answers would still be right, only slow.
    monkeypatch.setattr(codec, "rows_from_json", exact)

    def parse_many(t: int) -> None:
        start.wait(timeout=60)
        for _ in range(300):
            got = codec.parse_json(bodies[t], FEATURES)
            if not np.array_equal(got, expected[t]):
                wrong.append(f"thread {t} got rows of shape {got.shape} starting {got[0].tolist()}")
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=parse_many, args=(t,)) for t in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == []
    assert exact_calls == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"1,2,3,4", [[1, 2, 3, 4]]),
        (b" 1 , 2 ,3, 4 \n5,6,7,8\n", [[1, 2, 3, 4], [5, 6, 7, 8]]),
        (b"1,2,3,4\r\n5,6,7,8\r\n", [[1, 2, 3, 4], [5, 6, 7, 8]]),
        (b"1.,+2,.5,-1E+2", [[1, 2, 0.5, -100]]),  # decimal forms JSON does not have
        (b"\t1\t,2,3,4", [[1, 2, 3, 4]]),
    ],
)
def test_csv_forms_outside_the_fast_path_parse_exactly(body: bytes, expected: list[list[float]]) -> None:
    assert codec.parse_csv(body, FEATURES).tolist() == expected


def test_a_blank_first_line_is_an_empty_row() -> None:
    with pytest.raises(codec.RequestError, match="row 1 is empty"):
        codec.parse_csv(b"\n1,2,3,4\n", FEATURES)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "application/json"),
        ("application/json", "application/json"),
        ("application/json; charset=utf-8", "application/json"),
        ("TEXT/CSV", "text/csv"),
    ],
)
def test_request_format(header: str | None, expected: str) -> None:
    assert codec.request_format(header) == expected


def test_request_format_refuses_other_types_with_415() -> None:
    with pytest.raises(codec.RequestError) as err:
        codec.request_format("")
    assert (err.value.status, err.value.message) == (
        415,
        "unsupported Content-Type '(empty)'; send application/json or text/csv",
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/*", "application/json"),
        ("text/csv, application/json", "text/csv"),
        ("application/json;q=0.5, */*;q=0.6", "application/json"),
        ("text/html, */*;q=0.1", "application/json"),
        ("text/csv;q=bogus, application/json;q=0.1", "application/json"),
    ],
)
def test_response_format(header: str, expected: str) -> None:
    assert codec.response_format(header) == expected


# --- encoding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [["setosa", "versicolor", "virginica"], ['a"b', "c%sd é,f", "\\"]])
def test_batch_encoders_give_the_same_answers_as_the_per_row_ones(labels: list[str]) -> None:
    encoder = codec.Encoder(labels, 'v"1')
    probs = np.random.default_rng(5).dirichlet([0.3, 1, 3], 300)
    probs[7] = [1e-300, 0.5, 0.5]  # a tie: the first of the tied classes wins, as in argmax
    rows = probs.tolist()
    winners = [int(w) for w in probs.argmax(axis=1)]
    batch = orjson.loads(encoder.json_batch(probs))
    assert batch == orjson.loads(encoder.json_rows(rows, winners))
    assert batch["model_version"] == 'v"1'
    assert batch["predictions"][7]["label"] == labels[1]
    assert [list(p["probabilities"]) for p in batch["predictions"]] == [labels] * 300
    assert [list(p["probabilities"].values()) for p in batch["predictions"]] == rows

    def read(data: bytes) -> list[list[Any]]:
        return [[r[0], *map(float, r[1:])] for r in csv.reader(io.StringIO(data.decode()))]

    assert read(encoder.csv_batch(probs)) == read(encoder.csv_rows(rows, winners))
    assert read(encoder.csv_batch(probs)) == [[labels[w], *r] for w, r in zip(winners, rows, strict=True)]


@pytest.mark.parametrize("classes", [2, 3, 7])
@pytest.mark.parametrize("n_rows", [1, 2, 33, 1000])
def test_the_json_batch_encoder_writes_the_bytes_orjson_writes_for_the_same_answer(
    classes: int, n_rows: int
) -> None:
    labels = [f"class {k}" for k in range(classes)]
    encoder = codec.Encoder(labels, "v7")
    rng = np.random.default_rng(classes * 1000 + n_rows)
    probs = rng.dirichlet(np.full(classes, 0.5), n_rows)
    probs[0, 0] = 5e-324  # the smallest subnormal, written as orjson writes it
    rows = probs.tolist()
    winners = [int(w) for w in probs.argmax(axis=1)]
    expected = orjson.dumps(
        {
            "model_version": "v7",
            "predictions": [
                {"label": labels[w], "probabilities": dict(zip(labels, row, strict=True))}
                for row, w in zip(rows, winners, strict=True)
            ],
        }
    )
    assert encoder.json_batch(probs) == expected
    assert encoder.encode(probs, codec.JSON) == expected


@pytest.mark.parametrize("n_rows", [0, 1, 31, 32, 500])
def test_the_regression_encoder_writes_the_bytes_orjson_writes_for_the_same_answer(n_rows: int) -> None:
    encoder = codec.Encoder([], "r1", regression=True)
    values = np.random.default_rng(n_rows).normal(150, 80, (n_rows, 1))
    expected = orjson.dumps(
        {"model_version": "r1", "predictions": [{"value": v} for (v,) in values.tolist()]}
    )
    assert encoder.encode(values, codec.JSON) == expected
    assert encoder.encode(values.tolist(), codec.JSON) == expected


def test_non_finite_probabilities_are_found_by_row() -> None:
    probs = np.full((5, 3), 1 / 3)
    assert codec.first_non_finite_row(probs) is None
    probs[3, 1] = np.nan
    assert codec.first_non_finite_row(probs) == 4
    assert codec.first_non_finite_row([[0.5, 0.5, 0.0], [0.1, np.inf, 0.0]]) == 2


# --- the fast predictor ------------------------------------------------------------------------------


def _random_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    typical = rng.normal(5, 3, (n, 4))
    wide = rng.uniform(-1e6, 1e6, (n, 4))
    extreme = 10.0 ** rng.uniform(-300, 150, (n, 4)) * rng.choice([-1, 1], (n, 4))
    zeros = np.zeros((1, 4))
    return np.concatenate([typical, wide, extreme, zeros])


def test_fast_path_equals_predict_proba_on_many_rows(estimator: Any) -> None:
    predictor = make_predictor(estimator, 4)
    assert isinstance(predictor, AffinePredictor)
    x = _random_rows(3000, seed=1)
    expected = estimator.predict_proba(x)
    assert np.allclose(predictor.predict_batch(x), expected, rtol=0, atol=1e-9)
    rows = np.array([predictor.predict_row(row) for row in x.tolist()])
    assert np.allclose(rows, expected, rtol=0, atol=1e-9)
    # The extreme rows really do push probabilities to the edges, so the comparison covers them.
    assert (expected.max(axis=1) == 1.0).sum() > 1000


def test_fast_path_folds_scalers_without_centering_or_scaling_and_a_bare_model() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y = _iris()
    x = _random_rows(500, seed=2)
    for estimator in (
        Pipeline([("s", StandardScaler(with_mean=False)), ("c", LogisticRegression(max_iter=1000))]),
        Pipeline([("s", StandardScaler(with_std=False)), ("c", LogisticRegression(max_iter=1000))]),
        Pipeline([("s", "passthrough"), ("c", LogisticRegression(max_iter=1000))]),
        LogisticRegression(max_iter=1000),
    ):
        estimator.fit(x_train, y)
        predictor = make_predictor(estimator, 4)
        assert isinstance(predictor, AffinePredictor)
        assert np.allclose(predictor.predict_batch(x), estimator.predict_proba(x), rtol=0, atol=1e-9)


def test_fast_path_for_two_classes_uses_the_logistic_function() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y = _iris()
    binary = np.where(y == "setosa", "setosa", "other")
    estimator = Pipeline([("s", StandardScaler()), ("c", LogisticRegression())]).fit(x_train, binary)
    predictor = make_predictor(estimator, 4)
    assert isinstance(predictor, AffinePredictor) and predictor.binary
    x = _random_rows(1000, seed=3)
    expected = estimator.predict_proba(x)
    assert np.allclose(predictor.predict_batch(x), expected, rtol=0, atol=1e-9)
    assert np.allclose([predictor.predict_row(r) for r in x.tolist()], expected, rtol=0, atol=1e-9)


def test_other_estimators_fall_back_to_their_own_predict_proba() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.tree import DecisionTreeClassifier

    x = np.random.default_rng(4).normal(5, 3, (200, 4))
    tree = _pipeline(DecisionTreeClassifier(random_state=0))
    predictor = make_predictor(tree, 4)
    assert isinstance(predictor, EstimatorPredictor)
    assert predictor.kind == "estimator.predict_proba"
    assert np.array_equal(predictor.predict_batch(x), tree.predict_proba(x))
    assert predictor.predict_row(x[0].tolist()) == tree.predict_proba(x[:1])[0].tolist()

    from sklearn.pipeline import Pipeline

    x_train, y = _iris()
    other_scaler = Pipeline([("s", MinMaxScaler()), ("c", LogisticRegression(max_iter=1000))]).fit(x_train, y)
    assert isinstance(make_predictor(other_scaler, 4), EstimatorPredictor)

    class Tweaked(LogisticRegression):  # a subclass may change predict_proba: never folded
        pass

    assert isinstance(make_predictor(Tweaked(max_iter=1000).fit(x_train, y), 4), EstimatorPredictor)
    # Width disagreeing with the metadata: not folded, so predict_proba refuses the request itself.
    assert isinstance(make_predictor(LogisticRegression().fit(x_train[:, :3], y), 4), EstimatorPredictor)


def test_an_estimator_without_predict_proba_is_refused_at_load() -> None:
    from sklearn.svm import LinearSVC

    x_train, y = _iris()
    with pytest.raises(
        TypeError, match="LinearSVC has no predict_proba; serving answers class probabilities"
    ):
        make_predictor(LinearSVC().fit(x_train, y), 4)


def test_the_served_model_uses_the_fast_path(server: Server) -> None:
    assert "predictor: affine fast path" in server.log.read_text()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_values_a_fallback_model_refuses_are_the_clients_400_naming_the_row(tmp_path: Path) -> None:
    # A tree casts to float32: 1e39 is a finite float64 it cannot take. That is the request's fault (the
    # model scores other rows), so it is a 400 naming the row, not a 500.
    from sklearn.tree import DecisionTreeClassifier

    # skops' trusted set (model_io) does not include tree internals, so the model is set in directly.
    tree = _pipeline(DecisionTreeClassifier(random_state=0))
    metadata = model_io.ModelMetadata(
        feature_names=FEATURES,
        class_labels=[str(c) for c in tree.classes_],
        target="species",
        algorithm="tree",
    )
    app = ModelServer(str(tmp_path), "1", MAX_BODY)
    app.model = LoadedModel(make_predictor(tree, 4), metadata, codec.Encoder(metadata.class_labels, "1"))

    async def invoke(body: bytes) -> tuple[int, dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "path": "/invocations",
            "method": "POST",
            "headers": [(b"content-type", b"text/csv")],
        }
        await app(scope, receive, send)
        return sent[0]["status"], orjson.loads(sent[1]["body"])

    status, answer = asyncio.run(invoke(b"5.1,3.5,1.4,0.2\n5.1,3.5,1e39,0.2\n"))
    assert status == 400
    assert answer["error"].startswith(
        "row 2: the model cannot score these values: Input X contains infinity or a value too large"
    )
    status, answer = asyncio.run(invoke(b"5.1,3.5,1.4,0.2\n"))
    assert (status, answer["predictions"][0]["label"]) == (200, "setosa")
