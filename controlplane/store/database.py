"""Engine, sessions, migrations, and the two ways the running control plane reaches the store
(SQLite, or PostgreSQL through psycopg 3): bounded calls (:meth:`Database.call`: answered
within a time limit, or StoreUnavailable) and queued writes (:attr:`Database.writes`, see
``writebehind.py``)."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from controlplane.errors import StoreUnavailable
from controlplane.store.writebehind import WriteBehind, describe, is_storage_error

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
P = ParamSpec("P")
T = TypeVar("T")

#: longest wait of a bounded call. A healthy read here takes milliseconds (well under 100 ms
#: with both CPUs busy); past 2 s the disk is stalled or the pool is stuck behind it, and an
#: admin answer or a load's preparation goes on without the store rather than hang with it.
CALL_TIMEOUT_S = 2.0

#: PostgreSQL: the longest a connection attempt may take. A server that does not answer a
#: connect in 5 s is down or unreachable; the write-behind retries, a bounded call has
#: given up long before.
PG_CONNECT_TIMEOUT_S = 5
#: PostgreSQL: the longest any statement may run on the server (``statement_timeout``),
#: and the longest a sent request may go unacknowledged on the socket (``tcp_user_timeout``,
#: a server gone without a word). Well past a bounded call's 2 s and the health's 3 s
#: ``stall_after_s``, so those answer first; but bounded, so a thread stuck on a lock or on a
#: dead server is freed and the write-behind can retry, instead of holding its only writer.
PG_STATEMENT_TIMEOUT_S = 30


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: the traffic flusher writes while the admin API reads, without blocking each other.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


#: SQLite's result code for a write to a connection that can only read
SQLITE_READONLY = 8


def _replace_read_only(context: ExceptionContext) -> None:
    # SQLite opens a database it cannot open read-write (a read-only disk) read-only, and
    # that connection refuses writes ("attempt to write a readonly database") for good, long
    # after the disk is writable again: it is treated as lost, so the pool opens a fresh one.
    orig = context.original_exception
    if (isinstance(orig, sqlite3.Error)
            and getattr(orig, "sqlite_errorcode", 0) & 0xFF == SQLITE_READONLY):
        context.is_disconnect = True


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolates "%": a URL-encoded password ("p%40ss") must come through
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def engine_options(url: str) -> dict[str, Any]:
    """``create_engine``'s keywords for the URL's dialect."""
    if make_url(url).get_backend_name() != "postgresql":
        return {}
    statement_ms = PG_STATEMENT_TIMEOUT_S * 1000
    return {
        # a connection the server closed (restart, failover, idle timeout) is found at
        # checkout and replaced, instead of failing the write that drew it
        "pool_pre_ping": True,
        # the reader threads, the writer, the probe, APScheduler: room for all at once
        "pool_size": 8,
        "max_overflow": 8,
        # a checkout waits this long for a free connection, then fails (never forever)
        "pool_timeout": PG_CONNECT_TIMEOUT_S,
        "connect_args": {
            "connect_timeout": PG_CONNECT_TIMEOUT_S,
            # a lock wait is part of the statement: statement_timeout bounds it too; a
            # transaction left open by a thread that died is closed by the server
            "options": f"-c statement_timeout={statement_ms}"
                       f" -c idle_in_transaction_session_timeout={statement_ms * 2}",
            "tcp_user_timeout": statement_ms,
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
            "keepalives_count": 3,
            "application_name": "warmctl",
        },
    }


class Database:
    def __init__(self, url: str, *, call_timeout_s: float = CALL_TIMEOUT_S,
                 max_queued_writes: int = 10_000, settle_s: float = 1.0) -> None:
        """``call_timeout_s``: bound of :meth:`call`; ``max_queued_writes`` and ``settle_s``:
        see :class:`~controlplane.store.writebehind.WriteBehind`."""
        self.url = url
        self.call_timeout_s = call_timeout_s
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, **engine_options(url))
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "handle_error", _replace_read_only)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Our own threads: database work must not queue behind whatever else the process
        # runs in asyncio's default executor (a saturated default pool once stalled a load).
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="store")
        # Queued writes run one at a time on a thread of their own: a write stuck on a stalled
        # disk holds that thread only, and SQLite takes one writer at a time anyway (on
        # PostgreSQL one writer keeps the queue's order: the order of submission is the
        # order of writing).
        self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-write")
        self.writes = WriteBehind(self._write, max_queued=max_queued_writes, settle_s=settle_s)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking database function off the event loop, on the database's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``run`` bounded by ``call_timeout_s``: for what answers a caller who must not hang
        with the disk (admin reads, a load's preparation). Raises StoreUnavailable when the
        store errs or does not answer in time (the call goes on in its thread)."""
        try:
            return await asyncio.wait_for(self.run(fn, *args, **kwargs), self.call_timeout_s)
        except TimeoutError:
            raise StoreUnavailable(f"the store did not answer within {self.call_timeout_s:g}s "
                                   "(its disk is stalled or overloaded)") from None
        except SQLAlchemyError as exc:
            if not is_storage_error(exc):
                raise
            raise StoreUnavailable(f"the store failed: {describe(exc)}") from exc

    async def _write(self, fn: Callable[[], object]) -> object:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_thread, fn)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (one log line when it moved)."""
        config = alembic_config(self.url)
        with self.engine.begin() as connection:
            before = MigrationContext.configure(connection).get_current_revision()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            after = MigrationContext.configure(connection).get_current_revision()
        if after != before:
            log.info("store: schema migrated from %s to %s", before or "empty", after)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        """Release the engine. Writes still queued are dropped and counted (``aclose`` writes
        them first); threads stuck on a stalled disk are not waited for."""
        stuck = self.writes.running_since is not None
        self.writes.abandon()
        self._write_thread.shutdown(wait=not stuck)
        self._executor.shutdown(wait=not stuck)
        self.engine.dispose()

    async def aclose(self, timeout_s: float) -> None:
        """Write what is queued (at most ``timeout_s``), then :meth:`close`."""
        await self.writes.close(timeout_s)
        self.close()
