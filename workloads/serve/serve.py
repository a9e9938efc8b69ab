"""The model server: SageMaker's hosting contract for the model in SM_MODEL_DIR.

    GET  /ping          200 {"status": "ok", ...} once the model is loaded; 503 {"error": why, "state":
                        "loading"} before that, {"error": why, "state": "failed"} when it cannot be loaded
                        or when it cannot be loaded (the server stays up so the reason can be read)
    POST /invocations   application/json or text/csv in, application/json (default) or text/csv out,
                        per Accept; shapes and error rules in workloads/serve/codec.py and docs/contracts.md

Runs as `serve` in the image (SageMaker: `docker run <image> serve`), as `python -m workloads.serve.serve`
and as `python workloads/serve/serve.py`. Settings are argparse defaults from the environment:

    SM_MODEL_DIR                      /opt/ml/model   workloads/model_io layout
    MODEL_VERSION                     unknown         echoed in every answer
    SAGEMAKER_BIND_TO_HOST            0.0.0.0
    SAGEMAKER_BIND_TO_PORT            8080
    SAGEMAKER_MODEL_SERVER_WORKERS    CPU count       processes, each with its own copy of the model
    MAX_BODY_BYTES                    6291456         SageMaker's own InvokeEndpoint payload limit (6 MiB,
                                                      botocore's InvokeEndpoint Body max)
    HTTP_READ_TIMEOUT_SECONDS         5               a request not received whole by then: 408 / closed
    HTTP_KEEP_ALIVE_SECONDS           75              idle connections (even ones never used) closed after

Every answer echoes the caller's X-Request-Id (or SageMaker's X-Amzn-SageMaker-Inference-Id) as
X-Request-Id when there is one, so the API's request id follows a request into this server's answers.
A body over OFFLOAD_BYTES is parsed, scored and encoded in a worker thread, so /ping and small requests
are answered while it runs instead of waiting behind it. For a model onnxruntime scores, a worker has as
many of these threads as it has cores to itself (the cores it may run on, divided by the workers): the
graph runs outside the GIL, so two big requests are scored at once on two cores, while with one worker
per core (SageMaker's default) each worker keeps to one; a model scored under the GIL (the affine map of
a logistic regression, an estimator from before ONNX) always keeps to one.

Why a plain ASGI callable on uvicorn (httptools parser, uvloop) and no web framework: this is the hot path,
and a framework's routing and request objects cost more per request than the model does. /ping and small
/invocations skip even uvicorn's ASGI machinery: workloads/serve/hot_lane.py answers them in the parser's
callbacks with the same code, and scores requests that arrive together in one call when the build found
that changes no answer. The model loads
in a thread after the socket is bound, so /ping can say "loading" (or why loading failed) instead of the
connection being refused.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `workloads` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import orjson

from workloads import model_io
from workloads.serve import codec, http_timeouts
from workloads.serve.api_lambda import request_rows
from workloads.serve.predictor import AffinePredictor, InputRejectedError, Predictor, make_predictor

log = logging.getLogger("workloads.serve")

DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024
# Longer than SageMaker's and the local router's idle pools, so a pooled connection is not closed by the
# server just as the client reuses it.
DEFAULT_KEEP_ALIVE_SECONDS = 75
# The "state" of a /ping 503: still loading, or failed for good.
LOADING = "loading"
FAILED = "failed"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]
_CSV_HEADERS = [(b"content-type", b"text/csv; charset=utf-8")]
# Bodies larger than this are handled in _BIG_REQUESTS, off the event loop; smaller ones take well under
# a millisecond, less than a hand-over to a thread would add to the single-row hot path.
OFFLOAD_BYTES = 64 * 1024
# Request id headers echoed back as X-Request-Id, in order of preference.
_REQUEST_ID_HEADERS = (b"x-request-id", b"x-amzn-sagemaker-inference-id")
_MAX_ECHOED_ID = 200


@dataclass(frozen=True)
class LoadedModel:
    predictor: Predictor
    metadata: model_io.ModelMetadata
    encoder: codec.Encoder
    # What requests are read by (features, types, missing numbers), made once from the metadata.
    signature: request_rows.Signature = field(init=False)
    # Whether concurrent requests may be scored in one call: the build found that the ONNX graph scores
    # rows together with the bits it gives each alone (metadata serving_check["batch_invariant"]).
    batches: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "signature", codec.signature(self.metadata))
        together = self.metadata.serving_check.get("batch_invariant") is True
        object.__setattr__(self, "batches", together and self.predictor.kind == "onnxruntime")


Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Answer:
    """A response: status, headers (no content-length: the sender adds it) and body."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True)
class Head:
    """What the headers of POST /invocations decided: the formats, and the model that will answer."""

    request_format: str
    response_format: str
    model: LoadedModel


@dataclass(frozen=True)
class Scoring:
    """A request read and checked against the model's signature, waiting for its scores."""

    model: LoadedModel
    x: np.ndarray
    response_format: str
    extra: Headers


class ModelServer:
    """The ASGI application. One per worker process; the model is loaded once per process."""

    def __init__(
        self, model_dir: str, model_version: str, max_body_bytes: int, *, big_request_threads: int = 1
    ) -> None:
        self.model_dir = model_dir
        self.model_version = model_version
        self.max_body_bytes = max_body_bytes
        self.model: LoadedModel | None = None
        self.not_ready = f"the model in {model_dir} is loading"
        # "failed" is final (nothing retries the load), so a deployer can roll back at once instead of
        # waiting out its startup timeout on a model that will never answer /ping 200.
        self.load_state = LOADING
        self._load_started = False
        # Big requests queue here while the loop keeps answering /ping and small requests (sized in
        # load(): it depends on the model).
        self.big_request_threads = big_request_threads
        self._big_requests = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-big-request")
        self.big_request_workers = 1

    # -- model loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model (blocking); on failure keep the reason for /ping and /invocations."""
        started = time.perf_counter()
        try:
            metadata = model_io.load_metadata(self.model_dir)
            predictor: Predictor
            if metadata.affine:
                # A logistic regression on numbers, folded by the build and checked against the
                # estimator: float64 Python arithmetic for a row, numpy for a batch, no graph call.
                predictor = AffinePredictor.from_dict(
                    metadata.affine, metadata.n_features, len(metadata.class_labels)
                )
            elif metadata.onnx_file:
                # The exported graph, run by onnxruntime: loading it runs no code, and the server
                # needs neither scikit-learn nor the boosting libraries (a start in well under 1 s).
                from workloads.onnx_model import load_onnx_model

                predictor = load_onnx_model(self.model_dir)
            else:  # an artifact from before the ONNX export: skops, with the trusted types only
                estimator, metadata = model_io.load_model(self.model_dir)
                predictor = make_predictor(estimator, metadata.n_features)
            encoder = codec.Encoder(
                metadata.class_labels,
                self.model_version,
                regression=metadata.task != model_io.CLASSIFICATION,
            )
            loaded = LoadedModel(predictor, metadata, encoder)  # its signature: the features' types
        except (model_io.ModelFormatError, TypeError, ValueError, OSError) as exc:
            self.not_ready = f"the model in {self.model_dir} could not be loaded: {exc}"
            self.load_state = FAILED
            log.error("%s", self.not_ready)
            return
        except Exception as exc:  # anything else is also a reason to refuse traffic, not to exit
            self.not_ready = f"the model in {self.model_dir} could not be loaded: {type(exc).__name__}: {exc}"
            self.load_state = FAILED
            log.exception("model load failed")
            return
        # Move everything alive now (numpy, scikit-learn, the model) out of the collector's reach: a big
        # request allocates tens of thousands of lists and floats, and each collection it triggers would
        # otherwise walk these ~100k long-lived objects too (measured: 10,000-row JSON 19 -> 13 ms).
        gc.collect()
        gc.freeze()
        # Parsing and encoding hold the GIL; onnxruntime does not while it scores, so with a second core
        # a second thread scores one request while another is parsed (a 100-tree forest: about 1.7x the
        # rows/s of one thread here). For a model scored under the GIL (the affine map: a few numpy
        # calls) a second thread only contends for it (measured: about 10% fewer rows/s).
        threads = self.big_request_threads if predictor.kind == "onnxruntime" else 1
        self.big_request_workers = threads
        if threads != 1:
            self._big_requests = ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix="serve-big-request"
            )
        self.model = loaded
        log.info(
            "model version %s loaded from %s in %.2f s: %s, %d features, classes %s, predictor: %s",
            self.model_version,
            self.model_dir,
            time.perf_counter() - started,
            metadata.algorithm,
            metadata.n_features,
            metadata.class_labels,
            predictor.kind,
        )

    def start_loading(self) -> None:
        if not self._load_started:
            self._load_started = True
            threading.Thread(target=self.load, name="model-load", daemon=True).start()

    # -- ASGI --------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_loading()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        extra = request_id_headers(headers)
        if scope["path"] != "/invocations" or scope["method"] != "POST":
            await _send_answer(send, self.route(scope["method"], scope["path"], extra))
            return
        try:
            head = self.read_head(headers)
            body = await self._read_body(receive)
        except codec.RequestError as exc:
            await _send_answer(send, error_answer(exc.status, exc.message, extra))
            return
        if len(body) > OFFLOAD_BYTES:
            answer = await asyncio.get_running_loop().run_in_executor(
                self._big_requests, self.invoke, head, body, extra
            )
        else:
            answer = self.invoke(head, body, extra)
        await _send_answer(send, answer)

    # -- the requests, synchronously: the ASGI app above and the hot lane (hot_lane.py) share these --

    def route(self, method: str, path: str, extra: Headers) -> Answer:
        """Every request but POST /invocations: /ping, or a 405 or 404 naming what is answered."""
        if path == "/invocations":
            return error_answer(
                405, f"{method} is not allowed on /invocations; use POST", extra, allow=b"POST"
            )
        if path == "/ping":
            if method != "GET":
                return error_answer(405, f"{method} is not allowed on /ping; use GET", extra, allow=b"GET")
            if self.model is None:
                return error_answer(503, self.not_ready, extra, state=self.load_state)
            return Answer(
                200,
                _JSON_HEADERS + extra,
                orjson.dumps({"status": "ok", "model_version": self.model_version}),
            )
        return error_answer(
            404,
            f"no such path {request_rows.shown(path)}; this server answers /ping and /invocations",
            extra,
        )

    def read_head(self, headers: Headers) -> Head:
        """What the headers of POST /invocations decide before the body is read: 415, 406, 503 (no
        model yet) or 413 (a declared length over the limit), as RequestError; else the formats."""
        content_type: str | None = None
        accept: str | None = None
        declared_length: int | None = None
        for name, value in headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                declared_length = int(value)
        request_format = codec.request_format(content_type)
        response_format = codec.response_format(accept)
        model = self.model
        if model is None:
            raise codec.RequestError(503, self.not_ready)
        if declared_length is not None and declared_length > self.max_body_bytes:
            raise self._too_large(declared_length)
        return Head(request_format, response_format, model)

    def read(self, head: Head, body: bytes, extra: Headers) -> Scoring | Answer:
        """The body's rows, checked against the model's signature, ready to score; else the 4xx (or 500)."""
        try:
            if len(body) > self.max_body_bytes:
                raise self._too_large(len(body))
            x = codec.parse_request(body, head.request_format, head.model.signature)
        except codec.RequestError as exc:
            return error_answer(exc.status, exc.message, extra)
        except Exception as exc:  # a fault here, never the client's input
            log.exception("reading the request failed")
            return error_answer(500, f"internal error while reading the request: {type(exc).__name__}", extra)
        return Scoring(head.model, x, head.response_format, extra)

    def invoke(self, head: Head, body: bytes, extra: Headers) -> Answer:
        """One request, read and scored (on the loop for small bodies, in a big-request thread else)."""
        with _collector_paused:
            scoring = self.read(head, body, extra)
            return scoring if isinstance(scoring, Answer) else self.score([scoring])[0]

    def score(self, scorings: Sequence[Scoring]) -> list[Answer]:
        """The answers to requests already read, in order. Several requests for a model whose rows score
        alike together (the build checked it: `batch_invariant`) go to the model in one call, so each
        costs less than alone and gets the same bits; one that the model refuses, or whose answers are
        not finite, sends them all back to one call each, so each gets its own answer or its own 400."""
        with _collector_paused:
            if len(scorings) > 1:
                together = self._score_together(scorings)
                if together is not None:
                    return together
            return [self._score_one(scoring) for scoring in scorings]

    @staticmethod
    def _score_together(scorings: Sequence[Scoring]) -> list[Answer] | None:
        model = scorings[0].model
        if not model.batches or any(s.model is not model for s in scorings):
            return None
        try:
            probabilities = model.predictor.predict_batch(np.concatenate([s.x for s in scorings]))
            if codec.first_non_finite_row(probabilities) is not None:
                return None
            answers = []
            offset = 0
            for s in scorings:
                rows = probabilities[offset : offset + len(s.x)]
                offset += len(s.x)
                answers.append(Answer(200, _headers_for(s), model.encoder.encode(rows, s.response_format)))
        except Exception:  # InputRejectedError or a fault: one call each says which request it was
            return None
        return answers

    @staticmethod
    def _score_one(s: Scoring) -> Answer:
        model = s.model
        probabilities: Any
        try:
            if len(s.x) == 1:
                probabilities = [model.predictor.predict_row(s.x[0].tolist())]
            else:
                probabilities = model.predictor.predict_batch(s.x)
            bad_row = codec.first_non_finite_row(probabilities)
            if bad_row is not None:
                raise codec.bad_input(
                    f"row {bad_row}: the values are too large in magnitude for the model to score "
                    f"({model.encoder.not_finite})"
                )
            return Answer(200, _headers_for(s), model.encoder.encode(probabilities, s.response_format))
        except InputRejectedError as exc:
            return error_answer(
                400, f"row {exc.row}: the model cannot score these values: {exc.reason}", s.extra
            )
        except codec.RequestError as exc:
            return error_answer(exc.status, exc.message, s.extra)
        except Exception as exc:  # a fault in the model or here, never the client's input
            log.exception("invocation failed")
            return error_answer(500, f"internal error while predicting: {type(exc).__name__}", s.extra)

    def _too_large(self, size: int) -> codec.RequestError:
        return codec.RequestError(
            413, f"the request body is {size} bytes or more; the limit is {self.max_body_bytes} bytes"
        )

    async def _read_body(self, receive: Receive) -> bytes:
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self.max_body_bytes:
                raise self._too_large(len(body))
            return body
        chunks = [body]
        size = len(body)
        while True:
            if message["type"] == "http.disconnect":
                raise codec.RequestError(400, "the client disconnected before sending the whole body")
            if size > self.max_body_bytes:
                raise self._too_large(size)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)


def request_id_headers(headers: Headers) -> Headers:
    """[(x-request-id, the caller's id)] when the request has one (a sane length), else []."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in _REQUEST_ID_HEADERS and 0 < len(value) <= _MAX_ECHOED_ID:
            found.setdefault(name, value)
    for name in _REQUEST_ID_HEADERS:
        if name in found:
            return [(b"x-request-id", found[name])]
    return []


def _headers_for(s: Scoring) -> Headers:
    base = _JSON_HEADERS if s.response_format == codec.JSON else _CSV_HEADERS
    return base + s.extra if s.extra else base


def error_answer(
    status: int,
    message: str,
    extra: Headers | None = None,
    allow: bytes | None = None,
    state: str | None = None,
) -> Answer:
    headers = _JSON_HEADERS + extra if extra else list(_JSON_HEADERS)
    if allow is not None:
        headers.append((b"allow", allow))
    body = {"error": message} if state is None else {"error": message, "state": state}
    return Answer(status, headers, orjson.dumps(body))


class _CollectorPause:
    """No cyclic GC while requests are decoded, scored and encoded (on the loop, synchronously, and in
    the big-request threads, several at once).

    What a request allocates (lists of floats, dicts, bytes) holds no reference cycles and is freed by
    reference counting as soon as the answer is built; collections in between only cost time. The
    collector is switched off by the first request in and back on (if it was on) by the last one out:
    with a plain disable/enable per request, one thread's enable would end another's pause midway.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._was_enabled:
                gc.enable()


_collector_paused = _CollectorPause()


async def _send_answer(send: Send, answer: Answer) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [*answer.headers, (b"content-length", str(len(answer.body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer.body})


# --- configuration and entry point ------------------------------------------------------------------


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {value}")
        return value

    return parse


def _seconds(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return http_timeouts.seconds_from_env(name, 0.0, {name: text})
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _port(text: str) -> int:
    value = _positive_int("port")(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"port must be at most 65535, got {value}")
    return value


def parse_args(
    argv: list[str] | None = None, environ: MutableMapping[str, str] | None = None
) -> argparse.Namespace:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="serve", description="Serve the model in SM_MODEL_DIR on SageMaker's /ping and /invocations."
    )
    parser.add_argument("--model-dir", default=env.get("SM_MODEL_DIR", DEFAULT_MODEL_DIR))
    parser.add_argument("--model-version", default=env.get("MODEL_VERSION", "unknown"))
    parser.add_argument("--host", default=env.get("SAGEMAKER_BIND_TO_HOST", "0.0.0.0"))
    parser.add_argument(
        "--port", type=_port, default=env.get("SAGEMAKER_BIND_TO_PORT", "8080"), help="SAGEMAKER_BIND_TO_PORT"
    )
    parser.add_argument(
        "--workers",
        type=_positive_int("SAGEMAKER_MODEL_SERVER_WORKERS"),
        default=env.get("SAGEMAKER_MODEL_SERVER_WORKERS", str(os.cpu_count() or 1)),
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int("MAX_BODY_BYTES"),
        default=env.get("MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES)),
    )
    parser.add_argument(
        "--read-timeout",
        type=_seconds(http_timeouts.READ_TIMEOUT_ENV),
        default=env.get(http_timeouts.READ_TIMEOUT_ENV, str(http_timeouts.DEFAULT_READ_TIMEOUT_SECONDS)),
    )
    parser.add_argument(
        "--keep-alive",
        type=_positive_int(http_timeouts.KEEP_ALIVE_ENV),
        default=env.get(http_timeouts.KEEP_ALIVE_ENV, str(DEFAULT_KEEP_ALIVE_SECONDS)),
    )
    parser.add_argument("--log-level", default=env.get("LOG_LEVEL", "info").lower())
    return parser.parse_args(argv)


def big_request_threads(workers: int, cores: int | None = None) -> int:
    """Threads for big requests in one worker process: its share of the cores it may run on, at least 1.

    The cores are the process's CPU affinity (a container or `taskset` may give it fewer than the
    machine has), not os.cpu_count().
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


def create_app() -> ModelServer:
    """uvicorn's factory: every worker process builds its own server from the environment."""
    args = parse_args([])
    return ModelServer(
        args.model_dir,
        args.model_version,
        args.max_body_bytes,
        big_request_threads=big_request_threads(args.workers),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Worker processes are started fresh and build the app with create_app(), so the settings travel
    # in the environment, where the command line may have overridden them.
    os.environ.update(
        SM_MODEL_DIR=args.model_dir,
        MODEL_VERSION=args.model_version,
        MAX_BODY_BYTES=str(args.max_body_bytes),
        # Each worker sizes its big-request threads by its share of the cores.
        SAGEMAKER_MODEL_SERVER_WORKERS=str(args.workers),
        **{http_timeouts.READ_TIMEOUT_ENV: str(args.read_timeout)},
    )
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import uvicorn

    uvicorn.run(
        "workloads.serve.serve:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        # httptools with read and idle deadlines (http_timeouts.py) and the hot lane for /ping and small
        # /invocations (hot_lane.py); by name, so each worker imports it.
        http="workloads.serve.hot_lane:HotLaneProtocol",
        # Nothing here reads the client's address or scheme, and the lane needs the app unwrapped.
        proxy_headers=False,
        lifespan="on",
        access_log=False,
        log_level=args.log_level,
        timeout_keep_alive=args.keep_alive,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
