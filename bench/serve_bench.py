"""The model server against MLflow 3's model server, side by side in one run, on loopback.

    .venv/bin/python bench/serve_bench.py [--duration 15] [--workers 1] [--write-readme]

Both serve the same fitted iris Pipeline(StandardScaler, LogisticRegression):
  ours     `python -m workloads.serve.serve` on the model_io artifact (skops)
  mlflow   `mlflow models serve -m <dir> --env-manager local` on the same estimator saved with
           mlflow.sklearn.save_model, from its own venv bench/.out/mlflow-venv (built from uv.lock's `bench`
           group; MLflow never enters the project's .venv)

Load: wrk (Debian package `wrk`, installed with apt-get if missing), a Lua script for POST, a warm-up run
that is not counted, then --duration seconds measured. Every non-2xx answer or socket error is counted and
fails the run. Servers run pinned to CPU 0 and wrk to CPU 1 (when the machine has two), so the load
generator does not steal the server's core; both servers get the same --workers.

Scenarios:
  single     {"instances": [[5.1, 3.5, 1.4, 0.2]]}, 8 connections: req/s and p50/p99 latency, both servers
  batch-json 10,000 rows as {"instances": [...]} per request: rows/s, both servers
  batch-csv  10,000 rows as text/csv per request: rows/s, ours (MLflow reads a CSV's first line as a header)

Targets (issue #2): ours >= 8x MLflow's single-row throughput with p99 <= 5 ms; >= 1,000,000 rows/s in
batches. Note the servers do not do the same work: ours answers every row's label *and* class
probabilities; MLflow's sklearn flavor answers predict() labels only - the comparison favours MLflow.

--write-readme replaces this benchmark's section of bench/README.md (between its markers). Exit status 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from readme_section import write_readme_section

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OUT = REPO / "bench" / ".out" / "serve"
MLFLOW_VENV = REPO / "bench" / ".out" / "mlflow-venv"
UV = REPO / ".tools" / "bin" / "uv"

TARGET_RATIO = 8.0
TARGET_P99_MS = 5.0
TARGET_BATCH_ROWS_PER_S = 1_000_000
SINGLE_BODY = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'

# Reads the body from a file so a 400 KB batch needs no quoting; fails loudly if the file is missing.
LUA = """\
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
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


def ensure_mlflow_venv() -> Path:
    """bench/.out/mlflow-venv with the lock's `bench` group plus the serving image's pinned packages."""
    python = MLFLOW_VENV / "bin" / "python"
    marker = MLFLOW_VENV / ".bench-synced"
    lock = REPO / "uv.lock"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return python
    log(f"building the MLflow anchor's venv in {MLFLOW_VENV.relative_to(REPO)} from uv.lock (bench group)")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_PROJECT_ENVIRONMENT": str(REPO / ".venv")}
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
    # skops and the serving versions of numpy/scikit-learn, hash-checked, so this venv can read the
    # model_io artifact and holds the very same estimator classes as the server it is compared with.
    subprocess.run(
        [str(UV), "pip", "install", "--python", str(python), "--no-deps", "-r",
         str(REPO / "workloads" / "requirements.txt")],
        env=env, check=True,
    )  # fmt: skip
    marker.touch()
    return python


# --- the model --------------------------------------------------------------------------------------


def iris() -> tuple[list[str], Any, Any]:
    import numpy as np

    with (REPO / "data" / "iris.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    header, data = rows[0], rows[1:]
    x = np.array([[float(v) for v in row[:-1]] for row in data])
    y = np.array([row[-1] for row in data])
    return header, x, y


def prepare_models(mlflow_python: Path | None) -> tuple[Path, Path | None, Any]:
    """Fit once; write the model_io artifact and (in MLflow's venv) the MLflow model of that estimator."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from workloads import model_io

    header, x, y = iris()
    pipeline = Pipeline([("scaler", StandardScaler()), ("classifier", LogisticRegression(max_iter=1000))])
    pipeline.fit(x, y)
    ours = OUT / "model"
    shutil.rmtree(ours, ignore_errors=True)
    model_io.save_model(
        ours,
        pipeline,
        model_io.ModelMetadata(
            feature_names=header[:-1],
            class_labels=[str(c) for c in pipeline.classes_],
            target=header[-1],
            algorithm="sklearn.pipeline.Pipeline(StandardScaler, LogisticRegression)",
            library_versions=model_io.library_versions(),
        ),
    )
    if mlflow_python is None:
        return ours, None, x
    theirs = OUT / "mlflow-model"
    shutil.rmtree(theirs, ignore_errors=True)
    code = (
        "import sys; sys.path.insert(0, sys.argv[3])\n"
        "import mlflow.sklearn\n"
        "from workloads import model_io\n"
        "estimator, _ = model_io.load_model(sys.argv[1])\n"
        "mlflow.sklearn.save_model(estimator, sys.argv[2])\n"
    )
    # cwd outside the repo: from inside a uv project MLflow spends ~10 s trying `uv export` for its
    # requirements file, which serving does not read with --env-manager local.
    subprocess.run([str(mlflow_python), "-c", code, str(ours), str(theirs), str(REPO)], check=True, cwd=OUT)
    return ours, theirs, x


# --- servers ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) >= 2 and shutil.which("taskset") else []


def _post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def server(name: str, cmd: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    logfile = OUT / f"{name}.log"
    with logfile.open("wb") as out:
        # Own session, so stopping it reaches the workers it forks and nothing else.
        proc = subprocess.Popen(
            [*_pin(0), *cmd], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {logfile}")
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer /ping within 180 s; see {logfile}")
            time.sleep(0.25)
        # Every worker loads on its own; give the others time to finish before the load starts.
        time.sleep(2.0)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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
    wrk: str,
    url: str,
    body_file: Path,
    content_type: str,
    *,
    connections: int,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    script = OUT / "post.lua"
    script.write_text(LUA)
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_CONTENT_TYPE": content_type}
    threads = min(2, connections)
    base = [*_pin(1), wrk, f"-t{threads}", f"-c{connections}", "--latency", "-s", str(script)]
    if warmup > 0:
        subprocess.run([*base, f"-d{warmup:g}s", url], env=env, check=True, capture_output=True, text=True)
    done = subprocess.run(
        [*base, f"-d{duration:g}s", "--timeout", "10s", url],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result = parse_wrk(done.stdout)
    if result["non_2xx"] or result["socket_errors"]:
        raise RuntimeError(
            f"{url}: {result['non_2xx']} non-2xx answers and {result['socket_errors']} socket errors:\n"
            f"{done.stdout}"
        )
    return result


# --- the run ----------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    wrk = ensure_wrk()
    OUT.mkdir(parents=True, exist_ok=True)
    mlflow_python = ensure_mlflow_venv()
    ours_dir, mlflow_dir, x = prepare_models(mlflow_python)
    assert mlflow_dir is not None

    rng = np.random.default_rng(0)
    batch = x[rng.integers(0, len(x), args.batch_rows)]
    bodies = {
        "single": (OUT / "single.json", "application/json"),
        "batch-json": (OUT / "batch.json", "application/json"),
        "batch-csv": (OUT / "batch.csv", "text/csv"),
    }
    bodies["single"][0].write_text(SINGLE_BODY)
    bodies["batch-json"][0].write_text(json.dumps({"instances": batch.tolist()}))
    bodies["batch-csv"][0].write_text(
        "\n".join(",".join(repr(v) for v in row) for row in batch.tolist()) + "\n"
    )

    ours_port, mlflow_port = free_port(), free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "MLFLOW_"))}
    ours_env = {
        **base_env,
        "PYTHONPATH": str(REPO),
        "SM_MODEL_DIR": str(ours_dir),
        "MODEL_VERSION": "bench",
        "SAGEMAKER_BIND_TO_HOST": "127.0.0.1",
        "SAGEMAKER_BIND_TO_PORT": str(ours_port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers),
    }
    servers = {
        "ours": ([sys.executable, "-m", "workloads.serve.serve"], ours_env, ours_port),
        "mlflow": (
            [str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve", "-m", str(mlflow_dir), "--env-manager",
             "local", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", str(args.workers)],
            # MLflow starts `uvicorn` by name through bash: its venv's bin must come first on PATH.
            {**base_env, "PATH": f"{MLFLOW_VENV / 'bin'}{os.pathsep}{base_env.get('PATH', '')}"},
            mlflow_port,
        ),
    }  # fmt: skip
    scenarios = {"ours": ["single", "batch-json", "batch-csv"], "mlflow": ["single", "batch-json"]}
    results: dict[str, dict[str, Any]] = {}
    for name, (cmd, env, port) in servers.items():
        results[name] = {}
        with server(name, cmd, env, port) as base:
            url = f"{base}/invocations"
            status, answer = _post(url, SINGLE_BODY.encode(), "application/json")
            if status != 200 or b"setosa" not in answer:
                raise RuntimeError(f"{name} answered the sample row with {status}: {answer[:300]!r}")
            log(f"{name}: sample answer {answer[:200].decode(errors='replace')}")
            for scenario in scenarios[name]:
                body_file, content_type = bodies[scenario]
                single = scenario == "single"
                log(f"{name}: {scenario} ...")
                result = run_wrk(
                    wrk,
                    url,
                    body_file,
                    content_type,
                    connections=args.connections if single else args.batch_connections,
                    duration=args.duration if single else args.batch_duration,
                    warmup=args.warmup,
                )
                if not single:
                    result["rows_per_s"] = result["rps"] * args.batch_rows
                results[name][scenario] = result
                log(f"{name}: {scenario}: {result}")
    return {
        "results": results,
        "settings": {k: v for k, v in vars(args).items() if k != "write_readme"},
        "machine": machine(),
    }


def machine() -> dict[str, str]:
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
    versions = {}
    for dist in ("uvicorn", "httptools", "uvloop", "orjson", "numpy", "scikit-learn"):
        versions[dist] = pkg_metadata.version(dist)
    mlflow_version = subprocess.run(
        [str(MLFLOW_VENV / "bin" / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()) + f", mlflow {mlflow_version or '?'}",
        "wrk": (wrk_version.stdout + wrk_version.stderr).strip().splitlines()[0],
        "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    ours, theirs = result["results"]["ours"], result["results"]["mlflow"]
    ratio = ours["single"]["rps"] / theirs["single"]["rps"]
    checks = {
        f"single-row throughput >= {TARGET_RATIO:g}x MLflow": ratio >= TARGET_RATIO,
        f"single-row p99 <= {TARGET_P99_MS:g} ms": ours["single"]["p99_ms"] <= TARGET_P99_MS,
        f"batch JSON >= {TARGET_BATCH_ROWS_PER_S:,} rows/s": ours["batch-json"]["rows_per_s"]
        >= TARGET_BATCH_ROWS_PER_S,
        f"batch CSV >= {TARGET_BATCH_ROWS_PER_S:,} rows/s": ours["batch-csv"]["rows_per_s"]
        >= TARGET_BATCH_ROWS_PER_S,
    }
    return {"ratio": ratio, "checks": checks}


def report(result: dict[str, Any]) -> str:
    settings, m = result["settings"], result["machine"]
    ours, theirs = result["results"]["ours"], result["results"]["mlflow"]
    judged = verdict(result)
    rows = settings["batch_rows"]

    def fmt(r: dict[str, Any] | None, key: str, spec: str) -> str:
        return "n/a" if r is None or r.get(key) is None else format(r[key], spec)

    lines = [
        "## Model server vs MLflow 3 (`bench/serve_bench.py`)",
        "",
        f"Machine: {m['cpu']}, {m['memory']}, {m['os']}, Python {m['python']}; load average at the end "
        f"{m['load_average']} (the machine is shared, so figures move between runs).",
        f"Versions: {m['versions']}; {m['wrk']}.",
        f"Both servers: {settings['workers']} worker(s) pinned to CPU 0, wrk pinned to CPU 1, loopback; "
        f"warm-up {settings['warmup']:g} s not counted. Single row: `{SINGLE_BODY}`, "
        f"{settings['connections']} connections, {settings['duration']:g} s. Batches: {rows:,} iris rows per "
        f"request, {settings['batch_connections']} connections, {settings['batch_duration']:g} s. "
        "Ours answers label + class probabilities per row; MLflow's sklearn flavor answers labels only.",
        "",
        "| scenario | server | req/s | rows/s | p50 ms | p99 ms | requests |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in ("single", "batch-json", "batch-csv"):
        for name, res in (("ours", ours), ("MLflow", theirs)):
            r = res.get(scenario)
            if r is None:
                lines.append(
                    f"| {scenario} | {name} | n/a | n/a | n/a | n/a | MLflow reads line 1 as a header |"
                )
                continue
            rows_s = r["rps"] if scenario == "single" else r["rows_per_s"]
            lines.append(
                f"| {scenario} | {name} | {fmt(r, 'rps', ',.0f')} | {rows_s:,.0f} | {fmt(r, 'p50_ms', '.2f')} "
                f"| {fmt(r, 'p99_ms', '.2f')} | {r['requests']:,} |"
            )
    lines += [
        "",
        f"- single-row throughput, ours / MLflow: **{judged['ratio']:.1f}x**",
        f"- batch JSON, ours / MLflow rows/s: {ours['batch-json']['rows_per_s'] / theirs['batch-json']['rows_per_s']:.1f}x",
    ]
    for check, ok in judged["checks"].items():
        lines.append(f"- target {check}: **{'met' if ok else 'MISSED'}**")
    lines += [
        "",
        "Command: `make bench` (or `.venv/bin/python bench/serve_bench.py "
        f"--workers {settings['workers']} --duration {settings['duration']:g} --write-readme`)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds, single row")
    parser.add_argument("--warmup", type=float, default=3.0, help="uncounted seconds before each run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="worker processes, the same for both servers")
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument("--batch-duration", type=float, default=10.0)
    parser.add_argument("--write-readme", action="store_true", help="update this section of bench/README.md")
    args = parser.parse_args(argv)
    result = measure(args)
    (OUT / "result.json").write_text(json.dumps(result, indent=2))
    text = report(result)
    print(text)
    if args.write_readme:
        write_readme_section("serve_bench", text)
    return 0 if all(verdict(result)["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
