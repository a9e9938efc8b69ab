"""Load a model directory's ONNX artifact and answer rows with it: what a server runs, and what the
build runs on the holdout before anything is registered (workloads/train/artifact_check.py).

    model = load_onnx_model("/opt/ml/model")
    model.predict([[5.1, 3.5, 1.4, 0.2]])
    # [{"label": "setosa", "probabilities": {"setosa": 0.98, "versicolor": 0.02, "virginica": 0.0}}]
    # regression: [{"value": 151.3}]

Rows are in the signature's feature order (metadata.json `features`): numbers for numeric features,
strings for categorical ones; None (or NaN, or "") is a missing value, handled as training did. Only
onnxruntime and numpy are imported: no scikit-learn, and the file cannot run code when loaded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workloads.model_io import CLASSIFICATION, NUMBER, ModelFormatError, ModelMetadata, load_metadata

Answer = dict[str, Any]


class OnnxModel:
    """An onnxruntime session over model.onnx plus the signature from metadata.json."""

    def __init__(self, session: Any, metadata: ModelMetadata) -> None:
        self.session = session
        self.metadata = metadata
        self._inputs = [i.name for i in session.get_inputs()]
        self._types = [f["type"] for f in metadata.features]
        self._names = [f["name"] for f in metadata.features]
        self._matrix = len(self._inputs) == 1 and all(t == NUMBER for t in self._types)
        if not self._matrix and len(self._inputs) != len(self._names):
            raise ModelFormatError(
                f"model.onnx has {len(self._inputs)} inputs but metadata.json names {len(self._names)} features"
            )
        self.classes = list(metadata.class_labels)
        self.classification = metadata.task == CLASSIFICATION
        # The probabilities output alone, for the Predictor protocol below (see _probabilities).
        outputs = session.get_outputs()
        self._probability_output = [outputs[1].name] if self.classification and len(outputs) > 1 else None

    @property
    def feature_names(self) -> list[str]:
        return list(self._names)

    def _feed(self, rows: Sequence[Sequence[Any]] | np.ndarray) -> dict[str, np.ndarray]:
        if self._matrix:
            if isinstance(rows, np.ndarray):
                x = rows.astype(np.float32)
            else:
                x = np.array(
                    [[math.nan if v is None else v for v in row] for row in rows], dtype=np.float32
                ).reshape(len(rows), len(self._names))
            return {self._inputs[0]: x}
        feed: dict[str, np.ndarray] = {}
        for j, (name, kind) in enumerate(zip(self._inputs, self._types, strict=True)):
            column = [row[j] for row in rows]
            if kind == NUMBER:
                feed[name] = np.array(
                    [math.nan if v is None or v == "" else v for v in column], dtype=np.float32
                ).reshape(-1, 1)
            else:
                # A missing category is "" in training (dataset.MISSING_TOKENS); numbers become text.
                feed[name] = np.array(["" if _missing(v) else str(v) for v in column], dtype=object).reshape(
                    -1, 1
                )
        return feed

    def run(self, rows: Sequence[Sequence[Any]] | np.ndarray) -> tuple[list[str] | None, np.ndarray]:
        """(labels, probabilities [n, classes]) for a classifier, (None, values [n]) for a regressor."""
        outputs = self.session.run(None, self._feed(rows))
        if not self.classification:
            return None, np.asarray(outputs[0], dtype=np.float64).reshape(-1)
        raw_labels, probabilities = outputs[0], np.asarray(outputs[1], dtype=np.float64)
        if raw_labels.dtype.kind in "iu":  # label-indexed models (xgboost, lightgbm)
            labels = [self.classes[int(i)] for i in raw_labels.reshape(-1)]
        else:
            labels = [str(v) for v in raw_labels.reshape(-1)]
        return labels, probabilities

    # The serving Predictor protocol (workloads/serve/predictor.py), so today's server can take this
    # object where it takes make_predictor(...): class probabilities in class_labels order, or for a
    # regressor the values as one column.
    kind = "onnxruntime"

    def _probabilities(self, rows: Sequence[Sequence[Any]] | np.ndarray) -> np.ndarray | None:
        """run()'s probabilities without its labels: the server labels each row from its probabilities
        (workloads/serve/codec.py), so onnxruntime is asked for that output only and converts no label
        (a 10,000-row batch: 10,000 Python strings). None for a regressor or a graph without it."""
        if self._probability_output is None:
            return None
        (probabilities,) = self.session.run(self._probability_output, self._feed(rows))
        return np.asarray(probabilities)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        probabilities = self._probabilities(x)
        if probabilities is not None:
            return probabilities.astype(np.float64)
        labels, values = self.run(x)
        return values if labels is not None else values.reshape(-1, 1)

    def predict_row(self, row: list[Any]) -> list[float]:
        rows = np.asarray([row], dtype=np.float64) if self._matrix else [row]
        probabilities = self._probabilities(rows)
        if probabilities is not None:
            return list(probabilities[0].tolist())
        labels, values = self.run(rows)
        return [float(v) for v in values[0]] if labels is not None else [float(values[0])]

    def predict(self, rows: Sequence[Sequence[Any]] | np.ndarray) -> list[Answer]:
        """One answer per row: {"label", "probabilities"} for a classifier, {"value"} for a regressor."""
        if len(rows) == 0:
            return []
        labels, values = self.run(rows)
        if labels is None:
            return [{"value": float(v)} for v in values]
        return [
            {"label": label, "probabilities": dict(zip(self.classes, map(float, row), strict=True))}
            for label, row in zip(labels, values, strict=True)
        ]


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def load_onnx_model(model_dir: str | os.PathLike[str], *, threads: int = 1) -> OnnxModel:
    """The model directory's ONNX artifact, ready to answer. Raises ModelFormatError for a directory
    without one (an artifact written before the ONNX export: serve it with model_io.load_model).

    threads=1: a model server runs a worker per core, so each session keeps to one thread. It is also
    what the build's batch-invariance check ran with: with more threads, onnxruntime's tree ensembles
    merge per-thread partial sums for large batches, so a batch's sums could round apart from a row's.
    """
    import onnxruntime as ort

    metadata = load_metadata(model_dir)
    if not metadata.onnx_file:
        raise ModelFormatError(f"{model_dir}/metadata.json names no ONNX file (an artifact from before ONNX)")
    path = Path(model_dir) / metadata.onnx_file
    if not path.is_file():
        raise ModelFormatError(f"{path} is missing")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelFormatError(f"{path} could not be loaded by onnxruntime: {exc}") from exc
    return OnnxModel(session, metadata)
