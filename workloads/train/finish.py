"""From a fitted estimator to a registered-ready model directory, the same for the platform's own
training (train.py) and for a user's `[training] entry` script (save_model):

    holdout metrics -> evaluation.json + metric lines -> quality gate -> ONNX export -> write the
    directory -> load it as the server does and compare with the estimator (artifact_check) -> done

Anything that fails leaves the model directory empty, so nothing downstream can register it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from workloads import model_io
from workloads.serve.predictor import AffinePredictor, fast_predictor
from workloads.train import metrics as metrics_mod
from workloads.train.artifact_check import check_affine, check_artifact, scores_alike_together
from workloads.train.config import CLASSIFICATION, ProjectConfig
from workloads.train.errors import ArtifactError, QualityGateError, TrainingError
from workloads.train.export import ExportError, row_by_row, to_onnx

EVALUATION_FILE = "evaluation.json"
# The signature beside evaluation.json in SM_OUTPUT_DATA_DIR, so the register step (steps.py) records it
# in the model package without unpacking model.tar.gz.
SIGNATURE_FILE = "signature.json"
Log = Callable[[str], None]


@dataclass
class Job:
    """Where one training run writes and what it was asked for; set by train.py for the whole run."""

    model_dir: Path
    output_data_dir: Path
    config: ProjectConfig
    min_accuracy: float = 0.0  # the platform's floor (hyperparameter), on top of the [gate]
    hyperparameters: dict[str, str] = field(default_factory=dict)
    log: Log = print
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class Holdout:
    """The rows the model is judged and checked on, in the two forms it takes."""

    rows: Any  # as a server receives them: float matrix, or object rows (str for categorical)
    model_input: Any  # what estimator.predict takes (the same matrix, or a DataFrame)
    truth: np.ndarray  # class names (str) or target values (float)
    feature_names: list[str]
    feature_types: list[str]


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _gate(job: Job, m: dict[str, Any], evaluation_path: Path) -> dict[str, Any]:
    gate = job.config.gate
    value = float(m[gate.metric])
    config_passed = gate.passed(value)
    floor_passed = job.config.task != CLASSIFICATION or m["accuracy"] >= job.min_accuracy
    report: dict[str, Any] = {
        "metric": gate.metric,
        "direction": gate.direction,
        "threshold": gate.threshold,
        "value": value,
        "passed": config_passed and floor_passed,
    }
    if job.config.task == CLASSIFICATION:
        report["min_accuracy"] = job.min_accuracy
    where = f"{m['n_test']} test rows; see {evaluation_path}"
    if not floor_passed:
        report["reason"] = "min_accuracy"
        return {
            **report,
            "_message": f"quality gate failed: holdout accuracy {m['accuracy']:.4f} < min_accuracy "
            f"{job.min_accuracy:.4f} ({where})",
        }
    if not config_passed:
        sign = "<" if gate.direction == "min" else ">"
        return {
            **report,
            "_message": f"quality gate failed: holdout {gate.metric} {value:.4f} {sign} {gate.threshold:.4f} "
            f"([gate] {gate.direction} in {job.config.source}; {where})",
        }
    return report


def finish(
    job: Job,
    estimator: Any,
    holdout: Holdout,
    *,
    n_train: int,
    classes: list[str] | None = None,
    label_index: bool = False,
    skops: bool = False,
    algorithm: str = "",
) -> dict[str, Any]:
    """Judge, export, write and check; returns the metrics. `classes`: class names in the estimator's
    column order; `label_index`: the estimator predicts class indices (0..k-1), not names."""
    config, log = job.config, job.log
    classification = config.task == CLASSIFICATION
    if classification:
        if classes is None:
            classes = [str(c) for c in estimator.classes_]
        raw = estimator.predict(holdout.model_input)
        predicted = [classes[int(i)] for i in raw] if label_index else [str(v) for v in raw]
        y_pred = np.asarray(predicted, dtype=np.str_)
        m = metrics_mod.classification_metrics(holdout.truth, y_pred, classes, n_train=n_train)
        report = metrics_mod.model_quality_report(holdout.truth, y_pred, classes, m)
        expected: np.ndarray = np.asarray(estimator.predict_proba(holdout.model_input), dtype=np.float64)
        expected_labels: list[str] | None = predicted
    else:
        values = np.asarray(estimator.predict(holdout.model_input), dtype=np.float64).reshape(-1)
        m = metrics_mod.regression_metrics(holdout.truth, values, n_train=n_train)
        report = metrics_mod.regression_report(holdout.truth, m)
        expected, expected_labels = values, None

    evaluation_path = Path(job.output_data_dir) / EVALUATION_FILE
    gate = _gate(job, m, evaluation_path)
    message = gate.pop("_message", None)
    report["quality_gate"] = gate
    _write_json(evaluation_path, report)
    for name in ("accuracy", "f1_macro") if classification else ("r2", "rmse"):
        log(f"metric {name}={m[name]:.4f}")
    if message:
        raise QualityGateError(message, m)

    try:
        onnx = to_onnx(estimator, holdout.feature_names, holdout.feature_types)
    except ExportError as exc:
        raise ArtifactError(f"model cannot be served: {exc}") from None
    output: dict[str, Any]
    if classification:
        assert classes is not None
        output = {"kind": "classes", "classes": classes, "onnx_label": "index" if label_index else "value"}
    else:
        output = {"kind": "value", "name": holdout_target(job), "type": "number"}
    metadata = model_io.ModelMetadata(
        feature_names=holdout.feature_names,
        class_labels=classes or [],
        target=holdout_target(job),
        algorithm=algorithm or _describe(estimator),
        hyperparameters=job.hyperparameters,
        metrics=m,
        library_versions=model_io.library_versions(),
        task=config.task,
        features=[
            {"name": n, "type": t} for n, t in zip(holdout.feature_names, holdout.feature_types, strict=True)
        ],
        output=output,
        group=config.group,
        onnx_file=model_io.ONNX_FILE,
        skops_file="",
        imputes_missing=scores_missing_numbers(onnx, holdout),
    )
    model_dir = Path(job.model_dir)
    try:
        model_io.save_model(model_dir, estimator, metadata, onnx=onnx)
        check = check_artifact(model_dir, holdout.rows, expected_labels, expected)
        # The graph's operators say rows cannot affect each other; the holdout shows it for this graph.
        check["batch_invariant"] = row_by_row(onnx) and scores_alike_together(model_dir, holdout.rows)
        affine = _folded(estimator, holdout) if classification else None
        if affine is not None:
            check["affine_max_abs_difference"] = check_affine(affine, holdout.rows, expected)
        log(
            f"serving check: onnxruntime answers on {check['rows']} holdout rows match the estimator "
            f"(max difference {check['max_abs_difference']:.2g})"
        )
        with_check = replace(metadata, serving_check=check, affine=affine.to_dict() if affine else {})
        if skops and _skops_serves(model_dir, estimator, with_check, log):
            with_check = replace(with_check, skops_file=model_io.MODEL_FILE)
        model_io.save_model(model_dir, estimator, with_check, onnx=onnx)
        # The estimator and its hyperparameters ride along, for the registry to show (`mlops models`).
        _write_json(
            Path(job.output_data_dir) / SIGNATURE_FILE,
            {
                **with_check.signature,
                "group": config.group,
                "estimator": with_check.algorithm,
                "hyperparameters": with_check.hyperparameters,
            },
        )
    except BaseException:
        _empty(model_dir)
        raise
    log(
        f"model written to {model_dir} ({config.task}; {', '.join(classes) if classes else holdout_target(job)})"
    )
    job.result = m
    return m


def scores_missing_numbers(onnx: bytes, holdout: Holdout) -> bool:
    """Whether the served model scores a missing number as training did: its graph imputes (an Imputer
    node, what skl2onnx makes of SimpleImputer), or the holdout has rows missing a number, so the
    artifact check compares exactly those answers with the estimator's."""
    import onnx as onnx_lib

    if any(node.op_type == "Imputer" for node in onnx_lib.load_model_from_string(onnx).graph.node):
        return True
    numeric = [j for j, kind in enumerate(holdout.feature_types) if kind == model_io.NUMBER]
    return any(_is_missing(row[j]) for row in holdout.rows for j in numeric)


def _folded(estimator: Any, holdout: Holdout) -> AffinePredictor | None:
    """The affine map of a [StandardScaler ->] LogisticRegression on numbers only, else None."""
    if any(kind != model_io.NUMBER for kind in holdout.feature_types):
        return None
    return fast_predictor(estimator, len(holdout.feature_names))


def holdout_target(job: Job) -> str:
    return job.hyperparameters.get("target") or job.config.target or ""


def _describe(estimator: Any) -> str:
    steps = getattr(estimator, "steps", None)
    if steps:
        return f"sklearn.pipeline.Pipeline({', '.join(type(s).__name__ for _, s in steps)})"
    return f"{type(estimator).__module__}.{type(estimator).__name__}"


def _skops_serves(model_dir: Path, estimator: Any, metadata: model_io.ModelMetadata, log: Log) -> bool:
    """Whether today's skops server could load this model (transitional, until serving runs ONNX)."""
    trial = model_dir / ".skops-check"
    try:
        model_io.save_model(trial, estimator, replace(metadata, onnx_file="", skops_file=model_io.MODEL_FILE))
        model_io.load_model(trial)
    except Exception as exc:
        log(f"model.skops not written (serve model.onnx): {' '.join(str(exc).split())[:200]}")
        return False
    finally:
        shutil.rmtree(trial, ignore_errors=True)
    return True


def _empty(model_dir: Path) -> None:
    if model_dir.is_dir():
        for child in model_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


# --- the documented hand-off for a user's own training script ----------------------------------------

_current: Job | None = None


def set_current_job(job: Job | None) -> None:
    global _current
    _current = job


def save_model(
    estimator: Any,
    x_holdout: Any,
    y_holdout: Any,
    *,
    feature_names: Sequence[str] | None = None,
    n_train: int = 0,
) -> dict[str, Any]:
    """Hand the fitted estimator to the platform from a `[training] entry` script.

    estimator: a fitted scikit-learn estimator or Pipeline (xgboost/lightgbm estimators inside one too)
      that takes rows in feature order: a float matrix, or a pandas DataFrame whose non-numeric
      columns are categorical. x_holdout, y_holdout: rows it was not fit on, in that form, with their
      true labels (classification) or values (regression). feature_names: required unless x_holdout
      is a DataFrame (its columns). n_train: how many rows it was fit on, for the report.

    Then the same path as the platform's own training runs: metrics, the mlops.toml gate, the ONNX
    export and its check against the estimator, the signature in metadata.json. Returns the metrics;
    raises TrainingError (exit 2), QualityGateError (3) or ArtifactError (4) like train.py does.
    """
    job = _current
    if job is None:
        raise TrainingError(
            "save_model() must be called from the script mlops.toml names in [training] entry, run by `train`"
        )
    columns = getattr(x_holdout, "columns", None)
    if columns is not None:
        names = [str(c) for c in columns]
        types = ["number" if x_holdout[c].dtype.kind in "fiub" else "string" for c in columns]
        rows: Any = [
            ["" if (t == "string" and _is_missing(v)) else v for v, t in zip(row, types, strict=True)]
            for row in x_holdout.itertuples(index=False)
        ]
        if all(t == "number" for t in types):
            rows = x_holdout.to_numpy(dtype=np.float64)
    else:
        rows = np.asarray(x_holdout, dtype=np.float64)
        if feature_names is None:
            raise TrainingError("save_model(): pass feature_names= (x_holdout is not a DataFrame)")
        names = [str(n) for n in feature_names]
        if rows.ndim != 2 or rows.shape[1] != len(names):
            raise TrainingError(
                f"save_model(): x_holdout has shape {rows.shape}; {len(names)} feature_names given"
            )
        types = ["number"] * len(names)
    if feature_names is not None and columns is not None and list(feature_names) != names:
        raise TrainingError(
            f"save_model(): feature_names {list(feature_names)} differ from the DataFrame's {names}"
        )
    classification = job.config.task == CLASSIFICATION
    truth = np.asarray(y_holdout)
    truth = truth.astype(np.str_) if classification else truth.astype(np.float64)
    holdout = Holdout(rows=rows, model_input=x_holdout, truth=truth, feature_names=names, feature_types=types)
    return finish(job, estimator, holdout, n_train=n_train or 0)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
