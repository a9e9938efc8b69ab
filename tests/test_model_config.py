"""mlops.toml: the schema, its strictness (every error names the key), the shipped default, the README
that documents every key, the training job that fails on a bad file, and a user's own [training] entry."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from workloads import model_io
from workloads.onnx_model import load_onnx_model
from workloads.train import train as train_mod
from workloads.train.config import (
    _SCHEMA,
    ConfigError,
    GateConfig,
    ProjectConfig,
    find_config,
    load_config,
    parse_config,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
IRIS = REPO_ROOT / "data" / "iris.csv"


def test_the_shipped_mlops_toml_is_todays_iris_behaviour() -> None:
    config = load_config(REPO_ROOT / "mlops.toml")
    assert config == ProjectConfig(
        data_path="data/iris.csv",
        target="species",
        task="classification",
        estimator="logistic_regression",
        group="iris",
        hyperparameters={"C": 1.0, "max_iter": 1000},
        gate=GateConfig("accuracy", 0.9, "min"),
        test_size=0.2,
        random_state=42,
        entry=None,
        source=str(REPO_ROOT / "mlops.toml"),
    )


def test_an_empty_file_and_a_missing_file_are_the_iris_defaults(tmp_path: Path) -> None:
    assert parse_config({}) == ProjectConfig(source="mlops.toml")
    assert find_config(tmp_path) == ProjectConfig()
    regression = parse_config({"model": {"task": "regression"}})
    assert (regression.estimator, regression.gate) == ("linear_regression", GateConfig("r2", None, "min"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"modle": {}}, "mlops.toml: unknown table(s) [modle]; known: [data], [model], [gate], [training]"),
        (
            {"data": {"path": "d.csv", "taget": "y"}},
            "mlops.toml: unknown key(s) [data] taget; [data] takes path, target",
        ),
        ({"data": {"path": ""}}, "mlops.toml: [data] path must be a non-empty string, not ''"),
        (
            {"data": {"path": "../x.csv"}},
            "mlops.toml: [data] path must be a path inside the repository, not '../x.csv'",
        ),
        ({"data": {"target": 3}}, "mlops.toml: [data] target must be a non-empty string, not 3"),
        (
            {"model": {"task": "ranking"}},
            "mlops.toml: [model] task must be one of classification, regression, not 'ranking'",
        ),
        (
            {"model": {"task": "regression", "estimator": "logistic_regression"}},
            "mlops.toml: [model] estimator for regression must be one of linear_regression, random_forest, "
            "hist_gradient_boosting, xgboost, lightgbm, not 'logistic_regression'",
        ),
        (
            {"model": {"group": "my group"}},
            "mlops.toml: [model] group must be 1-63 letters, digits and hyphens, not 'my group'",
        ),
        (
            {"model": {"hyperparameters": {"C": [1]}}},
            "mlops.toml: [model.hyperparameters] C must be a number, string or boolean, not [1]",
        ),
        (
            {"gate": {"metric": "r2"}},
            "mlops.toml: [gate] metric for classification must be one of accuracy, f1_macro, not 'r2'",
        ),
        ({"gate": {"max": 0.5}}, "mlops.toml: [gate] max does not apply to accuracy; use [gate] min"),
        ({"gate": {"min": 1.5}}, "mlops.toml: [gate] min for accuracy must be in [0, 1], not 1.5"),
        ({"gate": {"min": "high"}}, "mlops.toml: [gate] min must be a finite number, not 'high'"),
        (
            {"model": {"task": "regression"}, "gate": {"metric": "rmse", "min": 3}},
            "mlops.toml: [gate] min does not apply to rmse; use [gate] max",
        ),
        ({"training": {"test_size": 1}}, "mlops.toml: [training] test_size must be between 0 and 1, not 1"),
        (
            {"training": {"random_state": 1.5}},
            "mlops.toml: [training] random_state must be a whole number in [0, 2**32), not 1.5",
        ),
        (
            {"training": {"entry": "/abs/train.py"}},
            "mlops.toml: [training] entry must be a path inside the repository, not '/abs/train.py'",
        ),
        (
            {"training": {"epochs": 3}},
            "mlops.toml: unknown key(s) [training] epochs; [training] takes test_size, random_state, entry",
        ),
    ],
)
def test_a_bad_key_or_value_is_named(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("estimator", "params", "refusal"),
    [
        ("xgboost", {"max_depth": -3}, "value -3 for Parameter max_depth should be greater equal to 0"),
        ("lightgbm", {"num_leaves": 0}, "Check failed: (num_leaves) > (1)"),
    ],
)
def test_a_value_a_boosting_library_refuses_is_a_config_error(
    tmp_path: Path, estimator: str, params: dict[str, Any], refusal: str
) -> None:
    config = parse_config({"model": {"estimator": estimator, "hyperparameters": params}})
    with pytest.raises(ConfigError) as caught:
        train_mod.run(IRIS, tmp_path / "m", tmp_path / "o", {}, config=config, log=lambda _: None)
    message = str(caught.value)
    assert message.startswith(f"mlops.toml: [model.hyperparameters] refused by {estimator}: ")
    assert refusal in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "mlops.toml").write_text("[model\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/mlops.toml is not valid TOML: "):
        load_config(tmp_path / "mlops.toml")


def test_an_unknown_hyperparameter_is_named_with_what_the_estimator_takes(tmp_path: Path) -> None:
    config = parse_config({"model": {"estimator": "random_forest", "hyperparameters": {"n_estimator": 5}}})
    with pytest.raises(
        ConfigError,
        match=r"^mlops.toml: unknown key\(s\) \[model.hyperparameters\] n_estimator for random_forest \(RandomForestClassifier\); it takes .*n_estimators",
    ):
        train_mod.run(IRIS, tmp_path / "m", tmp_path / "o", {}, config=config, log=lambda _: None)


def test_a_bad_hyperparameter_value_is_named(tmp_path: Path) -> None:
    config = parse_config({"model": {"estimator": "random_forest", "hyperparameters": {"n_estimators": 0}}})
    with pytest.raises(
        ConfigError,
        match=r"^mlops.toml: \[model.hyperparameters\]: The 'n_estimators' parameter of RandomForestClassifier must be",
    ):
        train_mod.run(IRIS, tmp_path / "m", tmp_path / "o", {}, config=config, log=lambda _: None)


def test_the_readme_documents_every_key() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## What to train: mlops.toml", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\[[a-z.]+\] [a-z_]+|\[model\.hyperparameters\])`", section, re.M))
    keys = {f"[{table}] {key}" for table, keys in _SCHEMA.items() for key in keys if key != "hyperparameters"}
    assert documented == keys | {"[model.hyperparameters]"}


# --- the training job: a bad file fails it (exit 2, the failure file), naming the key -------------------


def _job_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(
        SM_CHANNEL_TRAIN=str(IRIS),
        SM_MODEL_DIR=str(root / "model"),
        SM_OUTPUT_DATA_DIR=str(root / "output" / "data"),
        SM_OUTPUT_DIR=str(root / "output"),
        SM_INPUT_CONFIG_DIR=str(root / "config"),
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


def test_a_bad_mlops_toml_fails_the_job_with_exit_2_and_the_failure_file(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "mlops.toml").write_text('[model]\nestimator = "random_forest"\n[gate]\nmetric = "rmse"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "workloads.train.train", "--config", str(code / "mlops.toml")],
        env=_job_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    reason = (
        f"{code}/mlops.toml: [gate] metric for classification must be one of accuracy, f1_macro, not 'rmse'"
    )
    assert proc.returncode == train_mod.EXIT_BAD_INPUT, proc.stderr
    assert (tmp_path / "output" / "failure").read_text() == reason + "\n"
    assert proc.stderr == f"train: failed: {reason}\n"


# --- bring your own code: [training] entry --------------------------------------------------------------

USER_SCRIPT = '''
"""A user's own training: reads the channel itself, fits its own pipeline, hands it to the platform."""
import csv, glob, os
import numpy as np
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.model_selection import train_test_split
import workloads.train

# SageMaker's layout: the channel is a directory holding the uploaded CSV.
(data_file,) = glob.glob(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "*.csv"))
with open(data_file, newline="") as fh:
    rows = list(csv.reader(fh))
header, body = rows[0], rows[1:]
x = np.array([[float(v) for v in r[:4]] for r in body])
y = np.array([r[4] for r in body])
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
model = ExtraTreesClassifier(n_estimators=5, random_state=0).fit(x_train, y_train)
workloads.train.save_model(model, x_test, y_test, feature_names=header[:4], n_train=len(y_train))
'''


def test_a_users_entry_script_goes_through_the_same_export_check_gate_and_signature(tmp_path: Path) -> None:
    code = tmp_path / "code"
    (code / "training").mkdir(parents=True)
    (code / "training" / "my_train.py").write_text(USER_SCRIPT)
    (code / "mlops.toml").write_text('[training]\nentry = "training/my_train.py"\n[gate]\nmin = 0.8\n')
    channel = tmp_path / "input" / "data" / "train"  # as SageMaker (and the local build) hands it over
    channel.mkdir(parents=True)
    shutil.copyfile(IRIS, channel / "iris.csv")
    proc = subprocess.run(
        [sys.executable, "-m", "workloads.train.train", "--config", str(code / "mlops.toml")],
        env={**_job_env(tmp_path), "SM_CHANNEL_TRAIN": str(channel)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"running [training] entry {code}/training/my_train.py" in proc.stdout
    metadata = model_io.load_metadata(tmp_path / "model")
    assert metadata.algorithm == "sklearn.ensemble._forest.ExtraTreesClassifier"
    assert [f["name"] for f in metadata.features] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert metadata.class_labels == ["setosa", "versicolor", "virginica"]
    assert metadata.serving_check["passed"] is True and metadata.serving_check["rows"] == 38
    assert metadata.metrics["n_train"] == 112 and metadata.metrics["n_test"] == 38
    (answer,) = load_onnx_model(tmp_path / "model").predict([[5.1, 3.5, 1.4, 0.2]])
    assert answer["label"] == "setosa"
    gate = json.loads((tmp_path / "output" / "data" / "evaluation.json").read_text())["quality_gate"]
    assert (gate["metric"], gate["threshold"], gate["passed"]) == ("accuracy", 0.8, True)


def test_an_entry_that_never_saves_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "noop.py").write_text("print('trained, forgot to save')\n")
    config = parse_config({"training": {"entry": "noop.py"}})
    with pytest.raises(
        train_mod.TrainingError,
        match=r"^\[training\] entry noop.py finished without calling workloads.train.save_model\(\)$",
    ):
        train_mod.run(
            IRIS, tmp_path / "m", tmp_path / "o", {}, config=config, code_root=tmp_path, log=lambda _: None
        )


def test_save_model_outside_a_job_says_how_to_use_it() -> None:
    import workloads.train

    with pytest.raises(train_mod.TrainingError, match=r"must be called from the script mlops.toml names"):
        workloads.train.save_model(object(), [[1.0]], ["a"], feature_names=["x"])
