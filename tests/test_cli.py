"""The `mlops` verbs against the local backend: --json output by value, errors as one line and an exit code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlops import cli
from mlops.backend import (
    APPROVED,
    DEPLOY_IN_PROGRESS,
    DEPLOY_SUCCEEDED,
    PENDING,
    REJECTED,
    DeploymentStatus,
    EndpointStatus,
    VariantStatus,
)
from mlops.local.backend import LocalBackend, UpResult
from mlops.local.registry import LocalRegistry, package_arn
from mlops.local.settings import LocalSettings

APPROVER = "alice@example.com"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MLOPS_HOME in tmp, a neutral cwd (not a git work tree) and a known git identity for approvals."""
    home = tmp_path / "home"
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(f"[user]\n\temail = {APPROVER}\n\tname = Alice\n")
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("MLOPS_TARGET", "MLOPS_API_PORT", "MLOPS_MIN_ACCURACY", "MLOPS_MODEL_PACKAGE_GROUP"):
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return home


def registry(home: Path) -> LocalRegistry:
    return LocalRegistry(home / "platform.db", home / "models")


@pytest.fixture
def two_versions(home: Path, tmp_path: Path) -> LocalRegistry:
    model = tmp_path / "model"
    model.mkdir()
    (model / "metadata.json").write_text(json.dumps({"class_labels": ["setosa"]}))
    reg = registry(home)
    reg.register("iris", model, metrics={"accuracy": 0.9667, "f1_macro": 0.9665}, source_commit="a" * 40)
    reg.register("iris", model, metrics={"accuracy": 0.9333, "f1_macro": 0.9327}, source_commit="b" * 40)
    return reg


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """main(argv) in-process -> (exit code, parsed JSON stdout or raw text, stderr)."""
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    try:
        out: Any = json.loads(captured.out)
    except json.JSONDecodeError:
        out = captured.out
    return code, out, captured.err


def test_models_lists_every_version_with_status_and_metrics(
    two_versions: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "models", "--json")
    assert (code, err) == (0, "")
    assert [(m["version"], m["status"], m["metrics"]["accuracy"]) for m in out] == [
        (1, PENDING, 0.9667),
        (2, PENDING, 0.9333),
    ]
    assert out[0]["arn"] == package_arn("iris", 1)
    assert out[1]["source_commit"] == "b" * 40
    # --json is accepted before the verb too.
    assert run(capsys, "--json", "models")[1] == out

    code, text, _ = run(capsys, "models")
    assert code == 0
    assert "PendingManualApproval" in text and "0.9667" in text and "aaaaaaaa" in text


def test_models_shows_a_regressors_r2_and_rmse_where_a_classifier_shows_accuracy(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "metadata.json").write_text(json.dumps({"class_labels": [], "task": "regression"}))
    registry(home).register(
        "iris", model, metrics={"r2": 0.4127, "rmse": 55.21, "mae": 44.0}, source_commit="c" * 40
    )
    monkeypatch.setenv("COLUMNS", "100")
    code, text, _ = run(capsys, "models")
    head = next(line for line in text.splitlines() if line.startswith("v1 "))
    assert code == 0
    assert head.split("PendingManualApproval")[1].split() == ["r2", "0.4127", "rmse", "55.2100"], head


def test_approve_signs_with_the_git_identity_and_emits_the_approval_event(
    two_versions: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "approve", "1", "--description", "holdout looks right", "--json")
    assert (code, err) == (0, "")
    assert (out["version"], out["status"], out["approver"], out["description"]) == (
        1,
        APPROVED,
        APPROVER,
        "holdout looks right",
    )
    assert [(e["version"], e["status"]) for e in two_versions.events_after(0)] == [(1, APPROVED)]

    # Approving it again changes nothing, and says so (no --force to suggest).
    code, out, err = run(capsys, "approve", "1")
    assert code == 1
    assert err == (
        "mlops: error: version 1 is already Approved; nothing changed; `mlops deploy 1` deploys it by hand\n"
    )
    code, out, _ = run(capsys, "reject", "1", "--reason", "wrong data", "--force", "--json")
    assert (code, out["status"], out["description"]) == (0, REJECTED, "wrong data")

    # A model package ARN is a ref too.
    code, out, _ = run(capsys, "approve", package_arn("iris", 2), "--json")
    assert (code, out["version"], out["status"]) == (0, 2, APPROVED)


def test_reject_needs_a_reason(two_versions: LocalRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "reject", "2")
    assert code == 2
    assert err == "mlops reject: the following arguments are required: --reason (see mlops reject --help)\n"
    code, _, err = run(capsys, "reject", "2", "--reason", "  ")
    assert (code, err) == (
        1,
        "mlops: error: a rejection needs a reason (--reason), so the next person knows why\n",
    )
    assert two_versions.get("iris", 2).status == PENDING

    code, out, _ = run(capsys, "reject", "2", "--reason", "virginica recall too low", "--json")
    assert (code, out["status"], out["description"], out["approver"]) == (
        0,
        REJECTED,
        "virginica recall too low",
        APPROVER,
    )


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["approve", "abc"], 1, "mlops: error: 'abc' is not a model version (like 3) or a model package ARN"),
        (["approve", "9"], 1, f"mlops: error: model package {package_arn('iris', 9)} does not exist"),
        (
            ["approve", package_arn("wine", 1)],
            1,
            f"mlops: error: {package_arn('wine', 1)} belongs to model package group 'wine'; "
            "this platform's group is 'iris' (MLOPS_MODEL_PACKAGE_GROUP)",
        ),
        (["deploy", "1"], 1, "mlops: error: the local platform is not running"),
        (["predict", "5.1, 3.5, 1.4, 0.2"], 1, "mlops: error: the local platform is not running"),
        (["predict"], 2, 'mlops predict: give one CSV row ("5.1, 3.5, 1.4, 0.2") or --instances JSON'),
        (["predict", "--instances", "[[5.1, 3.5"], 2, "mlops predict: --instances is not valid JSON"),
        (["logs"], 1, "mlops: error: no builds yet: `git push local main` or `mlops train`"),
        (["logs", "x"], 1, "mlops: error: 'x' is not a build id (like 3 or build-3)"),
        (["logs", "7"], 1, "mlops: error: build 7 does not exist"),
        (["train", "--instance-type", "ml.m5.large"], 1, "mlops: error: --instance-type is an AWS setting"),
        (["train"], 1, "mlops: error: nothing has been pushed to "),
        (["frobnicate"], 2, "mlops: argument <verb>: invalid choice: 'frobnicate'"),
        (["--target", "gcp", "models"], 2, "mlops: argument --target: invalid choice: 'gcp'"),
        (["local", "reset"], 2, "mlops local reset: deletes "),
    ],
)
def test_errors_are_one_clear_line_and_a_non_zero_exit(
    two_versions: LocalRegistry, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    got, out, err = run(capsys, *argv)
    assert got == code
    assert out == ""
    assert err.startswith(message)
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_bad_setting_is_named(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLOPS_API_PORT", "eighty")
    assert run(capsys, "models") == (1, "", "mlops: error: MLOPS_API_PORT='eighty' is not a number\n")


def test_status_with_the_platform_down_reads_the_database(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "status", "--json")
    assert (code, err) == (0, "")
    assert out == {
        "name": "local-endpoint",
        "status": "Absent",
        "variants": [],
        "serving_version": None,
        "last_deployment": None,
        "queued_version": None,
        "notes": [
            "the local platform is not running: nothing answers and nothing deploys until `make up` "
            "or `mlops local up` starts it"
        ],
        "database_bytes": None,
    }


def test_teardown_and_local_down_when_nothing_runs(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "teardown", "--json") == (0, {"removed": []}, "")
    assert run(capsys, "local", "down", "--json") == (0, {"stopped": []}, "")


def test_local_reset_deletes_the_home_only_when_it_is_one(
    two_versions: LocalRegistry,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    two_versions.close()
    assert run(capsys, "local", "reset", "--yes", "--json") == (0, {"removed": [f"deleted {home}"]}, "")
    assert not home.exists()
    assert run(capsys, "local", "reset", "--yes", "--json") == (0, {"removed": []}, "")

    not_a_home = tmp_path / "documents"
    not_a_home.mkdir()
    (not_a_home / "thesis.tex").write_text("precious")
    monkeypatch.setenv("MLOPS_HOME", str(not_a_home))
    code, _, err = run(capsys, "local", "reset", "--yes")
    assert code == 1
    assert err.startswith(
        f"mlops: error: refusing to delete {not_a_home}: it does not look like a platform home"
    )
    assert (not_a_home / "thesis.tex").read_text() == "precious"


def test_local_verbs_refuse_the_aws_target(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class FakeAws:
        name = "aws"

    monkeypatch.setattr(cli, "make_backend", lambda target, stack=None: FakeAws())
    code, _, err = run(capsys, "--target", "aws", "local", "up")
    assert (code, err) == (
        1,
        "mlops: error: `mlops local up` manages the local platform; drop --target aws\n",
    )


def _project(tmp_path: Path, repo_root: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    shutil.copytree(repo_root / "workloads", work / "workloads", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo_root / "data", work / "data")
    env = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_COMMITTER_NAME": "a"}
    for args in (
        ["init", "--quiet", "--initial-branch=main"],
        ["add", "."],
        ["commit", "--quiet", "-m", "init"],
    ):
        subprocess.run(["git", *args], cwd=work, check=True, env=env)
    return work


def test_train_builds_the_work_tree_head_and_logs_show_the_build(
    home: Path,
    tmp_path: Path,
    repo_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = _project(tmp_path, repo_root)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.chdir(project)

    code, out, err = run(capsys, "train", "--json")
    assert (code, err) == (0, "")
    assert (out["job_name"], out["status"], out["failure_reason"]) == ("build-1", "Completed", None)
    assert out["model_version"]["version"] == 1
    assert out["model_version"]["status"] == PENDING
    assert out["model_version"]["source_commit"] == head
    assert 0.9 <= out["metrics"]["accuracy"] <= 1.0
    assert out["metrics"] == out["model_version"]["metrics"]

    # The same commit again (nothing new to push) still trains: a second version, same data, and it
    # says so (issue 12, item 7: it registered an identical version without a word).
    code, out, err = run(capsys, "train", "--json")
    assert (code, out["job_name"], out["model_version"]["version"]) == (0, "build-2", 2)
    assert err.startswith(f"mlops: note: v2 was trained from the same commit and data as v1 ({head[:12]}, ")
    assert err.endswith("nothing changed since, so expect the same model\n")

    # A failing build: exit 1 with the workload's reason, nothing registered.
    code, out, err = run(capsys, "train", "--data", "data/missing.csv", "--json")
    assert code == 1
    assert (out["job_name"], out["status"], out["model_version"]) == ("build-3", "Failed", None)
    assert "data/missing.csv" in out["failure_reason"]
    assert err.startswith("mlops: build-3 failed: ")
    assert [m.version for m in registry(home).versions("iris")] == [1, 2]

    code, out, _ = run(capsys, "logs", "1", "--limit", "1")
    assert code == 0
    assert out.count("\n") == 1
    assert f"build 1 SUCCEEDED: registered {package_arn('iris', 1)}" in out
    code, out, err = run(capsys, "logs", "--json")  # the latest build, one JSON object per line
    # A failed build's log exits 1 (issue 12, item 7), after the whole log.
    assert code == 1 and err.startswith("mlops: build 3 Failed: ")
    lines = [json.loads(line)["line"] for line in out.splitlines()]
    assert lines[0].endswith(f"build 3: commit {head} (refs/heads/main)")
    workload_reason = (home / "builds" / "3" / "output" / "failure").read_text().strip()
    assert lines[-1].endswith(f"build 3 FAILED: {workload_reason}")


def _status(deployment: str | None, weight: float = 1.0) -> EndpointStatus:
    dep = DeploymentStatus(target_version=2, status=deployment, started_at="t0") if deployment else None
    return EndpointStatus(
        name="e",
        status="InService",
        variants=[VariantStatus(name="green", model_version=2, weight=weight)],
        serving_version=1,
        last_deployment=dep,
    )


def test_watch_follows_a_deployment_to_its_end() -> None:
    seen: list[EndpointStatus] = []
    feed = iter(
        [
            _status(DEPLOY_SUCCEEDED),  # the previous deployment, before the deployer picks the approval up
            _status(DEPLOY_IN_PROGRESS, 0.5),
            _status(DEPLOY_IN_PROGRESS, 0.5),
            _status(DEPLOY_SUCCEEDED, 1.0),
            _status(DEPLOY_SUCCEEDED, 1.0),
        ]
    )
    final = cli.watch_status(lambda: next(feed), seen.append, settle=60, interval=0)
    assert final.variants[0].weight == 1.0
    assert [s.variants[0].weight for s in seen] == [1.0, 0.5, 0.5, 1.0]


def test_watch_without_a_deployment_stops_after_settling() -> None:
    calls: list[int] = []

    def fetch() -> EndpointStatus:
        calls.append(1)
        return _status(None)

    cli.watch_status(fetch, lambda s: None, settle=0, interval=0)
    assert len(calls) == 1


def test_local_backend_uses_settings_from_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_MODEL_PACKAGE_GROUP", "wine")
    backend = cli.make_backend("local")
    assert isinstance(backend, LocalBackend)
    assert backend.settings == LocalSettings.from_env()
    assert backend.settings.group == "wine"


class FakeDaemon:
    """Stands in for DaemonClient: v2 serves; a deployment runs through `outcomes`, one per poll."""

    def __init__(self, outcomes: list[str], serving: int = 2) -> None:
        self.outcomes = outcomes
        self.serving = serving
        self.deployed: list[int] = []
        self.allowed: list[bool] = []

    def status(self) -> EndpointStatus:
        return EndpointStatus(name="local-endpoint", status="InService", serving_version=self.serving)

    def deploy(self, version: int, *, allow_signature_change: bool = False) -> DeploymentStatus:
        self.deployed.append(version)
        self.allowed.append(allow_signature_change)
        return DeploymentStatus(target_version=version, status=DEPLOY_IN_PROGRESS, started_at="t1")

    def rollback(self, *, allow_signature_change: bool = False) -> DeploymentStatus:
        # The daemon picks the target with the shared lifecycle rules (tests/test_lifecycle_parity.py).
        return self.deploy(1)

    def latest_deployment(self) -> DeploymentStatus | None:
        status = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        return DeploymentStatus(
            target_version=self.deployed[-1], status=status, started_at="t1", message=f"ended {status}"
        )


@pytest.fixture
def three_versions(two_versions: LocalRegistry, tmp_path: Path) -> LocalRegistry:
    two_versions.register("iris", tmp_path / "model", metrics={"accuracy": 0.9})
    two_versions.set_status("iris", 1, APPROVED, approver="a")
    two_versions.set_status("iris", 2, APPROVED, approver="a")
    return two_versions  # v1, v2 approved; v3 pending


def _with_daemon(monkeypatch: pytest.MonkeyPatch, fake: FakeDaemon) -> None:
    monkeypatch.setattr(LocalBackend, "_client", lambda self: fake)


def test_deploy_rollback_asks_the_daemon_and_waits_for_the_outcome(
    three_versions: LocalRegistry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDaemon([DEPLOY_IN_PROGRESS, DEPLOY_IN_PROGRESS, DEPLOY_SUCCEEDED])
    _with_daemon(monkeypatch, fake)
    code, out, err = run(capsys, "deploy", "--rollback", "--json")
    assert (code, err) == (0, "")
    assert (out["target_version"], out["status"]) == (1, DEPLOY_SUCCEEDED)
    assert fake.deployed == [1]
    assert fake.outcomes == [DEPLOY_SUCCEEDED]  # it polled until the deployment ended


def test_deploy_defaults_to_the_latest_approved_and_refuses_pending(
    three_versions: LocalRegistry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDaemon([DEPLOY_SUCCEEDED], serving=1)
    _with_daemon(monkeypatch, fake)
    assert run(capsys, "deploy", "--json")[1]["target_version"] == 2
    code, _, err = run(capsys, "deploy", "3")
    assert (code, err) == (
        1,
        "mlops: error: version 3 is PendingManualApproval, not Approved; nothing deployed (approve it first: mlops approve 3)\n",
    )
    code, _, err = run(capsys, "deploy", "2", "--rollback")
    assert (code, err) == (1, "mlops: error: give a version to deploy or --rollback, not both\n")
    assert fake.deployed == [2]
    # The person's allowance reaches the daemon, which applies the signature gate.
    assert run(capsys, "deploy", "2", "--allow-signature-change", "--json")[1]["target_version"] == 2
    assert fake.allowed == [False, True]


def test_a_deployment_that_rolled_back_exits_non_zero(
    three_versions: LocalRegistry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_daemon(monkeypatch, FakeDaemon([DEPLOY_IN_PROGRESS, "RolledBack"], serving=1))
    code, out, err = run(capsys, "deploy", "2", "--json")
    assert (code, out["status"]) == (1, "RolledBack")
    assert err == "mlops: deployment of v2 RolledBack: ended RolledBack\n"


def test_the_aws_target_is_chosen_by_flag_or_environment(
    moto_aws: None, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    monkeypatch.setenv("MODEL_PACKAGE_GROUP_NAME", "iris-aws")
    boto3.client("sagemaker").create_model_package_group(ModelPackageGroupName="iris-aws")
    assert run(capsys, "--target", "aws", "models", "--json") == (0, [], "")
    monkeypatch.setenv("MLOPS_TARGET", "aws")
    backend = cli.make_backend(cli.build_parser().parse_args(["models"]).target)
    assert backend.name == "aws"
    # `--target local` after the verb wins over the environment.
    assert cli.build_parser().parse_args(["models", "--target", "local"]).target == "local"


def _venv(tmp_path: Path) -> Path:
    """A project dir with .venv/bin/python and .venv/bin/mlops, as `make up` leaves it."""
    bin_dir = tmp_path / "project" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "mlops"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_next_steps_name_the_venv_mlops_when_it_is_not_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _venv(tmp_path)
    monkeypatch.chdir(bin_dir.parents[1])
    monkeypatch.setattr(cli.sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    mlops = cli.mlops_command()
    assert mlops == ".venv/bin/mlops"
    steps = cli.next_steps(
        UpResult(base_url="http://x", predict_url="http://x/predict", pid=1, versions=1), mlops
    )
    assert steps[3:] == [
        "git push local main             # builds it; `.venv/bin/mlops logs --follow` shows the build",
        ".venv/bin/mlops models          # the new version waits for a person's approval",
        ".venv/bin/mlops approve 2       # starts the LINEAR blue/green shift",
        ".venv/bin/mlops status --watch  # watch the traffic move",
        ".venv/bin/mlops local down      # stop the platform (.venv/bin/mlops local reset deletes its state)",
    ]


def test_next_steps_say_plain_mlops_when_path_finds_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _venv(tmp_path)
    monkeypatch.setattr(cli.sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(bin_dir))
    assert cli.mlops_command() == "mlops"
    # Another `mlops` earlier on PATH is not the one running: name this one by its path.
    other = tmp_path / "other"
    other.mkdir()
    (other / "mlops").write_text("#!/bin/sh\n")
    (other / "mlops").chmod(0o755)
    monkeypatch.setenv("PATH", f"{other}{os.pathsep}{bin_dir}")
    monkeypatch.chdir(tmp_path)
    assert cli.mlops_command() == "project/.venv/bin/mlops"


def test_next_steps_fall_back_to_python_m_mlops_without_a_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _venv(tmp_path)
    (bin_dir / "mlops").unlink()
    monkeypatch.setattr(cli.sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the interpreter is outside it: shown absolute
    assert cli.mlops_command() == f"{bin_dir / 'python'} -m mlops"


def test_json_errors_are_one_json_object_on_stdout_with_the_exit_code(
    two_versions: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 12, item 4: --json errors were plain text on stderr with an empty stdout.
    code, out, err = run(capsys, "approve", "9", "--json")
    assert code == cli.EXIT_ERROR
    # The message alone for scripts; people read it on stderr after "mlops: error: ".
    assert out == {
        "error": f"model package {package_arn('iris', 9)} does not exist",
        "exit_code": cli.EXIT_ERROR,
    }
    assert err == f"mlops: error: {out['error']}\n"
    code, out, err = run(capsys, "deploy", "--no-such-flag", "--json")
    assert code == cli.EXIT_USAGE and out["exit_code"] == cli.EXIT_USAGE and out["error"] == err.strip()
    # Without --json, stdout stays empty.
    code, out, err = run(capsys, "approve", "9")
    assert (code, out) == (cli.EXIT_ERROR, "") and err.startswith("mlops: error:")


def test_mlops_from_a_subdirectory_finds_the_projects_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 12, item 5: from data/ it showed an empty platform and created data/.mlops/platform.db.
    from mlops.local.settings import LocalSettings, default_home

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / ".git").mkdir()
    monkeypatch.delenv("MLOPS_HOME", raising=False)
    monkeypatch.chdir(project / "data")
    assert default_home() == project / ".mlops"  # no platform yet: the project root's
    (project / ".mlops").mkdir()
    assert LocalSettings.from_env().home == (project / ".mlops").resolve()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert default_home(outside) == outside / ".mlops"
    assert not (project / "data" / ".mlops").exists()


class _AnsweringBackend:
    """A backend whose predict() returns a fixed answer body: the table is what is under test."""

    name = "local"

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.payloads: list[dict[str, Any]] = []

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.payloads.append(payload)
        return self.answer


@pytest.mark.parametrize(
    ("answer", "shown", "absent"),
    [
        (
            {"model_version": "2", "request_id": "r-1", "predictions": [{"value": 151.25}, {"value": -3.5}]},
            ["value", "151.25", "-3.5"],
            ["probabilities", "None"],
        ),
        (
            {
                "model_version": "1",
                "request_id": "r-2",
                "predictions": [{"label": "[/red]bad", "probabilities": {"[/red]bad": 0.75, "ok": 0.25}}],
            },
            ["label", "[/red]bad", "[/red]bad 0.750, ok 0.250"],
            ["value"],
        ),
    ],
    ids=["regressor", "classifier-with-markup-in-its-classes"],
)
def test_predict_prints_a_regressors_values_and_a_classifiers_labels_as_text(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: dict[str, Any],
    shown: list[str],
    absent: list[str],
) -> None:
    backend = _AnsweringBackend(answer)
    monkeypatch.setattr(cli, "make_backend", lambda target, stack=None: backend)
    monkeypatch.setenv("COLUMNS", "120")
    code, out, err = run(capsys, "predict", "1, 2")
    assert (code, err, backend.payloads) == (0, "", [{"context": "1, 2"}])
    for text in shown:
        assert text in out, (text, out)
    for text in absent:
        assert text not in out, (text, out)
