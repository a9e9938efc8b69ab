"""The daemon's HTTP surface: the public inference API and the token-protected control routes.

A plain ASGI app (no framework: the hot path is one route, and every layer costs requests/s).

    POST /predict                    same contract as the AWS API (docs/contracts.md); no key on loopback
    GET  /healthz                    200 while the daemon serves
    GET  /_platform/status           EndpointStatus          } header x-mlops-token: <token from
    POST /_platform/deploy           {"version": N} | {"rollback": true}  } daemon.json>; 401 without it,
    POST /_platform/teardown         delete the endpoint (the registry stays)
    GET  /_platform/deployments/latest                       } 403 with a wrong one

Parsing, validation and the answer/error bodies are the AWS Lambda's own pure functions
(workloads/serve/api_lambda/handler.py), so both APIs answer byte-for-byte the same contract.
Every /predict request is stored (records.py) before its answer is sent.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
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

log = logging.getLogger("mlops.local.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOKEN_HEADER = b"x-mlops-token"
_JSON_HEADERS = [(b"content-type", b"application/json")]


def refusal_body(request_id: str) -> bytes:
    """The 503 a request gets when its record can be kept nowhere (records.RecordStore)."""
    return orjson.dumps(api.error_body("the request could not be stored; try again", request_id))


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, int]:
    """(the first limit+1 bytes, the total length). Reads the whole body so the connection stays usable."""
    chunks: list[bytes] = []
    kept = 0
    total = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        total += len(chunk)
        if kept <= limit:
            chunks.append(chunk)
            kept += len(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)[: limit + 1], total


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
                await _respond(
                    send, 405, orjson.dumps({"error": f"{method} is not allowed on /predict; use POST"})
                )
                return
            await self.predict(scope, receive, send)
        elif path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}')
        elif path.startswith("/_platform/"):
            await self.control(scope, receive, send)
        elif is_console_path(path):  # the web console and its own guarded routes (console.py)
            await self.console(scope, receive, send)
        else:
            await _respond(send, 404, orjson.dumps({"error": f"no route {method} {path}"}))

    # --- POST /predict --------------------------------------------------------------------------

    async def predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        body, size = await _read_body(receive, self.max_body_bytes)
        model_version: str | None = None
        if size > self.max_body_bytes:
            status, answer = (
                413,
                api.error_body(
                    f"request body is {size} bytes; the limit is {self.max_body_bytes}", request_id
                ),
            )
            stored_input = body.decode("utf-8", "replace")[: api.OVERSIZE_KEEP_CHARS]
        else:
            stored_input = body.decode("utf-8", "replace")
            status, answer, model_version = await self._answer(
                body, _header(scope, b"content-type"), request_id
            )
        output = orjson.dumps(answer)
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
        await _respond(send, status, output)

    async def _answer(
        self, body: bytes, content_type: bytes | None, request_id: str
    ) -> tuple[int, dict[str, Any], str | None]:
        version: str | None = None
        try:
            rows = api.parse_request(
                body, self.max_body_bytes, content_type.decode("latin-1") if content_type else None
            )
            try:
                result = await self.router.invoke(orjson.dumps({"instances": rows}))
            except VariantRestartingError as exc:
                raise api.UpstreamError(503, str(exc)) from None
            except NoVariantError:
                raise api.UpstreamError(503, "no model is deployed; approve a model version first") from None
            except (VariantUnreachableError, aiohttp.ClientError, TimeoutError) as exc:
                raise api.UpstreamError(502, f"the model endpoint did not answer: {exc!r}") from None
            version = str(result.variant.version)
            if result.status != 200:
                raise api.model_error(result.status, result.body.decode("utf-8", "replace"))
            version, predictions = api.parse_model_answer(result.body, len(rows))
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
            body, _ = await _read_body(receive, 4096)
            status, answer = await self._deploy(body)
            await _respond(send, status, orjson.dumps(answer))
        else:
            await _respond(send, 404, orjson.dumps({"error": f"no route {route[0]} {route[1]}"}))

    async def _deploy(self, body: bytes) -> tuple[int, Any]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return 400, {"error": f"body is not JSON: {exc}"}
        if isinstance(payload, dict) and payload.get("rollback") is True and "version" not in payload:
            try:
                return 200, asdict(await self.deployer.request_rollback())
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
            return 200, asdict(await self.deployer.request_deploy(version))
        except DeploymentConflictError as exc:
            return 409, {"error": str(exc)}
        except StateUnavailableError as exc:
            return 503, {"error": str(exc)}
        except VersionNotFoundError as exc:
            return 404, {"error": str(exc)}
        except PlatformError as exc:
            return 400, {"error": str(exc)}
