"""The local platform daemon: the inference API, the endpoint and the deployer in one process.

`python -m mlops.local.daemon --home <home>` runs uvicorn (httptools + uvloop) with the plain ASGI app
from api.py on settings.api_host:api_port, and the deployer as a task on the same event loop. It
writes MLOPS_HOME/daemon.json (mode 0600: pid, api_url, control token) once it serves. On start it
recovers whatever a previous run left (see Deployer.recover).

start()/stop()/info() are how the CLI manages it: start() spawns it detached, logging to
MLOPS_HOME/daemon.log, and waits until GET /healthz answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mlops.backend import PlatformError
from mlops.local.runfile import (
    DAEMON_MODULE,
    INFO_FILE,
    DaemonInfo,
    _children,
    _info_path,
    _is_daemon,
    _write_info,
    info,
)
from mlops.local.settings import LocalSettings

log = logging.getLogger("mlops.local.daemon")

# Idle connections to the API are closed after this many seconds (HTTP_KEEP_ALIVE_SECONDS overrides);
# requests must arrive whole within HTTP_READ_TIMEOUT_SECONDS (workloads/serve/http_timeouts.py).
DEFAULT_KEEP_ALIVE_SECONDS = 30
LOCK_FILE = "daemon.lock"
LOG_FILE = "daemon.log"
REPO_ROOT = Path(__file__).resolve().parents[2]
__all__ = ["INFO_FILE", "DaemonInfo", "info", "start", "stop"]


def _healthy(base_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _log_tail(settings: LocalSettings, lines: int = 20) -> str:
    try:
        return "\n".join((settings.home / LOG_FILE).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _this_run(settings: LocalSettings, offset: int) -> list[str]:
    """The log lines written since `offset` (this start), not the previous runs' deployments."""
    try:
        with open(settings.home / LOG_FILE, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def _why_it_exited(lines: list[str]) -> str:
    """The line that says why: the last ERROR the daemon logged (`cannot listen on ...`), else the last."""
    errors = [line.split(": ", 1)[-1] for line in lines if " ERROR " in line]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "(it logged nothing)"


def start(settings: LocalSettings, timeout: float = 30.0) -> DaemonInfo:
    """Start the daemon for settings.home (or find the running one) and wait until it answers."""
    running = info(settings)
    if running is not None and _healthy(running.base_url):
        return running
    settings.home.mkdir(parents=True, exist_ok=True)
    proc: subprocess.Popen[bytes] | None = None
    log_path = settings.home / LOG_FILE
    offset = log_path.stat().st_size if log_path.exists() else 0
    if running is None:
        env = dict(os.environ)
        env.update(settings.to_env())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(settings.home / LOG_FILE, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", DAEMON_MODULE, "--home", str(settings.home)],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: outlives the CLI and its terminal
            )
        _children[proc.pid] = proc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = info(settings)
        if found is not None and _healthy(found.base_url):
            return found
        if proc is not None and proc.poll() is not None:
            # The reason first: the log also holds every earlier run, which would bury it.
            lines = _this_run(settings, offset)
            raise PlatformError(
                f"the platform daemon exited with code {proc.returncode} while starting: "
                f"{_why_it_exited(lines)}\n(this start's log, from {log_path}:)\n" + "\n".join(lines[-20:])
            )
        time.sleep(0.05)
    raise PlatformError(
        f"the platform daemon did not answer within {timeout:g} s; "
        f"{settings.home / LOG_FILE} ends with:\n{_log_tail(settings)}"
    )


def stop(settings: LocalSettings, timeout: float = 20.0) -> bool:
    """SIGTERM the daemon, wait, then SIGKILL. True if one was running."""
    running = info(settings)
    if running is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_daemon(running.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _is_daemon(running.pid):
        log.warning("daemon %d did not stop within %g s; killing it", running.pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGKILL)
        # The variants die with it (PDEATHSIG); the next start sweeps any left.
        while _is_daemon(running.pid):
            time.sleep(0.05)
    child = _children.pop(running.pid, None)
    if child is not None:
        child.wait()
    with contextlib.suppress(FileNotFoundError):
        _info_path(settings).unlink()
    return True


# --- the daemon process ---------------------------------------------------------------------------


def _lock(settings: LocalSettings) -> IO[str]:
    handle = open(settings.home / LOCK_FILE, "a")  # noqa: SIM115 - held for the daemon's whole life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise PlatformError(f"a platform daemon is already running for {settings.home}") from None
    return handle


def _bind(settings: LocalSettings) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.api_host, settings.api_port))
    except OSError as exc:
        sock.close()
        raise PlatformError(
            f"cannot listen on {settings.api_host}:{settings.api_port} ({exc.strerror}); "
            "set MLOPS_API_PORT to a free port"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        # uvicorn re-raises SIGTERM once it has shut down, which would end the process before the
        # daemon stops its variants and commits the last records; handle the signal on the loop instead.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._request_exit)
            try:
                yield
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

        def _request_exit(self) -> None:
            self.should_exit = True

    return Server


async def serve(settings: LocalSettings) -> None:
    import uvicorn

    from mlops.local.api import PlatformApp, refusal_body
    from mlops.local.deployer import Deployer
    from mlops.local.endpoint import Router
    from mlops.local.records import RecordStore
    from mlops.local.registry import LocalRegistry
    from mlops.local.state import StateStore
    from workloads.serve import http_timeouts

    settings.home.mkdir(parents=True, exist_ok=True)
    lock = _lock(settings)
    sock = _bind(settings)
    host, port = sock.getsockname()[:2]
    registry = LocalRegistry(settings.db_path, settings.models_dir)
    state = StateStore(settings.db_path, settings.endpoint_name)
    records = RecordStore(settings.db_path, retention_days=settings.record_ttl_days, refusal=refusal_body)
    records.start()
    router = Router()
    deployer = Deployer(settings, registry, state, router)
    token = secrets.token_urlsafe(32)
    app = PlatformApp(settings=settings, router=router, records=records, deployer=deployer, token=token)
    config = uvicorn.Config(
        app,
        # httptools with a deadline for reading each request and for idle connections.
        http=http_timeouts.TimeoutHttpToolsProtocol,
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=_keep_alive_seconds(),
        backlog=2048,
    )
    server: uvicorn.Server = _server_class()(config)
    info_path = settings.home / INFO_FILE
    deployer_task: asyncio.Task[None] | None = None
    try:
        await deployer.recover()
        _write_info(
            info_path,
            {
                "pid": os.getpid(),
                "api_url": f"http://{host}:{port}",
                "token": token,
                "home": str(settings.home),
            },
        )
        log.info("platform daemon %d serving on http://%s:%d", os.getpid(), host, port)
        deployer_task = asyncio.create_task(deployer.run())
        await server.serve(sockets=[sock])
    finally:
        log.info("platform daemon stopping")
        if deployer_task is not None:
            deployer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deployer_task
        await app.console.close()
        await deployer.shutdown()
        await router.close()
        records.close()
        state.close()
        registry.close()
        with contextlib.suppress(OSError):
            if json.loads(info_path.read_text()).get("pid") == os.getpid():
                info_path.unlink()
        sock.close()
        lock.close()
        log.info("platform daemon stopped")


def _keep_alive_seconds() -> int:
    from workloads.serve import http_timeouts  # imports uvicorn: only in the daemon process

    seconds = http_timeouts.seconds_from_env(http_timeouts.KEEP_ALIVE_ENV, DEFAULT_KEEP_ALIVE_SECONDS)
    return max(1, round(seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.local.daemon", description=__doc__)
    parser.add_argument(
        "--home", default=None, help="MLOPS_HOME of the platform (default: $MLOPS_HOME or ./.mlops)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = LocalSettings.from_env(args.home)
        # Read now, so a bad value stops the daemon with its name instead of a traceback later.
        from workloads.serve import http_timeouts

        http_timeouts.read_timeout_seconds()
        _keep_alive_seconds()
    except ValueError as exc:
        log.error("bad setting: %s", exc)
        return 2
    import uvloop

    try:
        uvloop.run(serve(settings))
    except PlatformError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
