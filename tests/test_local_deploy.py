"""The local blue/green deployer under load: LINEAR shift, auto-rollback, kill -9, newest approval wins.

Real processes throughout: the daemon, the serving variants, and a load generator in its own process
(bench/local_loadgen.py) sending single-row requests at a constant rate and recording each answer.
The assertions are on counts and states, never on timings.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from local_daemon_helpers import (
    REPO_ROOT,
    approve,
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
    DEPLOY_SKIPPED,
    DEPLOY_SUCCEEDED,
    REJECTED,
    PlatformError,
)
from mlops.local import daemon, state
from mlops.local.client import DaemonClient
from mlops.local.registry import LocalRegistry
from mlops.local.settings import LocalSettings

RATE = 250.0  # requests/s from the load generator (the target is >= 200 under a shift)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[LocalSettings]:
    # A corrupt model never answers /ping 200; do not wait the production minute for it. A fleet of
    # four: LINEAR in four steps of one instance (25%), so a shift under load has steps to watch.
    s = fast_settings(tmp_path / "home", startup_timeout_seconds=8.0, endpoint_initial_instance_count=4)
    yield s
    daemon.stop(s)


def _green_weights(client: DaemonClient, version: int, until: Any, timeout: float = 30) -> list[float]:
    """Poll the status until until() is true; the distinct weights `version` had, in order."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"deployment of v{version} did not finish; saw {seen}"
        weight = sum(v.weight for v in client.status().variants if v.model_version == version)
        if not seen or seen[-1] != weight:
            seen.append(weight)
        time.sleep(0.02)
    return seen


def _finished(client: DaemonClient, version: int) -> Any:
    def check() -> bool:
        latest = client.latest_deployment()
        return latest is not None and latest.target_version == version and latest.status != DEPLOY_IN_PROGRESS

    return check


def test_linear_shift_under_load_loses_nothing(
    settings: LocalSettings, tmp_path: Path, start_load: Any
) -> None:
    info, client = serving_v1(settings, tmp_path)
    load = start_load(info.predict_url, tmp_path / "answers.jsonl")
    time.sleep(0.5)
    register(settings, build_model(tmp_path / "m2", c=0.5), approve=True)
    weights = _green_weights(client, 2, _finished(client, 2))
    time.sleep(0.5)
    answers = load.stop()

    latest = client.latest_deployment()
    assert latest is not None
    assert (latest.status, latest.from_version, latest.target_version) == (DEPLOY_SUCCEEDED, 1, 2)
    assert serving_only(client.status(), 2)
    # LINEAR: green got 25, 50, 75, then 100% (0 while it started), in that order: one instance a step.
    assert [w for w in weights if w > 0] == [0.25, 0.5, 0.75, 1.0] == settings.linear_shares()

    # The load really ran through the shift (a count, not a rate: the rate is bench/'s to measure).
    assert len(answers) >= 100
    failed = [a for a in answers if a["status"] != 200]
    assert failed == []
    stored = rows(settings)
    assert all(stored[a["request_id"]]["status_code"] == 200 for a in answers)
    versions = [a["model_version"] for a in answers]
    assert versions[0] == "1" and versions[-1] == "2"
    # Once all traffic is on v2, v1 answers nothing more: one switch-over, no flapping after it.
    last_v1 = max(i for i, v in enumerate(versions) if v == "1")
    assert set(versions[last_v1 + 1 :]) == {"2"}


def _rollback_under_load(
    settings: LocalSettings, tmp_path: Path, start_load: Any, kind: str, reason: str
) -> tuple[list[dict[str, Any]], DaemonClient]:
    info, client = serving_v1(settings, tmp_path)
    load = start_load(info.predict_url, tmp_path / "answers.jsonl")
    time.sleep(0.5)
    register(settings, build_model(tmp_path / "bad", kind=kind), approve=True)
    wait_for(_finished(client, 2), 40, "the bad version's deployment to end")
    time.sleep(0.5)
    answers = load.stop()

    latest = client.latest_deployment()
    assert latest is not None
    assert latest.status == DEPLOY_ROLLED_BACK
    assert reason in latest.message
    assert latest.message.endswith("rolled back, v1 keeps all traffic")
    assert serving_only(client.status(), 1)
    assert client.predict({"context": "5.1, 3.5, 1.4, 0.2"})["model_version"] == "1"
    stored = rows(settings)
    assert all(stored[a["request_id"]]["status_code"] == a["status"] for a in answers)
    # The load really ran through the shift (a count, not a rate: the rate is bench/'s to measure).
    assert len(answers) >= 100
    return answers, client


def test_a_version_failing_ping_is_rolled_back_before_it_gets_traffic(
    settings: LocalSettings, tmp_path: Path, start_load: Any
) -> None:
    answers, client = _rollback_under_load(
        settings, tmp_path, start_load, "corrupt", "variant v2 cannot load its model: the model in "
    )
    assert [a for a in answers if a["status"] != 200] == []
    assert {a["model_version"] for a in answers} == {"1"}
    latest = client.latest_deployment()
    assert latest is not None
    # The server's own reason, taken from its /ping 503 "failed" answer: the rollback did not wait out
    # the startup timeout, whose reason would be "did not answer /ping with 200 within ...".
    assert "/model.skops" in latest.message and "could not be loaded: " in latest.message
    assert "within" not in latest.message


def test_a_version_erroring_on_predict_is_rolled_back_within_the_first_step(
    settings: LocalSettings, tmp_path: Path, start_load: Any
) -> None:
    answers, _ = _rollback_under_load(
        settings, tmp_path, start_load, "bad_predict", "error-rate alarm: v2 failed"
    )
    failed = [a for a in answers if a["status"] != 200]
    # Requests in the first step, and the share of them the bad version gets.
    first_step_share = RATE * settings.traffic_wait_seconds * settings.linear_shares()[0]
    print(
        f"\nbad-predict rollback: {len(failed)} failed of {len(answers)} requests (first step's share {first_step_share:.0f})"
    )
    assert settings.alarm_min_requests <= len(failed) <= first_step_share
    assert {a["status"] for a in failed} == {502}
    stored = rows(settings)
    assert {stored[a["request_id"]]["model_version"] for a in failed} == {"2"}
    assert {a["model_version"] for a in answers if a["status"] == 200} == {"1"}
    # The history keeps how far the shift got: the first step's share.
    deps = state.StateStore(settings.db_path, settings.endpoint_name).deployments()
    assert (deps[-1].status, deps[-1].green_weight) == (
        DEPLOY_ROLLED_BACK,
        settings.linear_shares()[0],
    )


def test_kill_9_during_a_shift_restarts_on_the_blue_version(
    settings: LocalSettings, tmp_path: Path, start_load: Any
) -> None:
    info, client = serving_v1(settings, tmp_path)
    load = start_load(info.predict_url, tmp_path / "answers.jsonl")
    register(settings, build_model(tmp_path / "m2", c=0.5), approve=True)
    _green_weights(
        client, 2, lambda: any(v.model_version == 2 and v.weight == 0.5 for v in client.status().variants)
    )
    pids = [v.pid for v in state.StateStore(settings.db_path, settings.endpoint_name).variants()]
    assert len(pids) == 2
    os.kill(info.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(info.pid), 10, "the daemon to die")
    time.sleep(0.2)
    answers = load.stop()
    assert all(pid is not None for pid in pids)
    wait_for(lambda: not any(pid_alive(p) for p in pids if p), 10, "the variants to die with the daemon")

    ok = [a for a in answers if a["status"] == 200]
    assert {a["model_version"] for a in ok} == {"1", "2"}
    stored = rows(settings)
    assert all(stored[a["request_id"]]["status_code"] == 200 for a in ok)

    again = daemon.start(settings)
    client = DaemonClient(again)
    # The start brings back the version that owned all traffic, then v2's approval still stands: its
    # deployment goes again under the approval rules (on AWS SageMaker carries an update on).
    assert client.predict({"context": "5.1, 3.5, 1.4, 0.2"})["model_version"] == "1"
    wait_for(lambda: serving_only(client.status(), 2), 60, "the interrupted deployment of v2 to resume")
    deps = state.StateStore(settings.db_path, settings.endpoint_name).deployments()
    assert [(d.to_version, d.status, d.message) for d in deps[-2:]] == [
        (2, DEPLOY_ROLLED_BACK, "interrupted by a platform restart; v1 keeps all traffic"),
        (2, DEPLOY_SUCCEEDED, "v2 serves all traffic"),
    ]
    assert deps[-1].from_version == 1
    assert state.read_endpoint_status(settings).serving_version == 2


def test_newest_approval_wins_and_there_is_never_a_half_state(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "home", traffic_step_percent=50, traffic_wait_seconds=0.5)
    try:
        _, client = serving_v1(settings, tmp_path)
        for v in (2, 3, 4):
            assert register(settings, build_model(tmp_path / f"m{v}", c=1.0 / v)) == v
        approve(settings, 2)
        wait_for(lambda: client.status().status == "Updating", 20, "the deployment of v2 to start")
        approve(settings, 3, 4)  # both arrive during v2's deployment

        samples = []
        deadline = time.monotonic() + 40
        while not serving_only(client.status(), 4):
            assert time.monotonic() < deadline, "v4 never came to serve alone"
            samples.append(client.status())
            time.sleep(0.02)
        # While v2 deployed, the status said which approval waited: the one that then went (v4).
        during_v2 = [s for s in samples if s.last_deployment and s.last_deployment.target_version == 2]
        assert {s.queued_version for s in during_v2 if s.status == "Updating"} == {4}
        assert any(
            "version 4 is approved and waits for the deployment in progress; it goes next" in s.notes
            for s in during_v2
        )
        for s in samples:
            weights = sorted(v.weight for v in s.variants)
            assert abs(sum(weights) - 1.0) < 1e-9
            if s.status == "InService":  # no deployment in progress: one version owns all traffic
                assert weights == [1.0]
                assert s.variants[0].model_version == s.serving_version

        deps = state.StateStore(settings.db_path, settings.endpoint_name).deployments()
        assert [(d.to_version, d.status) for d in deps] == [
            (1, DEPLOY_SUCCEEDED),
            (2, DEPLOY_SUCCEEDED),
            (3, DEPLOY_SKIPPED),
            (4, DEPLOY_SUCCEEDED),
        ]
        assert deps[2].message == "superseded by version 4, approved at the same time"
        assert deps[3].from_version == 2

        # Two approvals while the platform is down: the next start deploys only the newer one.
        daemon.stop(settings)
        for v in (5, 6):
            register(settings, build_model(tmp_path / f"m{v}", c=1.0 / v))
        approve(settings, 5, 6)
        client = DaemonClient(daemon.start(settings))
        wait_for(lambda: serving_only(client.status(), 6), 30, "v6 to serve")
        deps = state.StateStore(settings.db_path, settings.endpoint_name).deployments()
        assert [(d.to_version, d.status) for d in deps[4:]] == [(5, DEPLOY_SKIPPED), (6, DEPLOY_SUCCEEDED)]
        assert deps[5].from_version == 4
    finally:
        daemon.stop(settings)


def test_explicit_deploy_conflicts_refusals_and_rollback_to_an_older_version(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "home", traffic_step_percent=50, traffic_wait_seconds=0.5)
    try:
        _, client = serving_v1(settings, tmp_path)
        register(settings, build_model(tmp_path / "m2", c=0.5), approve=True)
        wait_for(lambda: client.status().status == "Updating", 20, "the deployment of v2 to start")
        with pytest.raises(PlatformError, match=r"HTTP 409: deployment 2 of v2 is in progress"):
            client.deploy(1)
        wait_for(lambda: serving_only(client.status(), 2), 30, "v2 to serve")

        pending = register(settings, build_model(tmp_path / "m3"))
        with pytest.raises(PlatformError, match=r"HTTP 400: version 3 is PendingManualApproval"):
            client.deploy(pending)
        # A version approved and then rejected again is not deployed from its approval event.
        approve(settings, pending)
        reg = LocalRegistry(settings.db_path, settings.models_dir)
        reg.set_status(settings.group, pending, REJECTED, approver="test", force=True)
        reg.close()

        # Rolling back is an explicit deploy of an older approved version: the same LINEAR shift.
        started = client.deploy(1)
        assert (started.status, started.from_version, started.target_version) == (DEPLOY_IN_PROGRESS, 2, 1)
        weights = _green_weights(client, 1, _finished(client, 1))
        assert [w for w in weights if w > 0] == [0.5, 1.0]
        assert serving_only(client.status(), 1)
        deps = state.StateStore(settings.db_path, settings.endpoint_name).deployments()
        assert [(d.to_version, d.status) for d in deps] == [
            (1, DEPLOY_SUCCEEDED),
            (2, DEPLOY_SUCCEEDED),
            (1, DEPLOY_SUCCEEDED),
        ]
    finally:
        daemon.stop(settings)


def _commit_code(tmp_path: Path, name: str, serve_prefix: str = "") -> Path:
    """A commit's checkout as the local build keeps it: its workloads/ (serve.py optionally changed)."""
    import shutil

    code = tmp_path / name
    shutil.copytree(REPO_ROOT / "workloads", code / "workloads", ignore=shutil.ignore_patterns("__pycache__"))
    serve = code / "workloads" / "serve" / "serve.py"
    serve.write_text(serve_prefix + serve.read_text())
    return code


def test_each_version_serves_its_own_commits_code_and_broken_serving_code_gets_no_traffic(
    settings: LocalSettings, tmp_path: Path
) -> None:
    # Issue 9: the model servers ran the daemon's working tree, so a commit whose serve.py exits on
    # import was deployed "Succeeded" locally while its image would fail on AWS.
    _, client = serving_v1(settings, tmp_path)
    reg = LocalRegistry(settings.db_path, settings.models_dir)
    try:
        broken = _commit_code(tmp_path, "broken", 'raise SystemExit("this commit\'s serve.py is broken")\n')
        v2 = reg.register(settings.group, build_model(tmp_path / "m2"), metrics={}, code_dir=broken)
        assert (
            (reg.image_dir(settings.group, 2) / "workloads" / "serve" / "serve.py")
            .read_text()
            .startswith("raise SystemExit")
        )
        approve(settings, v2.version)
        wait_for(_finished(client, 2), 90, "the broken version's deployment to end")
        latest = client.latest_deployment()
        assert latest is not None and latest.status == DEPLOY_ROLLED_BACK, latest
        assert "v2" in latest.message and latest.message.endswith("rolled back, v1 keeps all traffic")
        assert serving_only(client.status(), 1)
        assert client.predict({"context": "5.1, 3.5, 1.4, 0.2"})["model_version"] == "1"

        # A good commit's version runs from its own image directory.
        good = _commit_code(tmp_path, "good", "# this commit's serve.py\n")
        v3 = reg.register(settings.group, build_model(tmp_path / "m3"), metrics={}, code_dir=good)
        approve(settings, v3.version)
        wait_for(lambda: serving_only(client.status(), 3), 90, "v3 to serve")
        (variant,) = [v for v in state.StateStore(settings.db_path, settings.endpoint_name).variants()]
        assert variant.pid is not None
        assert os.readlink(f"/proc/{variant.pid}/cwd") == str(reg.image_dir(settings.group, 3))
    finally:
        reg.close()


def test_a_version_answering_400s_to_the_callers_rows_rolls_back_on_the_4xx_comparison(
    settings: LocalSettings, tmp_path: Path, start_load: Any
) -> None:
    from mlops.local.backend import LocalBackend

    # The same home (the fixture stops its daemon); a good model may take long to load on a busy machine.
    settings = settings.replace(startup_timeout_seconds=60.0)
    info, client = serving_v1(settings, tmp_path)
    load = start_load(info.predict_url, tmp_path / "answers.jsonl")
    time.sleep(0.5)
    # A version trained without petal_width: it answers 400 to the callers' 4-value rows. The signature
    # gate would stop it; a person forces it through, and the shift is what is left to catch it.
    register(settings, build_model(tmp_path / "narrow", kind="three_features"))
    backend = LocalBackend(settings, cwd=tmp_path, approver="test")
    try:
        with pytest.raises(PlatformError, match="feature removed: petal_width"):
            backend.approve("2")
        backend.approve("2", allow_signature_change=True)
    finally:
        backend.close()
    wait_for(_finished(client, 2), 40, "the forced version's deployment to end")
    time.sleep(0.5)
    answers = load.stop()

    latest = client.latest_deployment()
    assert latest is not None and latest.status == DEPLOY_ROLLED_BACK
    assert latest.message.startswith("4xx comparison alarm: v2 answered "), latest.message
    assert "against v1's 0 of " in latest.message and latest.message.endswith(
        "rolled back, v1 keeps all traffic"
    )
    assert serving_only(client.status(), 1)
    refused = [a for a in answers if a["status"] != 200]
    stored = rows(settings)
    # Every refusal is v2's 400 (its feature count), within the first step's share of the traffic.
    assert refused and {a["status"] for a in refused} == {400}
    assert {stored[a["request_id"]]["model_version"] for a in refused} == {"2"}
    first_step_share = RATE * settings.traffic_wait_seconds * settings.linear_shares()[0]
    assert settings.alarm_min_requests <= len(refused) <= first_step_share
    assert {a["model_version"] for a in answers if a["status"] == 200} == {"1"}
    deps = state.StateStore(settings.db_path, settings.endpoint_name).deployments()
    assert (deps[-1].status, deps[-1].green_weight) == (
        DEPLOY_ROLLED_BACK,
        settings.linear_shares()[0],
    )
    assert len(answers) >= 100
