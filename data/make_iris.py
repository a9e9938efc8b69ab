"""Write data/iris.csv from scikit-learn's bundled copy of the iris data set.

The CSV is committed so the platform trains without network access or scikit-learn at build time;
this script is how it was made, and re-running it must reproduce the committed file byte for byte
(tests/test_train.py checks that).

    python data/make_iris.py            # writes data/iris.csv next to this file
    python data/make_iris.py -o out.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width", "species")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "iris.csv"


def iris_csv() -> str:
    """The iris data as CSV text: a header, then one row per flower with the species name as label."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    buf = io.StringIO()
    # "\n" line endings so the file is identical on every OS and diffs cleanly in git.
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for features, target in zip(iris.data, iris.target, strict=True):
        # repr of the float keeps the one-decimal measurements exactly as published (5.1, not 5.1000).
        writer.writerow([*(repr(float(v)) for v in features), str(iris.target_names[target])])
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the CSV")
    args = parser.parse_args(argv)
    text = iris_csv()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {text.count(chr(10)) - 1} rows to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
