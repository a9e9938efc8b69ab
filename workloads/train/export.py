"""Export a fitted pipeline to ONNX: a graph of standard operators, data only, run by onnxruntime.

Why ONNX: loading an .onnx file parses a protobuf and builds operators from a fixed set, so it cannot
run code, for every estimator mlops.toml can name (skops had to trust each type, and refused the
trees of a RandomForest only at deployment); and the server then needs onnxruntime and numpy, not
scikit-learn, xgboost or lightgbm, so it starts faster and its image does less per request.

Route: skl2onnx (the scikit-learn project's converter, maintained under onnx/) converts the pipeline;
the xgboost and lightgbm estimators inside it use onnxmltools' converters (same maintainers), plugged
in with update_registered_converter exactly as skl2onnx documents. Inputs are float32, as onnxruntime's
tree operators compute; the build checks the exported answers against the estimator (artifact_check).
"""

from __future__ import annotations

import warnings
from typing import Any

# ai.onnx.ml 3 has every operator these converters emit; 17 is the default domain they target.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
NUMBER = "number"


# Operators that compute each row from that row alone by tree walks, indexing, copies or per-element
# maps: scoring rows together gives every row the same bits as scoring it alone. Not a matrix product
# (LinearClassifier, LinearRegressor, Gemm, MatMul): its kernels block by batch size, so its sums round
# differently in a batch (up to ~3e-7 for the iris logistic regression).
ROW_BY_ROW_OPS = frozenset(
    {
        "TreeEnsembleClassifier",
        "TreeEnsembleRegressor",
        "TreeEnsemble",
        "Identity",
        "Cast",
        "Concat",
        "Gather",
        "Reshape",
        "Flatten",
        "Imputer",
        "OneHotEncoder",
        "LabelEncoder",
        "Binarizer",
        "ArrayFeatureExtractor",
    }
)


def row_by_row(onnx: bytes) -> bool:
    """Whether every node of the graph is one of ROW_BY_ROW_OPS."""
    import onnx as onnx_lib

    return all(node.op_type in ROW_BY_ROW_OPS for node in onnx_lib.load_model_from_string(onnx).graph.node)


class ExportError(Exception):
    """The fitted estimator cannot be expressed as an ONNX graph."""


_registered = False


def _register_boosting_converters() -> None:
    global _registered
    if _registered:
        return
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options=classifier_options,
    )
    update_registered_converter(
        XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
    )
    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options=classifier_options,
    )
    update_registered_converter(
        LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        convert_lightgbm,
        options={"split": None},
    )
    _registered = True


def graph_inputs(feature_names: list[str], feature_types: list[str]) -> list[tuple[str, Any]]:
    """The graph's inputs: one float matrix when every feature is numeric, else one input per column
    (in feature order: the loader feeds them by position, since skl2onnx may rename them)."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if all(t == NUMBER for t in feature_types):
        return [("input", FloatTensorType([None, len(feature_names)]))]
    return [
        (name, FloatTensorType([None, 1]) if kind == NUMBER else StringTensorType([None, 1]))
        for name, kind in zip(feature_names, feature_types, strict=True)
    ]


def to_onnx(estimator: Any, feature_names: list[str], feature_types: list[str]) -> bytes:
    """The serialized ONNX model of a fitted estimator (a Pipeline or a bare estimator)."""
    from skl2onnx import convert_sklearn
    from sklearn.base import is_classifier

    _register_boosting_converters()
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    # zipmap off: probabilities as one float tensor in class order, not a list of dicts per row.
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    try:
        with warnings.catch_warnings():
            # onnx warns about how the converters encode boolean attributes; not ours to fix or show.
            warnings.simplefilter("ignore", DeprecationWarning)
            model = convert_sklearn(
                estimator,
                initial_types=graph_inputs(feature_names, feature_types),
                options=options,
                target_opset=TARGET_OPSET,
            )
    except Exception as exc:  # skl2onnx raises many types for what it cannot convert
        first = " ".join(str(exc).split())[:300]
        raise ExportError(
            f"cannot export {type(final).__name__} to ONNX: {type(exc).__name__}: {first}"
        ) from exc
    data: bytes = model.SerializeToString()
    return data
