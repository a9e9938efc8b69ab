"""The training workload. `save_model` is the one function a `[training] entry` script calls."""

from __future__ import annotations

from typing import Any


def save_model(estimator: Any, x_holdout: Any, y_holdout: Any, **kwargs: Any) -> dict[str, Any]:
    """See workloads.train.finish.save_model (imported here lazily: `train` must start fast)."""
    from workloads.train.finish import save_model as _save_model

    return _save_model(estimator, x_holdout, y_holdout, **kwargs)
