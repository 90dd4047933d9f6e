"""Models and their load/unload records. Synchronous: the event loop calls via Database.run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from controlplane.store.base import utcnow
from controlplane.store.database import Database
from controlplane.store.models import LoadEvent, ModelRecord
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


class LifecycleStore:
    def __init__(self, database: Database, instance: InstanceName) -> None:
        self.db = database
        self.instance = instance

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
            row = self._row(session, name)
            row.state, row.reason, row.state_since = state, reason, at or utcnow()
            if memory_bytes is not None:
                row.memory_bytes = memory_bytes
            if load_s is not None:
                row.load_s = load_s

    def begin_event(self, name: ModelName, action: str, trigger: str,
                    started_at: datetime) -> int:
        with self.db.session() as session:
            row = self._row(session, name)
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

    def _row(self, session: Any, name: ModelName) -> ModelRecord:
        row: ModelRecord | None = session.scalar(
            select(ModelRecord).where(ModelRecord.instance == self.instance,
                                      ModelRecord.name == name))
        if row is None:
            raise KeyError(name)
        return row
