"""The model server (workloads/serve/serve.py, its ASGI app in process) with a user's own models, built
by the platform's training: a classifier with a categorical feature and missing values (breast cancer,
label first) and a regressor (diabetes). Positional, named, context and CSV rows; nulls; the answers
against the exported model's own (which the build checked against the estimator); the errors.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from own_model_data import CANCER_TARGET, DIABETES_TARGET, write_cancer_csv, write_diabetes_csv

from workloads.onnx_model import OnnxModel, load_onnx_model
from workloads.serve.serve import ModelServer
from workloads.train import train as train_mod
from workloads.train.config import parse_config

CANCER_FEATURES = ["mean_radius", "mean_texture", "mean_perimeter", "mean_area", "mean_smoothness", "size"]
DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
# Rows as a client sends them: a category training never saw, missing numbers and categories.
CANCER_ROWS: list[list[Any]] = [
    [17.99, 10.38, 122.8, 1001.0, 0.1184, "large"],
    [13.54, 14.36, 87.46, 566.3, 0.09779, "medium"],
    [9.504, None, 60.34, 273.9, 0.1024, "small"],
    [11.42, 20.38, 77.58, 386.1, 0.1425, None],
    [20.57, 17.77, 132.9, 1326.0, 0.08474, "enormous"],
]
DIABETES_ROWS = [
    [0.0380759, 0.0506801, 0.0616962, 0.0218724, -0.0442235, -0.0348208, -0.0434008, -0.00259226, 0.0199075, -0.0176461],
    [-0.00188202, -0.0446416, -0.0514741, -0.0263275, -0.00844872, -0.0191633, 0.0744116, -0.0394934, -0.0683315, -0.092204],
]  # fmt: skip


def _train(tmp: Path, csv: Path, raw: dict[str, Any]) -> Path:
    model_dir = tmp / "model"
    train_mod.run(csv, model_dir, tmp / "out", {}, config=parse_config(raw, "mlops.toml"), log=lambda _: None)
    return model_dir


@pytest.fixture(scope="module")
def cancer_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cancer")
    csv = write_cancer_csv(tmp / "data" / "cancer.csv")
    return _train(
        tmp,
        csv,
        {
            "data": {"target": CANCER_TARGET},
            "model": {
                "task": "classification",
                "estimator": "random_forest",
                "hyperparameters": {"n_estimators": 8, "max_depth": 6},
            },
        },
    )


@pytest.fixture(scope="module")
def diabetes_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("diabetes")
    csv = write_diabetes_csv(tmp / "data" / "diabetes.csv")
    return _train(
        tmp,
        csv,
        {
            "data": {"target": DIABETES_TARGET},
            "model": {
                "task": "regression",
                "estimator": "random_forest",
                "hyperparameters": {"n_estimators": 8, "max_depth": 6},
            },
            "gate": {"metric": "r2", "min": 0.0},
        },
    )


def _server(model_dir: Path) -> ModelServer:
    app = ModelServer(str(model_dir), "5", 6 * 1024 * 1024)
    app.load()
    assert app.model is not None, app.not_ready
    return app


@pytest.fixture(scope="module")
def cancer(cancer_model: Path) -> tuple[ModelServer, OnnxModel]:
    return _server(cancer_model), load_onnx_model(cancer_model)


@pytest.fixture(scope="module")
def diabetes(diabetes_model: Path) -> tuple[ModelServer, OnnxModel]:
    return _server(diabetes_model), load_onnx_model(diabetes_model)


def _invoke(
    app: ModelServer, body: bytes | str, content_type: str = "application/json", accept: str | None = None
) -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []
    data = body.encode() if isinstance(body, str) else body

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    headers = [(b"content-type", content_type.encode())]
    if accept is not None:
        headers.append((b"accept", accept.encode()))
    scope = {"type": "http", "path": "/invocations", "method": "POST", "headers": headers}
    asyncio.run(app(scope, receive, send))
    raw = sent[1]["body"]
    is_json = dict(sent[0]["headers"])[b"content-type"] == b"application/json"
    return sent[0]["status"], orjson.loads(raw) if is_json else raw.decode()


def _same(answers: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    """The same labels and, within float32 rounding, the same probabilities or values."""
    assert len(answers) == len(expected)
    for got, want in zip(answers, expected, strict=True):
        assert got.keys() == want.keys()
        if "value" in want:
            assert got["value"] == pytest.approx(want["value"], rel=1e-6)
        else:
            assert got["label"] == want["label"]
            assert list(got["probabilities"]) == list(want["probabilities"])
            assert list(got["probabilities"].values()) == pytest.approx(
                list(want["probabilities"].values()), abs=1e-6
            )
    return True


def _named(rows: list[list[Any]], names: list[str]) -> list[dict[str, Any]]:
    # Reversed key order: names, not positions, decide.
    return [dict(reversed(list(zip(names, row, strict=True)))) for row in rows]


def _text(rows: list[list[Any]]) -> str:
    return "\n".join(",".join("" if v is None else str(v) for v in row) for row in rows)


# --- a classifier with a categorical feature -------------------------------------------------------


def test_the_signature_is_the_models(cancer: tuple[ModelServer, OnnxModel]) -> None:
    app, _ = cancer
    assert app.model is not None
    signature = app.model.signature
    assert list(signature.names) == CANCER_FEATURES
    assert signature.types == ("number",) * 5 + ("string",)
    assert signature.missing_numbers is True  # the training data missed some; the pipeline imputes


def test_categorical_rows_in_every_form_get_the_models_answers(cancer: tuple[ModelServer, OnnxModel]) -> None:
    app, onnx = cancer
    expected = onnx.predict(CANCER_ROWS)
    assert {a["label"] for a in expected} <= {"benign", "malignant"}
    bodies = {
        "positional": json.dumps({"instances": CANCER_ROWS}),
        "named": json.dumps({"instances": _named(CANCER_ROWS, CANCER_FEATURES)}),
        "mixed": json.dumps({"instances": [CANCER_ROWS[0], *_named(CANCER_ROWS[1:], CANCER_FEATURES)]}),
        "context": json.dumps({"context": _text(CANCER_ROWS)}),
    }
    for form, body in bodies.items():
        status, answer = _invoke(app, body)
        assert status == 200, (form, answer)
        assert answer["model_version"] == "5"
        assert _same(answer["predictions"], expected), form
    status, answer = _invoke(app, _text(CANCER_ROWS) + "\n", "text/csv")
    assert status == 200 and _same(answer["predictions"], expected)
    status, text = _invoke(app, _text(CANCER_ROWS), "text/csv", accept="text/csv")
    assert status == 200
    lines = [line.split(",") for line in text.splitlines()]
    from_csv = [
        {
            "label": line[0],
            "probabilities": dict(zip(["benign", "malignant"], map(float, line[1:]), strict=True)),
        }
        for line in lines
    ]
    assert _same(from_csv, expected)


def test_a_category_is_read_as_training_reads_it(cancer: tuple[ModelServer, OnnxModel]) -> None:
    app, onnx = cancer
    row = CANCER_ROWS[0]
    # Any token of a categorical feature is a category ("1" is the category "1"); spaces around it and
    # the tokens training reads as missing ("NA") are read as training reads them.
    for text, category in (("1", "1"), ("  large ", "large"), ("NA", None), ("", None)):
        status, answer = _invoke(app, json.dumps({"context": _text([row[:5]]) + "," + text}))
        assert status == 200, answer
        assert _same(answer["predictions"], onnx.predict([[*row[:5], category]]))
        status, answer = _invoke(app, json.dumps({"instances": [[*row[:5], text]]}))
        assert _same(answer["predictions"], onnx.predict([[*row[:5], category]]))
    # A missing number is imputed as in training (the training median), not refused.
    status, answer = _invoke(app, json.dumps({"instances": [[None] * 6]}))
    assert status == 200 and _same(answer["predictions"], onnx.predict([[None] * 6]))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[17.99, "10.38", 122.8, 1001, 0.1184, "large"]]},
         'row 1, column 2 (mean_texture): expected a number, got a string "10.38"'),
        ({"instances": [[17.99, 10.38, 122.8, 1001, 0.1184, 3]]},
         'row 1, column 6 (size): expected a string (the category), got a number 3; send the category as '
         'text, e.g. "1"'),
        ({"instances": [[17.99, 10.38, 122.8, 1001, 0.1184, True]]},
         "row 1, column 6 (size): expected a string (the category), got a boolean true"),
        ({"instances": [[17.99, 10.38, 122.8, 1001, 0.1184]]},
         "row 1 has 5 values; the model expects 6 (mean_radius, mean_texture, mean_perimeter, mean_area, "
         "mean_smoothness, size)"),
        ({"instances": [{"mean_radius": 17.99, "size": "large"}]},
         "row 1: feature 'mean_texture' and 3 more not named; a row names every feature (null for a missing "
         "value): mean_radius, mean_texture, mean_perimeter, mean_area, mean_smoothness, size"),
        ({"instances": [dict(zip(CANCER_FEATURES, CANCER_ROWS[0], strict=True)), {"radius": 1}]},
         "row 2: unknown feature 'radius'; the model's features are mean_radius, mean_texture, "
         "mean_perimeter, mean_area, mean_smoothness, size"),
        ({"instances": [{**dict(zip(CANCER_FEATURES, CANCER_ROWS[0], strict=True)), "size": ["large"]}]},
         "row 1, feature 'size': expected a string (the category), got a list [\"large\"]"),
        ({"context": "17.99, abc, 122.8, 1001, 0.1184, large"},
         "row 1, column 2 (mean_texture): 'abc' is not a number (no header row: every line is a row of values)"),
        ({"context": "17.99, 10.38, 122.8, 1001, nan, large"},
         "row 1, column 5 (mean_smoothness): 'nan' is not a number (no header row: every line is a row of "
         "values)"),
        ({"context": '17.99, 10.38, 122.8, 1001, 0.1184, "large"'},
         "row 1, column 6 (size): '\"large\"' holds a quote; text rows are not quoted (write a category "
         'bare, or send one holding a comma or a quote in "instances")'),
        # Half a UTF-16 surrogate pair, "\\ud800" in the JSON: valid JSON, but no text (no UTF-8) holds it.
        ({"context": "17.99, 10.38, 122.8, 1001, 0.1184, \ud800"},
         "row 1, column 6 (size): '\\ud800' is not text: it holds half of a UTF-16 surrogate pair"),
        ({"context": "17.99, \udfff, 122.8, 1001, 0.1184, large"},
         "row 1, column 2 (mean_texture): '\\udfff' is not a number"),
        ({"instances": [CANCER_ROWS[0], [17.99, 10.38, 122.8, 1001, 0.1184, "x\ud800"]]},
         "row 2, column 6 (size): 'x\\ud800' is not text: it holds half of a UTF-16 surrogate pair"),
        ({"instances": [{**dict(zip(CANCER_FEATURES, CANCER_ROWS[0], strict=True)), "size": "\ud800"}]},
         "row 1, feature 'size': '\\ud800' is not text: it holds half of a UTF-16 surrogate pair"),
        ({"instances": [[17.99, "\ud800", 122.8, 1001, 0.1184, "large"]]},
         "row 1, column 2 (mean_texture): '\\ud800' is not text: it holds half of a UTF-16 surrogate pair"),
        ({"instances": [[17.99, 10.38, 122.8, 1001, 0.1184, ["\ud800"]]]},
         'row 1, column 6 (size): expected a string (the category), got a list ["\\ud800"]'),
    ],
)  # fmt: skip
def test_values_of_the_wrong_type_are_a_400_naming_row_and_feature(
    cancer: tuple[ModelServer, OnnxModel], body: dict[str, Any], message: str
) -> None:
    status, answer = _invoke(cancer[0], json.dumps(body))
    assert (status, answer) == (400, {"error": message})


# --- a regressor -----------------------------------------------------------------------------------


def test_a_regressor_answers_value_per_row_in_every_form(diabetes: tuple[ModelServer, OnnxModel]) -> None:
    app, onnx = diabetes
    expected = [a["value"] for a in onnx.predict(DIABETES_ROWS)]
    assert all(25 <= v <= 346 for v in expected)  # the target's range
    bodies = [
        json.dumps({"instances": DIABETES_ROWS}),
        json.dumps({"instances": _named(DIABETES_ROWS, DIABETES_FEATURES)}),
        json.dumps({"context": _text(DIABETES_ROWS)}),
    ]
    for body in bodies:
        status, answer = _invoke(app, body)
        assert status == 200, answer
        assert set(answer) == {"model_version", "predictions"}
        assert [set(p) for p in answer["predictions"]] == [{"value"}, {"value"}]
        assert [p["value"] for p in answer["predictions"]] == pytest.approx(expected, rel=1e-6)
    # One row goes through the single-row path.
    status, answer = _invoke(app, json.dumps({"instances": DIABETES_ROWS[:1]}))
    assert answer["predictions"] == [{"value": pytest.approx(expected[0], rel=1e-6)}]
    status, text = _invoke(app, _text(DIABETES_ROWS), "text/csv", accept="text/csv")
    assert status == 200
    assert [float(v) for v in text.splitlines()] == pytest.approx(expected, rel=1e-6)


def test_a_big_regression_batch_encodes_like_the_row_by_row_answers(
    diabetes: tuple[ModelServer, OnnxModel],
) -> None:
    app, onnx = diabetes
    rows = DIABETES_ROWS * 40  # past codec.BATCH_ENCODE_ROWS: the columnar encoder
    status, answer = _invoke(app, json.dumps({"instances": rows}))
    assert status == 200
    assert _same(answer["predictions"], onnx.predict(rows))
    status, text = _invoke(app, _text(rows), "text/csv", accept="text/csv")
    assert _same([{"value": float(v)} for v in text.splitlines()], onnx.predict(rows))


def test_a_model_trained_without_missing_numbers_refuses_one(diabetes: tuple[ModelServer, OnnxModel]) -> None:
    app, _ = diabetes
    assert app.model is not None and app.model.signature.missing_numbers is False
    row: list[Any] = list(DIABETES_ROWS[0])
    row[2] = None
    status, answer = _invoke(app, json.dumps({"instances": [row]}))
    assert (status, answer) == (
        400,
        {
            "error": "row 1, column 3 (bmi): the value is missing; this model was trained without missing "
            "values and cannot score one: send a number"
        },
    )
    status, answer = _invoke(app, "1,2,,4,5,6,7,8,9,10", "text/csv")
    assert status == 400 and answer["error"].startswith("row 1, column 3 (bmi): the value is missing")
    named = dict(zip(DIABETES_FEATURES, DIABETES_ROWS[0], strict=True))
    del named["bmi"]
    status, answer = _invoke(app, json.dumps({"instances": [named]}))
    assert (status, answer["error"]) == (
        400,
        "row 1: feature 'bmi' not named; a row names every feature: age, sex, bmi, bp, s1, s2, s3, s4, s5, s6",
    )
