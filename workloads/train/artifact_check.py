"""The build's serving check: load the written artifact as a server does, score the holdout, and
compare with the fitted estimator, so a model that cannot be served fails before it is registered.

It also says whether rows scored together get the bits they get alone (`batch_invariant`): then the
model server may score concurrent requests in one call without any answer depending on what else
arrived with it.

Tolerance: classes equal on every row; probabilities within PROBABILITY_ATOL absolute; regression
values within VALUE_RTOL relative (at least VALUE_RTOL absolute). The graph computes in float32
(onnxruntime's tree and linear operators), scikit-learn in float64: float32 carries ~7 significant
digits, so 1e-4 leaves a wide margin for rounding while any real disagreement (a wrong split, a lost
category, a shifted class order) is far larger.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from workloads.onnx_model import load_onnx_model
from workloads.serve.predictor import AffinePredictor
from workloads.train.errors import ArtifactError

PROBABILITY_ATOL = 1e-4
VALUE_RTOL = 1e-4


def check_artifact(
    model_dir: str | os.PathLike[str],
    rows: Any,
    expected_labels: list[str] | None,
    expected_values: np.ndarray,
) -> dict[str, Any]:
    """Compare load_onnx_model(model_dir) on `rows` (as a server receives them) with the estimator's
    answers: labels + probabilities [n, classes] (classifier) or None + values [n] (regressor)."""
    try:
        model = load_onnx_model(model_dir)
        labels, values = model.run(rows)
    except Exception as exc:  # ModelFormatError, or onnxruntime's own types at run time
        raise ArtifactError(f"model cannot be served: the ONNX artifact does not run: {exc}") from exc
    expected = np.asarray(expected_values, dtype=np.float64)
    if values.shape != expected.shape:
        raise ArtifactError(
            f"model cannot be served: ONNX answers have shape {values.shape}, the estimator's {expected.shape}"
        )
    diff = np.abs(values - expected)
    if expected_labels is not None:
        assert labels is not None
        wrong = [i for i, (a, b) in enumerate(zip(labels, expected_labels, strict=True)) if a != b]
        if wrong:
            i = wrong[0]
            raise ArtifactError(
                f"model cannot be served: ONNX predicts {labels[i]!r} where the estimator predicts "
                f"{expected_labels[i]!r} (holdout row {i + 1}; {len(wrong)} of {len(labels)} rows differ)"
            )
        allowed = np.full_like(expected, PROBABILITY_ATOL)
        what = "probability"
        tolerance = {"labels": "equal", "probability_atol": PROBABILITY_ATOL}
    else:
        allowed = VALUE_RTOL * np.maximum(1.0, np.abs(expected))
        what = "value"
        tolerance = {"value_rtol": VALUE_RTOL}
    bad = np.argwhere(~(diff <= allowed))
    if len(bad):
        worst = tuple(bad[0])
        raise ArtifactError(
            f"model cannot be served: ONNX {what} differs from the estimator's by {float(diff[worst]):.3g} "
            f"on holdout row {worst[0] + 1} (allowed {float(allowed[worst]):.3g})"
        )
    return {
        "runtime": "onnxruntime",
        "rows": len(expected),
        "max_abs_difference": float(diff.max()) if diff.size else 0.0,
        "tolerance": tolerance,
        "passed": True,
    }


# Enough rows to meet every branch of a typical graph, few enough to score one by one in well under 1 s.
ALONE_ROWS = 2000


def scores_alike_together(model_dir: str | os.PathLike[str], rows: Any) -> bool:
    """Whether the first ALONE_ROWS rows, scored in one call, get exactly (bit for bit) the answers they
    get one at a time."""
    model = load_onnx_model(model_dir)
    sample = rows[:ALONE_ROWS]
    if len(sample) < 2:
        return False
    _, together = model.run(sample)
    for i in range(len(sample)):
        _, alone = model.run(sample[i : i + 1])
        if not np.array_equal(alone[0], together[i]):
            return False
    return True


def check_affine(affine: AffinePredictor, rows: Any, expected_probabilities: np.ndarray) -> float:
    """The folded affine map the server answers a logistic regression with, on the holdout, one row at a
    time and all at once, against the estimator's probabilities; the largest difference, or
    ArtifactError past PROBABILITY_ATOL."""
    x = np.asarray(rows, dtype=np.float64)
    expected = np.asarray(expected_probabilities, dtype=np.float64)
    together = affine.predict_batch(x)
    alone = np.asarray([affine.predict_row(row) for row in x.tolist()], dtype=np.float64)
    diff = max(float(np.abs(together - expected).max()), float(np.abs(alone - expected).max()))
    if not diff <= PROBABILITY_ATOL:
        raise ArtifactError(
            f"model cannot be served: the folded logistic regression differs from the estimator by {diff:.3g}"
        )
    return diff
