"""The platform daemon: lifecycle, the inference API and its records, control routes, routing shares.

These start the real daemon (and real serving variants) on a temp MLOPS_HOME and an ephemeral port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from local_daemon_helpers import (
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

from mlops.backend import DEPLOY_SKIPPED, DEPLOY_SUCCEEDED, PlatformError
from mlops.local import daemon, history, state
from mlops.local.client import DaemonClient
from mlops.local.endpoint import NoVariantError, Router, Variant
from mlops.local.settings import LocalSettings


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[LocalSettings]:
    s = fast_settings(tmp_path / "home")
    yield s
    daemon.stop(s)


def test_settings_survive_the_trip_to_the_daemon_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = fast_settings(tmp_path, traffic_step_percent=10, traffic_wait_seconds=0.25, alarm_min_requests=7)
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    assert LocalSettings.from_env() == s


def test_router_shares_are_exact_and_interleaved() -> None:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(2)]
    try:
        blue = Variant(1, Path("/nonexistent"), procs[0], 1)
        green = Variant(2, Path("/nonexistent"), procs[1], 2)
        router = Router()
        with pytest.raises(NoVariantError):
            router.pick()
        router.add(blue)
        router.add(green)
        blue.ready = green.ready = True
        router.set_weights({blue: 75, green: 25})
        picks = [router.pick().version for _ in range(400)]
        assert picks.count(2) == 100
        # Smooth: green never gets two in a row at 25%, so every window of 4 has exactly one.
        assert all(picks[i : i + 4].count(2) == 1 for i in range(0, 400, 4))
        router.set_weights({blue: 0, green: 100})
        assert {router.pick().version for _ in range(50)} == {2}
        green.ready = False  # a variant that is not ready gets nothing, whatever its weight
        with pytest.raises(NoVariantError):
            router.pick()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_daemon_without_a_model_answers_503_stores_it_and_guards_control_routes(
    settings: LocalSettings,
) -> None:
    info = daemon.start(settings)
    info_file = settings.home / "daemon.json"
    assert stat.S_IMODE(info_file.stat().st_mode) == 0o600
    assert json.loads(info_file.read_text())["token"] == info.token
    assert daemon.info(settings) == info
    assert daemon.start(settings) == info  # a second start finds the running one

    code, body = _post(info.predict_url, b'{"context": "5.1, 3.5, 1.4, 0.2"}', {"User-Agent": "probe/1"})
    assert code == 503
    assert body["error"] == "no model is deployed; approve a model version first"
    record = rows(settings)[body["request_id"]]
    assert record["status_code"] == 503
    assert json.loads(record["caller"]) == {
        "api_key_id": None,
        "source_ip": "127.0.0.1",
        "user_agent": "probe/1",
    }
    assert json.loads(record["output"]) == body

    assert _get(f"{info.base_url}/_platform/status")[0] == 401
    assert _get(f"{info.base_url}/_platform/status", {"x-mlops-token": "wrong"})[0] == 403
    client = DaemonClient(info)
    status = client.status()
    assert status.status == "Absent"
    assert status.serving_version is None
    assert client.latest_deployment() is None
    with pytest.raises(PlatformError, match=r"HTTP 404: model package .*/7 does not exist"):
        client.deploy(7)
    code, body = _post(
        f"{info.base_url}/_platform/deploy", b'{"version": "x"}', {"x-mlops-token": info.token}
    )
    assert (code, body["error"]) == (
        400,
        'body must be {"version": N} with N a positive whole number, or {"rollback": true}',
    )

    assert daemon.stop(settings) is True
    assert daemon.info(settings) is None
    assert not info_file.exists()
    assert not pid_alive(info.pid)
    assert daemon.stop(settings) is False


def test_approval_deploys_and_every_answer_is_stored(settings: LocalSettings, tmp_path: Path) -> None:
    v1 = register(settings, build_model(tmp_path / "m1"))
    info = daemon.start(settings)
    client = DaemonClient(info)
    approve(settings, v1)
    wait_for(lambda: serving_only(client.status(), v1), 30, "v1 to serve")
    latest = client.latest_deployment()
    assert latest is not None
    assert (latest.status, latest.target_version, latest.from_version) == (DEPLOY_SUCCEEDED, 1, None)

    answer = client.predict({"context": "5.1, 3.5, 1.4, 0.2"})
    assert answer["model_version"] == "1"
    assert [p["label"] for p in answer["predictions"]] == ["setosa"]
    two = client.predict({"context": "5.1, 3.5, 1.4, 0.2\n6.7, 3.0, 5.2, 2.3"})
    assert [p["label"] for p in two["predictions"]] == ["setosa", "virginica"]

    code, bad = _post(info.predict_url, b'{"context": "5.1, x, 1.4, 0.2"}')
    assert code == 400
    code, short = _post(info.predict_url, b'{"instances": [[5.1, 3.5, 1.4]]}')
    assert code == 400
    code, form = _post(info.predict_url, b"context=1", {"Content-Type": "text/plain"})
    assert (code, form["error"]) == (415, "Content-Type must be application/json, not 'text/plain'")
    code, big = _post(info.predict_url, b'{"context": "' + b"1," * 600_000 + b'1"}')
    assert code == 413
    assert big["error"].startswith("request body is 1200")

    stored = rows(settings)
    assert stored[answer["request_id"]]["status_code"] == 200
    assert stored[answer["request_id"]]["model_version"] == "1"
    assert json.loads(stored[answer["request_id"]]["output"]) == answer
    assert json.loads(stored[answer["request_id"]]["input"]) == {"context": "5.1, 3.5, 1.4, 0.2"}
    assert stored[bad["request_id"]]["status_code"] == 400
    assert stored[short["request_id"]]["status_code"] == 400
    assert stored[form["request_id"]]["status_code"] == 415
    assert stored[big["request_id"]]["status_code"] == 413
    assert len(stored[big["request_id"]]["input"]) == 1024

    # Deploying what already serves is recorded and skipped, not restarted.
    again = client.deploy(v1)
    assert (again.status, again.message) == (DEPLOY_SKIPPED, "version 1 is already deployed")
    assert serving_only(client.status(), v1)


def test_kill_9_takes_the_variants_with_it_and_status_reads_from_the_database(
    settings: LocalSettings, tmp_path: Path
) -> None:
    v1 = register(settings, build_model(tmp_path / "m1"), approve=True)
    info = daemon.start(settings)
    client = DaemonClient(info)
    wait_for(lambda: serving_only(client.status(), v1), 30, "v1 to serve")
    status = client.status()
    variant_pid = state.StateStore(settings.db_path, settings.endpoint_name).variants()[0].pid
    assert variant_pid is not None and pid_alive(variant_pid)
    assert status.status == "InService"

    os.kill(info.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(info.pid), 10, "the daemon to die")
    wait_for(lambda: not pid_alive(variant_pid), 10, "the variant to die with the daemon")
    down = state.read_endpoint_status(settings)
    assert (down.status, down.serving_version, down.variants) == ("OutOfService", 1, [])
    assert down.notes == [state.STOPPED_NOTE]

    again = daemon.start(settings)
    assert again.pid != info.pid
    assert serving_only(DaemonClient(again).status(), v1)


def test_status_counts_whole_instances_and_history_keeps_the_daemons_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon runs a fleet of 4 at 25%: LINEAR in four steps of one instance.
    s = fast_settings(
        tmp_path / "home",
        endpoint_initial_instance_count=4,
        traffic_step_percent=25,
        traffic_wait_seconds=0.5,
    )
    try:
        _, client = serving_v1(s, tmp_path)
        assert [(v.model_version, v.instances) for v in client.status().variants] == [(1, 4)]
        register(s, build_model(tmp_path / "m2", c=0.5), approve=True)
        seen: list[tuple[tuple[int | None, float, int | None], ...]] = []

        def done() -> bool:
            status = client.status()
            split = tuple((v.model_version, v.weight, v.instances) for v in status.variants)
            if split and (not seen or seen[-1] != split):
                seen.append(split)
            return serving_only(status, 2)

        wait_for(done, 60, "v2 to serve")
        shifting = [split for split in seen if len(split) == 2 and split[1][1] > 0]
        assert shifting == [
            ((1, 0.75, 3), (2, 0.25, 1)),
            ((1, 0.5, 2), (2, 0.5, 2)),
            ((1, 0.25, 1), (2, 0.75, 3)),
            ((1, 0.0, 0), (2, 1.0, 4)),
        ]
        assert [(v.model_version, v.instances) for v in client.status().variants] == [(2, 4)]
    finally:
        daemon.stop(s)
    # A shell with the default settings (a fleet of 2: two steps) reads the steps the daemon took.
    for name in ("MLOPS_INSTANCE_COUNT", "MLOPS_TRAFFIC_STEP_PERCENT"):
        monkeypatch.delenv(name, raising=False)
    shell = LocalSettings.from_env(home=s.home)
    assert len(shell.linear_shares()) == 2
    assert [(d.to_version, d.planned_steps) for d in history.deployments(shell)] == [(1, 1), (2, 4)]


def test_a_busy_port_fails_start_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = fast_settings(tmp_path / "home", api_port=port)
        with pytest.raises(
            PlatformError, match=rf"(?s)exited with code 1 .*cannot listen on 127.0.0.1:{port}"
        ):
            daemon.start(s)
    assert daemon.info(s) is None
