"""The model server against MLflow 3 and Seldon's MLServer, per estimator, side by side in one run, on loopback.

    .venv/bin/python bench/serve_bench.py [--estimators logistic_regression,random_forest,...]
        [--duration 9] [--rounds 3] [--workers 1] [--write-readme]

Models: each estimator (logistic_regression, random_forest of 100 trees, hist_gradient_boosting,
xgboost, lightgbm) is trained once on data/iris.csv by the platform's own training code
(workloads.train.train.run, as `mlops train` runs it: holdout, gate, ONNX export and its check), which
writes our model directory (model.onnx, metadata.json). The fitted estimator that export was made from
is kept (joblib) and saved, unchanged, for the anchors by bench/anchor_models.py in their own venvs:

  ours      `python -m workloads.serve.serve` on the model directory (onnxruntime)
  mlflow    `mlflow models serve -m <dir> --env-manager local --workers N` (mlflow.sklearn, or mlflow.xgboost
            / mlflow.lightgbm for a pipeline that is only that model), from bench/.out/mlflow-venv
            (uv.lock's `bench` group plus the serving image's pinned packages)
  mlserver  `mlserver start <repo>` (mlserver-sklearn / mlserver-xgboost / mlserver-lightgbm, a
            model-settings.json each; settings.json: parallel_workers, debug off), from
            bench/.out/mlserver-venv (bench/mlserver-requirements.txt, hash-pinned, made by uv pip compile)

Neither anchor venv is the project's .venv; both must hold the project's numpy, scikit-learn, xgboost and
lightgbm versions (checked), so all three serve the same fitted model.

Load: wrk (Debian package `wrk`, installed with apt-get if missing), a Lua script for POST. Each scenario
of an estimator starts servers of its own, all of them at once (paused while not measured), each with the
same --workers, and stops them after it: an uncounted warm-up, then the measured seconds split into
--rounds rounds, each measuring every server in turn, so a change in a shared machine's load falls on all
alike; req/s and percentiles are medians of the rounds, a ratio the median of the per-round ratios. While
one server is under load the others are paused (SIGSTOP to their process groups, SIGCONT after), so their
idle timers and threads do not run on its core.
Cores (taskset, when the machine has two CPUs): for the single row every server is pinned to CPU 0 and
wrk to CPU 1, a core of its own, as it is busy there; for batches every server (ours and both anchors
alike) is started with CPUs 0 and 1, the same two cores for each, and wrk stays on CPU 1: it sends a few
tens of requests a second there, a light load, and a production server owns every core of its machine.
The CPUs each scenario's servers and wrk actually had are in result.json (settings.cpus) and the report.
After each start, each server's answer to the single row and to the whole batch is compared with the
estimator's own labels (predict on the same rows); a wrong label, a non-2xx answer or a socket error
fails the run. Our GET /ping is measured beside the first estimator's single-row rounds: the HTTP stack
alone, the ceiling of any single-row figure of ours.

Scenarios:
  single  one row, 8 connections: req/s, p50/p99. Ours and MLflow: {"instances": [[5.1, 3.5, 1.4, 0.2]]};
          MLServer speaks the V2 inference protocol: the same row as one FP64 tensor of shape [1, 4]
  batch   10,000 iris rows per request (the same rows for every server, in each one's format), 4
          connections, on servers started again with CPUs 0,1: rows/s; by default for the estimators with
          a batch target (--batch-estimators)
  start   ours only, spawned as the platform spawns it (mlops.local.endpoint), time from spawn to the
          first /ping 200, median of --start-runs after an uncounted first start (that one also writes
          the bytecode cache, so a PYTHONDONTWRITEBYTECODE environment measures what an image does)

The servers do not do the same work: ours answers every row's label *and* class probabilities; the
anchors answer predict() labels only (MLServer's lightgbm runtime: probabilities) - it favours them.
Resident memory: VmRSS from /proc of the server's whole process tree after its scenario's load (the
single-row servers' in the tables, the batch servers' beside it). Our model alone (what our server scores
with, loaded as it loads it: onnxruntime, or a logistic regression's affine map) is measured in this
process on one thread on CPU 0: a ceiling for single-row figures; on two cores a server scoring with
onnxruntime (outside the GIL) can score at most about twice its batch rows/s.

Targets (issue 10), per estimator: single-row throughput vs MLflow >= 8x (logistic regression), 50x
(random forest), 20x (hist gradient boosting), 10x (xgboost), with our p99 <= 5 ms; 10,000-row batches
>= 1,000,000 rows/s (logistic regression), >= 500,000 rows/s (random forest); start to /ping 200
<= 1.5 s (every estimator). --write-readme replaces this benchmark's sections of bench/README.md and of
README.md (between their markers). Exit status 1 when a target is missed or an answer is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from readme_section import write_readme_section

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BENCH = REPO / "bench"
OUT = BENCH / ".out" / "serve"
MLFLOW_VENV = BENCH / ".out" / "mlflow-venv"
MLSERVER_VENV = BENCH / ".out" / "mlserver-venv"
MLSERVER_REQUIREMENTS = BENCH / "mlserver-requirements.txt"
UV = REPO / ".tools" / "bin" / "uv"
ROOT_README = REPO / "README.md"

SERVERS = ("ours", "mlflow", "mlserver")
SHOWN = {"ours": "ours", "mlflow": "MLflow", "mlserver": "MLServer"}
SINGLE_ROW = [5.1, 3.5, 1.4, 0.2]
SINGLE_BODY = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
TARGET_P99_MS = 5.0
TARGET_START_S = 1.5
MODEL_NAME = "iris"
# CPU lists (taskset -c) when the machine has two CPUs. wrk has CPU 1 to itself for the single row, where
# it is busy; the servers of that scenario share CPU 0. For batches every server gets both cores, as a
# production server owns its machine's: wrk, sending a few tens of requests a second there, is nearly idle
# on CPU 1.
SERVER_CPUS = {"single": "0", "batch": "0,1"}
WRK_CPUS = "1"
# Must be the same in every server's venv (bench/anchor_models.py LIBRARIES): the estimator is unpickled.
MODEL_LIBRARIES = ("numpy", "scipy", "scikit-learn", "xgboost-cpu", "lightgbm", "joblib")


@dataclass(frozen=True)
class Estimator:
    name: str
    hyperparameters: dict[str, Any]
    ratio_target: float | None  # single-row req/s, ours / MLflow
    batch_target: int | None  # rows/s on 10,000-row batches
    p99_target: bool  # p99 <= TARGET_P99_MS judged


ESTIMATORS = {
    e.name: e
    for e in (
        Estimator("logistic_regression", {}, 8.0, 1_000_000, True),
        Estimator("random_forest", {"n_estimators": 100}, 50.0, 500_000, True),
        Estimator("hist_gradient_boosting", {"max_iter": 100}, 20.0, None, True),
        Estimator("xgboost", {"n_estimators": 100}, 10.0, None, True),
        Estimator("lightgbm", {"n_estimators": 100}, None, None, False),
    )
}

# Reads the body from a file so a 400 KB batch needs no quoting; fails loudly if the file is missing.
LUA = """\
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
"""


def log(message: str) -> None:
    print(f"[serve_bench] {message}", file=sys.stderr, flush=True)


# --- tools ------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is not installed: installing the Debian package `wrk` with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get installed wrk but it is not on PATH")
    return found


def _uv_env() -> dict[str, str]:
    return {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_PROJECT_ENVIRONMENT": str(REPO / ".venv")}


def _fresh(marker: Path, *sources: Path) -> bool:
    return marker.exists() and all(marker.stat().st_mtime >= s.stat().st_mtime for s in sources)


def ensure_mlflow_venv() -> Path:
    """bench/.out/mlflow-venv with the lock's `bench` group plus the serving image's pinned packages."""
    python = MLFLOW_VENV / "bin" / "python"
    marker = MLFLOW_VENV / ".bench-synced"
    lock, image = REPO / "uv.lock", REPO / "workloads" / "requirements.txt"
    if _fresh(marker, lock, image):
        return python
    log(f"building the MLflow anchor's venv in {MLFLOW_VENV.relative_to(REPO)} from uv.lock (bench group)")
    env = _uv_env()
    requirements = OUT / "mlflow-requirements.txt"
    requirements.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(UV), "export", "--frozen", "--only-group", "bench", "--no-hashes", "--no-emit-project",
         "-o", str(requirements)],
        cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    subprocess.run(
        [str(UV), "venv", "--clear", "--python", sys.executable, str(MLFLOW_VENV)], env=env, check=True
    )
    subprocess.run(
        [str(UV), "pip", "install", "--python", str(python), "-r", str(requirements)], env=env, check=True
    )
    # The serving versions of numpy/scikit-learn/xgboost/lightgbm, hash-checked, so this venv holds the
    # very same estimator classes as the estimator it is handed.
    subprocess.run(
        [str(UV), "pip", "install", "--python", str(python), "--no-deps", "--require-hashes", "-r", str(image)],
        env=env, check=True,
    )  # fmt: skip
    marker.touch()
    return python


def ensure_mlserver_venv() -> Path:
    """bench/.out/mlserver-venv from bench/mlserver-requirements.txt: every package pinned and hashed."""
    python = MLSERVER_VENV / "bin" / "python"
    marker = MLSERVER_VENV / ".bench-synced"
    if _fresh(marker, MLSERVER_REQUIREMENTS):
        return python
    log(
        f"building the MLServer anchor's venv in {MLSERVER_VENV.relative_to(REPO)} from {MLSERVER_REQUIREMENTS.name}"
    )
    env = _uv_env()
    subprocess.run(
        [str(UV), "venv", "--clear", "--python", sys.executable, str(MLSERVER_VENV)], env=env, check=True
    )
    subprocess.run(
        [str(UV), "pip", "install", "--python", str(python), "--no-deps", "--require-hashes", "-r",
         str(MLSERVER_REQUIREMENTS)],
        env=env, check=True,
    )  # fmt: skip
    marker.touch()
    return python


def venv_versions(python: Path) -> dict[str, str]:
    done = subprocess.run(
        [str(python), str(BENCH / "anchor_models.py"), "versions"], check=True, capture_output=True, text=True
    )
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def dist_version(python: Path, dist: str) -> str:
    code = f"from importlib import metadata; print(metadata.version({dist!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


# --- the models -------------------------------------------------------------------------------------


def iris() -> tuple[Any, list[str]]:
    import numpy as np

    with (REPO / "data" / "iris.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    x = np.array([[float(v) for v in row[:-1]] for row in rows[1:]])
    return x, rows[0]


@dataclass
class Trained:
    name: str
    ours: Path  # our model directory
    estimator_file: Path  # the fitted estimator (joblib), handed to the anchors
    classes: list[str]
    single_label: str  # the estimator's own label for SINGLE_ROW
    batch_labels: list[str]  # ... and for each batch row
    algorithm: str


def train(estimator: Estimator, batch: Any) -> Trained:
    """Train with the platform's code (the same call `mlops train` makes, on iris with this estimator)
    and keep the fitted estimator that finish() exported, checked and wrote."""
    import joblib
    import numpy as np

    from workloads import model_io
    from workloads.train import finish as finish_mod
    from workloads.train import train as train_mod
    from workloads.train.config import parse_config

    where = OUT / estimator.name
    shutil.rmtree(where, ignore_errors=True)
    config = parse_config(
        {
            "data": {"target": "species"},
            "model": {
                "task": "classification",
                "estimator": estimator.name,
                "hyperparameters": estimator.hyperparameters,
            },
        },
        f"serve_bench ({estimator.name})",
    )
    captured: list[Any] = []
    original = finish_mod.finish

    def keep(job: Any, fitted: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        captured.append(fitted)
        return original(job, fitted, *args, **kwargs)

    lines: list[str] = []
    finish_mod.finish = keep  # type: ignore[assignment]
    try:
        train_mod.run(
            REPO / "data" / "iris.csv", where / "ours", where / "output", {}, config=config, log=lines.append
        )
    finally:
        finish_mod.finish = original
    (where / "train.log").write_text("\n".join(lines) + "\n")
    (fitted,) = captured
    metadata = model_io.load_metadata(where / "ours")
    classes = list(metadata.class_labels)
    estimator_file = where / "estimator.joblib"
    joblib.dump(fitted, estimator_file)

    def labels(rows: Any) -> list[str]:
        raw = fitted.predict(np.asarray(rows, dtype=np.float64))
        indexed = metadata.output.get("onnx_label") == "index"
        return [classes[int(v)] if indexed else str(v) for v in raw]

    return Trained(
        name=estimator.name,
        ours=where / "ours",
        estimator_file=estimator_file,
        classes=classes,
        single_label=labels([SINGLE_ROW])[0],
        batch_labels=labels(batch),
        algorithm=metadata.algorithm,
    )


def export_anchor(kind: str, python: Path, trained: list[Trained], sample: Any) -> dict[str, Path]:
    """Write every estimator's model for one anchor, in that anchor's venv; {estimator: directory}."""
    dirs = {t.name: OUT / t.name / kind for t in trained}
    spec = [
        {"estimator": str(t.estimator_file), "out": str(dirs[t.name]), "name": MODEL_NAME, "sample": sample}
        for t in trained
    ]
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
    spec_file = OUT / f"{kind}-spec.json"
    spec_file.write_text(json.dumps(spec))
    # cwd outside the repo: from inside a uv project MLflow spends ~10 s trying `uv export`.
    done = subprocess.run(
        [str(python), str(BENCH / "anchor_models.py"), kind, str(spec_file)],
        cwd=OUT, check=False, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"saving the models for {kind} failed:\n{done.stderr[-3000:]}")
    log(f"{kind}: saved {json.loads(done.stdout.strip().splitlines()[-1])}")
    return dirs


# --- servers ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def _pin(cpus: str) -> list[str]:
    """The taskset prefix that runs a command on a CPU list ("0", "0,1"); none on one CPU or without taskset."""
    return ["taskset", "-c", cpus] if _can_pin() else []


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_ready(proc: subprocess.Popen[bytes], url: str, what: str, *, timeout: float = 180.0) -> float:
    """Seconds from now until `url` answers 200, polling every 10 ms; raises if the process exits."""
    started = time.monotonic()
    while not _ready(url):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what} was not ready within {timeout:g} s")
        time.sleep(0.01)
    return time.monotonic() - started


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group the server was started in (it and the workers it forked), then KILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def tree_rss_mb(pid: int) -> float:
    """VmRSS of a process and all its descendants, MB."""
    total_kb = 0
    for current in tree_pids(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def tree_affinity(pid: int) -> set[int]:
    """The CPUs a process and its descendants may run on (the union of their affinities)."""
    cpus: set[int] = set()
    for current in tree_pids(pid):
        with contextlib.suppress(OSError):  # one that has exited since
            cpus |= os.sched_getaffinity(current)
    return cpus


@dataclass
class Served:
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    ready_url: str
    invoke_url: str
    single_body: bytes
    batch_body: bytes
    labels: Callable[[Any], list[str]]  # the labels in a parsed answer


@contextlib.contextmanager
def server(
    name: str, spec: Served, logfile: Path, cpus: str
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """The server started on the CPU list `cpus` (see _pin), until it answers ready; stopped on exit."""
    with logfile.open("wb") as out:
        # Own session, so stopping it reaches the workers it forks and nothing else.
        proc = subprocess.Popen(
            [*_pin(cpus), *spec.cmd],
            env=spec.env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            ready_s = wait_ready(proc, spec.ready_url, name)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; see {logfile}") from None
        # Every worker loads on its own; give the others time to finish before the load starts.
        time.sleep(1.0)
        yield proc, ready_s
    finally:
        stop(proc)


def _base_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "MLFLOW_", "MLSERVER_"))
    }


def _index_or_name(classes: list[str]) -> Callable[[Any], str]:
    def label(value: Any) -> str:
        if isinstance(value, list):  # a row of probabilities (MLServer's lightgbm runtime)
            return classes[max(range(len(value)), key=value.__getitem__)]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return classes[int(value)]
        return str(value)

    return label


def serve_ours(trained: Trained, port: int, workers: int, bodies: dict[str, bytes]) -> Served:
    env = {
        **_base_env(),
        "PYTHONPATH": str(REPO),
        "SM_MODEL_DIR": str(trained.ours),
        "MODEL_VERSION": "bench",
        "SAGEMAKER_BIND_TO_HOST": "127.0.0.1",
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
    }
    base = f"http://127.0.0.1:{port}"
    return Served(
        cmd=[sys.executable, "-m", "workloads.serve.serve"],
        env=env,
        cwd=REPO,
        ready_url=f"{base}/ping",
        invoke_url=f"{base}/invocations",
        single_body=bodies["single"],
        batch_body=bodies["batch"],
        labels=lambda answer: [p["label"] for p in answer["predictions"]],
    )


def serve_mlflow(
    trained: Trained, model_dir: Path, port: int, workers: int, bodies: dict[str, bytes]
) -> Served:
    env = _base_env()
    # MLflow starts `uvicorn` by name through bash: its venv's bin must come first on PATH.
    env["PATH"] = f"{MLFLOW_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    base = f"http://127.0.0.1:{port}"
    label = _index_or_name(trained.classes)
    return Served(
        cmd=[str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager",
             "local", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=OUT,
        ready_url=f"{base}/ping",
        invoke_url=f"{base}/invocations",
        single_body=bodies["single"],
        batch_body=bodies["batch"],
        labels=lambda answer: [label(v) for v in answer["predictions"]],
    )  # fmt: skip


def serve_mlserver(
    trained: Trained, model_dir: Path, port: int, parallel_workers: int, bodies: dict[str, bytes]
) -> Served:
    repo = model_dir.parent / "mlserver-repo"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    shutil.copytree(model_dir, repo / MODEL_NAME)
    settings = {
        "debug": False,  # its default (true) writes an access log line per request; ours writes none
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": parallel_workers,
    }
    (repo / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    base = f"http://127.0.0.1:{port}"
    label = _index_or_name(trained.classes)

    def labels(answer: Any) -> list[str]:
        output = answer["outputs"][0]
        data, shape = output["data"], output["shape"]
        if len(shape) == 2 and shape[1] > 1:  # probabilities, row-major
            width = shape[1]
            return [label(data[i : i + width]) for i in range(0, len(data), width)]
        return [label(v) for v in data]

    return Served(
        cmd=[str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(repo)],
        env=_base_env(),
        cwd=repo,
        ready_url=f"{base}/v2/models/{MODEL_NAME}/ready",
        invoke_url=f"{base}/v2/models/{MODEL_NAME}/infer",
        single_body=bodies["v2-single"],
        batch_body=bodies["v2-batch"],
        labels=labels,
    )


def check_answers(name: str, spec: Served, trained: Trained) -> dict[str, Any]:
    """The server's labels for the single row and for every batch row, against the estimator's."""
    found: dict[str, Any] = {}
    for scenario, body, expected in (
        ("single", spec.single_body, [trained.single_label]),
        ("batch", spec.batch_body, trained.batch_labels),
    ):
        status, answer = _post(spec.invoke_url, body)
        if status != 200:
            found[scenario] = f"HTTP {status}: {answer[:300]!r}"
            continue
        got = spec.labels(json.loads(answer))
        wrong = sum(g != e for g, e in zip(got, expected, strict=False)) + abs(len(got) - len(expected))
        found[scenario] = wrong
        if scenario == "single":
            log(f"{trained.name} {name}: single-row answer {answer[:160].decode(errors='replace')}")
    found["correct"] = found["single"] == 0 and found["batch"] == 0
    return found


# --- load -------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unrecognised wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, request count, latency percentiles (ms) and failures from `wrk --latency` output."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    if not rps or not total:
        raise ValueError(f"unrecognised wrk output:\n{output}")
    percentiles = {
        int(p): _ms(value) for p, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.MULTILINE)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests": int(total.group(1)),
        "rps": float(rps.group(1)),
        "p50_ms": percentiles.get(50),
        "p99_ms": percentiles.get(99),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
    }


def run_wrk(
    wrk: str, url: str, body_file: Path | None, *, connections: int, duration: float
) -> dict[str, Any]:
    """One wrk run: POST of body_file (GET without one)."""
    env = dict(os.environ)
    script: list[str] = []
    if body_file is not None:
        lua = OUT / "post.lua"
        lua.write_text(LUA)
        env["BENCH_BODY_FILE"] = str(body_file)
        script = ["-s", str(lua)]
    threads = min(2, connections)
    done = subprocess.run(
        [*_pin(WRK_CPUS), wrk, f"-t{threads}", f"-c{connections}", "--latency", *script, f"-d{duration:g}s",
         "--timeout", "10s", url],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = parse_wrk(done.stdout)
    result["failed"] = result["non_2xx"] + result["socket_errors"]
    if result["failed"]:
        log(f"{url}: {result['non_2xx']} non-2xx answers and {result['socket_errors']} socket errors")
    return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one scenario on one server: medians of req/s and of the percentiles; sums of counts."""

    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else None

    return {
        "rps": median("rps"),
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "worst_p99_ms": max((r["p99_ms"] for r in runs if r["p99_ms"] is not None), default=None),
        "requests": sum(r["requests"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
        "rounds_rps": [r["rps"] for r in runs],
    }


# --- our model alone, and our start ------------------------------------------------------------------


def graph_alone(trained: Trained, single: Any, batch: Any) -> dict[str, Any]:
    """What our model alone costs in this process on CPU 0 (1 thread, as the server scores one request),
    loaded as the server loads it (onnxruntime, or the affine map of a logistic regression): the ceiling
    the single-row figures are under; batch servers on n cores, scoring a batch per core at once with
    onnxruntime, are under about n times its batch rows/s (ceiling_notes)."""
    from workloads.serve.serve import ModelServer

    server = ModelServer(str(trained.ours), "bench", 6 * 1024 * 1024)
    server.load()
    if server.model is None:
        raise RuntimeError(f"{trained.name}: our model did not load: {server.not_ready}")
    model = server.model.predictor
    pinned = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    before = os.sched_getaffinity(0) if pinned else set()
    if pinned:
        os.sched_setaffinity(0, {0})
    try:
        row = [float(v) for v in single]
        for _ in range(200):
            model.predict_row(row)
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(2000):
                model.predict_row(row)
            samples.append((time.perf_counter() - started) / 2000)
        model.predict_batch(batch)
        batch_s = min(_timed(lambda: model.predict_batch(batch)) for _ in range(7))
    finally:
        if pinned:
            os.sched_setaffinity(0, before)
    return {
        "row_us": statistics.median(samples) * 1e6,
        "batch_rows_per_s": len(batch) / batch_s,
        "kind": model.kind,
    }


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure_start(trained: Trained, runs: int) -> dict[str, Any]:
    """Spawn to first /ping 200 of our server, started exactly as the local platform starts a variant."""
    from mlops.local.endpoint import _start_server

    logs = OUT / trained.name / "start-logs"

    def once(write_bytecode: bool) -> tuple[float, float]:
        saved = os.environ.get("PYTHONDONTWRITEBYTECODE")
        if write_bytecode:
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        try:
            started = time.monotonic()
            proc, port = _start_server(1, trained.ours, logs, REPO)
        finally:
            if saved is not None:
                os.environ["PYTHONDONTWRITEBYTECODE"] = saved
        try:
            wait_ready(proc, f"http://127.0.0.1:{port}/ping", f"{trained.name} start", timeout=60)
            elapsed = time.monotonic() - started
            rss = tree_rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return elapsed, rss

    first, _ = once(write_bytecode=True)
    timed = [once(write_bytecode=False) for _ in range(runs)]
    seconds = [t for t, _ in timed]
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "first_s": first,
        "runs": seconds,
        "rss_at_ping_mb": statistics.median(r for _, r in timed),
        "load_average": os.getloadavg()[0],
    }


# --- the run ----------------------------------------------------------------------------------------


def v2_body(rows: list[list[float]]) -> bytes:
    flat = [v for row in rows for v in row]
    tensor = {"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": flat}
    return json.dumps({"inputs": [tensor]}).encode()


@dataclass(frozen=True)
class Scenario:
    name: str  # "single" or "batch", a key of SERVER_CPUS
    connections: int
    duration: float  # measured seconds per server, split into the rounds
    warmup: float  # uncounted seconds per server before the rounds


def scenarios(args: argparse.Namespace, t: Trained) -> list[Scenario]:
    found = [Scenario("single", args.connections, args.duration, args.warmup)]
    if t.name in args.batch_estimators:
        found.append(Scenario("batch", args.batch_connections, args.batch_duration, args.batch_warmup))
    return found


Running = dict[str, tuple[Served, subprocess.Popen[bytes]]]


def start_servers(
    stack: contextlib.ExitStack,
    scenario: str,
    t: Trained,
    anchors: dict[str, dict[str, Path]],
    bodies: dict[str, bytes],
    args: argparse.Namespace,
) -> tuple[Running, dict[str, dict[str, Any]]]:
    """Every server of this estimator up at once on the scenario's CPUs (the ones not measured are paused
    meanwhile: alone_on_the_cores), so the measured rounds can alternate between them and a change in the
    machine's load falls on all alike; each one's answers checked as it comes up. Stopped when `stack`
    closes."""
    running: Running = {}
    started: dict[str, dict[str, Any]] = {}
    for name in args.servers:
        spec = served(name, t, anchors, bodies, args)
        logfile = OUT / t.name / (f"{name}.log" if scenario == "single" else f"{name}-{scenario}.log")
        proc, ready_s = stack.enter_context(server(name, spec, logfile, SERVER_CPUS[scenario]))
        running[name] = (spec, proc)
        answers = check_answers(name, spec, t)
        log(f"{t.name} {name} ({scenario}): ready in {ready_s:.2f} s; answers {answers}")
        started[name] = {"ready_s": ready_s, "answers": answers}
    return running, started


def _cpu_list(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def server_cpus(running: Running) -> str:
    """The CPUs the servers actually run on (the affinity of every process in each one's tree), which
    must be the same for all of them: the report says they had the same cores."""
    found = {name: _cpu_list(tree_affinity(proc.pid)) for name, (_, proc) in running.items()}
    if len(set(found.values())) != 1:
        raise RuntimeError(f"the servers do not run on the same CPUs: {found}")
    return next(iter(found.values()))


def wrk_cpus() -> str:
    """The CPUs run_wrk's wrk runs on: WRK_CPUS when pinned, else this process's own (it inherits them)."""
    return WRK_CPUS if _can_pin() else _cpu_list(os.sched_getaffinity(0))


def measure_rounds(
    wrk: str,
    running: Running,
    files: dict[str, Path],
    scenario: Scenario,
    rounds: int,
    ping_floor: list[dict[str, Any]] | None,
) -> dict[str, list[dict[str, Any]]]:
    """An uncounted warm-up of each server, then the rounds: each measures every server in turn, with the
    others paused (alone_on_the_cores). With ping_floor, our GET /ping is measured after each round too
    (appended to it)."""
    for name, (spec, _) in running.items():
        if scenario.warmup > 0:
            with alone_on_the_cores(running, name):
                run_wrk(
                    wrk,
                    spec.invoke_url,
                    files[name],
                    connections=scenario.connections,
                    duration=scenario.warmup,
                )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in running}
    order = list(running)
    for round_number in range(rounds):
        # Each round starts with another server, so none always follows the same one.
        shift = round_number % len(order)
        for name in order[shift:] + order[:shift]:
            spec = running[name][0]
            with alone_on_the_cores(running, name):
                runs[name].append(
                    run_wrk(
                        wrk,
                        spec.invoke_url,
                        files[name],
                        connections=scenario.connections,
                        duration=scenario.duration / rounds,
                    )
                )
        if ping_floor is not None:
            with alone_on_the_cores(running, "ours"):
                ping_floor.append(
                    run_wrk(
                        wrk,
                        running["ours"][0].ready_url,
                        None,
                        connections=scenario.connections,
                        duration=2.0,
                    )
                )
    return runs


@contextlib.contextmanager
def alone_on_the_cores(running: Running, measured: str) -> Iterator[None]:
    """The other servers paused (SIGSTOP to each one's process group, SIGCONT after) while `measured` is
    under load: they share its pinned core, and an idle server's timers and threads (gunicorn's
    heartbeats, MLServer's gRPC and metrics loops, our keep-alive timers) would otherwise run in the
    middle of its measurement. Seconds at a time, well under any of their own timeouts."""
    others = [proc for name, (_, proc) in running.items() if name != measured]
    for proc in others:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in others:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    load_at_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    wrk = ensure_wrk()
    OUT.mkdir(parents=True, exist_ok=True)
    pythons = {}
    if "mlflow" in args.servers:
        pythons["mlflow"] = ensure_mlflow_venv()
    if "mlserver" in args.servers:
        pythons["mlserver"] = ensure_mlserver_venv()
    ours_versions = {d: pkg_metadata.version(d) for d in MODEL_LIBRARIES}
    for kind, python in pythons.items():
        theirs = venv_versions(python)
        if theirs != ours_versions:
            raise RuntimeError(
                f"the {kind} venv's model libraries {theirs} differ from the project's {ours_versions}: "
                "it would not serve the same fitted estimator"
            )

    x, _header = iris()
    rng = np.random.default_rng(0)
    batch = x[rng.integers(0, len(x), args.batch_rows)]
    rows = batch.tolist()
    bodies = {
        "single": SINGLE_BODY.encode(),
        "batch": json.dumps({"instances": rows}).encode(),
        "v2-single": v2_body([SINGLE_ROW]),
        "v2-batch": v2_body(rows),
    }
    body_files = {}
    for key, body in bodies.items():
        body_files[key] = OUT / f"{key}.json"
        body_files[key].write_bytes(body)

    trained = []
    for name in args.estimators:
        log(f"{name}: training with workloads.train.train on data/iris.csv ...")
        trained.append(train(ESTIMATORS[name], batch))
    anchors = {kind: export_anchor(kind, python, trained, x.tolist()) for kind, python in pythons.items()}

    results: dict[str, Any] = {}
    ping_floor: list[dict[str, Any]] = []
    cpus: dict[str, dict[str, Any]] = {}
    for t in trained:
        log(f"{t.name}: start to /ping 200, {args.start_runs} runs ...")
        start = measure_start(t, args.start_runs)
        log(f"{t.name}: start {start}")
        alone = graph_alone(t, SINGLE_ROW, batch)
        log(f"{t.name}: our model alone {alone}")
        entries: dict[str, dict[str, Any]] = {}
        for scenario in scenarios(args, t):
            # Each scenario on servers of its own, started on its CPUs and stopped after it.
            with contextlib.ExitStack() as stack:
                running, started = start_servers(stack, scenario.name, t, anchors, bodies, args)
                applied = {"servers": server_cpus(running), "wrk": wrk_cpus(), "pinned": _can_pin()}
                log(
                    f"{t.name}: {scenario.name} servers on CPUs {applied['servers']}, wrk on {applied['wrk']}"
                )
                if cpus.setdefault(scenario.name, applied) != applied:  # settings records one layout
                    raise RuntimeError(f"{t.name} {scenario.name}: {applied}, before: {cpus[scenario.name]}")
                files = {
                    name: body_files[("v2-" if name == "mlserver" else "") + scenario.name]
                    for name in running
                }
                ping = scenario.name == "single" and t is trained[0] and "ours" in running
                runs = measure_rounds(
                    wrk, running, files, scenario, args.rounds, ping_floor if ping else None
                )
                for name, name_runs in runs.items():
                    result = combine(name_runs)
                    if scenario.name == "batch":
                        result["rows_per_s"] = (result["rps"] or 0.0) * args.batch_rows
                    log(f"{t.name} {name}: {scenario.name} {result}")
                    # After the load, as before; the batch servers' is their own, beside their figures.
                    rss_mb = tree_rss_mb(running[name][1].pid)
                    if scenario.name == "single":
                        entries[name] = {**started[name], "single": result, "rss_mb": rss_mb}
                    else:
                        entries[name]["batch"] = {**result, **started[name], "rss_mb": rss_mb}
                if "ours" in runs:
                    for anchor in ("mlflow", "mlserver"):
                        if anchor in runs:
                            ratios = [
                                o["rps"] / a["rps"] for o, a in zip(runs["ours"], runs[anchor], strict=True)
                            ]
                            entries["ours"].setdefault("ratios", {})[f"{scenario.name}_{anchor}"] = (
                                statistics.median(ratios)
                            )
        results[t.name] = {"algorithm": t.algorithm, "start": start, "alone": alone, "servers": entries}
    settings = {k: v for k, v in vars(args).items() if k not in ("write_readme", "from_json")}
    settings["cpus"] = cpus
    floor = combine(ping_floor) if ping_floor else None
    found = machine(pythons)
    found["load_average_at_start"] = load_at_start
    return {"results": results, "settings": settings, "machine": found, "ping_floor": floor}


def served(
    name: str, t: Trained, anchors: dict[str, dict[str, Path]], bodies: dict[str, bytes], args: Any
) -> Served:
    port = free_port()
    if name == "ours":
        return serve_ours(t, port, args.workers, bodies)
    if name == "mlflow":
        return serve_mlflow(t, anchors["mlflow"][t.name], port, args.workers, bodies)
    return serve_mlserver(t, anchors["mlserver"][t.name], port, args.mlserver_parallel_workers, bodies)


def machine(pythons: dict[str, Path]) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GB"
    ours = ", ".join(
        f"{d} {pkg_metadata.version(d)}"
        for d in ("onnxruntime", "uvicorn", "httptools", "uvloop", "orjson", "numpy", "scikit-learn",
                  "xgboost-cpu", "lightgbm")
    )  # fmt: skip
    anchors = {kind: dist_version(python, kind) for kind, python in pythons.items()}
    for kind, python in pythons.items():
        if kind == "mlserver":
            runtimes = [
                f"{r} {dist_version(python, r)}"
                for r in ("mlserver-sklearn", "mlserver-xgboost", "mlserver-lightgbm")
            ]
            anchors[kind] += (
                f" ({', '.join(runtimes)}; uvicorn {dist_version(python, 'uvicorn')}, fastapi {dist_version(python, 'fastapi')})"
            )
        else:
            anchors[kind] += (
                f" (uvicorn {dist_version(python, 'uvicorn')}, fastapi {dist_version(python, 'fastapi')})"
            )
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "ours": ours,
        **{f"{kind}_version": version for kind, version in anchors.items()},
        "wrk": (wrk_version.stdout + wrk_version.stderr).strip().splitlines()[0],
        "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


# --- verdict and report -----------------------------------------------------------------------------


def _rps(entry: dict[str, Any] | None) -> float | None:
    return None if entry is None else float(entry["single"]["rps"])


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """{estimator: {"ratios": {...}, "checks": {check: met}}}."""
    out: dict[str, Any] = {}
    for name, res in result["results"].items():
        estimator = ESTIMATORS[name]
        servers = res["servers"]
        ours = servers.get("ours")
        # Medians of the per-round ratios (each round measures every server once, back to back).
        ratios = {
            anchor: ratio
            for anchor in ("mlflow", "mlserver")
            if (ratio := (ours or {}).get("ratios", {}).get(f"single_{anchor}")) is not None
        }
        checks: dict[str, bool] = {}
        for server_name, entry in servers.items():
            failed = entry["single"]["failed"] + entry.get("batch", {}).get("failed", 0)
            checks[f"{SHOWN[server_name]} answers every row like the estimator, 0 failed requests"] = (
                _answers_right(entry) and failed == 0
            )
        if estimator.ratio_target is not None:
            checks[f"single-row throughput >= {estimator.ratio_target:g}x MLflow"] = (
                ratios.get("mlflow", 0.0) >= estimator.ratio_target
            )
        if estimator.p99_target:
            p99 = None if ours is None else ours["single"]["p99_ms"]
            checks[f"single-row p99 <= {TARGET_P99_MS:g} ms"] = p99 is not None and p99 <= TARGET_P99_MS
        if estimator.batch_target is not None and (ours is None or "batch" in ours):
            rows_s = 0.0 if ours is None else ours["batch"]["rows_per_s"]
            checks[f"10,000-row batches >= {estimator.batch_target:,} rows/s"] = (
                rows_s >= estimator.batch_target
            )
        checks[f"start to /ping 200 <= {TARGET_START_S:g} s (median)"] = (
            res["start"]["median_s"] <= TARGET_START_S
        )
        out[name] = {"ratios": ratios, "checks": checks}
    return out


def _answers_right(entry: dict[str, Any]) -> bool:
    """Right on the single-row servers and, when batches were measured on servers of their own, on those."""
    batch_answers = entry.get("batch", {}).get("answers", {"correct": True})  # a result of the old layout
    return bool(entry["answers"]["correct"] and batch_answers["correct"])


def _answers_text(entry: dict[str, Any]) -> str:
    wrong = [
        f"{started}single {answers['single']}, batch {answers['batch']}"
        for started, answers in (
            ("", entry["answers"]),
            ("batch servers: ", entry.get("batch", {}).get("answers")),
        )
        if answers is not None and not answers["correct"]
    ]
    return f"WRONG ({'; '.join(wrong)})" if wrong else "right"


def _f(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(result: dict[str, Any]) -> str:
    settings, m = result["settings"], result["machine"]
    judged = verdict(result)
    workers = settings["workers"]
    anchor_lines = []
    if "mlflow_version" in m:
        anchor_lines.append(
            f"MLflow {m['mlflow_version']}: `mlflow models serve --env-manager local --workers {workers}`."
        )
    if "mlserver_version" in m:
        anchor_lines.append(
            f"Seldon MLServer {m['mlserver_version']}: `mlserver start`, parallel_workers "
            f"{settings['mlserver_parallel_workers']} (0: inference in its one HTTP process, as in ours; its "
            "inference pool's workers die at start here, `There is no current event loop` under uvloop 0.23), "
            "debug off (its default writes an access-log line per request; ours writes none)."
        )
    if "cpus" in settings:
        together = "For each scenario all of an estimator's servers are started for it and run at once"
        rss = (
            "the server's whole process tree after its scenario's load (VmRSS), the single-row servers' "
            "(in brackets the batch servers')"
        )
    else:  # a result of the old layout: one set of servers for both scenarios
        together = "All of an estimator's servers run at once"
        rss = "the server's whole process tree after the load (VmRSS)"
    cores = batch_cores(settings)
    alone_ceiling = (
        "the ceiling under the HTTP figures"
        if cores == 1
        else f"the ceiling under our single-row figures; the batch servers' {_word(cores)} cores can score "
        f"at most about {cores} times its batch rows/s"
    )
    lines = [
        "## Model server vs MLflow 3 and MLServer, per estimator (`bench/serve_bench.py`)",
        "",
        f"Machine: {m['cpu']}, {m['memory']}, {m['os']}, Python {m['python']}; load average (1, 5, 15 min) "
        f"{_load(m)} (the machine is shared, so figures move between runs).",
        f"Ours: `python -m workloads.serve.serve`, {workers} worker(s), onnxruntime on the exported graph "
        f"({m['ours']}).",
        *anchor_lines,
        f"{describe_cpus(result)} wrk: {m['wrk']}; loopback. Models: each estimator trained "
        "once on data/iris.csv by `workloads.train.train` (ours: its model.onnx; the anchors: the same fitted "
        "estimator, saved by `bench/anchor_models.py`). Single row: `"
        + SINGLE_BODY
        + "` (MLServer: the same "
        f"row as a V2 FP64 tensor), {settings['connections']} connections, {settings['duration']:g} s after "
        f"{settings['warmup']:g} s of warm-up. Batches: {settings['batch_rows']:,} iris rows per request, "
        f"{settings['batch_connections']} connections, {settings['batch_duration']:g} s. Ours answers label + "
        "class probabilities per row; the anchors answer labels (MLServer's lightgbm runtime: probabilities). "
        "Each server's labels were compared with the estimator's on the single row and on every batch row "
        f"after each start, before the load. {together} (each one not under load is paused, SIGSTOP, so its idle "
        "timers and threads do not run on the measured one's core) and the "
        f"measured seconds are split into {settings['rounds']} rounds, each measuring every server in turn, so "
        "a change in the machine's load falls on all of them alike: req/s and percentiles are medians of the "
        f"rounds, ratios medians of the per-round ratios. RSS: {rss}.",
        "",
        "| estimator | server | req/s | p50 ms | p99 ms | batch rows/s | ready s | RSS MB | answers |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, res in result["results"].items():
        for server_name, entry in res["servers"].items():
            single, batch = entry["single"], entry.get("batch")
            ok = _answers_text(entry)
            failed = single["failed"] + (batch or {}).get("failed", 0)
            rss_mb = f"{entry['rss_mb']:.0f}"
            if batch and "rss_mb" in batch:
                rss_mb += f" ({batch['rss_mb']:.0f})"
            if failed:
                ok += f", {failed} failed"
            lines.append(
                f"| {name} | {SHOWN[server_name]} | {single['rps']:,.0f} | {_f(single['p50_ms'], '.2f')} | "
                f"{_f(single['p99_ms'], '.2f')} | {_f(batch and batch['rows_per_s'], ',.0f')} | "
                f"{entry['ready_s']:.2f} | {rss_mb} | {ok} |"
            )
    lines += [
        "",
        "Ours against the anchors, and our start (spawned as `mlops.local.endpoint` starts a variant: spawn to "
        f"the first /ping 200, median of {settings['start_runs']} after an uncounted first start) and "
        f"our model alone in-process (what the server scores with), one thread on CPU 0 ({alone_ceiling}):",
        "",
        "| estimator | vs MLflow (target) | vs MLServer | p99 ms (target 5; worst round) | batch rows/s (target) | start s (target 1.5) | RSS MB | model alone (scored by): 1 row us, batch rows/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, res in result["results"].items():
        estimator, ratios = ESTIMATORS[name], judged[name]["ratios"]
        ours = res["servers"].get("ours", {})
        start, alone = res["start"], res["alone"]
        target = f" (>= {estimator.ratio_target:g}x)" if estimator.ratio_target else ""
        batch = ours.get("batch")
        batch_target = f" (>= {estimator.batch_target:,})" if estimator.batch_target else ""
        lines.append(
            f"| {name} | {_f(ratios.get('mlflow'), '.1f')}x{target} | {_f(ratios.get('mlserver'), '.1f')}x | "
            f"{_f(ours.get('single', {}).get('p99_ms'), '.2f')} ({_f(ours.get('single', {}).get('worst_p99_ms'), '.2f')}) | "
            f"{_f(batch and batch['rows_per_s'], ',.0f')}"
            f"{batch_target} | {start['median_s']:.2f} ({start['min_s']:.2f}-{start['max_s']:.2f}) | "
            f"{_f(ours.get('rss_mb'), '.0f')} | ({alone.get('kind', 'onnxruntime')}) {alone['row_us']:.1f}, "
            f"{alone['batch_rows_per_s']:,.0f} |"
        )
    floor = result.get("ping_floor")
    if floor:
        lines += [
            "",
            f"Our HTTP stack alone (GET /ping on the same server, {settings['connections']} connections, no model, "
            f"rounds beside the first estimator's): {floor['rps']:,.0f} req/s, p99 {_f(floor['p99_ms'], '.2f')} ms: "
            "the ceiling of any single-row figure of ours here.",
        ]
    lines.append("")
    missed = []
    for name, judgement in judged.items():
        for check, ok in judgement["checks"].items():
            if not ok:
                missed.append(f"{name}: {check}")
    total = sum(len(j["checks"]) for j in judged.values())
    lines.append(f"Targets and checks: {total - len(missed)} of {total} met.")
    lines += [f"- MISSED: {item}" for item in missed]
    lines += ceiling_notes(result)
    lines += [
        "",
        "Command: `make bench` (or `.venv/bin/python bench/serve_bench.py --write-readme`; it also rewrites "
        "the model-server rows of the top-level README.md)",
    ]
    return "\n".join(lines)


def _load(m: dict[str, str]) -> str:
    start = m.get("load_average_at_start")
    return (
        f"{start} at the start, {m['load_average']} at the end"
        if start
        else f"{m['load_average']} at the end"
    )


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def readme_rows(result: dict[str, Any]) -> str:
    """The model-server rows of README.md's benchmark table (its own table, between markers)."""
    judged = verdict(result)
    m, settings = result["machine"], result["settings"]
    mlflow = m.get("mlflow_version", "?").split(" ")[0]
    mlserver = m.get("mlserver_version", "?").split(" ")[0]
    lines = [
        f"Model server, per estimator: iris, the same fitted model in each server, {settings['workers']} "
        f"worker(s) each, {_cpus_short(settings)}; anchors "
        f"MLflow {mlflow} `mlflow models serve` and Seldon MLServer {mlserver}. Load average (1, 5, 15 min) "
        f"{_load(m)}: on a shared machine every server's figures are low, the ratios less so.",
        "",
        "| estimator | ours req/s | p99 (≤ 5 ms) | MLflow req/s | MLServer req/s | vs MLflow (target) | "
        "10,000-row batches rows/s (target) | start to /ping 200 (≤ 1.5 s) | RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, res in result["results"].items():
        estimator, servers = ESTIMATORS[name], res["servers"]
        ours = servers.get("ours", {})
        single = ours.get("single", {})
        ratio = judged[name]["ratios"].get("mlflow")
        ok = "" if estimator.ratio_target is None else (
            f" (≥ {estimator.ratio_target:g}x: {_met((ratio or 0) >= estimator.ratio_target)})"
        )  # fmt: skip
        p99 = single.get("p99_ms")
        p99_text = f"{_f(p99, '.2f')} ms"
        if estimator.p99_target:
            p99_text += f": {_met(p99 is not None and p99 <= TARGET_P99_MS)}"
        batch = ours.get("batch")
        batch_text = "not measured" if batch is None else f"{batch['rows_per_s']:,.0f}"
        if batch is not None and estimator.batch_target is not None:
            batch_text += (
                f" (≥ {estimator.batch_target:,}: {_met(batch['rows_per_s'] >= estimator.batch_target)})"
            )
        start = res["start"]["median_s"]
        lines.append(
            f"| {name} | {_f(single.get('rps'), ',.0f')} | {p99_text} | "
            f"{_f(_rps(servers.get('mlflow')), ',.0f')} | {_f(_rps(servers.get('mlserver')), ',.0f')} | "
            f"**{_f(ratio, '.1f')}x**{ok} | {batch_text} | {start:.2f} s: {_met(start <= TARGET_START_S)} | "
            f"{_f(ours.get('rss_mb'), '.0f')} MB |"
        )
    lines += ceiling_notes(result)
    return "\n".join(lines)


def ceiling_notes(result: dict[str, Any]) -> list[str]:
    """A batch target that our model alone cannot reach on the batch servers' cores, said where it is
    missed: one thread's batch rows/s times the cores it scores on at once (onnxruntime: every core; a
    model scored under the GIL: one) is a ceiling."""
    settings = result["settings"]
    cores = batch_cores(settings)
    notes = []
    for name, res in result["results"].items():
        target = ESTIMATORS[name].batch_target
        if target is None or "batch" not in res["servers"].get("ours", {}):
            continue
        alone = res["alone"]["batch_rows_per_s"]
        kind = res["alone"].get("kind", "onnxruntime")
        scoring = cores if kind == "onnxruntime" else 1
        if alone * scoring >= target:
            continue
        measured = (
            f"{name}: our model alone ({kind} on {settings['batch_rows']:,}-row batches, one thread on "
            f"CPU 0, no HTTP, parsing or encoding) computes {alone:,.0f} rows/s"
        )
        if scoring == 1:
            notes.append(
                f"{measured}, under the {target:,} rows/s target, so no change around it can meet that target "
                "scoring on one core at a time."
            )
        else:
            notes.append(
                f"{measured}; on the batch servers' {_word(scoring)} cores, one batch per core at once, that is "
                f"at most about {alone * scoring:,.0f} rows/s, still under the {target:,} rows/s target, so no "
                f"change around it can meet that target on {_word(scoring)} cores."
            )
    return ["", *notes] if notes else []


def _word(n: int) -> str:
    return {1: "one", 2: "two", 3: "three", 4: "four"}.get(n, str(n))


def _cpus_named(cpus: str) -> str:
    return f"CPUs {cpus}" if "," in cpus else f"CPU {cpus}"


def batch_cores(settings: dict[str, Any]) -> int:
    """The cores the batch servers had: one in a result of the old layout (every server on CPU 0)."""
    batch = settings.get("cpus", {}).get("batch")
    return 1 if batch is None else len(batch["servers"].split(","))


def describe_cpus(result: dict[str, Any]) -> str:
    """Which CPUs each scenario's servers and wrk had, as settings["cpus"] recorded them, and why."""
    settings = result["settings"]
    cpus = settings.get("cpus")
    if cpus is None:  # written before each scenario had servers of its own
        return (
            "Every server pinned to CPU 0 and wrk to CPU 1, for the single row and for batches alike (the same "
            "running servers: this result predates batch servers on two cores)."
        )
    single, batch = cpus["single"], cpus.get("batch")
    if not single["pinned"]:
        return (
            "Nothing pinned (one CPU, or no taskset): every server and wrk ran on "
            f"{_cpus_named(single['servers'])}"
            + (", the batches on servers started again for them." if batch else ".")
        )
    text = (
        f"Single row: every server pinned to {_cpus_named(single['servers'])} and wrk to "
        f"{_cpus_named(single['wrk'])}, a core of its own, as it is busy at {settings['connections']} "
        "connections of one-row requests."
    )
    if batch is None:
        return text
    names = [SHOWN[s] for s in settings["servers"]]
    cores = _word(len(batch["servers"].split(",")))
    who = (
        f"every server ({', '.join(names[:-1])} and {names[-1]}) started again for them, each with the same "
        f"{cores} cores"
        if len(names) > 1
        else f"our server started again for them with {cores} cores"
    )
    busiest = max(
        (rps for res in result["results"].values() for e in res["servers"].values()
         for rps in e.get("batch", {}).get("rounds_rps", [])),
        default=0.0,
    )  # fmt: skip
    return (
        f"{text} Batches: {who}, {_cpus_named(batch['servers'])}, and wrk on {_cpus_named(batch['wrk'])}: at "
        f"{settings['batch_connections']} connections of {settings['batch_rows']:,}-row requests wrk sent at "
        f"most {busiest:,.0f} requests a second in any round, a light load, and a production server owns "
        "every core of its machine."
    )


def _cpus_short(settings: dict[str, Any]) -> str:
    """The CPU layout in a few words, for README.md's table."""
    cpus, conns = settings.get("cpus"), settings["connections"]
    if cpus is None:
        return f"on one pinned core (batches too), single-row JSON at {conns} connections"
    if not cpus["single"]["pinned"]:
        return f"nothing pinned (one CPU), single-row JSON at {conns} connections"
    single, batch = cpus["single"], cpus.get("batch")
    text = (
        f"single-row JSON at {conns} connections with every server on {_cpus_named(single['servers'])} "
        f"(wrk on {_cpus_named(single['wrk'])})"
    )
    if batch is not None:
        cores = _word(len(batch["servers"].split(",")))
        text += (
            f", {settings['batch_rows']:,}-row batches on servers started again with the same {cores} cores "
            f"each ({_cpus_named(batch['servers'])}; wrk on {_cpus_named(batch['wrk'])})"
        )
    return text


def _csv_list(choices: tuple[str, ...] | list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got {text!r}")
        return items

    return parse


def whole_wrk_seconds(args: argparse.Namespace) -> None:
    """wrk takes whole seconds only (-d0.5s is a usage error): round each warm-up, and each round's share
    of a measured duration, up to whole seconds, so settings (and the report) say what wrk ran."""
    for key in ("warmup", "batch_warmup"):
        value = getattr(args, key)
        if value > 0 and value != math.ceil(value):
            log(f"--{key.replace('_', '-')} {value:g}: wrk takes whole seconds, using {math.ceil(value)}")
            setattr(args, key, float(math.ceil(value)))
    for key in ("duration", "batch_duration"):
        value = getattr(args, key)
        per_round = max(1, math.ceil(value / args.rounds))
        if per_round * args.rounds != value:
            used = float(per_round * args.rounds)
            log(f"--{key.replace('_', '-')} {value:g}: wrk takes whole seconds per round, using {used:g}")
            setattr(args, key, used)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    names = list(ESTIMATORS)
    parser.add_argument("--estimators", type=_csv_list(names), default=names, help="comma-separated")
    parser.add_argument("--servers", type=_csv_list(SERVERS), default=list(SERVERS), help="comma-separated")
    parser.add_argument(
        "--batch-estimators",
        type=_csv_list(names),
        default=["logistic_regression", "random_forest"],
        help="the estimators measured on batches, on servers started again with CPUs 0,1 (default: the two "
        "with a batch target)",
    )
    parser.add_argument("--duration", type=float, default=9.0, help="measured seconds per server, single row")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="the measured seconds are split into rounds alternating the servers",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="uncounted seconds before the single-row run"
    )
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, the same for every server (on CPU 0 for the single row, CPUs 0,1 for batches)",
    )
    parser.add_argument(
        "--mlserver-parallel-workers",
        type=int,
        default=0,
        help="MLServer's inference processes beside its HTTP one (0: inference in the HTTP process, like "
        "our one worker; MLServer 1.7.1's pool workers die at start with uvloop 0.23 here)",
    )
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument(
        "--batch-duration", type=float, default=6.0, help="measured seconds per server, batches"
    )
    parser.add_argument("--batch-warmup", type=float, default=1.0)
    parser.add_argument("--start-runs", type=int, default=5, help="measured starts per estimator")
    parser.add_argument(
        "--write-readme",
        action="store_true",
        help="update this bench's sections of bench/README.md and README.md",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: report (and with --write-readme, write) the result.json of an earlier run",
    )
    args = parser.parse_args(argv)
    if "ours" not in args.servers:
        parser.error("--servers must include ours")
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        whole_wrk_seconds(args)
        result = measure(args)
        (OUT / "result.json").write_text(json.dumps(result, indent=2))
    try:
        text, rows = report(result), readme_rows(result)
    except (KeyError, TypeError) as exc:
        if not args.from_json:
            raise
        # A result.json of an older layout than the ones report() reads (those without "cpus" it does).
        parser.exit(
            2, f"{args.from_json}: not a result.json this bench can report ({exc!r} missing or wrong)\n"
        )
    print(text)
    print()
    print(rows)
    if args.write_readme:
        write_readme_section("serve_bench", text)
        write_readme_section("serve_bench", rows, ROOT_README)
    judged = verdict(result)
    return 0 if all(all(j["checks"].values()) for j in judged.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
