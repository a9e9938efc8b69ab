"""Read the training channel: CSV files with a header, feature columns and one target column.

The target is the column mlops.toml names (`[data] target`, anywhere in the header; default the last).
A feature column whose every present value is a number is numeric; any other is categorical (its
values are strings). A missing value is an empty field or one of MISSING_TOKENS: NaN in a numeric
column, "" in a categorical one; the model's pipeline imputes or encodes it.

Every problem with the data becomes a `DataError` whose message names the file, the line and the
column, because that one line is all a person sees in SageMaker's FailureReason.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from workloads.serve.api_lambda import request_rows


class DataError(ValueError):
    """The training data cannot be used; the message says why and where."""


NUMBER = "number"
STRING = "string"
# What spreadsheets and pandas write for "no value"; read as missing, never as a category or an error.
# One set with the serving rules, which read a category among them as missing too.
MISSING_TOKENS = request_rows.MISSING_TOKENS


@dataclass(frozen=True)
class Dataset:
    # shape (rows, len(feature_names)): float64 (NaN = missing) when every feature is numeric, else
    # object with floats in numeric columns and str ("" = missing) in categorical ones.
    features: npt.NDArray[Any]
    labels: npt.NDArray[np.str_]  # shape (rows,), the target as written
    feature_names: list[str]
    target: str
    files: list[Path]
    feature_types: list[str] = field(default_factory=list)  # NUMBER or STRING per feature

    @property
    def categorical(self) -> bool:
        return STRING in self.feature_types

    def target_values(self) -> npt.NDArray[np.float64]:
        """The target as numbers (regression); load_dataset(task="regression") checked they are."""
        return self.labels.astype(np.float64)

    @property
    def class_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels.tolist()).items()))


def channel_files(channel: str | os.PathLike[str]) -> list[Path]:
    """The CSV files of a channel: the path itself if it is a file, else every *.csv below it, sorted."""
    path = Path(channel)
    if path.is_file():
        return [path]
    if not path.exists():
        raise DataError(f"training channel {path} does not exist")
    if not path.is_dir():
        raise DataError(f"training channel {path} is neither a file nor a directory")
    # SageMaker copies an S3 prefix with its sub-"folders", so look below the top level too; hidden
    # files (.DS_Store, editor leftovers) are never data.
    files = sorted(
        p
        for p in path.rglob("*.csv")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise DataError(f"training channel {path} holds no .csv files")
    return files


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for every non-blank row; line numbers are 1-based physical lines."""
    try:
        # utf-8-sig: spreadsheets often save a byte-order mark, which would otherwise end up in the
        # first column's name.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue
                yield reader.line_num, fields
    except UnicodeDecodeError:
        raise DataError(f"{path} line {_first_non_utf8_line(path)}: not UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None


def _first_non_utf8_line(path: Path) -> int:
    # The decoder's error offset is relative to the chunk it was decoding, not the file, so find
    # the line again to point the person at the right place.
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0  # pragma: no cover - only called after a decode error


def _header(path: Path, fields: list[str]) -> list[str]:
    names = [f.strip() for f in fields]
    for i, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path} line 1: column {i} of the header has no name")
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise DataError(f"{path} line 1: duplicate column name(s) in header: {', '.join(dupes)}")
    if len(names) < 2:
        raise DataError(
            f"{path} line 1: header has {len(names)} column; need at least one feature and a target"
        )
    return names


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _column(raw: list[str], name: str, where: list[tuple[Path, int]]) -> tuple[str, list[float] | list[str]]:
    """(type, values) of one feature column read as strings."""
    values: list[float] = []
    for text, (path, line) in zip(raw, where, strict=True):
        if text in MISSING_TOKENS:
            values.append(math.nan)
            continue
        number = _as_number(text)
        if number is None:
            # One value that is not a number makes the column categorical.
            return STRING, ["" if t in MISSING_TOKENS else t for t in raw]
        if math.isinf(number):
            raise DataError(f"{path} line {line}: column '{name}' value {text!r} is not finite (inf)")
        values.append(number)
    if all(math.isnan(v) for v in values):
        raise DataError(f"column '{name}' has no values (every row is missing it)")
    return NUMBER, values


def load_dataset(
    channel: str | os.PathLike[str], target: str | None = None, task: str = "classification"
) -> Dataset:
    """Read and validate every CSV of the channel. `target` names the label column (default: the last)."""
    files = channel_files(channel)
    header: list[str] | None = None
    header_file: Path | None = None
    target_index = -1
    feature_index: list[int] = []
    columns: list[list[str]] = []
    where: list[tuple[Path, int]] = []
    labels: list[str] = []

    for path in files:
        rows = _rows(path)
        first = next(rows, None)
        if first is None:
            raise DataError(f"{path} is empty: expected a header row and data rows")
        names = _header(path, first[1])
        if header is None:
            header, header_file = names, path
            target_name = names[-1] if target is None else target
            if target_name not in names:
                raise DataError(
                    f"target column '{target_name}' is not in the header of {path} (columns: {', '.join(names)})"
                )
            target_index = names.index(target_name)
            feature_index = [i for i in range(len(names)) if i != target_index]
            columns = [[] for _ in feature_index]
        elif names != header:
            raise DataError(
                f"{path} line 1: header {','.join(names)} differs from {header_file}'s {','.join(header)}"
            )
        width = len(names)
        for line, fields in rows:
            if len(fields) != width:
                raise DataError(f"{path} line {line}: expected {width} fields, found {len(fields)}")
            label = fields[target_index].strip()
            if label in MISSING_TOKENS:
                raise DataError(f"{path} line {line}: target column '{names[target_index]}' is empty")
            if task == "regression":
                number = _as_number(label)
                if number is None or not math.isfinite(number):
                    raise DataError(
                        f"{path} line {line}: target column '{names[target_index]}' value {label!r} "
                        "is not a finite number (regression)"
                    )
            for values, i in zip(columns, feature_index, strict=True):
                values.append(fields[i].strip())
            where.append((path, line))
            labels.append(label)

    assert header is not None  # files is never empty, and every file has a header
    if not labels:
        where_text = files[0] if len(files) == 1 else f"{len(files)} files under {channel}"
        raise DataError(f"no data rows in {where_text}: only a header")
    target_name = header[target_index]
    if task != "regression":
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise DataError(
                f"target column '{target_name}' has a single class ({classes[0]!r}) in {len(labels)} rows; "
                "a classifier needs at least two"
            )
    feature_names = [header[i] for i in feature_index]
    typed = [_column(raw, name, where) for raw, name in zip(columns, feature_names, strict=True)]
    types = [t for t, _ in typed]
    if STRING in types:
        features: npt.NDArray[Any] = np.empty((len(labels), len(typed)), dtype=object)
        for j, (_, typed_values) in enumerate(typed):
            features[:, j] = typed_values
    else:
        features = np.array([typed_values for _, typed_values in typed], dtype=np.float64).T.reshape(
            len(labels), len(typed)
        )
    return Dataset(
        features=features,
        labels=np.asarray(labels, dtype=np.str_),
        feature_names=feature_names,
        target=target_name,
        files=files,
        feature_types=types,
    )
