"""Leases: one holder at a time, renewed by it, taken over once expired, given up on a
clean stop; on the real store (both dialects where the database fixture runs both)."""

from __future__ import annotations

import asyncio

from controlplane.store.database import Database
from controlplane.store.leases import LeaseStore


async def test_one_holder_renewal_expiry_and_release(database: Database) -> None:
    leases = LeaseStore(database)
    a = await leases.acquire("leader", "a", "http://a:9090", 0.5)
    assert a.held_by("a") and a.epoch == 1 and a.address == "http://a:9090"
    b = await leases.acquire("leader", "b", "http://b:9090", 0.5)
    assert b.held_by("a")  # not free: b sees who leads
    renewed = await leases.acquire("leader", "a", "http://a:9090", 0.5)
    assert renewed.held_by("a") and renewed.epoch == 1 and renewed.expires_at > a.expires_at
    await asyncio.sleep(0.7)  # a stopped renewing
    b = await leases.acquire("leader", "b", "http://b:9090", 0.5)
    assert b.held_by("b") and b.epoch == 2
    await leases.release("leader", "b")
    a = await leases.acquire("leader", "a", "http://a:9090", 0.5)
    assert a.held_by("a") and a.epoch == 3  # released: taken at once


async def test_racing_replicas_never_both_win(database: Database) -> None:
    leases = LeaseStore(database)
    results = await asyncio.gather(*(leases.acquire("leader", f"r{k}", f"http://r{k}", 5)
                                     for k in range(6)))
    holders = {r.holder for r in results}
    assert len(holders) == 1  # every replica sees the same single winner
