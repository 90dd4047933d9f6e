"""Instances added at run time, stored in SQLite: durable on return, kept across a restart,
and a disk that refuses or stalls the write fails the call (never a silent queue)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

from controlplane.errors import InvalidArgument, StoreUnavailable
from controlplane.store.database import Database, alembic_config
from controlplane.store.instances import InstanceStore
from tests.support.store_faults import StoreFaults

EMBEDDED = {"provider": "embedded", "memory_budget_mb": 2048.0}
STATIC = {"provider": "static", "url": "10.0.0.7:8001"}


async def test_added_instances_survive_a_restart_in_the_order_they_were_added(
        database: Database) -> None:
    store = InstanceStore(database)
    assert await store.added() == {}
    await store.put("c", STATIC, "autoscaler")
    await store.put("b", EMBEDDED, "operator")
    await store.put("c", {**STATIC, "url": "10.0.0.8:8001"}, "operator")  # replaced in place
    url = database.url
    database.close()

    reopened = Database(url)
    try:
        added = await InstanceStore(reopened).added()
        assert list(added) == ["c", "b"]  # c was created first; its update kept that
        assert added["c"] == ({"provider": "static", "url": "10.0.0.8:8001"}, "operator")
        assert added["b"] == (EMBEDDED, "operator")
        await InstanceStore(reopened).delete("c")
        await InstanceStore(reopened).delete("never-added")  # nothing to do: no error
        assert await InstanceStore(reopened).added() == {"b": (EMBEDDED, "operator")}
    finally:
        reopened.close()


@pytest.mark.parametrize(("name", "spec", "origin", "says"), [
    ("", EMBEDDED, "operator", "1 to 64 characters"),
    ("x" * 65, EMBEDDED, "operator", "1 to 64 characters"),
    ("b", EMBEDDED, "someone", "origin must be one of"),
    ("b", {"url": object()}, "operator", "not JSON"),
])
async def test_what_cannot_be_stored_is_refused_before_the_disk(
        database: Database, name: str, spec: dict[str, object], origin: str, says: str) -> None:
    store = InstanceStore(database)
    with pytest.raises(InvalidArgument, match=says):
        await store.put(name, spec, origin)
    assert await store.added() == {}


async def test_a_full_disk_fails_the_write_with_a_clear_error(database: Database) -> None:
    store = InstanceStore(database)
    faults = StoreFaults(database)
    faults.set("full")
    with pytest.raises(StoreUnavailable) as refused:
        await store.put("b", EMBEDDED, "operator")
    assert refused.value.message == ("instance 'b' was not stored: the store failed: "
                                     "database or disk is full")
    with pytest.raises(StoreUnavailable, match="'b' was not removed from the store"):
        await store.delete("b")
    assert sum(database.writes.queued.values()) == 0  # nothing was queued to land later
    faults.clear()
    assert await store.added() == {}
    await store.put("b", EMBEDDED, "operator")  # the same call succeeds once the disk does
    assert await store.added() == {"b": (EMBEDDED, "operator")}


@pytest.fixture
def quick(tmp_path: Path, migrated_template: Path) -> Iterator[Database]:
    """A migrated store whose bounded calls give up after 0.2 s."""
    path = tmp_path / "quick.db"
    path.write_bytes(migrated_template.read_bytes())
    db = Database(f"sqlite:///{path}", call_timeout_s=0.2)
    yield db
    db.close()


async def test_a_stalled_disk_fails_the_write_within_the_call_limit(quick: Database) -> None:
    faults = StoreFaults(quick)
    try:
        faults.set("stall")
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as stalled:
            await InstanceStore(quick).put("b", EMBEDDED, "operator")
        assert time.monotonic() - t0 < 1.0
        assert stalled.value.message == ("instance 'b' was not stored: the store did not "
                                         "answer within 0.2s (its disk is stalled or "
                                         "overloaded)")
        faults.clear()  # the write was under way: it lands (a retry would be harmless)
        assert await until_added(InstanceStore(quick)) == {"b": (EMBEDDED, "operator")}
    finally:
        faults.clear()


async def until_added(store: InstanceStore) -> dict[str, tuple[dict[str, object], str]]:
    for _ in range(100):
        added = await store.added()
        if added:
            return dict(added)
        await asyncio.sleep(0.01)
    return {}


def test_the_migration_adds_the_table_on_a_0007_store_and_removes_it_going_down(
        tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    config = alembic_config(db.url)
    try:
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0007")
            assert not inspect(connection).has_table("fleet_instances")
            command.upgrade(config, "head")
            columns = {c["name"]: c for c in inspect(connection).get_columns("fleet_instances")}
            assert set(columns) == {"name", "spec", "origin", "created_at"}
            assert inspect(connection).get_pk_constraint("fleet_instances")[
                "constrained_columns"] == ["name"]
            command.downgrade(config, "0007")
            assert not inspect(connection).has_table("fleet_instances")
    finally:
        db.close()
