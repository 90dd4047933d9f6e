"""Where each open sequence of a stateful model lives.

Triton's sequence batcher keeps a sequence's state (its correlation id's slot and whatever the
model accumulates) on the one server that got its START: every later request of the sequence
must reach that server, and a server that unloads the model breaks the sequence ("must specify
the START flag on the first request of the sequence"). The gateway therefore routes a request
that carries a correlation id by this table: START goes to a replica the router picks (new
sequences avoid instances being drained), every later step to where its START went -- even an
instance that is draining or a replica that is leaving, for as long as Triton still serves the
model there -- and END closes the entry.

An entry expires when the sequence has been idle longer than the model's
``max_sequence_idle_microseconds`` (Triton then frees the slot itself; default 1 s, per
``model_config.proto``). A drain waits until no entry is open on the instance (up to its
timeout) before it unloads the model. The table is bounded: past ``max_open`` entries the
least recently used is forgotten (that sequence then routes like a new one).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from controlplane.serving.facts import Sequence
from controlplane.types import InstanceName, ModelName

__all__ = ["DEFAULT_IDLE_S", "MAX_OPEN", "Sequence", "Sequences"]

#: Triton's default when ``max_sequence_idle_microseconds`` is unset or 0 (model_config.proto)
DEFAULT_IDLE_S = 1.0
#: open sequences remembered at most (an entry is ~200 bytes)
MAX_OPEN = 100_000

Key = tuple[ModelName, str]



class Sequences:
    def __init__(self, idle_s: Callable[[ModelName], float], *, max_open: int = MAX_OPEN,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._idle_s = idle_s
        self._max_open = max_open
        self._clock = clock
        #: (model, correlation id) -> (instance, last request's monotonic time); LRU order
        self._open: OrderedDict[Key, tuple[InstanceName, float]] = OrderedDict()
        #: (instance, model) -> sequences open there in the gateway's worker processes, as
        #: they last reported them (each worker routes its own clients' sequences)
        self.elsewhere: dict[tuple[InstanceName, ModelName], int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def where(self, model: ModelName, corrid: str) -> InstanceName | None:
        """The instance holding this open sequence (and mark it active), else None."""
        key = (model, corrid)
        found = self._open.get(key)
        if found is None:
            return None
        now = self._clock()
        if now - found[1] > self._idle_s(model):
            del self._open[key]  # Triton has freed its slot: it routes as a new one
            return None
        self._open[key] = (found[0], now)
        self._open.move_to_end(key)
        return found[0]

    def opened(self, model: ModelName, corrid: str, instance: InstanceName) -> None:
        """A START went to ``instance``."""
        key = (model, corrid)
        self._open[key] = (instance, self._clock())
        self._open.move_to_end(key)
        while len(self._open) > self._max_open:
            self._open.popitem(last=False)

    def ended(self, model: ModelName, corrid: str) -> None:
        self._open.pop((model, corrid), None)

    def open_on(self, instance: InstanceName, model: ModelName | None = None) -> int:
        """Sequences still open (not idle past their limit) on ``instance``, of ``model``
        or of any model."""
        now = self._clock()
        remote = sum(n for (where, m), n in self.elsewhere.items()
                     if where == instance and (model is None or m == model))
        return remote + sum(1 for (m, _), (where, seen) in self._open.items()
                            if where == instance and (model is None or m == model)
                            and now - seen <= self._idle_s(m))

    def count_open(self) -> dict[tuple[InstanceName, ModelName], int]:
        """Open sequences per (instance, model), idle ones not counted (a worker's report)."""
        now, counts = self._clock(), dict[tuple[InstanceName, ModelName], int]()
        for (m, _), (where, seen) in self._open.items():
            if now - seen <= self._idle_s(m):
                counts[(where, m)] = counts.get((where, m), 0) + 1
        return counts

    def forget(self, instance: InstanceName) -> None:
        """``instance`` lost its state (its Triton died): its sequences are gone."""
        for key in [k for k, (where, _) in self._open.items() if where == instance]:
            del self._open[key]
