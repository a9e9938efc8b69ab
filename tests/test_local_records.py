"""Issue 11, findings 3 and 4: a record is never lost, and the kept record is what the client got.

The RecordStore runs for real (its writer thread, SQLite in WAL, the spool file) with the faults made
for real where SQLite lets a test make them: a lock held by another connection, a database that is
full (max_page_count: the same SQLITE_FULL a full disk gives) and one that refuses writes
(query_only: the same SQLITE_READONLY a read-only file gives). Only the way the writer opens its
connection is swapped, because a fault on one connection cannot be set from another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops.local import records as rec_mod
from mlops.local.records import Record, RecordNotStoredError, RecordStore, database_bytes, stored_request_ids


def record(i: int, *, created: str = "2026-01-01T00:00:00.000Z", status: int = 200) -> Record:
    return (f"id-{i}", created, '{"context": "5.1, 3.5, 1.4, 0.2"}', f'{{"n": {i}}}', status, "1", 1.0, "{}")


def rows(db: Path) -> dict[str, sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["request_id"]: r for r in conn.execute("SELECT * FROM requests")}
    finally:
        conn.close()


class Fault:
    """Switchable fault on the writer's connections (each reconnect asks again)."""

    def __init__(self, store: RecordStore, pragma: str | None) -> None:
        self.pragma = pragma
        self.on = True
        original = store._connect

        def connect() -> sqlite3.Connection:
            conn = original()
            if self.on and self.pragma is not None:
                conn.execute(self.pragma)
            return conn

        store._connect = connect  # type: ignore[method-assign]


def full_database(db: Path) -> str:
    conn = sqlite3.connect(db)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    return f"PRAGMA max_page_count={pages}"


@contextmanager
def held_lock(db: Path) -> Iterator[None]:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


def big_rows(n: int) -> list[Record]:
    return [record(i) for i in range(n)]


def test_records_commit_in_groups(tmp_path: Path) -> None:
    db = tmp_path / "platform.db"

    async def main() -> list[BaseException | None]:
        store = RecordStore(db, spool_path=None)
        store.start()
        try:
            return await asyncio.gather(*(store.put(record(i)) for i in range(500)), return_exceptions=True)
        finally:
            store.close()

    assert asyncio.run(main()) == [None] * 500
    assert stored_request_ids(db) == {f"id-{i}" for i in range(500)}


@pytest.mark.parametrize("fault", ["lock", "full", "read-only"])
def test_a_database_fault_sends_records_to_the_spool_and_they_are_stored_once_it_clears(
    tmp_path: Path, fault: str
) -> None:
    db = tmp_path / "platform.db"
    spool = tmp_path / "shm" / "records.jsonl"

    async def main() -> None:
        store = RecordStore(db, spool_path=spool)
        # Fill a few pages first, so "full" means full and not "cannot even grow the first page".
        store.start()
        await asyncio.gather(*(store.put(record(i)) for i in range(100)))
        injected = None
        if fault == "full":
            injected = Fault(store, full_database(db))
        elif fault == "read-only":
            injected = Fault(store, "PRAGMA query_only=ON")
        lock = held_lock(db) if fault == "lock" else None
        if lock is not None:
            await asyncio.gather(*(store.put(record(i)) for i in range(100, 110)))
            lock.__enter__()
        elif injected is not None:
            # The writer holds a healthy connection; the fault applies from its next one, which it
            # opens after a failure. A held lock makes that first failure happen for real.
            with held_lock(db):
                answers = await asyncio.gather(
                    *(store.put(record(i)) for i in range(100, 110)), return_exceptions=True
                )
            assert answers == [None] * 10
        try:
            answers = await asyncio.gather(
                *(store.put(record(i)) for i in range(110, 400)), return_exceptions=True
            )
            # Every client got its answer: the records are in the spool, not in the database.
            assert answers == [None] * 290
            assert store.spooled >= 290
            assert store.failing is not None
            assert not {f"id-{i}" for i in range(110, 400)} & set(rows(db))
            kept = [json.loads(line)[0] for line in spool.read_text().splitlines()]
            assert {f"id-{i}" for i in range(110, 400)} <= set(kept)
            assert any("records wait in" in n for n in store.notes())
            # The writer keeps trying the database, and meets the fault itself, not only the lock.
            expected = {
                "lock": "database is locked",
                "full": "database or disk is full",
                "read-only": "attempt to write a readonly database",
            }[fault]
            await wait_until(lambda: store.failing == expected, f"the writer to meet {expected!r}")
            assert store.spooled >= 290
        finally:
            if lock is not None:
                lock.__exit__(None, None, None)
            if injected is not None:
                injected.on = False
        # Traffic goes on while the fault clears (a writer retrying only when idle would never drain).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        more = 400
        while store.spooled:
            assert loop.time() < deadline, "the spool did not drain under steady traffic"
            await store.put(record(more))
            more += 1
            await asyncio.sleep(0.005)
        store.close()
        stored = rows(db)
        assert set(stored) == {f"id-{i}" for i in range(more)}
        assert stored["id-250"]["output"] == '{"n": 250}'
        assert stored["id-250"]["status_code"] == 200
        assert not spool.exists()
        assert store.failing is None and store.notes() == []

    asyncio.run(main())


def test_when_the_spool_fails_too_the_client_gets_503_and_the_kept_record_is_that_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "platform.db"
    # A spool whose directory is a file: every write to it fails (as a full /dev/shm would).
    (tmp_path / "not-a-dir").write_text("")
    spool = tmp_path / "not-a-dir" / "records.jsonl"

    async def main() -> list[BaseException | None]:
        store = RecordStore(
            db,
            spool_path=spool,
            refusal=lambda rid: json.dumps({"error": "not kept", "request_id": rid}).encode(),
        )
        store.start()
        with held_lock(db), caplog.at_level(logging.ERROR, logger="mlops.local.records"):
            answers = await asyncio.gather(*(store.put(record(i)) for i in range(3)), return_exceptions=True)
        assert store.refused == 3
        await wait_until(lambda: "id-2" in rows(db), "the refused records to be stored")
        store.close()
        return answers

    answers = asyncio.run(main())
    assert all(isinstance(a, RecordNotStoredError) for a in answers)
    first = answers[0]
    assert isinstance(first, RecordNotStoredError)
    assert json.loads(first.output) == {"error": "not kept", "request_id": "id-0"}
    # The log line and the stored row both say what the client got: 503 and the refusal, not 200.
    logged = [
        json.loads(r.getMessage())["unstored_record"]
        for r in caplog.records
        if "unstored_record" in r.getMessage()
    ]
    assert [r["request_id"] for r in logged] == ["id-0", "id-1", "id-2"]
    assert {(r["status_code"], r["output"]) for r in logged[:1]} == {
        (503, json.dumps({"error": "not kept", "request_id": "id-0"}))
    }
    stored = rows(db)
    assert stored["id-1"]["status_code"] == 503
    assert json.loads(stored["id-1"]["output"]) == {"error": "not kept", "request_id": "id-1"}
    assert stored["id-1"]["input"] == '{"context": "5.1, 3.5, 1.4, 0.2"}'


def test_a_spool_left_by_a_crashed_daemon_is_stored_at_the_next_start_torn_tail_and_all(
    tmp_path: Path,
) -> None:
    db = tmp_path / "platform.db"
    spool = tmp_path / "shm" / "records.jsonl"
    spool.parent.mkdir()
    lines = [json.dumps(list(record(i))) for i in range(5)]
    # id-0 was stored before the crash too (the commit landed, the unlink did not): stored once.
    first = RecordStore(db, spool_path=None)

    async def put_first() -> None:
        first.start()
        await first.put(record(0))
        first.close()

    asyncio.run(put_first())
    spool.write_text("\n".join(lines) + '\n["id-5", "2026-01-01T0')  # the crash cut the last write

    async def main() -> None:
        store = RecordStore(db, spool_path=spool)
        store.start()
        await wait_until(lambda: not spool.exists(), "the left spool to be stored")
        store.close()

    asyncio.run(main())
    assert set(rows(db)) == {f"id-{i}" for i in range(5)}


def test_records_older_than_the_retention_are_deleted_and_newer_ones_kept(tmp_path: Path) -> None:
    db = tmp_path / "platform.db"
    now = datetime.now(UTC)

    def stamp(days_ago: float) -> str:
        return (now - timedelta(days=days_ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    async def main() -> RecordStore:
        store = RecordStore(db, spool_path=None, retention_days=7)
        store.start()
        await asyncio.gather(*(store.put(record(i, created=stamp(10 if i % 2 else 1))) for i in range(20)))
        await wait_until(lambda: store.pruned == 10, "the old records to be pruned")
        store.close()
        return store

    asyncio.run(main())
    assert set(rows(db)) == {f"id-{i}" for i in range(0, 20, 2)}
    assert database_bytes(db) >= db.stat().st_size > 0


def test_the_default_spool_is_on_a_memory_filesystem_apart_from_the_database(tmp_path: Path) -> None:
    path = rec_mod.default_spool_path(tmp_path / "platform.db")
    if Path("/dev/shm").is_dir() and Path("/dev/shm").stat().st_dev != tmp_path.stat().st_dev:
        assert path is not None and path.parent.parent == Path("/dev/shm")
        assert path == rec_mod.default_spool_path(tmp_path / "platform.db")  # stable for a restart
        assert path != rec_mod.default_spool_path(tmp_path / "other" / "platform.db")
    else:
        assert path is None
