"""The write-behind queue against a store whose disk fails on demand (tests/support)."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event, text

from controlplane.errors import StoreUnavailable
from controlplane.store.database import Database
from controlplane.store.writebehind import WriteBehind
from tests.support.store_faults import StoreFaults
from tests.support.waiting import until


def _insert(db: Database, value: int) -> None:
    with db.session() as session:
        session.execute(text("INSERT INTO probe_rows (v) VALUES (:v)"), {"v": value})


def _rows(db: Database) -> list[int]:
    with db.session() as session:
        return [int(v) for v in session.execute(text("SELECT v FROM probe_rows ORDER BY id"))
                .scalars()]


def _table(db: Database) -> None:
    # through SQLAlchemy: an id that numbers itself is INTEGER PRIMARY KEY on SQLite and
    # SERIAL on PostgreSQL
    Table("probe_rows", MetaData(), Column("id", Integer, primary_key=True),
          Column("v", Integer)).create(db.engine)


async def test_writes_refused_by_a_full_disk_are_written_in_order_once_it_takes_them(
        database: Database) -> None:
    _table(database)
    faults, writes = StoreFaults(database), database.writes
    faults.set("full")
    done = [writes.submit("event", partial(_insert, database, i)) for i in range(5)]
    await until(lambda: writes.error is not None, 5)
    assert writes.error == "database or disk is full"
    assert not writes.healthy and writes.queued["event"] == 5 and _rows(database) == []
    await asyncio.sleep(0.6)  # retried with back-off meanwhile, never dropped
    assert faults.hits >= 2 and writes.queued["event"] == 5
    faults.clear()
    assert await writes.drain(10)
    assert _rows(database) == [0, 1, 2, 3, 4]
    assert [d.result() for d in done] == ["written"] * 5
    assert writes.written["event"] == 5 and not writes.dropped
    assert writes.error is None and writes.healthy


async def test_beyond_its_bound_a_kind_drops_new_writes_and_counts_them(
        database: Database) -> None:
    _table(database)
    faults = StoreFaults(database)
    writes = WriteBehind(database._write, max_queued=3)
    faults.set("readonly")
    done = [writes.submit("event", partial(_insert, database, i)) for i in range(5)]
    other = writes.submit("state", partial(_insert, database, 100))  # its own bound
    assert [d.done() for d in done] == [False, False, False, True, True]
    assert done[3].result() == "full" and done[4].result() == "full"
    assert writes.dropped == {("event", "full"): 2} and writes.queued["state"] == 1
    faults.clear()
    assert await writes.drain(10)
    assert _rows(database) == [0, 1, 2, 100] and other.result() == "written"


async def test_a_key_keeps_one_waiting_write_which_writes_the_newest_value(
        database: Database) -> None:
    _table(database)
    faults, writes = StoreFaults(database), database.writes
    latest = {"v": 0}

    def write_latest() -> None:
        _insert(database, latest["v"])

    faults.set("full")
    writes.submit("event", partial(_insert, database, -1))  # holds the head while failing
    first = writes.submit("state", write_latest, key="m")
    for v in range(1, 50):
        latest["v"] = v
        assert writes.submit("state", write_latest, key="m") is first
    assert writes.queued["state"] == 1
    faults.clear()
    assert await writes.drain(10)
    assert _rows(database) == [-1, 49]


async def test_a_write_that_can_never_succeed_is_dropped_counted_and_the_rest_go_on(
        database: Database) -> None:
    _table(database)
    writes = database.writes

    def broken() -> None:
        raise KeyError("a row that is gone")

    bad = writes.submit("event", broken)
    good = writes.submit("event", partial(_insert, database, 7))
    assert await writes.drain(5)
    assert bad.result() == "error" and good.result() == "written"
    assert writes.dropped == {("event", "error"): 1} and _rows(database) == [7]


async def test_a_stalled_disk_costs_a_waiting_caller_one_settle_then_nothing(
        database: Database) -> None:
    _table(database)
    faults = StoreFaults(database)
    writes = WriteBehind(database._write, settle_s=0.3)
    faults.set("stall")
    t0 = time.monotonic()
    await writes.settle(writes.submit("event", partial(_insert, database, 1)))
    first = time.monotonic() - t0
    t0 = time.monotonic()
    for i in range(10):  # the writer is seen stuck: nobody waits any more
        await writes.settle(writes.submit("event", partial(_insert, database, i)))
    rest = time.monotonic() - t0
    assert 0.25 < first < 1.0 and rest < 0.1 and not writes.healthy
    faults.clear()
    assert await writes.drain(10)
    assert len(_rows(database)) == 11 and writes.healthy


async def test_a_clean_stop_writes_within_its_bound_and_counts_the_rest(
        database: Database) -> None:
    _table(database)
    faults, writes = StoreFaults(database), database.writes
    writes.submit("event", partial(_insert, database, 1))
    assert await writes.drain(5)
    faults.set("full")
    for i in range(3):
        writes.submit("traffic", partial(_insert, database, i), weight=100)
    t0 = time.monotonic()
    left = await writes.close(0.3)
    assert time.monotonic() - t0 < 1.0
    assert left == {("traffic", "stopped"): 300}
    assert writes.dropped == {("traffic", "stopped"): 300}
    late = writes.submit("event", partial(_insert, database, 2))
    assert late.result() == "stopped"
    faults.clear()
    assert _rows(database) == [1]


async def test_a_bounded_call_on_a_stalled_or_full_store_fails_cleanly(
        database: Database) -> None:
    _table(database)
    faults = StoreFaults(database)
    database.call_timeout_s = 0.3
    faults.set("full")
    try:
        await database.call(_insert, database, 1)
    except StoreUnavailable as exc:
        assert str(exc) == "the store failed: database or disk is full"
    else:
        raise AssertionError("a write on a full disk succeeded")
    faults.set("stall", stall_reads=True)
    t0 = time.monotonic()
    try:
        await database.call(_rows, database)
    except StoreUnavailable as exc:
        assert "did not answer within 0.3s" in str(exc)
    else:
        raise AssertionError("a read of a stalled disk answered")
    assert time.monotonic() - t0 < 1.0
    faults.clear()
    assert await database.call(_rows, database) == []


async def test_a_connection_opened_while_the_disk_was_read_only_is_replaced_once_writable(
        database: Database) -> None:
    """SQLite opens a file it cannot write read-only, and such a connection refuses writes
    after the disk is writable again (``query_only`` stands in for that here)."""
    if database.engine.dialect.name != "sqlite":
        pytest.skip("a connection stuck read-only is SQLite's (it opens a file it cannot "
                    "write read-only); PostgreSQL's connections do not keep such a state")
    _table(database)
    read_only = True

    def connect(dbapi_connection: Any, _record: Any) -> None:
        if read_only:
            dbapi_connection.execute("PRAGMA query_only=ON")

    event.listen(database.engine, "connect", connect)
    database.engine.dispose()  # every connection from now on is opened "read-only"
    done = database.writes.submit("event", partial(_insert, database, 1))
    await until(lambda: database.writes.error is not None, 5)
    assert database.writes.error == "attempt to write a readonly database"
    read_only = False  # the disk is back; connections opened before it stay read-only
    assert await until(done.done, 5)
    assert done.result() == "written" and _rows(database) == [1]
