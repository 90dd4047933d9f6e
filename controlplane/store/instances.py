"""Instances added at run time (``fleet_instances``): what the next start restores.

Unlike the lifecycle's rows, these writes do not go through the write-behind: an operator's
``POST /instances`` answers 202 only once the instance is stored, so a write that the disk
refuses (full, read-only, failing) or does not answer within the bounded call's limit fails
the call with :class:`~controlplane.errors.StoreUnavailable` instead of being queued. After
such a timeout the write may still land (it runs on in its thread); both writes are
idempotent, so the caller retries, or deletes what it gave up on.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select

from controlplane.errors import InvalidArgument, StoreUnavailable
from controlplane.store.base import utcnow
from controlplane.store.database import Database
from controlplane.store.dialect import upsert
from controlplane.store.models import FleetInstanceRecord

#: who may add an instance at run time
ORIGINS = frozenset({"operator", "autoscaler"})
#: the ``name`` column's width
MAX_NAME = 64

#: name -> (spec, origin)
Added = dict[str, tuple[dict[str, Any], str]]


class InstanceStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def added(self) -> Added:
        """Every stored instance, oldest first: name -> (its ``[instances.<name>]`` keys,
        ``operator`` or ``autoscaler``). Raises StoreUnavailable."""
        try:
            return await self.db.call(self._added)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"the instances added at run time could not be read: "
                                   f"{exc.message}") from exc

    async def put(self, name: str, spec: dict[str, Any], origin: str) -> None:
        """Store ``name`` (replacing its spec and origin when stored already; its creation
        time stays), durable on return. Raises InvalidArgument (a name longer than 64
        characters or empty, an unknown origin, a spec that is not JSON) or StoreUnavailable
        (the disk refused the write or did not answer in time)."""
        if not 0 < len(name) <= MAX_NAME:
            raise InvalidArgument(f"an instance name has 1 to {MAX_NAME} characters: {name!r}")
        if origin not in ORIGINS:
            raise InvalidArgument(f"origin must be one of {sorted(ORIGINS)}: {origin!r}")
        try:
            json.dumps(spec)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"instance {name!r}: its spec is not JSON ({exc})") from exc
        try:
            await self.db.call(self._put, name, spec, origin)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"instance {name!r} was not stored: {exc.message}") from exc

    async def delete(self, name: str) -> None:
        """Forget ``name`` (nothing happens when it is not stored), durable on return.
        Raises StoreUnavailable."""
        try:
            await self.db.call(self._delete, name)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"instance {name!r} was not removed from the store: "
                                   f"{exc.message}") from exc

    def _added(self) -> Added:
        with self.db.session() as session:
            rows = session.execute(select(
                FleetInstanceRecord.name, FleetInstanceRecord.spec, FleetInstanceRecord.origin)
                .order_by(FleetInstanceRecord.created_at, FleetInstanceRecord.name))
            return {name: (dict(spec), origin) for name, spec, origin in rows}

    def _put(self, name: str, spec: dict[str, Any], origin: str) -> None:
        with self.db.session() as session:
            upsert(session, FleetInstanceRecord,
                   {"name": name, "spec": spec, "origin": origin, "created_at": utcnow()},
                   key=["name"], update=lambda new: {"spec": new.spec, "origin": new.origin})

    def _delete(self, name: str) -> None:
        with self.db.session() as session:
            session.execute(delete(FleetInstanceRecord).where(FleetInstanceRecord.name == name))
