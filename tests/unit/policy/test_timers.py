from __future__ import annotations

from controlplane.policy.timers import TimerHeap


def test_due_timers_come_out_in_time_then_push_order() -> None:
    timers = TimerHeap()
    timers.push(5.0, "b", "load")
    timers.push(1.0, "a", "unload", 7)
    timers.push(5.0, "a", "load")
    timers.push(9.0, "c")
    due = [(t.t, t.model, t.kind, t.token) for t in timers.pop_due(5.0)]
    assert due == [(1.0, "a", "unload", 7), (5.0, "b", "load", 0), (5.0, "a", "load", 0)]
    assert [t.model for t in timers.pop_due(8.9)] == []


def test_timers_pushed_while_draining_come_out_when_due() -> None:
    timers = TimerHeap()
    timers.push(1.0, "a")
    seen = []
    for timer in timers.pop_due(2.0):
        seen.append(timer.t)
        if timer.t < 2.0:
            timers.push(timer.t + 0.5, "a")
    assert seen == [1.0, 1.5, 2.0]


def test_next_live_drops_stale_timers_before_the_first_live_one() -> None:
    generation = {"a": 2, "b": 1}
    timers = TimerHeap()
    timers.push(1.0, "a", token=1)  # superseded by generation 2
    timers.push(2.0, "b", token=1)
    timers.push(3.0, "a", token=2)
    live = lambda timer: timer.token == generation[timer.model]  # noqa: E731
    assert timers.next_live(live) == 2.0
    generation["b"] = 2
    assert timers.next_live(live) == 3.0
    assert [t.t for t in timers.pop_due(10.0)] == [3.0]  # the stale ones are gone
    assert timers.next_live(live) is None
