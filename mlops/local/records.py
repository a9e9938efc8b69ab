"""Every inference request and its answer, stored in SQLite before the answer is sent.

One writer thread owns a connection and commits in groups: whatever records arrived while the previous
commit ran go into the next transaction, and each request's answer waits for the commit holding its
record. So a 2xx a client saw is always on disk (WAL: it survives a kill -9 of the daemon), and the
cost of a commit is shared by every request in the group, which is what reaches four-digit req/s on
SQLite without giving up durability per request.

When the database cannot take a group (held lock, full disk, read-only file) for COMMIT_PATIENCE
seconds, the records go to the spool instead: an append-only file on a memory filesystem (/dev/shm),
so it shares neither the database's lock nor its disk, and it survives a crash of the daemon. The
client gets its answer; the writer moves the spool into the database once it takes writes again (and
at the next start, for a spool a crashed daemon left). Only when the spool cannot take the records
either is the request refused: the client gets 503, and the record kept (in memory, stored once the
fault clears, and in the log) is that 503, exactly what the client received.

Records older than the retention period are deleted by the writer, a batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops.local.db import connect, transaction

log = logging.getLogger("mlops.local.records")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    model_version TEXT,
    latency_ms REAL NOT NULL,
    caller TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_created_at ON requests (created_at);
"""
# OR IGNORE: a spool replayed after a crash may hold records the database already took.
INSERT = "INSERT OR IGNORE INTO requests VALUES (?,?,?,?,?,?,?,?)"
COLUMNS = (
    "request_id",
    "created_at",
    "input",
    "output",
    "status_code",
    "model_version",
    "latency_ms",
    "caller",
)
# (request_id, created_at, input, output, status_code, model_version, latency_ms, caller)
Record = tuple[str, str, str, str, int, str | None, float, str]

_MAX_BATCH = 2000
_STOP = object()
# How long a group of records waits for the database before it goes to the spool. The writer's
# busy timeout is this short on purpose: a client waits at most about this long for its answer.
COMMIT_PATIENCE_SECONDS = 1.5
# How often the writer retries the database while the spool holds records, and prunes old ones.
RETRY_SECONDS = 1.0
PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BATCH = 5000
DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024
# Refused records kept in memory until they can be stored (beyond this they are only in the log).
_MAX_REFUSED_KEPT = 100_000


def default_spool_path(db_path: Path) -> Path | None:
    """A spool file on /dev/shm for this database, or None where /dev/shm is missing or is on the same
    filesystem as the database (a spool there would share the fault it is for)."""
    shm = Path("/dev/shm")
    try:
        if not shm.is_dir() or shm.stat().st_dev == db_path.parent.stat().st_dev:
            return None
    except OSError:
        return None
    digest = hashlib.sha256(str(db_path.resolve()).encode()).hexdigest()[:16]
    return shm / f"mlops-{os.getuid()}" / f"records-{digest}.jsonl"


class RecordNotStoredError(Exception):
    """Neither the database nor the spool took the record: the request is refused with `output`
    (a 503 body), which is also what the kept record says the client got."""

    def __init__(self, request_id: str, output: bytes) -> None:
        super().__init__(request_id)
        self.output = output


Refusal = Callable[[str], bytes]


def _default_refusal(request_id: str) -> bytes:
    return json.dumps(
        {"error": "the request could not be stored; try again", "request_id": request_id}
    ).encode()


class RecordStore:
    def __init__(
        self,
        db_path: Path,
        *,
        spool_path: Path | str | None = "default",
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        retention_days: float = 0.0,
        refusal: Refusal = _default_refusal,
    ) -> None:
        self.db_path = db_path
        self.spool_path: Path | None = (
            default_spool_path(db_path)
            if spool_path == "default"
            else (Path(spool_path) if spool_path else None)
        )
        self.spool_max_bytes = spool_max_bytes
        self.retention_days = retention_days
        self._refusal = refusal
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Records of the current event-loop iteration, handed to the writer in one put: waking the
        # writer thread once per request costs more (GIL hand-offs) than the insert itself.
        self._pending: list[tuple[Record, asyncio.Future[bytes | None]]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refused: list[Record] = []  # writer thread only
        self.stored = 0
        self.spooled = 0  # records now in the spool, waiting for the database
        self.refused = 0  # requests answered 503 because neither place took their record
        self.pruned = 0
        self.failing: str | None = None
        # Create the table now, so a failure to open the database stops the daemon at start.
        conn = connect(db_path)
        conn.executescript(SCHEMA)
        conn.close()

    # Kept as a method so tests can open the writer's connection onto a database with a fault.
    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.db_path, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(COMMIT_PATIENCE_SECONDS * 1000)}")
        return conn

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._thread.start()

    async def put(self, record: Record) -> None:
        """Return once record is committed or spooled; raise RecordNotStoredError if neither."""
        assert self._loop is not None, "start() the store first"
        fut: asyncio.Future[bytes | None] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._hand_over)
        self._pending.append((record, fut))
        refused = await fut
        if refused is not None:
            raise RecordNotStoredError(record[0], refused)

    def _hand_over(self) -> None:
        batch, self._pending = self._pending, []
        self._queue.put(batch)

    def close(self) -> None:
        """Commit everything queued, then stop the writer."""
        if self._pending:
            self._hand_over()
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def notes(self) -> list[str]:
        """What `mlops status` should say about the records right now."""
        notes = []
        if self.failing is not None:
            notes.append(f"requests are not reaching the database ({self.failing})")
        if self.spooled:
            notes.append(f"{self.spooled} records wait in {self.spool_path} for the database")
        waiting = len(self._refused)  # a read of the writer's list: its length is all we need
        if waiting:
            notes.append(f"{waiting} records of refused (503) requests wait in memory for the database")
        return notes

    # --- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        next_prune = 0.0
        # While the database fails, it is tried again once per RETRY_SECONDS (each try may wait up to
        # COMMIT_PATIENCE_SECONDS); records arriving in between go straight to the spool.
        next_try = 0.0
        try:
            stopping = False
            while True:
                waiting = bool(self.spooled or self._refused or conn is None)
                batch: list[tuple[Record, asyncio.Future[bytes | None]]] = []
                if not stopping:
                    try:
                        item = self._queue.get(timeout=RETRY_SECONDS if waiting else PRUNE_EVERY_SECONDS)
                    except queue.Empty:
                        item = []
                    if item is _STOP:
                        stopping = True
                    else:
                        batch.extend(item)
                while not stopping and len(batch) < _MAX_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stopping = True
                        break
                    batch.extend(nxt)
                now = time.monotonic()
                had_conn = conn is not None
                attempted = False
                if conn is None and (now >= next_try or stopping):
                    conn = self._open()
                    attempted = True
                try:
                    if conn is not None and (self.spooled or self._refused):
                        conn = self._drain(conn)
                    if batch:
                        conn = self._store(conn, batch)
                except Exception:
                    # A writer that dies leaves every later request waiting forever: refuse this
                    # group (each client gets its 503) and go on with the next.
                    log.exception("the record writer failed on a group of %d records", len(batch))
                    self._resolve(batch, [self._refusal(rec[0]) for rec, _ in batch])
                    if conn is not None:
                        conn.close()
                    conn = None
                if conn is None and (had_conn or attempted):
                    # Only a failed try sets the next one: under steady traffic a deadline moved on
                    # every group would never come, and the spool would never drain.
                    next_try = time.monotonic() + RETRY_SECONDS
                elif conn is not None and self.retention_days > 0 and now >= next_prune:
                    conn = self._prune(conn)
                    next_prune = now + PRUNE_EVERY_SECONDS
                if stopping:
                    break
            if self._refused:
                # Still nowhere to keep them: the log is the last place (each record whole, as refused).
                log.error(
                    "%d refused records could not be stored before the daemon stopped", len(self._refused)
                )
        finally:
            if conn is not None:
                conn.close()

    def _open(self) -> sqlite3.Connection | None:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            self.failing = str(exc)
            return None
        if self.spool_path is not None and self.spool_path.exists():
            self.spooled = max(self.spooled, self._spool_count())
        return conn

    def _fail(self, conn: sqlite3.Connection, exc: sqlite3.Error, what: str) -> None:
        if self.failing is None:
            log.warning("%s failed: %s; records go to the spool until the database takes writes", what, exc)
        self.failing = str(exc)
        # A fresh connection on the next try: some faults (a read-only reopen, an I/O error) stick to it.
        conn.close()

    def _insert(self, conn: sqlite3.Connection, records: list[Record]) -> None:
        with transaction(conn):
            conn.executemany(INSERT, records)

    def _store(
        self, conn: sqlite3.Connection | None, batch: list[tuple[Record, asyncio.Future[bytes | None]]]
    ) -> sqlite3.Connection | None:
        records = [rec for rec, _ in batch]
        results: list[bytes | None] = [None] * len(batch)
        if conn is not None:
            try:
                self._insert(conn, records)
                self.stored += len(records)
                if self.failing is not None and not self.spooled:
                    log.info("records are stored in the database again")
                self.failing = None
                self._resolve(batch, results)
                return conn
            except sqlite3.Error as exc:
                self._fail(conn, exc, f"storing {len(records)} records")
                conn = None
        if not self._spool(records):
            results = []
            for rec in records:
                output = self._refusal(rec[0])
                refused: Record = (rec[0], rec[1], rec[2], output.decode(), 503, rec[5], rec[6], rec[7])
                log.error(json.dumps({"unstored_record": dict(zip(COLUMNS, refused, strict=True))}))
                if len(self._refused) < _MAX_REFUSED_KEPT:
                    self._refused.append(refused)
                results.append(output)
                self.refused += 1
        self._resolve(batch, results)
        return conn

    def _resolve(
        self, batch: list[tuple[Record, asyncio.Future[bytes | None]]], results: list[bytes | None]
    ) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_resolve, [fut for _, fut in batch], results)

    # --- the spool --------------------------------------------------------------------------------

    def _spool(self, records: list[Record]) -> bool:
        if self.spool_path is None:
            return False
        data = b"".join(json.dumps(rec, separators=(",", ":")).encode() + b"\n" for rec in records)
        try:
            self.spool_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            size = self.spool_path.stat().st_size if self.spool_path.exists() else 0
            if size + len(data) > self.spool_max_bytes:
                log.error("the record spool %s is full (%d bytes)", self.spool_path, size)
                return False
            fd = os.open(self.spool_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                written = os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("the record spool %s cannot take records: %s", self.spool_path, exc)
            return False
        if written != len(data):  # a short write on a full tmpfs: the torn line is skipped on replay
            return False
        self.spooled += len(records)
        return True

    def _spool_count(self) -> int:
        assert self.spool_path is not None
        try:
            with open(self.spool_path, "rb") as handle:
                return sum(1 for _ in handle)
        except OSError:
            return 0

    def _read_spool(self) -> list[Record]:
        assert self.spool_path is not None
        records: list[Record] = []
        try:
            lines = self.spool_path.read_bytes().splitlines()
        except FileNotFoundError:
            return records
        except OSError as exc:
            log.error("the record spool %s cannot be read: %s", self.spool_path, exc)
            return records
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the torn tail of a write a crash or a full tmpfs cut short
            records.append(tuple(rec))
        return records

    def _drain(self, conn: sqlite3.Connection) -> sqlite3.Connection | None:
        """Move the spool and the refused records into the database, in one transaction."""
        spooled = self._read_spool() if self.spool_path is not None else []
        records = [*spooled, *self._refused]
        try:
            self._insert(conn, records)
        except sqlite3.Error as exc:
            self._fail(conn, exc, f"storing {len(records)} spooled records")
            return None
        # Only now: a crash between the commit and this unlink replays records OR IGNORE drops.
        if self.spool_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.spool_path.unlink()
        log.info("stored %d spooled and %d refused records", len(spooled), len(self._refused))
        self.stored += len(records)
        self.spooled = 0
        self._refused = []
        self.failing = None
        return conn

    # --- retention --------------------------------------------------------------------------------

    def _prune(self, conn: sqlite3.Connection) -> sqlite3.Connection | None:
        cutoff = (datetime.now(UTC) - timedelta(days=self.retention_days)).isoformat(timespec="milliseconds")
        cutoff = cutoff.replace("+00:00", "Z")
        while True:
            try:
                with transaction(conn):
                    cur = conn.execute(
                        "DELETE FROM requests WHERE rowid IN "
                        "(SELECT rowid FROM requests WHERE created_at < ? LIMIT ?)",
                        (cutoff, PRUNE_BATCH),
                    )
            except sqlite3.Error as exc:
                log.warning("deleting records older than %g days failed: %s", self.retention_days, exc)
                return conn
            self.pruned += cur.rowcount
            if cur.rowcount < PRUNE_BATCH:
                if cur.rowcount:
                    log.info("deleted records older than %g days", self.retention_days)
                return conn


def _resolve(futures: list[asyncio.Future[bytes | None]], results: list[bytes | None]) -> None:
    for fut, result in zip(futures, results, strict=True):
        if not fut.done():
            fut.set_result(result)


def stored_request_ids(db_path: Path) -> set[str]:
    conn = connect(db_path)
    try:
        conn.executescript(SCHEMA)
        return {r[0] for r in conn.execute("SELECT request_id FROM requests")}
    finally:
        conn.close()


def database_bytes(db_path: Path) -> int:
    """The database with its WAL and shared-memory index: what it takes on disk now."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += Path(f"{db_path}{suffix}").stat().st_size
    return total
