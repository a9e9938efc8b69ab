"""The training workload: SageMaker's training-container contract around a scikit-learn classifier.

Runs as `train` inside the image (SageMaker calls `docker run <image> train`), as
`python workloads/train/train.py` and as `python -m workloads.train.train`. Inputs and outputs follow
SageMaker's layout; every location is an argparse default taken from the SM_* variable, so the same
entry runs unchanged on a laptop with the variables pointing at temp dirs:

    channel `train`   SM_CHANNEL_TRAIN     /opt/ml/input/data/train   a CSV file or a directory of them
    hyperparameters   SM_INPUT_CONFIG_DIR  /opt/ml/input/config       hyperparameters.json (string values)
                      SM_HPS                                          JSON object, overrides the file
    model             SM_MODEL_DIR         /opt/ml/model              workloads/model_io layout
    extra output      SM_OUTPUT_DATA_DIR   /opt/ml/output/data        evaluation.json (Model Registry style)
    failure reason    SM_OUTPUT_DIR        /opt/ml/output             `failure`, one line

Exit codes: 0 trained, 1 internal error (traceback on stderr), 2 bad input (data, hyperparameters,
arguments), 3 quality gate not met. Every non-zero exit writes the one-line reason to `failure`,
which SageMaker shows as the job's FailureReason.

Metric lines on stdout (`metric accuracy=0.9667`, `metric f1_macro=0.9665`) are what the training
job's MetricDefinitions parse (regex `metric accuracy=([0-9.]+)`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

if __package__ in (None, ""):  # run as a script: make `workloads` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from workloads import model_io
from workloads.train.dataset import DataError, Dataset, load_dataset

ALGORITHM = "sklearn.pipeline.Pipeline(StandardScaler, LogisticRegression)"
EVALUATION_FILE = "evaluation.json"
FAILURE_FILE = "failure"
HYPERPARAMETERS_FILE = "hyperparameters.json"
# SageMaker truncates FailureReason at 1024 characters; keep ours whole.
MAX_FAILURE_CHARS = 1000

EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_GATE = 3
EXIT_STOPPED = 128 + signal.SIGTERM

Log = Callable[[str], None]


class TrainingError(Exception):
    """A failure caused by the job's input; the message is the one line a person reads."""

    exit_code = EXIT_BAD_INPUT


class HyperparameterError(TrainingError):
    pass


class QualityGateError(TrainingError):
    """The model trained but missed `min_accuracy`; evaluation.json was still written."""

    exit_code = EXIT_GATE

    def __init__(self, message: str, metrics: dict[str, Any]) -> None:
        super().__init__(message)
        self.metrics = metrics


# --- hyperparameters ------------------------------------------------------------------------------


def _unquote(value: object) -> object:
    # The SageMaker Python SDK JSON-encodes string hyperparameters ('"species"'); accept both forms so
    # a job started with either the SDK or plain boto3 means the same thing.
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise HyperparameterError(f"hyperparameter {name}={value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise HyperparameterError(f"hyperparameter {name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise HyperparameterError(f"hyperparameter {name}={value!r} is not a finite number")
    return number


def _as_int(name: str, value: object) -> int:
    number = _as_float(name, value)
    if not number.is_integer():
        raise HyperparameterError(f"hyperparameter {name}={value!r} is not a whole number")
    return int(number)


@dataclass(frozen=True)
class Hyperparameters:
    C: float = 1.0  # inverse regularisation strength of the logistic regression
    max_iter: int = 1000
    random_state: int = 42  # seeds the holdout split and the solver, so a re-run gives the same model
    test_size: float = 0.2  # share of rows held out (stratified) for evaluation
    target: str | None = None  # label column; None = the last column
    min_accuracy: float = 0.0  # quality gate on holdout accuracy; 0 = off

    @classmethod
    def parse(cls, raw: Mapping[str, object]) -> Hyperparameters:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        unknown = []
        for key, given in raw.items():
            # SageMaker adds its own keys (sagemaker_*, _tuning_objective_metric) to tuning and SDK jobs.
            if key.startswith(("sagemaker_", "_")):
                continue
            if key not in known:
                unknown.append(key)
                continue
            value = _unquote(given)
            if key == "target":
                text = str(value).strip()
                if not text:
                    raise HyperparameterError("hyperparameter target is empty; name the label column")
                values[key] = text
            elif key in ("max_iter", "random_state"):
                values[key] = _as_int(key, value)
            else:
                values[key] = _as_float(key, value)
        if unknown:
            raise HyperparameterError(
                f"unknown hyperparameter(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        hps = cls(**values)
        hps.validate()
        return hps

    def validate(self) -> None:
        if not self.C > 0:
            raise HyperparameterError(f"hyperparameter C={self.C} must be > 0")
        if self.max_iter < 1:
            raise HyperparameterError(f"hyperparameter max_iter={self.max_iter} must be >= 1")
        if not 0 <= self.random_state < 2**32:
            raise HyperparameterError(
                f"hyperparameter random_state={self.random_state} must be in [0, 2**32)"
            )
        if not 0 < self.test_size < 1:
            raise HyperparameterError(f"hyperparameter test_size={self.test_size} must be between 0 and 1")
        if not 0 <= self.min_accuracy <= 1:
            raise HyperparameterError(f"hyperparameter min_accuracy={self.min_accuracy} must be in [0, 1]")

    def as_strings(self, target: str) -> dict[str, str]:
        """What the artifact records: every value as SageMaker would pass it, the target resolved."""
        return {k: str(v) for k, v in {**asdict(self), "target": target}.items()}


def read_hyperparameters(config_dir: str | os.PathLike[str], sm_hps: str | None) -> dict[str, object]:
    """hyperparameters.json (absent = none), then the SM_HPS JSON object on top."""
    merged: dict[str, object] = {}
    path = Path(config_dir) / HYPERPARAMETERS_FILE
    sources: list[tuple[str, str]] = []
    if path.is_file():
        sources.append((str(path), path.read_text(encoding="utf-8")))
    if sm_hps:
        sources.append(("SM_HPS", sm_hps))
    for where, text in sources:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HyperparameterError(f"{where} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise HyperparameterError(f"{where} must hold a JSON object, not {type(loaded).__name__}")
        merged.update(loaded)
    return merged


# --- training -------------------------------------------------------------------------------------


def check_split(ds: Dataset, test_size: float) -> None:
    """Fail with a readable reason where train_test_split would raise a cryptic one."""
    n = len(ds.labels)
    counts = ds.class_counts
    n_test = math.ceil(test_size * n)  # how train_test_split sizes a float test_size
    n_train = n - n_test
    lonely = [label for label, count in counts.items() if count < 2]
    if lonely:
        raise TrainingError(
            f"class(es) {', '.join(map(repr, lonely))} of target '{ds.target}' have a single row; "
            "a stratified holdout needs at least 2 rows per class"
        )
    if n_test < len(counts) or n_train < len(counts):
        raise TrainingError(
            f"{n} rows split with test_size={test_size} gives {n_train} train / {n_test} test rows; "
            f"both need at least one row per class ({len(counts)} classes)"
        )


def _build_pipeline(hps: Hyperparameters) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("classifier", LogisticRegression(C=hps.C, max_iter=hps.max_iter, random_state=hps.random_state)),
        ]
    )


def _evaluate(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], n_train: int) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(classes)
        },
        "n_train": n_train,
        "n_test": len(y_true),
    }


def model_quality_report(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], metrics: dict[str, Any]
) -> dict[str, Any]:
    """evaluation.json in the shape SageMaker Model Registry shows as ModelQuality statistics."""
    from sklearn.metrics import confusion_matrix, fbeta_score, precision_score, recall_score

    def stat(value: float) -> dict[str, Any]:
        # One holdout gives no spread; "NaN" is how SageMaker's own reports say "not measured".
        return {"value": float(value), "standard_deviation": "NaN"}

    def weighted_f(beta: float) -> float:
        return float(
            fbeta_score(y_true, y_pred, beta=beta, labels=classes, average="weighted", zero_division=0)
        )

    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    majority_share = max(int((y_true == c).sum()) for c in classes) / len(y_true)
    return {
        "version": 0.0,
        "dataset": {"item_count": len(y_true), "evaluation": "stratified holdout"},
        "multiclass_classification_metrics": {
            "accuracy": stat(metrics["accuracy"]),
            "f1_macro": stat(metrics["f1_macro"]),
            "weighted_precision": stat(
                precision_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0)
            ),
            "weighted_recall": stat(
                recall_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0)
            ),
            "weighted_f0_5": stat(weighted_f(0.5)),
            "weighted_f1": stat(weighted_f(1.0)),
            "weighted_f2": stat(weighted_f(2.0)),
            # What always answering the most frequent class would score: the floor a model must beat.
            "accuracy_best_constant_classifier": stat(majority_share),
            "confusion_matrix": {
                actual: {predicted: int(matrix[i][j]) for j, predicted in enumerate(classes)}
                for i, actual in enumerate(classes)
            },
        },
    }


def _fit(pipeline: Any, x: np.ndarray, y: np.ndarray, log: Log) -> None:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipeline.fit(x, y)
    for w in caught:
        # Not fatal (the gate judges the result), but a person tuning max_iter needs to see it.
        log("warning: " + " ".join(str(w.message).split()))


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def run(
    channel: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    output_data_dir: str | os.PathLike[str],
    hps: Mapping[str, object] | Hyperparameters | None = None,
    *,
    log: Log = print,
) -> dict[str, Any]:
    """Train on the channel, evaluate on a stratified holdout, write the model; return the metrics.

    Raises TrainingError (bad data or hyperparameters) and QualityGateError (model written nowhere,
    evaluation.json written) with a one-line message.
    """
    params = hps if isinstance(hps, Hyperparameters) else Hyperparameters.parse(hps or {})
    try:
        ds = load_dataset(channel, params.target)
    except DataError as exc:
        raise TrainingError(str(exc)) from None
    log(
        f"loaded {len(ds.labels)} rows from {len(ds.files)} file(s): features {', '.join(ds.feature_names)}; "
        f"target {ds.target} {ds.class_counts}"
    )
    check_split(ds, params.test_size)
    # Imported only now: scikit-learn takes seconds to import, and bad input should fail at once.
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        ds.features,
        ds.labels,
        test_size=params.test_size,
        stratify=ds.labels,
        random_state=params.random_state,
    )
    pipeline = _build_pipeline(params)
    # The shipped model is the one the holdout measured, so the registry's metrics describe exactly
    # the artifact a person approves (refitting on all rows would ship an unmeasured model).
    _fit(pipeline, x_train, y_train, log)
    classes = [str(c) for c in pipeline.classes_]
    y_pred = pipeline.predict(x_test)
    metrics = _evaluate(y_test, y_pred, classes, n_train=len(y_train))
    report = model_quality_report(y_test, y_pred, classes, metrics)

    passed = metrics["accuracy"] >= params.min_accuracy
    report["quality_gate"] = {
        "metric": "accuracy",
        "min_accuracy": params.min_accuracy,
        "value": metrics["accuracy"],
        "passed": passed,
    }
    evaluation_path = Path(output_data_dir) / EVALUATION_FILE
    _write_json(evaluation_path, report)
    log(f"metric accuracy={metrics['accuracy']:.4f}")
    log(f"metric f1_macro={metrics['f1_macro']:.4f}")
    if not passed:
        raise QualityGateError(
            f"quality gate failed: holdout accuracy {metrics['accuracy']:.4f} < min_accuracy "
            f"{params.min_accuracy:.4f} ({metrics['n_test']} test rows; see {evaluation_path})",
            metrics,
        )

    metadata = model_io.ModelMetadata(
        feature_names=ds.feature_names,
        class_labels=classes,
        target=ds.target,
        algorithm=ALGORITHM,
        hyperparameters=params.as_strings(ds.target),
        metrics=metrics,
        library_versions=model_io.library_versions(),
    )
    model_io.save_model(model_dir, pipeline, metadata)
    log(f"model written to {model_dir} (classes {', '.join(classes)})")
    return metrics


# --- command line ---------------------------------------------------------------------------------


class _UsageError(TrainingError):
    pass


class _Stopped(TrainingError):
    exit_code = EXIT_STOPPED


def _on_sigterm(signum: int, frame: object) -> None:
    # StopTrainingJob sends SIGTERM, then SIGKILL 120 s later. As PID 1 (bin/train execs Python),
    # the default action would be to ignore it, so turn it into a prompt, recorded exit.
    raise _Stopped("training stopped: received SIGTERM")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Route argument mistakes through the failure file like any other bad input.
        raise _UsageError(f"bad arguments: {message}")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = _Parser(prog="train", description="Train the classifier under SageMaker's container contract.")
    parser.add_argument("--train", default=env("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"))
    parser.add_argument("--model-dir", default=env("SM_MODEL_DIR", "/opt/ml/model"))
    parser.add_argument("--output-data-dir", default=env("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
    parser.add_argument("--output-dir", default=env("SM_OUTPUT_DIR", "/opt/ml/output"))
    parser.add_argument("--input-config-dir", default=env("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config"))
    parser.add_argument(
        "--hyperparameters", default=env("SM_HPS"), help="JSON object; overrides hyperparameters.json"
    )
    return parser


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_FAILURE_CHARS else line[: MAX_FAILURE_CHARS - 3] + "..."


def _write_failure(output_dir: str, reason: str) -> None:
    try:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / FAILURE_FILE).write_text(reason + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"train: could not write {output_dir}/{FAILURE_FILE}: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """The `train` command: run() plus the failure file and exit code. Returns the exit code."""
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)  # signal handlers can only be set from the main thread
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    output_dir = os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output")
    try:
        args = build_parser().parse_args(argv)
        output_dir = args.output_dir
        # A failure file left by an earlier run in the same directory would mark this run failed.
        Path(output_dir, FAILURE_FILE).unlink(missing_ok=True)
        hps = read_hyperparameters(args.input_config_dir, args.hyperparameters)
        run(args.train, args.model_dir, args.output_data_dir, hps, log=lambda m: print(m, flush=True))
    except TrainingError as exc:
        reason = _one_line(str(exc))
        _write_failure(output_dir, reason)
        print(f"train: failed: {reason}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        # A bug, not bad input: keep the traceback for whoever fixes it.
        traceback.print_exc()
        reason = _one_line(f"internal error: {type(exc).__name__}: {exc}")
        _write_failure(output_dir, reason)
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
