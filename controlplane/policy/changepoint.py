"""Regime-change test for one model's idle times: has the distribution the forecast learned
stopped describing the requests now arriving?

Each new idle time is scored by where it falls in the learned distribution, ``u`` = the share
of idle times the forecast expects to be shorter (for the "getting busier" side) or longer
(for "getting quieter"). While the forecast is right, ``u`` is uniform on (0, 1), whatever the
shape of the distribution: a bursty model's short gaps inside a burst and its long ones between
bursts both land at ordinary quantiles, so a burst that looks like the bursts before it is not
a change. After a change, ``u`` piles up near 0 on one side. Two one-sided CUSUM tests (Page,
1954) accumulate the log-likelihood ratio of that alternative, density ``(1 - theta) *
u ** -theta``, against the uniform; a test that reaches :data:`THRESHOLD` is a change point.

The alternative is unbounded near 0, so one idle time far outside everything seen (a model
used twice a day now requested every two seconds: ``u`` ~ 1e-5) counts about 5 nats, and two or
three of them decide; a subtler shift (the rate up 8x: typical ``u`` ~ 0.1) needs a few dozen.
Under no change each score drifts down by ``theta + log(1 - theta)`` (~0.19 nats) on
average; with :data:`THRESHOLD` = 11 nats the average run between false alarms is, by Wald's
bound ``exp(threshold)``, tens of thousands of idle times per side.
"""

from __future__ import annotations

import math

#: Exponent of the alternative density ``(1 - theta) * u ** -theta`` of the score ``u``.
THETA = 0.5
#: CUSUM level (nats) at which a change is declared.
THRESHOLD = 11.0
#: Scores are clipped here: a bin-interpolated distribution cannot resolve smaller shares.
_U_MIN = 1e-9
_LOG_1M_THETA = math.log(1.0 - THETA)


class ChangeTest:
    """Two one-sided CUSUM statistics over idle-time quantiles, O(1) per idle time."""

    __slots__ = ("busier", "busier_run", "quieter", "quieter_run")

    def __init__(self) -> None:
        #: Evidence (nats) that idle times have become shorter / longer than learned.
        self.busier = 0.0
        self.quieter = 0.0
        #: Idle times since each statistic last stood at zero: the suspected new regime's.
        self.busier_run = 0
        self.quieter_run = 0

    def restart(self) -> None:
        self.busier = self.quieter = 0.0
        self.busier_run = self.quieter_run = 0

    def update(self, shorter_share: float) -> int:
        """Score one idle time: ``shorter_share`` is the learned probability of a shorter one.
        Returns 0, or on a change the number of idle times that make up the new regime (the
        run of the test that fired, this one included); both tests then restart."""
        below = min(1.0, max(_U_MIN, shorter_share))
        above = min(1.0, max(_U_MIN, 1.0 - shorter_share))
        self.busier = max(0.0, self.busier + _LOG_1M_THETA - THETA * math.log(below))
        self.quieter = max(0.0, self.quieter + _LOG_1M_THETA - THETA * math.log(above))
        self.busier_run = self.busier_run + 1 if self.busier > 0 else 0
        self.quieter_run = self.quieter_run + 1 if self.quieter > 0 else 0
        if self.busier >= THRESHOLD:
            run = self.busier_run
        elif self.quieter >= THRESHOLD:
            run = self.quieter_run
        else:
            return 0
        self.restart()
        return run
