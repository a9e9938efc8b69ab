"""`make bench`: every benchmark, one after the other, each updating its own section of bench/README.md.

    .venv/bin/python bench/run.py [--only serve_bench] [--skip lambda_cold_import]

Benchmarks are not part of `make test`: they take minutes, install their anchors (wrk with apt-get,
MLflow and MLServer in venvs of their own under bench/.out/) and their figures depend on the machine. Each runs in a fresh
interpreter so one's imports and threads cannot colour another's numbers. A benchmark that misses its
target exits 1; every one still runs, and this exits 1 if any failed.

To add a benchmark: append (name, arguments) to BENCHMARKS; the script must accept --write-readme and
write only between its own markers in bench/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHMARKS: list[tuple[str, list[str]]] = [
    ("serve_bench", ["--write-readme"]),
    ("lambda_cold_import", ["--write-readme"]),
    ("local_api_bench", ["--write-readme"]),
    ("local_shift_bench", ["--write-readme"]),
    ("local_fault_drill", ["--write-readme"]),
]


def main(argv: list[str] | None = None) -> int:
    names = [name for name, _ in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", action="append", choices=names, help="run only these (repeatable)")
    parser.add_argument("--skip", action="append", choices=names, default=[], help="leave these out")
    args = parser.parse_args(argv)
    outcomes: dict[str, int] = {}
    for name, extra in BENCHMARKS:
        if (args.only and name not in args.only) or name in args.skip:
            continue
        print(f"== {name}", flush=True)
        started = time.monotonic()
        outcomes[name] = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *extra]).returncode
        print(f"== {name}: exit {outcomes[name]} in {time.monotonic() - started:.0f} s", flush=True)
    for name, code in outcomes.items():
        print(
            f"{name}: {'ok' if code == 0 else f'FAILED (exit {code}): a target missed or an error, see above'}"
        )
    return 0 if all(code == 0 for code in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
