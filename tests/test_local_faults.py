"""Issue 11, findings 1 and 2: the local platform heals a model server that dies or hangs outside a
deployment, and a database fault during a shift ends in one consistent state.

Real processes throughout (the daemon, its model servers, a load generator in its own process); the
faults are made for real: kill -9, SIGSTOP, and a lock on the database held from this process. The
assertions are on counts and states; every wait is on an event with a generous ceiling.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from local_daemon_helpers import (
    build_model,
    fast_settings,
    pid_alive,
    register,
    rows,
    serving_only,
    serving_v1,
    wait_for,
)

from mlops.backend import (
    DEPLOY_IN_PROGRESS,
    DEPLOY_ROLLED_BACK,
    DEPLOY_SUCCEEDED,
    DeploymentStatus,
    EndpointStatus,
    PlatformError,
)
from mlops.local import daemon, state
from mlops.local.client import DaemonClient
from mlops.local.endpoint import SERVE_MODULE
from mlops.local.settings import LocalSettings

RATE = 150.0


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[LocalSettings]:
    s = fast_settings(tmp_path / "home")
    yield s
    daemon.stop(s)


def variant_pids(settings: LocalSettings) -> dict[int, int]:
    store = state.StateStore(settings.db_path, settings.endpoint_name)
    try:
        return {row.model_version: row.pid for row in store.variants() if row.pid}
    finally:
        store.close()


def serve_children(daemon_pid: int) -> set[int]:
    """Every model server process the daemon has, tracked or not."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == daemon_pid and SERVE_MODULE.encode() in cmdline and pid_alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def restarted(client: DaemonClient, version: int, times: int = 1) -> EndpointStatus | None:
    """The status once `version`'s variant was restarted `times` and is healthy again, else None."""
    status = client.status()
    for v in status.variants:
        if v.model_version == version and v.restarts == times and v.health == "Healthy":
            return status
    return None


def finished(client: DaemonClient) -> DeploymentStatus | None:
    latest = client.latest_deployment()
    return latest if latest is not None and latest.status != DEPLOY_IN_PROGRESS else None


def rolled_back_unrecorded(client: DaemonClient) -> EndpointStatus | None:
    """The status once the deployer rolled back (in memory) while its database does not take writes."""
    status = client.status()
    last = status.last_deployment
    if (
        last is not None
        and "rolled back, v1 keeps all traffic" in last.message
        and any("database does not take writes" in n for n in status.notes)
    ):
        return status
    return None


def stored_count(settings: LocalSettings) -> int:
    conn = sqlite3.connect(settings.db_path)
    try:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
    finally:
        conn.close()


def every_answer_stored_as_answered(settings: LocalSettings, answers: list[dict[str, Any]]) -> None:
    stored = rows(settings)
    for a in answers:
        assert a["request_id"] is not None, f"an answer without a request id: {a}"
        assert stored[a["request_id"]]["status_code"] == a["status"], a


def test_a_model_server_killed_with_no_deployment_running_is_restarted_and_traffic_recovers(
    settings: LocalSettings, tmp_path: Path, start_load: Any
) -> None:
    info, client = serving_v1(settings, tmp_path)
    load = start_load(info.predict_url, tmp_path / "answers.jsonl")
    wait_for(lambda: stored_count(settings) >= 100, 60, "traffic before the fault")
    old_pid = variant_pids(settings)[1]
    os.kill(old_pid, signal.SIGKILL)

    status = wait_for(lambda: restarted(client, 1), 60, "the supervisor to restart v1")
    assert serving_only(status, 1) and status.status == "InService"
    assert status.variants[0].last_restart_reason == "the model server of v1 exited with code -9"
    # `mlops status` says so too (it kept saying InService/Healthy over a dead server).
    shown = subprocess.run(
        [sys.executable, "-m", "mlops", "status"],
        env={**os.environ, "MLOPS_HOME": str(settings.home), "COLUMNS": "160"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "v1 restarted 1x; last: the model server of v1 exited with code -9" in shown
    new_pid = wait_for(lambda: (p := variant_pids(settings).get(1)) != old_pid and p, 30, "the new pid")
    assert serve_children(info.pid) == {new_pid}
    after = stored_count(settings)
    wait_for(lambda: stored_count(settings) >= after + 200, 60, "traffic after the restart")
    answers = load.stop()

    failed = [a for a in answers if a["status"] != 200]
    recovered_at = max(a["done"] for a in failed) if failed else 0.0
    late = [a for a in answers if a["t"] > recovered_at]
    assert len(late) >= 100 and all(a["status"] == 200 for a in late)
    # The requests in the gap failed loudly (no variant to fail over to) and were stored as such.
    assert {a["status"] for a in failed} <= {502, 503}
    every_answer_stored_as_answered(settings, answers)
    print(
        f"\nkill -9 with one variant: {len(failed)} of {len(answers)} requests failed, recovered in "
        f"{recovered_at - min((a['t'] for a in failed), default=recovered_at):.2f} s"
    )


def test_a_hung_model_server_is_killed_and_restarted(settings: LocalSettings, tmp_path: Path) -> None:
    info, client = serving_v1(settings, tmp_path)
    old_pid = variant_pids(settings)[1]
    os.kill(old_pid, signal.SIGSTOP)  # alive, but answers nothing: only /ping can tell
    try:
        status = wait_for(lambda: restarted(client, 1), 90, "the supervisor to restart the hung v1")
    finally:
        if pid_alive(old_pid):
            os.kill(old_pid, signal.SIGCONT)
    reason = status.variants[0].last_restart_reason or ""
    assert reason.startswith("the model server of v1 stopped answering /ping (3 times in a row")
    wait_for(lambda: not pid_alive(old_pid), 10, "the hung process to be gone")
    assert client.predict({"context": "5.1, 3.5, 1.4, 0.2"})["model_version"] == "1"
    assert serve_children(info.pid) == {variant_pids(settings)[1]}


def test_the_blue_server_dying_during_a_shift_fails_over_to_green_and_the_shift_goes_on(
    tmp_path: Path, start_load: Any
) -> None:
    settings = fast_settings(tmp_path / "home", traffic_wait_seconds=3.0)
    try:
        info, client = serving_v1(settings, tmp_path)
        load = start_load(info.predict_url, tmp_path / "answers.jsonl")
        register(settings, build_model(tmp_path / "m2", c=0.5), approve=True)
        wait_for(
            lambda: any(v.model_version == 2 and v.weight == 0.5 for v in client.status().variants),
            90,
            "v2 at 50%",
        )
        os.kill(variant_pids(settings)[1], signal.SIGKILL)
        seen_restart = wait_for(
            lambda: (
                any(v.model_version == 1 and v.restarts == 1 for v in client.status().variants)
                or finished(client) is not None
            ),
            60,
            "v1's restart (or the end of the shift)",
        )
        assert seen_restart
        wait_for(lambda: serving_only(client.status(), 2), 90, "v2 to serve alone")
        answers = load.stop()
        latest = client.latest_deployment()
        assert latest is not None and (latest.status, latest.target_version) == (DEPLOY_SUCCEEDED, 2)
        # Every request that blue could not answer was retried on green: no client saw the crash.
        assert [a for a in answers if a["status"] != 200] == []
        assert {a["model_version"] for a in answers} == {"1", "2"}
        every_answer_stored_as_answered(settings, answers)
        wait_for(lambda: serve_children(info.pid) == {variant_pids(settings)[2]}, 30, "only v2 to run")
    finally:
        daemon.stop(settings)


def test_a_database_lock_during_a_shift_ends_rolled_back_recorded_and_nothing_untracked(
    settings: LocalSettings, tmp_path: Path, start_load: Any
) -> None:
    # Finding 2: with BEGIN EXCLUSIVE held during a shift, the deployment failed on "database is
    # locked", its rollback's write failed too, status stayed InProgress forever, no answer completed
    # while the lock was held, and a later deploy started an untracked second copy.
    info, client = serving_v1(settings, tmp_path)
    load = start_load(info.predict_url, tmp_path / "answers.jsonl")
    register(settings, build_model(tmp_path / "m2", kind="bad_predict"), approve=True)
    wait_for(
        lambda: any(v.model_version == 2 and v.weight > 0 for v in client.status().variants),
        90,
        "v2 to get traffic",
    )
    lock = sqlite3.connect(settings.db_path, isolation_level=None, timeout=60)
    lock.execute("BEGIN EXCLUSIVE")
    locked_at = time.monotonic()
    try:
        during = wait_for(
            lambda: rolled_back_unrecorded(client), 60, "the rollback while the database is locked"
        )
        assert during.last_deployment is not None
        assert during.last_deployment.status == DEPLOY_IN_PROGRESS  # its record waits for the lock
        assert serving_only(during, 1)
        # Nothing else may start while the rollback's record is pending.
        with pytest.raises(PlatformError, match=r"HTTP 409: deployment 2 of v2 is in progress"):
            client.deploy(1)
        assert serve_children(info.pid) == {variant_pids(settings)[1]}
        time.sleep(5.0)  # the lock outlives the rollback: answers go on meanwhile (records spooled)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
        unlocked_at = time.monotonic()

    latest = wait_for(lambda: finished(client), 60, "the rollback to be recorded")
    assert (latest.status, latest.target_version) == (DEPLOY_ROLLED_BACK, 2)
    assert latest.message.startswith("error-rate alarm: v2 failed")
    assert latest.message.endswith("rolled back, v1 keeps all traffic")
    status = client.status()
    assert serving_only(status, 1) and status.status == "InService"
    assert state.read_endpoint_status(settings).serving_version == 1
    assert serve_children(info.pid) == {variant_pids(settings)[1]}
    answers = load.stop()
    # The API answered while the lock was held (their records went to the spool, then the database).
    # (The load generator's done_at is CLOCK_MONOTONIC, the same clock as this process's.)
    answered_while_locked = [
        a for a in answers if a["status"] == 200 and locked_at < a["done_at"] < unlocked_at
    ]
    assert len(answered_while_locked) >= 10
    wait_for(lambda: client.status().notes == [], 60, "the spool to drain")
    every_answer_stored_as_answered(settings, answers)
    print(
        f"\nlock held {unlocked_at - locked_at:.1f} s: {len(answered_while_locked)} answers completed meanwhile"
    )
