"""Where the local platform keeps its state, and the settings it runs with.

Everything lives under one directory (MLOPS_HOME, default ./.mlops): the SQLite database, the bare git
remote, model artifacts, build logs and the daemon's pid/port file. `mlops local reset` deletes it.
Settings come from environment variables so `make up` and tests can change them without a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_GROUP = "iris"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a number") from exc


def _env_int(name: str, default: int) -> int:
    value = _env_float(name, float(default))
    if value != int(value):
        raise ValueError(f"{name}={os.environ.get(name)!r} is not a whole number")
    return int(value)


def default_home(start: Path | None = None) -> Path:
    """`.mlops` of the project the command runs in, found as git finds its repository: the nearest
    directory from `start` (default: the working directory) up that has a `.mlops`, else the nearest
    project root (`.git` or `Pulumi.yaml`), else `start` itself. So `mlops status` from a
    subdirectory shows the platform instead of an empty one made there."""
    here = (start or Path.cwd()).resolve()
    folders = (here, *here.parents)
    for folder in folders:
        if (folder / ".mlops").is_dir():
            return folder / ".mlops"
    for folder in folders:
        if (folder / ".git").exists() or (folder / "Pulumi.yaml").is_file():
            return folder / ".mlops"
    return here / ".mlops"


@dataclass(frozen=True)
class LocalSettings:
    home: Path
    group: str = DEFAULT_GROUP
    endpoint_name: str = "local-endpoint"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    traffic_step_percent: int = 25
    traffic_wait_seconds: float = 2.0
    termination_wait_seconds: float = 1.0
    alarm_error_rate: float = 0.05
    alarm_min_requests: int = 5
    # During a shift: roll back when green's 4xx rate exceeds blue's, in the same traffic step, by
    # more than this (a fraction: 0.05 = 5 percentage points); both need alarm_min_requests answers.
    alarm_4xx_margin: float = 0.05
    health_interval_seconds: float = 0.5
    # How long a new variant may take to answer /ping before its deployment is rolled back.
    startup_timeout_seconds: float = 60.0
    min_accuracy: float = 0.9
    data_path: str = "data/iris.csv"
    branch: str = "main"
    # Stored requests older than this are deleted by the daemon (0: keep every record).
    records_retention_days: float = 30.0

    @property
    def db_path(self) -> Path:
        return self.home / "platform.db"

    @property
    def repo_path(self) -> Path:
        return self.home / "repo.git"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def builds_dir(self) -> Path:
        return self.home / "builds"

    @classmethod
    def from_env(cls, home: Path | str | None = None) -> LocalSettings:
        root = Path(home or os.environ.get("MLOPS_HOME") or default_home()).resolve()
        step = _env_int("MLOPS_TRAFFIC_STEP_PERCENT", cls.traffic_step_percent)
        if not 1 <= step <= 100:
            raise ValueError(f"MLOPS_TRAFFIC_STEP_PERCENT={step} must be between 1 and 100")
        retention = _env_float("MLOPS_RECORDS_RETENTION_DAYS", cls.records_retention_days)
        if retention < 0:
            raise ValueError(f"MLOPS_RECORDS_RETENTION_DAYS={retention:g} must be 0 (keep all) or more")
        margin = _env_float("MLOPS_ALARM_4XX_MARGIN", cls.alarm_4xx_margin)
        if not 0 <= margin < 1:
            raise ValueError(f"MLOPS_ALARM_4XX_MARGIN={margin:g} must be a fraction in [0, 1), like 0.05")
        port = _env_int("MLOPS_API_PORT", cls.api_port)
        if not 0 <= port <= 65535:
            raise ValueError(f"MLOPS_API_PORT={port} is not a TCP port")
        return cls(
            home=root,
            group=os.environ.get("MLOPS_MODEL_PACKAGE_GROUP", DEFAULT_GROUP),
            endpoint_name=os.environ.get("MLOPS_ENDPOINT_NAME", cls.endpoint_name),
            api_port=port,
            traffic_step_percent=step,
            traffic_wait_seconds=_env_float("MLOPS_TRAFFIC_WAIT_SECONDS", cls.traffic_wait_seconds),
            termination_wait_seconds=_env_float(
                "MLOPS_TERMINATION_WAIT_SECONDS", cls.termination_wait_seconds
            ),
            alarm_error_rate=_env_float("MLOPS_ALARM_ERROR_RATE", cls.alarm_error_rate),
            alarm_min_requests=_env_int("MLOPS_ALARM_MIN_REQUESTS", cls.alarm_min_requests),
            alarm_4xx_margin=margin,
            health_interval_seconds=_env_float("MLOPS_HEALTH_INTERVAL_SECONDS", cls.health_interval_seconds),
            startup_timeout_seconds=_env_float("MLOPS_STARTUP_TIMEOUT_SECONDS", cls.startup_timeout_seconds),
            min_accuracy=_env_float("MLOPS_MIN_ACCURACY", cls.min_accuracy),
            data_path=os.environ.get("MLOPS_TRAINING_DATA_PATH", cls.data_path),
            branch=os.environ.get("MLOPS_BRANCH", cls.branch),
            records_retention_days=retention,
        )

    def to_env(self) -> dict[str, str]:
        """The environment from_env() turns back into these settings (how the daemon inherits them)."""
        return {
            "MLOPS_HOME": str(self.home),
            "MLOPS_MODEL_PACKAGE_GROUP": self.group,
            "MLOPS_ENDPOINT_NAME": self.endpoint_name,
            "MLOPS_API_PORT": str(self.api_port),
            "MLOPS_TRAFFIC_STEP_PERCENT": str(self.traffic_step_percent),
            "MLOPS_TRAFFIC_WAIT_SECONDS": repr(self.traffic_wait_seconds),
            "MLOPS_TERMINATION_WAIT_SECONDS": repr(self.termination_wait_seconds),
            "MLOPS_ALARM_ERROR_RATE": repr(self.alarm_error_rate),
            "MLOPS_ALARM_MIN_REQUESTS": str(self.alarm_min_requests),
            "MLOPS_ALARM_4XX_MARGIN": repr(self.alarm_4xx_margin),
            "MLOPS_HEALTH_INTERVAL_SECONDS": repr(self.health_interval_seconds),
            "MLOPS_STARTUP_TIMEOUT_SECONDS": repr(self.startup_timeout_seconds),
            "MLOPS_MIN_ACCURACY": repr(self.min_accuracy),
            "MLOPS_TRAINING_DATA_PATH": self.data_path,
            "MLOPS_BRANCH": self.branch,
            "MLOPS_RECORDS_RETENTION_DAYS": repr(self.records_retention_days),
        }
