"""What a listener does with slow, big and odd requests: the model server (serve.py) and the local API.

- Half-sent requests and idle connections are closed by the read and keep-alive deadlines
  (workloads/serve/http_timeouts.py), over raw sockets against the real processes, while normal
  requests are still answered.
- A big request is handled off the event loop: while one is held mid-prediction, /ping and small
  requests are answered (ordering by events, never by wall-clock budgets).
- Every answer of the local API carries X-Request-Id, every 405 an Allow, and 404/405 are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import http.client
import json
import os
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import botocore
import numpy as np
import orjson
import pytest
import uvicorn
from local_daemon_helpers import FEATURES, build_model, fast_settings, rows, train_forest

from mlops.local import daemon
from mlops.local.api import PlatformApp
from mlops.local.endpoint import Invocation
from mlops.local.records import RecordStore
from workloads.serve import codec, http_timeouts, serve
from workloads.serve.api_lambda import handler
from workloads.serve.serve import LoadedModel, ModelServer

REPO_ROOT = Path(__file__).resolve().parents[1]
# Generous ceilings: they only bound how long a broken server can hang the test.
CEILING = 60.0
READ_TIMEOUT = "1"
KEEP_ALIVE = "2"


# --- raw sockets ------------------------------------------------------------------------------------

HALF_SENT: dict[str, bytes] = {
    "nothing": b"",
    "half a request line": b"POST /predict HT",
    "half the headers": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le",
    "half the body": (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"context": "5.1,'
    ),
}


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _half_sent_connections_are_closed(
    port: int, path: str, normal_request: Callable[[], int], per_kind: int = 25
) -> dict[str, list[tuple[float, bytes]]]:
    """Open per_kind connections of each HALF_SENT kind (the body ones on `path`) plus one that trickles
    a byte every 0.2 s; wait until the server closed every one; meanwhile a normal request is answered.
    Returns, per kind, (seconds until closed, everything the server sent)."""
    selector = selectors.DefaultSelector()
    opened = time.monotonic()
    sockets: dict[socket.socket, str] = {}
    for kind, data in HALF_SENT.items():
        for _ in range(per_kind):
            sock = socket.create_connection(("127.0.0.1", port), timeout=CEILING)
            if data:
                sock.sendall(data.replace(b"/predict", path.encode()))
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            sockets[sock] = kind
    trickle = socket.create_connection(("127.0.0.1", port), timeout=CEILING)
    trickle_data = iter(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000)
    trickle.setblocking(False)
    selector.register(trickle, selectors.EVENT_READ)
    sockets[trickle] = "trickle"

    # A normal request, while all of them are open, is answered.
    assert normal_request() in (200, 503)

    received: dict[socket.socket, bytes] = dict.fromkeys(sockets, b"")
    closed: dict[str, list[tuple[float, bytes]]] = {}
    deadline = opened + CEILING
    next_trickle = time.monotonic()
    while selector.get_map() and time.monotonic() < deadline:
        if trickle in received and trickle.fileno() != -1 and time.monotonic() >= next_trickle:
            with contextlib.suppress(OSError):  # closed by the server: the read below sees it
                trickle.send(bytes([next(trickle_data)]))
            next_trickle = time.monotonic() + 0.2
        for key, _ in selector.select(timeout=0.1):
            sock = cast(socket.socket, key.fileobj)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[sock] += chunk
                continue
            selector.unregister(sock)
            closed.setdefault(sockets[sock], []).append((time.monotonic() - opened, received[sock]))
            sock.close()
    left = [sockets[key.fileobj] for key in selector.get_map().values()]  # type: ignore[index]
    for key in list(selector.get_map().values()):
        cast(socket.socket, key.fileobj).close()
    assert left == [], f"still open after {CEILING} s: {left}"
    assert {kind: len(found) for kind, found in closed.items()} == {
        **dict.fromkeys(HALF_SENT, per_kind),
        "trickle": 1,
    }
    return closed


def _check_closed(closed: dict[str, list[tuple[float, bytes]]]) -> list[str]:
    """Requests still in their headers are closed without an answer; one whose headers were complete
    gets a 408 with a request id. Returns the 408s' request ids."""
    for kind in ("nothing", "half a request line", "half the headers", "trickle"):
        assert [data for _, data in closed[kind]] == [b""] * len(closed[kind]), kind
    ids = []
    for _, data in closed["half the body"]:
        status, headers, body = _parse(data)
        answer = orjson.loads(body)
        assert (status, headers["connection"], headers["content-type"]) == (408, "close", "application/json")
        assert answer == {
            "error": f"the request was not completed within {READ_TIMEOUT} s",
            "request_id": headers["x-request-id"],
        }
        assert uuid.UUID(answer["request_id"])
        ids.append(answer["request_id"])
    slowest = max(seconds for found in closed.values() for seconds, _ in found)
    print(f"all {sum(map(len, closed.values()))} half-sent connections closed within {slowest:.2f} s")
    return ids


def _get_status(port: int, method: str, path: str, body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CEILING)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _serve_env(port: int, model_dir: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "MODEL_VERSION"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        SM_MODEL_DIR=str(model_dir),
        SAGEMAKER_BIND_TO_HOST="127.0.0.1",
        SAGEMAKER_BIND_TO_PORT=str(port),
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        HTTP_READ_TIMEOUT_SECONDS=READ_TIMEOUT,
        HTTP_KEEP_ALIVE_SECONDS=KEEP_ALIVE,
    )
    return env


def test_the_model_server_closes_half_sent_and_idle_connections(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mlops.local.endpoint import free_port

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workloads.serve.serve"],
            cwd=tmp_path,
            env=_serve_env(port, build_model(tmp_path / "model")),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + CEILING
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if _get_status(port, "GET", "/ping") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        closed = _half_sent_connections_are_closed(
            port, "/invocations", lambda: _get_status(port, "POST", "/invocations", b'{"context": "1,2,3,4"}')
        )
        _check_closed(closed)
        assert _get_status(port, "GET", "/ping") == 200
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=CEILING)


@pytest.fixture
def running_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    monkeypatch.setenv(http_timeouts.READ_TIMEOUT_ENV, READ_TIMEOUT)
    monkeypatch.setenv(http_timeouts.KEEP_ALIVE_ENV, KEEP_ALIVE)
    settings = fast_settings(tmp_path / "home")
    found = daemon.start(settings, timeout=CEILING)
    try:
        yield settings, found
    finally:
        daemon.stop(settings)


def test_the_local_api_closes_half_sent_and_idle_connections_and_stores_the_408s(
    running_daemon: tuple[Any, Any],
) -> None:
    settings, found = running_daemon
    port = int(found.base_url.rsplit(":", 1)[1])
    closed = _half_sent_connections_are_closed(
        port, "/predict", lambda: _get_status(port, "POST", "/predict", b'{"context": "1,2,3,4"}')
    )
    ids = _check_closed(closed)
    # Each 408 is stored under the request id its answer carries, with that exact answer.
    stored = rows(settings)
    for request_id, (_, data) in zip(ids, closed["half the body"], strict=True):
        record = stored[request_id]
        assert (record["status_code"], record["output"]) == (408, _parse(data)[2].decode())
        assert record["input"] == '{"context": "5.1,'
    assert _get_status(port, "GET", "/healthz") == 200


# --- in-process servers -----------------------------------------------------------------------------


class Background:
    """An ASGI app on uvicorn with the platform's protocol, on its own loop in a thread."""

    def __init__(
        self,
        app: Any,
        on_start: Callable[[], None] | None = None,
        *,
        http: type[http_timeouts.TimeoutHttpToolsProtocol] = http_timeouts.TimeoutHttpToolsProtocol,
        proxy_headers: bool = True,
        timeout_keep_alive: int = 5,
    ) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            http=http,
            lifespan="off",
            log_level="warning",
            timeout_keep_alive=timeout_keep_alive,
            proxy_headers=proxy_headers,
        )
        self.server = uvicorn.Server(config)
        self.on_start = on_start
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        if self.on_start is not None:
            self.on_start()
        await self.server.serve(sockets=[self.sock])

    def __enter__(self) -> Background:
        self.thread.start()
        deadline = time.monotonic() + CEILING
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(CEILING)
        self.sock.close()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CEILING)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


class Finished:
    """Which of several concurrent requests finished, in order."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.lock = threading.Lock()

    def run(self, name: str, call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
        result: list[Any] = []

        def target() -> None:
            result.append(call())
            with self.lock:
                self.order.append(name)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread, result


class HeldPredictor:
    """The real predictor, except that a batch of more than `rows` rows waits for `release`."""

    def __init__(self, inner: Any, rows: int) -> None:
        self.inner, self.rows = inner, rows
        self.kind = inner.kind
        self.started = threading.Event()
        self.release = threading.Event()

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        if len(x) > self.rows:
            self.started.set()
            self.release.wait(CEILING)
        return np.asarray(self.inner.predict_batch(x))

    def predict_row(self, row: list[float]) -> list[float]:
        return list(self.inner.predict_row(row))


def test_a_big_request_does_not_hold_ping_or_small_requests_on_the_model_server(tmp_path: Path) -> None:
    app = ModelServer(str(build_model(tmp_path / "model")), "1", serve.DEFAULT_MAX_BODY_BYTES)
    app.load()
    assert app.model is not None
    held = HeldPredictor(app.model.predictor, rows=1000)
    app.model = LoadedModel(held, app.model.metadata, app.model.encoder)
    # About 1 MiB of CSV, well over the size handled off the loop.
    n_rows = 60_000
    big = b"5.1,3.5,1.4,0.2\n" * n_rows
    assert len(big) > serve.OFFLOAD_BYTES
    finished = Finished()
    with Background(app) as server:
        try:
            big_thread, big_result = finished.run(
                "big", lambda: server.request("POST", "/invocations", big, {"Content-Type": "text/csv"})
            )
            assert held.started.wait(CEILING), "the big request never reached the model"
            # The big request is now mid-prediction, and stays there until released.
            status, _, body = server.request("GET", "/ping")
            assert (status, orjson.loads(body)) == (200, {"status": "ok", "model_version": "1"})
            finished.order.append("ping")
            status, _, body = server.request(
                "POST", "/invocations", b"6.7,3.0,5.2,2.3", {"Content-Type": "text/csv"}
            )
            assert (status, orjson.loads(body)["predictions"][0]["label"]) == (200, "virginica")
            finished.order.append("small")
        finally:
            held.release.set()
        big_thread.join(CEILING)
        assert finished.order == ["ping", "small", "big"]
        status, _, body = big_result[0]
        assert (status, len(orjson.loads(body)["predictions"])) == (200, n_rows)


class Rendezvous:
    """The real predictor, except that a batch of more than `rows` rows waits (up to CEILING) until
    another such batch is being scored at the same time; `most_inside` is how many ever were."""

    def __init__(self, inner: Any, rows: int) -> None:
        self.inner, self.rows = inner, rows
        self.kind = inner.kind
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.both = threading.Event()

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        if len(x) <= self.rows:
            return np.asarray(self.inner.predict_batch(x))
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            if self.inside == 2:
                self.both.set()
        try:
            self.both.wait(CEILING)
            return np.asarray(self.inner.predict_batch(x))
        finally:
            with self.lock:
                self.inside -= 1

    def predict_row(self, row: list[float]) -> list[float]:
        return list(self.inner.predict_row(row))


def test_with_two_cores_to_itself_a_worker_scores_two_big_requests_at_once(tmp_path: Path) -> None:
    app = ModelServer(str(train_forest(tmp_path)), "1", serve.DEFAULT_MAX_BODY_BYTES, big_request_threads=2)
    app.load()
    assert app.model is not None and app.big_request_workers == 2
    meeting = Rendezvous(app.model.predictor, rows=1000)
    app.model = LoadedModel(meeting, app.model.metadata, app.model.encoder)
    n_rows = 20_000
    big = b"6.7,3.0,5.2,2.3\n" * n_rows
    assert len(big) > serve.OFFLOAD_BYTES
    finished = Finished()
    with Background(app) as server:
        calls = [
            finished.run(
                name, lambda: server.request("POST", "/invocations", big, {"Content-Type": "text/csv"})
            )
            for name in ("first", "second")
        ]
        for thread, _ in calls:
            thread.join(CEILING)
    # Each waited for the other inside the model: with one thread the first would have waited CEILING.
    assert meeting.both.is_set() and meeting.most_inside == 2
    for _, result in calls:
        status, _, body = result[0]
        labels = {p["label"] for p in orjson.loads(body)["predictions"]}
        assert (status, len(orjson.loads(body)["predictions"]), labels) == (200, n_rows, {"virginica"})


def test_a_model_scored_under_the_gil_keeps_one_big_request_thread(tmp_path: Path) -> None:
    # The affine map (a logistic regression) is numpy under the GIL: a second thread would only
    # contend for it; an onnxruntime graph gets them all (the test above).
    app = ModelServer(
        str(build_model(tmp_path / "model")), "1", serve.DEFAULT_MAX_BODY_BYTES, big_request_threads=2
    )
    app.load()
    assert app.model is not None and app.model.predictor.kind == "affine fast path"
    assert app.big_request_workers == 1


@pytest.mark.parametrize(
    ("workers", "cores", "threads"), [(1, 2, 2), (2, 2, 1), (3, 2, 1), (1, 1, 1), (2, 8, 4), (1, 16, 16)]
)
def test_big_request_threads_are_the_workers_share_of_the_cores(
    workers: int, cores: int, threads: int
) -> None:
    assert serve.big_request_threads(workers, cores) == threads


def test_a_worker_sizes_its_big_request_threads_by_its_cpu_affinity_and_the_worker_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "1")
    assert serve.create_app().big_request_threads == cores
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", str(cores))
    assert serve.create_app().big_request_threads == 1


def test_the_collector_stays_paused_until_the_last_of_overlapping_requests_is_done() -> None:
    pause = serve._CollectorPause()
    assert gc.isenabled()
    try:
        pause.__enter__()  # request A
        pause.__enter__()  # request B, in another thread
        pause.__exit__()  # A is done; B is still decoding
        assert not gc.isenabled()
        pause.__exit__()
        assert gc.isenabled()
        gc.disable()  # a process that runs with the collector off keeps it off
        with pause:
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


class FakeRouter:
    """Answers like a model server of the iris model, for as many rows as it is sent: it reads them by
    the model server's own rules (a 400 with its message for rows it refuses)."""

    async def invoke(self, body: bytes) -> Invocation:
        try:
            n_rows = len(codec.parse_request(body, codec.JSON, FEATURES))
        except codec.RequestError as exc:
            error = orjson.dumps({"error": exc.message})
            return Invocation(exc.status, error, cast(Any, SimpleNamespace(version=4)))
        prediction = {"label": "setosa", "probabilities": {"setosa": 1.0}}
        answer = orjson.dumps({"model_version": "4", "predictions": [prediction] * n_rows})
        return Invocation(200, answer, cast(Any, SimpleNamespace(version=4)))


@pytest.fixture
def platform_app(tmp_path: Path) -> tuple[PlatformApp, RecordStore]:
    settings = fast_settings(tmp_path / "home")
    settings.home.mkdir(parents=True)
    records = RecordStore(settings.db_path)
    app = PlatformApp(
        settings=settings,
        router=cast(Any, FakeRouter()),
        records=records,
        deployer=cast(Any, None),
        token="t",
    )
    return app, records


def test_a_big_request_does_not_hold_small_ones_on_the_local_api(
    platform_app: tuple[PlatformApp, RecordStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, records = platform_app
    started, release = threading.Event(), threading.Event()
    parse = handler.parse_request

    def held_parse(body: bytes, max_bytes: int, content_type: str | None = None) -> list[list[float]]:
        if len(body) > 100_000:
            started.set()
            release.wait(CEILING)
        return parse(body, max_bytes, content_type)

    monkeypatch.setattr(handler, "parse_request", held_parse)
    n_rows = 20_000
    big = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * n_rows}).encode()
    assert 100_000 < len(big) <= handler.DEFAULT_MAX_BODY_BYTES
    finished = Finished()
    with Background(app, on_start=records.start) as server:
        try:
            big_thread, big_result = finished.run("big", lambda: server.request("POST", "/predict", big))
            assert started.wait(CEILING), "the big request was never parsed"
            status, _, body = server.request("POST", "/predict", b'{"context": "5.1, 3.5, 1.4, 0.2"}')
            assert (status, len(orjson.loads(body)["predictions"])) == (200, 1)
            finished.order.append("small")
            assert server.request("GET", "/healthz")[0] == 200
        finally:
            release.set()
        big_thread.join(CEILING)
        assert finished.order == ["small", "big"]
        status, _, body = big_result[0]
        assert (status, len(orjson.loads(body)["predictions"])) == (200, n_rows)
    records.close()


def test_every_local_api_answer_has_a_request_id_every_405_an_allow_and_all_are_stored(
    platform_app: tuple[PlatformApp, RecordStore],
) -> None:
    app, records = platform_app
    with Background(app, on_start=records.start) as server:
        answers = {
            "200": server.request("POST", "/predict", b'{"context": "5.1, 3.5, 1.4, 0.2"}'),
            "400": server.request("POST", "/predict", b'{"context": "1_0, 3.5, 1.4, 0.2"}'),
            "413": server.request("POST", "/predict", b" " * (handler.DEFAULT_MAX_BODY_BYTES + 1)),
            "415": server.request("POST", "/predict", b"{}", {"Content-Type": "text/csv"}),
            "404": server.request("POST", "/nowhere", b'{"a": 1}', {"User-Agent": "probe"}),
            "405": server.request("GET", "/predict"),
        }
        health = server.request("GET", "/healthz")
        control = server.request("GET", "/_platform/status")
    records.close()
    stored = {r["request_id"]: r for r in _all_records(app)}
    for expected, (status, headers, body) in answers.items():
        answer = orjson.loads(body)
        request_id = headers["x-request-id"]
        assert (str(status), answer["request_id"]) == (expected, request_id)
        record = stored.pop(request_id)
        assert (record["status_code"], record["output"]) == (status, body.decode())
        caller = json.loads(record["caller"])
        assert caller["source_ip"] == "127.0.0.1"
    assert answers["405"][1]["allow"] == "POST"
    assert orjson.loads(answers["405"][2])["error"] == "GET is not allowed on /predict; use POST"
    assert orjson.loads(answers["404"][2])["error"] == "no route POST '/nowhere'; the API is POST /predict"
    assert json.loads(_record_of(app, answers["404"][1]["x-request-id"])["caller"])["user_agent"] == "probe"
    assert _record_of(app, answers["404"][1]["x-request-id"])["input"] == '{"a": 1}'
    assert len(_record_of(app, answers["413"][1]["x-request-id"])["input"]) == handler.OVERSIZE_KEEP_CHARS
    # /healthz and the control routes have an id too, and are not stored.
    assert health[0] == 200 and uuid.UUID(health[1]["x-request-id"])
    assert control[0] == 401 and uuid.UUID(control[1]["x-request-id"])
    assert stored == {}


def test_the_local_api_answers_a_megabyte_bad_value_in_under_a_kibibyte(
    platform_app: tuple[PlatformApp, RecordStore],
) -> None:
    app, records = platform_app
    big = json.dumps({"context": "A" * 1_000_000 + ", 3.5, 1.4, 0.2"}).encode()
    with Background(app, on_start=records.start) as server:
        status, headers, body = server.request("POST", "/predict", big)
        long_path = server.request("GET", "/" + "p" * 60_000)
    records.close()
    assert status == 400
    assert len(body) < 1024
    # The API passes it on (a string may be a category); the model server's 400 comes back as a 400.
    assert orjson.loads(body)["error"].startswith("row 1, column 1 (sepal_length): 'AAAAAAAAAA")
    assert "(1000000 characters)" in orjson.loads(body)["error"]
    # The record keeps the whole input: the answer is short, the evidence is not.
    assert _record_of(app, headers["x-request-id"])["input"] == big.decode()
    assert long_path[0] == 404 and len(long_path[2]) < 1024


def _all_records(app: PlatformApp) -> list[Any]:
    import sqlite3

    conn = sqlite3.connect(app.settings.db_path)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT * FROM requests"))
    finally:
        conn.close()


def _record_of(app: PlatformApp, request_id: str) -> Any:
    return next(r for r in _all_records(app) if r["request_id"] == request_id)


# --- the model server's request ids and limits -----------------------------------------------------


def test_the_model_server_echoes_the_callers_request_id(tmp_path: Path) -> None:
    app = ModelServer(str(build_model(tmp_path / "model")), "1", serve.DEFAULT_MAX_BODY_BYTES)
    app.load()
    with Background(app) as server:
        _, headers, _ = server.request("GET", "/ping", headers={"X-Request-Id": "abc-1"})
        assert headers["x-request-id"] == "abc-1"
        _, headers, _ = server.request(
            "POST",
            "/invocations",
            b"1,2,3,4",
            {"Content-Type": "text/csv", "X-Amzn-SageMaker-Inference-Id": "i-9"},
        )
        assert headers["x-request-id"] == "i-9"
        status, headers, _ = server.request("GET", "/invocations", headers={"X-Request-Id": "abc-2"})
        assert (status, headers["x-request-id"], headers["allow"]) == (405, "abc-2", "POST")
        status, headers, _ = server.request("POST", "/invocations", b"x", {"Content-Type": "text/csv"})
        assert status == 400 and "x-request-id" not in headers


def test_the_model_servers_body_limit_is_sagemakers() -> None:
    model = Path(botocore.__file__).parent / "data" / "sagemaker-runtime" / "2017-05-13" / "service-2.json.gz"
    shapes = json.loads(gzip.decompress(model.read_bytes()))["shapes"]
    body_shape = shapes["InvokeEndpointInput"]["members"]["Body"]["shape"]
    assert serve.DEFAULT_MAX_BODY_BYTES == shapes[body_shape]["max"] == 6 * 1024 * 1024
    assert serve.parse_args([], {}).max_body_bytes == serve.DEFAULT_MAX_BODY_BYTES


def test_read_and_keep_alive_settings_are_checked() -> None:
    args = serve.parse_args([], {"HTTP_READ_TIMEOUT_SECONDS": "2.5", "HTTP_KEEP_ALIVE_SECONDS": "9"})
    assert (args.read_timeout, args.keep_alive) == (2.5, 9)
    defaults = serve.parse_args([], {})
    assert (defaults.read_timeout, defaults.keep_alive) == (5.0, 75)
    with pytest.raises(ValueError, match="HTTP_READ_TIMEOUT_SECONDS must be a number of seconds, got 'soon'"):
        http_timeouts.seconds_from_env(
            "HTTP_READ_TIMEOUT_SECONDS", 5.0, {"HTTP_READ_TIMEOUT_SECONDS": "soon"}
        )
    with pytest.raises(ValueError, match="must be more than 0"):
        http_timeouts.seconds_from_env("HTTP_READ_TIMEOUT_SECONDS", 5.0, {"HTTP_READ_TIMEOUT_SECONDS": "0"})
