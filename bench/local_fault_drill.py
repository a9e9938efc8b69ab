"""Faults nobody named, made for real on the local platform under load: what each costs clients.

    .venv/bin/python bench/local_fault_drill.py [--rate 150] [--scenario NAME ...] [--write-readme]

Each scenario runs on a fresh temp MLOPS_HOME with the real daemon and model servers, v1 serving,
while bench/local_loadgen.py sends single-row POST /predict at --rate from its own process:

  kill9_only    kill -9 of the only model server, no deployment running
  kill9_blue    kill -9 of the blue model server at the 50% step of a shift
  hang          SIGSTOP of the only model server (alive, answers nothing)
  lock          BEGIN EXCLUSIVE held for --lock-seconds on the database from the first traffic step
                of a version that fails every prediction (issue 11's finding 2)
  disk_full     MLOPS_HOME on a small tmpfs filled to the last byte for --full-seconds (needs root to
                mount; the suite makes the same SQLITE_FULL with max_page_count instead)

For each: requests, failed (by status), seconds from the fault until every request answers again,
whether every answer is stored with the status the client got, restarts, and the end state.
This is a drill, not a speed benchmark: its figures are counts and recovery times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from local_daemon_helpers import (  # noqa: E402 - the tests' model builders and load generator driver
    Load,
    build_model,
    fast_settings,
    register,
    rows,
    serving_only,
    wait_for,
)
from readme_section import write_readme_section  # noqa: E402

from mlops.backend import DEPLOY_IN_PROGRESS  # noqa: E402
from mlops.local import daemon, state  # noqa: E402
from mlops.local.client import DaemonClient  # noqa: E402

SCENARIOS = ("kill9_only", "kill9_blue", "hang", "lock", "disk_full")


def _pid(settings: Any, version: int) -> int:
    store = state.StateStore(settings.db_path, settings.endpoint_name)
    try:
        return next(r.pid for r in store.variants() if r.model_version == version and r.pid)
    finally:
        store.close()


@contextlib.contextmanager
def _tmpfs(path: Path, size_mb: int) -> Iterator[bool]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)]).returncode == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path: Path) -> Path:
    """Fill the filesystem of `path` to the last block (unbuffered: a close must not raise ENOSPC)."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as out:
        for block in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * block)
    return filler


def scenario(name: str, work: Path, rate: float, lock_seconds: float, full_seconds: float) -> dict[str, Any]:
    home = work / "home"
    with _tmpfs(home, 64) if name == "disk_full" else contextlib.nullcontext(True) as mounted:
        if not mounted:
            return {"measured": False, "why": "cannot mount a tmpfs here (needs root)"}
        settings = fast_settings(home, traffic_wait_seconds=3.0 if name != "lock" else 1.0)
        register(settings, build_model(work / "m1"), approve=True)
        info = daemon.start(settings)
        client = DaemonClient(info)
        result: dict[str, Any] = {"measured": True}
        load: Load | None = None
        try:
            wait_for(lambda: serving_only(client.status(), 1), 90, "v1 to serve")
            load = Load(info.predict_url, rate, work / "answers.jsonl")
            time.sleep(2.0)
            fault_at = time.monotonic()
            if name == "kill9_only":
                os.kill(_pid(settings, 1), signal.SIGKILL)
                wait_for(lambda: client.status().variants[0].restarts == 1, 90, "the restart")
                time.sleep(3.0)
            elif name == "hang":
                pid = _pid(settings, 1)
                os.kill(pid, signal.SIGSTOP)
                wait_for(
                    lambda: (
                        client.status().variants[0].health == "Healthy"
                        and client.status().variants[0].restarts == 1
                    ),
                    120,
                    "the restart",
                )
                time.sleep(3.0)
            elif name == "kill9_blue":
                register(settings, build_model(work / "m2", c=0.5), approve=True)
                wait_for(
                    lambda: any(v.model_version == 2 and v.weight == 0.5 for v in client.status().variants),
                    90,
                    "the 50% step",
                )
                fault_at = time.monotonic()
                os.kill(_pid(settings, 1), signal.SIGKILL)
                wait_for(lambda: serving_only(client.status(), 2), 120, "v2 to serve")
            elif name == "lock":
                register(settings, build_model(work / "m2", kind="bad_predict"), approve=True)
                wait_for(
                    lambda: any(v.model_version == 2 and v.weight > 0 for v in client.status().variants),
                    90,
                    "the first step",
                )
                fault_at = time.monotonic()
                conn = sqlite3.connect(settings.db_path, isolation_level=None, timeout=60)
                conn.execute("BEGIN EXCLUSIVE")
                time.sleep(lock_seconds)
                result["status_while_locked"] = client.status().last_deployment.message  # type: ignore[union-attr]
                conn.execute("ROLLBACK")
                conn.close()
                released = time.monotonic()
                wait_for(
                    lambda: (d := client.latest_deployment()) is not None and d.status != DEPLOY_IN_PROGRESS,
                    120,
                    "the record",
                )
                result["seconds_to_record_after_release"] = round(time.monotonic() - released, 2)
            elif name == "disk_full":
                filler = _fill(home)
                time.sleep(full_seconds)
                result["notes_while_full"] = client.status().notes
                filler.unlink()
                wait_for(lambda: client.status().notes == [], 120, "the spool to drain")
            answers = load.stop()
            status = client.status()
            latest = client.latest_deployment()
            result["end_state"] = (
                f"v{status.serving_version} serves {'alone' if serving_only(status, status.serving_version or -1) else 'NOT alone'}"
                + (f"; last deployment {latest.status}: {latest.message}" if latest else "")
            )
            result["restarts"] = {v.name: v.restarts for v in status.variants}
        finally:
            if load is not None:
                load.close()
            daemon.stop(settings)
        stored = rows(settings)
    failed = [a for a in answers if a["status"] != 200]
    after = [a for a in answers if a["done_at"] >= fault_at]
    last_failure = max((a["done_at"] for a in failed), default=fault_at)
    result.update(
        requests=len(answers),
        failed=len(failed),
        failed_by_status=dict(Counter(str(a["status"]) for a in failed)),
        seconds_until_all_answer=round(max(0.0, last_failure - fault_at), 2),
        answered_after_fault=len([a for a in after if a["status"] == 200]),
        every_answer_stored_as_answered=all(
            a["request_id"] in stored and stored[a["request_id"]]["status_code"] == a["status"]
            for a in answers
        ),
    )
    return result


def report(results: dict[str, Any], argv: list[str]) -> str:
    lines = [
        "## Local platform: faults under load (`bench/local_fault_drill.py`)",
        "",
        f"{results['rate']:g} req/s of single-row `POST /predict` from a second process; {results['cpus']} CPUs.",
        "",
        "| fault | requests | failed | until all answer | every answer stored as answered | end state |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name in SCENARIOS:
        r = results.get(name)
        if r is None:
            continue
        if not r["measured"]:
            lines.append(f"| {name} | | | | | not measured: {r['why']} |")
            continue
        by = ", ".join(f"{n} x {s}" for s, n in sorted(r["failed_by_status"].items()))
        lines.append(
            f"| {name} | {r['requests']:,} | {r['failed']:,}{f' ({by})' if by else ''} | "
            f"{r['seconds_until_all_answer']:g} s | {'yes' if r['every_answer_stored_as_answered'] else '**NO**'} | "
            f"{r['end_state']} |"
        )
    lines += [
        "",
        f"Command: `.venv/bin/python bench/local_fault_drill.py {' '.join(argv)}`; the same faults, with "
        "asserted states, are `tests/test_local_faults.py` and `tests/test_local_records.py`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--lock-seconds", type=float, default=25.0)
    parser.add_argument("--full-seconds", type=float, default=10.0)
    parser.add_argument("--scenario", choices=SCENARIOS, action="append")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"rate": args.rate, "cpus": os.cpu_count()}
    for name in args.scenario or SCENARIOS:
        with tempfile.TemporaryDirectory(prefix=f"mlops-fault-{name}-") as tmp:
            results[name] = scenario(name, Path(tmp), args.rate, args.lock_seconds, args.full_seconds)
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.write_readme:
        write_readme_section("local_fault_drill", report(results, sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
