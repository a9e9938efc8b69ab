"""The one set of rules for the rows of an inference request, used by every part that reads them.

The inference API (this Lambda, and the local platform's POST /predict through it) and the model server
(workloads/serve/serve.py, through codec.py, for its JSON and CSV bodies) read rows with these functions,
so a body one of them accepts the others accept too. The model server knows the model's signature
(metadata.json `features`: names, types number|string, order; and whether missing numbers are imputed)
and passes it as `Signature`; the API does not know the model, so it checks only what holds for every
model (the body's shape, one form per value) and forwards the body as received, and the model server
answers the rest with a 400 that the API passes on. The model server's fast paths accept only bodies
these rules accept, with the same values (tests/test_serve.py checks).

JSON rows (`instances`): a non-empty list of rows, each either a list of values in the model's feature
order (`[5.1, 3.5, 1.4, 0.2]`) or an object naming every feature (`{"sepal_length": 5.1, ...}`; an
unknown name, a feature left out or named twice, is refused: null is how a missing value is sent). A value is a JSON
number, finite as a 64-bit float, for a numeric feature; a JSON string (the category, spaces around it
ignored as training ignores them) for a categorical one; or null, a missing value. Booleans, lists and
objects are never values, nor is a string holding half of a UTF-16 surrogate pair (`"\\ud800"`, valid
JSON but not text: no model can encode it, in `instances` or in `context`); NaN and Infinity are
refused: JSON has no such numbers, a model scores them as garbage or NaN probabilities, and refusing
them keeps the API and the model server alike.

Text rows (`context`, and text/csv bodies): one row per line (LF or CRLF), values separated by commas,
spaces and tabs around a value ignored, no header and no quoting. For a numeric feature a value is an
ASCII decimal number: an optional sign, digits with an optional decimal point (`5`, `5.`, `5.1`, `.5`)
and an optional exponent (`5e-3`). Refused: anything else, in particular non-ASCII digits (Python's
float() reads "\\u0665.\\u0661", Arabic-Indic digits, as 5.1), `1_0` (float() reads 10), `nan`, `inf`
and numbers too large for a float (`1e999`). For a categorical feature any token is the category as
written ("1" is the category "1"). Quotes are refused in every value: rows are not CSV-quoted, so a
quoted category would silently be another category, and an unterminated quote would swallow rows (a
category holding a comma or a quote goes in `instances`). An empty field is a missing value. Blank
lines at the end are ignored; any other blank line is refused, because answers come one per row in
order and a skipped line would shift them.

Missing values (JSON null, an empty field; for a categorical feature also the tokens training reads as
missing, MISSING_TOKENS) are read as training reads them: a missing category is one of its own, and a
missing number is filled in by the model's imputer. A model trained without an imputer cannot score a
missing number, so for it one is refused (`Signature.missing_numbers`).

Every row has the same number of values: the model's (when the caller knows it), else row 1's. Errors
are InputError, naming the 1-based row and column (and the feature, where the model is known); a bad
value is quoted only by its first SHOWN_CHARS characters with its length, so a megabyte of nonsense
does not come back as a megabyte of error.

Standard library only: this file ships in the Lambda zip beside handler.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# [0-9], not \d: \d matches every Unicode decimal digit.
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
NUMBER = re.compile(_NUMBER)
# A whole line of numbers: one match per line instead of one per value (a 6 MiB body has 1.5 million).
_LINE = re.compile(rf"[ \t]*{_NUMBER}[ \t]*(?:,[ \t]*{_NUMBER}[ \t]*)*")
# How much of a bad value an error message quotes.
SHOWN_CHARS = 40
# How many feature names an error lists before it says how many more there are.
SHOWN_NAMES = 12
FIELDS = ("instances", "context")
_FORMS = '{"instances": [[5.1, 3.5, 1.4, 0.2]]} or {"context": "5.1, 3.5, 1.4, 0.2"}'
# Feature types, as metadata.json `features` writes them.
NUMBER_FEATURE = "number"
STRING_FEATURE = "string"
# What training (workloads/train/dataset.py) reads as "no value" in a CSV: spreadsheets' and pandas'
# spellings. For a categorical feature a request's value among them is missing too, as in training.
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL"})


class InputError(ValueError):
    """The rows cannot be read; `message` says why (a 400 for every caller)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Signature:
    """What the model takes: its features' names and types in input order, and whether a missing
    number can be scored (the model imputes it). Built by the model server from metadata.json."""

    names: tuple[str, ...]
    types: tuple[str, ...]
    missing_numbers: bool = False
    numeric: bool = field(init=False)  # every feature a number: rows become one float matrix
    position: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.types):
            raise ValueError(f"{len(self.names)} feature names but {len(self.types)} types")
        unknown = sorted(set(self.types) - {NUMBER_FEATURE, STRING_FEATURE})
        if unknown:
            raise ValueError(f"unknown feature type(s) {', '.join(unknown)}; known: number, string")
        object.__setattr__(self, "numeric", STRING_FEATURE not in self.types)
        object.__setattr__(self, "position", {name: j for j, name in enumerate(self.names)})

    @classmethod
    def of(cls, features: Iterable[Mapping[str, Any]], *, missing_numbers: bool = False) -> Signature:
        """From metadata.json `features` ([{"name", "type"}, ...])."""
        listed = list(features)
        return cls(
            tuple(str(f["name"]) for f in listed),
            tuple(str(f.get("type", NUMBER_FEATURE)) for f in listed),
            missing_numbers,
        )

    @classmethod
    def numbers(cls, names: Sequence[str]) -> Signature:
        """Every feature a number, none missing: what a model that only names its features takes."""
        return cls(tuple(names), (NUMBER_FEATURE,) * len(names))

    @property
    def width(self) -> int:
        return len(self.names)

    def listed(self) -> str:
        """The feature names for a message, the first SHOWN_NAMES of them."""
        if len(self.names) <= SHOWN_NAMES:
            return ", ".join(self.names)
        return f"{', '.join(self.names[:SHOWN_NAMES])}, ... ({len(self.names)} features)"


SignatureLike = Signature | Sequence[str] | None


def as_signature(signature: SignatureLike) -> Signature | None:
    """A Signature, None (the model is not known), or a list of names (all numeric) made into one."""
    if signature is None or isinstance(signature, Signature):
        return signature
    return Signature.numbers(signature)


def shown(value: str) -> str:
    """value quoted, cut to its first SHOWN_CHARS characters (saying how long it was) if longer."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"


def utf8(text: str) -> bool:
    """Whether text can be written as UTF-8. A JSON escape of half a UTF-16 pair (`"\\ud800"`) decodes
    to a lone surrogate, which cannot: no model can score it, nor an answer quote it unescaped."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_json(value: Any) -> str:
    """A decoded JSON value as JSON text, cut like shown()."""
    text = json.dumps(value, ensure_ascii=False)
    if not utf8(text):
        text = json.dumps(value)  # a lone surrogate stays escaped
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


def _check_width(row: int, n_values: int, width: int, signature: Signature | None) -> None:
    if n_values == width:
        return
    plural = "s" if n_values != 1 else ""
    if signature is not None:
        raise InputError(
            f"row {row} has {n_values} value{plural}; the model expects {width} ({signature.listed()})"
        )
    raise InputError(f"row {row} has {n_values} value{plural}; row 1 has {width}")


def _column(row: int, column: int, signature: Signature | None) -> str:
    """Where a positional value is: the row and column, and the feature's name where it is known."""
    if signature is None:
        return f"row {row}, column {column}"
    return f"row {row}, column {column} ({signature.names[column - 1]})"


def _missing_number(where: str) -> InputError:
    return InputError(
        f"{where}: the value is missing; this model was trained without missing values and cannot "
        "score one: send a number"
    )


def _text(value: str, where: str) -> str:
    """value, if it is text: InputError for a lone surrogate (see utf8())."""
    if not utf8(value):
        raise InputError(f"{where}: {shown(value)} is not text: it holds half of a UTF-16 surrogate pair")
    return value


def _quoted(where: str, token: str) -> InputError:
    return InputError(
        f"{where}: {shown(token)} holds a quote; text rows are not quoted (write a category bare, or "
        'send one holding a comma or a quote in "instances")'
    )


def _text_value(token: str, where: str, kind: str | None, missing_numbers: bool, header_hint: str) -> Any:
    """One stripped text token: a float, a category (str), or None (missing). kind None: the model is
    not known, so only what holds for every feature is checked (a number reads as a float)."""
    if kind == NUMBER_FEATURE:
        if not token:
            if missing_numbers:
                return None
            raise _missing_number(where)
        if not NUMBER.fullmatch(token):
            hint = header_hint if any(c.isalpha() for c in token[:SHOWN_CHARS]) else ""
            raise InputError(f"{where}: {shown(token)} is not a number{hint}")
        value = float(token)
        if not math.isfinite(value):
            raise InputError(f"{where}: {shown(token)} is not a finite number (too large for a 64-bit float)")
        return value
    if '"' in token:
        raise _quoted(where, token)
    _text(token, where)
    if kind == STRING_FEATURE:
        return None if token in MISSING_TOKENS else token
    if not token:
        return None
    if NUMBER.fullmatch(token):
        number = float(token)
        return number if math.isfinite(number) else token
    return token


def rows_from_text(text: str, signature: SignatureLike = None) -> list[list[Any]]:
    """Rows of comma-separated values, one per line. With the model's signature: its width and types,
    values in feature order (float, str, None for missing); without it: row 1's width."""
    sig = as_signature(signature)
    lines = text.rstrip(" \t\r\n").split("\n")
    if lines == [""]:
        raise InputError("no rows: the input is empty")
    width = sig.width if sig is not None else None
    numbers_only = sig is None or sig.numeric
    missing = sig is not None and sig.missing_numbers
    # Said of a word in row 1 where a number belongs: most likely a header line.
    header_hint = f" (no header row: every line is a row of {'numbers' if numbers_only else 'values'})"
    rows: list[list[Any]] = []
    for row_number, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if not line.strip(" \t"):
            raise InputError(f"row {row_number} is empty")
        fields = line.split(",")
        if width is None:
            width = len(fields)
        _check_width(row_number, len(fields), width, sig)
        if numbers_only and _LINE.fullmatch(line):
            # float() ignores the spaces and tabs the pattern allows around a value.
            row = [float(field) for field in fields]
            if all(map(math.isfinite, row)):
                rows.append(row)
                continue
        rows.append(
            [
                _text_value(
                    field.strip(" \t"),
                    _column(row_number, column, sig),
                    sig.types[column - 1] if sig is not None else None,
                    missing,
                    header_hint if row_number == 1 else "",
                )
                for column, field in enumerate(fields, start=1)
            ]
        )
    return rows


def _json_value(value: Any, where: str, kind: str | None, missing_numbers: bool) -> Any:
    """One decoded JSON value: a float, a category (str), or None (missing)."""
    if value is None:
        if kind == NUMBER_FEATURE and not missing_numbers:
            raise _missing_number(where)
        return None
    # bool is an int subclass in Python; true/false are not feature values.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        expected = {NUMBER_FEATURE: "a number", STRING_FEATURE: "a string (the category)"}.get(
            kind or "", "a number, a string or null"
        )
        raise InputError(f"{where}: expected {expected}, got {json_type(value)} {shown_json(value)}")
    if isinstance(value, str):
        _text(value, where)
        if kind == NUMBER_FEATURE:
            raise InputError(f"{where}: expected a number, got a string {shown_json(value)}")
        if kind == STRING_FEATURE:
            # Training strips every CSV field, and reads its missing tokens as no value.
            category = value.strip()
            return None if category in MISSING_TOKENS else category
        return value
    if kind == STRING_FEATURE:
        # Which text is meant is not sure (1.50 arrives as 1.5), so a category is sent as a string.
        raise InputError(
            f"{where}: expected a string (the category), got a number {shown_json(value)}; "
            'send the category as text, e.g. "1"'
        )
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise InputError(f"{where}: the number is not finite (too large for a 64-bit float)")
    return number


def _named_row(instance: dict[str, Any], row_number: int, sig: Signature | None) -> Any:
    if type(instance) is _Repeated:
        raise InputError(f"row {row_number} names {shown(instance.repeated)} twice")
    if not instance:
        raise InputError(f"row {row_number} is an empty object: name the model's features")
    if sig is None:
        return {
            name: _json_value(value, f"row {row_number}, feature {shown(name)}", None, True)
            for name, value in instance.items()
        }
    unknown = [name for name in instance if name not in sig.position]
    if unknown:
        raise InputError(
            f"row {row_number}: unknown feature {shown(unknown[0])}; the model's features are {sig.listed()}"
        )
    absent = [name for name in sig.names if name not in instance]
    if absent:
        name = absent[0]
        kind = sig.types[sig.position[name]]
        null = " (null for a missing value)" if kind == STRING_FEATURE or sig.missing_numbers else ""
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        raise InputError(
            f"row {row_number}: feature {name!r}{more} not named; a row names every feature{null}: "
            f"{sig.listed()}"
        )
    return [
        _json_value(instance[name], f"row {row_number}, feature {name!r}", kind, sig.missing_numbers)
        for name, kind in zip(sig.names, sig.types, strict=True)
    ]


def _instances(instances: list[Any], sig: Signature | None) -> list[Any]:
    width = sig.width if sig is not None else None
    missing = sig is not None and sig.missing_numbers
    rows: list[Any] = []
    for row_number, instance in enumerate(instances, start=1):
        if isinstance(instance, dict):
            rows.append(_named_row(instance, row_number, sig))
            continue
        if not isinstance(instance, list):
            raise InputError(
                f"row {row_number} must be a list of values or an object naming the features, "
                f"not {json_type(instance)}"
            )
        if not instance:
            raise InputError(f"row {row_number} is empty")
        if width is None:
            width = len(instance)
        _check_width(row_number, len(instance), width, sig)
        rows.append(
            [
                _json_value(
                    value,
                    _column(row_number, column, sig),
                    sig.types[column - 1] if sig is not None else None,
                    missing,
                )
                for column, value in enumerate(instance, start=1)
            ]
        )
    return rows


def rows_from_document(document: Any, signature: SignatureLike = None) -> list[Any]:
    """Rows from a decoded JSON body: {"instances": [[...] or {...}, ...]} or {"context": "..."}.

    With the model's signature: positional rows in feature order (float, str, None for missing).
    Without it: the rows as far as every model agrees (lists, or objects by name), for counting."""
    sig = as_signature(signature)
    if not isinstance(document, dict):
        raise InputError(f"the JSON body must be an object, not {json_type(document)}: {_FORMS}")
    if type(document) is _Repeated:
        raise InputError(f"the body names {shown(document.repeated)} twice: send exactly one of {_FORMS}")
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
                f"'context' must be a string of comma-separated values, not {json_type(context)}"
            )
        return rows_from_text(context, sig)
    instances = document["instances"]
    if not isinstance(instances, list):
        raise InputError(f"'instances' must be a list of rows, not {json_type(instances)}")
    if not instances:
        raise InputError("no rows: 'instances' is empty")
    return _instances(instances, sig)


class _Repeated(dict[str, Any]):
    """A JSON object naming a key more than once (json keeps the last value); `repeated` is the first
    such key. Refused where it is read, which knows the row."""

    repeated: str


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: the object, marked when a key repeats."""
    document = dict(pairs)
    if len(document) == len(pairs):
        return document
    marked = _Repeated(document)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.repeated = key
            break
        seen.add(key)
    return marked


def _refuse_constant(name: str) -> float:
    raise InputError(f"the body has {name}, which is not a finite number")


def _parse_int(text: str) -> int | float:
    # Python refuses to convert an integer of more than 4300 digits (sys.get_int_max_str_digits); as a
    # float it is inf, which the row rules then refuse naming the row and column, as for 1e999.
    return int(text) if len(text) <= 4000 else float(text)


def decode_json(raw: bytes) -> Any:
    """The decoded JSON document of a body, or InputError saying why it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"the body is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, parse_int=_parse_int, object_pairs_hook=_object
        )
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


def rows_from_json(raw: bytes, signature: SignatureLike = None) -> list[Any]:
    """Rows of a JSON body (bytes as received)."""
    return rows_from_document(decode_json(raw), signature)
