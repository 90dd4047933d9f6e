"""Models and their load/unload records.

The lifecycle calls the queued side (``queue_*``, ``begin``/``finish``): each hands a write
to the database's write-behind and returns at once, so a load or unload never waits on the
disk. The synchronous methods are what those writes run (and what reads call, via
``Database.call``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select

from controlplane.store.base import utcnow
from controlplane.store.database import Database
from controlplane.store.models import LoadEvent, ModelRecord
from controlplane.store.writebehind import Outcome
from controlplane.types import InstanceName, ModelName

#: per-load figures that have columns of their own (the rest stays in ``details``)
FIGURE_COLUMNS = ("warmup_version", "warmup_s", "probe_count", "probe_s", "first_probe_ms",
                  "probe_latency_ms")


@dataclass(frozen=True)
class EventOutcome:
    outcome: str
    error: str | None = None
    triton_s: float | None = None
    memory_bytes: int | None = None
    details: dict[str, Any] | None = None


@dataclass
class EventHandle:
    """A load/unload record queued for writing. Its row id is known once the writer inserted
    it; a finish queued behind the begin (same queue, in order) finds it there, and writes
    the whole record itself when the begin was dropped."""

    name: ModelName
    action: str
    trigger: str
    started_at: datetime
    #: the row's id once written (None before, or when the begin was dropped)
    id: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _StateRow:
    state: str
    reason: str | None
    at: datetime
    memory_bytes: int | None
    load_s: float | None


class LifecycleStore:
    def __init__(self, database: Database, instance: InstanceName) -> None:
        self.db = database
        self.instance = instance
        #: the newest state of each model (what its one queued state write writes)
        self._states: dict[ModelName, _StateRow] = {}

    # -- queued writes (the event loop; never block, never raise) ---------------------------
    def queue_model(self, name: ModelName, pinned: Iterable[ModelName],
                    initial_state: str) -> asyncio.Future[Outcome]:
        """Make sure ``name`` has a row (a model added to the repository since start-up)."""
        return self.db.writes.submit(
            "model", partial(self.sync_models, [name], list(pinned), initial_state=initial_state),
            key=("model", self.instance, name))

    def queue_state(self, name: ModelName, state: str, reason: str | None, *, at: datetime,
                    memory_bytes: int | None = None,
                    load_s: float | None = None) -> asyncio.Future[Outcome]:
        """The model's new state. Only the newest is written: a model has one queued state
        write at a time, which writes whatever is newest when it runs."""
        old = self._states.get(name)
        if old is not None:  # figures set by an unwritten state stay set (as set_state does)
            memory_bytes = old.memory_bytes if memory_bytes is None else memory_bytes
            load_s = old.load_s if load_s is None else load_s
        self._states[name] = _StateRow(state, reason, at, memory_bytes, load_s)
        return self.db.writes.submit("state", partial(self._write_state, name),
                                     key=("state", self.instance, name))

    def _write_state(self, name: ModelName) -> None:
        # The newest state is read when the write runs, and kept afterwards (one small row
        # per model): forgetting it here, on the write thread, could race with a newer one.
        row = self._states[name]
        self.set_state(name, row.state, row.reason, at=row.at, memory_bytes=row.memory_bytes,
                       load_s=row.load_s)

    def begin(self, name: ModelName, action: str, trigger: str,
              started_at: datetime) -> tuple[EventHandle, asyncio.Future[Outcome]]:
        """Queue a new load/unload record; its handle finishes it."""
        handle = EventHandle(name, action, trigger, started_at)
        return handle, self.db.writes.submit("event", partial(self._write_begin, handle))

    def _write_begin(self, handle: EventHandle) -> None:
        handle.id = self.begin_event(handle.name, handle.action, handle.trigger,
                                     handle.started_at)

    def finish(self, handle: EventHandle, result: EventOutcome,
               finished_at: datetime) -> asyncio.Future[Outcome]:
        """Queue the record's outcome."""
        return self.db.writes.submit("event", partial(self._write_finish, handle, result,
                                                      finished_at))

    def _write_finish(self, handle: EventHandle, result: EventOutcome,
                      finished_at: datetime) -> None:
        if handle.id is None:  # its begin was dropped (the queue was full): write it whole
            self._write_begin(handle)
            assert handle.id is not None
        self.finish_event(handle.id, result, finished_at)

    # -- synchronous (a database thread) ----------------------------------------------------

    def sync_models(
        self, names: Iterable[ModelName], pinned: Iterable[ModelName], *, initial_state: str
    ) -> dict[ModelName, ModelRecord]:
        """Make sure every repository model has a row; refresh pin flags. Returns all rows."""
        pinned_set = set(pinned)
        with self.db.session() as session:
            rows = {
                r.name: r for r in session.scalars(
                    select(ModelRecord).where(ModelRecord.instance == self.instance))
            }
            for name in names:
                row = rows.get(name)
                if row is None:
                    row = ModelRecord(instance=self.instance, name=name, state=initial_state,
                                      state_since=utcnow(), pinned=name in pinned_set)
                    session.add(row)
                    rows[name] = row
                else:
                    row.pinned = name in pinned_set
            return rows

    def set_state(self, name: ModelName, state: str, reason: str | None,
                  *, at: datetime | None = None, memory_bytes: int | None = None,
                  load_s: float | None = None) -> None:
        with self.db.session() as session:
            row = self._row(session, name, create=True)
            row.state, row.reason, row.state_since = state, reason, at or utcnow()
            if memory_bytes is not None:
                row.memory_bytes = memory_bytes
            if load_s is not None:
                row.load_s = load_s

    def begin_event(self, name: ModelName, action: str, trigger: str,
                    started_at: datetime) -> int:
        with self.db.session() as session:
            row = self._row(session, name, create=True)
            event = LoadEvent(model_id=row.id, action=action, trigger=trigger,
                              started_at=started_at)
            session.add(event)
            session.flush()
            return event.id

    def finish_event(self, event_id: int, result: EventOutcome, finished_at: datetime) -> None:
        with self.db.session() as session:
            event = session.get_one(LoadEvent, event_id)
            event.finished_at = finished_at
            event.duration_s = (finished_at - event.started_at).total_seconds()
            event.outcome = result.outcome
            event.error = result.error
            event.triton_s = result.triton_s
            event.memory_bytes = result.memory_bytes
            details = dict(result.details or {})
            details.pop("triton_s", None)  # a column already
            for column in FIGURE_COLUMNS:
                setattr(event, column, details.pop(column, None))
            event.details = details or None

    def close_dangling_events(self, reason: str) -> int:
        """Mark events left open by a control plane that died mid-operation."""
        with self.db.session() as session:
            dangling = session.scalars(
                select(LoadEvent).join(ModelRecord)
                .where(ModelRecord.instance == self.instance, LoadEvent.outcome.is_(None))).all()
            now = utcnow()
            for event in dangling:
                event.outcome, event.error, event.finished_at = "failed", reason, now
            return len(dangling)

    def events(self, name: ModelName, *, limit: int = 20) -> list[LoadEvent]:
        with self.db.session() as session:
            row = self._row(session, name)
            return list(session.scalars(
                select(LoadEvent).where(LoadEvent.model_id == row.id)
                .order_by(LoadEvent.started_at.desc(), LoadEvent.id.desc()).limit(limit)))

    def model(self, name: ModelName) -> ModelRecord:
        with self.db.session() as session:
            return self._row(session, name)

    def _row(self, session: Any, name: ModelName, *, create: bool = False) -> ModelRecord:
        """``name``'s row; KeyError when it has none, unless ``create`` (a queued write for a
        model whose own row write was dropped: its pin flag is set at the next start)."""
        row: ModelRecord | None = session.scalar(
            select(ModelRecord).where(ModelRecord.instance == self.instance,
                                      ModelRecord.name == name))
        if row is None:
            if not create:
                raise KeyError(name)
            row = ModelRecord(instance=self.instance, name=name, state="cold",
                              state_since=utcnow(), pinned=False)
            session.add(row)
            session.flush()
        return row
