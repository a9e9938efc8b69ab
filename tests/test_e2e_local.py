"""The walk from the README's "Done means", on a temp copy of the project, through the real `mlops` command.

`mlops local up --bootstrap` -> the API answers setosa -> change data/iris.csv, commit, `git push local
main` -> the build registers v2 pending -> `mlops approve 2` -> `mlops status --json` shows the traffic
moving in LINEAR steps, then v2 serving all of it -> `mlops local down`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STEP_PERCENT = 50
# Long enough that a CLI poll (a new Python process, ~0.3 s) lands inside the intermediate step.
STEP_WAIT_SECONDS = 2
SETOSA = {"context": "5.1, 3.5, 1.4, 0.2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Walk:
    def __init__(self, project: Path, home: Path, port: int, env: dict[str, str]) -> None:
        self.project, self.home, self.port, self.env = project, home, port, env

    def run(self, *args: str, cmd: str = "mlops", timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mlops", *args] if cmd == "mlops" else [cmd, *args]
        return subprocess.run(
            argv, cwd=self.project, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def ok(self, *args: str, cmd: str = "mlops", timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = self.run(*args, cmd=cmd, timeout=timeout)
        assert proc.returncode == 0, (
            f"{cmd} {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/predict",
            data=json.dumps(payload).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
            answer: dict[str, Any] = json.loads(resp.read())
            return answer


@pytest.fixture
def walk(tmp_path: Path, repo_root: Path) -> Iterator[Walk]:
    project = tmp_path / "clone"
    project.mkdir()
    for part in ("workloads", "data"):
        shutil.copytree(repo_root / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[user]\n\temail = reviewer@example.com\n\tname = Reviewer\n")
    home, port = tmp_path / "mlops-home", free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "GIT_"))},
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "MLOPS_HOME": str(home),
        "MLOPS_API_PORT": str(port),
        "MLOPS_TRAFFIC_STEP_PERCENT": str(STEP_PERCENT),
        "MLOPS_TRAFFIC_WAIT_SECONDS": str(STEP_WAIT_SECONDS),
    }
    w = Walk(project, home, port, env)
    w.ok("init", "--quiet", "--initial-branch=main", cmd="git")
    w.ok("add", ".", cmd="git")
    w.ok("commit", "--quiet", "-m", "the project as cloned", cmd="git")
    try:
        yield w
    finally:
        w.run("local", "down", timeout=60)  # never leave a daemon behind, whatever failed


def test_done_means_push_approve_and_watch_the_linear_shift(walk: Walk) -> None:
    # 1. `make up` on a fresh clone.
    up = walk.ok("local", "up", "--bootstrap", timeout=300)
    predict_url = f"http://127.0.0.1:{walk.port}/predict"
    assert predict_url in up.stdout
    assert "curl" in up.stdout and '{"context": "5.1, 3.5, 1.4, 0.2"}' in up.stdout
    assert "mlops approve 2" in up.stdout and "git push local main" in up.stdout
    assert "approved by 'mlops local up (bootstrap)'" in " ".join(up.stdout.split())  # said out loud
    assert walk.ok("remote", "get-url", "local", cmd="git").stdout.strip() == str(walk.home / "repo.git")

    first = walk.predict(SETOSA)
    assert first["model_version"] == "1"
    assert first["predictions"][0]["label"] == "setosa"
    assert re.fullmatch(r"[0-9a-f-]{36}", first["request_id"])

    # Running it again when everything is up only prints the URL and next steps.
    again = walk.json("local", "up", "--bootstrap")
    assert (again["predict_url"], again["bootstrapped_version"], again["serving_version"]) == (
        predict_url,
        None,
        1,
    )

    # 2. Change the training data, commit, push to the local remote.
    csv = walk.project / "data" / "iris.csv"
    header, *rows = csv.read_text().splitlines()
    csv.write_text("\n".join([header, *(r for i, r in enumerate(rows) if i % 10 != 9)]) + "\n")
    walk.ok("commit", "--quiet", "-am", "drop every tenth sample", cmd="git")
    head = walk.ok("rev-parse", "HEAD", cmd="git").stdout.strip()
    pushed = walk.ok("push", "local", "main", cmd="git")
    match = re.search(r"mlops: build (\d+) started for ([0-9a-f]{12})", pushed.stderr)
    assert match is not None, pushed.stderr
    build_id = match[1]
    assert match[2] == head[:12]
    assert f"mlops logs {build_id} --follow" in pushed.stderr

    # 3. The build: follow its log to the end; v2 waits for a person.
    log = walk.ok("logs", build_id, "--follow", timeout=300).stdout
    assert (
        "metric accuracy=" in log
        and "registered arn:local:sagemaker:local:000000000000:model-package/iris/2" in log
    )
    models = {m["version"]: m for m in walk.json("models")}
    assert sorted(models) == [1, 2]
    assert (models[1]["status"], models[1]["approver"]) == ("Approved", "mlops local up (bootstrap)")
    assert (models[2]["status"], models[2]["source_commit"]) == ("PendingManualApproval", head)
    assert models[2]["metrics"]["n_train"] + models[2]["metrics"]["n_test"] == 135

    # 4. A person approves v2; the deployer shifts traffic in LINEAR steps.
    approved = walk.json("approve", "2", "--description", "fewer but cleaner samples")
    assert (approved["status"], approved["approver"]) == ("Approved", "reviewer@example.com")

    shares: list[float] = []
    deadline = time.monotonic() + 120
    while True:
        status = walk.json("status")
        shares.append(sum(v["weight"] for v in status["variants"] if v["model_version"] == 2))
        last = status["last_deployment"]
        if (
            status["serving_version"] == 2
            and last
            and last["target_version"] == 2
            and last["status"] != "InProgress"
        ):
            break
        assert time.monotonic() < deadline, f"v2 not serving after 120 s: {status}"
        time.sleep(0.1)
    intermediate = [s for s in shares if 0 < s < 1]
    assert intermediate, f"never saw a split between v1 and v2: {shares}"
    assert set(intermediate) == {STEP_PERCENT / 100}
    assert shares == sorted(shares)  # traffic only ever moves towards v2
    assert (last["status"], last["from_version"]) == ("Succeeded", 1)
    assert sum(v["weight"] for v in status["variants"] if v["model_version"] == 2) == pytest.approx(1.0)
    assert all(v["weight"] == 0 for v in status["variants"] if v["model_version"] != 2)

    second = walk.predict(SETOSA)
    assert (second["model_version"], second["predictions"][0]["label"]) == ("2", "setosa")
    assert "serving v2" in walk.ok("status").stdout

    # 5. Stop it: the daemon is gone and the state stays on disk.
    down = walk.json("local", "down")
    assert len(down["stopped"]) == 1 and down["stopped"][0].startswith("stopped the local platform daemon")
    with pytest.raises(OSError):
        walk.predict(SETOSA)
    after = walk.json("status")
    assert (after["serving_version"], after["variants"]) == (2, [])
