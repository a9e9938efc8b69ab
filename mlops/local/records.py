"""Every inference request and its answer, stored in SQLite before the answer is sent.

One writer thread owns a connection and commits in groups: whatever records arrived while the previous
commit ran go into the next transaction, and each request's answer waits for the commit holding its
record. So a 2xx a client saw is always on disk (WAL: it survives a kill -9 of the daemon), and the
cost of a commit is shared by every request in the group, which is what reaches four-digit req/s on
SQLite without giving up durability per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
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
"""
INSERT = "INSERT INTO requests VALUES (?,?,?,?,?,?,?,?)"
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
_ATTEMPTS = 3
_STOP = object()


class RecordNotStoredError(Exception):
    """The record could not be committed after retries; it was written whole to the daemon log."""


class RecordStore:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Records of the current event-loop iteration, handed to the writer in one put: waking the
        # writer thread once per request costs more (GIL hand-offs) than the insert itself.
        self._pending: list[tuple[Record, asyncio.Future[bool]]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stored = 0
        self.not_stored = 0
        # Create the table now, so a failure to open the database stops the daemon at start.
        conn = connect(db_path)
        conn.executescript(SCHEMA)
        conn.close()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._thread.start()

    async def put(self, record: Record) -> None:
        """Return once record is committed; raise RecordNotStoredError if it cannot be."""
        assert self._loop is not None, "start() the store first"
        fut: asyncio.Future[bool] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._hand_over)
        self._pending.append((record, fut))
        if not await fut:
            raise RecordNotStoredError(record[0])

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

    def _run(self) -> None:
        conn = connect(self.db_path, check_same_thread=False)
        try:
            stopping = False
            while not stopping:
                item = self._queue.get()
                if item is _STOP:
                    break
                batch = list(item)
                while len(batch) < _MAX_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stopping = True
                        break
                    batch.extend(nxt)
                ok = self._commit(conn, [rec for rec, _ in batch])
                assert self._loop is not None
                self._loop.call_soon_threadsafe(_resolve, [fut for _, fut in batch], ok)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, records: list[Record]) -> bool:
        for attempt in range(_ATTEMPTS):
            try:
                with transaction(conn):
                    conn.executemany(INSERT, records)
                self.stored += len(records)
                return True
            except sqlite3.Error as exc:
                log.warning("storing %d records failed (attempt %d): %s", len(records), attempt + 1, exc)
                time.sleep(0.05 * (attempt + 1))
        # Nothing is lost silently: each record goes whole to the log, as the AWS API does.
        for rec in records:
            log.error(json.dumps({"unstored_record": dict(zip(COLUMNS, rec, strict=True))}))
        self.not_stored += len(records)
        return False


def _resolve(futures: list[asyncio.Future[bool]], ok: bool) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(ok)


def stored_request_ids(db_path: Path) -> set[str]:
    conn = connect(db_path)
    try:
        conn.executescript(SCHEMA)
        return {r[0] for r in conn.execute("SELECT request_id FROM requests")}
    finally:
        conn.close()
