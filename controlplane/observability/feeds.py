"""Cumulative counts the metrics are built from, fed off the request path.

- :class:`TrafficCounts` listens to the recorder's flushes (a batch a second, on the event
  loop): one ``Counter`` over the batch, a handful of dict updates per model. The gateway
  itself does no metrics work per request.
- :class:`LoadEventFeed` reads the lifecycle's finished load/unload records from the
  database at scrape time, incrementally (only records it has not counted yet).

Both only ever grow (Prometheus counters); they count from the moment they were created.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, or_, select

from controlplane.store.database import Database
from controlplane.store.models import LoadEvent, ModelRecord
from controlplane.traffic.observation import Observation

#: upper bounds (seconds) of the lazy-load wait histogram: from a load that was nearly done
#: to one that took minutes
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: upper bounds (seconds) of the load/warm-up/probe duration histograms
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last slot is ``+Inf``), sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs as the exposition format wants them."""
        out, running = [], 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


class TrafficCounts:
    """Requests per (model, outcome), cold starts per model, waits for lazy loads."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        #: requests that arrived while their model was not ready (the usage API's cold_starts)
        self.cold_starts: Counter[str] = Counter()
        self.waits: dict[str, Histogram] = {}

    def on_flush(self, batch: list[Observation]) -> None:
        """The recorder's flush listener (the batch was stored already)."""
        for (model, outcome, cold), n in Counter(
                (o.model, o.outcome, o.cold) for o in batch).items():
            self.requests[model, outcome] += n
            if cold:
                self.cold_starts[model] += n
        for o in batch:
            if o.cold and o.wait_s is not None:
                wait = self.waits.get(o.model)
                if wait is None:
                    wait = self.waits[o.model] = Histogram(WAIT_BUCKETS)
                wait.observe(o.wait_s)


class LoadEventFeed:
    """Finished lifecycle records of one instance, counted once each."""

    def __init__(self, database: Database, instance: str) -> None:
        self.db = database
        self.instance = instance
        #: (action, trigger, outcome) -> count; and the durations of those
        self.events: Counter[tuple[str, str, str]] = Counter()
        self.durations: dict[tuple[str, str, str], Histogram] = {}
        #: phases of successful loads: warm-up and probes
        self.phases: dict[str, Histogram] = {"warmup": Histogram(DURATION_BUCKETS),
                                             "probe": Histogram(DURATION_BUCKETS)}
        #: model -> (probes sent, probes failed) in its newest successful load or reload
        #: (the one a ready replica serves from; a failed reload leaves the old one serving)
        self.probes: dict[str, tuple[int, int]] = {}
        self._after: int | None = None  # records up to this id were seen (None: not started)
        self._open: set[int] = set()  # seen unfinished: counted once they finish

    def start(self) -> None:
        """Count from now on: records already in the database are history."""
        with self.db.session() as session:
            self._after = session.scalar(select(func.max(LoadEvent.id))) or 0
            self._open = set(session.scalars(
                select(LoadEvent.id).where(LoadEvent.outcome.is_(None))))

    def refresh(self) -> int:
        """Count the records finished since the last call (synchronous: ``db.run`` it).
        Returns how many were counted."""
        if self._after is None:
            self.start()
        after = self._after or 0
        with self.db.session() as session:
            rows = session.execute(
                select(LoadEvent.id, LoadEvent.action, LoadEvent.trigger, LoadEvent.outcome,
                       LoadEvent.duration_s, LoadEvent.warmup_s, LoadEvent.probe_s,
                       ModelRecord.name, LoadEvent.probe_count, LoadEvent.details)
                .join(ModelRecord).where(ModelRecord.instance == self.instance)
                .where(or_(LoadEvent.id > after, LoadEvent.id.in_(self._open)))
                .order_by(LoadEvent.id)).all()
        counted = 0
        for (event_id, action, trigger, outcome, duration_s, warmup_s, probe_s, model,
             probe_count, details) in rows:
            self._after = max(self._after or 0, event_id)
            if outcome is None:
                self._open.add(event_id)
                continue
            self._open.discard(event_id)
            self._count(action, trigger, outcome, duration_s, (warmup_s, probe_s))
            if outcome == "ok" and action in ("load", "reload"):
                sent = probe_count or 0  # a column; ``probe_ok`` stays in the details
                self.probes[model] = (sent, sent - int((details or {}).get("probe_ok") or 0))
            counted += 1
        return counted

    def _count(self, action: str, trigger: str, outcome: str, duration_s: float | None,
               phases: Iterable[float | None]) -> None:
        key = (action, trigger, outcome)
        self.events[key] += 1
        if duration_s is not None:
            hist = self.durations.get(key)
            if hist is None:
                hist = self.durations[key] = Histogram(DURATION_BUCKETS)
            hist.observe(duration_s)
        if outcome == "ok":
            for name, value in zip(("warmup", "probe"), phases, strict=True):
                if value is not None:
                    self.phases[name].observe(value)
