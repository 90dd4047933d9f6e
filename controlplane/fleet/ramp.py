"""The traffic ramp: a new replica's share of its model's traffic rises over ``ramp_s``.

A replica added while others serve its model (by the placer, by failover, by scale-out) gets
router weight ``start_weight`` at once (``begin``), and :meth:`Ramp.tick` raises it linearly
to 1 over ``ramp_s`` seconds, then removes the entry (absent is 1, an equal share). A first
replica takes full traffic at once: with nobody to share with, a low weight only means
nothing (the router sends everything to the one candidate anyway).

The ramp compares the new replica with its peers (the model's other replicas that the router
may pick, ramping ones excluded) over their recent outcomes: the last ``window`` requests of
each, pooled for the peers, fed by :meth:`Ramp.observe` (per request, a deque append; only
models with a ramp under way are tracked, so memory is bounded by ramps x instances x
``window``). While the new replica's error rate exceeds its peers' by ``error_margin``, or
its p50 latency is over ``latency_factor`` times theirs, its weight holds (paused); a pause
that lasts longer than ``ramp_s`` drops it: weight 0 (the router no longer picks it) and
``on_drop`` says so, for the fleet to remove the replica. Without enough samples on either
side (``min_samples``) or without peers nothing is compared, so nothing pauses: a replica
is never dropped where it is the only one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from controlplane.fleet.ramp_stats import NONE, Stats, Window, summarize, worse
from controlplane.traffic.observation import OK, Observation

log = logging.getLogger(__name__)

#: outcomes that count against a replica (its failure or its slowness); the client's own
#: mistakes (INVALID_ARGUMENT, NOT_FOUND, CANCELLED...) say nothing about it and are ignored
REPLICA_ERRORS = frozenset({"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED",
                            "RESOURCE_EXHAUSTED", "DATA_LOSS", "ABORTED"})
#: instances tracked per ramping model at most (names come from our own observations, but
#: memory stays bounded whatever they say)
MAX_INSTANCES_PER_MODEL = 256


class RampTarget(Protocol):
    """What the ramp reads and writes of an instance (``InstanceRuntime`` offers it)."""

    name: str
    #: model -> router weight (absent: 1; 0: no new requests)
    weights: dict[str, float]

    def serves(self, model: str) -> bool:
        """The router may pick this replica of ``model`` now."""


@dataclass(frozen=True)
class RampView:
    """One ramp under way, for the admin API. Rates are 0..1, latencies seconds; a figure is
    None while its side has fewer than ``min_samples`` outcomes (or no peers)."""

    instance: str
    model: str
    weight: float
    started_s_ago: float
    paused: bool
    #: why the ramp began (``placement``, ``failover``, ``scale-out`` ...)
    why: str
    peers_error_rate: float | None
    error_rate: float | None
    p50_s: float | None
    peers_p50_s: float | None
    #: why it is paused, in words (None when not paused)
    paused_because: str | None = None
    #: seconds of the current pause (0 when not paused)
    paused_s: float = 0.0


@dataclass
class _Ramping:
    why: str
    started: float
    paused_total: float = 0.0
    paused_since: float | None = None
    paused_because: str | None = None


class Ramp:
    def __init__(self, replicas: Callable[[], Sequence[RampTarget]], ramp_s: float,
                 start_weight: float, clock: Callable[[], float] = time.monotonic,
                 on_drop: Callable[[str, str, str], None] = lambda instance, model, why: None,
                 min_samples: int = 20, *, window: int = 200, error_margin: float = 0.05,
                 latency_factor: float = 2.0) -> None:
        """``replicas``: every instance now; ``ramp_s``: seconds from ``start_weight`` (0..1]
        to full weight (0: no ramp); ``clock``: monotonic seconds; ``on_drop(instance,
        model, why)``: a replica was dropped (weight 0), called from :meth:`tick`;
        ``min_samples``: outcomes each side needs before it is compared; ``window``: recent
        outcomes kept per replica; ``error_margin``: error rate (0..1) above the peers' that
        pauses; ``latency_factor``: p50 ratio to the peers' that pauses. Raises ValueError
        for values out of range."""
        if ramp_s < 0 or not 0 < start_weight <= 1:
            raise ValueError(f"ramp_s must be >= 0 and start_weight in (0, 1]: "
                             f"{ramp_s}, {start_weight}")
        if not 1 <= min_samples <= window:
            raise ValueError(f"min_samples must be in [1, window]: {min_samples}, {window}")
        self.replicas = replicas
        self.ramp_s = ramp_s
        self.start_weight = start_weight
        self.clock = clock
        self.on_drop = on_drop
        self.min_samples = min_samples
        self.window = window
        self.error_margin = error_margin
        self.latency_factor = latency_factor
        self._ramps: dict[tuple[str, str], _Ramping] = {}
        #: model -> instance -> its recent outcomes; only models with a ramp under way
        self._windows: dict[str, dict[str, Window]] = {}
        #: replicas this ramp set to weight 0, whose entry ``begin``/``cancel`` clear
        self._dropped: set[tuple[str, str]] = set()

    def begin(self, instance: str, model: str, why: str) -> None:
        """``instance``'s replica of ``model`` is new (``why``: placement, failover...): its
        weight becomes ``start_weight``. With ``ramp_s`` 0 or no other replica serving the
        model nothing ramps: its weight entry is removed (full traffic at once, whatever an
        earlier drop left). An instance not among ``replicas()`` is ignored. A ramp under
        way starts over."""
        targets = {t.name: t for t in self.replicas()}
        target = targets.get(instance)
        self._dropped.discard((instance, model))
        if target is None:
            return
        alone = not self._peers(instance, model, targets.values(), ramping=True)
        if self.ramp_s <= 0 or alone:
            if self._ramps.pop((instance, model), None) is not None:
                self._untrack(model)
            target.weights.pop(model, None)
            return
        self._ramps[(instance, model)] = _Ramping(why, self.clock())
        per = self._windows.setdefault(model, {})
        per[instance] = deque(maxlen=self.window)  # its own outcomes from now on
        target.weights[model] = self.start_weight

    def observe(self, instance: str, model: str, latency_s: float | None, ok: bool) -> None:
        """The outcome of one request served by ``instance`` (latency in seconds, None when
        unknown). The hot path: two dict lookups and an append; ignored for models with no
        ramp under way."""
        per = self._windows.get(model)
        if per is None:
            return
        window = per.get(instance)
        if window is None:
            if len(per) >= MAX_INSTANCES_PER_MODEL:
                return
            window = per[instance] = deque(maxlen=self.window)
        window.append((latency_s, ok))

    def observation(self, o: Observation) -> None:
        """:meth:`observe` for a recorded request (``TrafficRecorder.on_observation``): one
        no replica answered, or that failed for the client's own reasons, is ignored; a cold
        request's latency counts without its wait for the load."""
        if o.instance is None or o.model not in self._windows:
            return
        ok = o.outcome == OK
        if not ok and o.outcome not in REPLICA_ERRORS:
            return
        latency = o.latency_s
        if latency is not None and o.wait_s is not None:
            latency = max(latency - o.wait_s, 0.0)
        self.observe(o.instance, o.model, latency, ok)

    def tick(self) -> bool:
        """Advance every ramp to now: raise weights, pause, resume, finish (entry removed)
        or drop (weight 0, ``on_drop``). Returns whether any weight changed (then the routing
        table needs publishing)."""
        if not self._ramps:
            return False
        now = self.clock()
        targets = {t.name: t for t in self.replicas()}
        changed = False
        for (instance, model), ramp in list(self._ramps.items()):
            target = targets.get(instance)
            if target is None:  # gone without a cancel: nothing to set
                self._end(instance, model)
                continue
            because = self._verdict(instance, model, targets.values())[2]
            if because is None and ramp.paused_since is not None:
                ramp.paused_total += now - ramp.paused_since
                ramp.paused_since = ramp.paused_because = None
            elif because is not None:
                if ramp.paused_since is None:
                    ramp.paused_since = now
                elif now - ramp.paused_since > self.ramp_s:
                    self._drop(target, model, because, now - ramp.paused_since)
                    changed = True
                    continue
                ramp.paused_because = because
            weight = self._weight(ramp, now)
            if weight >= 1.0:
                self._end(instance, model)
                changed = target.weights.pop(model, None) is not None or changed
            elif target.weights.get(model) != weight:
                target.weights[model] = weight
                changed = True
        return changed

    def cancel(self, instance: str, model: str | None = None) -> None:
        """``instance``'s replica of ``model`` (every model: None) went away: its ramps end,
        its outcomes are forgotten, and a weight this ramp set is removed from the instance
        when it is still among ``replicas()``."""
        target = next((t for t in self.replicas() if t.name == instance), None)
        keys = [k for k in itertools.chain(self._ramps, self._dropped)
                if k[0] == instance and (model is None or k[1] == model)]
        for key in keys:
            if target is not None:
                target.weights.pop(key[1], None)
            self._dropped.discard(key)
            if key in self._ramps:
                self._end(*key)
        for name, per in self._windows.items():
            if model is None or name == model:
                per.pop(instance, None)

    def views(self) -> list[RampView]:
        """Every ramp under way, by instance then model, with its figures now."""
        now = self.clock()
        targets = {t.name: t for t in self.replicas()}
        views = []
        for (instance, model), ramp in sorted(self._ramps.items()):
            mine, peers, _ = self._verdict(instance, model, targets.values())
            target = targets.get(instance)
            weight = target.weights.get(model, 1.0) if target is not None else 0.0
            paused_s = 0.0 if ramp.paused_since is None else now - ramp.paused_since
            views.append(RampView(
                instance, model, weight, now - ramp.started, ramp.paused_since is not None,
                ramp.why, peers.error_rate, mine.error_rate, mine.p50_s, peers.p50_s,
                ramp.paused_because, paused_s))
        return views

    async def run(self, interval_s: float = 1.0,
                  on_change: Callable[[], Awaitable[object]] | None = None) -> None:
        """Tick every ``interval_s`` forever, awaiting ``on_change`` (republish the routing
        table) after a tick that changed a weight. A failing pass is logged; the loop goes
        on. Cancel the task to stop it."""
        while True:
            try:
                if self.tick() and on_change is not None:
                    await on_change()
            except Exception:  # one bad pass must not end the ramps
                log.exception("traffic ramp pass failed")
            await asyncio.sleep(interval_s)

    def _weight(self, ramp: _Ramping, now: float) -> float:
        paused = ramp.paused_total + (0.0 if ramp.paused_since is None
                                      else now - ramp.paused_since)
        active = max(now - ramp.started - paused, 0.0)
        return min(self.start_weight + (1.0 - self.start_weight) * active / self.ramp_s, 1.0)

    def _peers(self, instance: str, model: str, targets: Iterable[RampTarget], *,
               ramping: bool = False) -> list[str]:
        """The model's other replicas the router may pick; those ramping themselves only
        with ``ramping`` (they share the traffic, but are no yardstick)."""
        return [t.name for t in targets
                if t.name != instance and (ramping or (t.name, model) not in self._ramps)
                and t.weights.get(model, 1.0) > 0 and t.serves(model)]

    def _verdict(self, instance: str, model: str, targets: Iterable[RampTarget]
                 ) -> tuple[Stats, Stats, str | None]:
        """(its figures, its peers' pooled, why it does worse or None)."""
        per = self._windows.get(model, {})
        mine = summarize([per.get(instance, ())], self.min_samples)
        peers = [per[name] for name in self._peers(instance, model, targets) if name in per]
        pooled = summarize(peers, self.min_samples) if peers else NONE
        return mine, pooled, worse(mine, pooled, self.error_margin, self.latency_factor)

    def _drop(self, target: RampTarget, model: str, because: str, paused_s: float) -> None:
        self._end(target.name, model)
        target.weights[model] = 0.0
        self._dropped.add((target.name, model))
        per = self._windows.get(model)
        if per is not None:
            per.pop(target.name, None)
        why = f"paused {paused_s:.0f}s (longer than the {self.ramp_s:g}s ramp): {because}"
        log.warning("traffic ramp dropped %s's replica of %s: %s", target.name, model, why)
        try:
            self.on_drop(target.name, model, why)
        except Exception:  # the listener's trouble is its own; the drop stands
            log.exception("traffic ramp on_drop failed")

    def _end(self, instance: str, model: str) -> None:
        del self._ramps[(instance, model)]
        self._untrack(model)

    def _untrack(self, model: str) -> None:
        if not any(m == model for _, m in self._ramps):
            self._windows.pop(model, None)
