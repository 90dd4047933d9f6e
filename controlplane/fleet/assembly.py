"""The fleet and what keeps it, built from the settings and wired together (nothing else).

The composition root (``app.py``) builds one :class:`FleetParts`; its parts are the fleet
(models over instances), the membership (instances joining and leaving), replica placement,
crash tracing, failover and shared memory per instance (``listeners.py``), the traffic ramp,
the measured load, the autoscaler, the policy's budgets, and the live scheduler over the
fleet with its jobs (:meth:`FleetParts.start_scheduler`). Each instance's hooks into them
are set in :meth:`FleetParts.wire`, before it starts; the loops they run are
:meth:`FleetParts.loops`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent

from controlplane.compile_cache.cold_start import ColdStarts
from controlplane.config import Settings
from controlplane.fleet.budgets import FleetBudgets
from controlplane.fleet.crashes import CrashTracker
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.health import HealthChecker
from controlplane.fleet.listeners import InstanceWiring
from controlplane.fleet.load_watch import LoadWatch
from controlplane.fleet.membership import InstanceRecords, Membership
from controlplane.fleet.placement import ReplicaPlacer
from controlplane.fleet.prewarm import standby_models
from controlplane.fleet.providers import providers
from controlplane.fleet.ramp import Ramp
from controlplane.fleet.removal import remove_replica
from controlplane.fleet.runtime import InstanceRuntime, Shared
from controlplane.fleet.scaling import LiveAutoscaler
from controlplane.loops import Loops
from controlplane.policy.autoscale import forecast_ahead
from controlplane.scheduler.driver import LiveScheduler
from controlplane.scheduler.jobs import JobRunner
from controlplane.store.database import Database
from controlplane.traffic.recorder import TrafficRecorder
from controlplane.traffic.store import TrafficStore
from controlplane.triton.repository import ModelRepository
from controlplane.types import ModelName

#: how often replicas are checked against the measured load (s)
FOLLOW_LOAD_S = 5.0
#: how often ramps advance (s)
RAMP_TICK_S = 1.0
#: loads whose replica takes its full share at once: start-up's pinned loads
NO_RAMP = frozenset({"startup"})


class FleetParts:
    def __init__(self, settings: Settings, shared: Shared, repository: ModelRepository,
                 records: InstanceRecords | None) -> None:
        self.settings = settings
        fleet_options = settings.fleet
        # the fleet starts empty: its membership starts what the providers discover
        self.fleet = fleet = Fleet(
            [], repository, fleet_options,
            pinned=[m for m in settings.pinned_models() if m in repository],
            call_timeout_s=settings.triton.call_timeout_s)
        self.placer = ReplicaPlacer(fleet, fleet_options)
        #: crashes traced to the models in them; repeat offenders quarantined
        self.crashes = CrashTracker(fleet)
        #: failover, crash tracing and shared memory for each instance that joins
        self.wiring = InstanceWiring(fleet, self.crashes)
        fleet.membership_listeners.append(self.wiring)
        self.membership = Membership(fleet, shared, providers(settings), records=records,
                                     planned=self._planned)
        #: a new replica's share of its model's traffic, rising over ``fleet.ramp_s``
        self.ramp = Ramp(lambda: fleet.order, fleet_options.ramp_s,
                         fleet_options.ramp_start_weight, on_drop=self._ramp_dropped)
        self.membership.on_serving.append(
            lambda rt, model: self.ramp.begin(rt.name, model, f"{rt.name} joined"))
        fleet.membership_listeners.append(_RampMembers(self.ramp))
        #: measured rate and latency per model (replicas and instances follow them)
        self.load_watch = LoadWatch(fleet_options.measured_rate_window_s)
        self.placer.measured = self.load_watch.rate
        #: instances that follow the forecast and the load (acts only when enabled)
        self.autoscaler = LiveAutoscaler(fleet, self.membership, settings, self.load_watch,
                                         forecast=self._forecast_ahead)
        if settings.autoscaler.enabled:
            self.wiring.on_down.append(self.autoscaler.on_down)
            self.placer.ahead = lambda: self.autoscaler.ahead_rates
        #: the policy's budget: the serving instances' summed (None: scheduler off)
        self.budgets: FleetBudgets | None = None
        if settings.scheduler.enabled:
            self.budgets = FleetBudgets(fleet, settings.scheduler)
            self.membership.on_started.append(self.budgets.measure)
        #: set once the scheduler runs (the forecast is its policy's)
        self.scheduler: LiveScheduler | None = None
        #: periodic probes of every ready replica; a failing one leaves routing (``health.py``)
        self.health = HealthChecker(fleet, settings.health)
        fleet.membership_listeners.append(self.health)

    def wire(self, rt: InstanceRuntime) -> None:
        """The fleet's hooks in one instance's lifecycle (before it starts)."""
        manager = rt.manager
        assert manager is not None
        fleet = self.fleet
        manager.before_load.append(fleet.run_before_load)
        manager.before_load.append(lambda model, trigger: self.placer.make_room(rt, model))
        manager.elsewhere = lambda model: fleet.ready_elsewhere(model, rt)
        self.health.wire(rt)

        async def ramp_up(model: ModelName, load_s: float, details: dict[str, Any]) -> None:
            # a new replica beside others (placer, failover, a request's load, a restore
            # after a Triton restart) ramps up; not a reload (a rollout's: the replica
            # served already), nor the start-up's pinned loads (no traffic to protect yet);
            # on a joining instance the ramp starts when it serves (``membership.on_serving``)
            trigger = details.get("trigger")
            if rt.routable and trigger is not None and trigger not in NO_RAMP:
                self.ramp.begin(rt.name, model, f"replica loaded ({trigger})")
        manager.after_load.append(ramp_up)

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Start every instance the providers know (closed last: pushed first)."""
        stack.push_async_callback(self.membership.close)
        await self.membership.start()
        stack.push_async_callback(self.wiring.close)
        stack.push_async_callback(self.crashes.close)
        stack.push_async_callback(self.fleet.close)
        stack.push_async_callback(self.placer.close)
        stack.push_async_callback(self.health.close)

    async def start_scheduler(self, traffic: TrafficStore, database: Database, loops: Loops,
                              *, cold_starts: ColdStarts | None,
                              recorder: TrafficRecorder | None
                              ) -> tuple[LiveScheduler, JobRunner]:
        """Start the live scheduler over the fleet (its policy replays the recorded traffic
        first; the recorder's arrivals feed it from then on) and its jobs, which report to
        ``/healthz`` as the loop ``scheduler``. The policy sees the fleet as one budget, the
        serving instances' summed (``budgets.py``). Raises what the replay's read raises."""
        budgets = self.budgets
        assert budgets is not None, "the fleet's budgets exist when the scheduler is enabled"
        scheduler = LiveScheduler(manager=self.fleet, traffic=traffic,
                                  options=budgets.current())
        if cold_starts is not None:  # before start(): its first profiles use it
            scheduler.book.cold_start = cold_starts.expected_load_s
        await scheduler.start()
        self.use_scheduler(scheduler)
        if recorder is not None:
            recorder.listeners.append(scheduler.observe)
        jobs = JobRunner(scheduler, database=database, instance=self.settings.instance_name,
                         rules=self.settings.scheduler.rules)
        jobs.aps.on_error = lambda exc: loops.failed("scheduler", f"wake-up: {exc}")
        await jobs.start()

        def ran(event: JobExecutionEvent) -> None:
            if event.exception is not None:
                loops.failed("scheduler", f"job {event.job_id}: {event.exception}")
            else:
                loops.ok("scheduler")

        jobs.aps.add_listener(ran, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        return scheduler, jobs

    def use_scheduler(self, scheduler: LiveScheduler) -> None:
        """The scheduler runs: its profiles size models, its budgets follow the fleet, its
        decisions place replicas."""
        self.scheduler = scheduler
        fleet, budgets = self.fleet, self.budgets
        fleet.memory_mb = lambda model: (
            scheduler.book.profiles[model].memory_mb if model in scheduler.book.profiles
            else fleet.measured_mb(model))
        fleet.held = lambda model: model in scheduler.state.held
        scheduler.on_decisions.append(self.placer.apply)
        if budgets is not None:
            budgets.apply = lambda options: setattr(scheduler, "options", options)
            fleet.membership_listeners.append(budgets)
            self.membership.on_change.append(budgets.refresh)

    def loops(self, loops: Loops) -> list[Coroutine[Any, Any, None]]:
        """The fleet's own loops: ramps, replicas after the measured load, the autoscaler,
        health checks."""
        found = [self.ramp.run(RAMP_TICK_S, self.fleet.publish),
                 loops.every("replicas-follow-load", FOLLOW_LOAD_S,
                             self.leading(self.placer.follow_load))]
        a = self.settings.autoscaler
        if a.enabled:
            found.append(loops.every("autoscaler", a.interval_s,
                                     self.leading(self.autoscaler.step)))
        if self.settings.health.enabled:
            found.append(loops.every("health", self.health.tick_s, self.health.step))
        return found

    def leading(self, step: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        """A pass that only the leading replica makes (every pass when not replicated)."""
        async def guarded() -> None:
            if self.fleet.leads():
                await step()
        return guarded

    def _planned(self, rt: InstanceRuntime, standby: bool) -> list[ModelName]:
        """What a joining instance loads before it serves (``prewarm.py``)."""
        return standby_models(self.fleet, rt) if standby else self.placer.joining(rt)

    async def _forecast_ahead(self, models: Sequence[ModelName], now: float,
                              horizon_s: float) -> dict[ModelName, float | None]:
        """Each model's highest forecast rate over ``horizon_s`` (the scheduler's policy, on
        its thread); empty without a scheduler."""
        scheduler = self.scheduler
        if scheduler is None:
            return {}
        found = await scheduler.ask(
            lambda policy: {m: forecast_ahead(policy, m, now, horizon_s) for m in models})
        return found or {}

    def _ramp_dropped(self, instance: str, model: ModelName, why: str) -> None:
        """A ramping replica did worse than its peers for too long: it goes."""
        rt = self.fleet.runtimes.get(instance)
        if rt is not None:
            self.fleet.record("ramp", model, instance, why, "dropped")
            self.placer.background.spawn(remove_replica(self.fleet, rt, model, trigger="ramp"))


class _RampMembers:
    """A membership listener: a leaving instance's ramps end with it."""

    def __init__(self, ramp: Ramp) -> None:
        self.ramp = ramp

    def attached(self, rt: InstanceRuntime) -> None:
        return None

    def detached(self, rt: InstanceRuntime) -> None:
        self.ramp.cancel(rt.name)


def spawn_all(coros: Sequence[Coroutine[Any, Any, None]], into: list[asyncio.Task[None]]
              ) -> None:
    """Each loop as a task (kept in ``into``, cancelled at stop)."""
    for coro in coros:
        into.append(asyncio.create_task(coro))
