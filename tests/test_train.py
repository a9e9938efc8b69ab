"""The training workload under SageMaker's container contract, run as SageMaker runs it: a process
whose only inputs are SM_* variables and files, judged by exit code, files written and stdout."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from workloads import model_io
from workloads.train import train as train_mod
from workloads.train.dataset import DataError, load_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
IRIS = REPO_ROOT / "data" / "iris.csv"
IRIS_HEADER = "sepal_length,sepal_width,petal_length,petal_width,species"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
# The regex a SageMaker MetricDefinition uses for these lines (docs/contracts.md).
ACCURACY_RE = re.compile(r"metric accuracy=([0-9.]+)")
F1_RE = re.compile(r"metric f1_macro=([0-9.]+)")


@dataclass
class Job:
    """The /opt/ml layout of one training job, in a temp dir."""

    root: Path

    @property
    def channel(self) -> Path:
        return self.root / "input" / "data" / "train"

    @property
    def config(self) -> Path:
        return self.root / "input" / "config"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def output_data(self) -> Path:
        return self.output / "data"

    @property
    def failure(self) -> Path:
        return self.output / "failure"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
        env.update(
            SM_CHANNEL_TRAIN=str(self.channel),
            SM_MODEL_DIR=str(self.model),
            SM_OUTPUT_DATA_DIR=str(self.output_data),
            SM_OUTPUT_DIR=str(self.output),
            SM_INPUT_CONFIG_DIR=str(self.config),
        )
        return env

    def write_csv(self, text: str, name: str = "train.csv") -> Path:
        self.channel.mkdir(parents=True, exist_ok=True)
        path = self.channel / name
        path.write_text(text, encoding="utf-8")
        return path

    def write_hyperparameters(self, hps: dict[str, str]) -> None:
        self.config.mkdir(parents=True, exist_ok=True)
        (self.config / "hyperparameters.json").write_text(json.dumps(hps))

    def run(self, *cmd: str, cwd: Path = REPO_ROOT, **extra_env: str) -> subprocess.CompletedProcess[str]:
        argv = list(cmd) or [sys.executable, "-m", "workloads.train.train"]
        return subprocess.run(
            argv, cwd=cwd, env={**self.env(), **extra_env}, capture_output=True, text=True, timeout=120
        )


def make_job(tmp_path: Path) -> Job:
    job = Job(tmp_path / "ml")
    job.channel.mkdir(parents=True)
    return job


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return make_job(tmp_path)


def iris_lines() -> list[str]:
    return IRIS.read_text().splitlines()


# --- the bundled data -----------------------------------------------------------------------------


def test_iris_csv_is_reproduced_by_make_iris_from_sklearn() -> None:
    spec = importlib.util.spec_from_file_location("make_iris", REPO_ROOT / "data" / "make_iris.py")
    assert spec is not None and spec.loader is not None
    make_iris = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_iris)
    assert make_iris.iris_csv() == IRIS.read_text()


def test_iris_csv_shape() -> None:
    lines = iris_lines()
    assert lines[0] == IRIS_HEADER
    assert lines[1] == "5.1,3.5,1.4,0.2,setosa"
    labels = [line.rsplit(",", 1)[1] for line in lines[1:]]
    assert {c: labels.count(c) for c in CLASSES} == {"setosa": 50, "versicolor": 50, "virginica": 50}
    assert len(labels) == 150


# --- a successful job, end to end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Job, subprocess.CompletedProcess[str]]:
    job = make_job(tmp_path_factory.mktemp("iris"))
    shutil.copy(IRIS, job.channel / "iris.csv")
    # A failure file from an earlier run in the same place must not survive a successful run.
    job.output.mkdir(parents=True)
    job.failure.write_text("stale reason\n")
    return job, job.run()


def test_job_succeeds_and_leaves_no_failure_file(iris_job: tuple[Job, Any]) -> None:
    job, proc = iris_job
    assert proc.returncode == 0, proc.stderr
    assert not job.failure.exists()
    assert sorted(p.name for p in job.model.iterdir()) == [
        "metadata.json",
        "metrics.json",
        "model.onnx",
        "model.skops",
    ]


def test_model_loads_and_predicts_setosa(iris_job: tuple[Job, Any]) -> None:
    job, _ = iris_job
    estimator, metadata = model_io.load_model(job.model)
    assert list(estimator.predict([[5.1, 3.5, 1.4, 0.2]])) == ["setosa"]
    assert list(estimator.predict([[6.7, 3.0, 5.2, 2.3]])) == ["virginica"]
    assert metadata.feature_names == FEATURES
    assert metadata.class_labels == CLASSES
    assert metadata.target == "species"
    assert [name for name, _ in estimator.steps] == ["scaler", "classifier"]


def test_artifact_describes_itself(iris_job: tuple[Job, Any]) -> None:
    import numpy
    import sklearn
    import skops

    job, _ = iris_job
    metadata = model_io.load_metadata(job.model)
    assert metadata.library_versions["scikit-learn"] == sklearn.__version__
    assert metadata.library_versions["numpy"] == numpy.__version__
    assert metadata.library_versions["skops"] == skops.__version__
    assert metadata.hyperparameters == {
        "C": "1.0",
        "max_iter": "1000",
        "estimator": "logistic_regression",
        "random_state": "42",
        "test_size": "0.2",
        "target": "species",
        "min_accuracy": "0.0",
    }
    assert json.loads((job.model / "metrics.json").read_text()) == metadata.metrics


def test_metrics_are_sensible(iris_job: tuple[Job, Any]) -> None:
    job, _ = iris_job
    m = model_io.load_metadata(job.model).metrics
    assert m["n_train"] == 120 and m["n_test"] == 30
    assert 0.9 <= m["accuracy"] <= 1.0
    assert 0.9 <= m["f1_macro"] <= 1.0
    assert sorted(m["per_class"]) == CLASSES
    # Stratified holdout: each class keeps its share (10 of 30).
    assert [m["per_class"][c]["support"] for c in CLASSES] == [10, 10, 10]
    # Macro F1 is by definition the mean of the per-class F1 scores.
    assert m["f1_macro"] == pytest.approx(sum(m["per_class"][c]["f1"] for c in CLASSES) / 3)
    for c in CLASSES:
        assert 0.8 <= m["per_class"][c]["precision"] <= 1.0
        assert 0.8 <= m["per_class"][c]["recall"] <= 1.0
    assert m["per_class"]["setosa"]["f1"] == 1.0  # setosa is linearly separable


def test_metric_lines_parse_with_the_metric_definition_regex(iris_job: tuple[Job, Any]) -> None:
    job, proc = iris_job
    m = model_io.load_metadata(job.model).metrics
    accuracy = ACCURACY_RE.findall(proc.stdout)
    f1 = F1_RE.findall(proc.stdout)
    assert len(accuracy) == 1 and len(f1) == 1
    assert float(accuracy[0]) == round(m["accuracy"], 4)
    assert float(f1[0]) == round(m["f1_macro"], 4)
    assert f"metric accuracy={m['accuracy']:.4f}\n" in proc.stdout


def test_evaluation_json_is_in_model_quality_style(iris_job: tuple[Job, Any]) -> None:
    job, _ = iris_job
    m = model_io.load_metadata(job.model).metrics
    report = json.loads((job.output_data / "evaluation.json").read_text())
    mc = report["multiclass_classification_metrics"]
    assert mc["accuracy"] == {"value": m["accuracy"], "standard_deviation": "NaN"}
    assert mc["f1_macro"] == {"value": m["f1_macro"], "standard_deviation": "NaN"}
    assert mc["accuracy_best_constant_classifier"]["value"] == pytest.approx(1 / 3)
    matrix = mc["confusion_matrix"]
    assert sorted(matrix) == CLASSES and all(sorted(row) == CLASSES for row in matrix.values())
    assert sum(sum(row.values()) for row in matrix.values()) == 30
    assert sum(matrix[c][c] for c in CLASSES) / 30 == pytest.approx(m["accuracy"])
    for c in CLASSES:
        assert sum(matrix[c].values()) == m["per_class"][c]["support"]
        assert matrix[c][c] / 10 == pytest.approx(m["per_class"][c]["recall"])
    # The repository's mlops.toml gate ([gate] metric/min) plus the platform's floor (min_accuracy).
    assert report["quality_gate"] == {
        "metric": "accuracy",
        "direction": "min",
        "threshold": 0.9,
        "min_accuracy": 0.0,
        "value": m["accuracy"],
        "passed": True,
    }


def test_script_path_entry_honors_hyperparameters_json_string_values(job: Job, tmp_path: Path) -> None:
    shutil.copy(IRIS, job.channel / "iris.csv")
    job.write_hyperparameters(
        {
            "C": "0.5",
            "max_iter": "200",
            "random_state": "7",
            "test_size": "0.3",
            "target": "species",
            "min_accuracy": "0.8",
        }
    )
    # Run by file path from an unrelated directory, as `python workloads/train/train.py` is documented.
    proc = job.run(sys.executable, str(REPO_ROOT / "workloads" / "train" / "train.py"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    estimator, metadata = model_io.load_model(job.model)
    clf = estimator.named_steps["classifier"]
    assert (clf.C, clf.max_iter, clf.random_state) == (0.5, 200, 7)
    assert metadata.hyperparameters == {
        "C": "0.5",
        "max_iter": "200",
        "estimator": "logistic_regression",
        "random_state": "7",
        "test_size": "0.3",
        "target": "species",
        "min_accuracy": "0.8",
    }
    assert metadata.metrics["n_test"] == 45  # ceil(0.3 * 150)
    assert metadata.metrics["n_train"] == 105


# --- bad input: one clear line, a non-zero exit, no traceback -------------------------------------

ROW = "5.1,3.5,1.4,0.2,setosa"
TWO_CLASSES = f"{IRIS_HEADER}\n{ROW}\n7.0,3.2,4.7,1.4,versicolor\n"


def _bad_cases() -> list[Any]:
    """(id, setup(job) -> None, expected failure line with {channel} for the channel path)."""

    def csv(text: str, name: str = "train.csv") -> Any:
        return lambda job: job.write_csv(text, name)

    def hps(values: dict[str, str], text: str = TWO_CLASSES) -> Any:
        def setup(job: Job) -> None:
            job.write_csv(text)
            job.write_hyperparameters(values)

        return setup

    def no_channel(job: Job) -> None:
        shutil.rmtree(job.channel)

    def not_utf8(job: Job) -> None:
        (job.channel / "train.csv").write_bytes(f"{IRIS_HEADER}\n5.1,3.5,1.4,0.2,caf\xe9\n".encode("latin-1"))

    def two_headers(job: Job) -> None:
        job.write_csv(TWO_CLASSES, "a.csv")
        job.write_csv("a,b,c,d,species\n" + ROW + "\n", "b.csv")

    return [
        pytest.param(no_channel, "training channel {channel} does not exist", id="missing-channel"),
        pytest.param(lambda job: None, "training channel {channel} holds no .csv files", id="empty-channel"),
        pytest.param(
            csv("", "train.csv"),
            "{channel}/train.csv is empty: expected a header row and data rows",
            id="empty-file",
        ),
        pytest.param(
            csv(IRIS_HEADER + "\n"), "no data rows in {channel}/train.csv: only a header", id="no-rows"
        ),
        pytest.param(
            csv(f"{IRIS_HEADER}\n{ROW}\n4.9,3.0,1.4,0.2,setosa\n"),
            "target column 'species' has a single class ('setosa') in 2 rows; a classifier needs at least two",
            id="single-class",
        ),
        pytest.param(
            hps({"target": "label"}),
            "target column 'label' is not in the header of {channel}/train.csv "
            "(columns: sepal_length, sepal_width, petal_length, petal_width, species)",
            id="missing-target",
        ),
        pytest.param(
            csv(f"{IRIS_HEADER}\n4.9,3.0,1.4,-inf,versicolor\n{ROW}\n"),
            "{channel}/train.csv line 2: column 'petal_width' value '-inf' is not finite (inf)",
            id="inf",
        ),
        pytest.param(
            csv(f"{IRIS_HEADER}\n{ROW}\n\n4.9,3.0,1.4,versicolor\n"),
            "{channel}/train.csv line 4: expected 5 fields, found 4",
            id="ragged-row",
        ),
        pytest.param(
            csv(f"{IRIS_HEADER}\n{ROW}\n4.9,3.0,1.4,0.2,\n"),
            "{channel}/train.csv line 3: target column 'species' is empty",
            id="empty-label",
        ),
        pytest.param(not_utf8, "{channel}/train.csv line 2: not UTF-8 text", id="not-utf8"),
        pytest.param(
            two_headers,
            "{channel}/b.csv line 1: header a,b,c,d,species differs from {channel}/a.csv's " + IRIS_HEADER,
            id="headers-differ",
        ),
        pytest.param(
            csv("a,a,species\n1,2,x\n3,4,y\n"),
            "{channel}/train.csv line 1: duplicate column name(s) in header: a",
            id="duplicate-columns",
        ),
        pytest.param(
            csv(TWO_CLASSES + "6.3,3.3,6.0,2.5,virginica\n"),
            "class(es) 'setosa', 'versicolor', 'virginica' of target 'species' have a single row; "
            "a stratified holdout needs at least 2 rows per class",
            id="class-with-one-row",
        ),
        pytest.param(
            csv(TWO_CLASSES + ROW + "\n7.0,3.2,4.7,1.4,versicolor\n"),
            "4 rows split with test_size=0.2 gives 3 train / 1 test rows; "
            "both need at least one row per class (2 classes)",
            id="holdout-too-small",
        ),
        pytest.param(hps({"C": "abc"}), "hyperparameter C='abc' is not a number", id="hp-not-a-number"),
        pytest.param(
            hps({"max_iter": "2.5"}), "hyperparameter max_iter='2.5' is not a whole number", id="hp-int"
        ),
        pytest.param(
            hps({"test_size": "1.5"}), "hyperparameter test_size=1.5 must be between 0 and 1", id="hp-range"
        ),
        pytest.param(
            hps({"learning_rate": "0.1"}),
            "unknown hyperparameter(s) learning_rate; known: C, max_iter, min_accuracy, random_state, target, test_size",
            id="hp-unknown",
        ),
    ]


@pytest.mark.parametrize(("setup", "expected"), _bad_cases())
def test_bad_input_fails_with_one_clear_line(job: Job, setup: Any, expected: str) -> None:
    setup(job)
    proc = job.run()
    reason = expected.format(channel=job.channel)
    assert proc.returncode == train_mod.EXIT_BAD_INPUT, proc.stderr
    assert job.failure.read_text() == reason + "\n"
    assert proc.stderr == f"train: failed: {reason}\n"  # the reason, and no traceback
    assert not job.model.exists() or not any(job.model.iterdir())


def test_invalid_hyperparameters_json_fails_clearly(job: Job) -> None:
    job.write_csv(TWO_CLASSES)
    job.config.mkdir(parents=True)
    (job.config / "hyperparameters.json").write_text('{"C": ')
    proc = job.run()
    assert proc.returncode == train_mod.EXIT_BAD_INPUT
    reason = job.failure.read_text()
    assert reason.startswith(f"{job.config}/hyperparameters.json is not valid JSON: Expecting value")
    assert reason.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_unknown_argument_goes_to_the_failure_file(job: Job) -> None:
    proc = job.run(sys.executable, "-m", "workloads.train.train", "--epochs", "3")
    assert proc.returncode == train_mod.EXIT_BAD_INPUT
    assert job.failure.read_text() == "bad arguments: unrecognized arguments: --epochs 3\n"
    assert "Traceback" not in proc.stderr


# --- the quality gate -------------------------------------------------------------------------------


def test_quality_gate_fails_the_job_but_keeps_the_evaluation(job: Job) -> None:
    shutil.copy(IRIS, job.channel / "iris.csv")
    # SM_HPS (JSON object, typed values) on top of hyperparameters.json, as script-mode jobs pass it.
    job.write_hyperparameters({"min_accuracy": "0.5"})
    proc = job.run(SM_HPS=json.dumps({"min_accuracy": 0.99}))
    assert proc.returncode == train_mod.EXIT_GATE
    report = json.loads((job.output_data / "evaluation.json").read_text())
    gate = report["quality_gate"]
    accuracy = report["multiclass_classification_metrics"]["accuracy"]["value"]
    assert gate == {
        "metric": "accuracy",
        "direction": "min",
        "threshold": 0.9,
        "min_accuracy": 0.99,
        "value": accuracy,
        "passed": False,
        "reason": "min_accuracy",
    }
    assert accuracy < 0.99
    assert job.failure.read_text() == (
        f"quality gate failed: holdout accuracy {accuracy:.4f} < min_accuracy 0.9900 "
        f"(30 test rows; see {job.output_data}/evaluation.json)\n"
    )
    assert "Traceback" not in proc.stderr
    # A model that missed the gate is not written, so nothing downstream can register it.
    assert not job.model.exists() or not any(job.model.iterdir())
    assert float(ACCURACY_RE.findall(proc.stdout)[0]) == round(accuracy, 4)


# --- in-process: the importable run(), hyperparameter parsing, the data reader --------------------


def test_run_with_target_chosen_by_name(tmp_path: Path) -> None:
    # species moved to the second column; the last column is now a feature.
    lines = [line.split(",") for line in iris_lines()]
    reordered = "\n".join(",".join([r[0], r[4], r[1], r[2], r[3]]) for r in lines) + "\n"
    (tmp_path / "reordered.csv").write_text(reordered)
    logged: list[str] = []
    metrics = train_mod.run(
        tmp_path / "reordered.csv",
        tmp_path / "model",
        tmp_path / "out",
        {"target": "species"},
        log=logged.append,
    )
    estimator, metadata = model_io.load_model(tmp_path / "model")
    assert metadata.target == "species"
    assert metadata.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert metadata.class_labels == CLASSES
    assert list(estimator.predict([[5.1, 3.5, 1.4, 0.2]])) == ["setosa"]
    assert metrics == metadata.metrics and metrics["accuracy"] >= 0.9
    assert f"metric accuracy={metrics['accuracy']:.4f}" in logged


def test_run_reads_every_csv_of_a_directory_channel(tmp_path: Path) -> None:
    lines = iris_lines()
    channel = tmp_path / "channel"
    (channel / "part").mkdir(parents=True)
    (channel / "a.csv").write_text("\n".join([lines[0], *lines[1:76]]) + "\n")
    (channel / "part" / "b.csv").write_text("\n".join([lines[0], *lines[76:]]) + "\n")
    (channel / ".hidden.csv").write_text("not,a,csv\n")
    (channel / "README.txt").write_text("ignored")
    ds = load_dataset(channel)
    assert [p.relative_to(channel).as_posix() for p in ds.files] == ["a.csv", "part/b.csv"]
    assert ds.features.shape == (150, 4)
    assert ds.class_counts == {"setosa": 50, "versicolor": 50, "virginica": 50}
    assert ds.features[0].tolist() == [5.1, 3.5, 1.4, 0.2]


def test_numeric_labels_become_string_classes(tmp_path: Path) -> None:
    rows = ["x1,x2,label"] + [f"{i},{i % 3},{i % 2}" for i in range(40)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    train_mod.run(tmp_path / "d.csv", tmp_path / "model", tmp_path / "out", {}, log=lambda _: None)
    _, metadata = model_io.load_model(tmp_path / "model")
    assert metadata.class_labels == ["0", "1"]
    assert metadata.target == "label"


def test_utf8_bom_does_not_leak_into_the_first_column(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + IRIS.read_bytes())
    assert load_dataset(tmp_path / "bom.csv").feature_names == FEATURES


def test_hyperparameters_parse_strings_typed_values_and_sdk_quoting() -> None:
    hps = train_mod.Hyperparameters.parse(
        {
            "C": "0.25",
            "max_iter": 300,
            "random_state": "3.0",
            "target": '"species"',  # the SageMaker Python SDK JSON-encodes strings
            "sagemaker_program": "ignored",
            "_tuning_objective_metric": "accuracy",
        }
    )
    assert hps == train_mod.Hyperparameters(C=0.25, max_iter=300, random_state=3, target="species")
    assert train_mod.Hyperparameters.parse({}) == train_mod.Hyperparameters()  # None: mlops.toml decides
    with pytest.raises(train_mod.HyperparameterError, match=r"^hyperparameter C=True is not a number$"):
        train_mod.Hyperparameters.parse({"C": True})
    with pytest.raises(
        train_mod.HyperparameterError, match=r"^hyperparameter C='nan' is not a finite number$"
    ):
        train_mod.Hyperparameters.parse({"C": "nan"})
    with pytest.raises(train_mod.HyperparameterError, match=r"^hyperparameter C=0.0 must be > 0$"):
        train_mod.Hyperparameters.parse({"C": "0"})
    with pytest.raises(train_mod.HyperparameterError, match=r"^hyperparameter target is empty"):
        train_mod.Hyperparameters.parse({"target": " "})


def test_sm_hps_overrides_hyperparameters_json(tmp_path: Path) -> None:
    (tmp_path / "hyperparameters.json").write_text(json.dumps({"C": "0.5", "max_iter": "50"}))
    assert train_mod.read_hyperparameters(tmp_path, '{"C": 2}') == {"C": 2, "max_iter": "50"}
    assert train_mod.read_hyperparameters(tmp_path / "absent", None) == {}
    with pytest.raises(train_mod.HyperparameterError, match=r"^SM_HPS must hold a JSON object, not list$"):
        train_mod.read_hyperparameters(tmp_path, "[1]")


def test_bad_data_raises_one_exception_type_from_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist$"):
        load_dataset(tmp_path / "nope")
    # run() callers (the local platform) handle one type for every input problem.
    with pytest.raises(train_mod.TrainingError, match=rf"^training channel {tmp_path}/nope does not exist$"):
        train_mod.run(tmp_path / "nope", tmp_path / "model", tmp_path / "out", {})


def test_convergence_warning_is_logged_as_one_line(tmp_path: Path) -> None:
    logged: list[str] = []
    train_mod.run(IRIS, tmp_path / "model", tmp_path / "out", {"max_iter": "1"}, log=logged.append)
    warnings_logged = [line for line in logged if line.startswith("warning: ")]
    assert len(warnings_logged) == 1
    assert "failed to converge" in warnings_logged[0] and "\n" not in warnings_logged[0]


def test_internal_error_keeps_traceback_and_writes_failure(
    job: Job, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("disk\nfull")

    monkeypatch.setattr(train_mod, "run", broken)
    code = train_mod.main(["--output-dir", str(job.output), "--input-config-dir", str(job.config)])
    assert code == train_mod.EXIT_INTERNAL
    assert job.failure.read_text() == "internal error: RuntimeError: disk full\n"
    assert "Traceback" in capsys.readouterr().err


def test_sigterm_stops_training_with_a_recorded_reason(job: Job, monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped(*args: Any, **kwargs: Any) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGTERM)  # what StopTrainingJob sends
        raise AssertionError("SIGTERM did not interrupt training")

    monkeypatch.setattr(train_mod, "run", stopped)
    before = signal.getsignal(signal.SIGTERM)
    code = train_mod.main(["--output-dir", str(job.output), "--input-config-dir", str(job.config)])
    assert code == 128 + signal.SIGTERM
    assert job.failure.read_text() == "training stopped: received SIGTERM\n"
    assert signal.getsignal(signal.SIGTERM) == before  # main() puts the old handler back


def test_failure_reason_is_one_line_and_fits_sagemaker_limit(job: Job) -> None:
    long_name = "x" * 2000
    job.write_csv(TWO_CLASSES)
    job.write_hyperparameters({"target": long_name})
    proc = job.run()
    reason = job.failure.read_text()
    assert proc.returncode == train_mod.EXIT_BAD_INPUT
    assert reason.endswith("...\n") and reason.count("\n") == 1
    assert len(reason) - 1 == train_mod.MAX_FAILURE_CHARS
