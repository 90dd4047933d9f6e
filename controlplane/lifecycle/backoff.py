"""When a model whose load failed may be tried again: exponential back-off, one per model.

One schedule serves every automatic caller (the gateway's lazy loads, the scheduler, pins,
restores after a Triton restart), so a broken model costs one Python stub per back-off step
rather than one per request or per scheduler tick. An operator's explicit load ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackoffPolicy:
    """Delays in seconds: ``initial_s``, then times ``multiplier`` per further failure, at most
    ``max_s``."""

    initial_s: float = 30.0
    multiplier: float = 2.0
    max_s: float = 1800.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (0 when none)."""
        if failures <= 0:
            return 0.0
        # capped before the power, so a model failing for weeks cannot overflow the float
        exponent = min(failures - 1, 64)
        return min(self.initial_s * self.multiplier ** exponent, self.max_s)


@dataclass
class Backoff:
    """One model's failures in a row and when the last one happened (monotonic seconds)."""

    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    failures: int = 0
    failed_at: float = float("-inf")

    def failed(self, now: float) -> None:
        self.failures += 1
        self.failed_at = now

    def succeeded(self) -> None:
        self.failures = 0
        self.failed_at = float("-inf")

    def retry_at(self) -> float | None:
        """Monotonic time from which an automatic retry may start; None: any time."""
        if self.failures == 0:
            return None
        return self.failed_at + self.policy.delay(self.failures)

    def waiting(self, now: float) -> bool:
        at = self.retry_at()
        return at is not None and now < at
