"""The settings tables of README.md and docs/contracts.md, generated from the settings table.

    python -m tools.settings_docs          # rewrite the tables between their markers (`make docs`)
    python -m tools.settings_docs --check  # exit 1, naming the files, when they differ

Each table sits between `<!-- settings:NAME -->` and `<!-- /settings:NAME -->`; the text around them is
the files' own. tests/test_settings_table.py fails when the committed files differ from what this makes.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from workloads.serve.deployer import settings_table as st

REPO = Path(__file__).resolve().parents[1]
COMMAND = "make docs (python -m tools.settings_docs)"
RUNTIME_NAMES = {st.DEPLOYER: "deployer", st.API: "API Lambda", st.BUILD: "CodeBuild", st.LOCAL: "local"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float):
        return f"`{st.Setting.text(value)}`"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{value}`" if value != "" else '`""`'


def _type(row: st.Setting[Any, Any], kind: type[Any]) -> str:
    """ "integer 10-50", "`DAY` | `WEEK`", "number (0, 1]", ..."""
    if kind is bool:
        return "boolean"
    if kind is Path:
        return "path"
    if kind is str:
        if row.choices:
            return " | ".join(f"`{c}`" for c in row.choices)
        if row.enum:
            return f"string (a {row.enum[0]} `{row.enum[1]}`)"
        return "string"
    word = "integer" if kind is int else "number"
    if row.choices:
        shown = ", ".join(map(str, row.choices[:8])) + (", ..." if len(row.choices) > 8 else "")
        return f"{word}: {row.choices_name or 'one of'} ({shown})"
    if row.below is not None:
        return f"{word} in [{st.Setting.text(row.low or 0)}, {st.Setting.text(row.below)})"
    if row.above is not None:
        if row.high is None:
            return f"{word} > {st.Setting.text(row.above)}"
        return f"{word} ({st.Setting.text(row.above)}, {st.Setting.text(row.high)}]"
    if row.low is None:
        return word
    if row.high is None or row.high >= st.INT32_MAX:
        return f"{word} >= {st.Setting.text(row.low)}"
    return f"{word} {st.Setting.text(row.low)}-{st.Setting.text(row.high)}"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def stack_table() -> str:
    """README "Configuration": every stack key (aws:region is the provider's)."""

    def default(row: st.Setting[Any, Any]) -> str:
        text = row.doc_default or _value(row.default)
        if st.LOCAL in row.env and row.local_default != row.default:
            text += f" (local `{st.Setting.text(row.local_default)}`)"
        return text

    def read_as(row: st.Setting[Any, Any]) -> str:
        return ", ".join(f"{RUNTIME_NAMES[runtime]} `{name}`" for runtime, name in row.env.items()) or "-"

    rows = [
        [
            "`aws:region`",
            "string",
            "(AWS provider default)",
            "Region the stack deploys to (the AWS provider's own key).",
            "-",
        ]
    ]
    rows += [
        [f"`{row.key}`", _type(row, row.kind), default(row), row.meaning, read_as(row)]
        for row in sorted(st.Aws.rows(), key=lambda r: r.key.lower())
    ]
    return _table(["key", "type", "default", "meaning", "environment"], rows)


def local_table() -> str:
    """README, the local platform: every MLOPS_* variable."""
    rows = []
    for row in sorted(st.Local.rows(), key=lambda r: r.env[st.LOCAL]):
        meaning = row.local_meaning or row.meaning
        if row.stack:
            meaning += f" On AWS: `{row.key}`."
        default = row.local_doc_default or _value(row.local_default)
        rows.append([f"`{row.env[st.LOCAL]}`", _type(row, row.local_kind), default, meaning])
    return _table(["variable", "type", "default", "meaning"], rows)


def env_table(runtime: str) -> str:
    """docs/contracts.md: the environment Pulumi gives one AWS runtime."""
    rows = [[f"`{w.env}`", "wired by Pulumi", "-", w.meaning] for w in st.WIRED if w.runtime == runtime]
    rows += [
        [f"`{row.env[runtime]}`", f"`{row.key}`", row.doc_default or _value(row.default), row.meaning]
        for row in st.env_rows(runtime)
    ]
    return _table(["variable", "from", "default", "meaning"], rows)


SECTIONS: dict[str, dict[str, Callable[[], str]]] = {
    "README.md": {"stack": stack_table, "local": local_table},
    "docs/contracts.md": {
        f"env-{runtime}": functools.partial(env_table, runtime) for runtime in (st.DEPLOYER, st.API, st.BUILD)
    },
}


def render(text: str, sections: dict[str, Callable[[], str]], where: str) -> str:
    """`text` with each marked section replaced by its table."""
    for name, make in sections.items():
        pattern = re.compile(rf"(<!-- settings:{name} -->\n).*?(<!-- /settings:{name} -->)", re.DOTALL)
        match = pattern.search(text)
        if match is None:
            raise SystemExit(f"{where}: no <!-- settings:{name} --> ... <!-- /settings:{name} --> markers")
        text = text[: match.end(1)] + make() + "\n" + text[match.start(2) :]
    return text


def stale(root: Path = REPO) -> dict[str, str]:
    """Files whose tables differ from the table's: name -> the text they should have."""
    found = {}
    for name, sections in SECTIONS.items():
        path = root / name
        current = path.read_text()
        wanted = render(current, sections, name)
        if wanted != current:
            found[name] = wanted
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the files are current")
    args = parser.parse_args(argv)
    changed = stale()
    if args.check:
        for name in changed:
            print(f"{name}: settings tables differ from the settings table; run {COMMAND}", file=sys.stderr)
        return 1 if changed else 0
    for name, text in changed.items():
        (REPO / name).write_text(text)
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
