"""The SQL that differs between SQLite and PostgreSQL, in one place: everything else in the
store is SQLAlchemy Core or ORM that both render the same way.

- :func:`upsert`: ``INSERT ... ON CONFLICT (key) DO UPDATE``. Both spell it the same, but
  SQLAlchemy builds it from each dialect's own ``insert`` (there is no generic one).
- :class:`greatest` / :class:`least`: the larger/smaller of two values in a row. SQLite's
  scalar ``max(a, b)`` is an aggregate on PostgreSQL (and wrong with two arguments);
  PostgreSQL's ``GREATEST`` does not exist in SQLite.
- :func:`insert_tuples`: a plain executemany of tuples through the driver, with the driver's
  own placeholder (``?`` for sqlite3, ``%s`` for psycopg): the traffic flush's hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import KeyedColumnElement
from sqlalchemy.sql.functions import ReturnTypeFromArgs

from controlplane.store.base import Base

#: the dialects the store runs on
SUPPORTED = ("sqlite", "postgresql")

Excluded = ReadOnlyColumnCollection[str, KeyedColumnElement[Any]]


def dialect_of(session: Session) -> str:
    name = session.get_bind().dialect.name
    if name not in SUPPORTED:
        raise ValueError(f"the store runs on {' or '.join(SUPPORTED)}, not {name}")
    return name


def upsert(session: Session, model: type[Base], rows: Mapping[str, Any]
           | Sequence[Mapping[str, Any]], *, key: Sequence[str],
           update: Callable[[Excluded], Mapping[str, Any]]) -> None:
    """Insert ``rows`` (one mapping or several); a row whose ``key`` columns (the primary key
    or a unique constraint) exist already updates that row instead, with ``update(excluded)``:
    column -> new value, where ``excluded.<column>`` is the value the row would have
    inserted, and ``Model.<column>`` the value stored."""
    insert = postgresql.insert if dialect_of(session) == "postgresql" else sqlite.insert
    stmt = insert(model)
    stmt = stmt.on_conflict_do_update(index_elements=list(key), set_=dict(update(stmt.excluded)))
    session.execute(stmt, [rows] if isinstance(rows, Mapping) else list(rows))


class greatest(ReturnTypeFromArgs[Any]):
    """The largest of its arguments, in one row (NULLs: do not pass any, the dialects
    differ)."""

    inherit_cache = True
    _register = False  # not func.greatest: that stays SQLAlchemy's own


class least(ReturnTypeFromArgs[Any]):
    """The smallest of its arguments, in one row (NULLs: as :class:`greatest`)."""

    inherit_cache = True
    _register = False


@compiles(greatest)
def _greatest(element: greatest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"GREATEST({compiler.process(element.clauses, **kw)})"


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(least)
def _least(element: least, compiler: SQLCompiler, **kw: Any) -> str:
    return f"LEAST({compiler.process(element.clauses, **kw)})"


@compiles(least, "sqlite")
def _least_sqlite(element: least, compiler: SQLCompiler, **kw: Any) -> str:
    return f"min({compiler.process(element.clauses, **kw)})"


#: the driver's positional placeholder, by its DB-API paramstyle
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def insert_tuples(session: Session, model: type[Base], columns: Sequence[str],
                  rows: Sequence[tuple[Any, ...]]) -> None:
    """INSERT ``rows`` (values in ``columns``' order) with the driver's executemany: no ORM,
    no per-row dicts. Values go to the driver as they are: only types it takes as such
    (str, int, float, bool, None, bytes)."""
    if not rows:
        return
    dialect_of(session)
    connection = session.connection()
    placeholder = _PLACEHOLDERS[connection.dialect.paramstyle]
    quote = connection.dialect.identifier_preparer.quote
    statement = (f"INSERT INTO {quote(model.__tablename__)} ({', '.join(map(quote, columns))}) "
                 f"VALUES ({', '.join(placeholder for _ in columns)})")
    connection.exec_driver_sql(statement, list(rows))
