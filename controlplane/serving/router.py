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
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from controlplane.serving.ports import Replica
from controlplane.types import ModelName

R = TypeVar("R", bound=Replica)


class Router(Generic[R]):
    def __init__(self, runtimes: Callable[[], Sequence[R]],
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
