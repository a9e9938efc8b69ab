"""The one set of rules for the rows of an inference request, used by every part that reads them.

The inference API (this Lambda, and the local platform's POST /predict through it) and the model server
(workloads/serve/serve.py, through codec.py, for its JSON and CSV bodies) read rows with these functions,
so a body one of them accepts the others accept too, with the same numbers. The model server's fast
paths accept only bodies these rules accept, with the same values (tests/test_serve.py checks).

Text rows (`context`, and text/csv bodies): one row per line (LF or CRLF), values separated by commas,
spaces and tabs around a value ignored. A value is an ASCII decimal number: an optional sign, digits
with an optional decimal point (`5`, `5.`, `5.1`, `.5`) and an optional exponent (`5e-3`). Refused:
anything else, in particular non-ASCII digits (Python's float() reads "\\u0665.\\u0661", Arabic-Indic digits, as 5.1), `1_0` (float()
reads 10), quotes (a number never needs them, and an unterminated one would swallow rows), `nan`,
`inf` and numbers too large for a float (`1e999`). Blank lines at the end are ignored; any other blank
line is refused, because answers come one per row in order and a skipped line would shift them.

JSON rows (`instances`): a non-empty list of non-empty lists of JSON numbers (not booleans), finite as
64-bit floats. NaN and Infinity are refused: JSON has no such numbers, a model scores them as garbage
or NaN probabilities, and refusing them keeps the API and the model server alike.

Every row has the same number of values (the model's, when the caller knows it). Errors are
InputError, naming the 1-based row and column; a bad value is quoted only by its first SHOWN_CHARS
characters with its length, so a megabyte of nonsense does not come back as a megabyte of error.

Standard library only: this file ships in the Lambda zip beside handler.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

# [0-9], not \d: \d matches every Unicode decimal digit.
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
NUMBER = re.compile(_NUMBER)
# A whole line of numbers: one match per line instead of one per value (a 6 MiB body has 1.5 million).
_LINE = re.compile(rf"[ \t]*{_NUMBER}[ \t]*(?:,[ \t]*{_NUMBER}[ \t]*)*")
# How much of a bad value an error message quotes.
SHOWN_CHARS = 40
FIELDS = ("instances", "context")
_FORMS = '{"instances": [[5.1, 3.5, 1.4, 0.2]]} or {"context": "5.1, 3.5, 1.4, 0.2"}'


class InputError(ValueError):
    """The rows cannot be read; `message` says why (a 400 for every caller)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def shown(value: str) -> str:
    """value quoted, cut to its first SHOWN_CHARS characters (saying how long it was) if longer."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"


def shown_json(value: Any) -> str:
    """A decoded JSON value as JSON text, cut like shown()."""
    text = json.dumps(value, ensure_ascii=False)
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _check_width(row: int, n_values: int, width: int, feature_names: Sequence[str] | None) -> None:
    if n_values == width:
        return
    plural = "s" if n_values != 1 else ""
    if feature_names is not None:
        raise InputError(
            f"row {row} has {n_values} value{plural}; the model expects {width} ({', '.join(feature_names)})"
        )
    raise InputError(f"row {row} has {n_values} value{plural}; row 1 has {width}")


def rows_from_text(text: str, feature_names: Sequence[str] | None = None) -> list[list[float]]:
    """Rows of comma-separated numbers, one per line. feature_names: the width every row must have."""
    lines = text.rstrip(" \t\r\n").split("\n")
    if lines == [""]:
        raise InputError("no rows: the input is empty")
    width = len(feature_names) if feature_names is not None else None
    rows: list[list[float]] = []
    for row_number, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if not line.strip(" \t"):
            raise InputError(f"row {row_number} is empty")
        fields = line.split(",")
        if width is None:
            width = len(fields)
        _check_width(row_number, len(fields), width, feature_names)
        if _LINE.fullmatch(line):
            # float() ignores the spaces and tabs the pattern allows around a value.
            row = [float(field) for field in fields]
            if all(map(math.isfinite, row)):
                rows.append(row)
                continue
        row = []
        for column, field in enumerate(fields, start=1):
            token = field.strip(" \t")
            if not NUMBER.fullmatch(token):
                hint = ""
                if row_number == 1 and any(c.isalpha() for c in token[:SHOWN_CHARS]):
                    hint = " (no header row: every line is a row of numbers)"
                raise InputError(f"row {row_number}, column {column}: {shown(token)} is not a number{hint}")
            value = float(token)
            if not math.isfinite(value):
                raise InputError(
                    f"row {row_number}, column {column}: {shown(token)} is not a finite number "
                    "(too large for a 64-bit float)"
                )
            row.append(value)
        rows.append(row)
    return rows


def rows_from_document(document: Any, feature_names: Sequence[str] | None = None) -> list[list[float]]:
    """Rows from a decoded JSON body: {"instances": [[...], ...]} or {"context": "..."}."""
    if not isinstance(document, dict):
        raise InputError(f"the JSON body must be an object, not {json_type(document)}: {_FORMS}")
    unknown = [key for key in document if key not in FIELDS]
    if unknown:
        raise InputError(f"unknown field {shown(str(unknown[0]))}: send exactly one of {_FORMS}")
    if len(document) != 1:
        why = "both 'instances' and 'context'" if document else "no rows"
        raise InputError(f"{why}: send exactly one of {_FORMS}")
    if "context" in document:
        context = document["context"]
        if not isinstance(context, str):
            raise InputError(
                f"'context' must be a string of comma-separated numbers, not {json_type(context)}"
            )
        return rows_from_text(context, feature_names)
    instances = document["instances"]
    if not isinstance(instances, list):
        raise InputError(f"'instances' must be a list of rows, not {json_type(instances)}")
    if not instances:
        raise InputError("no rows: 'instances' is empty")
    width = len(feature_names) if feature_names is not None else None
    rows: list[list[float]] = []
    for row_number, instance in enumerate(instances, start=1):
        if not isinstance(instance, list):
            raise InputError(f"row {row_number} must be a list of numbers, not {json_type(instance)}")
        if not instance:
            raise InputError(f"row {row_number} is empty")
        if width is None:
            width = len(instance)
        _check_width(row_number, len(instance), width, feature_names)
        row: list[float] = []
        for column, value in enumerate(instance, start=1):
            # bool is an int subclass in Python; true/false are not feature values.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(
                    f"row {row_number}, column {column}: expected a number, got {json_type(value)} "
                    f"{shown_json(value)}"
                )
            try:
                number = float(value)
            except OverflowError:  # an integer beyond the float range
                number = math.inf
            if not math.isfinite(number):
                raise InputError(
                    f"row {row_number}, column {column}: the number is not finite (too large for a 64-bit float)"
                )
            row.append(number)
        rows.append(row)
    return rows


def _refuse_constant(name: str) -> float:
    raise InputError(f"the body has {name}, which is not a finite number")


def decode_json(raw: bytes) -> Any:
    """The decoded JSON document of a body, or InputError saying why it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"the body is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InputError("the body is nested too deeply") from None
    except InputError:
        raise
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit conversion limit
        raise InputError(f"the body has a value that cannot be read: {str(exc)[:200]}") from None


def rows_from_json(raw: bytes, feature_names: Sequence[str] | None = None) -> list[list[float]]:
    """Rows of a JSON body (bytes as received)."""
    return rows_from_document(decode_json(raw), feature_names)
