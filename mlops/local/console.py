"""The web console of the local platform, served by the daemon on its API port (loopback only).

    GET  /                               the page (console_static/index.html, this daemon's CSRF token in it)
    GET  /console/static/<file>          its script and style sheet (plain files: no build step)
    GET  /openapi.json                   the inference API's OpenAPI description (workloads/serve/openapi.yaml)
    GET  /api-docs                       a readable page of it
    GET  /console/api/overview           endpoint, split, per-version traffic, versions, deployments
    GET  /console/api/builds             builds; /console/api/builds/<id>/log its log
    GET  /console/api/requests           stored requests (?version=&status=&limit=); /console/api/requests/<id>
    POST /console/api/versions/<n>/approve   {"description": ...}  } a person's decision: CSRF token in
                                             (+ "allow_signature_change": true)
    POST /console/api/versions/<n>/reject    {"reason": ...}       } x-console-csrf, same-origin only
    POST /console/api/train                  {}: build the pushed branch's tip (`mlops train`)   }

Why the console has its own routes instead of calling /_platform/*: those take the daemon's control
token, which must never reach a page (any script on the page could then deploy or tear down). The
console's writes are only the two a person makes, approve and reject, and they go through the registry
exactly as `mlops approve` does, so the deployer reacts to the same event.

Cross-site protection, since any web page the person opens can send requests to 127.0.0.1:
- Host must be this loopback address and port (a DNS-rebinding page has another Host), on every route;
- writes need the per-daemon token in a custom header (a cross-site form cannot set headers; a
  cross-site fetch with one is preflighted, and no OPTIONS route answers it), an Origin, when the
  browser sends one, equal to this origin, and a JSON body; no cookies are used at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from mlops.backend import (
    APPROVED,
    DEPLOY_IN_PROGRESS,
    REJECTED,
    ModelVersion,
    PlatformError,
    RequestFilter,
    predict_approval,
)
from mlops.local import history
from mlops.local.identity import current_approver
from mlops.local.settings import LocalSettings
from workloads.serve.deployer import lifecycle

if TYPE_CHECKING:
    from mlops.local.deployer import Deployer
    from mlops.local.endpoint import Router

log = logging.getLogger("mlops.local.console")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STATIC_DIR = Path(__file__).with_name("console_static")
OPENAPI_FILE = Path(__file__).resolve().parents[2] / "workloads" / "serve" / "openapi.yaml"
CSRF_HEADER = b"x-console-csrf"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png"}
# What the page may load: only this origin; no inline script (the token is data in a <meta>, not code).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
SAMPLE_SECONDS = 0.5
SAMPLES_KEPT = 1200  # ten minutes at two a second
_VERSION_ACTION = re.compile(r"^/console/api/versions/(\d+)/(approve|reject)$")
_BUILD_LOG = re.compile(r"^/console/api/builds/(\d+)/log$")
_REQUEST = re.compile(r"^/console/api/requests/([0-9a-fA-F-]{1,64})$")


def is_console_path(path: str) -> bool:
    """The paths api.py hands to the console (one routing branch there)."""
    return path in ("/", "/openapi.json", "/api-docs") or path.startswith("/console/")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _send(
    send: Send, status: int, body: bytes, content_type: str = "application/json", allow: str | None = None
) -> None:
    headers = [
        (b"content-type", f"{content_type}; charset=utf-8".encode()),
        (b"content-length", str(len(body)).encode()),
        # Every answer of the daemon's port carries one, as the API's do (a console answer is not
        # stored: it identifies the answer in a bug report and the daemon log).
        (b"x-request-id", str(uuid.uuid4()).encode()),
        *SECURITY_HEADERS,
    ]
    if allow is not None:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, value: Any, allow: str | None = None) -> None:
    await _send(send, status, orjson.dumps(value, default=str), allow=allow)


async def _body(receive: Receive, limit: int = 16_384) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks) if size <= limit else b""


def short_data(location: str | None) -> str:
    """`<repo>#<commit>:<path>` (where the local build read it) as `<path>@<commit[:8]>`."""
    if not location:
        return "-"
    _, sep, rest = location.partition("#")
    commit, colon, path = rest.partition(":")
    return f"{path}@{commit[:8]}" if sep and colon else location


def _changes(
    model: ModelVersion, meta: dict[str, Any], serving: ModelVersion, serving_meta: dict[str, Any]
) -> list[str]:
    """What differs from the serving version besides the metrics: code, data, settings, features."""
    found = []
    if model.source_commit != serving.source_commit:
        found.append(f"commit {(serving.source_commit or '-')[:8]} -> {(model.source_commit or '-')[:8]}")
    if model.data_location != serving.data_location:
        found.append(f"data {short_data(serving.data_location)} -> {short_data(model.data_location)}")
    mine, theirs = meta.get("hyperparameters") or {}, serving_meta.get("hyperparameters") or {}
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            found.append(f"{key} {theirs.get(key, '-')} -> {mine.get(key, '-')}")
    if meta.get("feature_names") != serving_meta.get("feature_names"):
        found.append("different features")
    return found


class Console:
    def __init__(self, settings: LocalSettings, deployer: Deployer, router: Router) -> None:
        self.settings = settings
        self.deployer = deployer
        self.router = router
        # Per daemon: a page from an earlier run cannot write to this one.
        self.csrf_token = secrets.token_urlsafe(32)
        self.samples: deque[dict[str, Any]] = deque(maxlen=SAMPLES_KEPT)
        self._sampler: asyncio.Task[None] | None = None
        self._openapi: dict[str, Any] | None = None
        self._examples: dict[int | None, str] = {}
        # Who signs from the page: the platform owner's git identity, marked as the console's doing.
        self.approver = f"{current_approver(settings.home.parent)} (console)"

    # --- the traffic split over time -------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        """The router's split now, with each variant's request and error counters (since it started)."""
        return {
            "t": _now(),
            "variants": [
                {
                    "version": v.version,
                    "weight": v.weight / 100,
                    "requests": v.total_requests,
                    "errors": v.total_errors,
                    "health": v.health,
                }
                for v in self.router.variants
            ],
        }

    async def _sample_forever(self) -> None:
        # The deployer records only the current weights; the history of a shift is kept here, in
        # memory, for as long as this daemon runs (a restart starts a new picture).
        while True:
            self.samples.append(self.sample())
            await asyncio.sleep(SAMPLE_SECONDS)

    def _ensure_sampler(self) -> None:
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler

    # --- guards ----------------------------------------------------------------------------------

    def _origin(self, scope: Scope) -> str | None:
        """This daemon's own origin as the browser names it, or None when Host is not ours."""
        host = _header(scope, b"host")
        server = scope.get("server")
        if host is None or not server:
            return None
        port = server[1]
        if host not in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            return None
        return f"http://{host}"

    def _write_refusal(self, scope: Scope, origin: str) -> str | None:
        token = _header(scope, CSRF_HEADER)
        if token is None or not hmac.compare_digest(token.encode(), self.csrf_token.encode()):
            return "missing or wrong x-console-csrf header (reload the console)"
        sent_origin = _header(scope, b"origin")
        if sent_origin is not None and sent_origin != origin:
            return f"cross-origin request from {sent_origin} refused"
        if _header(scope, b"sec-fetch-site") not in (None, "same-origin"):
            return "only the console's own page may do this"
        if (_header(scope, b"content-type") or "").split(";")[0].strip() != "application/json":
            return "the body must be application/json"
        return None

    # --- routing ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        origin = self._origin(scope)
        if origin is None:
            await _json(send, 421, {"error": "the console answers only on its loopback address"})
            return
        self._ensure_sampler()
        try:
            writes = path == "/console/api/train" or _VERSION_ACTION.match(path) is not None
            if method not in ("GET", "POST") or (method == "POST") != writes:
                allowed = "POST" if writes else "GET"
                await _json(
                    send, 405, {"error": f"{method} is not allowed on {path}; use {allowed}"}, allowed
                )
                return
            if method == "POST":
                refusal = self._write_refusal(scope, origin)
                if refusal is not None:
                    await _json(send, 403, {"error": refusal})
                    return
                if path == "/console/api/train":
                    await _body(receive)
                    status, answer = await asyncio.to_thread(self.train)
                    await _json(send, status, answer)
                    return
                match = _VERSION_ACTION.match(path)
                assert match is not None  # `writes` above
                status, answer = await self.decide(int(match[1]), match[2], await _body(receive))
                await _json(send, status, answer)
                return
            await self._get(path, scope, send, origin)
        except PlatformError as exc:
            await _json(send, 400, {"error": str(exc)})

    async def _get(self, path: str, scope: Scope, send: Send, origin: str) -> None:
        if path == "/":
            page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
            await _send(send, 200, page.replace("{{CSRF_TOKEN}}", self.csrf_token).encode(), "text/html")
        elif path == "/api-docs":
            await _send(send, 200, (STATIC_DIR / "api-docs.html").read_bytes(), "text/html")
        elif path == "/openapi.json":
            await _json(send, 200, self.openapi(origin))
        elif path.startswith("/console/static/"):
            name = path.removeprefix("/console/static/")
            file = STATIC_DIR / name
            if "/" in name or name.startswith(".") or file.suffix not in STATIC_TYPES or not file.is_file():
                await _json(send, 404, {"error": f"no file {name}"})
                return
            await _send(send, 200, file.read_bytes(), STATIC_TYPES[file.suffix])
        elif path == "/console/api/overview":
            await _json(send, 200, await self.overview())
        elif path == "/console/api/split":
            await _json(send, 200, {"samples": list(self.samples)})
        # The history reads below open their own connections: a worker thread, off the event loop.
        elif path == "/console/api/builds":
            found = await asyncio.to_thread(history.all_builds, self.settings)
            await _json(send, 200, [asdict(b) for b in found])
        elif path == "/console/api/deployments":
            done = await asyncio.to_thread(history.deployments, self.settings)
            await _json(send, 200, [asdict(d) for d in done])
        elif path == "/console/api/requests":
            await _json(send, 200, await asyncio.to_thread(self.requests, scope))
        elif (match := _BUILD_LOG.match(path)) is not None:
            lines = await asyncio.to_thread(history.build_log, self.settings, int(match[1]))
            await _json(send, 200, {"lines": lines})
        elif (match := _REQUEST.match(path)) is not None:
            one = await asyncio.to_thread(history.request, self.settings, match[1])
            await _json(send, 200, asdict(one))
        else:
            await _json(send, 404, {"error": f"no route GET {path}"})

    # --- what the page shows ---------------------------------------------------------------------

    def openapi(self, origin: str) -> dict[str, Any]:
        if self._openapi is None:
            import yaml  # pulumi's dependency, so always installed

            self._openapi = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))
        spec = dict(self._openapi)
        # The description names port 8000; this daemon answers where the page came from.
        spec["servers"] = [
            {"url": origin, "description": "this local platform (no API key on loopback)"},
            *[s for s in spec.get("servers", []) if "127.0.0.1" not in str(s.get("url"))],
        ]
        return spec

    async def overview(self) -> dict[str, Any]:
        # The deployer's own state on the event loop (its connections belong to this thread); the
        # history queries, which can read many rows, in a worker thread with their own connections,
        # so a page open during a load test does not hold up /predict.
        status = self.deployer.status()
        view = self.deployer.view()
        models = self.deployer.registry.versions(self.settings.group)
        past = await asyncio.to_thread(self._history, status.serving_version, [m.version for m in models])
        serving = next((m for m in models if m.version == status.serving_version), None)
        versions = []
        for m in reversed(models):
            meta = past["metadata"].get(m.version, {})
            diff = {}
            if serving is not None and m.version != serving.version:
                for name, value in m.metrics.items():
                    base = serving.metrics.get(name)
                    if isinstance(value, int | float) and isinstance(base, int | float):
                        diff[name] = round(value - base, 6)
            check = (
                self.deployer.registry.signature_check(
                    self.settings.group, m.version, view.serving, allowed=False
                )
                if m.status != APPROVED
                else None
            )
            versions.append(
                {
                    **asdict(m),
                    "changes_vs_serving": _changes(
                        m, meta, serving, past["metadata"].get(serving.version, {})
                    )
                    if serving is not None and m.version != serving.version
                    else [],
                    "serving": m.version == status.serving_version,
                    "rolled_back": m.version in view.failed,
                    "features": meta.get("feature_names"),
                    "algorithm": meta.get("algorithm"),
                    "hyperparameters": meta.get("hyperparameters"),
                    "diff_vs_serving": diff,
                    # What approving it would do now, by the deployer's own rule.
                    "approval_outlook": asdict(predict_approval(view, m.version, signature=check))
                    if check is not None
                    else None,
                    # Whether approving it needs the allowance: the page's box, shown on this alone (the
                    # outlook says "queue" during a shift, and approving was still refused).
                    "needs_allowance": check is not None and not check.compatible,
                }
            )
        current = past["current"]
        return {
            "now": _now(),
            "endpoint": asdict(status),
            "deploying": current is not None and current["status"] == DEPLOY_IN_PROGRESS,
            "current_deployment": current,
            "traffic_since": past["since"],
            "traffic": past["traffic"],
            "split": self.sample(),
            "samples": list(self.samples)[-240:],
            "versions": versions,
            "deployments": past["deployments"],
            "settings": {
                "traffic_step_percent": self.settings.traffic_step_percent,
                "traffic_wait_seconds": self.settings.traffic_wait_seconds,
                "group": self.settings.group,
            },
            "approver": self.approver,
            "example_context": past["example"],
        }

    def _history(self, serving: int | None, versions: list[int]) -> dict[str, Any]:
        """The overview's reads of the history tables (run in a worker thread)."""
        deployments = history.deployments(self.settings)
        attempts = [d for d in deployments if d.status != "Skipped"]
        current = attempts[-1] if attempts else None
        # Per-version traffic since the last deployment started (or the last ten minutes).
        since = (
            current.started_at
            if current is not None
            else (datetime.now(UTC) - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
        )
        if serving not in self._examples:  # a `git show` of its data: once per serving version
            self._examples[serving] = history.example_context(self.settings, serving)
        return {
            "deployments": [asdict(d) for d in reversed(deployments[-50:])],
            "current": asdict(current) if current else None,
            "since": since,
            "traffic": history.request_stats(self.settings, since),
            "metadata": {v: history.model_metadata(self.settings, v) for v in versions},
            "example": self._examples[serving],
        }

    def requests(self, scope: Scope) -> list[dict[str, Any]]:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values and values[0] != "" else None

        status_text = one("status")
        status = None
        if status_text is not None:
            raw = status_text.lower().removesuffix("xx")
            if not raw.isdigit():
                raise PlatformError(f"status {status_text!r} is a status (200) or a class (4xx)")
            status = int(raw)
        limit_text = one("limit") or "100"
        where = RequestFilter(
            version=one("version"),
            status=status,
            since=one("since"),
            until=one("until"),
            limit=int(limit_text) if limit_text.isdigit() else 100,
        )
        return [asdict(r) for r in history.requests(self.settings, where)]

    # --- a person's decision ---------------------------------------------------------------------

    async def decide(self, version: int, action: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Approve or reject from the page: the registry's own rules, then what the deployer will do."""
        try:
            payload = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            return 400, {"error": "the body is not JSON"}
        if not isinstance(payload, dict):
            return 400, {"error": 'the body is a JSON object: {"description": ...} or {"reason": ...}'}
        text = str(payload.get("reason" if action == "reject" else "description") or "").strip()
        if action == "reject" and not text:
            return 400, {"error": "a rejection needs a reason, so the next person knows why"}
        # Read before approving, as the CLI does: afterwards the deployer may already be acting on it.
        view = self.deployer.view()
        outlook = predict_approval(view, version)
        allow = payload.get("allow_signature_change") is True
        if action == "approve":
            # The same up-front refusal as `mlops approve`: a breaking input signature needs the allowance.
            check = self.deployer.registry.signature_check(
                self.settings.group, version, view.serving, allowed=allow
            )
            try:
                lifecycle.require_signature(check, lifecycle.allow_hint(f"approve {version}"), approving=True)
            except lifecycle.LifecycleError as exc:
                return 409, {"error": str(exc)}
        # The write waits for the database's lock: on a thread with a connection of its own, so a
        # busy database never stops the API's event loop.
        model = await asyncio.to_thread(
            self._set_status, version, APPROVED if action == "approve" else REJECTED, text, allow
        )
        log.info("console: v%d %s by %s", version, model.status, self.approver)
        answer: dict[str, Any] = {"model": asdict(model)}
        if action == "approve":
            answer["deployment"] = asdict(outlook)
        return 200, answer

    def _set_status(self, version: int, status: str, text: str, allow: bool = False) -> ModelVersion:
        from mlops.local.registry import LocalRegistry

        registry = LocalRegistry(self.settings.db_path, self.settings.models_dir)
        try:
            return registry.set_status(
                self.settings.group,
                version,
                status,
                approver=self.approver,
                description=text,
                allow_signature_change=allow,
            )
        finally:
            registry.close()

    def train(self) -> tuple[int, dict[str, Any]]:
        """Build the tip of the pushed branch, as `mlops train` does outside a work tree (a push
        builds by itself: this is for training the same code again, say on new data in the repo)."""
        from mlops.local import build as builds
        from mlops.local import repo

        tip = repo.branch_tip(self.settings)
        if tip is None:
            return 400, {
                "error": f"nothing has been pushed yet: `git push {repo.REMOTE_NAME} {self.settings.source_branch}`"
            }
        with builds.BuildStore(self.settings) as store:
            queued = store.enqueue(tip, ref=f"refs/heads/{self.settings.source_branch}")
        builds.spawn(self.settings, queued.id)
        log.info("console: build %d queued for %s by %s", queued.id, tip[:12], self.approver)
        same = [b for b in history.all_builds(self.settings) if b.commit == tip and b.model_version]
        note = (
            f"v{same[-1].model_version} was built from the same commit: expect the same model" if same else ""
        )
        return 200, {"build": asdict(history.build_record(queued)), "note": note}
