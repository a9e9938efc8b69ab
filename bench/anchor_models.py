"""Save the fitted estimators serve_bench.py trained for the anchors it compares with, in their own venvs.

    bench/.out/mlflow-venv/bin/python bench/anchor_models.py mlflow SPEC.json
    bench/.out/mlserver-venv/bin/python bench/anchor_models.py mlserver SPEC.json
    <any venv>/bin/python bench/anchor_models.py versions

SPEC.json is a list of {"estimator": path of the joblib file serve_bench.py wrote (the very estimator our
ONNX artifact was exported from), "out": the directory to write, "name": the model's name, "sample":
feature rows (for MLflow's signature)}. Each anchor gets the estimator the way its own documentation
saves one:

  mlflow    mlflow.sklearn.save_model for a scikit-learn pipeline (MLflow 3's skops format, trusting the
            types the file holds, e.g. a forest's Tree); a pipeline that is nothing but an
            XGBClassifier or LGBMClassifier is saved as that model with mlflow.xgboost / mlflow.lightgbm.
            A signature inferred from the sample (a float64 tensor), pip requirements given (not inferred).
  mlserver  a model-settings.json per model: mlserver_sklearn.SKLearnModel on model.joblib (joblib.dump of
            the pipeline), mlserver_xgboost.XGBoostModel on model.json (XGBClassifier.save_model),
            mlserver_lightgbm.LightGBMModel on model.bst (the booster's save_model).

`versions` prints the versions of the libraries that decide whether the estimator unpickles and
predicts the same way, so serve_bench.py can refuse a venv that differs from the project's.
This file runs in venvs without the project, so it imports nothing from it.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("numpy", "scipy", "scikit-learn", "xgboost-cpu", "lightgbm", "joblib")


def versions() -> dict[str, str]:
    found = {}
    for dist in LIBRARIES:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "absent"
    return found


def _native(estimator: Any) -> tuple[str, Any]:
    """("xgboost" | "lightgbm", the booster model) when the pipeline is only that model, else ("sklearn", it)."""
    steps = getattr(estimator, "steps", None)
    final = steps[-1][1] if steps else estimator
    if steps is not None and len(steps) != 1:
        return "sklearn", estimator
    module = type(final).__module__
    if module.startswith("xgboost"):
        return "xgboost", final
    if module.startswith("lightgbm"):
        return "lightgbm", final
    return "sklearn", estimator


def save_mlflow(item: dict[str, Any]) -> str:
    import joblib
    import mlflow.lightgbm
    import mlflow.sklearn
    import mlflow.xgboost
    import numpy as np
    from mlflow.models import infer_signature

    estimator = joblib.load(item["estimator"])
    sample = np.asarray(item["sample"], dtype=np.float64)
    signature = infer_signature(sample, estimator.predict(sample))
    flavor, model = _native(estimator)
    pinned = [f"{name}=={version}" for name, version in versions().items() if version != "absent"]
    if flavor == "xgboost":
        mlflow.xgboost.save_model(model, item["out"], signature=signature, pip_requirements=pinned)
    elif flavor == "lightgbm":
        mlflow.lightgbm.save_model(model, item["out"], signature=signature, pip_requirements=pinned)
    else:
        # MLflow 3 saves scikit-learn models with skops, which loads only the types it is told to trust:
        # the ones this file holds beyond skops' defaults (a forest's Tree), since we made it ourselves.
        import skops.io

        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        mlflow.sklearn.save_model(
            model, item["out"], signature=signature, pip_requirements=pinned, skops_trusted_types=trusted
        )
    return f"mlflow.{flavor}"


def save_mlserver(item: dict[str, Any]) -> str:
    import joblib

    estimator = joblib.load(item["estimator"])
    out = Path(item["out"])
    out.mkdir(parents=True, exist_ok=True)
    flavor, model = _native(estimator)
    if flavor == "xgboost":
        model.save_model(out / "model.json")
        implementation, uri = "mlserver_xgboost.XGBoostModel", "./model.json"
    elif flavor == "lightgbm":
        model.booster_.save_model(out / "model.bst")
        implementation, uri = "mlserver_lightgbm.LightGBMModel", "./model.bst"
    else:
        joblib.dump(model, out / "model.joblib")
        implementation, uri = "mlserver_sklearn.SKLearnModel", "./model.joblib"
    settings = {
        "name": item["name"],
        "implementation": implementation,
        "parameters": {"uri": uri, "version": "1"},
    }
    (out / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return implementation


def main(argv: list[str]) -> int:
    if argv[:1] == ["versions"]:
        print(json.dumps(versions()))
        return 0
    if len(argv) != 2 or argv[0] not in ("mlflow", "mlserver"):
        print(__doc__, file=sys.stderr)
        return 2
    save = save_mlflow if argv[0] == "mlflow" else save_mlserver
    done = [save(item) for item in json.loads(Path(argv[1]).read_text())]
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
