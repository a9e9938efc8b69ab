"""The model artifact: what training writes to SM_MODEL_DIR and what serving loads from it.

Layout of a model directory (SageMaker tars it as model.tar.gz and untars it for hosting):

    model.onnx       the fitted pipeline as an ONNX graph: what serving runs (workloads/onnx_model.py)
    model.skops      the scikit-learn estimator, only where today's skops server can serve it (all
                     features numeric and skops loads it with the trusted types below); transitional
    metadata.json    the signature (features with names, types and order; classes or the regression
                     output), target, task, model package group, library versions, metrics, the
                     build's check of the ONNX answers against the estimator, and whether a missing
                     number can be scored (imputes_missing), and for a logistic regression on numbers
                     its folded affine map (affine)
    metrics.json     the evaluation report (also embedded in metadata.json)

Neither file can run code when loaded: ONNX is data for a fixed set of operators, and skops loads by
reconstructing an allow-list of types (pickle could run anything). Artifacts written before the
signature fields (format_version 1 without them) still load: the new fields have defaults.
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
ONNX_FILE = "model.onnx"
CLASSIFICATION = "classification"
REGRESSION = "regression"
NUMBER = "number"
STRING = "string"
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
    # The signature and where the model belongs. Defaults describe a seed artifact (iris: numeric
    # features, classification, skops only), so its metadata.json loads unchanged.
    task: str = CLASSIFICATION
    features: list[dict[str, str]] = field(default_factory=list)  # [{"name", "type": number|string}]
    output: dict[str, Any] = field(default_factory=dict)  # {"kind": "classes"|"value", ...}
    group: str = ""
    onnx_file: str = ""  # "" = no ONNX artifact
    skops_file: str = MODEL_FILE  # "" = no skops artifact
    serving_check: dict[str, Any] = field(default_factory=dict)  # the build's ONNX-vs-estimator check
    # Whether the model scores a missing number as training did (its pipeline imputes, or the build's
    # check compared answers on holdout rows missing one): then a request may send null or an empty
    # field for a numeric feature; else that is refused. A missing category is always a category of
    # its own. Artifacts from before this field: False.
    imputes_missing: bool = False
    # A [StandardScaler ->] LogisticRegression on numbers only, folded by the build into one affine map
    # (workloads/serve/predictor.py AffinePredictor.to_dict: weights, bias, binary) and checked against
    # the estimator on the holdout: the server answers with it in float64 (closer to scikit-learn than
    # the float32 graph, and a few microseconds a row instead of an onnxruntime call). {} = none.
    affine: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.features:  # a seed artifact: every feature was a number
            object.__setattr__(self, "features", [{"name": n, "type": NUMBER} for n in self.feature_names])

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def signature(self) -> dict[str, Any]:
        """What a caller needs to send and gets back, as recorded in the registry."""
        return {
            "task": self.task,
            "target": self.target,
            "features": self.features,
            "output": self.output,
            "imputes_missing": self.imputes_missing,
        }


def library_versions() -> dict[str, str]:
    """Versions that decide whether an artifact loads and predicts the same way elsewhere."""
    versions = {"python": _stdlib_platform.python_version()}
    for dist in ("scikit-learn", "numpy", "scipy", "skops", "onnxruntime", "skl2onnx", "onnx"):
        try:
            versions[dist] = _pkg_metadata.version(dist)
        except _pkg_metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            versions[dist] = "absent"
    return versions


def save_model(
    model_dir: str | os.PathLike[str], estimator: Any, metadata: ModelMetadata, *, onnx: bytes | None = None
) -> Path:
    """Write the artifacts the metadata names (model.onnx from `onnx`, model.skops from the estimator),
    metadata.json and metrics.json into model_dir (created if needed)."""
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    if metadata.onnx_file:
        if onnx is None:
            raise ValueError("metadata names an ONNX file but no ONNX model was given")
        (out / metadata.onnx_file).write_bytes(onnx)
    if metadata.skops_file:
        import skops.io as sio

        sio.dump(estimator, out / metadata.skops_file)
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
    if not metadata.skops_file:
        raise ModelFormatError(
            f"{model_dir} has no skops artifact; serve its ONNX model (onnx_model.load_onnx_model)"
        )
    path = Path(model_dir) / metadata.skops_file
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
