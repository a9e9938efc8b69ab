"""Holdout metrics and the evaluation report (evaluation.json, SageMaker Model Registry style)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], n_train: int
) -> dict[str, Any]:
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


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_train: int) -> dict[str, Any]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "r2": float(r2_score(y_true, y_pred)),
        "rmse": math.sqrt(float(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "n_train": n_train,
        "n_test": len(y_true),
    }


def regression_report(y_true: np.ndarray, metrics: dict[str, Any]) -> dict[str, Any]:
    """evaluation.json for a regressor, in Model Registry's regression_metrics shape."""

    def stat(value: float) -> dict[str, Any]:
        return {"value": float(value), "standard_deviation": "NaN"}

    return {
        "version": 0.0,
        "dataset": {"item_count": len(y_true), "evaluation": "random holdout"},
        "regression_metrics": {
            "r2": stat(metrics["r2"]),
            "rmse": stat(metrics["rmse"]),
            "mae": stat(metrics["mae"]),
            "mse": stat(metrics["rmse"] ** 2),
            # What always answering the holdout mean would score: the floor a model must beat.
            "rmse_best_constant_regressor": stat(float(np.std(y_true))),
        },
    }
