"""The daemon's HTTP surface: the public inference API and the token-protected control routes.

A plain ASGI app (no framework: the hot path is one route, and every layer costs requests/s).

    POST /predict                    same contract as the AWS API (docs/contracts.md); no key on loopback
    GET  /healthz                    200 while the daemon serves
    GET  /_platform/status           EndpointStatus          } header x-mlops-token: <token from
    POST /_platform/deploy           {"version": N} | {"rollback": true}  } daemon.json>; 401 without it,
                                     (+ "allow_signature_change": true)
    POST /_platform/teardown         delete the endpoint (the registry stays)
    GET  /_platform/deployments/latest                       } 403 with a wrong one

Parsing, validation and the answer/error bodies are the AWS Lambda's own pure functions
(workloads/serve/api_lambda/handler.py), so both APIs answer byte-for-byte the same contract: the body's
shape is checked here, and the body is forwarded as received to the model server, which reads the rows
against the model's signature (its 400 is passed on as a 400).
Every request to the public API (any path but /healthz and /_platform/...) is stored (records.py)
before its answer is sent, whatever its status: 404 and 405 too, and a request the read deadline cut
off (its 408 is answered by workloads/serve/http_timeouts.py; the record carries the same request id).
Every answer carries an X-Request-Id header (the public API's: the request id of the body and record).

A body over OFFLOAD_BYTES is parsed, and its answer checked, in a worker thread, so one big request
does not hold the event loop while small ones wait.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from mlops.backend import PlatformError
from mlops.local.console import Console, is_console_path
from mlops.local.deployer import (
    Deployer,
    DeploymentConflictError,
    StateUnavailableError,
    VersionNotFoundError,
)
from mlops.local.endpoint import NoVariantError, Router, VariantRestartingError, VariantUnreachableError
from mlops.local.records import RecordNotStoredError, RecordStore, database_bytes
from mlops.local.settings import LocalSettings
from workloads.serve.api_lambda import handler as api
from workloads.serve.api_lambda.request_rows import shown
from workloads.serve.http_timeouts import READ_TIMEOUT_EXTENSION

log = logging.getLogger("mlops.local.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOKEN_HEADER = b"x-mlops-token"
_JSON_HEADERS = [(b"content-type", b"application/json")]
# Bodies larger than this are parsed in _BIG_REQUESTS, off the event loop. Below it parsing takes well
# under a millisecond, less than handing it to a thread would cost.
OFFLOAD_BYTES = 64 * 1024
# One thread: the work is Python under the GIL, so more threads would not finish big requests sooner,
# they would only take more of the loop's time; big requests queue here while small ones are served.
_BIG_REQUESTS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-big-request")


def refusal_body(request_id: str) -> bytes:
    """The 503 a request gets when its record can be kept nowhere (records.RecordStore)."""
    return orjson.dumps(api.error_body("the request could not be stored; try again", request_id))


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _respond(
    send: Send, status: int, body: bytes, request_id: str | None = None, allow: bytes | None = None
) -> None:
    """A JSON answer. Every answer has an X-Request-Id: the request's, or a new one (control routes)."""
    headers = [
        *_JSON_HEADERS,
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", (request_id or str(uuid.uuid4())).encode()),
    ]
    if allow is not None:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, int, bool]:
    """(the first limit+1 bytes, the total length, whether it is complete). Reads the whole body so the
    connection stays usable; incomplete when the client went away, or the read deadline closed it."""
    chunks: list[bytes] = []
    kept = 0
    total = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)[: limit + 1], total, False
        chunk = message.get("body", b"")
        total += len(chunk)
        if kept <= limit:
            chunks.append(chunk)
            kept += len(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)[: limit + 1], total, True


async def _off_loop(size: int, function: Callable[..., Any], *args: Any) -> Any:
    if size <= OFFLOAD_BYTES:
        return function(*args)
    return await asyncio.get_running_loop().run_in_executor(_BIG_REQUESTS, function, *args)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class PlatformApp:
    def __init__(
        self,
        *,
        settings: LocalSettings,
        router: Router,
        records: RecordStore,
        deployer: Deployer,
        token: str,
        max_body_bytes: int = api.DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.settings = settings
        self.router = router
        self.records = records
        self.deployer = deployer
        self._token = token.encode()
        self.max_body_bytes = max_body_bytes
        self.console = Console(settings, deployer, router)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/predict":
            if method != "POST":
                await self.refuse(scope, receive, send, 405, f"{method} is not allowed on /predict; use POST")
                return
            await self.predict(scope, receive, send)
        elif path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}')
        elif path.startswith("/_platform/"):
            await self.control(scope, receive, send)
        elif is_console_path(path):  # the web console and its own guarded routes (console.py)
            await self.console(scope, receive, send)
        else:
            await self.refuse(
                scope, receive, send, 404, f"no route {method} {shown(path)}; the API is POST /predict"
            )

    # --- POST /predict --------------------------------------------------------------------------

    async def refuse(self, scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        """A 404 or 405 of the public API, stored like any other answer."""
        await self.predict(scope, receive, send, refusal=(status, message))

    async def predict(
        self, scope: Scope, receive: Receive, send: Send, refusal: tuple[int, str] | None = None
    ) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        body, size, complete = await _read_body(receive, self.max_body_bytes)
        model_version: str | None = None
        stored_input = body.decode("utf-8", "replace")
        timed_out = scope.get("extensions", {}).get(READ_TIMEOUT_EXTENSION)
        if timed_out is not None:
            # The protocol answered 408 and closed the connection; store what the client got.
            request_id, status = timed_out["request_id"], timed_out["status"]
            output: bytes = timed_out["body"]
        else:
            if not complete:  # the client went away: nobody reads this answer, but it is stored
                status, answer = (
                    400,
                    api.error_body("the client disconnected before sending the whole body", request_id),
                )
            elif refusal is not None:
                status, answer = refusal[0], api.error_body(refusal[1], request_id)
            elif size > self.max_body_bytes:
                status, answer = (
                    413,
                    api.error_body(
                        f"request body is {size} bytes; the limit is {self.max_body_bytes}", request_id
                    ),
                )
            else:
                status, answer, model_version = await self._answer(
                    body, _header(scope, b"content-type"), request_id
                )
            output = await _off_loop(size, orjson.dumps, answer)
        if size > self.max_body_bytes:
            stored_input = stored_input[: api.OVERSIZE_KEEP_CHARS]
        client = scope.get("client")
        agent = _header(scope, b"user-agent")
        # The AWS record's caller shape; loopback has no API key.
        caller = orjson.dumps(
            {
                "api_key_id": None,
                "source_ip": client[0] if client else None,
                "user_agent": agent.decode("latin-1") if agent else None,
            }
        ).decode()
        record = (
            request_id,
            _utc_now(),
            stored_input,
            output.decode(),
            status,
            model_version,
            round((time.perf_counter() - started) * 1000, 3),
            caller,
        )
        try:
            await self.records.put(record)
        except RecordNotStoredError as exc:
            # Neither the database nor the spool took it: the client must not see an answer nobody
            # kept. The kept record (memory, then the database; and the log) is this 503.
            status, output = 503, exc.output
        await _respond(send, status, output, request_id, b"POST" if status == 405 else None)

    async def _answer(
        self, body: bytes, content_type: bytes | None, request_id: str
    ) -> tuple[int, dict[str, Any], str | None]:
        version: str | None = None
        try:
            rows = await _off_loop(
                len(body),
                api.parse_request,
                body,
                self.max_body_bytes,
                content_type.decode("latin-1") if content_type else None,
            )
            try:
                # The body as received: the model server reads it against the model's signature.
                result = await self.router.invoke(body)
            except VariantRestartingError as exc:
                raise api.UpstreamError(503, str(exc)) from None
            except NoVariantError:
                raise api.UpstreamError(503, "no model is deployed; approve a model version first") from None
            except (VariantUnreachableError, aiohttp.ClientError, TimeoutError) as exc:
                # The cause is for the log, not the client (it names loopback ports and internals).
                log.warning("request %s: the model server did not answer: %r", request_id, exc)
                raise api.UpstreamError(502, "the model endpoint did not answer; retry shortly") from None
            version = str(result.variant.version)
            if result.status != 200:
                raise api.model_error(result.status, result.body.decode("utf-8", "replace"))
            version, predictions = await _off_loop(
                len(result.body), api.parse_model_answer, result.body, len(rows)
            )
            return 200, api.answer_body(request_id, version, predictions), version
        except api.ApiError as exc:
            return exc.status_code, api.error_body(exc.message, request_id), version
        except Exception:
            log.exception("request %s failed", request_id)
            return (
                500,
                api.error_body("internal error; the request id identifies it in the logs", request_id),
                version,
            )

    # --- control routes -------------------------------------------------------------------------

    async def control(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _header(scope, TOKEN_HEADER)
        if token is None:
            await _respond(send, 401, orjson.dumps({"error": "missing x-mlops-token header"}))
            return
        if not hmac.compare_digest(token, self._token):
            await _respond(send, 403, orjson.dumps({"error": "wrong x-mlops-token"}))
            return
        route = (scope["method"], scope["path"])
        if route == ("GET", "/_platform/status"):
            endpoint = self.deployer.status()
            endpoint.notes.extend(self.records.notes())
            endpoint.database_bytes = database_bytes(self.settings.db_path)
            await _respond(send, 200, orjson.dumps(asdict(endpoint)))
        elif route == ("GET", "/_platform/deployments/latest"):
            latest = self.deployer.state.latest_deployment()
            await _respond(send, 200, orjson.dumps(asdict(latest.as_status()) if latest else None))
        elif route == ("POST", "/_platform/teardown"):
            try:
                await _respond(send, 200, orjson.dumps({"removed": await self.deployer.teardown()}))
            except DeploymentConflictError as exc:
                await _respond(send, 409, orjson.dumps({"error": str(exc)}))
            except StateUnavailableError as exc:
                await _respond(send, 503, orjson.dumps({"error": str(exc)}))
        elif route == ("POST", "/_platform/deploy"):
            body, _, _ = await _read_body(receive, 4096)
            status, answer = await self._deploy(body)
            await _respond(send, status, orjson.dumps(answer))
        else:
            await _respond(send, 404, orjson.dumps({"error": f"no route {route[0]} {route[1]}"}))

    async def _deploy(self, body: bytes) -> tuple[int, Any]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return 400, {"error": f"body is not JSON: {exc}"}
        allow = isinstance(payload, dict) and payload.get("allow_signature_change") is True
        if isinstance(payload, dict) and payload.get("rollback") is True and "version" not in payload:
            try:
                return 200, asdict(await self.deployer.request_rollback(allow_signature_change=allow))
            except DeploymentConflictError as exc:
                return 409, {"error": str(exc)}
            except StateUnavailableError as exc:
                return 503, {"error": str(exc)}
            except PlatformError as exc:
                return 400, {"error": str(exc)}
        version = payload.get("version") if isinstance(payload, dict) else None
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            return 400, {
                "error": 'body must be {"version": N} with N a positive whole number, or {"rollback": true}'
            }
        try:
            return 200, asdict(await self.deployer.request_deploy(version, allow_signature_change=allow))
        except DeploymentConflictError as exc:
            return 409, {"error": str(exc)}
        except StateUnavailableError as exc:
            return 503, {"error": str(exc)}
        except VersionNotFoundError as exc:
            return 404, {"error": str(exc)}
        except PlatformError as exc:
            return 400, {"error": str(exc)}
