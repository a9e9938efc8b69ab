"""The local git remote and build: a push trains the pushed commit and registers a pending version."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops.backend import PENDING
from mlops.local import build as builds
from mlops.local import repo
from mlops.local.registry import LocalRegistry
from mlops.local.settings import LocalSettings
from workloads import model_io

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
}


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_IDENTITY},
    )


@pytest.fixture
def project(tmp_path: Path, repo_root: Path) -> Path:
    """A git work tree holding a copy of the project's workloads/ and data/, as a user's clone would."""
    work = tmp_path / "project"
    work.mkdir()
    shutil.copytree(repo_root / "workloads", work / "workloads", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo_root / "data", work / "data")
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "initial")
    return work


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalSettings:
    home = tmp_path / "home"
    monkeypatch.setenv("MLOPS_HOME", str(home))  # what the hook's build inherits through `git push`
    monkeypatch.delenv("MLOPS_MIN_ACCURACY", raising=False)
    s = LocalSettings.from_env()
    repo.init_remote(s)
    return s


def push(project: Path, settings: LocalSettings, refspec: str = "main") -> str:
    """`git push local <refspec>`; returns what git printed (the hook's lines come back as `remote: ...`)."""
    if "local" not in git(project, "remote").stdout.split():
        git(project, "remote", "add", "local", str(settings.repo_path))
    return git(project, "push", "local", refspec).stderr


def commit_data(project: Path, text: str, message: str) -> str:
    (project / "data" / "iris.csv").write_text(text)
    git(project, "commit", "--quiet", "-am", message)
    return git(project, "rev-parse", "HEAD").stdout.strip()


def test_push_to_main_trains_the_pushed_code_and_registers_a_pending_version(
    project: Path, settings: LocalSettings
) -> None:
    # Change the default regularisation in the pushed code: the registered model must carry it, which
    # proves the build ran the commit's workloads/ and not the platform's own copy.
    train_py = project / "workloads" / "train" / "estimators.py"
    source = train_py.read_text()
    default = '"logistic_regression": {"C": 1.0, "max_iter": 1000}'
    assert default in source
    train_py.write_text(source.replace(default, default.replace("1.0", "0.5")))
    git(project, "commit", "--quiet", "-am", "weaker regularisation")
    head = git(project, "rev-parse", "HEAD").stdout.strip()

    said = push(project, settings)
    assert "mlops: build 1 started for " + head[:12] in said
    assert "mlops logs 1 --follow" in said

    build = builds.wait(settings, 1, timeout=120)
    assert (build.status, build.model_version, build.commit, build.failure_reason) == (
        builds.SUCCEEDED,
        1,
        head,
        None,
    )
    registry = LocalRegistry(settings.db_path, settings.models_dir)
    model = registry.get(settings.group, 1)
    assert model.status == PENDING
    assert model.source_commit == head
    assert model.data_location == f"{settings.repo_path}#{head}:data/iris.csv"

    log = Path(build.log_path).read_text()
    assert "-m workloads.train.train" in log
    match = re.search(r"^metric accuracy=([0-9.]+)$", log, re.M)
    assert match is not None
    logged = float(match.group(1))
    assert model.metrics["accuracy"] == pytest.approx(logged, abs=5e-5)
    assert model.metrics["n_train"] + model.metrics["n_test"] == 150
    assert set(model.metrics["per_class"]) == {"setosa", "versicolor", "virginica"}

    estimator, metadata = model_io.load_model(registry.artifact_dir(settings.group, 1))
    assert metadata.hyperparameters["C"] == "0.5"
    assert metadata.hyperparameters["min_accuracy"] == "0.9"
    assert list(estimator.predict([[5.1, 3.5, 1.4, 0.2]])) == ["setosa"]
    # The checkout is the pushed tree, not a copy of the work tree.
    assert (settings.builds_dir / "1" / "src" / "data" / "iris.csv").read_text() == (
        project / "data" / "iris.csv"
    ).read_text()
    assert not (settings.builds_dir / "1" / "src" / ".git").exists()
    # The version's image is the pushed commit's workloads/ (issue 9): its serving code is the commit's.
    image = registry.image_dir(settings.group, 1) / "workloads"
    assert default.replace("1.0", "0.5") in (image / "train" / "estimators.py").read_text()
    assert (image / "serve" / "serve.py").read_text() == (
        project / "workloads" / "serve" / "serve.py"
    ).read_text()


def test_bad_data_fails_with_the_workloads_reason_and_registers_nothing(
    project: Path, settings: LocalSettings
) -> None:
    rows = (project / "data" / "iris.csv").read_text().splitlines()
    # A text value is no longer an error (the column would be categorical); a lost field is.
    rows[3] = "5.0,3.6,0.2,setosa"
    commit_data(project, "\n".join(rows) + "\n", "a typo in the data")
    push(project, settings)

    build = builds.wait(settings, 1, timeout=120)
    workload_reason = (settings.builds_dir / "1" / "output" / "failure").read_text().strip()
    assert build.status == builds.FAILED
    assert build.failure_reason == workload_reason
    assert "line 4: expected 5 fields, found 4" in workload_reason
    assert build.model_version is None
    assert LocalRegistry(settings.db_path, settings.models_dir).versions(settings.group) == []
    assert f"build 1 FAILED: {workload_reason}" in Path(build.log_path).read_text()


def test_missed_quality_gate_fails_and_registers_nothing(
    project: Path, settings: LocalSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Settings are fixed in the hook when `mlops local up` writes it, not taken from the pushing shell.
    monkeypatch.setenv("MLOPS_MIN_ACCURACY", "0.999")  # holdout accuracy on iris is about 0.93
    repo.init_remote(LocalSettings.from_env())
    monkeypatch.delenv("MLOPS_MIN_ACCURACY")
    push(project, settings)

    build = builds.wait(settings, 1, timeout=120)
    assert build.status == builds.FAILED
    assert build.min_accuracy == 0.999
    assert build.failure_reason is not None
    assert build.failure_reason.startswith("quality gate failed: holdout accuracy 0.9")
    assert "< min_accuracy 0.9990" in build.failure_reason
    assert LocalRegistry(settings.db_path, settings.models_dir).versions(settings.group) == []


def test_pushes_to_other_branches_are_ignored(project: Path, settings: LocalSettings) -> None:
    git(project, "checkout", "--quiet", "-b", "feature")
    said = push(project, settings, "feature")
    assert "mlops: ignoring push to refs/heads/feature: only main is built" in said
    with builds.BuildStore(settings) as store:
        assert store.all() == []


def test_concurrent_builds_run_one_at_a_time_and_get_consecutive_versions(
    project: Path, settings: LocalSettings
) -> None:
    push(project, settings)  # build 1, started by the hook
    head = git(project, "rev-parse", "HEAD").stdout.strip()
    with builds.BuildStore(settings) as store:
        second = store.enqueue(head, ref="refs/heads/main")
    builds.spawn(settings, second.id)

    done = [builds.wait(settings, i, timeout=180) for i in (1, 2)]
    assert [b.status for b in done] == [builds.SUCCEEDED, builds.SUCCEEDED]
    assert sorted(b.model_version or 0 for b in done) == [1, 2]
    first, later = sorted(done, key=lambda b: b.started_at or "")
    assert first.finished_at is not None and later.started_at is not None
    assert first.finished_at <= later.started_at  # ISO-8601 UTC stamps compare in time order
    assert "another build is running; waiting for it to finish" in Path(later.log_path).read_text()


def test_a_build_whose_process_died_is_marked_failed_not_waited_on(settings: LocalSettings) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with builds.BuildStore(settings) as store:
        queued = store.enqueue("0" * 40, ref="refs/heads/main")
        store.set_pid(queued.id, dead.pid)
    build = builds.wait(settings, queued.id, timeout=10)
    assert build.status == builds.FAILED
    assert build.failure_reason is not None and "ended without finishing" in build.failure_reason


def test_follow_log_stops_when_the_build_has_finished(project: Path, settings: LocalSettings) -> None:
    push(project, settings)
    lines = list(builds.follow_log(settings, 1, follow=True))
    assert lines[0].endswith(
        "build 1: commit " + git(project, "rev-parse", "HEAD").stdout.strip() + " (refs/heads/main)"
    )
    assert "SUCCEEDED: registered" in lines[-1]
    with builds.BuildStore(settings) as store:
        assert store.get(1).status == builds.SUCCEEDED


def test_build_commit_by_hand_trains_that_commit(
    project: Path, settings: LocalSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 9: `python -m mlops.local.build commit main` raised UnboundLocalError (dead code).
    push(project, settings)
    builds.wait(settings, 1, timeout=120)
    capsys.readouterr()
    assert builds.main(["--home", str(settings.home), "commit", "main"]) == 0
    assert capsys.readouterr().out.strip() == "build 2 succeeded: model version 2"
    assert builds.main(["--home", str(settings.home), "commit", "no-such-branch"]) == 2
    assert "'no-such-branch' is not a commit in" in capsys.readouterr().err


MLOPS_TOML = """
[data]
path = "data/moved.csv"
target = "species"

[model]
task = "classification"
estimator = "random_forest"
group = "iris"

[model.hyperparameters]
n_estimators = 5
"""


def test_the_commits_mlops_toml_chooses_data_and_estimator_and_the_env_var_is_ignored_aloud(
    project: Path, settings: LocalSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Species first: the label need not be the last column when mlops.toml names it.
    rows = [line.split(",") for line in (project / "data" / "iris.csv").read_text().splitlines()]
    (project / "data" / "moved.csv").write_text("\n".join(",".join([r[4], *r[:4]]) for r in rows) + "\n")
    (project / "mlops.toml").write_text(MLOPS_TOML)
    git(project, "add", ".")
    git(project, "commit", "--quiet", "-m", "random forest on moved data")
    # The variable as the platform was started with it (the hook fixes settings at `mlops local up`).
    monkeypatch.setenv("MLOPS_TRAINING_DATA_PATH", "data/elsewhere.csv")
    repo.init_remote(LocalSettings.from_env())
    push(project, settings)

    build = builds.wait(settings, 1, timeout=120)
    assert build.status == builds.SUCCEEDED, build.failure_reason
    assert build.data_path == "data/moved.csv"
    log = Path(build.log_path).read_text()
    assert "data: data/moved.csv (mlops.toml [data] path)" in log
    assert "mlops.toml: classification with random_forest" in log
    assert "mlops.toml: mlops.toml:" not in log  # the build's line named the file twice
    assert "MLOPS_TRAINING_DATA_PATH=data/elsewhere.csv is ignored" in log
    # The train channel is a directory holding the data, as SageMaker hands it to the job, so a user's
    # own script that lists SM_CHANNEL_TRAIN runs the same on both platforms.
    (channel,) = [
        line.split("SM_CHANNEL_TRAIN=", 1)[1] for line in log.splitlines() if "SM_CHANNEL_TRAIN=" in line
    ]
    assert channel.endswith(f"/builds/{build.id}/input/data/train"), channel
    registry = LocalRegistry(settings.db_path, settings.models_dir)
    metadata = model_io.load_metadata(registry.artifact_dir("iris", 1))
    assert metadata.algorithm.endswith("RandomForestClassifier)")
    assert [f["name"] for f in metadata.features] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert metadata.onnx_file == "model.onnx" and metadata.serving_check["passed"] is True
    assert str(registry.get("iris", 1).data_location).endswith(":data/moved.csv")


def test_a_group_other_than_the_platforms_fails_the_build_before_training(
    project: Path, settings: LocalSettings
) -> None:
    (project / "mlops.toml").write_text('[model]\ngroup = "wine"\n')
    git(project, "add", ".")
    git(project, "commit", "--quiet", "-m", "wine")
    push(project, settings)

    build = builds.wait(settings, 1, timeout=120)
    assert build.status == builds.FAILED
    assert build.failure_reason == (
        "mlops.toml [model] group 'wine' is not the group this local platform serves "
        "('iris', MLOPS_MODEL_PACKAGE_GROUP): set one to the other"
    )
    assert not (settings.builds_dir / "1" / "model").exists()


def test_a_bad_mlops_toml_fails_the_build_naming_the_key(project: Path, settings: LocalSettings) -> None:
    (project / "mlops.toml").write_text('[model]\nestimator = "svm"\n')
    git(project, "add", ".")
    git(project, "commit", "--quiet", "-m", "typo")
    push(project, settings)

    build = builds.wait(settings, 1, timeout=120)
    assert build.status == builds.FAILED
    assert build.failure_reason == (
        "mlops.toml: [model] estimator for classification must be one of logistic_regression, "
        "random_forest, hist_gradient_boosting, xgboost, lightgbm, not 'svm'"
    )
