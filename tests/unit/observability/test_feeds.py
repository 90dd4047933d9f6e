"""The counts behind /metrics: recorder batches and lifecycle records."""

from __future__ import annotations

from datetime import timedelta

from controlplane.observability.feeds import Histogram, LoadEventFeed, TrafficCounts
from controlplane.store.base import utcnow
from controlplane.store.database import Database
from controlplane.store.lifecycle import EventOutcome, LifecycleStore
from controlplane.traffic.observation import Observation


def _obs(model: str, outcome: str = "OK", cold: bool = False,
         wait_s: float | None = None) -> Observation:
    return Observation(model, "", (), 0.0, 0.01, outcome, cold, wait_s)


def test_traffic_counts_per_model_outcome_and_cold_waits() -> None:
    counts = TrafficCounts()
    counts.on_flush([_obs("a", cold=True, wait_s=0.7), _obs("a"), _obs("a", "UNAVAILABLE"),
                     _obs("b", cold=True, wait_s=12.0)])
    counts.on_flush([_obs("a")])
    assert counts.requests == {("a", "OK"): 3, ("a", "UNAVAILABLE"): 1, ("b", "OK"): 1}
    assert counts.cold_starts == {"a": 1, "b": 1}
    buckets = dict(counts.waits["a"].buckets())
    assert buckets["0.5"] == 0 and buckets["1.0"] == 1 and buckets["+Inf"] == 1
    assert counts.waits["b"].total == 12.0


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    h = Histogram((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 3.0):
        h.observe(value)
    assert h.buckets() == [("1.0", 2.0), ("2.0", 3.0), ("+Inf", 4.0)]


def test_load_events_counted_once_when_they_finish(database: Database) -> None:
    store = LifecycleStore(database, "default")
    store.sync_models(["m"], [], initial_state="cold")
    old = store.begin_event("m", "load", "startup", utcnow())
    store.finish_event(old, EventOutcome("ok"), utcnow())
    feed = LoadEventFeed(database, "default")
    feed.start()  # history is not counted
    t0 = utcnow()
    running = store.begin_event("m", "load", "gateway", t0)
    assert feed.refresh() == 0
    done = store.begin_event("m", "unload", "api", t0)
    store.finish_event(done, EventOutcome("ok"), t0 + timedelta(seconds=0.5))
    assert feed.refresh() == 1
    store.finish_event(running, EventOutcome("ok", details={"warmup_s": 0.3, "probe_s": 0.2}),
                       t0 + timedelta(seconds=2))
    assert feed.refresh() == 1 and feed.refresh() == 0
    assert feed.events == {("unload", "api", "ok"): 1, ("load", "gateway", "ok"): 1}
    assert feed.durations["load", "gateway", "ok"].total == 2.0
    assert feed.phases["warmup"].total == 0.3 and feed.phases["probe"].total == 0.2


def test_probes_of_the_newest_successful_load_per_model(database: Database) -> None:
    """What a ready replica serves from: a failed reload leaves the earlier load's figures."""
    store = LifecycleStore(database, "default")
    store.sync_models(["m", "ok"], [], initial_state="cold")
    feed = LoadEventFeed(database, "default")
    feed.start()
    t0 = utcnow()

    def event(model: str, action: str, outcome: str, sent: int | None, ok: int) -> None:
        details = {} if sent is None else {"probe_count": sent, "probe_ok": ok}
        record = store.begin_event(model, action, "api", t0)
        store.finish_event(record, EventOutcome(outcome, details=details), t0)

    event("m", "load", "ok", 3, 3)
    event("m", "reload", "ok", 4, 0)  # every probe failed, and it serves
    event("m", "reload", "failed", 2, 2)  # failed: the one before serves
    event("ok", "load", "ok", None, 0)  # no probes (e.g. warm-up off)
    assert feed.refresh() == 4
    assert feed.probes == {"m": (4, 4), "ok": (0, 0)}
    event("m", "load", "ok", 5, 4)
    assert feed.refresh() == 1 and feed.probes["m"] == (5, 1)
