"""The live scheduler and its jobs, started over the fleet (the leader's, in a cluster).

The policy sees the fleet as one budget: the serving instances' budgets summed, again
whenever the fleet changes (``fleet/budgets.py``); the GPU budget is what the GPUs have
unless configured. The jobs (timed preloads, operator rules) report to ``/healthz`` as the
loop ``scheduler``.
"""

from __future__ import annotations

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent

from controlplane.compile_cache.cold_start import ColdStarts
from controlplane.config import Settings
from controlplane.fleet.assembly import FleetParts
from controlplane.loops import Loops
from controlplane.scheduler.driver import LiveScheduler
from controlplane.scheduler.jobs import JobRunner
from controlplane.store.database import Database
from controlplane.traffic.recorder import TrafficRecorder
from controlplane.traffic.store import TrafficStore


async def start_scheduler(settings: Settings, parts: FleetParts, traffic: TrafficStore,
                          database: Database, loops: Loops, *,
                          cold_starts: ColdStarts | None,
                          recorder: TrafficRecorder | None) -> tuple[LiveScheduler, JobRunner]:
    """Start the scheduler (its policy replays the recorded traffic first) and its jobs;
    the recorder's arrivals feed it from then on. Raises what the replay's store read
    raises."""
    budgets = parts.budgets
    assert budgets is not None, "the fleet's budgets exist when the scheduler is enabled"
    scheduler = LiveScheduler(manager=parts.fleet, traffic=traffic, options=budgets.current())
    if cold_starts is not None:  # before start(): its first profiles use it
        scheduler.book.cold_start = cold_starts.expected_load_s
    await scheduler.start()
    parts.use_scheduler(scheduler)
    if recorder is not None:
        recorder.listeners.append(scheduler.observe)
    jobs = JobRunner(scheduler, database=database, instance=settings.instance_name,
                     rules=settings.scheduler.rules)
    jobs.aps.on_error = lambda exc: loops.failed("scheduler", f"wake-up: {exc}")
    await jobs.start()

    def ran(event: JobExecutionEvent) -> None:
        if event.exception is not None:
            loops.failed("scheduler", f"job {event.job_id}: {event.exception}")
        else:
            loops.ok("scheduler")

    jobs.aps.add_listener(ran, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    return scheduler, jobs
