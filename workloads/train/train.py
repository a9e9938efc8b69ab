"""The training workload: SageMaker's training-container contract around the model mlops.toml names.

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

What to train comes from mlops.toml at the code root (workloads/train/config.py): the repository
root in the local build's checkout, /opt/program in the image, which copies the commit's file next to
the code. `--config` names another file (tests). Job hyperparameters may override the keys below,
and the log says so; everything else is the file's.

Exit codes: 0 trained, 1 internal error (traceback on stderr), 2 bad input (data, mlops.toml,
hyperparameters, arguments), 3 quality gate not met, 4 the model cannot be served (its ONNX export
failed or answers differently from the estimator). Every non-zero exit writes the one-line reason to
`failure`, which SageMaker shows as the job's FailureReason.

Metric lines on stdout (`metric accuracy=0.9667`, `metric f1_macro=0.9665`; regression `metric r2=`,
`metric rmse=`) are what the training job's MetricDefinitions parse (regex `metric accuracy=([0-9.]+)`).
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
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, NoReturn

if __package__ in (None, ""):  # run as a script: make `workloads` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from workloads.train import finish as finish_mod
from workloads.train.config import CLASSIFICATION, ConfigError, ProjectConfig, load_config
from workloads.train.dataset import DataError, Dataset, load_dataset
from workloads.train.errors import (
    EXIT_ARTIFACT,
    EXIT_BAD_INPUT,
    EXIT_GATE,
    EXIT_INTERNAL,
    ArtifactError,
    HyperparameterError,
    QualityGateError,
    TrainingError,
)

__all__ = [
    "EXIT_ARTIFACT",
    "EXIT_BAD_INPUT",
    "EXIT_GATE",
    "EXIT_INTERNAL",
    "ArtifactError",
    "HyperparameterError",
    "QualityGateError",
    "TrainingError",
    "main",
    "run",
]

FAILURE_FILE = "failure"
HYPERPARAMETERS_FILE = "hyperparameters.json"
# SageMaker truncates FailureReason at 1024 characters; keep ours whole.
MAX_FAILURE_CHARS = 1000
# Where mlops.toml and a [training] entry script live: the repository root, /opt/program in the image.
CODE_ROOT = Path(__file__).resolve().parents[2]

EXIT_STOPPED = 128 + signal.SIGTERM

Log = Callable[[str], None]


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
    """A job's hyperparameters: overrides of mlops.toml (None = the file's value), plus the platform's
    accuracy floor. C and max_iter are the logistic regression's, as the seed's jobs passed them."""

    C: float | None = None  # [model.hyperparameters] C (logistic_regression)
    max_iter: int | None = None  # [model.hyperparameters] max_iter (logistic_regression)
    random_state: int | None = None  # [training] random_state
    test_size: float | None = None  # [training] test_size
    target: str | None = None  # [data] target
    min_accuracy: float = 0.0  # the platform's floor on holdout accuracy (classification); 0 = off

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
        if self.C is not None and not self.C > 0:
            raise HyperparameterError(f"hyperparameter C={self.C} must be > 0")
        if self.max_iter is not None and self.max_iter < 1:
            raise HyperparameterError(f"hyperparameter max_iter={self.max_iter} must be >= 1")
        if self.random_state is not None and not 0 <= self.random_state < 2**32:
            raise HyperparameterError(
                f"hyperparameter random_state={self.random_state} must be in [0, 2**32)"
            )
        if self.test_size is not None and not 0 < self.test_size < 1:
            raise HyperparameterError(f"hyperparameter test_size={self.test_size} must be between 0 and 1")
        if not 0 <= self.min_accuracy <= 1:
            raise HyperparameterError(f"hyperparameter min_accuracy={self.min_accuracy} must be in [0, 1]")

    def apply(self, config: ProjectConfig, log: Log) -> ProjectConfig:
        """mlops.toml with this job's overrides; each one is logged, none is silent."""
        changes: dict[str, Any] = {}
        for key in ("target", "test_size", "random_state"):
            value = getattr(self, key)
            if value is not None and value != getattr(config, key):
                changes[key] = value
        estimator_params = {k: getattr(self, k) for k in ("C", "max_iter") if getattr(self, k) is not None}
        if estimator_params:
            if config.estimator != "logistic_regression":
                raise HyperparameterError(
                    f"hyperparameter(s) {', '.join(sorted(estimator_params))} apply to logistic_regression; "
                    f"{config.source} trains {config.estimator}: set [model.hyperparameters] there"
                )
            changes["hyperparameters"] = {**config.hyperparameters, **estimator_params}
        if self.min_accuracy and config.task != CLASSIFICATION:
            # The platform passes its floor to every job (QUALITY_GATE_MIN_ACCURACY on AWS); a regressor
            # has no accuracy, so it is judged by the [gate] alone, and the log says so.
            log(
                f"hyperparameter min_accuracy={self.min_accuracy} applies to classification; "
                f"this {config.task} is judged by {config.source}'s [gate] ({config.gate.describe()})"
            )
        if changes:
            log(f"job hyperparameters override {config.source}: {changes}")
        return replace(config, **changes)


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


def check_split(ds: Dataset, test_size: float, task: str = CLASSIFICATION) -> None:
    """Fail with a readable reason where train_test_split would raise a cryptic one."""
    n = len(ds.labels)
    n_test = math.ceil(test_size * n)  # how train_test_split sizes a float test_size
    n_train = n - n_test
    if task != CLASSIFICATION:
        if n_test < 2 or n_train < 2:
            raise TrainingError(
                f"{n} rows split with test_size={test_size} gives {n_train} train / {n_test} test rows; "
                "a regression needs at least 2 of each"
            )
        return
    counts = ds.class_counts
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


def _library_errors(estimator: str) -> tuple[type[BaseException], ...]:
    """What xgboost and lightgbm raise for a parameter they refuse (they check at fit, in C++)."""
    if estimator == "xgboost":
        from xgboost.core import XGBoostError

        return (XGBoostError, TypeError, ValueError)
    if estimator == "lightgbm":
        from lightgbm.basic import LightGBMError

        return (LightGBMError, TypeError, ValueError)
    return ()


def _fit(pipeline: Any, x: Any, y: np.ndarray, config: ProjectConfig, log: Log) -> None:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            pipeline.fit(x, y)
        except _library_errors(config.estimator) as exc:
            # The data was validated by load_dataset, so what the library refuses is its parameters.
            first = " ".join(str(exc).split())[:300]
            raise ConfigError(
                f"{config.source}: [model.hyperparameters] refused by {config.estimator}: {first}"
            ) from None
        except ValueError as exc:
            # scikit-learn validates parameters at fit and names the one it refuses.
            if "parameter" in str(exc):
                raise ConfigError(
                    f"{config.source}: [model.hyperparameters]: {' '.join(str(exc).split())}"
                ) from None
            raise
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            # Not fatal (the gate judges the result), but a person tuning max_iter needs to see it.
            log("warning: " + " ".join(str(w.message).split()))


def _record(config: ProjectConfig, hps: Hyperparameters, target: str) -> dict[str, str]:
    """What the artifact records as its hyperparameters: every value as SageMaker would pass it."""
    from workloads.train.estimators import make_estimator

    wanted = {**make_estimator(config).get_params(deep=False)}
    own = {k: wanted[k] for k in sorted(wanted) if k in config.hyperparameters or k in ("C", "max_iter")}
    return {
        **{k: str(v) for k, v in own.items()},
        "estimator": config.estimator,
        "random_state": str(config.random_state),
        "test_size": str(config.test_size),
        "target": target,
        "min_accuracy": str(hps.min_accuracy),
    }


def run(
    channel: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    output_data_dir: str | os.PathLike[str],
    hps: Mapping[str, object] | Hyperparameters | None = None,
    *,
    config: ProjectConfig | None = None,
    code_root: str | os.PathLike[str] = CODE_ROOT,
    log: Log = print,
) -> dict[str, Any]:
    """Train what `config` says (default: the iris defaults) on the channel, judge it on a holdout,
    export it and check the export; return the metrics.

    Raises TrainingError (bad data or hyperparameters), ConfigError (mlops.toml, naming the key),
    QualityGateError (evaluation.json written, no model) and ArtifactError (the model cannot be served;
    no model), each with a one-line message; main() turns them into the failure file and exit code.
    """
    params = hps if isinstance(hps, Hyperparameters) else Hyperparameters.parse(hps or {})
    cfg = params.apply(config or ProjectConfig(), log)
    log(f"config {cfg.describe()}")
    job = finish_mod.Job(
        model_dir=Path(model_dir),
        output_data_dir=Path(output_data_dir),
        config=cfg,
        min_accuracy=params.min_accuracy,
        log=log,
    )
    if cfg.entry:
        return _run_entry(job, Path(code_root), channel)
    try:
        ds = load_dataset(channel, cfg.target, cfg.task)
    except DataError as exc:
        raise TrainingError(str(exc)) from None
    kinds = ", ".join(f"{n} ({t})" for n, t in zip(ds.feature_names, ds.feature_types, strict=True))
    summary = ds.class_counts if cfg.task == CLASSIFICATION else "(regression)"
    log(
        f"loaded {len(ds.labels)} rows from {len(ds.files)} file(s): features {kinds}; target {ds.target} {summary}"
    )
    check_split(ds, cfg.test_size, cfg.task)
    job.hyperparameters = _record(cfg, params, ds.target)
    # Imported only now: scikit-learn takes seconds to import, and bad input should fail at once.
    from sklearn.model_selection import train_test_split

    from workloads.train.estimators import INDEXED_LABELS, as_model_input, make_pipeline

    classification = cfg.task == CLASSIFICATION
    y = ds.labels if classification else ds.target_values()
    x_train, x_test, y_train, y_test = train_test_split(
        ds.features,
        y,
        test_size=cfg.test_size,
        stratify=ds.labels if classification else None,
        random_state=cfg.random_state,
    )
    missing = ds.categorical or bool(np.isnan(ds.features).any())
    pipeline = make_pipeline(cfg, ds.feature_names, ds.feature_types, impute=missing)
    classes = sorted(set(ds.labels.tolist())) if classification else None
    indexed = classification and cfg.estimator in INDEXED_LABELS
    fit_y = np.searchsorted(np.asarray(classes), y_train) if indexed else y_train
    # The shipped model is the one the holdout measured, so the registry's metrics describe exactly
    # the artifact a person approves (refitting on all rows would ship an unmeasured model).
    _fit(pipeline, as_model_input(x_train, ds.feature_names, ds.feature_types), fit_y, cfg, log)
    holdout = finish_mod.Holdout(
        rows=x_test,
        model_input=as_model_input(x_test, ds.feature_names, ds.feature_types),
        truth=y_test,
        feature_names=ds.feature_names,
        feature_types=ds.feature_types,
    )
    # Today's skops server serves float rows to a scikit-learn estimator; only such a model gets one.
    skops = not ds.categorical and not indexed
    return finish_mod.finish(
        job, pipeline, holdout, n_train=len(y_train), classes=classes, label_index=indexed, skops=skops
    )


def _run_entry(job: finish_mod.Job, code_root: Path, channel: str | os.PathLike[str]) -> dict[str, Any]:
    """Run the user's script in this process, in the same SageMaker contract (SM_* variables, the
    channel); it hands its estimator to workloads.train.save_model, which runs finish()."""
    import runpy

    assert job.config.entry is not None
    script = code_root / job.config.entry
    if not script.is_file():
        raise TrainingError(f"[training] entry {job.config.entry} does not exist under {code_root}")
    job.log(f"running [training] entry {script} (channel {channel})")
    finish_mod.set_current_job(job)
    argv = sys.argv
    try:
        sys.argv = [str(script)]
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise TrainingError(f"[training] entry {job.config.entry} exited with code {exc.code}") from None
    finally:
        sys.argv = argv
        finish_mod.set_current_job(None)
    if job.result is None:
        raise TrainingError(
            f"[training] entry {job.config.entry} finished without calling workloads.train.save_model()"
        )
    return job.result


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
    parser.add_argument(
        "--config",
        default=str(CODE_ROOT / "mlops.toml"),
        help="mlops.toml to train by (default: the one at the code root; absent = the iris defaults)",
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
        config_path = Path(args.config)
        config = load_config(config_path) if config_path.is_file() else ProjectConfig()
        run(
            args.train,
            args.model_dir,
            args.output_data_dir,
            hps,
            config=config,
            code_root=config_path.parent if config_path.is_file() else CODE_ROOT,
            log=lambda m: print(m, flush=True),
        )
    except ConfigError as exc:
        reason = _one_line(str(exc))
        _write_failure(output_dir, reason)
        print(f"train: failed: {reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
