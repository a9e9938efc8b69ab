"""Data sets of a user's own model, made from scikit-learn's bundled data (no download), written as the
CSV a user would commit: breast cancer with the label in the FIRST column, a categorical column and
missing values; diabetes for regression. Shared by tests/test_estimators.py, tests/test_serve_models.py
and tests/test_own_model_e2e.py."""

from __future__ import annotations

from pathlib import Path

CANCER_TARGET = "diagnosis"
DIABETES_TARGET = "progression"


def size_of(radius: float) -> str:
    return "large" if radius > 15 else "medium" if radius > 12 else "small"


def write_cancer_csv(path: Path) -> Path:
    """Label first; `size` categorical (from mean radius) with every 9th value missing; every 7th
    `mean texture` missing."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in data.feature_names[:5]]
    lines = [f"{CANCER_TARGET}," + ",".join(names) + ",size"]
    for i, (row, label) in enumerate(zip(data.data[:, :5], data.target, strict=True)):
        values = [f"{v:.6g}" for v in row]
        if i % 7 == 0:
            values[1] = ""
        size = "" if i % 9 == 0 else size_of(row[0])
        lines.append(",".join([str(data.target_names[label]), *values, size]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_diabetes_csv(path: Path) -> Path:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    lines = [",".join([*data.feature_names, DIABETES_TARGET])]
    lines += [
        ",".join([*(f"{v:.6g}" for v in row), f"{y:g}"])
        for row, y in zip(data.data, data.target, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
