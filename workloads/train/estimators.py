"""The pipeline mlops.toml asks for: preprocessing for the data's column types, then the estimator.

Shapes (both convert to ONNX, see workloads/train/export.py):

  every feature numeric   Pipeline([imputer,] [scaler,] estimator) on a float matrix: one graph input
                          (the imputer only where the training data misses a value)
  some categorical        Pipeline(ColumnTransformer(numeric: imputer [+ scaler], categorical: one-hot),
                          estimator) on a pandas DataFrame: one graph input per feature column

Missing numbers are imputed with the training median; a missing category is the empty string, a
category of its own, and a category not seen in training encodes as all zeros (handle_unknown).
Only linear models get a scaler: trees split on raw values, and scaling in float32 (as ONNX does) next
to float64 (as scikit-learn does) would move values across split thresholds.
"""

from __future__ import annotations

import inspect
from typing import Any

from workloads.train.config import CLASSIFICATION, ConfigError, ProjectConfig

# Final step names; "classifier" is what artifacts of the seed already use.
FINAL_STEP = {"classification": "classifier", "regression": "regressor"}

# The label-encoding estimators: xgboost needs labels 0..k-1, and its ONNX converter (like lightgbm's)
# emits integer labels, so both are fit on class indices and the metadata maps them back.
INDEXED_LABELS = frozenset({"xgboost", "lightgbm"})

# What the platform sets unless mlops.toml says otherwise: today's logistic regression, and quiet,
# reproducible boosting.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "max_iter": 1000},
    "lightgbm": {"verbose": -1},
}


def _estimator_class(task: str, name: str) -> type:
    classification = task == CLASSIFICATION
    if name == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression
    if name == "linear_regression":
        from sklearn.linear_model import LinearRegression

        return LinearRegression
    if name == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        return RandomForestClassifier if classification else RandomForestRegressor
    if name == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        return HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
    if name == "xgboost":
        from xgboost import XGBClassifier, XGBRegressor

        return XGBClassifier if classification else XGBRegressor
    if name == "lightgbm":
        from lightgbm import LGBMClassifier, LGBMRegressor

        return LGBMClassifier if classification else LGBMRegressor
    raise ConfigError(f"[model] estimator {name!r} is not known")  # config.py already refused it


def _params(cls: type) -> set[str]:
    # get_params() of a default instance lists every settable parameter; xgboost/lightgbm also take
    # **kwargs, which would accept (and ignore) any typo, so only named parameters are allowed.
    try:
        return set(cls().get_params())
    except TypeError:  # pragma: no cover - every estimator above constructs without arguments
        return set(inspect.signature(cls).parameters)


def make_estimator(config: ProjectConfig) -> Any:
    cls = _estimator_class(config.task, config.estimator)
    known = _params(cls)
    unknown = sorted(set(config.hyperparameters) - known)
    if unknown:
        raise ConfigError(
            f"{config.source}: unknown key(s) {', '.join(f'[model.hyperparameters] {k}' for k in unknown)} "
            f"for {config.estimator} ({cls.__name__}); it takes {', '.join(sorted(known))}"
        )
    params = {**_DEFAULTS.get(config.estimator, {}), **config.hyperparameters}
    if "random_state" in known and "random_state" not in params:
        params["random_state"] = config.random_state
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config.source}: [model.hyperparameters]: {exc}") from None


def make_pipeline(
    config: ProjectConfig, feature_names: list[str], feature_types: list[str], *, impute: bool = True
) -> Any:
    """impute=False (numeric data without a missing value) keeps the seed's exact pipeline shape,
    [scaler,] estimator, which today's skops server and its fast path serve."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    estimator = make_estimator(config)
    linear = config.estimator in ("logistic_regression", "linear_regression")

    def numeric_steps() -> list[tuple[str, Any]]:
        steps: list[tuple[str, Any]] = [("imputer", SimpleImputer(strategy="median"))] if impute else []
        if linear:
            steps.append(("scaler", StandardScaler()))
        return steps

    final = (FINAL_STEP[config.task], estimator)
    if "string" not in feature_types:
        return Pipeline([*numeric_steps(), final])
    numeric = [n for n, t in zip(feature_names, feature_types, strict=True) if t == "number"]
    categorical = [n for n, t in zip(feature_names, feature_types, strict=True) if t == "string"]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps()), numeric))
    transformers.append(
        ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)
    )
    return Pipeline([("features", ColumnTransformer(transformers)), final])


def as_model_input(features: Any, feature_names: list[str], feature_types: list[str]) -> Any:
    """What the pipeline's fit/predict take: the float matrix, or a typed DataFrame when categorical."""
    if "string" not in feature_types:
        return features
    import numpy as np
    import pandas as pd

    return pd.DataFrame(
        {
            name: (features[:, j].astype(np.float64) if kind == "number" else features[:, j].astype(str))
            for j, (name, kind) in enumerate(zip(feature_names, feature_types, strict=True))
        },
        columns=feature_names,
    )
