"""A store whose disk fails on demand: full, read-only, or stalled, through a SQLAlchemy
event on the engine, so the code under test meets the very errors SQLite raises
(``OperationalError: database or disk is full`` ...) or a statement that does not return."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from controlplane.store.database import Database

Fault = Literal["full", "readonly", "stall"]

MESSAGES = {"full": "database or disk is full", "readonly": "attempt to write a readonly database"}
_READS = ("SELECT", "PRAGMA")


class StoreFaults:
    """``fault``: None (healthy) or what writes meet now; ``stall`` also holds reads when
    ``stall_reads`` (a disk that answers nothing). ``clear()`` ends a fault and releases
    whatever a stall holds."""

    def __init__(self, database: Database) -> None:
        self.fault: Fault | None = None
        self.stall_reads = False
        self._release = threading.Event()
        #: statements refused or held while a fault was on
        self.hits = 0
        event.listen(database.engine, "before_cursor_execute", self._before)

    def set(self, fault: Fault, *, stall_reads: bool = False) -> None:
        self._release.clear()
        self.stall_reads = stall_reads
        self.fault = fault

    def clear(self) -> None:
        self.fault = None
        self._release.set()

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any,
                context: Any, executemany: bool) -> None:
        fault = self.fault
        if fault is None:
            return
        read = statement.lstrip().upper().startswith(_READS)
        if fault == "stall":
            if read and not self.stall_reads:
                return
            self.hits += 1
            self._release.wait()
            return
        if not read:
            self.hits += 1
            raise OperationalError(statement, parameters, sqlite3.OperationalError(MESSAGES[fault]))
