"""Which replica serves a request: power of two choices on requests in flight, by weight.

Only replicas that serve the model now -- ready, on an instance that takes requests, not
leaving -- with a weight above 0 are candidates: never one that is loading, warming,
unloading, being removed, or on a Triton that is down or hung. When their weights are equal
(the usual case) two are drawn at random and the one with fewer requests in flight wins
(Mitzenmacher's "power of two choices": close to least-outstanding without a global scan,
and without every gateway worker herding onto the same "least loaded" replica). When they
differ (a new replica ramping up, a canary) each request goes to one drawn in proportion to
its weight, so that a replica at 1 % gets 1 % of the requests, not the share its emptier
queue would win it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from collections.abc import Sequence as Ordered
from typing import Generic, Protocol, TypeVar

from controlplane.serving.facts import Sequence
from controlplane.serving.ports import Replica
from controlplane.types import ModelName

R = TypeVar("R", bound=Replica)


class SequenceTable(Protocol):
    """Where open sequences live (``fleet/sequences.py``)."""

    def where(self, model: str, corrid: str) -> str | None: ...
    def opened(self, model: str, corrid: str, instance: str) -> None: ...
    def ended(self, model: str, corrid: str) -> None: ...


class Router(Generic[R]):
    def __init__(self, runtimes: Callable[[], Ordered[R]],
                 rng: random.Random | None = None,
                 sticky: Callable[[ModelName], bool] = lambda model: False) -> None:
        self._runtimes = runtimes
        self._rng = rng or random.Random()
        #: models whose requests must all reach one replica (stateful: Triton's sequence
        #: batcher keeps a sequence's state on one server); the first ready one takes those
        #: that name no sequence, and each new sequence (``fleet/sequences.py``), preferring
        #: one that is not being drained
        self._sticky = sticky

    def candidates(self, model: ModelName) -> list[R]:
        """Replicas that may take a request for ``model`` now (the hot path: dict lookups)."""
        return [rt for rt in self._runtimes() if rt.serves(model) and rt.weight(model) > 0]

    def pick(self, model: ModelName) -> R | None:
        """The replica for the next request of ``model``; None when none is ready."""
        ready = self.candidates(model)
        if len(ready) < 2:
            return ready[0] if ready else None
        if self._sticky(model):
            return next((rt for rt in ready if not rt.cordoned), ready[0])
        weights = [rt.weight(model) for rt in ready]
        if min(weights) != max(weights):
            return self._rng.choices(ready, weights)[0]
        # drawn in random order, and min keeps the first of equals: ties (the usual case
        # with fast requests, all at 0 in flight) spread evenly instead of by name
        return min(self._rng.sample(ready, 2), key=_in_flight)


def _in_flight(rt: Replica) -> int:
    return rt.outstanding


def route_step(router: Router[R], sequences: SequenceTable, model: ModelName,
               sequence: Sequence, exclude: Collection[str],
               holder: Callable[[str], R | None]) -> R | None:
    """The replica for a request of a stateful model that names a sequence: a later step goes
    where its START went while ``holder(instance)`` says that replica still has the model
    (the state is there, even on an instance being drained); a new sequence goes where the
    router puts it (outside ``exclude``). END closes the table's entry."""
    if not sequence.start:
        held = sequences.where(model, sequence.id)
        rt = holder(held) if held is not None else None
        if rt is not None and rt.name not in exclude:
            if sequence.end:
                sequences.ended(model, sequence.id)
            return rt
    rt = router.pick(model)
    if rt is not None and rt.name in exclude:
        rt = next((c for c in router.candidates(model) if c.name not in exclude), None)
    if rt is not None:
        if sequence.end:
            sequences.ended(model, sequence.id)
        else:
            sequences.opened(model, sequence.id, rt.name)
    return rt
