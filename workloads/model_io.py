"""The model artifact: what training writes to SM_MODEL_DIR and what serving loads from it.

Layout of a model directory (SageMaker tars it as model.tar.gz and untars it for hosting):

    model.skops      the fitted scikit-learn estimator
    metadata.json    feature names and order, class labels, target, library versions, metrics
    metrics.json     the evaluation report (also embedded in metadata.json)

Why skops and not pickle/joblib: skops loads by reconstructing an allow-list of types, so loading a
model file cannot execute code (pickle can), which is what MLflow 3 moved to for the same reason.
"""

from __future__ import annotations

import json
import os
import platform as _stdlib_platform
from dataclasses import asdict, dataclass, field
from importlib import metadata as _pkg_metadata
from pathlib import Path
from typing import Any

MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 1

# Types a model file may hold beyond skops' built-in trusted set. Empty on purpose: the default
# pipeline (StandardScaler + LogisticRegression) needs nothing else. Widen it deliberately, per type.
EXTRA_TRUSTED_TYPES: tuple[str, ...] = ()


class ModelFormatError(Exception):
    """The model directory is missing a file, is malformed, or holds types we do not trust."""


@dataclass(frozen=True)
class ModelMetadata:
    """What the artifact says about itself, so serving needs nothing but the directory."""

    feature_names: list[str]
    class_labels: list[str]
    target: str
    algorithm: str
    hyperparameters: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


def library_versions() -> dict[str, str]:
    """Versions that decide whether an artifact loads and predicts the same way elsewhere."""
    versions = {"python": _stdlib_platform.python_version()}
    for dist in ("scikit-learn", "numpy", "scipy", "skops"):
        try:
            versions[dist] = _pkg_metadata.version(dist)
        except _pkg_metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            versions[dist] = "absent"
    return versions


def save_model(model_dir: str | os.PathLike[str], estimator: Any, metadata: ModelMetadata) -> Path:
    """Write the estimator, metadata.json and metrics.json into model_dir (created if needed)."""
    import skops.io as sio

    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    sio.dump(estimator, out / MODEL_FILE)
    (out / METADATA_FILE).write_text(json.dumps(asdict(metadata), indent=2, sort_keys=True) + "\n")
    (out / METRICS_FILE).write_text(json.dumps(metadata.metrics, indent=2, sort_keys=True) + "\n")
    return out


def load_metadata(model_dir: str | os.PathLike[str]) -> ModelMetadata:
    path = Path(model_dir) / METADATA_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelFormatError(f"{path} is missing: not a model directory written by this platform") from exc
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} has format_version {raw.get('format_version')!r}; this platform reads {FORMAT_VERSION}"
        )
    try:
        return ModelMetadata(**raw)
    except TypeError as exc:
        raise ModelFormatError(f"{path} does not match the metadata schema: {exc}") from exc


def load_model(model_dir: str | os.PathLike[str]) -> tuple[Any, ModelMetadata]:
    """Load (estimator, metadata). Refuses files holding types outside the trusted set."""
    import skops.io as sio

    metadata = load_metadata(model_dir)
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelFormatError(f"{path} is missing")
    try:
        estimator = sio.load(path, trusted=list(EXTRA_TRUSTED_TYPES))
    except Exception as exc:  # skops raises several types (untrusted, corrupt zip, bad schema)
        raise ModelFormatError(f"{path} could not be loaded safely: {exc}") from exc
    classes = [str(c) for c in getattr(estimator, "classes_", [])]
    if classes != metadata.class_labels:
        raise ModelFormatError(
            f"{path}: estimator classes {classes} do not match metadata class_labels {metadata.class_labels}"
        )
    return estimator, metadata
