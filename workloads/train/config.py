"""`mlops.toml`: what the repository trains, read by the local build and inside the training image.

The file sits at the repository root, versioned with the code. The training image copies it next to
the code (/opt/program/mlops.toml), so a training job reads the very file of the commit its image was
built from, and the local build reads the one in the pushed commit's checkout. No environment variable
or hyperparameter chooses it: what trained a model is always in the commit.

Parsing is strict: an unknown key or a bad value raises ConfigError naming the key as `[table] key`,
so a typo fails the build instead of silently falling back to a default. Every key is documented in
README.md ("What to train: mlops.toml"); tests/test_model_config.py keeps the two in step.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

CONFIG_FILE = "mlops.toml"

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

# The estimators a task may name. linear_regression is the regression counterpart of
# logistic_regression (a logistic model does not regress).
ESTIMATORS: dict[str, tuple[str, ...]] = {
    CLASSIFICATION: ("logistic_regression", "random_forest", "hist_gradient_boosting", "xgboost", "lightgbm"),
    REGRESSION: ("linear_regression", "random_forest", "hist_gradient_boosting", "xgboost", "lightgbm"),
}
# Metrics the gate can judge, and whether a model must reach at least (`min`) or at most (`max`) it.
GATE_METRICS: dict[str, tuple[str, str]] = {
    "accuracy": (CLASSIFICATION, "min"),
    "f1_macro": (CLASSIFICATION, "min"),
    "r2": (REGRESSION, "min"),
    "rmse": (REGRESSION, "max"),
}
DEFAULT_GATE_METRIC = {CLASSIFICATION: "accuracy", REGRESSION: "r2"}
DEFAULT_ESTIMATOR = {CLASSIFICATION: "logistic_regression", REGRESSION: "linear_regression"}

# Group names as SageMaker accepts them (ModelPackageGroupName).
_GROUP_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


class ConfigError(ValueError):
    """mlops.toml cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class GateConfig:
    metric: str
    threshold: float | None  # None: no gate
    direction: str  # "min": value >= threshold passes; "max": value <= threshold passes

    def passed(self, value: float) -> bool:
        if self.threshold is None:
            return True
        return value >= self.threshold if self.direction == "min" else value <= self.threshold

    def describe(self) -> str:
        if self.threshold is None:
            return f"{self.metric} (no threshold)"
        return f"{self.metric} {'>=' if self.direction == 'min' else '<='} {self.threshold:g}"


@dataclass(frozen=True)
class ProjectConfig:
    data_path: str = "data/iris.csv"
    target: str | None = None  # None: the last column
    task: str = CLASSIFICATION
    estimator: str = "logistic_regression"
    group: str = "iris"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    gate: GateConfig = field(default_factory=lambda: GateConfig("accuracy", None, "min"))
    test_size: float = 0.2
    random_state: int = 42
    entry: str | None = None  # the user's training script, relative to the repository root
    source: str = "(defaults)"  # where these values came from, for log lines

    def describe(self) -> str:
        entry = f", entry {self.entry}" if self.entry else ""
        return (
            f"{self.source}: {self.task} with {self.estimator}, target {self.target or '(last column)'}, "
            f"group {self.group}, gate {self.gate.describe()}{entry}"
        )


# Keys of each table: (type check, what the error says a value must be).
_SCHEMA: dict[str, tuple[str, ...]] = {
    "data": ("path", "target"),
    "model": ("task", "estimator", "group", "hyperparameters"),
    "gate": ("metric", "min", "max"),
    "training": ("test_size", "random_state", "entry"),
}


def _fail(where: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {key} {message}")


def _string(where: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, key, f"must be a non-empty string, not {value!r}")
    return value.strip()


def _number(where: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, key, f"must be a finite number, not {value!r}")
    return float(value)


def _relative_path(where: str, key: str, value: object) -> str:
    text = _string(where, key, value)
    path = PurePosixPath(text)
    # Paths are inside the repository: the build checks the commit out, and the image holds only it.
    if path.is_absolute() or ".." in path.parts:
        raise _fail(where, key, f"must be a path inside the repository, not {text!r}")
    return text


def _hyperparameters(where: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "[model.hyperparameters]", f"must be a table, not {value!r}")
    for name, item in value.items():
        if isinstance(item, dict | list) or (isinstance(item, float) and not math.isfinite(item)):
            raise _fail(
                where, f"[model.hyperparameters] {name}", f"must be a number, string or boolean, not {item!r}"
            )
    return dict(value)


def parse_config(raw: dict[str, Any], where: str = CONFIG_FILE) -> ProjectConfig:
    """Validate a parsed TOML document; a missing key takes the iris default."""
    unknown_tables = sorted(set(raw) - set(_SCHEMA))
    if unknown_tables:
        raise ConfigError(
            f"{where}: unknown table(s) {', '.join(f'[{t}]' for t in unknown_tables)}; "
            f"known: {', '.join(f'[{t}]' for t in _SCHEMA)}"
        )
    tables: dict[str, dict[str, Any]] = {}
    for name, keys in _SCHEMA.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {name} must be a table ([{name}]), not {table!r}")
        unknown = sorted(set(table) - set(keys))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(f'[{name}] {k}' for k in unknown)}; "
                f"[{name}] takes {', '.join(keys)}"
            )
        tables[name] = table
    data, model, gate, training = (tables[n] for n in ("data", "model", "gate", "training"))
    defaults = ProjectConfig()

    task = model.get("task", defaults.task)
    if task not in TASKS:
        raise _fail(where, "[model] task", f"must be one of {', '.join(TASKS)}, not {task!r}")
    estimator = model.get("estimator", DEFAULT_ESTIMATOR[task])
    if estimator not in ESTIMATORS[task]:
        raise _fail(
            where,
            "[model] estimator",
            f"for {task} must be one of {', '.join(ESTIMATORS[task])}, not {estimator!r}",
        )
    group = _string(where, "[model] group", model.get("group", defaults.group))
    if not set(group) <= _GROUP_CHARS or len(group) > 63 or group.startswith("-"):
        raise _fail(where, "[model] group", f"must be 1-63 letters, digits and hyphens, not {group!r}")

    metric = gate.get("metric", DEFAULT_GATE_METRIC[task])
    if metric not in GATE_METRICS or GATE_METRICS[metric][0] != task:
        allowed = [m for m, (t, _) in GATE_METRICS.items() if t == task]
        raise _fail(where, "[gate] metric", f"for {task} must be one of {', '.join(allowed)}, not {metric!r}")
    direction = GATE_METRICS[metric][1]
    wrong = "max" if direction == "min" else "min"
    if wrong in gate:
        raise _fail(where, f"[gate] {wrong}", f"does not apply to {metric}; use [gate] {direction}")
    threshold = None
    if direction in gate:
        threshold = _number(where, f"[gate] {direction}", gate[direction])
        if metric in ("accuracy", "f1_macro") and not 0 <= threshold <= 1:
            raise _fail(where, "[gate] min", f"for {metric} must be in [0, 1], not {threshold:g}")
        if metric == "r2" and threshold > 1:
            raise _fail(where, "[gate] min", f"for r2 must be at most 1, not {threshold:g}")
        if metric == "rmse" and threshold < 0:
            raise _fail(where, "[gate] max", f"for rmse must be >= 0, not {threshold:g}")

    test_size = _number(where, "[training] test_size", training.get("test_size", defaults.test_size))
    if not 0 < test_size < 1:
        raise _fail(where, "[training] test_size", f"must be between 0 and 1, not {test_size:g}")
    seed = training.get("random_state", defaults.random_state)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise _fail(where, "[training] random_state", f"must be a whole number in [0, 2**32), not {seed!r}")
    entry = training.get("entry")

    return ProjectConfig(
        data_path=_relative_path(where, "[data] path", data.get("path", defaults.data_path)),
        target=_string(where, "[data] target", data["target"]) if "target" in data else None,
        task=task,
        estimator=estimator,
        group=group,
        hyperparameters=_hyperparameters(where, model.get("hyperparameters", {})),
        gate=GateConfig(metric, threshold, direction),
        test_size=test_size,
        random_state=seed,
        entry=_relative_path(where, "[training] entry", entry) if entry is not None else None,
        source=where,
    )


def load_config(path: str | Path) -> ProjectConfig:
    """Read and validate one mlops.toml. A missing file is an error: the caller decides what that means."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} cannot be read: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from None
    return parse_config(raw, str(file))


def find_config(code_root: str | Path) -> ProjectConfig:
    """The code root's mlops.toml, or the iris defaults when the repository has none (today's behaviour)."""
    path = Path(code_root) / CONFIG_FILE
    return load_config(path) if path.is_file() else ProjectConfig()


def as_json(config: ProjectConfig) -> dict[str, Any]:
    """What the local build needs to know before training, as `python -m workloads.train.config` prints it."""
    return {
        "data_path": config.data_path,
        "group": config.group,
        "task": config.task,
        "gate_metric": config.gate.metric,
        "describe": config.describe(),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m workloads.train.config [CODE_ROOT]`: the code root's mlops.toml as one JSON line, or
    the error on stderr with exit code 2. The local build runs the COMMIT's copy of this, so a commit
    that adds a key is read by the parser that knows it."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    try:
        print(json.dumps(as_json(find_config(args[0] if args else "."))))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def group_mismatch(configured: str, served: str, where: str, source: str) -> str | None:
    """Why a build of mlops.toml's `[model] group` `configured` may not register where `served` is
    served, or None. One rule and one wording for the local build and CodeBuild: a platform serves one
    group, so a model of another problem fails before training instead of sitting beside these
    (accuracies of different datasets side by side, and an approval that breaks every caller)."""
    if not served or configured == served:
        return None
    return (
        f"mlops.toml [model] group {configured!r} is not the group this {where} serves "
        f"({served!r}, {source}): set one to the other"
    )
