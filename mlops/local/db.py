"""SQLite for the local platform: one file, WAL, safe against a kill -9 of any process using it.

WAL with synchronous=NORMAL makes a committed transaction survive a crash of the process (it is in the
WAL file the moment COMMIT returns); only a power loss can drop the last commits, which a local
platform accepts in exchange for not paying an fsync per stored request.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves so transactions are explicit and short.
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=check_same_thread, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed if the block ends normally, rolled back if anything escapes it.

    IMMEDIATE takes the write lock up front, so a read-then-write (next version number, current
    deployment) cannot interleave with another process's. A COMMIT that fails is rolled back too, and
    only if SQLite has not already ended the transaction itself (it does on some errors).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
