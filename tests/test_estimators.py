"""Every estimator mlops.toml can name, for both tasks: it trains, exports to ONNX, the exported model
answers like the estimator within the stated tolerance, and the signature is in metadata.json.

Data is made from scikit-learn's bundled data sets (no download, tests/own_model_data.py): iris; breast
cancer with the label in the FIRST column and a categorical column with missing values; diabetes for
regression.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from own_model_data import write_cancer_csv, write_diabetes_csv

from workloads import model_io
from workloads.onnx_model import load_onnx_model
from workloads.train import train as train_mod
from workloads.train.artifact_check import PROBABILITY_ATOL, VALUE_RTOL
from workloads.train.config import ESTIMATORS, parse_config

REPO_ROOT = Path(__file__).resolve().parents[1]
IRIS = REPO_ROOT / "data" / "iris.csv"
# Small models: the point is the export and its check, not accuracy.
SMALL = {
    "logistic_regression": {"max_iter": 500},
    "linear_regression": {},
    "random_forest": {"n_estimators": 8, "max_depth": 6},
    "hist_gradient_boosting": {"max_iter": 10},
    "xgboost": {"n_estimators": 10, "max_depth": 3},
    "lightgbm": {"n_estimators": 10, "num_leaves": 8},
}


def _config(task: str, estimator: str, target: str | None = None, **gate: float | str) -> Any:
    raw: dict[str, Any] = {
        "model": {"task": task, "estimator": estimator, "hyperparameters": SMALL[estimator]},
    }
    if target:
        raw["data"] = {"target": target}
    if gate:
        raw["gate"] = gate
    return parse_config(raw, "mlops.toml")


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cancer_csv(tmp_path_factory.mktemp("cancer") / "cancer.csv")


@pytest.fixture(scope="module")
def diabetes_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_diabetes_csv(tmp_path_factory.mktemp("diabetes") / "diabetes.csv")


def _train(tmp_path: Path, channel: Path, config: Any) -> tuple[dict[str, Any], Path, list[str]]:
    logged: list[str] = []
    metrics = train_mod.run(
        channel, tmp_path / "model", tmp_path / "out", {}, config=config, log=logged.append
    )
    return metrics, tmp_path / "model", logged


LINEAR = ("logistic_regression", "linear_regression")


def _assert_served_like_the_check_says(
    model_dir: Path, estimator: str | None = None
) -> model_io.ModelMetadata:
    metadata = model_io.load_metadata(model_dir)
    assert metadata.onnx_file == "model.onnx" and (model_dir / "model.onnx").is_file()
    check = metadata.serving_check
    assert check["passed"] is True and check["runtime"] == "onnxruntime"
    assert check["rows"] == metadata.metrics["n_test"]
    if estimator is not None:
        # Tree graphs score rows one by one (the server may score concurrent requests together); a
        # linear model's matrix product does not (its sums round by batch size).
        assert check["batch_invariant"] is (estimator not in LINEAR), check
    return metadata


@pytest.mark.parametrize("estimator", ESTIMATORS["classification"])
def test_iris_classifier_exports_and_onnx_agrees(tmp_path: Path, estimator: str) -> None:
    metrics, model_dir, logged = _train(tmp_path, IRIS, _config("classification", estimator, "species"))
    metadata = _assert_served_like_the_check_says(model_dir, estimator)
    assert metadata.serving_check["max_abs_difference"] <= PROBABILITY_ATOL
    assert metadata.signature == {
        "task": "classification",
        "target": "species",
        "features": [
            {"name": n, "type": "number"}
            for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")
        ],
        "output": {
            "kind": "classes",
            "classes": ["setosa", "versicolor", "virginica"],
            "onnx_label": "index" if estimator in ("xgboost", "lightgbm") else "value",
        },
        # iris has no missing value and the default pipeline no imputer: a null number is refused.
        "imputes_missing": False,
    }
    assert metadata.group == "iris"
    # Beside evaluation.json, for the AWS register step to record in the model package.
    signature = json.loads((tmp_path / "out" / "signature.json").read_text())
    assert signature == {
        **metadata.signature,
        "group": "iris",
        "estimator": metadata.algorithm,
        "hyperparameters": metadata.hyperparameters,
    }
    assert metrics["accuracy"] >= 0.85
    model = load_onnx_model(model_dir)
    (setosa, virginica) = model.predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    assert setosa["label"] == "setosa" and virginica["label"] == "virginica"
    assert sum(setosa["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert list(setosa["probabilities"]) == ["setosa", "versicolor", "virginica"]
    assert any(line.startswith("serving check: onnxruntime answers on 30 holdout rows") for line in logged)


@pytest.mark.parametrize("estimator", ESTIMATORS["classification"])
def test_label_first_categorical_with_missing_values(
    tmp_path: Path, cancer_csv: Path, estimator: str
) -> None:
    _, model_dir, _ = _train(tmp_path, cancer_csv, _config("classification", estimator, "diagnosis"))
    metadata = _assert_served_like_the_check_says(model_dir, estimator)
    assert metadata.target == "diagnosis"
    assert [f["name"] for f in metadata.features][-1] == "size"
    assert [f["type"] for f in metadata.features] == ["number"] * 5 + ["string"]
    assert metadata.class_labels == ["benign", "malignant"]
    assert metadata.skops_file == ""  # categorical: only the ONNX graph can take these rows

    # Rows a client may send: a category training never saw, missing values (NaN, None).
    from workloads.train.dataset import load_dataset

    ds = load_dataset(cancer_csv, "diagnosis")
    rows = ds.features[:40]
    rows[0, 5] = "enormous"
    rows[1, 2] = np.nan
    model = load_onnx_model(model_dir)
    answers = model.predict(rows.tolist())
    assert len(answers) == 40 and {a["label"] for a in answers} <= {"benign", "malignant"}
    assert model.predict([[None, None, None, None, None, None]])[0]["label"] in ("benign", "malignant")
    assert all(abs(sum(a["probabilities"].values()) - 1) < 1e-5 for a in answers)


@pytest.mark.parametrize("estimator", ESTIMATORS["regression"])
def test_diabetes_regressor_exports_and_onnx_agrees(
    tmp_path: Path, diabetes_csv: Path, estimator: str
) -> None:
    metrics, model_dir, logged = _train(tmp_path, diabetes_csv, _config("regression", estimator, min=0.0))
    metadata = _assert_served_like_the_check_says(model_dir, estimator)
    assert metadata.task == "regression" and metadata.class_labels == []
    assert metadata.output == {"kind": "value", "name": "progression", "type": "number"}
    assert [f["name"] for f in metadata.features] == [
        "age",
        "sex",
        "bmi",
        "bp",
        "s1",
        "s2",
        "s3",
        "s4",
        "s5",
        "s6",
    ]
    assert metadata.serving_check["tolerance"] == {"value_rtol": VALUE_RTOL}
    assert set(metrics) >= {"r2", "rmse", "mae", "n_train", "n_test"}
    assert metrics["n_test"] == 89  # ceil(0.2 * 442)
    assert any(line.startswith("metric r2=") for line in logged)
    assert any(line.startswith("metric rmse=") for line in logged)
    (answer,) = load_onnx_model(model_dir).predict(
        [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]]
    )
    assert set(answer) == {"value"} and 25 <= answer["value"] <= 346  # the target's range
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert report["regression_metrics"]["r2"]["value"] == metrics["r2"]
    assert report["quality_gate"]["metric"] == "r2" and report["quality_gate"]["passed"] is True


def test_the_platforms_accuracy_floor_is_logged_as_not_applying_to_a_regressor(
    tmp_path: Path, diabetes_csv: Path
) -> None:
    logged: list[str] = []
    config = _config("regression", "linear_regression", min=0.1)
    train_mod.run(
        diabetes_csv,
        tmp_path / "m",
        tmp_path / "o",
        {"min_accuracy": "0.9"},
        config=config,
        log=logged.append,
    )
    assert (
        "hyperparameter min_accuracy=0.9 applies to classification; this regression is judged by "
        "mlops.toml's [gate] (r2 >= 0.1)"
    ) in logged


def test_regression_gate_on_rmse_fails_with_the_key(tmp_path: Path, diabetes_csv: Path) -> None:
    with pytest.raises(train_mod.QualityGateError, match=r"\[gate\] max in mlops.toml") as caught:
        _train(tmp_path, diabetes_csv, _config("regression", "linear_regression", metric="rmse", max=1.0))
    assert str(caught.value).startswith("quality gate failed: holdout rmse ")
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").iterdir())


def test_macro_f1_gate(tmp_path: Path) -> None:
    config = _config("classification", "logistic_regression", "species", metric="f1_macro", min=0.99)
    with pytest.raises(
        train_mod.QualityGateError, match=r"^quality gate failed: holdout f1_macro 0\.\d{4} < 0\.9900"
    ):
        _train(tmp_path, IRIS, config)


def test_a_mismatching_export_fails_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a converter that loses information: the exported graph is another model's.
    from workloads.train import export as export_mod
    from workloads.train import finish as finish_mod

    real = export_mod.to_onnx

    def wrong_model(estimator: Any, names: list[str], types: list[str]) -> bytes:
        from sklearn.base import clone

        other = clone(estimator).set_params(classifier__C=1e-4)
        x = np.random.default_rng(0).normal(size=(60, 4))
        other.fit(x, np.array(["setosa", "versicolor", "virginica"] * 20))
        return real(other, names, types)

    monkeypatch.setattr(finish_mod, "to_onnx", wrong_model)
    with pytest.raises(train_mod.ArtifactError, match=r"^model cannot be served: ONNX "):
        _train(tmp_path, IRIS, _config("classification", "logistic_regression", "species"))
    assert not any((tmp_path / "model").iterdir())  # nothing left to register


def test_an_export_failure_fails_the_build_with_exit_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workloads.train import finish as finish_mod
    from workloads.train.export import ExportError

    def cannot(*args: Any) -> bytes:
        raise ExportError("cannot export Thing to ONNX: no converter")

    monkeypatch.setattr(finish_mod, "to_onnx", cannot)
    with pytest.raises(train_mod.ArtifactError) as caught:
        _train(tmp_path, IRIS, _config("classification", "random_forest", "species"))
    assert str(caught.value) == "model cannot be served: cannot export Thing to ONNX: no converter"
    assert caught.value.exit_code == train_mod.EXIT_ARTIFACT == 4


def test_an_old_iris_artifact_still_loads(tmp_path: Path) -> None:
    # metadata.json as the seed wrote it: no task, features, output, onnx_file.
    seed = {
        "feature_names": ["a", "b"],
        "class_labels": ["x", "y"],
        "target": "label",
        "algorithm": "sklearn.pipeline.Pipeline(StandardScaler, LogisticRegression)",
        "hyperparameters": {},
        "metrics": {},
        "library_versions": {},
        "format_version": 1,
    }
    (tmp_path / "metadata.json").write_text(json.dumps(seed))
    metadata = model_io.load_metadata(tmp_path)
    assert metadata.task == "classification" and metadata.skops_file == "model.skops"
    assert metadata.features == [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}]
    with pytest.raises(model_io.ModelFormatError, match="names no ONNX file"):
        load_onnx_model(tmp_path)


def test_the_onnx_model_is_a_serving_predictor(tmp_path: Path) -> None:
    # What serve.py calls today on make_predictor(...): probabilities in class_labels order.
    _, model_dir, _ = _train(tmp_path, IRIS, _config("classification", "random_forest", "species"))
    model = load_onnx_model(model_dir)
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    batch = model.predict_batch(x)
    assert batch.shape == (2, 3) and batch.dtype == np.float64
    assert batch[0].argmax() == 0 and batch[1].argmax() == 2
    assert model.predict_row(x[0].tolist()) == pytest.approx(batch[0].tolist())
    assert model.kind == "onnxruntime"
    # Exactly run()'s probabilities (what predict() answers): the protocol only leaves out the labels.
    _, probabilities = model.run(x)
    assert np.array_equal(batch, probabilities)
    assert model.predict_row(x[1].tolist()) == probabilities[1].tolist()


@pytest.mark.parametrize(
    ("toml", "data", "imputes"),
    [
        (
            '[data]\ntarget = "progression"\n[model]\ntask = "regression"\nestimator = "random_forest"\n'
            '[model.hyperparameters]\nn_estimators = 5\n[gate]\nmetric = "r2"\nmin = 0.0\n',
            "diabetes",
            False,
        ),
        (
            '[data]\ntarget = "diagnosis"\n[model]\ntask = "classification"\nestimator = "random_forest"\n'
            "[model.hyperparameters]\nn_estimators = 5\n",
            "cancer",
            True,
        ),
    ],
)
def test_the_build_writes_regression_and_categorical_models_for_the_server(
    tmp_path: Path, diabetes_csv: Path, cancer_csv: Path, toml: str, data: str, imputes: bool
) -> None:
    # Issue 10: the model server answers {"value": ...} and categories, so the build no longer refuses
    # these (it did, exit 4, while it could not); it still checks the export against the estimator.
    config = tmp_path / "mlops.toml"
    config.write_text(toml)
    channel = (diabetes_csv if data == "diabetes" else cancer_csv).parent
    model_dir, out = tmp_path / "model", tmp_path / "output"
    code = train_mod.main(
        [
            "--train", str(channel),
            "--model-dir", str(model_dir),
            "--output-data-dir", str(out / "data"),
            "--output-dir", str(out),
            "--input-config-dir", str(tmp_path / "config"),
            "--config", str(config),
        ]
    )  # fmt: skip
    assert code == 0
    assert not (out / "failure").exists()
    metadata = _assert_served_like_the_check_says(model_dir)
    # Missing numbers: the cancer data misses some (imputed); the diabetes data none (refused).
    assert metadata.imputes_missing is imputes
    from workloads.serve.serve import ModelServer

    server = ModelServer(str(model_dir), "1", 6291456)
    server.load()
    assert server.model is not None, server.not_ready


def test_the_model_server_serves_an_onnx_classifier_without_scikit_learn(tmp_path: Path) -> None:
    import subprocess
    import sys

    _train(tmp_path, IRIS, _config("classification", "random_forest", "species"))
    # Loaded as serve.py loads it, in a fresh interpreter: the answer, and that no scikit-learn (nor
    # skops) was imported to give it.
    code = (
        "import sys, json; from workloads.serve.serve import ModelServer; "
        f"s = ModelServer({str(tmp_path / 'model')!r}, '7', 6291456); s.load(); "
        "assert s.model is not None, s.not_ready; "
        "print(json.dumps([s.model.predictor.kind, sorted(m for m in ('sklearn', 'skops') if m in sys.modules)]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["onnxruntime", []]


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest"])
def test_scoring_rows_together_is_checked_bit_for_bit_against_scoring_them_alone(
    tmp_path: Path, estimator: str
) -> None:
    from workloads.train.artifact_check import scores_alike_together
    from workloads.train.export import row_by_row

    _, model_dir, _ = _train(tmp_path, IRIS, _config("classification", estimator, "species"))
    rng = np.random.default_rng(3)
    rows = rng.normal([5.8, 3.0, 3.7, 1.2], [1.5, 1.0, 2.5, 1.0], size=(400, 4)).tolist()
    graph = (model_dir / "model.onnx").read_bytes()
    if estimator == "random_forest":
        assert row_by_row(graph) and scores_alike_together(model_dir, rows)
    else:
        # The check does not rely on the operator list alone: the linear graph's batch answers differ.
        assert not row_by_row(graph) and not scores_alike_together(model_dir, rows)


def test_a_logistic_regression_on_numbers_is_served_by_its_folded_affine_map_checked_by_the_build(
    tmp_path: Path,
) -> None:
    from sklearn.datasets import load_iris

    from workloads.serve.serve import ModelServer

    _, model_dir, _ = _train(tmp_path, IRIS, _config("classification", "logistic_regression", "species"))
    metadata = model_io.load_metadata(model_dir)
    assert np.asarray(metadata.affine["weights"]).shape == (4, 3) and len(metadata.affine["bias"]) == 3
    assert metadata.affine["binary"] is False
    # The build compared it with the fitted estimator on the holdout: float64 against float64.
    assert metadata.serving_check["affine_max_abs_difference"] <= 1e-9
    server = ModelServer(str(model_dir), "7", 6291456)
    server.load()
    assert server.model is not None and server.model.predictor.kind == "affine fast path"
    assert not server.model.batches  # numpy's batch sums and Python's row sums may round apart
    # The same model as the exported graph, within the graph's float32 rounding.
    x = load_iris().data
    graph = load_onnx_model(model_dir).predict_batch(x)
    assert np.abs(server.model.predictor.predict_batch(x) - graph).max() < 1e-5
    alone = np.asarray([server.model.predictor.predict_row(row) for row in x.tolist()])
    assert np.abs(alone - graph).max() < 1e-5


@pytest.mark.parametrize("classes", [2, 3])
def test_the_folded_affine_map_round_trips_through_metadata_and_answers_like_predict_proba(
    classes: int,
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from workloads.serve.predictor import AffinePredictor, fast_predictor

    x, y = load_iris(return_X_y=True)
    keep = y < classes
    estimator = Pipeline([("scaler", StandardScaler()), ("lr", LogisticRegression(max_iter=500))])
    estimator.fit(x[keep], y[keep])
    folded = fast_predictor(estimator, 4)
    assert folded is not None
    loaded = AffinePredictor.from_dict(json.loads(json.dumps(folded.to_dict())), 4, classes)
    expected = estimator.predict_proba(x)
    assert np.abs(loaded.predict_batch(x) - expected).max() < 1e-12
    assert np.abs(np.asarray([loaded.predict_row(r) for r in x.tolist()]) - expected).max() < 1e-12


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"weights": [[1.0, 2.0]]},
            "metadata.json affine has weights (1, 2) and bias (3,); the signature needs (4, 3)",
        ),
        ({"binary": True}, "metadata.json affine binary is True for 3 classes"),
        ({"bias": [0.0, float("nan"), 0.0]}, "metadata.json affine holds a number that is not finite"),
        ({"weights": "many"}, "metadata.json affine is malformed: ValueError"),
    ],
)
def test_a_broken_affine_map_is_refused_at_load_with_what_is_wrong(
    change: dict[str, Any], message: str
) -> None:
    from workloads.serve.predictor import AffinePredictor

    good = {"weights": [[0.0] * 3] * 4, "bias": [0.0] * 3, "binary": False}
    with pytest.raises(ValueError, match=re.escape(message)):
        AffinePredictor.from_dict({**good, **change}, 4, 3)


def test_only_a_logistic_regression_on_numbers_is_folded(cancer_csv: Path, tmp_path: Path) -> None:
    _, model_dir, _ = _train(
        tmp_path, cancer_csv, _config("classification", "logistic_regression", "diagnosis")
    )
    metadata = model_io.load_metadata(model_dir)
    assert metadata.affine == {} and "affine_max_abs_difference" not in metadata.serving_check
    forest_dir = tmp_path / "forest"
    forest_dir.mkdir()
    _, model_dir, _ = _train(forest_dir, IRIS, _config("classification", "random_forest", "species"))
    assert model_io.load_metadata(model_dir).affine == {}
