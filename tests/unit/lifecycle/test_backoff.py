from __future__ import annotations

from controlplane.lifecycle.backoff import Backoff, BackoffPolicy


def test_delays_double_up_to_the_cap() -> None:
    policy = BackoffPolicy(initial_s=30, multiplier=2, max_s=300)
    assert [policy.delay(n) for n in range(0, 7)] == [0, 30, 60, 120, 240, 300, 300]
    # weeks of failures neither overflow nor exceed the cap
    assert policy.delay(10_000) == 300


def test_backoff_waits_after_each_failure_and_clears_on_success() -> None:
    b = Backoff(BackoffPolicy(initial_s=10, multiplier=3, max_s=1000))
    assert b.retry_at() is None and not b.waiting(0.0)
    b.failed(100.0)
    assert b.retry_at() == 110.0
    assert b.waiting(109.9) and not b.waiting(110.0)
    b.failed(120.0)
    assert b.retry_at() == 150.0 and b.failures == 2
    b.succeeded()
    assert b.failures == 0 and b.retry_at() is None
