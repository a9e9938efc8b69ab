"""The local git remote: what CodeCommit + the pipeline trigger are on AWS.

`mlops local up` creates MLOPS_HOME/repo.git (bare) with a post-receive hook. A push to the configured
branch queues a build and starts it in the background (mlops.local.build), printing the build id and
how to follow it; pushes to other branches are acknowledged and ignored. The hook has the interpreter
and MLOPS_HOME baked in as absolute paths, so it works from any shell, with or without the venv active.
"""

from __future__ import annotations

import argparse
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops.backend import PlatformError
from mlops.local import build as builds
from mlops.local.settings import LocalSettings

ZERO_SHA = "0" * 40
REMOTE_NAME = "local"

HOOK = """#!/bin/sh
# Written by `mlops local up`; rewritten on every `mlops local up`, so edits here do not last.
# A push to {branch} builds and registers a model: see `python -m mlops.local.repo --help`.
# The platform's settings are fixed here, as a CodeBuild project's environment is on AWS: a push
# from any shell builds into the model group the running daemon deploys from.
{settings}
PYTHONPATH={pkg_root} exec {python} -m mlops.local.repo --home {home} post-receive
"""


def _git(
    args: Sequence[str], *, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=builds._git_env(), check=False
    )
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise PlatformError(f"git {' '.join(args)} failed: {detail}")
    return proc


def init_remote(settings: LocalSettings) -> bool:
    """Create the bare repo if missing and (re)write its hook; True when the repo was created now."""
    repo = settings.repo_path
    created = not (repo / "HEAD").is_file()
    if created:
        repo.parent.mkdir(parents=True, exist_ok=True)
        _git(["init", "--quiet", "--bare", f"--initial-branch={settings.source_branch}", str(repo)])
    hook = repo / "hooks" / "post-receive"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(
        HOOK.format(
            branch=settings.source_branch,
            settings="\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(settings.to_env().items())),
            pkg_root=shlex.quote(str(builds.package_root())),
            python=shlex.quote(sys.executable),
            home=shlex.quote(str(settings.home)),
        )
    )
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return created


def branch_tip(settings: LocalSettings) -> str | None:
    """The commit the configured branch points at in the local remote, None before the first push."""
    proc = _git(
        [
            "--git-dir",
            str(settings.repo_path),
            "rev-parse",
            "--verify",
            "--quiet",
            f"refs/heads/{settings.source_branch}",
        ],
        check=False,
    )
    tip = proc.stdout.strip()
    return tip if proc.returncode == 0 and tip else None


def work_tree_root(cwd: Path) -> Path | None:
    proc = _git(["rev-parse", "--show-toplevel"], cwd=cwd, check=False)
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None


def ensure_remote_in(work_tree: Path, settings: LocalSettings) -> str | None:
    """Add the `local` remote to the work tree if it has none; returns what a person should be told."""
    proc = _git(["remote", "get-url", REMOTE_NAME], cwd=work_tree, check=False)
    if proc.returncode == 0:
        url = proc.stdout.strip()
        if Path(url).resolve() != settings.repo_path.resolve():
            return (
                f"note: git remote '{REMOTE_NAME}' points to {url}, not this platform's {settings.repo_path}; "
                f"`git push {REMOTE_NAME}` will not reach it"
            )
        return None
    _git(["remote", "add", REMOTE_NAME, str(settings.repo_path)], cwd=work_tree)
    return f"added git remote '{REMOTE_NAME}' -> {settings.repo_path} (git push {REMOTE_NAME} {settings.source_branch})"


def head_commit(work_tree: Path) -> str:
    proc = _git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], cwd=work_tree, check=False)
    if proc.returncode != 0:
        raise PlatformError(f"{work_tree} has no commit yet: commit your code and data first")
    return proc.stdout.strip()


def push_head(work_tree: Path, settings: LocalSettings) -> str:
    """Push the work tree's HEAD to the platform's branch (the hook then starts a build); git's output."""
    proc = _git(
        ["push", "--porcelain", str(settings.repo_path), f"HEAD:refs/heads/{settings.source_branch}"],
        cwd=work_tree,
        check=False,
    )
    if proc.returncode != 0:
        raise PlatformError(
            f"git push of HEAD to {settings.repo_path} ({settings.source_branch}) failed: {proc.stderr.strip()}"
        )
    return proc.stdout + proc.stderr


@dataclass
class RefUpdate:
    old: str
    new: str
    ref: str


def parse_updates(lines: Iterable[str]) -> list[RefUpdate]:
    updates = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            updates.append(RefUpdate(*parts))
    return updates


def post_receive(settings: LocalSettings, updates: Sequence[RefUpdate]) -> list[str]:
    """Queue and start a build for a push to the branch; returns the lines the pusher sees."""
    wanted = f"refs/heads/{settings.source_branch}"
    messages = []
    for update in updates:
        if update.ref != wanted:
            messages.append(
                f"mlops: ignoring push to {update.ref}: only {settings.source_branch} is built "
                f"(git push {REMOTE_NAME} {settings.source_branch})"
            )
            continue
        if update.new == ZERO_SHA:
            messages.append(f"mlops: {settings.source_branch} deleted; nothing to build")
            continue
        with builds.BuildStore(settings) as store:
            queued = store.enqueue(update.new, ref=update.ref)
        builds.spawn(settings, queued.id)
        messages.append(f"mlops: build {queued.id} started for {update.new[:12]} on {settings.source_branch}")
        messages.append(f"mlops: follow it with: mlops logs {queued.id} --follow")
    return messages


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlops.local.repo", description="The local git remote's hook entry point."
    )
    parser.add_argument("--home", help="MLOPS_HOME (default: $MLOPS_HOME or ./.mlops)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("post-receive", help="what git runs after a push (reads '<old> <new> <ref>' lines)")
    args = parser.parse_args(argv)
    try:
        settings = LocalSettings.from_env(args.home)
        for line in post_receive(settings, parse_updates(sys.stdin)):
            print(line, flush=True)
    except (PlatformError, ValueError, OSError) as exc:
        # The push itself has already succeeded; say why no build started instead of failing silently.
        print(f"mlops: the push was stored but no build started: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
