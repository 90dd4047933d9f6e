"""Which model's requests crash a Triton: each crash traced to the models in it, a repeat
offender quarantined so the others keep being served.

A Triton crash (a signal, not our own stop or kill) takes every model on that server down, and
a request that crashes it once will crash it again after the restart -- and wherever failover
moves the model. So when a tritonserver dies, the models whose requests were in it are its
suspects: those with requests in flight on its channel when its exit is seen, and those whose
requests failed UNAVAILABLE within ``AROUND_S`` of it (the exit and the broken calls arrive in
either order; the supervisor asks for the cause only after its restart delay). A model that is
a suspect of ``THRESHOLD`` crashes within ``WINDOW_S``, on any instance, is quarantined on every
instance: automatic loads (requests, the scheduler, restores, failover) refuse it with the
reason until the operator loads or releases it; it is unloaded where it is still ready. The
supervisor counts its restart budget per cause: a restart whose crash a quarantined model
explains does not bring the instance nearer to giving up.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from controlplane.background import Background
from controlplane.errors import ControlPlaneError
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.types import InstanceName, ModelName

log = logging.getLogger(__name__)

#: crashes a model must be a suspect of before it is quarantined (one can be a coincidence)
THRESHOLD = 2
#: ... within this many seconds
WINDOW_S = 600.0
#: an UNAVAILABLE answer this close to a crash puts its model among the crash's suspects
AROUND_S = 2.0
#: remembered at most (the tracker is bounded whatever the traffic)
MAX_FAILURES = 1024
MAX_CRASHES = 64


@dataclass
class Crash:
    at: float
    instance: InstanceName
    reason: str
    suspects: set[ModelName] = field(default_factory=set)
    attributed: bool = False


class CrashTracker:
    def __init__(self, fleet: Fleet, *, threshold: int = THRESHOLD, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self.threshold = threshold
        self.window_s = window_s
        self.clock = clock
        self.crashes: deque[Crash] = deque(maxlen=MAX_CRASHES)
        #: model -> why it is quarantined
        self.quarantined: dict[ModelName, str] = {}
        self._failures: deque[tuple[float, InstanceName, ModelName]] = deque(maxlen=MAX_FAILURES)
        self._unloads = Background()

    def watch(self, rt: InstanceRuntime) -> None:
        """Follow ``rt``'s supervisor: its crashes, its restart causes, its budget."""
        sup = rt.supervisor
        assert sup is not None
        sup.on_crash.append(lambda reason: self.crashed(rt, reason))
        sup.cause = lambda: self.cause(rt.name)
        sup.excused = self.excused

    def request_failed(self, instance: InstanceName, model: ModelName, status: str) -> None:
        """The gateway saw a request fail upstream (``status``: the gRPC status name)."""
        if status == "UNAVAILABLE":
            self._failures.append((self.clock(), instance, model))

    def crashed(self, rt: InstanceRuntime, reason: str) -> None:
        """``rt``'s tritonserver died: note the models in flight on it now."""
        upstream = rt.upstream
        in_flight = set() if upstream is None else {
            m for m, n in upstream.by_model.items() if n > 0}
        self.crashes.append(Crash(self.clock(), rt.name, reason, in_flight))

    def cause(self, instance: InstanceName) -> frozenset[ModelName]:
        """The suspects of ``instance``'s last crash (once the requests that died with it have
        reported), quarantining any model now past the threshold."""
        crash = next((c for c in reversed(self.crashes)
                      if c.instance == instance and not c.attributed), None)
        if crash is None:
            return frozenset()
        crash.attributed = True
        mine = [(at, m) for at, where, m in self._failures if where == instance]
        crash.suspects |= {m for at, m in mine if abs(at - crash.at) <= AROUND_S}
        # used up: a later crash of this instance is judged by its own failures only
        self._failures = deque(((at, where, m) for at, where, m in self._failures
                                if where != instance or at > crash.at + AROUND_S),
                               maxlen=MAX_FAILURES)
        for model in sorted(crash.suspects):
            self._judge(model)
        return frozenset(crash.suspects)

    def excused(self, cause: frozenset[ModelName]) -> bool:
        self._sync()
        return any(model in self.quarantined for model in cause)

    def _sync(self) -> None:
        """A quarantine the operator ended (a load, a release) is forgotten here too, and the
        model judged afresh from then on."""
        for model in list(self.quarantined):
            if not any(m.status(model).quarantined for _, m in self.fleet.managers()
                       if model in m.repository):
                del self.quarantined[model]
                for crash in self.crashes:
                    crash.suspects.discard(model)

    def _judge(self, model: ModelName) -> None:
        self._sync()
        horizon = self.clock() - self.window_s
        mine = [c for c in self.crashes if c.at >= horizon and model in c.suspects]
        if len(mine) < self.threshold or model in self.quarantined:
            return
        last = mine[-1]
        reason = (f"its requests were in tritonserver at {len(mine)} crashes within "
                  f"{self.window_s:g}s (last on {last.instance}: {last.reason})")[:500]
        log.error("model %s quarantined: %s", model, reason)
        self.quarantined[model] = reason
        for rt, manager in self.fleet.managers():
            try:
                manager.quarantine(model, reason)
            except ControlPlaneError:
                continue
            if manager.ready_now(model):  # a replica elsewhere would crash its Triton too
                self._unloads.spawn(self._unload(rt, model))
            self.fleet.record("quarantine", model, rt.name, reason, "quarantined")

    async def _unload(self, rt: InstanceRuntime, model: ModelName) -> None:
        assert rt.manager is not None
        try:
            await rt.manager.unload(model, trigger="quarantine", force=True)
        except ControlPlaneError as exc:
            log.warning("unloading quarantined %s from %s: %s", model, rt.name, exc)

    async def close(self) -> None:
        await self._unloads.close()
