"""Model versions and rollouts in the store (``model_versions``, ``rollouts``).

Written through bounded calls, not the write-behind: a rollout's state must be durable
before it acts on it (a restart resumes from what is stored), and an operator's ``POST``
answers only once its rollout is recorded. Errors are StoreUnavailable, naming the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from controlplane.errors import StoreUnavailable
from controlplane.store.base import utcnow
from controlplane.store.database import Database
from controlplane.store.models import ModelVersionRecord, RolloutRecord

#: rollout states that are over (never resumed)
FINISHED = frozenset({"promoted", "rolled_back", "aborted"})
#: rollouts kept per model (older finished ones are deleted)
KEEP_PER_MODEL = 50


@dataclass
class RolloutRow:
    id: int
    model: str
    active: str
    version: str
    state: str
    step: int
    share: float
    reason: str
    origin: str
    options: dict[str, Any]
    verification: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


def _row(r: RolloutRecord) -> RolloutRow:
    return RolloutRow(r.id, r.model, r.active, r.version, r.state, r.step, r.share, r.reason,
                      r.origin, dict(r.options), None if r.verification is None
                      else dict(r.verification), r.created_at, r.updated_at)


class RolloutStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def versions(self) -> dict[str, tuple[str, str | None]]:
        """model -> (active, target). Raises StoreUnavailable."""
        return await self.db.call(self._versions)

    async def set_versions(self, model: str, active: str, target: str | None) -> None:
        try:
            await self.db.call(self._set_versions, model, active, target)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"the versions of '{model}' were not stored: "
                                   f"{exc.message}") from exc

    async def create(self, model: str, active: str, version: str, origin: str,
                     options: dict[str, Any], reason: str) -> RolloutRow:
        try:
            return await self.db.call(self._create, model, active, version, origin, options,
                                      reason)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"the rollout of '{model}' version {version} was not "
                                   f"stored: {exc.message}") from exc

    async def save(self, row: RolloutRow) -> None:
        """Store ``row``'s state, step, share, reason and verification."""
        row.updated_at = utcnow()
        try:
            await self.db.call(self._save, row)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"rollout {row.id} of '{row.model}' was not stored: "
                                   f"{exc.message}") from exc

    async def listed(self, model: str | None = None, limit: int = 50) -> list[RolloutRow]:
        """Newest first."""
        return await self.db.call(self._listed, model, limit)

    async def unfinished(self) -> list[RolloutRow]:
        """Rollouts a restart resumes, oldest first."""
        rows = await self.db.call(self._listed, None, 10_000)
        return [r for r in reversed(rows) if r.state not in FINISHED]

    def _versions(self) -> dict[str, tuple[str, str | None]]:
        with self.db.session() as session:
            rows = session.execute(select(ModelVersionRecord.model, ModelVersionRecord.active,
                                          ModelVersionRecord.target))
            return {model: (active, target) for model, active, target in rows}

    def _set_versions(self, model: str, active: str, target: str | None) -> None:
        with self.db.session() as session:
            found = session.get(ModelVersionRecord, model)
            if found is None:
                session.add(ModelVersionRecord(model=model, active=active, target=target,
                                               updated_at=utcnow()))
            else:
                found.active, found.target, found.updated_at = active, target, utcnow()

    def _create(self, model: str, active: str, version: str, origin: str,
                options: dict[str, Any], reason: str) -> RolloutRow:
        now = utcnow()
        with self.db.session() as session:
            record = RolloutRecord(model=model, active=active, version=version,
                                   state="verifying", step=-1, share=0.0, reason=reason,
                                   origin=origin, options=options, verification=None,
                                   created_at=now, updated_at=now)
            session.add(record)
            session.flush()
            old = session.scalars(select(RolloutRecord.id).where(
                RolloutRecord.model == model, RolloutRecord.state.in_(FINISHED))
                .order_by(RolloutRecord.id.desc()).offset(KEEP_PER_MODEL)).all()
            for rid in old:  # bounded: a model's oldest finished rollouts go
                session.delete(session.get(RolloutRecord, rid))
            return _row(record)

    def _save(self, row: RolloutRow) -> None:
        with self.db.session() as session:
            session.execute(update(RolloutRecord).where(RolloutRecord.id == row.id).values(
                state=row.state, step=row.step, share=row.share, reason=row.reason[:2000],
                verification=row.verification, updated_at=row.updated_at))

    def _listed(self, model: str | None, limit: int) -> list[RolloutRow]:
        with self.db.session() as session:
            query = select(RolloutRecord).order_by(RolloutRecord.id.desc()).limit(limit)
            if model is not None:
                query = query.where(RolloutRecord.model == model)
            return [_row(r) for r in session.scalars(query)]
