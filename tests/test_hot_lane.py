"""The model server's hot lane (workloads/serve/hot_lane.py): the same answers as the ASGI path, byte for
byte but the Date header; a connection's answers in its order, also when pipelined and mixed with
requests that take the ASGI path; requests that arrive together scored in one call only for a model the
build found batch-invariant, and a request the model refuses in such a batch answered on its own.
(A half-sent request in the lane gets its 408: test_http_limits' subprocess test, which runs the lane.)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from local_daemon_helpers import build_model, train_forest
from test_http_limits import CEILING, Background, HeldPredictor

from workloads.serve import hot_lane, serve
from workloads.serve.http_timeouts import TimeoutHttpToolsProtocol
from workloads.serve.predictor import InputRejectedError
from workloads.serve.serve import LoadedModel, ModelServer

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 4096  # small, so a body over the limit is cheap to send


def _row_request(row: list[float], *, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"instances": [row]})
    return (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def _request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


CORPUS: dict[str, bytes] = {
    "ping": _request("GET", "/ping"),
    "one row, request id": _row_request([5.1, 3.5, 1.4, 0.2], extra=b"X-Request-Id: abc-1\r\n"),
    "sagemaker inference id": _row_request(
        [6.7, 3.0, 5.2, 2.3], extra=b"X-Amzn-SageMaker-Inference-Id: i-9\r\n"
    ),
    "three rows as csv out": _request(
        "POST",
        "/invocations",
        b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]}',
        {"Content-Type": "application/json", "Accept": "text/csv"},
    ),
    "csv in": _request(
        "POST", "/invocations", b"5.1,3.5,1.4,0.2\n6.0,2.2,4.0,1.0\n", {"Content-Type": "text/csv"}
    ),
    "named features": _request(
        "POST",
        "/invocations",
        b'{"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}',
        {"Content-Type": "application/json"},
    ),
    "context": _request(
        "POST", "/invocations", b'{"context": "5.1, 3.5, 1.4, 0.2"}', {"Content-Type": "application/json"}
    ),
    "no content type": _request("POST", "/invocations", b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'),
    "bad json": _request(
        "POST", "/invocations", b'{"instances": [[5.1,', {"Content-Type": "application/json"}
    ),
    "wrong width": _request("POST", "/invocations", b"1,2,3", {"Content-Type": "text/csv"}),
    "null number": _request(
        "POST",
        "/invocations",
        b'{"instances": [[null, 3.5, 1.4, 0.2]]}',
        {"Content-Type": "application/json"},
    ),
    "empty body": _request("POST", "/invocations", b"", {"Content-Type": "text/csv"}),
    "415": _request("POST", "/invocations", b"1,2,3,4", {"Content-Type": "text/plain"}),
    "406": _request("POST", "/invocations", b"1,2,3,4", {"Content-Type": "text/csv", "Accept": "image/png"}),
    "over the body limit": _request(
        "POST", "/invocations", b"5.1,3.5,1.4,0.2\n" * 400, {"Content-Type": "text/csv"}
    ),
    "connection close": _request("GET", "/ping", headers={"Connection": "close"}),
    "http/1.0": b"POST /invocations HTTP/1.0\r\nContent-Type: text/csv\r\nContent-Length: 7\r\n\r\n1,2,3,4",
    # The ASGI path's, for comparison in order below.
    "get invocations": _request("GET", "/invocations"),
    "post ping": _request("POST", "/ping", b"{}"),
    "no such path": _request("GET", "/nope"),
    "a query string": _request("POST", "/invocations?x=1", b"1,2,3,4", {"Content-Type": "text/csv"}),
}


Raw = tuple[int, list[tuple[str, str]], bytes]


def _read_answers(sock: socket.socket, count: int) -> list[Raw]:
    """`count` HTTP responses from sock: (status, headers in order without Date, body)."""
    buffer = b""
    answers: list[Raw] = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(answers)} of {count} answers: {buffer[:200]!r}"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = [(k, v) for k, _, v in (line.partition(": ") for line in lines[1:])]
        length = int({k.lower(): v for k, v in headers}["content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            buffer += chunk
        body, buffer = buffer[:length], buffer[length:]
        kept = [(k.lower(), v) for k, v in headers if k.lower() != "date"]
        answers.append((int(lines[0].split()[1]), kept, body))
    return answers


def _exchange(port: int, data: bytes, count: int = 1) -> list[Raw]:
    with socket.create_connection(("127.0.0.1", port), timeout=CEILING) as sock:
        sock.sendall(data)
        return _read_answers(sock, count)


@pytest.fixture(scope="module")
def forest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random forest trained by the platform's build: a batch-invariant graph."""
    return train_forest(tmp_path_factory.mktemp("forest"))


def _server(model_dir: Path) -> ModelServer:
    app = ModelServer(str(model_dir), "7", MAX_BODY)
    app.load()
    assert app.model is not None, app.not_ready
    return app


class CountingLanes:
    """How many answers the lane wrote (so a test of the lane can tell that it ran)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = hot_lane.HotLaneProtocol.write_answer

        def counted(protocol: Any, *args: Any) -> None:
            self.count += 1
            original(protocol, *args)

        monkeypatch.setattr(hot_lane.HotLaneProtocol, "write_answer", counted)


class RecordingPredictor:
    """The real predictor; records each call's row count. A row whose first value is 99 is refused as
    the estimator would refuse it (InputRejectedError), alone or in a batch."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def _refuse(self, x: np.ndarray) -> None:
        for number, row in enumerate(x, start=1):
            if row[0] == 99:
                raise InputRejectedError(number, "99 is refused here")

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.calls.append(len(x))
        self._refuse(x)
        return np.asarray(self.inner.predict_batch(x))

    def predict_row(self, row: list[float]) -> list[float]:
        with self.lock:
            self.calls.append(1)
        self._refuse(np.asarray([row]))
        return list(self.inner.predict_row(row))


def _recording(app: ModelServer) -> RecordingPredictor:
    assert app.model is not None
    recorder = RecordingPredictor(app.model.predictor)
    app.model = LoadedModel(recorder, app.model.metadata, app.model.encoder)
    return recorder


@pytest.fixture(params=["forest", "logistic"])
def model_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    if request.param == "forest":
        yield request.getfixturevalue("forest_dir")
    else:
        yield build_model(tmp_path / "model")


def test_the_lane_answers_byte_for_byte_as_the_asgi_path(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lanes = CountingLanes(monkeypatch)
    with (
        Background(_server(model_dir), http=hot_lane.HotLaneProtocol, proxy_headers=False) as lane,
        Background(_server(model_dir), http=TimeoutHttpToolsProtocol) as asgi,
    ):
        for name, data in CORPUS.items():
            ours, theirs = _exchange(lane.port, data), _exchange(asgi.port, data)
            assert ours == theirs, name
    # Every request but the last four took the lane (the over-the-limit one went the ASGI way too).
    assert lanes.count == len(CORPUS) - 5


def test_pipelined_requests_are_answered_in_order_and_scored_together(
    forest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 5.0, 1.9]]
    requests = [
        _row_request(rows[0]),
        _row_request(rows[1]),
        CORPUS["wrong width"],
        CORPUS["ping"],
        _row_request(rows[2]),
        CORPUS["no such path"],  # the ASGI path, so the lane's answers before it must go first
        _row_request(rows[3]),
    ]
    app = _server(forest_dir)
    assert app.model is not None and app.model.batches
    with Background(app, http=hot_lane.HotLaneProtocol, proxy_headers=False) as server:
        alone = [_exchange(server.port, data)[0] for data in requests]
        recorder = _recording(app)
        lanes = CountingLanes(monkeypatch)
        together = _exchange(server.port, b"".join(requests), len(requests))
    assert together == alone
    assert [status for status, _, _ in together] == [200, 200, 400, 200, 200, 404, 200]
    # The three rows before the ASGI request arrived together: one call of three rows. The last one
    # came behind the ASGI request, so it took that path too, alone.
    assert recorder.calls == [3, 1]
    assert lanes.count == 5


def test_a_request_the_model_refuses_in_a_batch_gets_its_own_400_and_the_others_their_answers(
    forest_dir: Path,
) -> None:
    app = _server(forest_dir)
    good, bad = [5.1, 3.5, 1.4, 0.2], [99.0, 3.0, 5.2, 2.3]
    with Background(app, http=hot_lane.HotLaneProtocol, proxy_headers=False) as server:
        expected = _exchange(server.port, _row_request(good))[0]
        recorder = _recording(app)
        answers = _exchange(server.port, _row_request(good) + _row_request(bad) + _row_request(good), 3)
    assert answers[0] == answers[2] == expected
    status, _, body = answers[1]
    assert (status, orjson.loads(body)) == (
        400,
        {"error": "row 1: the model cannot score these values: 99 is refused here"},
    )
    # One call for the three, refused; then one call each.
    assert recorder.calls == [3, 1, 1, 1]


def test_a_malformed_request_behind_waiting_answers_gets_its_400_after_them(forest_dir: Path) -> None:
    app = _server(forest_dir)
    with (
        Background(app, http=hot_lane.HotLaneProtocol, proxy_headers=False) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=CEILING) as sock,
    ):
        sock.sendall(
            _row_request([5.1, 3.5, 1.4, 0.2]) + _row_request([6.7, 3.0, 5.2, 2.3]) + b"NOT HTTP\r\n\r\n"
        )
        answers = _read_answers(sock, 3)
        assert sock.recv(10) == b""  # then closed, as uvicorn closes after its 400
    assert [status for status, _, _ in answers] == [200, 200, 400]
    assert [orjson.loads(body)["predictions"][0]["label"] for _, _, body in answers[:2]] == [
        "setosa",
        "virginica",
    ]
    assert answers[2][2] == b"Invalid HTTP request received."


def test_a_model_that_is_not_batch_invariant_is_scored_one_request_at_a_time(tmp_path: Path) -> None:
    app = _server(build_model(tmp_path / "model"))
    assert app.model is not None and not app.model.batches
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    with Background(app, http=hot_lane.HotLaneProtocol, proxy_headers=False) as server:
        recorder = _recording(app)
        answers = _exchange(server.port, b"".join(_row_request(r) for r in rows), 3)
    assert [orjson.loads(body)["predictions"][0]["label"] for _, _, body in answers] == [
        "setosa",
        "virginica",
        "versicolor",
    ]
    assert recorder.calls == [1, 1, 1]


def test_many_clients_at_once_each_get_their_own_answers(forest_dir: Path) -> None:
    rng = np.random.default_rng(5)
    rows = np.round(rng.normal([5.8, 3.0, 3.7, 1.2], [0.8, 0.4, 1.7, 0.7], size=(240, 4)), 1).tolist()
    app = _server(forest_dir)
    with Background(app, http=hot_lane.HotLaneProtocol, proxy_headers=False) as server:
        expected = [_exchange(server.port, _row_request(row))[0] for row in rows]
        recorder = _recording(app)
        got: dict[int, Any] = {}
        errors: list[BaseException] = []

        def client(indices: range) -> None:
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=CEILING) as sock:
                    for i in indices:
                        sock.sendall(_row_request(rows[i], extra=f"X-Request-Id: r-{i}\r\n".encode()))
                        got[i] = _read_answers(sock, 1)[0]
            except BaseException as exc:  # reported below, with the others' results
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(range(k, len(rows), 8),)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CEILING)
    assert errors == []
    for i, (status, headers, body) in got.items():
        assert (status, body) == (expected[i][0], expected[i][2]), i
        assert ("x-request-id", f"r-{i}") in headers, i
    assert len(got) == len(rows) and sum(recorder.calls) == len(rows)


def test_a_client_that_leaves_while_its_answers_wait_leaves_the_server_answering(forest_dir: Path) -> None:
    app = _server(forest_dir)
    with Background(app, http=hot_lane.HotLaneProtocol, proxy_headers=False) as server:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=CEILING)
            sock.sendall(_row_request([5.1, 3.5, 1.4, 0.2]) * 5)
            sock.close()
        status, _, body = _exchange(server.port, _row_request([6.7, 3.0, 5.2, 2.3]))[0]
    assert (status, orjson.loads(body)["predictions"][0]["label"]) == (200, "virginica")


def test_an_app_wrapped_by_middleware_keeps_every_request_on_the_asgi_path(
    forest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lanes = CountingLanes(monkeypatch)
    with Background(_server(forest_dir), http=hot_lane.HotLaneProtocol, proxy_headers=True) as server:
        status, _, body = _exchange(server.port, _row_request([6.7, 3.0, 5.2, 2.3]))[0]
    assert (status, orjson.loads(body)["predictions"][0]["label"]) == (200, "virginica")
    assert lanes.count == 0


def test_the_model_server_runs_uvicorn_with_the_lane_and_an_unwrapped_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    monkeypatch.setattr(serve.os, "environ", {})
    assert serve.main(["--port", "8123", "--workers", "1"]) == 0
    assert (seen["app"], seen["http"], seen["proxy_headers"], seen["workers"], seen["port"]) == (
        "workloads.serve.serve:create_app",
        "workloads.serve.hot_lane:HotLaneProtocol",
        False,
        1,
        8123,
    )


# --- review findings: the keep-alive timer, faults, a client that does not read -------------------


def test_a_lane_answer_does_not_close_the_connection_under_a_slow_request_behind_it(forest_dir: Path) -> None:
    # The lane's answer arms uvicorn's keep-alive timer; the big request pipelined behind it (the
    # ASGI path) must still be answered when it takes longer than the keep-alive time.
    app = ModelServer(str(forest_dir), "7", serve.DEFAULT_MAX_BODY_BYTES)
    app.load()
    assert app.model is not None
    held = HeldPredictor(app.model.predictor, rows=1000)
    app.model = LoadedModel(held, app.model.metadata, app.model.encoder)
    big = b"6.7,3.0,5.2,2.3\n" * 5000
    assert len(big) > serve.OFFLOAD_BYTES
    keep_alive = 1
    with (
        Background(
            app, http=hot_lane.HotLaneProtocol, proxy_headers=False, timeout_keep_alive=keep_alive
        ) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=CEILING) as sock,
    ):
        sock.sendall(CORPUS["ping"] + _request("POST", "/invocations", big, {"Content-Type": "text/csv"}))
        assert held.started.wait(CEILING), "the big request never reached the model"
        # Well past the keep-alive time (a late timer only makes this pass sooner, never fail).
        threading.Event().wait(3 * keep_alive)
        held.release.set()
        answers = _read_answers(sock, 2)
    assert [status for status, _, _ in answers] == [200, 200]
    assert len(orjson.loads(answers[1][2])["predictions"]) == 5000


def test_a_fault_while_scoring_a_batch_is_a_500_for_that_request_and_the_others_are_answered(
    forest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = serve.codec.Encoder.encode

    def encode(encoder: Any, probabilities: Any, fmt: str) -> bytes:
        if fmt == serve.codec.CSV:
            raise RuntimeError("a bug in the CSV encoder")
        return original(encoder, probabilities, fmt)

    monkeypatch.setattr(serve.codec.Encoder, "encode", encode)
    app = _server(forest_dir)
    csv_out = _row_request([6.7, 3.0, 5.2, 2.3], extra=b"Accept: text/csv\r\n")
    background = Background(app, http=hot_lane.HotLaneProtocol, proxy_headers=False)
    with background as server:
        answers = _exchange(
            server.port, _row_request([5.1, 3.5, 1.4, 0.2]) + csv_out + _row_request([6.7, 3.0, 5.2, 2.3]), 3
        )
    # And nothing was left waiting: the server stopped (Background's exit joins its thread).
    assert not background.thread.is_alive()
    assert [status for status, _, _ in answers] == [200, 500, 200]
    assert orjson.loads(answers[1][2]) == {"error": "internal error while predicting: RuntimeError"}


def test_a_fault_in_the_lane_is_a_500_not_a_400_for_the_client(
    forest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ModelServer, "read_head", broken)
    with (
        Background(_server(forest_dir), http=hot_lane.HotLaneProtocol, proxy_headers=False) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=CEILING) as sock,
    ):
        sock.sendall(_row_request([5.1, 3.5, 1.4, 0.2]))
        ((status, headers, body),) = _read_answers(sock, 1)
        assert sock.recv(10) == b""  # closed after it
    assert (status, orjson.loads(body)) == (500, {"error": "internal error while answering the request"})
    assert ("connection", "close") in headers


def test_a_client_that_sends_but_does_not_read_is_not_read_further_while_its_answers_wait(
    forest_dir: Path,
) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2]] * 600  # about 13 KB a request, 60 KB an answer
    one = _request(
        "POST", "/invocations", orjson.dumps({"instances": rows}), {"Content-Type": "application/json"}
    )
    assert len(one) < serve.OFFLOAD_BYTES  # each one in the lane
    app = ModelServer(str(forest_dir), "7", serve.DEFAULT_MAX_BODY_BYTES)
    app.load()
    data = one * 400
    with Background(app, http=hot_lane.HotLaneProtocol, proxy_headers=False) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=CEILING)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            sent = 0
            stop = threading.Event()
            # Send what the server will take for 3 s without reading a byte of its answers.
            timer = threading.Timer(3.0, stop.set)
            timer.start()
            while not stop.is_set() and sent < len(data):
                try:
                    sent += sock.send(data[sent : sent + 65536])
                except BlockingIOError:
                    stop.wait(0.01)
            timer.cancel()
            stop.wait(0.5)
            (connection,) = list(server.server.server_state.connections)
            buffered = connection.transport.get_write_buffer_size()
            answered = server.server.server_state.total_requests
        finally:
            sock.close()
    # The server stopped reading once its answers backed up: a few answers' worth waits, not every
    # request's that the client could push into the socket (without this, about 1.5 MB and counting).
    assert buffered < 600_000, (buffered, answered, sent)
