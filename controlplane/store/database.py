"""Engine, sessions, migrations, and the two ways the running control plane reaches SQLite:
bounded calls (:meth:`Database.call`: answered within a time limit, or StoreUnavailable) and
queued writes (:attr:`Database.writes`, see ``writebehind.py``)."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from controlplane.errors import StoreUnavailable
from controlplane.store.writebehind import WriteBehind, describe, is_storage_error

MIGRATIONS = Path(__file__).parent / "migrations"
P = ParamSpec("P")
T = TypeVar("T")

#: longest wait of a bounded call. A healthy read here takes milliseconds (well under 100 ms
#: with both CPUs busy); past 2 s the disk is stalled or the pool is stuck behind it, and an
#: admin answer or a load's preparation goes on without the store rather than hang with it.
CALL_TIMEOUT_S = 2.0


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
    config.set_main_option("sqlalchemy.url", url)
    return config


class Database:
    def __init__(self, url: str, *, call_timeout_s: float = CALL_TIMEOUT_S,
                 max_queued_writes: int = 10_000, settle_s: float = 1.0) -> None:
        """``call_timeout_s``: bound of :meth:`call`; ``max_queued_writes`` and ``settle_s``:
        see :class:`~controlplane.store.writebehind.WriteBehind`."""
        self.url = url
        self.call_timeout_s = call_timeout_s
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "handle_error", _replace_read_only)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Our own threads: database work must not queue behind whatever else the process
        # runs in asyncio's default executor (a saturated default pool once stalled a load).
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sqlite")
        # Queued writes run one at a time on a thread of their own: a write stuck on a stalled
        # disk holds that thread only, and SQLite takes one writer at a time anyway.
        self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-write")
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
        """Bring the schema to the newest migration."""
        config = alembic_config(self.url)
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

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
