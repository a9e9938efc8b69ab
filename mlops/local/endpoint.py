"""The local endpoint: one serving process per variant, and a weighted router in front of them.

A variant is the real serving workload (`python -m workloads.serve.serve`, the same code the SageMaker
container runs) on a free loopback port. The router picks a variant per request by smooth weighted
round robin, so a 25/75 split is exactly one in four, not one in four on average, which is what makes
a traffic step's error rate meaningful after a few requests. Requests go over pooled keep-alive
connections; each variant counts in-flight requests (to drain before stopping) and the requests and
errors of the current traffic step (the deployer's alarm).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

log = logging.getLogger("mlops.local.endpoint")

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVE_MODULE = "workloads.serve.serve"
_PR_SET_PDEATHSIG = 1
# The serving server closes idle keep-alive connections after a few seconds (uvicorn: 5 s); closing
# ours first means a pooled connection is never reused just as the server drops it.
_KEEPALIVE_SECONDS = 2.0
INVOKE_TIMEOUT_SECONDS = 30.0


class NoVariantError(Exception):
    """No variant is ready to take traffic: nothing is deployed (or it is still starting)."""


class VariantRestartingError(NoVariantError):
    """Variants hold traffic but none is ready: the supervisor is restarting them (a short gap)."""


class VariantUnreachableError(Exception):
    """The variant (and the one retried) could not be reached at the connection level."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: the kernel sends SIGKILL to the variant when the daemon dies, even by kill -9."""

    def setup() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the daemon died between fork and prctl
            os._exit(1)

    return setup


def is_serve_process(pid: int) -> bool:
    """True when pid is alive and is a serving variant (so a recycled pid is never killed)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return SERVE_MODULE.encode() in cmdline


def _start_server(
    version: int, model_dir: Path, log_dir: Path, root: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """serve.py for a version on a free loopback port, dying with the daemon."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        SM_MODEL_DIR=str(model_dir),
        SAGEMAKER_BIND_TO_HOST="127.0.0.1",
        SAGEMAKER_BIND_TO_PORT=str(port),
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        MODEL_VERSION=str(version),
        PYTHONPATH=os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p),
    )
    with open(log_dir / f"variant-v{version}.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVE_MODULE],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent(os.getpid()),
        )
    log.info(
        "variant v%d starting: pid %d port %d model %s code %s", version, proc.pid, port, model_dir, root
    )
    return proc, port


class Variant:
    def __init__(
        self,
        version: int,
        model_dir: Path,
        proc: subprocess.Popen[bytes],
        port: int,
        *,
        log_dir: Path | None = None,
        code_root: Path = REPO_ROOT,
    ) -> None:
        self.version = version
        self.name = f"v{version}"
        self.model_dir = model_dir
        self.log_dir = log_dir
        self.code_root = code_root
        self.proc = proc
        self._set_port(port)
        self.weight = 0  # percent
        # Set by stop(): a variant on its way out is never restarted by the supervisor.
        self.stopping = False
        self.restarts = 0
        self.last_restart_reason: str | None = None
        self.ready = False
        self.health = "Starting"
        self.last_ping = "none yet"
        # The server's reason when /ping says its model failed to load for good (state "failed").
        self.load_failure: str | None = None
        self._current = 0  # smooth weighted round robin state
        self.inflight = 0
        self.window_requests = 0
        self.window_errors = 0
        self.window_client_errors = 0  # 4xx answers: the 4xx comparison alarm's numerator
        self.total_requests = 0
        self.total_errors = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _set_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.invocations_url = f"{self.url}/invocations"

    @classmethod
    def spawn(cls, version: int, model_dir: Path, log_dir: Path, code_root: Path | None = None) -> Variant:
        """Start serve.py for a version: from `code_root` (the version's image: its commit's workloads/),
        or from the platform's own tree for a version registered without code."""
        root = code_root if code_root is not None and (code_root / "workloads").is_dir() else REPO_ROOT
        proc, port = _start_server(version, model_dir, log_dir, root)
        return cls(version, model_dir, proc, port, log_dir=log_dir, code_root=root)

    async def respawn(self, reason: str) -> None:
        """Replace a dead or hung server process by a new one of the same version (the supervisor's
        restart): same object, so its weight and the router's and deployer's references stay."""
        self.ready = False
        self.health = "Restarting"
        self.last_restart_reason = reason
        if self.alive():
            self.proc.kill()
        await asyncio.to_thread(self.proc.wait)
        if self.stopping:  # stopped while the old process went: starting a new one would orphan it
            return
        assert self.log_dir is not None, "a variant made by spawn() knows its log dir"
        self.proc, port = _start_server(self.version, self.model_dir, self.log_dir, self.code_root)
        self._set_port(port)
        self.restarts += 1
        self.load_failure = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def start_window(self) -> None:
        self.window_requests = 0
        self.window_errors = 0
        self.window_client_errors = 0

    def record(self, *, error: bool, client_error: bool = False) -> None:
        self.window_requests += 1
        self.total_requests += 1
        if error:
            self.window_errors += 1
            self.total_errors += 1
        if client_error:
            self.window_client_errors += 1

    async def ping(self, session: aiohttp.ClientSession, timeout: float = 2.0) -> bool:
        try:
            async with session.get(f"{self.url}/ping", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                body = await resp.read()
                # Kept for the rollback reason: the server says why it is not ready (e.g. the model
                # file could not be loaded).
                self.last_ping = f"HTTP {resp.status} {body[:300].decode('utf-8', 'replace')}"
                if resp.status == 503:
                    self.load_failure = _load_failure(body)
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.last_ping = f"no answer ({type(exc).__name__})"
            return False

    async def wait_ready(
        self, session: aiohttp.ClientSession, timeout: float, interval: float = 0.1
    ) -> str | None:
        """None when /ping answers 200 within timeout, else the reason it did not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self.alive():
                return (
                    f"variant v{self.version} exited with code {self.proc.returncode} before answering /ping"
                )
            if await self.ping(session, timeout=min(2.0, max(0.1, deadline - loop.time()))):
                self.ready = True
                self.health = "Healthy"
                return None
            if self.load_failure is not None:
                # Nothing retries a failed load, so waiting out the timeout would only delay the rollback.
                return f"variant v{self.version} cannot load its model: {self.load_failure}"
            await asyncio.sleep(interval)
        return (
            f"variant v{self.version} did not answer /ping with 200 within {timeout:g} s "
            f"(last answer: {self.last_ping})"
        )

    async def drain(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.inflight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return self.inflight == 0

    async def stop(self, grace: float = 5.0) -> None:
        self.stopping = True
        self.ready = False
        self.health = "Stopped"
        if self.alive():
            self.proc.terminate()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while self.alive() and loop.time() < deadline:
                await asyncio.sleep(0.02)
            if self.alive():
                self.proc.kill()
        await asyncio.to_thread(self.proc.wait)
        log.info("variant v%d stopped (pid %d, exit %s)", self.version, self.pid, self.proc.returncode)


def _load_failure(body: bytes) -> str | None:
    """The reason in a /ping 503 that says the model failed to load for good, else None (still loading,
    or an answer from something that is not our model server)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if isinstance(answer, dict) and answer.get("state") == "failed":
        return str(answer.get("error", "no reason given"))
    return None


@dataclass
class Invocation:
    status: int
    body: bytes
    variant: Variant


class Router:
    """Weighted routing over the endpoint's variants. Runs on the daemon's event loop only."""

    def __init__(self) -> None:
        self.variants: list[Variant] = []
        self._session: aiohttp.ClientSession | None = None
        # Called after a variant records an error or a 4xx answer, so the deployer's alarms react at once.
        self.on_error: Callable[[Variant], None] | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=_KEEPALIVE_SECONDS),
                timeout=aiohttp.ClientTimeout(total=INVOKE_TIMEOUT_SECONDS),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def add(self, variant: Variant) -> None:
        self.variants.append(variant)

    def remove(self, variant: Variant) -> None:
        if variant in self.variants:
            self.variants.remove(variant)

    def set_weights(self, weights: dict[Variant, int]) -> None:
        for variant, weight in weights.items():
            variant.weight = weight
            variant.start_window()
        for variant in self.variants:
            variant._current = 0

    def pick(self) -> Variant:
        # Smooth weighted round robin (nginx): exact shares, evenly interleaved.
        best: Variant | None = None
        total = 0
        for variant in self.variants:
            if variant.weight <= 0 or not variant.ready:
                continue
            variant._current += variant.weight
            total += variant.weight
            if best is None or variant._current > best._current:
                best = variant
        if best is None:
            waiting = [v for v in self.variants if v.weight > 0 and not v.stopping]
            if waiting:
                names = ", ".join(v.name for v in waiting)
                raise VariantRestartingError(f"the model server of {names} is restarting; retry shortly")
            raise NoVariantError("no model is deployed")
        best._current -= total
        return best

    def _fallback(self, failed: Variant) -> Variant:
        others = [v for v in self.variants if v is not failed and v.ready and v.alive()]
        if others:
            return max(others, key=lambda v: v.weight)
        return failed  # a single variant: one more try on a fresh connection

    async def _post(self, variant: Variant, body: bytes) -> Invocation:
        variant.inflight += 1
        try:
            async with self.session.post(
                variant.invocations_url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                data = await resp.read()
                return Invocation(resp.status, data, variant)
        finally:
            variant.inflight -= 1

    def _record(self, variant: Variant, *, error: bool, client_error: bool = False) -> None:
        variant.record(error=error, client_error=client_error)
        if (error or client_error) and self.on_error is not None:
            self.on_error(variant)

    async def invoke(self, body: bytes) -> Invocation:
        """POST body to /invocations of a variant chosen by weight.

        A connection-level failure is counted against that variant and retried once on another one,
        so a variant that crashes costs the client nothing. A model's own 5xx is returned as is.
        """
        variant = self.pick()
        try:
            result = await self._post(variant, body)
        except aiohttp.ClientConnectionError as exc:
            if isinstance(exc, TimeoutError):  # a slow model is the model's error, not a lost connection
                self._record(variant, error=True)
                raise
            self._record(variant, error=True)
            if not variant.alive():
                # Out of the rotation at once; the supervisor restarts it (supervisor.py).
                variant.ready = False
                variant.health = "Unhealthy"
            log.warning("variant v%d unreachable (%s)", variant.version, exc)
            retry = self._fallback(variant)
            if retry is variant and not variant.alive():
                # Nothing else to send it to, and this one is gone: the supervisor is restarting it.
                raise VariantRestartingError(
                    f"the model server of {variant.name} is restarting; retry shortly"
                ) from exc
            try:
                result = await self._post(retry, body)
            except aiohttp.ClientConnectionError as exc2:
                self._record(retry, error=True)
                raise VariantUnreachableError(f"no variant could be reached: {exc2}") from exc2
        except TimeoutError:
            self._record(variant, error=True)
            raise
        self._record(result.variant, error=result.status >= 500, client_error=400 <= result.status < 500)
        return result
