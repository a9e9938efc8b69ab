"""The training/serving image, checked without a Docker engine: the Dockerfile's promises (pinned
base (ECR Public), root as SageMaker requires, what it copies and installs), requirements.txt against uv.lock, and every script
the image runs, run here the way `docker run <image> train|serve` would run it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from workloads import model_io

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO_ROOT / "workloads" / "Dockerfile"
REQUIREMENTS = REPO_ROOT / "workloads" / "requirements.txt"
BIN = REPO_ROOT / "workloads" / "bin"
# What training and serving import; requirements.txt must be exactly these plus their dependencies.
IMAGE_ROOTS = (
    "numpy",
    "scipy",
    "scikit-learn",
    "skops",
    "uvicorn",
    "httptools",
    "uvloop",
    "orjson",
    "pysimdjson",
    # mlops.toml's estimators, the ONNX export (training) and its runtime (serving).
    "xgboost-cpu",
    "lightgbm",
    "pandas",
    "skl2onnx",
    "onnxmltools",
    "onnxruntime",
)
# The image is Debian bookworm (glibc 2.36) on x86_64, CPython 3.11.
IMAGE_MARKER_ENV = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "python_full_version": "3.11.13",
}


# --- Dockerfile ---------------------------------------------------------------------------------


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def args_of(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def env_vars() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of("ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"ENV {args!r}: use KEY=value form"
            env[key] = value
    return env


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    out = []
    for args in args_of("COPY"):
        tokens = [t for t in shlex.split(args) if not t.startswith("--")]
        assert not any(t.startswith("--from") for t in shlex.split(args))
        out.append((tokens[:-1], tokens[-1]))
    return out


def test_base_image_is_pinned_python_311_slim_from_ecr_public() -> None:
    (base,) = args_of("FROM")
    # Finding 14: CodeBuild pulls from shared IPs; Docker Hub rate-limits anonymous pulls, ECR Public's
    # mirror of the official image (public.ecr.aws/docker/library) does not from inside AWS.
    assert re.fullmatch(
        r"public\.ecr\.aws/docker/library/python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base
    ), base
    # The image's interpreter is the one the project (and its lock) targets.
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == "~=3.11.0"


def test_image_runs_as_root_as_sagemaker_requires() -> None:
    # Finding 5: SageMaker runs training and hosting containers as root and mounts /opt/ml root-owned;
    # a USER that is not root cannot write /opt/ml/model or /opt/ml/output (training fails).
    users = args_of("USER")
    assert users in ([], ["root"], ["0"], ["0:0"]), f"USER {users}: SageMaker's /opt/ml is root-owned"
    # The code stays root-owned and not writable by others.
    runs = " ".join(args_of("RUN"))
    assert "chmod 0755 /opt/program/workloads/bin/train /opt/program/workloads/bin/serve" in runs


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    rules = dockerignore_rules()
    found = copies()
    assert found
    for sources, _ in found:
        for source in sources:
            path = REPO_ROOT / source
            assert path.exists(), f"COPY source {source} does not exist"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for f in files:
                rel = f.relative_to(REPO_ROOT).as_posix()
                if "__pycache__" in rel or rel.endswith(".pyc"):
                    continue
                assert not excluded(rel, rules), f"{rel} is copied but .dockerignore excludes it"


def test_image_layout_puts_entry_scripts_on_path() -> None:
    env = env_vars()
    assert env["PYTHONPATH"] == "/opt/program"
    assert env["PATH"].split(":")[0] == "/opt/program/workloads/bin"
    assert (["workloads/"], "/opt/program/workloads/") in copies()
    # SageMaker runs `docker run <image> train|serve`: both names must resolve on that PATH.
    for name in ("train", "serve"):
        assert (BIN / name).is_file()
        assert f"/opt/program/workloads/bin/{name}" in " ".join(args_of("RUN"))  # made executable
    assert args_of("EXPOSE") == ["8080"]
    assert args_of("CMD") == ['["serve"]']
    assert args_of("ENTRYPOINT") == []  # an ENTRYPOINT would swallow SageMaker's train/serve argument


def test_dependencies_install_hash_checked_from_the_copied_requirements() -> None:
    (install,) = [r for r in args_of("RUN") if "pip install" in r]
    flags = shlex.split(install.split("&&")[0])
    assert "--require-hashes" in flags and "--only-binary=:all:" in flags and "--no-deps" in flags
    target = flags[flags.index("-r") + 1]
    assert (["workloads/requirements.txt"], target) in copies()


# --- .dockerignore ------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    # Docker's matcher: `*` and `?` stay within one path segment, `**` spans any number of them.
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def excluded(rel_path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent dirs decides."""
    parts = rel_path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negate, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            verdict = not negate
    return verdict


@pytest.mark.parametrize(
    ("path", "is_excluded"),
    [
        ("workloads/train/train.py", False),
        ("workloads/requirements.txt", False),
        ("workloads/bin/serve", False),
        ("workloads/train/__pycache__/train.cpython-311.pyc", True),
        ("workloads/model_io.pyc", True),
        (".venv/bin/python", True),
        (".git/config", True),
        (".mlops/registry.sqlite", True),
        ("data/iris.csv", True),
        ("uv.lock", True),
        ("mlops/cli.py", True),
    ],
)
def test_dockerignore_keeps_only_workloads_in_the_context(path: str, is_excluded: bool) -> None:
    assert excluded(path, dockerignore_rules()) is is_excluded


# --- requirements.txt against uv.lock -----------------------------------------------------------


def requirements() -> dict[str, tuple[str, set[str]]]:
    """name -> (pinned version, sha256 hashes)."""
    text = REQUIREMENTS.read_text().replace("\\\n", " ")
    out: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split(" --hash=")
        req = Requirement(spec.strip())
        assert req.marker is None or req.marker.evaluate(IMAGE_MARKER_ENV)
        (specifier,) = req.specifier
        assert specifier.operator == "==", f"{req.name} is not pinned with =="
        name = canonicalize_name(req.name)
        assert name not in out, f"{name} listed twice"
        out[name] = (specifier.version, {h.strip() for h in options})
    return out


def lock_packages() -> dict[str, dict[str, Any]]:
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    packages: dict[str, dict[str, Any]] = {}
    for pkg in lock["package"]:
        name = canonicalize_name(pkg["name"])
        # Several versions (by Python marker) are fine for dev-only packages; one the image installs
        # is refused in _closure, since requirements.txt pins exactly one.
        packages[name] = {"duplicated": True} if name in packages else pkg
    return packages


def _lock_hashes(pkg: dict[str, Any]) -> set[str]:
    files = [pkg["sdist"]] if "sdist" in pkg else []
    files += pkg.get("wheels", [])
    return {f["hash"] for f in files}


def _closure(roots: tuple[str, ...], packages: dict[str, dict[str, Any]]) -> set[str]:
    seen: set[str] = set()
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert not packages[name].get("duplicated"), f"uv.lock has several versions of {name}; pick by marker"
        for dep in packages[name].get("dependencies", []):
            marker = dep.get("marker")
            if marker is None or Marker(marker).evaluate(IMAGE_MARKER_ENV):
                todo.append(canonicalize_name(dep["name"]))
    return seen


def test_requirements_are_exactly_the_workload_dependency_closure() -> None:
    assert set(requirements()) == _closure(IMAGE_ROOTS, lock_packages())


def test_requirement_versions_and_hashes_equal_uv_lock() -> None:
    packages = lock_packages()
    for name, (version, hashes) in requirements().items():
        pkg = packages[name]
        assert version == pkg["version"], f"{name}: requirements.txt {version}, uv.lock {pkg['version']}"
        assert hashes == _lock_hashes(pkg), f"{name}: hashes differ from uv.lock"


def _image_tags() -> set[Tag]:
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    tags = set(cpython_tags(python_version=(3, 11), abis=["cp311", "abi3", "none"], platforms=platforms))
    return tags | set(compatible_tags(python_version=(3, 11), interpreter="cp311", platforms=platforms))


def test_every_requirement_has_a_wheel_for_the_image() -> None:
    # The Dockerfile installs with --only-binary=:all:, so a missing wheel would fail the build.
    packages = lock_packages()
    image_tags = _image_tags()
    for name in requirements():
        wheels = packages[name].get("wheels", [])
        filenames = [w["url"].rsplit("/", 1)[1] for w in wheels]
        assert any(parse_wheel_filename(f)[3] & image_tags for f in filenames), (
            f"{name}: no wheel for the image"
        )


def test_local_environment_runs_the_same_versions_as_the_image() -> None:
    for name, (version, _) in requirements().items():
        assert pkg_metadata.version(name) == version, name


# --- the entry scripts ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train", "serve"])
def test_entry_script_is_an_executable_posix_shell_script(name: str) -> None:
    script = BIN / name
    mode = script.stat().st_mode
    assert mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) == stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    assert script.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(script)], check=True)


@pytest.fixture
def fake_python(tmp_path: Path) -> Iterator[Path]:
    """A `python` that reports how it was started instead of starting anything."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text('#!/bin/sh\necho "pid=$$"\necho "pythonpath=$PYTHONPATH"\necho "args=$*"\n')
    fake.chmod(0o755)
    yield bin_dir


@pytest.mark.parametrize(
    ("name", "module"), [("train", "workloads.train.train"), ("serve", "workloads.serve.serve")]
)
@pytest.mark.parametrize("inherited", [None, "/extra/lib"])
def test_entry_script_execs_its_module_with_the_program_root_on_pythonpath(
    fake_python: Path, name: str, module: str, inherited: str | None
) -> None:
    env = {"PATH": f"{fake_python}:/usr/bin:/bin"}
    if inherited:
        env["PYTHONPATH"] = inherited
    # Started by name through PATH from an unrelated cwd, exactly as `docker run <image> serve` does.
    proc = subprocess.Popen(
        [name, "--flag", "x"],
        env={**env, "PATH": f"{BIN}:{env['PATH']}"},
        cwd="/",
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    expected_path = str(REPO_ROOT) + (f":{inherited}" if inherited else "")
    # Same PID: the script exec'd python, so python (not sh) receives SageMaker's SIGTERM.
    assert out.splitlines() == [
        f"pid={proc.pid}",
        f"pythonpath={expected_path}",
        f"args=-m {module} --flag x",
    ]


def test_train_entry_runs_for_real_in_the_image_layout(tmp_path: Path) -> None:
    # Rebuild the image's /opt/program from what the Dockerfile copies, then run `train` as SageMaker
    # does: by name, from WORKDIR, with the image's PYTHONPATH, SM_* pointing at a job's dirs.
    program = tmp_path / "opt" / "program"
    shutil.copytree(
        REPO_ROOT / "workloads", program / "workloads", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    ml = tmp_path / "opt" / "ml"
    channel = ml / "input" / "data" / "train"
    channel.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "data" / "iris.csv", channel / "iris.csv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "PYTHON"))}
    env.update(
        PATH=f"{program}/workloads/bin:{Path(sys.executable).parent}:/usr/bin:/bin",
        PYTHONPATH=str(program),
        SM_CHANNEL_TRAIN=str(channel),
        SM_MODEL_DIR=str(ml / "model"),
        SM_OUTPUT_DATA_DIR=str(ml / "output" / "data"),
        SM_OUTPUT_DIR=str(ml / "output"),
        SM_INPUT_CONFIG_DIR=str(ml / "input" / "config"),
    )
    proc = subprocess.run(["train"], cwd=program, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^metric accuracy=0\.9\d{3}$", proc.stdout, re.MULTILINE)
    estimator, metadata = model_io.load_model(ml / "model")
    assert list(estimator.predict([[5.1, 3.5, 1.4, 0.2]])) == ["setosa"]
    assert metadata.target == "species"
    assert (ml / "output" / "data" / "evaluation.json").is_file()
    assert not (ml / "output" / "failure").exists()
    # The copied code ran (it left its bytecode), not the repo checkout the venv also knows about.
    assert (program / "workloads" / "train" / "__pycache__").is_dir()
    assert any((program / "workloads" / "__pycache__").glob("model_io.*.pyc"))
