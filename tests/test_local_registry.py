"""The local registry keeps SageMaker Model Registry semantics and survives restarts."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from mlops.backend import APPROVED, PENDING, REJECTED, PlatformError
from mlops.local.db import connect, transaction
from mlops.local.registry import LocalRegistry, package_arn, parse_ref


def _model_dir(tmp_path: Path, name: str = "m") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "metadata.json").write_text(json.dumps({"class_labels": ["a", "b"]}))
    (d / "model.skops").write_bytes(b"weights")
    return d


def _registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "state" / "platform.db", tmp_path / "state" / "models")


def test_versions_count_up_per_group_and_copy_the_artifact(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    src = _model_dir(tmp_path)
    v1 = reg.register(
        "iris", src, metrics={"accuracy": 0.9}, source_commit="abc", data_location="data/iris.csv"
    )
    v2 = reg.register("iris", src, metrics={"accuracy": 0.95})
    other = reg.register("wine", src, metrics={})
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    assert v1.status == PENDING
    assert v1.arn == package_arn("iris", 1)
    assert v1.metrics == {"accuracy": 0.9}
    assert (v1.source_commit, v1.data_location) == ("abc", "data/iris.csv")
    assert (reg.artifact_dir("iris", 2) / "model.skops").read_bytes() == b"weights"
    assert [m.version for m in reg.versions("iris")] == [1, 2]


def test_approval_records_approver_and_emits_one_event(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    reg.register("iris", _model_dir(tmp_path), metrics={})
    approved = reg.set_status("iris", 1, APPROVED, approver="alice", description="looks good")
    assert (approved.status, approved.approver, approved.description) == (APPROVED, "alice", "looks good")
    events = reg.events_after(0)
    assert [(e["grp"], e["version"], e["status"]) for e in events] == [("iris", 1, APPROVED)]
    assert reg.events_after(events[-1]["id"]) == []


def test_only_pending_versions_change_without_force(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    reg.register("iris", _model_dir(tmp_path), metrics={})
    reg.set_status("iris", 1, REJECTED, approver="bob", description="bad recall")
    with pytest.raises(PlatformError, match="version 1 is Rejected, not PendingManualApproval"):
        reg.set_status("iris", 1, APPROVED, approver="bob")
    assert reg.set_status("iris", 1, APPROVED, approver="bob", force=True).status == APPROVED


def test_missing_version_and_bad_refs_are_named(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    with pytest.raises(PlatformError, match="model-package/iris/7 does not exist"):
        reg.set_status("iris", 7, APPROVED, approver="x")
    with pytest.raises(PlatformError, match="'seven' is not a model version"):
        parse_ref("seven", "iris")
    assert parse_ref("3", "iris") == ("iris", 3)
    assert parse_ref("v4", "iris") == ("iris", 4)
    assert parse_ref(package_arn("wine", 2), "iris") == ("wine", 2)
    assert parse_ref("arn:aws:sagemaker:us-east-1:123456789012:model-package/iris/5", "x") == ("iris", 5)


def test_state_survives_reopening(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    reg.register("iris", _model_dir(tmp_path), metrics={"accuracy": 1.0})
    reg.set_status("iris", 1, APPROVED, approver="alice")
    reg.close()
    again = _registry(tmp_path)
    assert again.get("iris", 1).status == APPROVED
    assert again.latest_approved("iris") is not None
    assert len(again.events_after(0)) == 1


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path) -> None:
    src = _model_dir(tmp_path)
    state = tmp_path / "state"
    _registry(tmp_path).close()
    versions: list[int] = []

    def register() -> None:
        reg = LocalRegistry(state / "platform.db", state / "models")
        versions.append(reg.register("iris", src, metrics={}).version)
        reg.close()

    threads = [threading.Thread(target=register) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(1, 9))


def test_latest_approved(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    for _ in range(3):
        reg.register("iris", _model_dir(tmp_path, f"m{_}"), metrics={})
    assert reg.latest_approved("iris") is None
    reg.set_status("iris", 1, APPROVED, approver="a")
    reg.set_status("iris", 3, APPROVED, approver="a")
    reg.set_status("iris", 2, REJECTED, approver="a")
    latest = reg.latest_approved("iris")
    assert latest is not None and latest.version == 3


def test_transaction_commits_on_success_and_rolls_back_on_error(tmp_path: Path) -> None:
    conn = connect(tmp_path / "t.db")
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError), transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
        conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction is False
    assert [r[0] for r in conn.execute("SELECT x FROM t")] == [1]
    conn.close()


def test_history_replays_rollbacks_and_starts_over_after_a_teardown() -> None:
    from mlops.backend import DEPLOY_ROLLED_BACK, DEPLOY_SKIPPED, DEPLOY_SUCCEEDED
    from mlops.local.deployer import RESTART_MESSAGE, TEARDOWN_MESSAGE, replay
    from mlops.local.state import DeploymentRow

    def row(n: int, to: int, status: str, message: str = "", rollback_of: int | None = None) -> DeploymentRow:
        return DeploymentRow(n, None, to, status, "t", "t", message, 0.0, rollback_of)

    rows = [
        row(1, 1, DEPLOY_SUCCEEDED),
        row(2, 2, DEPLOY_ROLLED_BACK, "v2 cannot load its model"),
        row(3, 3, DEPLOY_SUCCEEDED),
        row(4, 4, DEPLOY_ROLLED_BACK, RESTART_MESSAGE + "; v3 keeps all traffic"),
        row(5, 1, DEPLOY_SUCCEEDED, "rollback from v3 to v1", rollback_of=3),
    ]
    view = replay(rows)
    assert (view.served, view.failed) == ((1,), frozenset({2, 3}))  # 4 was only interrupted
    after = replay([*rows, row(6, 1, DEPLOY_SKIPPED, TEARDOWN_MESSAGE), row(7, 4, DEPLOY_SUCCEEDED)])
    assert (after.served, after.failed) == ((4,), frozenset())


def test_an_old_database_gains_the_rollback_column_and_keeps_its_rows(tmp_path: Path) -> None:
    import sqlite3

    from mlops.local.state import StateStore

    db = tmp_path / "platform.db"
    old = sqlite3.connect(db)
    old.execute(
        "CREATE TABLE deployments (id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT NOT NULL, "
        "from_version INTEGER, to_version INTEGER NOT NULL, status TEXT NOT NULL, started_at TEXT NOT NULL, "
        "finished_at TEXT, message TEXT NOT NULL DEFAULT '', green_weight REAL NOT NULL DEFAULT 0)"
    )
    old.execute(
        "INSERT INTO deployments (endpoint, to_version, status, started_at) VALUES ('e', 1, 'Succeeded', 't')"
    )
    old.commit()
    old.close()
    first, second = StateStore(db, "e"), StateStore(db, "e")  # the second finds it migrated
    try:
        (dep,) = first.deployments()
        assert (dep.to_version, dep.status, dep.rollback_of) == (1, "Succeeded", None)
        assert [d.id for d in second.deployments()] == [dep.id]
    finally:
        first.close()
        second.close()
