"""The policy, driven live: wall-clock time, recorded arrivals, the lifecycle's states.

The same policy objects the simulator runs (``controlplane.policy``) decide here. They are
synchronous and not thread-safe, so every call into the policy goes through one dedicated
thread: planning never runs on, or blocks, the event loop the gateway serves from.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from controlplane.background import Background
from controlplane.config import SchedulerOptions
from controlplane.errors import ControlPlaneError
from controlplane.lifecycle.states import ModelState
from controlplane.policy.harness import Harness
from controlplane.policy.registry import make_policy
from controlplane.policy.types import (
    Action,
    ClusterView,
    DecisionKind,
    ModelDecision,
    Policy,
    Residency,
)
from controlplane.scheduler.control import ModelControl
from controlplane.scheduler.levels import Level, Placement, own_level, place, stage
from controlplane.scheduler.profiles import ProfileBook
from controlplane.traffic.observation import Observation
from controlplane.traffic.store import TrafficStore
from controlplane.types import ModelName

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

#: no budget configured: large enough never to bind
UNLIMITED_MB = 1e12


@dataclass
class ActionRecord:
    at: float
    kind: str
    model: str
    reason: str
    outcome: str


@dataclass
class SchedulerState:
    held: set[ModelName] = field(default_factory=set)
    staged: dict[ModelName, float] = field(default_factory=dict)
    placement: Placement = field(default_factory=lambda: Placement({}))
    actions: list[ActionRecord] = field(default_factory=list)
    last_tick: float | None = None


class LiveScheduler:
    def __init__(self, *, manager: ModelControl, traffic: TrafficStore,
                 options: SchedulerOptions, clock: Callable[[], float] = time.time) -> None:
        self.manager = manager
        self.traffic = traffic
        self.options = options
        self.clock = clock
        self.book = ProfileBook(manager.repository, options)
        self.state = SchedulerState(held=set(manager.pinned))
        self.policy: Policy | None = None
        #: the rules applied around the policy, the same the simulators apply
        self.harness = Harness(pinned=frozenset(manager.pinned), held=self.state.held,
                               pins_settled=False, blocked=self._blocked)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        #: loads it started and page-cache staging in flight
        self.background = Background()
        self._tick_lock = asyncio.Lock()
        #: told of every preload the policy times (the job runner persists them)
        self.on_preload_plan: Callable[[ModelName, float], None] | None = None
        #: awaited at the end of each tick with its decisions as applied (e.g. the fleet
        #: places replicas from them); a hook must not call :meth:`tick` (it holds the lock)
        self.on_decisions: list[Callable[[list[ModelDecision]], Awaitable[object]]] = []

    @property
    def demanded(self) -> set[ModelName]:
        """Models with recorded demand; one nobody asked for is not preloaded."""
        return self.harness.demanded

    @property
    def pins_settled(self) -> bool:
        """Pinned models load at start-up one by one in priority order; until that is done
        the scheduler leaves them alone."""
        return self.harness.pins_settled

    @pins_settled.setter
    def pins_settled(self, value: bool) -> None:
        self.harness.pins_settled = value

    @property
    def budget_mb(self) -> float:
        return self.options.memory_budget_mb or UNLIMITED_MB

    @property
    def gpu_budget_mb(self) -> float:
        """The GPU budget in force: configured, or derived from the GPUs at start-up (see
        :mod:`controlplane.scheduler.gpus`); 0 without GPUs."""
        return self.options.gpu_memory_budget_mb or 0.0

    async def ask(self, fn: Callable[[Policy], T]) -> T | None:
        """``fn(policy)`` on the policy's thread (its objects are not thread-safe); None
        before the policy is built."""
        policy = self.policy
        if policy is None:
            return None
        return await self._call(fn, policy)

    async def _call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    # -- start-up and feed ------------------------------------------------------------------
    async def start(self) -> None:
        """Build the policy and replay recorded arrivals into it (restart keeps the forecast)."""
        self.book.update(self.manager.statuses(), self.state.held)
        self.policy = make_policy(self.options.policy, self.book.profiles, self.options.param)
        since = self.clock() - self.options.replay_h * 3600
        arrivals = await self.traffic.db.run(self.traffic.arrivals, since)
        await self._call(self._observe_all, [(t, m) for m, t in arrivals])
        # the replayed per-model state lives as long as the process: out of the cyclic
        # collector's scans (a full collection over 10k models' state took ~200 ms of a
        # planning pass; bench/planning.py)
        gc.freeze()
        self.manager.before_load.append(self.make_room)
        log.info("scheduler: policy %s, %d arrivals replayed, budget %s MB",
                 self.options.policy, len(arrivals), self.options.memory_budget_mb or "unlimited")

    def _observe_all(self, arrivals: Sequence[tuple[float, ModelName]]) -> None:
        assert self.policy is not None
        known = self.book.profiles
        for t, model in sorted(arrivals):
            if model in known:
                self.policy.observe(model, t)
                self.harness.observe(model)

    def observe(self, batch: list[Observation]) -> None:
        """The recorder's flush listener: hand the batch's arrivals to the policy thread."""
        if self.policy is None:
            return
        arrivals = [(o.arrived_at, o.model) for o in batch]
        self._thread.submit(self._observe_all, arrivals).add_done_callback(_log_failure)

    # -- decisions --------------------------------------------------------------------------
    def view(self) -> ClusterView:
        residency = {}
        for s in self.manager.statuses():
            if s.state is ModelState.READY and not s.busy:
                residency[s.name] = Residency.READY
            elif s.state in (ModelState.READY, ModelState.LOADING, ModelState.WARMING,
                             ModelState.UNLOADING):
                residency[s.name] = Residency.LOADING  # holds memory, cannot be evicted now
        return ClusterView(self.clock(), self.budget_mb, self.book.profiles, residency)

    async def tick(self) -> list[Action]:
        """One planning pass: refresh profiles, ask the policy, apply, stage, place."""
        assert self.policy is not None
        async with self._tick_lock:
            self.book.update(self.manager.statuses(), self.state.held)
            view = self.view()
            actions = self.harness.admit(await self._call(self.policy.plan, view), view)
            await self.apply(actions)
            decisions = await self.explain_decisions()
            self.state.placement = place(
                ((d.model, self.book.profiles[d.model].memory_mb,
                  d.requests_per_day / max(self.book.profiles[d.model].memory_mb, 1.0))
                 for d in decisions if d.decision in ("pinned", "keep", "preload")
                 and d.model in self.book.profiles and self._wants_gpu(d.model)),
                self.gpu_budget_mb)
            self._stage(decisions)
            if self.on_preload_plan is not None:
                for d in decisions:
                    if d.decision == "preload" and d.preload_at is not None:
                        self.on_preload_plan(d.model, d.preload_at)
            self.state.last_tick = view.now
            for hook in self.on_decisions:
                await hook(decisions)
            return actions

    async def preload(self, model: ModelName) -> None:
        """A timed preload coming due (also after a restart, from the persisted job).

        Such jobs are only scheduled for models with recorded demand, so one that fires is
        honoured even when the history that justified it is gone.
        """
        view = self.view()
        if view.state(model) is not Residency.COLD:
            return
        if (blocked := self._blocked(model)) is not None:
            self._record(Action("load", model, "scheduled preload"), f"skipped: {blocked[1]}")
            return
        profile = self.book.profiles[model]
        room = [a for a in await self._call(self.policy.on_demand, model, view)
                if a.kind == "unload"] if self.policy else []
        if view.resident_mb() + profile.memory_mb - sum(
                self.book.profiles[a.model].memory_mb for a in room) > self.budget_mb:
            self._record(Action("load", model, "scheduled preload"), "skipped: no room")
            return
        await self.apply([*room, Action("load", model, "scheduled preload")])

    async def apply(self, actions: list[Action]) -> None:
        """Unloads first, together (they make the room), then loads in the background."""
        await asyncio.gather(*(self._unload(a) for a in actions if a.kind == "unload"))
        for action in actions:
            if action.kind == "load":
                self.background.spawn(self._load(action))

    async def _unload(self, action: Action) -> None:
        if action.model in self.state.held:
            self._record(action, "skipped: held")
            return
        try:
            await self.manager.unload(action.model, trigger="scheduler")
            self._record(action, "ok")
        except ControlPlaneError as exc:
            self._record(action, f"failed: {exc}")

    async def _load(self, action: Action) -> None:
        try:
            await self.manager.load(action.model, trigger="scheduler")
            self._record(action, "ok")
        except ControlPlaneError as exc:
            self._record(action, f"failed: {exc}")

    async def make_room(self, model: ModelName, trigger: str) -> None:
        """Before a load the policy did not plan (a request, the API): evict what it says."""
        if trigger == "scheduler" or self.policy is None or model not in self.book.profiles:
            return
        view = self.view()
        view = ClusterView(view.now, view.budget_mb, view.models,
                           {k: v for k, v in view.residency.items() if k != model})
        actions = [a for a in await self._call(self.policy.on_demand, model, view)
                   if a.kind == "unload"]
        statuses = {s.name: s for s in self.manager.statuses()}
        extra, over = self.harness.more_room(
            model, view, actions,
            {name: s.since.timestamp() for name, s in statuses.items()})
        if over > 0:
            self._record(Action("load", model, f"over budget by {over:.0f} MB: the rest is "
                                               "held by loading or held models"), "warning")
        await self.apply([*actions, *extra])

    # -- levels -----------------------------------------------------------------------------
    def device(self, model: ModelName) -> Level | None:
        """Where the plan put ``model``; None: where its own config says."""
        return self.state.placement.device(model)

    def _wants_gpu(self, model: ModelName) -> bool:
        """Its config asks for the GPU (KIND_AUTO does too where GPUs exist, and the budget is
        0 where none do, so AUTO counts)."""
        try:
            return own_level(self.manager.repository.spec(model).instance_kind) is not Level.CPU
        except ControlPlaneError:
            return False  # a config that cannot be read is the lifecycle's to report

    def _stage(self, decisions: list[ModelDecision]) -> None:
        """Read into the page cache the files of cold models expected within the horizon."""
        horizon = self.clock() + self.options.staging_horizon_s
        for d in decisions:
            due = d.preload_at is not None and d.preload_at <= horizon
            if not due or d.model in self.state.staged:
                continue
            self.state.staged[d.model] = self.clock()
            files = [p for p in self.manager.repository.model_dir(d.model).rglob("*")
                     if p.is_file()]
            self.background.spawn(asyncio.to_thread(stage, files))

    # -- explanation ------------------------------------------------------------------------
    async def explain_decisions(self) -> list[ModelDecision]:
        explain = getattr(self.policy, "explain", None)
        if explain is None:
            return []
        decisions: list[ModelDecision] = await self._call(explain, self.view())
        # Every action and placement below reads these; a move off the GPU says so.
        return self.harness.explain(decisions, self.state.placement.why)

    def _blocked(self, model: ModelName) -> tuple[DecisionKind, str] | None:
        """(decision, why) when the lifecycle forbids automatic loads of ``model`` now:
        disabled, held cold by the operator, or a failed load backing off."""
        try:
            status = self.manager.status(model)
        except ControlPlaneError:
            return None
        if status.disabled:
            return "disabled", f"never loaded: {status.disabled}"
        if status.held:
            return "held cold", ("unloaded by the operator: stays cold until the operator "
                                 "loads or releases it")
        if status.retry_at is not None:
            at = datetime.fromtimestamp(status.retry_at, UTC).isoformat(timespec="seconds")
            return "failed", (f"failed {status.failures}x, retry at {at} "
                              f"(exponential back-off): {status.reason}")
        return None

    def next_wakeup(self) -> float | None:
        return self.policy.next_wakeup(self.clock()) if self.policy else None

    # -- holding (operator rules) -----------------------------------------------------------
    async def hold(self, model: ModelName, why: str) -> None:
        self.state.held.add(model)
        self._record(Action("load", model, why), "held")
        await self.tick()

    async def release(self, model: ModelName, why: str) -> None:
        if model in self.manager.pinned:
            return
        self.state.held.discard(model)
        self._record(Action("unload", model, why), "released")
        await self.tick()

    # -- plumbing ---------------------------------------------------------------------------
    def _record(self, action: Action, outcome: str) -> None:
        self.state.actions.append(ActionRecord(self.clock(), action.kind, action.model,
                                               action.reason, outcome))
        del self.state.actions[:-200]

    async def close(self) -> None:
        await self.background.close()
        self._thread.shutdown(wait=True)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("policy observe failed", exc_info=future.exception())
