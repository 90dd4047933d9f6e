"""Leadership over a lease store fake (a narrow interface: acquire, release) on a fake clock:
gain and loss call their hooks once, a leader that cannot renew steps down before its lease
could lapse, a clean stop releases the lease."""

from __future__ import annotations

from datetime import datetime, timedelta

from controlplane.cluster.leadership import Leadership
from controlplane.errors import StoreUnavailable
from controlplane.store.base import utcnow
from controlplane.store.leases import Lease


class FakeLeases:
    def __init__(self) -> None:
        self.holder: str | None = None
        self.epoch = 0
        self.failing = False
        self.released: list[str] = []

    async def acquire(self, name: str, holder: str, address: str, lease_s: float) -> Lease:
        if self.failing:
            raise StoreUnavailable("the store failed: connection refused")
        if self.holder in (None, holder):
            if self.holder is None:
                self.epoch += 1
            self.holder = holder
        return Lease(name, self.holder or "", f"http://{self.holder}", self.epoch,
                     utcnow() + timedelta(seconds=lease_s))

    async def release(self, name: str, holder: str) -> None:
        self.released.append(holder)
        if self.holder == holder:
            self.holder = None


def _leadership(store: FakeLeases, name: str, now: list[float]) -> tuple[Leadership,
                                                                           list[str]]:
    calls: list[str] = []
    ls = Leadership(store, name, f"http://{name}", 9.0, clock=lambda: now[0])  # type: ignore[arg-type]

    async def gained() -> None:
        calls.append("gain")

    async def lost() -> None:
        calls.append("lose")

    ls.on_gain.append(gained)
    ls.on_lose.append(lost)
    return ls, calls


async def test_one_leader_and_a_follower_that_knows_it() -> None:
    store, now = FakeLeases(), [0.0]
    a, a_calls = _leadership(store, "a", now)
    b, b_calls = _leadership(store, "b", now)
    await a.step()
    await b.step()
    await a.step()  # a renewal changes nothing
    assert a.is_leader and not b.is_leader
    assert a_calls == ["gain"] and b_calls == []
    assert b.view() == {"replica": "b", "leader": False, "leader_replica": "a",
                        "leader_address": "http://a", "lease_s": 9.0, "epoch": 1}
    await a.close()  # a clean stop: released, b leads at its next step
    assert store.released == ["a"] and not a.is_leader
    await b.step()
    assert b.is_leader and b_calls == ["gain"] and store.epoch == 2


async def test_a_leader_that_cannot_renew_steps_down_before_its_lease_lapses() -> None:
    store, now = FakeLeases(), [0.0]
    a, calls = _leadership(store, "a", now)
    await a.step()
    store.failing = True
    now[0] = 3.0  # one missed renewal (a third of the lease): still leads
    await a.step()
    assert a.is_leader and calls == ["gain"]
    now[0] = 6.5  # over two thirds of the lease without renewal: it steps down
    await a.step()
    assert not a.is_leader and calls == ["gain", "lose"]
    store.failing = False
    await a.step()  # the store is back and the lease still its own
    assert a.is_leader and calls == ["gain", "lose", "gain"]


def test_lease_held_by() -> None:
    lease = Lease("leader", "a", "http://a", 1, datetime(2026, 1, 1))
    assert lease.held_by("a") and not lease.held_by("b")
