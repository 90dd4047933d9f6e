from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import OperationalError

from controlplane.store.base import Base, utcnow
from controlplane.store.database import PG_STATEMENT_TIMEOUT_S, Database
from controlplane.store.lifecycle import EventOutcome, LifecycleStore
from controlplane.store.writebehind import is_storage_error
from tests.support.postgres import PostgresServer


def test_migrations_build_exactly_the_models(database: Database) -> None:
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_each_dialect_gets_its_own_connection_settings(database: Database) -> None:
    with database.engine.connect() as conn:
        if database.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        else:
            # every statement is bounded on the server, and none of SQLite's settings leak
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == (
                f"{PG_STATEMENT_TIMEOUT_S}s")
            assert database.engine.pool._pre_ping  # type: ignore[attr-defined]


def test_a_statement_past_postgresqls_timeout_is_a_storage_error_to_retry(
        database: Database) -> None:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("statement_timeout is PostgreSQL's (SQLite has busy_timeout, tested "
                    "with the faults)")
    with database.engine.connect() as conn:
        conn.exec_driver_sql("SET statement_timeout = '50ms'")
        with pytest.raises(OperationalError) as cancelled:
            conn.exec_driver_sql("SELECT pg_sleep(2)")
    # the write-behind keeps such a write and retries it; a bounded call answers 503
    assert is_storage_error(cancelled.value)
    assert "statement timeout" in str(cancelled.value.orig)


def test_memory_sizes_past_32_bits_are_kept(database: Database) -> None:
    """PostgreSQL's INTEGER is 32-bit: a 40 GiB model would overflow it."""
    store = LifecycleStore(database, "default")
    store.sync_models(["big"], [], initial_state="cold")
    t0 = utcnow()
    event = store.begin_event("big", "load", "api", t0)
    store.finish_event(event, EventOutcome("ok", memory_bytes=40 << 30), t0)
    store.set_state("big", "ready", None, memory_bytes=40 << 30)
    assert store.events("big")[0].memory_bytes == 40 << 30
    rows = store.sync_models(["big"], [], initial_state="cold")
    assert rows["big"].memory_bytes == 40 << 30


def test_sync_models_adds_rows_and_refreshes_pins(database: Database) -> None:
    store = LifecycleStore(database, "default")
    rows = store.sync_models(["a", "b"], ["a"], initial_state="cold")
    assert {n: (r.state, r.pinned) for n, r in rows.items()} == {
        "a": ("cold", True), "b": ("cold", False)}
    store.set_state("a", "ready", None)
    rows = store.sync_models(["a", "b"], ["b"], initial_state="cold")
    assert {n: (r.state, r.pinned) for n, r in rows.items()} == {
        "a": ("ready", False), "b": ("cold", True)}
    # instances are separate
    assert LifecycleStore(database, "other").sync_models([], [], initial_state="cold") == {}


def test_events_record_duration_outcome_and_order(database: Database) -> None:
    store = LifecycleStore(database, "default")
    store.sync_models(["a"], [], initial_state="cold")
    t0 = utcnow()
    first = store.begin_event("a", "load", "api", t0)
    store.finish_event(first, EventOutcome("failed", error="boom"), t0 + timedelta(seconds=2))
    second = store.begin_event("a", "load", "gateway", t0 + timedelta(seconds=3))
    store.finish_event(second, EventOutcome("ok", triton_s=1.0, memory_bytes=42,
                                            details={"load_phases": {"import": 1.2}}),
                       t0 + timedelta(seconds=4.5))
    events = store.events("a")
    assert [(e.trigger, e.outcome) for e in events] == [("gateway", "ok"), ("api", "failed")]
    assert events[0].duration_s == 1.5
    assert events[0].details == {"load_phases": {"import": 1.2}}
    assert events[1].error == "boom"
    assert events[0].started_at.tzinfo is not None


def test_dangling_events_are_closed(database: Database) -> None:
    store = LifecycleStore(database, "default")
    store.sync_models(["a"], [], initial_state="cold")
    store.begin_event("a", "load", "api", utcnow())
    assert store.close_dangling_events("restarted") == 1
    assert store.events("a")[0].outcome == "failed"
    assert store.close_dangling_events("restarted") == 0


@pytest.fixture
def empty_url(request: pytest.FixtureRequest, store_dialect: str,
              tmp_path: Path) -> Iterator[str]:
    """An empty database (no migration run yet) in the test's dialect."""
    if store_dialect == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.new_name("empty")
    yield server.create_database(name)
    server.drop_database(name)


def test_migrations_go_down_and_up_again(empty_url: str) -> None:
    from alembic import command

    from controlplane.store.database import alembic_config

    db = Database(empty_url)
    db.migrate()
    config = alembic_config(db.url)
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        assert set(inspect(connection).get_table_names()) == {"alembic_version"}
        command.upgrade(config, "head")
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    db.close()


def test_scheduler_jobs_table_is_ours_and_a_pre_existing_one_is_kept(tmp_path: object) -> None:
    from pathlib import Path

    from alembic import command
    from alembic.script import ScriptDirectory
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    from controlplane.store.database import alembic_config

    # a database from before migration 0004: APScheduler had created the table, with a job
    path = Path(str(tmp_path)) / "old.db"
    db = Database(f"sqlite:///{path}")
    config = alembic_config(db.url)
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    SQLAlchemyJobStore(engine=db.engine, tablename="scheduler_jobs").jobs_t.create(db.engine)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO scheduler_jobs (id, next_run_time, job_state) VALUES ('kept', 1.0, x'00')")
    db.migrate()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT id FROM scheduler_jobs").scalars().all() == ["kept"]
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == (
            ScriptDirectory.from_config(config).get_current_head())
    db.close()
