"""Exponentially decayed counters: old evidence fades so forecasts follow pattern changes.

Decay is applied lazily. Each structure keeps its numbers in the units of a reference time and
scales a new addition up by ``2 ** ((t - t_ref) / half_life)`` instead of scaling every old entry
down, so an update is O(1); reads scale back to the time of the read. When the gain grows large
everything is renormalised once, so the floats never overflow.
"""

from __future__ import annotations

import math

_RENORMALISE_AT = 60.0  # half-lives; 2**60 keeps the products far from float overflow


class DecayedBins:
    """A fixed number of weights that halve every ``half_life_s`` seconds."""

    __slots__ = ("_half_life", "_nonzero", "_t_ref", "_w", "version")

    def __init__(self, n: int, half_life_s: float) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        self._w = [0.0] * n
        self._half_life = half_life_s
        self._t_ref: float | None = None
        #: Indices of the non-zero weights, cached for sums over sparse bins (None: stale).
        self._nonzero: list[int] | None = None
        #: Changes with every change of the stored weights (an addition, a scaling, a
        #: renormalisation): what is computed from them alone can be kept until it moves.
        self.version = 0

    def __len__(self) -> int:
        return len(self._w)

    def _gain(self, t: float) -> float:
        if self._t_ref is None:
            self._t_ref = t
        x = (t - self._t_ref) / self._half_life
        if x > _RENORMALISE_AT:
            scale = 2.0 ** -x
            self._w = [v * scale for v in self._w]
            self._t_ref = t
            self._nonzero = None
            self.version += 1
            return 1.0
        return float(2.0**x)

    def add(self, index: int, t: float, amount: float = 1.0) -> None:
        gain = self._gain(t)  # first: it may replace the list while renormalising
        w = self._w
        old = w[index]
        w[index] = new = old + amount * gain
        self.version += 1
        if (old == 0.0) != (new == 0.0):
            self._nonzero = None

    def scale(self, factor: float) -> None:
        """Multiply every weight by ``factor`` (old evidence set aside at a change point)."""
        self._w = [v * factor for v in self._w]
        self._nonzero = None
        self.version += 1

    def nonzero(self) -> list[int]:
        """Indices of the non-zero weights, ascending (cached until one becomes or stops being
        zero). Sums over them equal sums over every weight: zeros add nothing."""
        found = self._nonzero
        if found is None:
            found = self._nonzero = [i for i, v in enumerate(self._w) if v]
        return found

    def raw(self) -> list[float]:
        """The stored weights, in the units of the reference time (times :meth:`scale_at`
        gives the weights as of a read). Read-only."""
        return self._w

    def scale_at(self, now: float) -> float:
        """Factor that turns stored numbers into weights as of ``now``."""
        if self._t_ref is None:
            return 0.0
        return float(2.0 ** (-(now - self._t_ref) / self._half_life))

    def values(self, now: float) -> list[float]:
        scale = self.scale_at(now)
        return [v * scale for v in self._w]

    def value(self, index: int, now: float) -> float:
        return self._w[index] * self.scale_at(now)

    def total(self, now: float) -> float:
        return math.fsum(self._w) * self.scale_at(now)


class DecayedRate:
    """Arrival rate (per second) over an exponential window of time constant ``tau_s``."""

    __slots__ = ("_first", "_level", "_t", "_tau")

    def __init__(self, tau_s: float) -> None:
        self._tau = tau_s
        self._level = 0.0  # sum of exp(-(t - t_i) / tau) over arrivals, as of self._t
        self._t: float | None = None
        self._first: float | None = None

    def add(self, t: float) -> None:
        if self._t is None or self._first is None:
            self._t = self._first = t
            self._level = 1.0
            return
        if t >= self._t:
            self._level = self._level * math.exp(-(t - self._t) / self._tau) + 1.0
            self._t = t
        else:  # a late arrival from a batch: count it at its own (older) weight
            self._level += math.exp(-(self._t - t) / self._tau)

    def rate(self, now: float) -> float:
        if self._t is None or self._first is None:
            return 0.0
        level = self._level * math.exp(-max(0.0, now - self._t) / self._tau)
        # Early on the window is not full yet: divide by the part of it that has been observed
        # (at least a twentieth of it, so that one first arrival does not read as a huge rate).
        observed = max(now - self._first, 0.05 * self._tau)
        return level / (self._tau * -math.expm1(-observed / self._tau))
