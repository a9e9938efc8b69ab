"""One benchmark's own section of bench/README.md, between `<!-- NAME: start -->` and `<!-- NAME: end -->`.

Every benchmark writes only its own section so `make bench` (bench/run.py) can run any subset without
disturbing the others' measured figures.
"""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def write_readme_section(name: str, text: str, readme: Path = README) -> None:
    """Replace only the section named `name` (between its markers); append it if absent."""
    start, end = f"<!-- {name}: start -->", f"<!-- {name}: end -->"
    section = f"{start}\n{text}\n{end}"
    current = readme.read_text() if readme.exists() else ""
    if start in current and end in current:
        head, rest = current.split(start, 1)
        tail = rest.split(end, 1)[1]
        updated = f"{head}{section}{tail}"
    else:
        updated = f"{current.rstrip()}\n\n{section}\n" if current.strip() else f"# Benchmarks\n\n{section}\n"
    readme.write_text(updated)
