"""Read-only views of the local platform's history: builds, deployments, requests, the lifecycle view.

The CLI verbs (`mlops builds`, `deployments`, `requests`, the approval outlook) and the console read
the same tables through these functions, so a page and a command never disagree. Nothing here writes:
the tables belong to build.py, state.py/deployer.py and records.py.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops.backend import (
    DEPLOY_SUCCEEDED,
    BuildRecord,
    DeploymentRecord,
    PlatformError,
    RequestFilter,
    RequestRecord,
)
from mlops.local import build as builds
from mlops.local.db import connect
from mlops.local.records import SCHEMA as RECORDS_SCHEMA
from mlops.local.settings import LocalSettings
from mlops.local.state import DeploymentRow, StateStore
from workloads.serve.deployer import lifecycle

MAX_REQUESTS = 1000


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        began = datetime.fromisoformat(start.replace("Z", "+00:00"))
        ended = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((ended - began).total_seconds(), 3)


def deployment_record(row: DeploymentRow) -> DeploymentRecord:
    reached = 1.0 if row.status == DEPLOY_SUCCEEDED else row.green_weight
    return DeploymentRecord(
        id=row.id,
        from_version=row.from_version,
        to_version=row.to_version,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        message=row.message,
        planned_steps=row.planned_steps,  # the daemon's plan, recorded when it started (None: unknown)
        reached_share=reached,
        duration_seconds=_seconds(row.started_at, row.finished_at),
        rollback_of=row.rollback_of,
    )


def _state(settings: LocalSettings) -> StateStore | None:
    if not settings.db_path.exists():
        return None
    return StateStore(settings.db_path, settings.endpoint_name)


def deployments(settings: LocalSettings) -> list[DeploymentRecord]:
    """Every deployment of the endpoint, oldest first, Skipped approvals included (they say why)."""
    store = _state(settings)
    if store is None:
        return []
    try:
        return [deployment_record(row) for row in store.deployments()]
    finally:
        store.close()


def endpoint_view(settings: LocalSettings) -> lifecycle.EndpointView:
    """The endpoint as the shared lifecycle rules see it, read from the database exactly as the
    daemon's deployer reads it (Deployer.view: the replayed history, the recorded serving version and
    the deployment in progress), so a prediction made here is the decision the deployer makes."""
    from mlops.local.deployer import replay  # the deployer's own replay of the history

    store = _state(settings)
    if store is None:
        return lifecycle.EndpointView()
    try:
        running = store.in_progress()
        return replace(
            replay(store.deployments()),
            serving=store.serving_version(),
            deploying=running[-1].to_version if running else None,
        )
    finally:
        store.close()


def build_record(build: builds.Build) -> BuildRecord:
    return BuildRecord(
        id=str(build.id),
        commit=build.commit,
        status=build.status,
        created_at=build.created_at,
        finished_at=build.finished_at,
        reason=build.failure_reason,
        model_version=build.model_version,
        data_path=build.data_path,
    )


def all_builds(settings: LocalSettings) -> list[BuildRecord]:
    if not settings.db_path.exists():
        return []
    with builds.BuildStore(settings) as store:
        return [build_record(b) for b in store.all()]


def build_log(settings: LocalSettings, build_id: int, limit: int = 2000) -> list[str]:
    lines = list(builds.follow_log(settings, build_id))
    return lines[-limit:]


# --- requests -------------------------------------------------------------------------------------


def _request(row: sqlite3.Row) -> RequestRecord:
    try:
        caller = json.loads(row["caller"])
    except ValueError:
        caller = {}
    return RequestRecord(
        request_id=row["request_id"],
        created_at=row["created_at"],
        status_code=row["status_code"],
        model_version=row["model_version"],
        latency_ms=row["latency_ms"],
        input=row["input"],
        output=row["output"],
        caller=caller if isinstance(caller, dict) else {},
    )


def _records(settings: LocalSettings) -> sqlite3.Connection:
    conn = connect(settings.db_path)
    conn.executescript(RECORDS_SCHEMA)  # an empty platform has no table yet; reading it is not an error
    return conn


def requests(settings: LocalSettings, where: RequestFilter) -> list[RequestRecord]:
    """The newest stored requests matching `where`, newest first."""
    if not settings.db_path.exists():
        return []
    sql = "SELECT * FROM requests WHERE 1=1"
    args: list[Any] = []
    if where.version is not None:
        sql += " AND model_version = ?"
        args.append(str(where.version).removeprefix("v"))
    if where.status is not None:
        if 1 <= where.status <= 5:  # a class: 4 = every 4xx
            sql += " AND status_code BETWEEN ? AND ?"
            args += [where.status * 100, where.status * 100 + 99]
        else:
            sql += " AND status_code = ?"
            args.append(where.status)
    if where.since:
        sql += " AND created_at >= ?"
        args.append(where.since)
    if where.until:
        sql += " AND created_at <= ?"
        args.append(where.until)
    # Insertion order is time order (each record is stored as its answer is sent), and rowid order
    # lets SQLite walk the table backwards and stop at the limit instead of sorting all of it.
    sql += " ORDER BY rowid DESC LIMIT ?"
    args.append(max(1, min(where.limit, MAX_REQUESTS)))
    conn = _records(settings)
    try:
        return [_request(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def request(settings: LocalSettings, request_id: str) -> RequestRecord:
    row = None
    if settings.db_path.exists():
        conn = _records(settings)
        try:
            row = conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        finally:
            conn.close()
    if row is None:
        raise PlatformError(f"no stored request has id {request_id!r} (see `mlops requests`)")
    return _request(row)


STATS_WINDOW_ROWS = 20_000


def request_stats(settings: LocalSettings, since: str) -> dict[str, dict[str, float]]:
    """Per version since `since`: requests, errors (5xx), error rate, mean and p95 latency (ms).

    Read from the newest STATS_WINDOW_ROWS records only (the table has no time index, and the console
    asks every second): during a shift that is all of them unless the load is very high."""
    if not settings.db_path.exists():
        return {}
    conn = _records(settings)
    try:
        rows = conn.execute(
            "SELECT model_version, status_code, latency_ms FROM requests "
            "WHERE rowid > (SELECT COALESCE(MAX(rowid), 0) FROM requests) - ? "
            "AND created_at >= ? AND model_version IS NOT NULL",
            (STATS_WINDOW_ROWS, since),
        ).fetchall()
    finally:
        conn.close()
    by_version: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        by_version.setdefault(str(r["model_version"]), []).append((r["status_code"], r["latency_ms"]))
    stats: dict[str, dict[str, float]] = {}
    for version, items in by_version.items():
        latencies = sorted(lat for _, lat in items)
        errors = sum(1 for code, _ in items if code >= 500)
        stats[version] = {
            "requests": len(items),
            "errors": errors,
            "error_rate": errors / len(items),
            "latency_ms_mean": round(sum(latencies) / len(latencies), 3),
            "latency_ms_p95": latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)],
        }
    return stats


# --- an example request for the serving model -----------------------------------------------------


def model_metadata(settings: LocalSettings, version: int) -> dict[str, Any]:
    path = settings.models_dir / settings.group / str(version) / "metadata.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _data_row(repo: Path, commit: str, data_path: str, features: list[str]) -> list[str] | None:
    proc = subprocess.run(
        ["git", f"--git-dir={repo}", "show", f"{commit}:{data_path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or len(lines) < 2:
        return None
    header = [h.strip() for h in lines[0].split(",")]
    values = [v.strip() for v in lines[1].split(",")]
    if not all(f in header for f in features) or len(values) != len(header):
        return None
    return [values[header.index(f)] for f in features]


def example_context(settings: LocalSettings, version: int | None) -> str:
    """One CSV row the serving version accepts: the first row of the data it was trained on (its
    features, in its order), so the printed curl works whatever model serves."""
    if version is None:
        return "5.1, 3.5, 1.4, 0.2"
    features = [str(f) for f in model_metadata(settings, version).get("feature_names", [])]
    from mlops.local.registry import LocalRegistry

    registry = LocalRegistry(settings.db_path, settings.models_dir)
    try:
        model = registry.get(settings.group, version)
    except PlatformError:
        model = None
    finally:
        registry.close()
    if model is not None and model.source_commit and model.data_location and features:
        data_path = model.data_location.rsplit(":", 1)[-1]
        row = _data_row(settings.repo_path, model.source_commit, data_path, features)
        if row is not None:
            return ", ".join(row)
    if features:
        return ", ".join("0" for _ in features)
    return "5.1, 3.5, 1.4, 0.2"
