"""The daemon's run file (MLOPS_HOME/daemon.json): how a client finds the running daemon.

Kept apart from daemon.py so that a client (the CLI, `mlops status`, the state reader) reads the run
file without importing the server (uvicorn, the API, the deployer).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlops.local.settings import LocalSettings

INFO_FILE = "daemon.json"
DAEMON_MODULE = "mlops.local.daemon"

# Popen handles of daemons this process started, so they are reaped (no zombies in long-lived callers).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    base_url: str
    token: str

    @property
    def predict_url(self) -> str:
        return f"{self.base_url}/predict"


def _info_path(settings: LocalSettings) -> Path:
    return settings.home / INFO_FILE


def _is_daemon(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return DAEMON_MODULE.encode() in cmdline


def info(settings: LocalSettings) -> DaemonInfo | None:
    """The running daemon for settings.home, or None (no daemon.json, or its process is gone)."""
    try:
        raw = json.loads(_info_path(settings).read_text())
        found = DaemonInfo(pid=int(raw["pid"]), base_url=str(raw["api_url"]), token=str(raw["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if _is_daemon(found.pid) else None


def _write_info(path: Path, payload: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(payload, out)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
