"""Request parsing and response encoding for /invocations (shapes in docs/contracts.md).

Requests:
    application/json   {"instances": [[5.1, 3.5, 1.4, 0.2], ...]}, rows naming the features
                       {"instances": [{"sepal_length": 5.1, ...}, ...]}, or {"context": "5.1, 3.5, 1.4, 0.2"}
                       (context: one row per line, values separated by commas); null = a missing value
    text/csv           one row per line, no header, no quoting (the rules: api_lambda/request_rows.py)

Responses:
    application/json   {"model_version": "3", "predictions": [{"label": ..., "probabilities": {...}}]}
                       a regressor: {"model_version": "3", "predictions": [{"value": 151.3}, ...]}
    text/csv           one line per row: label, then one probability per class in the model's class order
                       (metadata.json class_labels); a regressor: the value; no header, like the request

Every refusal is a RequestError carrying the HTTP status and a message that names the problem and, for
row-level problems, the 1-based row (and column or feature). The *exact* rules are the inference API's
own (workloads/serve/api_lambda/request_rows.py, behind `rows_from_json` and `rows_from_csv_text`), given
the model's signature (`signature(metadata)`); the batch fast paths only run for a model whose features
are all numbers, when cheap byte-level checks prove the input can hold nothing but numbers, and on any
doubt they hand over to the exact parser, so both always agree (tests/test_serve.py checks this on
random and malformed bodies).

Parsed rows are a float64 matrix (NaN = missing) when every feature is a number, else an object
matrix (float or None in numeric columns, str or None in categorical ones), as workloads/onnx_model.py
takes them.
"""

from __future__ import annotations

import csv
import io
import math
import threading
from collections.abc import Sequence
from itertools import chain, repeat
from typing import Any

import numpy as np
import orjson
import simdjson

from workloads import model_io
from workloads.serve.api_lambda import request_rows

JSON = "application/json"
CSV = "text/csv"
# Responses at or above this many rows use the columnar encoders; below it, per-row Python is cheaper.
BATCH_ENCODE_ROWS = 32
# Numeric JSON bodies at or above this size are parsed by simdjson; below it orjson is cheaper.
SIMDJSON_BYTES = 2048
# Every byte a plain numeric CSV body can contain; anything else (quotes, tabs, nan, inf, a header) goes
# to the exact parser.
_NUMERIC_CSV_BYTES = b"0123456789.eE+-, \n"
# What a body of numeric rows is made of besides its one key: JSON numbers, lists, commas, whitespace.
_JSON_NUMBERS_AND_LISTS = b"0123456789.eE+-,[] \t\n\r"
# ... and what is left of {"instances": [[...], ...]} once those bytes are deleted (the key's "e"s too).
_INSTANCES_ONLY = b'{"instancs":}'
_OPEN, _CLOSE, _COMMA = b"[],"


class RequestError(Exception):
    """The client's request cannot be served as sent; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_input(message: str) -> RequestError:
    return RequestError(400, message)


# --- content negotiation ----------------------------------------------------------------------------


def request_format(content_type: str | None) -> str:
    """JSON or CSV from the Content-Type header (parameters such as charset ignored); else 415."""
    if content_type is None:
        return JSON  # SageMaker's InvokeEndpoint may omit it; JSON is the documented default
    media = content_type.split(";", 1)[0].strip().lower()
    if media in (JSON, CSV):
        return media
    shown = media or "(empty)"
    raise RequestError(415, f"unsupported Content-Type {shown!r}; send {JSON} or {CSV}")


def response_format(accept: str | None) -> str:
    """JSON or CSV from the Accept header by quality value (ties: JSON); else 406."""
    if accept is None or accept in ("*/*", JSON):
        return JSON
    if accept == CSV:
        return CSV
    best: tuple[float, int, str] | None = None
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if not 0.0 < quality <= 1.0:
            continue
        for offered in (JSON, CSV):
            kind, _, _ = offered.partition("/")
            if media in (offered, "*/*", f"{kind}/*"):
                # Higher q wins; at equal q the earlier range; at the same range JSON (the default).
                candidate = (quality, -position, offered)
                if best is None or candidate[:2] > best[:2]:
                    best = candidate
                break
    if best is None:
        raise RequestError(
            406, f"cannot answer in any type of Accept {accept!r}; this server produces {JSON} or {CSV}"
        )
    return best[2]


# --- parsing: the exact rules -------------------------------------------------------------------------
# They are the inference API's own (workloads/serve/api_lambda/request_rows.py), so a body the API passes
# on is one this server accepts, with the same numbers.


def signature(metadata: model_io.ModelMetadata) -> request_rows.Signature:
    """What requests for this model are read by: its features, and whether a number may be missing."""
    return request_rows.Signature.of(metadata.features, missing_numbers=metadata.imputes_missing)


def _signature(signature: request_rows.SignatureLike) -> request_rows.Signature:
    # A list of feature names still means what it meant before the signature: all of them numbers.
    if type(signature) is request_rows.Signature:
        return signature
    sig = request_rows.as_signature(signature)
    if sig is None:
        raise TypeError("the model server parses rows against the model's signature")
    return sig


def _matrix(rows: list[Any], sig: request_rows.Signature) -> np.ndarray:
    if sig.numeric:
        return np.array(rows, dtype=np.float64)  # None (a missing number) becomes NaN
    x = np.empty((len(rows), sig.width), dtype=object)
    x[:] = rows
    return x


def rows_from_csv_text(text: str, signature: request_rows.SignatureLike) -> np.ndarray:
    """Rows of comma-separated values, one per line; trailing blank lines are ignored."""
    sig = _signature(signature)
    try:
        return _matrix(request_rows.rows_from_text(text, sig), sig)
    except request_rows.InputError as exc:
        raise bad_input(exc.message) from None


def rows_from_json(body: bytes, signature: request_rows.SignatureLike) -> np.ndarray:
    """Rows from a JSON body: {"instances": [[...] or {...}, ...]} or {"context": "..."}."""
    sig = _signature(signature)
    try:
        return _matrix(request_rows.rows_from_json(body, sig), sig)
    except request_rows.InputError as exc:
        raise bad_input(exc.message) from None


# --- parsing: the fast paths --------------------------------------------------------------------------


def _finite_matrix(x: np.ndarray, n_features: int) -> bool:
    return x.ndim == 2 and x.shape[0] > 0 and x.shape[1] == n_features and bool(np.isfinite(x).all())


def parse_json(body: bytes, signature: request_rows.SignatureLike) -> np.ndarray:
    sig = _signature(signature)
    # Nothing but the key, numbers and lists (one pass in C): no strings (so no named rows), no
    # true/false/null and no second "instances" key, so only numbers can end up in the matrix.
    if sig.numeric and body.translate(None, _JSON_NUMBERS_AND_LISTS) == _INSTANCES_ONLY:
        # simdjson and the numpy proof of the rows cost ~11 us more than orjson for one row, and win from
        # a few dozen rows on (measured: 16 against 5 us for one row, 1.0 against 2.2 ms for 10,000).
        few = len(body) < SIMDJSON_BYTES
        x = _few_numeric_instances(body, sig.width) if few else _numeric_instances(body, sig.width)
        # Anything else (ragged or nested rows, a number refused such as 1e999 or, by simdjson, an
        # integer beyond 64 bits, no rows): the exact parser decides and says why in the API's words.
        return x if x is not None else rows_from_json(body, sig)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        # The exact parser decodes again and says why (orjson also refuses what the rules accept, e.g.
        # an integer beyond 64 bits that is still a finite float).
        return rows_from_json(body, sig)
    if (
        type(document) is dict
        and len(document) == 1
        and type(document.get("context")) is str
        and body.count(b'"') == 4
    ):
        # The key's quotes and the value's: orjson keeps the last of repeated keys, which the rules
        # refuse, and a quote inside the value is refused too (the exact parser says so).
        return parse_csv(document["context"].encode(), sig)
    return rows_from_json(body, sig)


def _few_numeric_instances(body: bytes, n_features: int) -> np.ndarray | None:
    """As _numeric_instances, for a small body: orjson's lists, checked row by row."""
    try:
        instances = orjson.loads(body)["instances"]
        if type(instances) is list and set(map(len, instances)) == {n_features}:
            x = np.fromiter(
                chain.from_iterable(instances), np.float64, count=len(instances) * n_features
            ).reshape(len(instances), n_features)
            if _finite_matrix(x, n_features):
                return x
    # Invalid JSON (or an integer beyond 64 bits), a number where a row should be, a list where a
    # number should be.
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError):
        pass
    return None


_parsers = threading.local()  # a simdjson.Parser reuses its buffers, and is not safe across threads


def _parser() -> simdjson.Parser:
    parser: simdjson.Parser | None = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    return parser


def _numeric_instances(body: bytes, n_features: int) -> np.ndarray | None:
    """The (rows, n_features) float64 matrix of a body the caller proved to be {"instances": ...} of
    numbers and lists only, or None when it is not exactly rows of n_features finite numbers each.

    simdjson validates the JSON and writes every number straight into one buffer of doubles (correctly
    rounded, as float() does), so no Python float is made; its flattening hides the rows, which the
    brackets and commas then prove (all numpy on their positions, no per-row Python).
    """
    try:
        document: Any = _parser().parse(body)
        flat = np.frombuffer(document["instances"].as_buffer(of_type="d"), dtype=np.float64)
    # Invalid JSON or a number out of range (ValueError; RuntimeError for an integer beyond 64 bits, which
    # the rules take as a float), or "instances" not a list of lists and numbers (TypeError, KeyError).
    except (ValueError, RuntimeError, TypeError, KeyError):
        return None
    rows, rest = divmod(flat.size, n_features)
    if rows == 0 or rest:
        return None
    text = np.frombuffer(body, dtype=np.uint8)
    opens = np.flatnonzero(text == _OPEN)
    closes = np.flatnonzero(text == _CLOSE)
    commas = np.flatnonzero(text == _COMMA)
    # The outer list and one list per row, and (the document being valid JSON) nothing nested deeper:
    # each row's "[" comes after the previous row's "]" and before its own.
    if len(opens) != rows + 1 or len(closes) != rows + 1 or len(commas) != flat.size - 1:
        return None
    row_opens, row_closes = opens[1:], closes[:-1]
    if not ((row_opens < row_closes).all() and (row_closes[:-1] < row_opens[1:]).all()):
        return None
    # n_features - 1 commas inside every row; with flat.size - 1 commas in all, the rows - 1 left are
    # between the rows, so the outer list holds the rows and nothing else, and each row its numbers.
    inside = np.searchsorted(commas, row_closes) - np.searchsorted(commas, row_opens)
    if not (inside == n_features - 1).all():
        return None
    x = flat.reshape(rows, n_features)
    return x if _finite_matrix(x, n_features) else None


def parse_csv(body: bytes, signature: request_rows.SignatureLike) -> np.ndarray:
    sig = _signature(signature)
    n_features = sig.width
    data = body.rstrip(b"\r\n\t ")
    if b"\r" in data and data.count(b"\r") == data.count(b"\r\n"):
        # CRLF line ends: the same rows as LF. A CR anywhere else stays, and sends the body to the
        # exact parser (which refuses it), as JSON would read a lone CR as whitespace.
        data = data.replace(b"\r\n", b"\n")
    # Only digits, signs, exponents, commas, spaces and newlines: every value is a JSON number or
    # invalid JSON, never a string or literal, so one simdjson call parses all of them into doubles.
    if sig.numeric and data and not data.translate(None, _NUMERIC_CSV_BYTES):
        lines = data.split(b"\n")
        if set(map(bytes.count, lines, repeat(b","))) == {n_features - 1}:
            try:
                document: Any = _parser().parse(b"[" + data.replace(b"\n", b",") + b"]")
                x = np.frombuffer(document.as_buffer(of_type="d"), dtype=np.float64)
            except (ValueError, RuntimeError):
                # e.g. "1.", "+1", "1,,2", 1e999, an integer beyond 64 bits: the exact parser decides
                # and names the row
                pass
            else:
                if x.size == len(lines) * n_features:
                    x = x.reshape(len(lines), n_features)
                    if _finite_matrix(x, n_features):
                        return x
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_input(f"the body is not UTF-8 (invalid byte at offset {exc.start})") from None
    return rows_from_csv_text(text, sig)


def parse_request(body: bytes, content_type: str, signature: request_rows.SignatureLike) -> np.ndarray:
    """(n_rows, n_features): float64 (NaN = missing) for an all-numeric signature, else object rows;
    RequestError otherwise."""
    if not body or body.isspace():
        raise bad_input("the request body is empty")
    if content_type == CSV:
        return parse_csv(body, signature)
    return parse_json(body, signature)


# --- encoding -----------------------------------------------------------------------------------------


class Encoder:
    """Builds response bodies for one model; templates are made once, at load time."""

    def __init__(self, class_labels: Sequence[str], model_version: str, *, regression: bool = False) -> None:
        self.class_labels = list(class_labels)
        self.model_version = model_version
        # A regressor's answers are one value per row (the predictor's single column), {"value": v}.
        self.regression = regression
        # What a 400 says when the model's answer for a row is not finite (inputs too large for it).
        self.not_finite = (
            "its answer is not a finite number" if regression else "its probabilities are not finite numbers"
        )
        self._json_head = b'{"model_version":' + orjson.dumps(model_version) + b',"predictions":['
        json_labels = [orjson.dumps(label) for label in self.class_labels]
        self._json_label = json_labels
        # The same as arrays, to pick a batch's labels by index in one numpy call.
        self._json_label_array = np.array(json_labels, dtype=object)
        # A row is {"label":L,"probabilities":{"c1":p1,...,"cK":pK}}: the fixed pieces between the
        # per-row values L, p1..pK, in order; the last one also carries the comma between rows.
        keys = [label + b":" for label in json_labels] or [b""]  # a regressor has no classes
        self._json_pieces = [
            b'{"label":',
            b',"probabilities":{' + keys[0],
            *[b"," + key for key in keys[1:]],
            b"}},",
        ]
        # For batches the same pieces, merged so a row is K + 1 parts of the join, not 2K + 3: per
        # class, what comes between the previous row's last probability and this row's first (the
        # previous row's "}}," end, then this row's label), and the key before each later probability.
        self._json_row_starts = np.array(
            [b"}}," + self._json_pieces[0] + label + self._json_pieces[1] for label in json_labels],
            dtype=object,
        )
        self._json_keys = self._json_pieces[2:-1]
        self._csv_label = [_csv_field(label).encode() for label in self.class_labels]
        self._csv_label_array = np.array(self._csv_label, dtype=object)

    def json_rows(self, probabilities: Sequence[Sequence[float]], winners: Sequence[int]) -> bytes:
        labels = self.class_labels
        return orjson.dumps(
            {
                "model_version": self.model_version,
                "predictions": [
                    {"label": labels[w], "probabilities": dict(zip(labels, probs, strict=True))}
                    for probs, w in zip(probabilities, winners, strict=True)
                ],
            }
        )

    def json_batch(self, probabilities: np.ndarray) -> bytes:
        columns = _number_columns(probabilities)
        starts = self._json_row_starts[probabilities.argmax(axis=1)].tolist()
        # The head instead of the first row's "}},", and "}}]}" after the last row, inside the one join:
        # adding them to the joined body would copy its megabytes twice more.
        starts[0] = self._json_head + starts[0][3:]
        return _join_rows(starts, columns, self._json_keys, b"}}]}")

    def csv_rows(self, probabilities: Sequence[Sequence[float]], winners: Sequence[int]) -> bytes:
        return b"".join(
            self._csv_label[w] + b"," + ",".join(map(repr, probs)).encode() + b"\n"
            for probs, w in zip(probabilities, winners, strict=True)
        )

    def csv_batch(self, probabilities: np.ndarray) -> bytes:
        # orjson writes the matrix as [[a,b,c],[d,e,f]]: each row's numbers are already "a,b,c".
        text = orjson.dumps(np.ascontiguousarray(probabilities), option=orjson.OPT_SERIALIZE_NUMPY)
        rows = text[2:-2].split(b"],[")
        labels = self._csv_label_array[probabilities.argmax(axis=1)].tolist()
        return _interleave([b"", b",", b"\n"], [labels, rows])

    def values(self, values: np.ndarray | list[list[float]], fmt: str) -> bytes:
        """A regressor's answers, from its one-column output: {"value": v} per row, or one per CSV line."""
        if isinstance(values, np.ndarray) and len(values) >= BATCH_ENCODE_ROWS:
            (column,) = _number_columns(values)
        else:
            column = [
                orjson.dumps(row[0])
                for row in (values.tolist() if isinstance(values, np.ndarray) else values)
            ]
        if fmt == CSV:
            return b"\n".join(column) + b"\n"
        if not column:
            return self._json_head + b"]}"
        return _interleave([b'{"value":', b"},"], [column], head=self._json_head, end=b"}]}")

    def encode(self, probabilities: np.ndarray | list[list[float]], fmt: str) -> bytes:
        if self.regression:
            return self.values(probabilities, fmt)
        if isinstance(probabilities, np.ndarray) and len(probabilities) >= BATCH_ENCODE_ROWS:
            return self.json_batch(probabilities) if fmt == JSON else self.csv_batch(probabilities)
        rows = probabilities.tolist() if isinstance(probabilities, np.ndarray) else probabilities
        winners = [max(range(len(p)), key=p.__getitem__) for p in rows]
        return self.json_rows(rows, winners) if fmt == JSON else self.csv_rows(rows, winners)


def _interleave(
    pieces: Sequence[bytes], values: Sequence[Sequence[bytes]], *, head: bytes = b"", end: bytes | None = None
) -> bytes:
    """pieces[0] + values[0][i] + pieces[1] + ... + values[-1][i] + pieces[-1], for every row i, joined;
    `head` before the first row, and the last row's pieces[-1] replaced by `end` when given.

    Built with slice assignments and one join, all in C: per-row Python (formatting or concatenation)
    costs about as much as the whole rest of a 10,000-row request.
    """
    n = len(values[0])
    step = 2 * len(values) + 1
    parts: list[bytes] = [b""] * (n * step)
    for offset, piece in enumerate(pieces):
        parts[2 * offset :: step] = [piece] * n
    for offset, column in enumerate(values):
        parts[2 * offset + 1 :: step] = column
    if n:
        parts[0] = head + parts[0]
        if end is not None:
            parts[-1] = end
    return b"".join(parts)


def _join_rows(
    starts: list[bytes], columns: Sequence[Sequence[bytes]], separators: Sequence[bytes], end: bytes
) -> bytes:
    """starts[i] + columns[0][i] + separators[0] + columns[1][i] + ... + columns[-1][i] for every row i,
    then `end`: one join of a list filled by slice assignments (as _interleave, with fewer parts)."""
    n = len(starts)
    step = 2 * len(columns)
    parts: list[bytes] = [end] * (n * step + 1)
    parts[0 : n * step : step] = starts
    for offset, column in enumerate(columns):
        parts[2 * offset + 1 : n * step : step] = column
    for offset, separator in enumerate(separators, start=1):
        parts[2 * offset : n * step : step] = [separator] * n
    return b"".join(parts)


def _number_columns(matrix: np.ndarray) -> list[list[bytes]]:
    """Each column's numbers as JSON text, from one orjson call per column."""
    columns = np.ascontiguousarray(matrix.T)
    return [orjson.dumps(column, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",") for column in columns]


def _csv_field(value: str) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([value])
    return out.getvalue()


def first_non_finite_row(probabilities: np.ndarray | list[list[float]]) -> int | None:
    """1-based row whose probabilities are not all finite (inputs too large for the model), else None."""
    if isinstance(probabilities, np.ndarray):
        bad = ~np.isfinite(probabilities).all(axis=1)
        return int(bad.argmax()) + 1 if bad.any() else None
    for number, row in enumerate(probabilities, start=1):
        if not all(map(math.isfinite, row)):
            return number
    return None
