"""Leases in the store: one holder at a time, taken over once it expires (``leases``).

``acquire`` is one conditional UPDATE -- taken when free, expired or already ours -- and an
INSERT when the lease was never held: both PostgreSQL and SQLite evaluate the condition and
write the row atomically, so two replicas racing for an expired lease cannot both win. Times
are each replica's clock (UTC): replicas whose clocks differ by less than a fraction of the
lease are safe; ``epoch`` grows with each change of holder, a fencing token for writes that
must come from the current leader.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, case, select, update
from sqlalchemy.exc import IntegrityError

from controlplane.errors import StoreUnavailable
from controlplane.store.base import utcnow
from controlplane.store.database import Database
from controlplane.store.models import LeaseRecord


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    #: the holder's admin API (where followers send writes)
    address: str
    epoch: int
    expires_at: datetime

    def held_by(self, holder: str) -> bool:
        return self.holder == holder


class LeaseStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def acquire(self, name: str, holder: str, address: str, lease_s: float) -> Lease:
        """Take or renew ``name`` for ``lease_s`` seconds if it is free, expired or ours;
        returns the lease as it is now (held by someone else when it was not free).
        Raises StoreUnavailable."""
        try:
            return await self.db.call(self._acquire, name, holder, address, lease_s)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"lease '{name}' not renewed: {exc.message}") from exc

    async def release(self, name: str, holder: str) -> None:
        """Give ``name`` up now (a clean stop: another replica takes over at once)."""
        await self.db.call(self._release, name, holder)

    def _acquire(self, name: str, holder: str, address: str, lease_s: float) -> Lease:
        now = utcnow()
        until = now + timedelta(seconds=lease_s)
        with self.db.session() as session:
            taken: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(LeaseRecord)
                .where(LeaseRecord.name == name,
                       (LeaseRecord.holder == holder) | (LeaseRecord.expires_at < now))
                .values(holder=holder, address=address, expires_at=until,
                        epoch=case((LeaseRecord.holder == holder, LeaseRecord.epoch),
                                   else_=LeaseRecord.epoch + 1)))
            missing = taken.rowcount == 0 and session.get(LeaseRecord, name) is None
        if missing:
            try:
                with self.db.session() as session:
                    session.add(LeaseRecord(name=name, holder=holder, address=address,
                                            epoch=1, expires_at=until))
            except IntegrityError:  # another replica inserted it first: theirs
                pass
        with self.db.session() as session:
            row = session.execute(select(LeaseRecord).where(LeaseRecord.name == name)).scalar_one()
            return Lease(row.name, row.holder, row.address, row.epoch, row.expires_at)

    def _release(self, name: str, holder: str) -> None:
        with self.db.session() as session:
            session.execute(update(LeaseRecord)
                            .where(LeaseRecord.name == name, LeaseRecord.holder == holder)
                            .values(expires_at=utcnow()))
