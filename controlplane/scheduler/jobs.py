"""APScheduler jobs; the ones that must outlive a restart persisted in SQLite.

The planning pass runs on an interval (and at the policy's requested wake-up), from memory:
it is re-added at every start. Preloads the policy has timed become date jobs of their own,
persisted (``jobstore.py``: in memory, written through the write-behind), so a restart
before their time still loads the model then; operator rules ("keep X warm on weekdays
08:50-18:00") are cron jobs. No job store call waits on or fails with the disk, and a
wake-up that raises anyway is re-armed with back-off (``_Scheduler``): the planning pass
never stops for good.

Persisted jobs name the module-level functions below and an instance name; the registry maps
that name to the running scheduler of that Triton instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from controlplane.config import KeepWarmRule
from controlplane.errors import ConfigError
from controlplane.scheduler.driver import LiveScheduler
from controlplane.scheduler.jobstore import QueuedJobStore
from controlplane.store.database import Database
from controlplane.types import InstanceName, ModelName

log = logging.getLogger(__name__)

#: instance name -> its live scheduler (jobs loaded from the store find it here)
_registry: dict[InstanceName, LiveScheduler] = {}


# A job cancelled because the control plane is stopping ends quietly (APScheduler would log
# the cancellation as a failed job).


async def run_plan(instance: InstanceName) -> None:
    scheduler = _registry.get(instance)
    if scheduler is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler.tick()


async def run_preload(instance: InstanceName, model: ModelName) -> None:
    scheduler = _registry.get(instance)
    if scheduler is not None and model in scheduler.book.profiles:
        log.info("scheduled preload of %s", model)
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler.preload(model)


async def run_rule(instance: InstanceName, model: ModelName, hold: bool, rule: str) -> None:
    scheduler = _registry.get(instance)
    if scheduler is None:
        return
    with contextlib.suppress(asyncio.CancelledError):
        if hold:
            await scheduler.hold(model, f"operator rule {rule}")
        else:
            await scheduler.release(model, f"operator rule {rule} ended")


def _hm(text: str) -> tuple[int, int]:
    hour, minute = (int(x) for x in text.split(":"))
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ConfigError(f"invalid time of day {text!r}")
    return hour, minute


def rule_triggers(rule: KeepWarmRule) -> tuple[CronTrigger, CronTrigger]:
    try:
        zone = zoneinfo.ZoneInfo(rule.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"rule for {rule.model}: unknown timezone {rule.timezone!r}") from None
    (h1, m1), (h2, m2) = _hm(rule.start), _hm(rule.end)
    try:
        start = CronTrigger(day_of_week=rule.days, hour=h1, minute=m1, timezone=zone)
        end = CronTrigger(day_of_week=rule.days, hour=h2, minute=m2, timezone=zone)
    except ValueError as exc:
        raise ConfigError(f"rule for {rule.model}: {exc}") from None
    return start, end


def rule_active(rule: KeepWarmRule, now: datetime) -> bool:
    """Whether ``now`` falls inside the rule's window (its last start after its last end)."""
    start, end = rule_triggers(rule)
    # the next fire times from a day back tell which happened last
    probe = now.astimezone(start.timezone)
    last_start = _last_fire(start, probe)
    last_end = _last_fire(end, probe)
    return last_start is not None and (last_end is None or last_start > last_end)


def _last_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    from datetime import timedelta

    t = trigger.get_next_fire_time(None, now - timedelta(days=8))
    last = None
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
    return last


def rule_id(instance: InstanceName, rule: KeepWarmRule, edge: str) -> str:
    return f"{instance}:rule:{rule.model}:{rule.days}:{rule.start}-{rule.end}:{edge}"


class _Scheduler(AsyncIOScheduler):  # type: ignore[misc]
    """APScheduler's wake-up, re-armed whatever it raises: ``wakeup`` arms the next timer only
    after ``_process_jobs`` returns, so one exception there ends every job for good."""

    #: the first retry after a failed wake-up (s), doubled per failure up to ``RETRY_MAX_S``
    RETRY_FIRST_S = 1.0
    RETRY_MAX_S = 10.0

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.failures = 0
        #: told of every failed wake-up (the loops registry, ``/healthz``)
        self.on_error: Callable[[BaseException], None] | None = None

    def _process_jobs(self) -> float | None:
        try:
            wait = cast(float | None, super()._process_jobs())
        except Exception as exc:
            self.failures += 1
            delay = min(self.RETRY_FIRST_S * 2.0 ** (self.failures - 1), self.RETRY_MAX_S)
            log.error("scheduler wake-up failed (retried in %.0fs)", delay, exc_info=exc)
            if self.on_error is not None:
                self.on_error(exc)
            return delay
        self.failures = 0
        return wait


class JobRunner:
    def __init__(self, scheduler: LiveScheduler, *, database: Database,
                 instance: InstanceName, rules: list[KeepWarmRule]) -> None:
        self.scheduler = scheduler
        self.instance = instance
        self.rules = rules
        self.store = QueuedJobStore(database)
        self.aps = _Scheduler(
            jobstores={"default": self.store, "memory": MemoryJobStore()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
            timezone=UTC)
        self._preloads: dict[ModelName, float] = {}

    @property
    def plan_id(self) -> str:
        return f"{self.instance}:plan"

    async def start(self) -> None:
        _registry[self.instance] = self.scheduler
        self.scheduler.on_preload_plan = self.schedule_preload
        await self.store.load()
        self.aps.start()
        if self.aps.get_job(self.plan_id, "default") is not None:
            self.aps.remove_job(self.plan_id, "default")  # persisted by earlier versions
        prefix = f"{self.instance}:rule:"
        wanted = set()
        for rule in self.rules:
            start, end = rule_triggers(rule)
            for edge, trigger, hold in (("start", start, True), ("end", end, False)):
                job_id = rule_id(self.instance, rule, edge)
                wanted.add(job_id)
                self.aps.add_job(run_rule, trigger, id=job_id, replace_existing=True,
                                 args=[self.instance, rule.model, hold,
                                       f"{rule.days} {rule.start}-{rule.end} {rule.timezone}"])
        for job in self.aps.get_jobs():
            if job.id.startswith(prefix) and job.id not in wanted:
                job.remove()  # a rule taken out of the configuration
        now = datetime.now(UTC)
        for rule in self.rules:
            if rule_active(rule, now):
                self.scheduler.state.held.add(rule.model)
        self.aps.add_job(run_plan, "interval", seconds=self.scheduler.options.interval_s,
                         id=self.plan_id, args=[self.instance], jobstore="memory",
                         replace_existing=True, next_run_time=now)

    def schedule_preload(self, model: ModelName, at: float) -> None:
        """A date job for a preload the policy timed (kept across restarts)."""
        if abs(self._preloads.get(model, -1e18) - at) < 1.0:
            return
        self._preloads[model] = at
        self.aps.add_job(run_preload, "date", run_date=datetime.fromtimestamp(at, UTC),
                         id=f"{self.instance}:preload:{model}", args=[self.instance, model],
                         replace_existing=True)

    def jobs(self) -> list[tuple[str, datetime | None]]:
        return [(job.id, job.next_run_time) for job in self.aps.get_jobs()]

    async def stop(self) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=False)
        if _registry.get(self.instance) is self.scheduler:
            del _registry[self.instance]
