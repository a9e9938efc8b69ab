"""Shared by tests/test_local_daemon.py and tests/test_local_deploy.py: models, settings, load, waits."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mlops.backend import APPROVED, EndpointStatus
from mlops.local import daemon
from mlops.local.client import DaemonClient
from mlops.local.daemon import DaemonInfo
from mlops.local.registry import LocalRegistry
from mlops.local.settings import LocalSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS = ["setosa", "versicolor", "virginica"]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LOADGEN = REPO_ROOT / "bench" / "local_loadgen.py"

T = TypeVar("T")


def build_model(out: Path, *, c: float = 1.0, kind: str = "good") -> Path:
    """A real iris model dir. kind="corrupt": the model file is garbage (serving fails /ping);
    kind="bad_predict": the estimator was fit on 3 features while metadata says 4 (predict raises);
    kind="three_features": a good model of the first 3 features only (its input signature drops
    petal_width, so it answers 400 to the callers' 4-value rows)."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from workloads.model_io import ModelMetadata, save_model

    x, y_idx = load_iris(return_X_y=True)
    y = np.array(LABELS)[y_idx]
    steps: list[tuple[str, Any]] = [("scaler", StandardScaler())]
    features = FEATURES[:3] if kind == "three_features" else FEATURES
    if kind == "three_features":
        x = x[:, :3]
    if kind == "bad_predict":
        x = x[:, :3]
        # A second scaler keeps serving off its folded fast path, so the estimator's own
        # predict_proba runs and refuses rows of 4 values.
        steps.append(("rescaler", StandardScaler()))
    est = Pipeline([*steps, ("classifier", LogisticRegression(C=c, max_iter=500))])
    est.fit(x, y)
    meta = ModelMetadata(
        feature_names=features,
        class_labels=LABELS,
        target="species",
        algorithm="sklearn.pipeline.Pipeline(StandardScaler, LogisticRegression)",
        hyperparameters={"C": str(c)},
        metrics={"accuracy": float(est.score(x, y))},
    )
    save_model(out, est, meta)
    if kind == "corrupt":
        (out / "model.skops").write_bytes(b"this is not a model file")
    return out


def fast_settings(home: Path, **overrides: Any) -> LocalSettings:
    values: dict[str, Any] = {
        "home": home,
        "api_port": 0,
        "traffic_step_percent": 25,
        "traffic_wait_seconds": 1.0,
        "termination_wait_seconds": 0.3,
        "health_interval_seconds": 0.2,
        "startup_timeout_seconds": 30.0,
    }
    values.update(overrides)
    return LocalSettings(**values)


def register(settings: LocalSettings, model_dir: Path, *, approve: bool = False) -> int:
    reg = LocalRegistry(settings.db_path, settings.models_dir)
    try:
        mv = reg.register(settings.group, model_dir, metrics={"accuracy": 1.0})
        if approve:
            reg.set_status(settings.group, mv.version, APPROVED, approver="test")
        return mv.version
    finally:
        reg.close()


def approve(settings: LocalSettings, *versions: int) -> None:
    reg = LocalRegistry(settings.db_path, settings.models_dir)
    try:
        for version in versions:
            reg.set_status(settings.group, version, APPROVED, approver="test")
    finally:
        reg.close()


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def rows(settings: LocalSettings) -> dict[str, sqlite3.Row]:
    conn = sqlite3.connect(settings.db_path)
    conn.row_factory = sqlite3.Row
    try:
        return {r["request_id"]: r for r in conn.execute("SELECT * FROM requests")}
    finally:
        conn.close()


def serving_only(status: EndpointStatus, version: int) -> bool:
    """Exactly one variant, of `version`, with all the traffic."""
    return (
        status.serving_version == version
        and len(status.variants) == 1
        and status.variants[0].model_version == version
        and status.variants[0].weight == 1.0
    )


def serving_v1(settings: LocalSettings, tmp_path: Path) -> tuple[DaemonInfo, DaemonClient]:
    """A started daemon whose endpoint serves a freshly registered and approved v1 alone."""
    register(settings, build_model(tmp_path / "m1"), approve=True)
    info = daemon.start(settings)
    client = DaemonClient(info)
    wait_for(lambda: serving_only(client.status(), 1), 60, "v1 to serve")
    return info, client


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Load:
    """The load generator in its own process (bench/local_loadgen.py)."""

    def __init__(self, url: str, rate: float, out: Path) -> None:
        self.out = out
        ready = out.with_suffix(".ready")
        cmd = [sys.executable, str(LOADGEN), "--url", url, "--rate", str(rate), "--out", str(out)]
        cmd += ["--ready-file", str(ready)]
        self.proc = subprocess.Popen(
            cmd,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        wait_for(ready.exists, 20, "the load generator to start")

    def close(self) -> None:
        """Make sure it is gone (a failed assertion must not leave it sending)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> list[dict[str, Any]]:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0
        return [json.loads(line) for line in self.out.read_text().splitlines()]


def train_forest(out: Path) -> Path:
    """A small random forest on iris, trained by the platform's build (an ONNX graph that the build
    found batch-invariant): the model directory."""
    from workloads.train import train as train_mod
    from workloads.train.config import parse_config

    config = parse_config(
        {
            "data": {"target": "species"},
            "model": {"estimator": "random_forest", "hyperparameters": {"n_estimators": 8, "max_depth": 5}},
        },
        "mlops.toml",
    )
    iris = Path(__file__).resolve().parents[1] / "data" / "iris.csv"
    train_mod.run(iris, out / "model", out / "out", {}, config=config, log=lambda _: None)
    return out / "model"
