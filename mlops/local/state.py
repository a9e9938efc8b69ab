"""The local endpoint's state in SQLite: what serves, which variant processes run, every deployment.

The daemon writes here on every change (a traffic step, a rollback, a finished deployment), so
`mlops status` can show the split live and a restarted daemon knows which version owned traffic
before the crash. The serving version only changes when a deployment succeeds, in the same
transaction that marks it Succeeded: that is what makes "one version owns all traffic" recoverable.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mlops.backend import DEPLOY_IN_PROGRESS, DeploymentStatus, EndpointStatus, VariantStatus
from mlops.local.db import connect, transaction
from mlops.local.records import database_bytes
from mlops.local.registry import now_iso
from mlops.local.runfile import info
from mlops.local.settings import LocalSettings
from workloads.serve.deployer import lifecycle

log = logging.getLogger("mlops.local.state")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoint_state (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    serving_version INTEGER,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoint_variants (
    endpoint TEXT NOT NULL,
    name TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    pid INTEGER,
    port INTEGER,
    weight REAL NOT NULL,
    health TEXT NOT NULL,
    PRIMARY KEY (endpoint, name)
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    message TEXT NOT NULL DEFAULT '',
    green_weight REAL NOT NULL DEFAULT 0,
    rollback_of INTEGER,
    planned_steps INTEGER
);
CREATE TABLE IF NOT EXISTS deployer_cursor (
    endpoint TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL
);
"""

# Endpoint statuses (SageMaker's EndpointStatus names). OutOfService: a version is recorded as serving
# but the daemon is not running, so nothing answers.
IN_SERVICE = "InService"
CREATING = "Creating"
UPDATING = "Updating"
ROLLING_BACK = "RollingBack"
FAILED = "Failed"
ABSENT = "Absent"
OUT_OF_SERVICE = "OutOfService"
STOPPED_NOTE = (
    "the local platform is not running: nothing answers and nothing deploys until `make up` or "
    "`mlops local up` starts it"
)


@dataclass(frozen=True)
class VariantRow:
    name: str
    model_version: int
    pid: int | None
    port: int | None
    weight: float
    health: str


@dataclass(frozen=True)
class DeploymentRow:
    id: int
    from_version: int | None
    to_version: int
    status: str
    started_at: str
    finished_at: str | None
    message: str
    green_weight: float
    rollback_of: int | None = None
    """The version a rollback by hand left (None: not a rollback)."""
    planned_steps: int | None = None
    """LINEAR steps the daemon planned for it with its own fleet and step size when it started (None: a
    Skipped entry, which shifts nothing, or a row recorded before the daemon stored its steps)."""

    def as_status(self) -> DeploymentStatus:
        return DeploymentStatus(
            target_version=self.to_version,
            status=self.status,
            started_at=self.started_at,
            finished_at=self.finished_at,
            message=self.message,
            from_version=self.from_version,
        )


class StateStore:
    """One connection, used from one thread (the daemon's event loop, or a CLI reading status)."""

    def __init__(self, db_path: Path, endpoint: str) -> None:
        self.endpoint = endpoint
        self._conn = connect(db_path)
        self._conn.executescript(SCHEMA)
        self._add_column("rollback_of INTEGER")  # a database made before rollbacks were recorded
        self._add_column("planned_steps INTEGER")  # before the daemon recorded its steps (NULL: unknown)

    def _add_column(self, column: str) -> None:
        """Add `column` ("name TYPE") to deployments unless a database made before it has it."""
        name = column.split()[0]
        columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(deployments)")}
        if name in columns:
            return
        try:
            with transaction(self._conn) as conn:
                conn.execute(f"ALTER TABLE deployments ADD COLUMN {column}")
        except sqlite3.OperationalError as exc:
            if "duplicate column name" not in str(exc):  # another process migrated it first
                raise

    def close(self) -> None:
        self._conn.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    # --- endpoint -------------------------------------------------------------------------------

    def endpoint_row(self) -> tuple[str, int | None]:
        row = self._conn.execute(
            "SELECT status, serving_version FROM endpoint_state WHERE name=?", (self.endpoint,)
        ).fetchone()
        if row is None:
            return ABSENT, None
        return row["status"], row["serving_version"]

    def serving_version(self) -> int | None:
        return self.endpoint_row()[1]

    def set_endpoint(
        self, status: str, serving_version: int | None, conn: sqlite3.Connection | None = None
    ) -> None:
        (conn or self._conn).execute(
            "INSERT INTO endpoint_state (name, status, serving_version, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET status=excluded.status, "
            "serving_version=excluded.serving_version, updated_at=excluded.updated_at",
            (self.endpoint, status, serving_version, now_iso()),
        )

    def set_endpoint_status(self, status: str) -> None:
        self.set_endpoint(status, self.serving_version())

    # --- variants -------------------------------------------------------------------------------

    def variants(self) -> list[VariantRow]:
        rows = self._conn.execute(
            "SELECT * FROM endpoint_variants WHERE endpoint=? ORDER BY model_version", (self.endpoint,)
        ).fetchall()
        return [
            VariantRow(r["name"], r["model_version"], r["pid"], r["port"], r["weight"], r["health"])
            for r in rows
        ]

    def put_variant(self, row: VariantRow, conn: sqlite3.Connection | None = None) -> None:
        (conn or self._conn).execute(
            "INSERT INTO endpoint_variants (endpoint, name, model_version, pid, port, weight, health) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT(endpoint, name) DO UPDATE SET "
            "model_version=excluded.model_version, pid=excluded.pid, port=excluded.port, "
            "weight=excluded.weight, health=excluded.health",
            (self.endpoint, row.name, row.model_version, row.pid, row.port, row.weight, row.health),
        )

    def delete_variant(self, name: str, conn: sqlite3.Connection | None = None) -> None:
        (conn or self._conn).execute(
            "DELETE FROM endpoint_variants WHERE endpoint=? AND name=?", (self.endpoint, name)
        )

    def clear_variants(self, conn: sqlite3.Connection | None = None) -> None:
        (conn or self._conn).execute("DELETE FROM endpoint_variants WHERE endpoint=?", (self.endpoint,))

    # --- deployments ----------------------------------------------------------------------------

    @staticmethod
    def _deployment(row: sqlite3.Row) -> DeploymentRow:
        return DeploymentRow(
            id=row["id"],
            from_version=row["from_version"],
            to_version=row["to_version"],
            status=row["status"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            message=row["message"],
            green_weight=row["green_weight"],
            rollback_of=row["rollback_of"],
            planned_steps=row["planned_steps"],
        )

    def add_deployment(
        self,
        conn: sqlite3.Connection,
        *,
        from_version: int | None,
        to_version: int,
        status: str,
        message: str = "",
        rollback_of: int | None = None,
        planned_steps: int | None = None,
    ) -> int:
        stamp = now_iso()
        finished = None if status == DEPLOY_IN_PROGRESS else stamp
        cur = conn.execute(
            "INSERT INTO deployments (endpoint, from_version, to_version, status, started_at, finished_at, "
            "message, rollback_of, planned_steps) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                self.endpoint,
                from_version,
                to_version,
                status,
                stamp,
                finished,
                message,
                rollback_of,
                planned_steps,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def update_deployment(
        self,
        deployment_id: int,
        *,
        status: str | None = None,
        message: str | None = None,
        green_weight: float | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> None:
        sets: list[str] = []
        args: list[object] = []
        if status is not None:
            sets.append("status=?")
            args.append(status)
            if status != DEPLOY_IN_PROGRESS:
                sets.append("finished_at=?")
                args.append(now_iso())
        if message is not None:
            sets.append("message=?")
            args.append(message)
        if green_weight is not None:
            sets.append("green_weight=?")
            args.append(green_weight)
        if not sets:
            return
        (conn or self._conn).execute(
            f"UPDATE deployments SET {', '.join(sets)} WHERE id=?", (*args, deployment_id)
        )

    def deployment(self, deployment_id: int) -> DeploymentRow:
        row = self._conn.execute("SELECT * FROM deployments WHERE id=?", (deployment_id,)).fetchone()
        if row is None:
            raise KeyError(deployment_id)
        return self._deployment(row)

    def deployments(self) -> list[DeploymentRow]:
        rows = self._conn.execute(
            "SELECT * FROM deployments WHERE endpoint=? ORDER BY id", (self.endpoint,)
        ).fetchall()
        return [self._deployment(r) for r in rows]

    def latest_deployment(self) -> DeploymentRow | None:
        """The newest deployment that was attempted (Skipped entries are bookkeeping, not attempts)."""
        row = self._conn.execute(
            "SELECT * FROM deployments WHERE endpoint=? AND status != 'Skipped' ORDER BY id DESC LIMIT 1",
            (self.endpoint,),
        ).fetchone()
        return self._deployment(row) if row else None

    def refusals(self) -> list[DeploymentRow]:
        """Approvals refused for a breaking signature change since the last deployment attempt: they
        wait for a person (`mlops status` says so)."""
        rows = self._conn.execute(
            "SELECT * FROM deployments WHERE endpoint=? AND status = 'Skipped' AND id > "
            "(SELECT COALESCE(MAX(id), 0) FROM deployments WHERE endpoint=? AND status != 'Skipped') "
            "ORDER BY id",
            (self.endpoint, self.endpoint),
        ).fetchall()
        return [d for d in map(self._deployment, rows) if lifecycle.is_refusal(d.message)]

    def in_progress(self) -> list[DeploymentRow]:
        rows = self._conn.execute(
            "SELECT * FROM deployments WHERE endpoint=? AND status=? ORDER BY id",
            (self.endpoint, DEPLOY_IN_PROGRESS),
        ).fetchall()
        return [self._deployment(r) for r in rows]

    # --- the approval-event cursor --------------------------------------------------------------

    def cursor(self) -> int:
        row = self._conn.execute(
            "SELECT event_id FROM deployer_cursor WHERE endpoint=?", (self.endpoint,)
        ).fetchone()
        return int(row["event_id"]) if row else 0

    def set_cursor(self, event_id: int, conn: sqlite3.Connection | None = None) -> None:
        (conn or self._conn).execute(
            "INSERT INTO deployer_cursor (endpoint, event_id) VALUES (?,?) "
            "ON CONFLICT(endpoint) DO UPDATE SET event_id=excluded.event_id",
            (self.endpoint, event_id),
        )

    # --- the whole picture ----------------------------------------------------------------------

    def endpoint_status(self, *, running: bool) -> EndpointStatus:
        status, serving = self.endpoint_row()
        latest = self.latest_deployment()
        variants: list[VariantStatus] = []
        if running:
            variants = [
                # instances=None: the daemon's fleet size is its own setting, not in the database.
                VariantStatus(name=v.name, model_version=v.model_version, weight=v.weight, health=v.health)
                for v in self.variants()
            ]
        elif serving is not None:
            status = OUT_OF_SERVICE
        notes = [d.message for d in self.refusals()]
        if not running:
            # OutOfService alone reads like a fault of the model; say that the platform is simply down.
            notes.insert(0, STOPPED_NOTE)
        return EndpointStatus(
            name=self.endpoint,
            status=status,
            variants=variants,
            serving_version=serving,
            last_deployment=latest.as_status() if latest else None,
            notes=notes,
        )


def read_endpoint_status(settings: LocalSettings, *, running: bool | None = None) -> EndpointStatus:
    """The endpoint as recorded in the database, for when the daemon cannot be asked.

    With the daemon down nothing answers, so variants are empty and a recorded serving version is
    reported OutOfService; an InProgress deployment stays visible until the next start marks it.
    """
    if running is None:
        running = info(settings) is not None
    if not settings.db_path.exists():
        return EndpointStatus(
            name=settings.endpoint_name, status=ABSENT, notes=[] if running else [STOPPED_NOTE]
        )
    store = StateStore(settings.db_path, settings.endpoint_name)
    try:
        status = store.endpoint_status(running=running)
    finally:
        store.close()
    status.database_bytes = database_bytes(settings.db_path)
    return status


class StateWriteError(Exception):
    """A write to the state database kept failing for as long as its caller would wait."""


# The writer's own busy timeout: short, so a held lock is retried (and reported) instead of waited on
# in one blind 10 s call.
WRITER_BUSY_TIMEOUT_SECONDS = 1.0
_MAX_BACKOFF_SECONDS = 2.0


class StateWriter:
    """Every write of the daemon's deployer, on one thread of its own with its own connection.

    SQLite waits for a lock (another process's transaction, a checkpoint) inside the call; on the event
    loop that wait stopped every answer of the API. Here the loop only awaits a future. Writes run in
    the order they are submitted (one thread), each in its own IMMEDIATE transaction, and a failed one
    (locked, disk full, read-only) is retried with backoff until it lands or its caller's ceiling
    passes. `failing` says why writes are failing right now, for `mlops status`.
    """

    def __init__(self, db_path: Path, endpoint: str) -> None:
        self.db_path = db_path
        self.endpoint = endpoint
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-writer")
        self._store: StateStore | None = None
        self.failing: str | None = None
        self.failures = 0

    def _run(self, fn: Callable[[StateStore, sqlite3.Connection], T]) -> T:
        if self._store is None:
            self._store = StateStore(self.db_path, self.endpoint)
            self._store._conn.execute(f"PRAGMA busy_timeout={int(WRITER_BUSY_TIMEOUT_SECONDS * 1000)}")
        with self._store.transaction() as conn:
            return fn(self._store, conn)

    async def write(
        self, fn: Callable[[StateStore, sqlite3.Connection], T], *, what: str, give_up_after: float | None
    ) -> T:
        """Run fn(store, conn) in one transaction on the writer thread; retry until it commits, or
        raise StateWriteError once give_up_after seconds have passed (None: never give up)."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        backoff = 0.05
        while True:
            try:
                result = await loop.run_in_executor(self._pool, self._run, fn)
            except sqlite3.Error as exc:
                self.failures += 1
                self.failing = f"{what}: {exc}"
                if self.failures == 1 or self.failures % 20 == 0:
                    log.warning("state write failed (%d so far), retrying: %s", self.failures, self.failing)
                if give_up_after is not None and time.monotonic() - started >= give_up_after:
                    raise StateWriteError(f"could not record {what}: {exc}") from exc
                await asyncio.sleep(backoff)
                backoff = min(_MAX_BACKOFF_SECONDS, backoff * 2)
                continue
            if self.failing is not None:
                log.info("state writes work again (after %d failures)", self.failures)
            self.failing = None
            return result

    def close(self) -> None:
        def _close() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        self._pool.submit(_close).result()
        self._pool.shutdown()
