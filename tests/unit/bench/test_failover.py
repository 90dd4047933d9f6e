"""bench/failover.py's figures from hand-made request records (the bench itself needs three
tritonservers and a minute; its arithmetic is checked here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bench.failover import Kill, Request, actions_since, summarize
from controlplane.fleet.fleet import FleetAction

KILL = Kill(at=100.0, instance="a", in_flight=2, models={"hot": 2, "solo": 1})


def _steady(model: str, start: float, end: float, latency: float) -> list[Request]:
    """One OK request every 0.1 s sent in [start, end)."""
    n = round((end - start) / 0.1)
    return [Request(model, start + i * 0.1, start + i * 0.1 + latency, "OK") for i in range(n)]


def _report(requests: list[Request], kill: Kill = KILL) -> dict[str, Any]:
    return summarize(requests, kill, before_s=20, after_s=30, epsilon_s=0.005,
                     load_s={"solo": 0.5})


def test_failures_in_flight_on_the_dead_instance_are_excused_up_to_its_count() -> None:
    base = _steady("hot", 80, 130, 0.01) + _steady("solo", 101, 130, 0.01)
    in_flight = [Request("hot", 99.99, 100.02, "UNAVAILABLE"),
                 Request("solo", 100.004, 100.03, "UNAVAILABLE")]  # within epsilon
    report = _report(base + in_flight)
    assert report["requests"]["failed_by_status"] == {"UNAVAILABLE": 2}
    killed = report["killed"]
    assert killed["failed_in_flight_at_kill"] == 2
    assert killed["lost_beyond_in_flight"] == 0
    assert report["targets"]["no_request_lost_beyond_in_flight"] is True

    # a third in-flight failure is more than the instance had outstanding: lost
    report = _report(base + in_flight + [Request("hot", 99.98, 100.01, "UNAVAILABLE")])
    assert report["killed"]["lost_beyond_in_flight"] == 1
    assert report["targets"]["no_request_lost_beyond_in_flight"] is False


def test_failures_sent_after_the_kill_or_finished_before_it_are_lost() -> None:
    base = _steady("hot", 80, 130, 0.01) + _steady("solo", 101, 130, 0.01)
    late = Request("hot", 100.2, 100.21, "UNAVAILABLE")
    early = Request("hot", 90.0, 90.5, "DEADLINE_EXCEEDED")  # over before the kill
    report = _report([*base, late, early])
    killed = report["killed"]
    assert killed["failed_sent_after_kill"] == 1
    assert killed["failed_in_flight_at_kill"] == 0
    assert killed["lost_beyond_in_flight"] == 2
    assert report["requests"] == {
        "total": len(base) + 2, "ok": len(base),
        "failed_by_status": {"UNAVAILABLE": 1, "DEADLINE_EXCEEDED": 1}}


def test_served_again_counts_only_requests_sent_after_the_kill() -> None:
    requests = [
        Request("hot", 99.0, 100.5, "OK"),        # sent before: proves nothing about after
        Request("hot", 100.3, 100.31, "OK"),
        Request("solo", 100.01, 102.2, "OK"),     # waited for the load elsewhere
        Request("solo", 100.5, 102.3, "OK"),
    ]
    report = _report(requests)
    assert report["served_again_s"] == {"hot": 0.31, "solo": 2.2}
    assert report["served_again_limit_s"] == {"hot": 1.0, "solo": 2.5}
    targets = report["targets"]
    assert targets["replicated_served_again_within_1s"] is True
    assert targets["others_served_again_within_load_plus_2s"] is True

    slow = [r for r in requests if r.model == "hot"] + [Request("solo", 100.01, 102.6, "OK")]
    assert _report(slow)["targets"][
        "others_served_again_within_load_plus_2s"] is False
    never = [r for r in requests if r.model == "hot"]
    report = _report(never)
    assert report["served_again_s"]["solo"] is None
    assert report["targets"]["others_served_again_within_load_plus_2s"] is False


def test_p99_after_over_before_uses_ok_requests_in_each_window() -> None:
    requests = (_steady("hot", 70, 80, 0.5)       # outside both windows: ignored
                + _steady("hot", 80, 100, 0.010) + _steady("hot", 100, 130, 0.020)
                + [Request("hot", 100.0, 109.0, "UNAVAILABLE")])  # failures have no latency
    latency = _report(requests)["latency_ms"]
    assert latency["before"] == {"n": 200, "p50": 10.0, "p99": 10.0}
    assert latency["after"] == {"n": 300, "p50": 20.0, "p99": 20.0}
    assert latency["p99_ratio_after_before"] == 2.0
    assert latency["by_model"]["hot"]["after"] == latency["after"]
    assert latency["by_model"]["hot"]["before"]["p99"] == 10.0


def test_fleet_actions_are_kept_from_the_kill_on_with_their_delay() -> None:
    """``FleetAction.at`` is a datetime; the kill is ``time.time()`` seconds."""
    kill = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

    def action(after_s: float, kind: str, model: str) -> FleetAction:
        return FleetAction(kill + timedelta(seconds=after_s), kind, model, "b", "why", "ok")

    actions = [action(-5.0, "add replica", "hot"), action(0.0, "failover", "solo"),
               action(1.5, "failover", "other")]
    assert actions_since(actions, kill.timestamp()) == [
        {"after_s": 0.0, "kind": "failover", "model": "solo", "instance": "b",
         "outcome": "ok"},
        {"after_s": 1.5, "kind": "failover", "model": "other", "instance": "b",
         "outcome": "ok"}]
    assert actions_since(actions, kill.timestamp() + 10) == []
