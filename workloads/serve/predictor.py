"""Class probabilities from a fitted estimator, with a fast path for what training produces.

scikit-learn validates its input on every call (check_array, feature-name checks, the Pipeline walk),
which costs ~75 us per call whatever the batch size: one row at a time that caps a worker near 13,000
rows/s before any HTTP work. For a Pipeline(StandardScaler, LogisticRegression) the whole model is an
affine map followed by softmax (or a sigmoid for two classes), so `fast_predictor` folds the scaler into
the linear model once at load time:

    decision = ((x - mean) / scale) @ coef.T + intercept = x @ W + b
    W = (coef / scale).T,   b = intercept - (mean / scale) @ coef.T

and computes probabilities with numpy for batches and with plain Python floats for a single row (numpy's
per-call overhead is larger than the arithmetic for 4 features x 3 classes). Any other estimator goes
through its own predict_proba (`EstimatorPredictor`). tests/test_serve.py checks both paths against
predict_proba on random and extreme rows.

Inputs are already validated (2-D, finite, the model's feature count) by workloads/serve/codec.py.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Protocol

import numpy as np


class Predictor(Protocol):
    """Probabilities in the estimator's class order, one row per input row."""

    @property
    def kind(self) -> str: ...

    def predict_batch(self, x: np.ndarray) -> np.ndarray: ...

    def predict_row(self, row: list[float]) -> list[float]: ...


class InputRejectedError(Exception):
    """The estimator refused a row it can score in general (e.g. a value beyond float32 for a tree)."""

    def __init__(self, row: int, reason: str) -> None:
        super().__init__(f"row {row}: {reason}")
        self.row = row
        self.reason = reason


class EstimatorPredictor:
    """Any scikit-learn classifier with predict_proba."""

    kind = "estimator.predict_proba"

    def __init__(self, estimator: Any) -> None:
        if not callable(getattr(estimator, "predict_proba", None)):
            raise TypeError(
                f"{type(estimator).__name__} has no predict_proba; serving answers class probabilities"
            )
        self.estimator = estimator

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
        except ValueError as exc:
            # The client's values, or a broken model? A model that cannot score a row of zeros is broken
            # (a server fault, raised as is); otherwise the first row it refuses is the client's.
            if not self._scores(np.zeros((1, x.shape[1]))):
                raise
            for number, row in enumerate(x, start=1):
                try:
                    self.estimator.predict_proba(row[np.newaxis, :])
                except ValueError as row_exc:
                    raise InputRejectedError(number, str(row_exc).split("\n", 1)[0]) from exc
            raise

    def _scores(self, x: np.ndarray) -> bool:
        try:
            self.estimator.predict_proba(x)
        except ValueError:
            return False
        return True

    def predict_row(self, row: list[float]) -> list[float]:
        return [float(p) for p in self.predict_batch(np.asarray([row], dtype=np.float64))[0]]


class AffinePredictor:
    """Softmax (multiclass) or sigmoid (binary) over x @ weights + bias: a folded scaler + logistic model."""

    kind = "affine fast path"

    def __init__(self, weights: np.ndarray, bias: np.ndarray, *, binary: bool) -> None:
        self.weights = weights  # (n_features, n_classes), or (n_features, 1) for two classes
        self.bias = bias  # (n_classes,) or (1,)
        self.binary = binary
        # Python copies for the single-row path: one list of weights per output column.
        self._columns = [[float(w) for w in column] for column in weights.T]
        self._bias = [float(b) for b in bias]

    def to_dict(self) -> dict[str, Any]:
        """What metadata.json records (`affine`): plain numbers, loaded back by from_dict."""
        return {"weights": self.weights.tolist(), "bias": self.bias.tolist(), "binary": self.binary}

    @classmethod
    def from_dict(cls, data: dict[str, Any], n_features: int, n_classes: int) -> AffinePredictor:
        """The folded map recorded by the build; ValueError naming what does not fit the signature."""
        try:
            weights = np.asarray(data["weights"], dtype=np.float64)
            bias = np.asarray(data["bias"], dtype=np.float64)
            binary = data["binary"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"metadata.json affine is malformed: {type(exc).__name__}: {exc}") from None
        outputs = 1 if n_classes == 2 else n_classes
        if type(binary) is not bool or binary != (n_classes == 2):
            raise ValueError(f"metadata.json affine binary is {binary!r} for {n_classes} classes")
        if weights.shape != (n_features, outputs) or bias.shape != (outputs,):
            raise ValueError(
                f"metadata.json affine has weights {weights.shape} and bias {bias.shape}; the signature "
                f"needs ({n_features}, {outputs}) and ({outputs},)"
            )
        if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
            raise ValueError("metadata.json affine holds a number that is not finite")
        return cls(np.ascontiguousarray(weights), bias, binary=binary)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        decision = x @ self.weights
        decision += self.bias
        if self.binary:
            # Imported here, not at the top: this module is imported by every model server, and
            # scipy.special costs ~0.2-0.45 s of a start that serves an ONNX graph and never gets here.
            from scipy.special import expit

            positive = expit(decision[:, 0])
            return np.stack([1.0 - positive, positive], axis=1)
        # Same steps as sklearn.utils.extmath.softmax: shift by the row max so exp never overflows.
        decision -= decision.max(axis=1, keepdims=True)
        np.exp(decision, out=decision)
        decision /= decision.sum(axis=1, keepdims=True)
        return decision

    def predict_row(self, row: list[float]) -> list[float]:
        decision = [
            sum(map(operator.mul, row, column), b)
            for column, b in zip(self._columns, self._bias, strict=True)
        ]
        if self.binary:
            d = decision[0]
            if math.isnan(d):
                return [math.nan, math.nan]
            # Two forms of the logistic function so exp() only ever sees a non-positive argument.
            if d >= 0:
                positive = 1.0 / (1.0 + math.exp(-d))
            else:
                e = math.exp(d)
                positive = e / (1.0 + e)
            return [1.0 - positive, positive]
        top = max(decision)
        if not math.isfinite(top):
            return [math.nan] * len(decision)
        exps = [math.exp(d - top) for d in decision]
        total = sum(exps)
        return [e / total for e in exps]


def fast_predictor(estimator: Any, n_features: int) -> AffinePredictor | None:
    """The folded affine predictor for [StandardScaler ->] LogisticRegression, else None.

    Exact types only: a subclass may override transform or predict_proba, which folding would ignore.
    A model fit on a different number of features than its metadata names is left to predict_proba,
    which refuses every request with its own error (a broken artifact must fail loudly, not guess).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps: list[Any]
    if type(estimator) is Pipeline:
        steps = [step for _, step in estimator.steps if step is not None and step != "passthrough"]
    else:
        steps = [estimator]
    if not steps or type(steps[-1]) is not LogisticRegression:
        return None
    classifier = steps[-1]
    scalers = steps[:-1]
    if len(scalers) > 1 or any(type(s) is not StandardScaler for s in scalers):
        return None

    coef = np.asarray(classifier.coef_, dtype=np.float64)  # (n_outputs, n_features)
    intercept = np.asarray(classifier.intercept_, dtype=np.float64).reshape(-1)
    n_classes = len(classifier.classes_)
    if n_classes < 2 or coef.shape != (1 if n_classes == 2 else n_classes, n_features):
        return None
    mean = np.zeros(coef.shape[1])
    scale = np.ones(coef.shape[1])
    if scalers:
        scaler = scalers[0]
        if scaler.with_mean:
            mean = np.asarray(scaler.mean_, dtype=np.float64)
        if scaler.with_std:
            scale = np.asarray(scaler.scale_, dtype=np.float64)
    scaled_coef = coef / scale
    weights = np.ascontiguousarray(scaled_coef.T)
    bias = intercept - scaled_coef @ mean
    return AffinePredictor(weights, bias, binary=n_classes == 2)


def make_predictor(estimator: Any, n_features: int) -> Predictor:
    fast = fast_predictor(estimator, n_features)
    return fast if fast is not None else EstimatorPredictor(estimator)
