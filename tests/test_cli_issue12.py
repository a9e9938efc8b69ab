"""Issue 12: a CLI that never says what did not happen. One test (or more) per item of the issue."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from local_daemon_helpers import fast_settings
from test_cli import APPROVER, registry, run
from test_cli import home as home  # the fixture: MLOPS_HOME in tmp, a known git identity

from mlops import cli
from mlops.backend import (
    APPROVED,
    DEPLOY_IN_PROGRESS,
    DEPLOY_ROLLED_BACK,
    DEPLOY_SUCCEEDED,
    DeploymentStatus,
    EndpointStatus,
    PlatformError,
)
from mlops.local import build as builds
from mlops.local import daemon
from mlops.local.backend import LocalBackend
from mlops.local.deployer import Deployer
from mlops.local.endpoint import Router
from mlops.local.records import INSERT
from mlops.local.records import SCHEMA as records_schema
from mlops.local.registry import LocalRegistry, package_arn
from mlops.local.runfile import DaemonInfo
from mlops.local.settings import LocalSettings
from mlops.local.state import IN_SERVICE, UPDATING, StateStore

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LONG_NOTE = (
    "holdout accuracy is within a point of v1 and virginica recall improved on the new rows collected in "
    "November; approved after a look at the confusion matrix"
)


@pytest.fixture
def versions(home: Path, tmp_path: Path) -> LocalRegistry:
    """Six registered versions (the metadata names their features), all pending."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "metadata.json").write_text(json.dumps({"class_labels": ["setosa"], "feature_names": FEATURES}))
    reg = registry(home)
    for n in range(1, 7):
        reg.register(
            "iris",
            model,
            metrics={"accuracy": 0.9 + n / 100, "f1_macro": 0.89 + n / 100},
            source_commit=f"{n}" * 40,
            data_location=f"repo.git#{n * 11}:data/iris.csv",
        )
    return reg


def _history(home: Path, *deployments: tuple[int | None, int, str], serving: int | None) -> None:
    """Write an endpoint history as the daemon's deployer would: (from, to, outcome) rows."""
    store = StateStore(home / "platform.db", "local-endpoint")
    try:
        with store.transaction() as conn:
            for source, target, status in deployments:
                message = "shifting: at 50%" if status == DEPLOY_IN_PROGRESS else f"ended {status}"
                store.add_deployment(
                    conn,
                    from_version=source,
                    to_version=target,
                    status=status,
                    message=message,
                    planned_steps=1 if source is None else 2,  # the daemon's default fleet of 2 at 50%
                )
            busy = any(status == DEPLOY_IN_PROGRESS for _, _, status in deployments)
            store.set_endpoint(UPDATING if busy else IN_SERVICE, serving, conn)
    finally:
        store.close()


def _pretend_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalBackend, "daemon_info", lambda self: DaemonInfo(1, "http://127.0.0.1:1", "t"))


# --- item 1: approve says what will really happen --------------------------------------------------


def test_approving_an_older_version_says_nothing_deploys_and_the_deployer_agrees(
    versions: LocalRegistry, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for v in (1, 6):
        versions.set_status("iris", v, APPROVED, approver="a")
    _history(home, (None, 1, DEPLOY_SUCCEEDED), (1, 6, DEPLOY_SUCCEEDED), serving=6)
    _pretend_running(monkeypatch)

    code, out, err = run(capsys, "approve", "5")
    assert (code, err) == (0, "")
    assert out == (
        f"approved v5 ({package_arn('iris', 5)}) as {APPROVER}; nothing will be deployed: version 5 is not "
        "newer than the serving version 6 (`mlops deploy 5` deploys it by hand)\n"
    )
    # One rule: the deployer, reading the approval event, records exactly that reason.
    settings = fast_settings(home)
    state = StateStore(settings.db_path, settings.endpoint_name)
    try:
        deployer = Deployer(settings, versions, state, Router())
        asyncio.run(deployer.consume_events())
        deployer.writer.close()
        skipped = [d for d in state.deployments() if d.to_version == 5]
    finally:
        state.close()
    assert [(d.status, d.message) for d in skipped] == [
        ("Skipped", "version 5 is not newer than the serving version 6")
    ]

    code, out, _ = run(capsys, "approve", "4", "--json")
    assert (code, out["status"], out["deployment"]) == (
        0,
        APPROVED,
        {
            "action": "skip",
            "reason": "version 4 is not newer than the serving version 6",
            "platform_running": True,
            "then": "",
        },
    )


def test_an_approval_during_a_deployment_says_it_is_queued_and_what_follows(
    versions: LocalRegistry, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for v in (1, 3):
        versions.set_status("iris", v, APPROVED, approver="a")
    _history(home, (None, 1, DEPLOY_SUCCEEDED), (1, 3, DEPLOY_IN_PROGRESS), serving=1)
    _pretend_running(monkeypatch)

    code, out, _ = run(capsys, "approve", "2", "--json")
    assert out["deployment"] == {
        "action": "queue",
        "reason": "version 2 queued, deployed when the endpoint is free",
        "platform_running": True,
        "then": "if v3 succeeds: version 2 is not newer than the serving version 3; "
        "if v3 rolls back: deploying version 2",
    }
    code, out, _ = run(capsys, "approve", "4")
    assert code == 0
    assert out.endswith(
        "not deployed yet: version 4 queued, deployed when the endpoint is free. Then deploying version 4: "
        "`mlops status --watch`\n"
    )


def test_an_approval_with_the_platform_down_says_nothing_happens_until_it_starts(
    versions: LocalRegistry, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "approve", "1")
    assert (code, err) == (0, "")
    assert out == (
        f"approved v1 ({package_arn('iris', 1)}) as {APPROVER}. The platform is not running, so nothing "
        "deploys now; when it starts (`make up` or `mlops local up`) the deployer decides: deploying version 1\n"
    )
    # A deployment the daemon died in is ended by its next start before it reads the approval.
    _history(home, (None, 1, DEPLOY_SUCCEEDED), (1, 2, DEPLOY_IN_PROGRESS), serving=1)
    code, out, _ = run(capsys, "approve", "3", "--json")
    assert (out["deployment"]["action"], out["deployment"]["platform_running"]) == ("deploy", False)


def test_approve_on_aws_predicts_from_the_endpoint_tags_with_the_same_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlops.aws import AwsBackend
    from workloads.serve.deployer import lifecycle

    backend = AwsBackend.__new__(AwsBackend)
    monkeypatch.setattr(
        AwsBackend, "endpoint_view", lambda self: lifecycle.EndpointView(serving=3, deploying=4, pending=5)
    )
    outlook = backend.approval_outlook(5)
    assert (outlook.action, outlook.reason) == ("skip", "version 5 not queued: version 5 is already queued")
    assert backend.approval_outlook(6).action == "queue"


# --- item 2: models in 80 columns ---------------------------------------------------------------


def test_models_fit_80_columns_and_mark_serving_rolled_back_data_and_features(
    versions: LocalRegistry, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    versions.set_status("iris", 1, APPROVED, approver="alice@example.com", description=LONG_NOTE)
    versions.set_status("iris", 2, APPROVED, approver="bob@example.com", description="fine")
    _history(home, (None, 1, DEPLOY_SUCCEEDED), (1, 2, DEPLOY_ROLLED_BACK), serving=1)
    monkeypatch.setenv("COLUMNS", "80")
    code, text, _ = run(capsys, "models")
    assert code == 0
    lines = [line.rstrip() for line in text.splitlines()]  # rich pads a wrapped block to its width
    assert max(len(line) for line in lines) <= 80
    assert len(lines) < 50  # six versions, each signature on two lines: not a column of single letters
    assert lines[1] == "v1  Approved  serving  accuracy 0.9100  f1_macro 0.9000"
    assert "v2  Approved  rolled back  accuracy 0.9200  f1_macro 0.9100" in lines
    assert "    data repo.git#11:data/iris.csv" in lines
    words = " ".join(line.strip() for line in lines)
    assert (
        "signature classification: sepal_length (number), sepal_width (number), petal_length (number), "
        "petal_width (number) -> classes "
    ) in words
    assert f"approved by alice@example.com: {LONG_NOTE}" in words

    code, out, _ = run(capsys, "models", "--json")
    assert [(m["version"], m["serving"], m["rolled_back"]) for m in out[:3]] == [
        (1, True, False),
        (2, False, True),
        (3, False, False),
    ]
    assert out[0]["features"] == FEATURES


def test_piped_output_takes_columns_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.Output(as_json=False).out.width == 80
    monkeypatch.delenv("COLUMNS")
    assert cli.Output(as_json=False).out.width == 200  # piped, nothing to measure: wide


# --- item 6: a start that fails says why first ------------------------------------------------------


def test_a_taken_port_is_the_first_line_not_after_old_deployment_logs(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "home")
    settings.home.mkdir(parents=True)
    old = [f"2026-12-01 10:00:{n:02d} INFO mlops.local.deployer: deployment {n} shifting" for n in range(30)]
    (settings.home / "daemon.log").write_text("\n".join(old) + "\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PlatformError) as caught:
            daemon.start(LocalSettings(**{**settings.__dict__, "api_port": port}))
    first = str(caught.value).splitlines()[0]
    assert first == (
        f"the platform daemon exited with code 1 while starting: cannot listen on 127.0.0.1:{port} "
        "(Address already in use); set MLOPS_API_PORT to a free port"
    )
    assert "deployment 29 shifting" not in str(caught.value)


# --- item 7 -----------------------------------------------------------------------------------------


def test_rejecting_the_serving_version_says_it_still_serves(
    versions: LocalRegistry, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    versions.set_status("iris", 1, APPROVED, approver="a")
    _history(home, (None, 1, DEPLOY_SUCCEEDED), serving=1)
    code, out, err = run(capsys, "reject", "1", "--reason", "leaks labels", "--force", "--json")
    assert (code, out["status"], out["still_serving"]) == (0, "Rejected", True)
    assert err == (
        "mlops: warning: v1 still serves all traffic; a rejection does not undeploy it. "
        "`mlops deploy --rollback` goes back to the version before it\n"
    )
    code, out, err = run(capsys, "reject", "2", "--reason", "worse")
    assert (code, err) == (0, "")


def test_status_watch_exits_1_when_the_watched_deployment_rolled_back(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = [DEPLOY_IN_PROGRESS, DEPLOY_IN_PROGRESS, DEPLOY_ROLLED_BACK]

    class Watched:
        name = "local"

        def status(self) -> EndpointStatus:
            state = feed.pop(0) if len(feed) > 1 else feed[0]
            dep = DeploymentStatus(2, state, "t0", message="error-rate alarm: v2 failed 5 of 5 requests")
            return EndpointStatus("e", "InService", serving_version=1, last_deployment=dep)

    monkeypatch.setattr(cli, "make_backend", lambda target, stack=None: Watched())
    code, _, err = run(capsys, "status", "--watch", "--json")
    assert code == 1
    assert err == "mlops: deployment of v2 RolledBack: error-rate alarm: v2 failed 5 of 5 requests\n"
    # Nothing watched (the rollback was before): the state is reported, not a failure of this command.
    assert cli.watch_exit_code(Watched().status(), watched=False) == 0


def test_logs_exit_1_for_a_failed_build(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = LocalSettings.from_env()
    with builds.BuildStore(settings) as store:
        build = store.enqueue("d" * 40, ref="refs/heads/main")
        Path(build.log_path).write_text("build 1 FAILED: data/missing.csv does not exist\n")
        store.finish(build.id, builds.FAILED, reason="data/missing.csv does not exist")
    code, out, err = run(capsys, "logs")
    assert (code, out) == (1, "build 1 FAILED: data/missing.csv does not exist\n")
    assert err == "mlops: build 1 Failed: data/missing.csv does not exist\n"


# --- item 8: builds, deployments, requests ------------------------------------------------------------


def _requests(home: Path) -> list[str]:
    from mlops.local.records import SCHEMA

    conn = sqlite3.connect(home / "platform.db")
    conn.executescript(SCHEMA)
    rows = [
        ("r-1", "2026-12-01T10:00:00.000Z", '{"context": "1"}', '{"error": "bad"}', 400, None, 0.5, "{}"),
        (
            "r-2",
            "2026-12-01T10:01:00.000Z",
            '{"context": "5.1"}',
            '{"ok": 1}',
            200,
            "1",
            1.5,
            '{"source_ip": "127.0.0.1"}',
        ),
        ("r-3", "2026-12-01T10:02:00.000Z", '{"context": "5.1"}', '{"ok": 2}', 200, "2", 2.5, "{}"),
        ("r-4", "2026-12-01T10:03:00.000Z", '{"context": "5.1"}', '{"error": "model"}', 502, "2", 9.0, "{}"),
    ]
    conn.executemany(INSERT, rows)
    conn.commit()
    conn.close()
    return [r[0] for r in rows]


def test_deployments_show_the_steps_recorded_with_each_not_the_shells_settings(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A database from before the daemon recorded its steps: the deployments table had no such column.
    home.mkdir(parents=True)
    conn = sqlite3.connect(home / "platform.db")
    conn.executescript(
        "CREATE TABLE deployments (id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT NOT NULL, "
        "from_version INTEGER, to_version INTEGER NOT NULL, status TEXT NOT NULL, started_at TEXT NOT NULL, "
        "finished_at TEXT, message TEXT NOT NULL DEFAULT '', green_weight REAL NOT NULL DEFAULT 0, "
        "rollback_of INTEGER);"
        "INSERT INTO deployments (endpoint, from_version, to_version, status, started_at, finished_at, "
        "message, green_weight) VALUES ('local-endpoint', 1, 2, 'Succeeded', '2026-01-01T00:00:00Z', "
        "'2026-01-01T00:00:09Z', 'old', 1.0);"
    )
    conn.commit()
    conn.close()
    # The daemon (a fleet of 4 at 25%) records the 4 steps it plans for a shift from v2.
    store = StateStore(home / "platform.db", "local-endpoint")
    try:
        with store.transaction() as c:
            store.add_deployment(
                c, from_version=2, to_version=3, status=DEPLOY_SUCCEEDED, message="new", planned_steps=4
            )
            # A person's `mlops deploy --rollback` from v3 (the review found it unmarked in the table).
            store.add_deployment(
                c,
                from_version=3,
                to_version=2,
                status=DEPLOY_SUCCEEDED,
                message="rollback from v3 to v2",
                rollback_of=3,
                planned_steps=4,
            )
    finally:
        store.close()
    # The shell's own settings (a fleet of 10 at 10%: ten steps) change nothing of the history.
    monkeypatch.setenv("MLOPS_INSTANCE_COUNT", "10")
    monkeypatch.setenv("MLOPS_TRAFFIC_STEP_PERCENT", "10")

    code, out, err = run(capsys, "deployments", "--json")
    assert (code, err) == (0, "")
    assert [(d["id"], d["to_version"], d["planned_steps"], d["rollback_of"]) for d in out] == [
        (1, 2, None, None),
        (2, 3, 4, None),
        (3, 2, 4, 3),
    ]
    code, text, err = run(capsys, "deployments")
    assert (code, err) == (0, "")
    cells = [line.split()[:7] for line in text.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])]
    assert cells == [
        ["1", "v1", "v2", "Succeeded", "100%", "-", "9.0s"],
        ["2", "v2", "v3", "Succeeded", "100%", "4", "0.0s"],
        ["3", "v3", "v2", "(rollback)", "Succeeded", "100%", "4"],
    ]


def test_builds_deployments_and_requests_verbs(
    versions: LocalRegistry, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = LocalSettings.from_env()
    with builds.BuildStore(settings) as store:
        first = store.enqueue("a" * 40, ref="refs/heads/main")
        store.finish(first.id, builds.SUCCEEDED, model_version=1)
        second = store.enqueue("b" * 40, ref="refs/heads/main")
        store.finish(second.id, builds.FAILED, reason="accuracy 0.5 is below the quality gate 0.9")
    code, out, _ = run(capsys, "builds", "--json")
    assert [(b["id"], b["commit"], b["status"], b["reason"], b["model_version"]) for b in out] == [
        ("1", "a" * 40, "Succeeded", None, 1),
        ("2", "b" * 40, "Failed", "accuracy 0.5 is below the quality gate 0.9", None),
    ]
    code, text, _ = run(capsys, "builds")
    assert code == 0 and "accuracy 0.5 is below the quality gate 0.9" in text

    _history(home, (None, 1, DEPLOY_SUCCEEDED), (1, 2, DEPLOY_ROLLED_BACK), serving=1)
    code, out, _ = run(capsys, "deployments", "--json")
    assert [
        (
            d["from_version"],
            d["to_version"],
            d["status"],
            d["planned_steps"],
            d["reached_share"],
            d["message"],
        )
        for d in out
    ] == [
        (None, 1, "Succeeded", 1, 1.0, "ended Succeeded"),
        # LINEAR in whole instances of the default fleet of 2: two steps (lifecycle.linear_shares).
        (1, 2, "RolledBack", 2, 0.0, "ended RolledBack"),
    ]
    assert all(d["duration_seconds"] is not None and d["duration_seconds"] >= 0 for d in out)

    ids = _requests(home)
    code, out, _ = run(capsys, "requests", "--json")
    assert [r["request_id"] for r in out] == ids[::-1]  # newest first
    assert [r["request_id"] for r in run(capsys, "requests", "--version", "2", "--json")[1]] == ["r-4", "r-3"]
    assert [r["request_id"] for r in run(capsys, "requests", "--status", "5xx", "--json")[1]] == ["r-4"]
    assert [r["request_id"] for r in run(capsys, "requests", "--status", "400", "--json")[1]] == ["r-1"]
    window = run(
        capsys, "requests", "--since", "2026-12-01T10:01", "--until", "2026-12-01T10:02:30", "--json"
    )
    assert [r["request_id"] for r in window[1]] == ["r-3", "r-2"]
    code, one, _ = run(capsys, "requests", "r-2", "--json")
    assert (code, one["status_code"], one["model_version"], one["caller"]) == (
        0,
        200,
        "1",
        {"source_ip": "127.0.0.1"},
    )
    code, _, err = run(capsys, "requests", "nope")
    assert (code, err) == (1, "mlops: error: no stored request has id 'nope' (see `mlops requests`)\n")
    assert run(capsys, "requests", "--status", "teapot")[0] == 2


@pytest.mark.parametrize(
    ("verb", "message"),
    [
        (["deployments"], "mlops: error: the AWS deployer keeps no deployment history"),
        (["requests"], "mlops: error: TABLE_NAME is not known: name the stack"),
    ],
)
def test_aws_says_which_history_it_does_not_have(
    aws_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    verb: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("MLOPS_STACK", raising=False)
    monkeypatch.delenv("MLOPS_STACK_OUTPUTS", raising=False)
    code, out, err = run(capsys, "--target", "aws", *verb, "--json")
    assert code == 1
    assert err.startswith(message)
    assert out == {"error": err.strip().removeprefix("mlops: error: "), "exit_code": 1}
    assert not out["error"].startswith("mlops")


def test_aws_builds_come_from_codebuild_with_the_version_they_made(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from mlops.aws import AwsBackend, AwsSettings
    from mlops.backend import ModelVersion

    class CodeBuild:
        def list_builds_for_project(self, **kw: Any) -> dict[str, Any]:
            assert kw == {"projectName": "p-train", "sortOrder": "DESCENDING"}
            return {"ids": ["p-train:2", "p-train:1"]}

        def batch_get_builds(self, ids: list[str]) -> dict[str, Any]:
            found = {
                "p-train:1": {
                    "id": "p-train:1",
                    "buildStatus": "SUCCEEDED",
                    "resolvedSourceVersion": "a" * 40,
                    "startTime": datetime(2026, 12, 1, 10, tzinfo=UTC),
                    "phases": [{"phaseType": "BUILD", "phaseStatus": "SUCCEEDED"}],
                },
                "p-train:2": {
                    "id": "p-train:2",
                    "buildStatus": "FAILED",
                    "resolvedSourceVersion": "b" * 40,
                    "startTime": datetime(2026, 12, 1, 11, tzinfo=UTC),
                    "phases": [
                        {
                            "phaseType": "BUILD",
                            "phaseStatus": "FAILED",
                            "contexts": [{"message": "gate: 0.5 < 0.9"}],
                        }
                    ],
                },
            }
            return {"builds": [found[i] for i in ids]}

    backend = AwsBackend(AwsSettings(group="g", build_project="p-train"), clients={"codebuild": CodeBuild()})
    monkeypatch.setattr(
        AwsBackend,
        "list_models",
        lambda self: [ModelVersion("g", 1, "arn", APPROVED, "t", source_commit="a" * 40)],
    )
    assert [(b.id, b.status, b.model_version, b.reason) for b in backend.builds()] == [
        ("p-train:1", "SUCCEEDED", 1, None),
        ("p-train:2", "FAILED", None, "BUILD: gate: 0.5 < 0.9"),
    ]
    assert backend.build("p-train:2").status == "FAILED"


def test_brackets_in_stored_data_are_shown_as_sent_never_as_markup(
    versions: LocalRegistry, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review finding: a client's body (or a build's reason quoting the config) holding "[/red]" made
    # `mlops requests` crash with rich's MarkupError, and "[gate]" vanished from a build's reason.
    settings = LocalSettings.from_env()
    with builds.BuildStore(settings) as store:
        failed = store.enqueue("c" * 40, ref="refs/heads/main")
        store.finish(failed.id, builds.FAILED, reason="mlops.toml: [gate] unknown key(s) minimum")
    conn = sqlite3.connect(settings.db_path)
    conn.executescript(records_schema)
    body = '{"context": "5.1[/red], [bold]3.5"}'
    conn.execute(
        INSERT, ("r-[x]", "2026-12-01T10:00:00.000Z", body, '{"error": "bad"}', 400, None, 0.5, "{}")
    )
    conn.commit()
    conn.close()
    monkeypatch.setenv("COLUMNS", "250")
    code, text, err = run(capsys, "builds")
    assert (code, err) == (0, "") and "mlops.toml: [gate] unknown key(s) minimum" in text
    code, text, err = run(capsys, "requests")
    assert (code, err) == (0, "") and body in text and "r-[x]" in text
    code, text, err = run(capsys, "requests", "r-[x]")
    assert (code, err) == (0, "")
    assert f"input:  {body}" in text and "model (none answered)" in text


def test_stored_requests_print_a_callers_control_characters_as_escapes(
    versions: LocalRegistry, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review finding: a caller's escape sequences, stored as sent, reached the terminal of whoever ran
    # `mlops requests` (clear screen, colours, window title).
    settings = LocalSettings.from_env()
    conn = sqlite3.connect(settings.db_path)
    conn.executescript(records_schema)
    body = '{"context": "1,2,\x1b[2J3,4"}\x1b]0;pwned\x07'
    answer = '{"error": "row 1, column 3: \x9b"}'
    conn.execute(INSERT, ("r-esc", "2026-12-01T10:00:00.000Z", body, answer, 400, None, 0.5, "{}"))
    conn.commit()
    conn.close()
    monkeypatch.setenv("COLUMNS", "200")
    for verb in (["requests"], ["requests", "r-esc"]):
        code, text, err = run(capsys, *verb)
        assert (code, err) == (0, "")
        assert not any(c in text for c in "\x1b\x07\x9b"), text
        assert "\\x1b[2J3,4" in text
    assert "\\x1b]0;pwned\\x07" in text and "\\x9b" in text
    # --json keeps what was sent, exactly (JSON escapes it).
    code, out, _ = run(capsys, "requests", "r-esc", "--json")
    assert (out["input"], out["output"]) == (body, answer)


@pytest.mark.parametrize("big_input", [False, True])
@pytest.mark.parametrize("columns", [80, 120, 200])
def test_requests_fit_the_terminal_with_id_status_version_and_latency(
    versions: LocalRegistry,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    columns: int,
    big_input: bool,
) -> None:
    # Review findings: at 80 columns the status, version and ms columns were squeezed out of sight; an
    # input longer than the line (a 100 KB batch, or 300 characters) hid the id, time and ms columns.
    settings = LocalSettings.from_env()
    conn = sqlite3.connect(settings.db_path)
    conn.executescript(records_schema)
    rid = "3f2b8c1e-9d4a-4e7b-8f21-6a5c0d9e7b13"
    body = '{"context": "' + "5.1, 3.5, 1.4, 0.2\n" * (6000 if big_input else 0) + '5.1, 3.5"}'
    conn.execute(INSERT, (rid, "2026-12-01T10:00:00.000Z", body, "{}", 400, "2", 1.25, "{}"))
    conn.commit()
    conn.close()
    monkeypatch.setenv("COLUMNS", str(columns))
    code, text, err = run(capsys, "requests")
    assert (code, err) == (0, "")
    lines = text.splitlines()
    assert all(len(line) <= columns for line in lines)
    row = next(line for line in lines if rid[:8] in line)
    assert " 400 " in row and " 2 " in row and "1.2" in row
    assert '{"context' in row  # the input's start, cut to what the line has room for
    # The whole id is there (folded when narrow): it can be read back and looked up.
    assert rid in "".join(line.split()[0] for line in lines if line.strip() and line.split()[0] in rid)
