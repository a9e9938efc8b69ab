"""The local build: what CodeBuild does on AWS, for one pushed commit.

A push to the local remote (see mlops.local.repo) queues a build and starts this module in the
background. A build checks the pushed commit out under MLOPS_HOME/builds/<id>/src, reads THAT
checkout's mlops.toml (data path, model package group; workloads/train/config.py), runs the training
workload from the checkout in SageMaker's directory contract (so the code, the config and the data
that trained a model are exactly the commit's), and registers the result as a new model version
pending approval. The one override of the data is explicit and logged: `mlops train --data PATH`
(`python -m mlops.local.build commit --data`). MLOPS_TRAINING_DATA_PATH no longer chooses it: a
variable set behind the commit's back is how a push once trained on data nobody could see; a build
that finds it set says in its log that it ignores it.

Builds run one at a time (an exclusive file lock): two pushes in quick succession train in push order
and get consecutive versions. Every build is a row in the `builds` table and its whole log (commands,
the workload's stdout/stderr) is MLOPS_HOME/builds/<id>/build.log.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import mlops
from mlops.backend import PlatformError, Progress
from mlops.local.db import connect
from mlops.local.registry import LocalRegistry, now_iso
from mlops.local.settings import LocalSettings
from workloads.serve.deployer.settings_table import Shared
from workloads.train.config import CLASSIFICATION, ProjectConfig, group_mismatch

QUEUED = "Queued"
IN_PROGRESS = "InProgress"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
FINAL_STATUSES = (SUCCEEDED, FAILED)

# A training run on the bundled data takes seconds; an hour means something hangs.
TRAIN_TIMEOUT_SECONDS = 3600.0
LOCK_FILE = ".build.lock"
LOG_FILE = "build.log"

SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    commit_sha TEXT NOT NULL,
    ref TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    model_version INTEGER,
    failure_reason TEXT,
    grp TEXT NOT NULL,
    data_path TEXT NOT NULL,
    min_accuracy REAL NOT NULL,
    pid INTEGER
);
"""


@dataclass
class Build:
    id: int
    commit: str
    ref: str
    status: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    model_version: int | None
    failure_reason: str | None
    group: str
    data_path: str
    min_accuracy: float
    log_path: str

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES


def _git_env() -> dict[str, str]:
    # A hook runs with GIT_DIR & co. pointing at the bare repo; they must not leak into other git calls.
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def package_root() -> Path:
    """The directory holding the `mlops` package, so detached processes import the same code."""
    return Path(mlops.__file__).resolve().parents[1]


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BuildStore:
    """The `builds` table in the platform database."""

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self._conn = connect(settings.db_path, check_same_thread=False)
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> BuildStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_path(self, build_id: int) -> Path:
        return self.settings.builds_dir / str(build_id) / LOG_FILE

    def _row(self, row: sqlite3.Row) -> Build:
        return Build(
            id=row["id"],
            commit=row["commit_sha"],
            ref=row["ref"],
            status=row["status"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            model_version=row["model_version"],
            failure_reason=row["failure_reason"],
            group=row["grp"],
            data_path=row["data_path"],
            min_accuracy=row["min_accuracy"],
            log_path=str(self.log_path(row["id"])),
        )

    def enqueue(self, commit: str, *, ref: str, data_path: str | None = None) -> Build:
        """Queue a build. data_path: an explicit override of mlops.toml's [data] path; without it
        the row says "" until the build has read the commit's mlops.toml (set_config)."""
        data = data_path or ""
        cur = self._conn.execute(
            "INSERT INTO builds (commit_sha, ref, status, created_at, grp, data_path, min_accuracy)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                commit,
                ref,
                QUEUED,
                now_iso(),
                self.settings.group,
                data,
                self.settings.quality_gate_min_accuracy,
            ),
        )
        build_id = int(cur.lastrowid or 0)
        log = self.log_path(build_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        return self.get(build_id)

    def get(self, build_id: int) -> Build:
        row = self._conn.execute("SELECT * FROM builds WHERE id=?", (build_id,)).fetchone()
        if row is None:
            raise PlatformError(f"build {build_id} does not exist (see `mlops logs` for the latest)")
        return self._row(row)

    def latest(self) -> Build | None:
        row = self._conn.execute("SELECT * FROM builds ORDER BY id DESC LIMIT 1").fetchone()
        return self._row(row) if row else None

    def all(self) -> list[Build]:
        return [self._row(r) for r in self._conn.execute("SELECT * FROM builds ORDER BY id").fetchall()]

    def unfinished(self) -> list[Build]:
        rows = self._conn.execute(
            "SELECT * FROM builds WHERE status IN (?, ?) ORDER BY id", (QUEUED, IN_PROGRESS)
        ).fetchall()
        return [self._row(r) for r in rows]

    def max_id(self) -> int:
        (value,) = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM builds").fetchone()
        return int(value)

    def set_pid(self, build_id: int, pid: int, *, only_if_unset: bool = False) -> None:
        sql = "UPDATE builds SET pid=? WHERE id=?" + (" AND pid IS NULL" if only_if_unset else "")
        self._conn.execute(sql, (pid, build_id))

    def pid(self, build_id: int) -> int | None:
        row = self._conn.execute("SELECT pid FROM builds WHERE id=?", (build_id,)).fetchone()
        return int(row["pid"]) if row and row["pid"] else None

    def set_config(self, build_id: int, *, group: str, data_path: str, min_accuracy: float) -> Build:
        """What the commit's mlops.toml decided, recorded on the build once it is read."""
        self._conn.execute(
            "UPDATE builds SET grp=?, data_path=?, min_accuracy=? WHERE id=?",
            (group, data_path, min_accuracy, build_id),
        )
        return self.get(build_id)

    def start(self, build_id: int) -> None:
        self._conn.execute(
            "UPDATE builds SET status=?, started_at=?, pid=? WHERE id=?",
            (IN_PROGRESS, now_iso(), os.getpid(), build_id),
        )

    def finish(
        self, build_id: int, status: str, *, model_version: int | None = None, reason: str | None = None
    ) -> Build:
        self._conn.execute(
            "UPDATE builds SET status=?, finished_at=?, model_version=?, failure_reason=? WHERE id=?",
            (status, now_iso(), model_version, reason, build_id),
        )
        return self.get(build_id)

    def fail_dead(self, *, holding_lock: bool = False) -> list[int]:
        """Mark builds whose process is gone as Failed, so nobody waits on them forever.

        With the build lock held, every other InProgress build is dead by definition (a live one would
        hold the lock), whatever its pid says now that the pid may have been reused.
        """
        failed = []
        for b in self.unfinished():
            pid = self.pid(b.id)
            stale_running = holding_lock and b.status == IN_PROGRESS and pid != os.getpid()
            if stale_running or (pid is not None and not _pid_alive(pid)):
                self._conn.execute(
                    "UPDATE builds SET status=?, finished_at=?, failure_reason=? WHERE id=? AND status IN (?,?)",
                    (
                        FAILED,
                        now_iso(),
                        "the build process ended without finishing (killed or crashed); push again",
                        b.id,
                        QUEUED,
                        IN_PROGRESS,
                    ),
                )
                failed.append(b.id)
        return failed


@contextmanager
def _build_lock(settings: LocalSettings, log: IO[str]) -> Iterator[None]:
    settings.builds_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.builds_dir / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(log, "another build is running; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log(log: IO[str], message: str) -> None:
    log.write(f"[{now_iso()}] {message}\n")
    log.flush()


def _run_logged(cmd: Sequence[str], log: IO[str], **kwargs: Any) -> int:
    _log(log, "$ " + " ".join(cmd))
    proc = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, check=False, **kwargs)
    return proc.returncode


def checkout(repo: Path, commit: str, dest: Path, log: IO[str]) -> None:
    """Extract the commit's tree (no .git) into dest: the build sees exactly what was pushed."""
    cmd = ["git", "--git-dir", str(repo), "archive", "--format=tar", commit]
    _log(log, "$ " + " ".join(cmd))
    dest.mkdir(parents=True, exist_ok=True)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_git_env()) as proc:
        assert proc.stdout is not None
        # filter="data" refuses absolute paths, links out of dest and device files.
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            archive.extractall(dest, filter="data")
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise PlatformError(f"git archive {commit} failed: {stderr.strip()}")


@dataclass(frozen=True)
class CommitConfig:
    """What the build needs from the commit's mlops.toml before it trains."""

    data_path: str
    group: str
    task: str
    gate_metric: str
    describe: str


def _commit_config(src: Path) -> CommitConfig:
    """The commit's mlops.toml, read by the commit's own parser (workloads/train/config.py), so a
    commit that adds a key is read by code that knows it. A commit from before mlops.toml has no
    parser: its defaults are today's iris build."""
    if not (src / "workloads" / "train" / "config.py").is_file():
        defaults = ProjectConfig()
        return CommitConfig(defaults.data_path, defaults.group, defaults.task, "accuracy", "(defaults)")
    env = _git_env()
    env["PYTHONPATH"] = str(src)
    proc = subprocess.run(
        [sys.executable, "-m", "workloads.train.config", str(src)],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        reason = " ".join(proc.stderr.split()) or f"reading mlops.toml exited with code {proc.returncode}"
        raise PlatformError(reason.replace(str(src) + "/", ""))
    try:
        return CommitConfig(**json.loads(proc.stdout))
    except (TypeError, ValueError) as exc:
        raise PlatformError(f"the commit's workloads.train.config printed no config: {exc}") from None


def read_config(build: Build, settings: LocalSettings, src: Path, log: IO[str]) -> tuple[CommitConfig, str]:
    """The commit's mlops.toml and the data path the build trains on; PlatformError if it cannot build."""
    config = _commit_config(src)
    described = config.describe.replace(str(src) + "/", "")  # "mlops.toml: classification with ..."
    _log(log, described if described.startswith("mlops.toml") else f"mlops.toml: {described}")
    if build.data_path and build.data_path != config.data_path:
        data_path = build.data_path
        _log(
            log,
            f"data: {data_path} (given with --data, overriding mlops.toml [data] path {config.data_path})",
        )
    else:
        data_path = config.data_path
        _log(log, f"data: {data_path} (mlops.toml [data] path)")
    if settings.training_data_path != Shared.training_data_path.local_default:
        _log(
            log,
            f"note: MLOPS_TRAINING_DATA_PATH={settings.training_data_path} is ignored: the data is the commit's "
            "mlops.toml [data] path; for a one-off use `mlops train --data PATH`",
        )
    # The local platform serves one group; registering elsewhere would hide the version from
    # `mlops models` and the deployer, and registering here would mix unrelated models.
    mismatch = group_mismatch(config.group, settings.group, "local platform", "MLOPS_MODEL_PACKAGE_GROUP")
    if mismatch:
        raise PlatformError(mismatch)
    return config, data_path


def _channel_dir(data: Path, work: Path) -> Path:
    """The `train` channel as SageMaker hands it over: a directory holding the data. SageMaker downloads
    the channel's S3 prefix (the one file upload-data wrote) into /opt/ml/input/data/train/, so a
    training script of the user's (`[training] entry`) that lists SM_CHANNEL_TRAIN works on both
    platforms. A [data] path that is a directory already is one; a missing path is left for training
    to name."""
    if not data.is_file():
        return data
    channel = work / "input" / "data" / "train"
    channel.mkdir(parents=True, exist_ok=True)
    target = channel / data.name
    target.unlink(missing_ok=True)
    try:
        os.link(data, target)  # same filesystem (the build's checkout): no copy
    except OSError:
        shutil.copyfile(data, target)
    return channel


def _train(build: Build, settings: LocalSettings, src: Path, work: Path, log: IO[str]) -> tuple[int, Path]:
    data = Path(build.data_path) if Path(build.data_path).is_absolute() else src / build.data_path
    channel = _channel_dir(data, work)
    model_dir, output_dir = work / "model", work / "output"
    env = _git_env()
    env.pop("PYTHONPATH", None)
    env.update(
        {
            # The checkout's workloads/ package, not the platform's copy: the commit is what trains.
            "PYTHONPATH": str(src),
            "PYTHONUNBUFFERED": "1",
            "SM_CHANNEL_TRAIN": str(channel),
            "SM_MODEL_DIR": str(model_dir),
            "SM_OUTPUT_DATA_DIR": str(output_dir / "data"),
            "SM_OUTPUT_DIR": str(output_dir),
            "SM_INPUT_CONFIG_DIR": str(work / "input" / "config"),
            # The platform's accuracy floor (MLOPS_MIN_ACCURACY) on top of mlops.toml's [gate];
            # 0 for a regression, which has no accuracy.
            "SM_HPS": json.dumps({"min_accuracy": build.min_accuracy}),
        }
    )
    for key in ("SM_CHANNEL_TRAIN", "SM_MODEL_DIR", "SM_OUTPUT_DIR", "SM_HPS"):
        _log(log, f"{key}={env[key]}")
    cmd = [sys.executable, "-m", "workloads.train.train"]
    try:
        rc = _run_logged(cmd, log, cwd=src, env=env, timeout=TRAIN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise PlatformError(f"training did not finish within {TRAIN_TIMEOUT_SECONDS:.0f} s") from None
    return rc, output_dir


def _failure_reason(output_dir: Path, rc: int) -> str:
    failure = output_dir / "failure"
    if failure.is_file():
        text = failure.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return text
    return f"training exited with code {rc} and left no failure reason (see the build log)"


def run_build(settings: LocalSettings, build_id: int) -> Build:
    """Run one queued build to the end; returns the finished record. Never raises for a failed build."""
    with BuildStore(settings) as store:
        build = store.get(build_id)
        if build.done:
            return build
        work = settings.builds_dir / str(build_id)
        work.mkdir(parents=True, exist_ok=True)
        with open(store.log_path(build_id), "a", encoding="utf-8") as log:
            store.set_pid(build_id, os.getpid())
            _log(log, f"build {build_id}: commit {build.commit} ({build.ref})")
            with _build_lock(settings, log):
                store.fail_dead(holding_lock=True)
                store.start(build_id)
                try:
                    src = work / "src"
                    checkout(settings.repo_path, build.commit, src, log)
                    config, data_path = read_config(build, settings, src, log)
                    build = store.set_config(
                        build_id,
                        group=config.group,
                        data_path=data_path,
                        min_accuracy=settings.quality_gate_min_accuracy
                        if config.task == CLASSIFICATION
                        else 0.0,
                    )
                    rc, output_dir = _train(build, settings, src, work, log)
                    if rc != 0:
                        reason = _failure_reason(output_dir, rc)
                        _log(log, f"build {build_id} FAILED: {reason}")
                        return store.finish(build_id, FAILED, reason=reason)
                    model_dir = work / "model"
                    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
                    registry = LocalRegistry(settings.db_path, settings.models_dir)
                    try:
                        version = registry.register(
                            build.group,
                            model_dir,
                            metrics=metrics,
                            source_commit=build.commit,
                            data_location=f"{settings.repo_path}#{build.commit}:{build.data_path}",
                            # The commit's serving code is the version's image, as CodeBuild builds it.
                            code_dir=src,
                        )
                    finally:
                        registry.close()
                    judged = config.gate_metric
                    _log(
                        log,
                        f"build {build_id} SUCCEEDED: registered {version.arn} "
                        f"({judged} {metrics.get(judged)}) as {version.status}",
                    )
                    return store.finish(build_id, SUCCEEDED, model_version=version.version)
                except (PlatformError, OSError, ValueError, tarfile.TarError) as exc:
                    reason = str(exc) or type(exc).__name__
                    _log(log, f"build {build_id} FAILED: {reason}")
                    return store.finish(build_id, FAILED, reason=reason)


def spawn(settings: LocalSettings, build_id: int) -> int:
    """Start `python -m mlops.local.build run <id>` detached (it outlives a git push); returns its pid."""
    env = _git_env()
    env["PYTHONPATH"] = str(package_root())
    log = settings.builds_dir / str(build_id) / LOG_FILE
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlops.local.build", "--home", str(settings.home), "run", str(build_id)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,  # a crash's traceback lands in the build log
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    with BuildStore(settings) as store:
        # Only if the build has not recorded its own pid yet, so a fast build is never overwritten.
        store.set_pid(build_id, proc.pid, only_if_unset=True)
    return proc.pid


def wait(
    settings: LocalSettings,
    build_id: int,
    *,
    timeout: float = 900.0,
    progress: Progress | None = None,
    poll: float = 0.2,
) -> Build:
    """Block until the build finishes; a build whose process died is marked Failed, not waited on."""
    deadline = time.monotonic() + timeout
    last = ""
    with BuildStore(settings) as store:
        while True:
            build = store.get(build_id)
            if build.done:
                return build
            if build.status != last and progress:
                progress(f"build {build_id}: {build.status}", None)
                last = build.status
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"build {build_id} still {build.status} after {timeout:.0f} s; see `mlops logs {build_id}`"
                )
            store.fail_dead()
            time.sleep(poll)


def follow_log(
    settings: LocalSettings, build_id: int, *, follow: bool = False, poll: float = 0.2
) -> Iterator[str]:
    """The build log line by line; with follow, keeps reading until the build has finished."""
    with BuildStore(settings) as store:
        path = store.log_path(build_id)
        store.get(build_id)  # a clear error for an unknown id
        if not path.exists():
            return
        with open(path, encoding="utf-8", errors="replace") as handle:
            pending = ""
            while True:
                chunk = handle.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith("\n"):
                        yield pending.rstrip("\n")
                        pending = ""
                    continue
                if not follow:
                    break
                if store.get(build_id).done:
                    # The final lines are written before the status changes: drain once more, then stop.
                    rest = handle.read()
                    pending += rest
                    break
                store.fail_dead()
                time.sleep(poll)
            if pending:
                yield from pending.rstrip("\n").split("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.local.build", description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="MLOPS_HOME (default: $MLOPS_HOME or ./.mlops)")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a queued build (what a push starts in the background)")
    run_p.add_argument("build_id", type=int)
    commit_p = sub.add_parser("commit", help="queue and run a build of a commit in the local remote")
    commit_p.add_argument("commit", help="commit (or branch) in the local remote")
    commit_p.add_argument(
        "--data",
        help="training data path in the commit (default: mlops.toml [data] path); logged as an override",
    )
    args = parser.parse_args(argv)
    try:
        settings = LocalSettings.from_env(args.home)
    except ValueError as exc:
        print(f"build: {exc}", file=sys.stderr)
        return 2
    if args.command == "run":
        # Detached from a push: its stderr is the build log, which already ends with the outcome.
        build = run_build(settings, args.build_id)
        return 0 if build.status == SUCCEEDED else 1
    else:
        proc = subprocess.run(
            [
                "git",
                "--git-dir",
                str(settings.repo_path),
                "rev-parse",
                "--verify",
                f"{args.commit}^{{commit}}",
            ],
            capture_output=True,
            text=True,
            env=_git_env(),
            check=False,
        )
        if proc.returncode != 0:
            print(f"build: {args.commit!r} is not a commit in {settings.repo_path}", file=sys.stderr)
            return 2
        with BuildStore(settings) as store:
            queued = store.enqueue(proc.stdout.strip(), ref=args.commit, data_path=args.data)
        build = run_build(settings, queued.id)
    if build.status == SUCCEEDED:
        print(f"build {build.id} succeeded: model version {build.model_version}")
        return 0
    print(f"build {build.id} failed: {build.failure_reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
