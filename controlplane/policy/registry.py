"""Policy names, what their one parameter means, and :func:`make_policy`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controlplane.policy.baselines import AlwaysOn, KeepAlive, Lru
from controlplane.policy.hybrid import HybridHistogram
from controlplane.policy.oracle import Oracle
from controlplane.policy.planner import DEFAULT_GBS_PER_COLD_START, ForecastPlanner
from controlplane.policy.types import ModelProfile, Policy, PolicySpec

POLICY_SPECS: tuple[PolicySpec, ...] = (
    PolicySpec(
        "ours", "forecast-driven keep/preload/unload by value per byte (the default)",
        "GB*s of residency one avoided cold start is worth (higher: more memory, fewer "
        "cold starts)", DEFAULT_GBS_PER_COLD_START,
        # From 1 (hold almost nothing beyond a load) so the frontier reaches down to the
        # memory of LRU confined to a quarter of a tight budget.
        (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0)),
    PolicySpec(
        "always_on", "load everything that fits at start; evict LRU only for demand loads",
        "none", None, (None,)),
    PolicySpec(
        "keepalive_10m", "load on demand, unload a fixed keep-alive after the last request",
        "keep-alive seconds", 600.0, (60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)),
    PolicySpec(
        "lru", "load on demand, unload only to make room, least recently used first",
        "fraction of the budget it may fill", 1.0, (0.25, 0.5, 0.75, 1.0)),
    PolicySpec(
        "hybrid_histogram", "Shahrad et al. ATC'20: idle-time histogram pre-warm/keep-alive",
        "histogram range in seconds (idle times beyond it are out of bounds)", 14400.0,
        (3600.0, 7200.0, 10800.0, 14400.0)),
    PolicySpec(
        "oracle", "knows the future: just-in-time loads, Belady eviction (lower bound)",
        "fraction of the budget it may fill", 1.0, (0.5, 1.0)),
)
POLICY_NAMES: tuple[str, ...] = tuple(spec.name for spec in POLICY_SPECS)
_SPECS = {spec.name: spec for spec in POLICY_SPECS}


def policy_spec(name: str) -> PolicySpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}") from None


def make_policy(name: str, models: Mapping[str, ModelProfile], param: float | None = None, *,
                trace: Sequence[tuple[float, str]] | None = None,
                epoch_offset_s: float = 0.0) -> Policy:
    """Build a policy by name. ``param`` defaults per :data:`POLICY_SPECS`; ``trace`` is for the
    oracle only (every other policy sees the past through ``observe``); ``epoch_offset_s`` maps
    policy time to Unix time for calendar features (0 when policy time is Unix time)."""
    spec = policy_spec(name)
    value = spec.default_param if param is None else param
    if name == "oracle":
        if trace is None:
            raise ValueError("the oracle needs the trace")
        return Oracle(models, trace, budget_fraction=_require(value, name))
    if trace is not None:
        raise ValueError(f"only the oracle may see the trace, not {name!r}")
    if name == "ours":
        return ForecastPlanner(models, _require(value, name), epoch_offset_s=epoch_offset_s)
    if name == "always_on":
        return AlwaysOn(models)
    if name == "keepalive_10m":
        return KeepAlive(models, keepalive_s=_require(value, name))
    if name == "lru":
        return Lru(models, budget_fraction=_require(value, name))
    if name == "hybrid_histogram":
        return HybridHistogram(models, range_s=_require(value, name))
    raise AssertionError(name)  # every spec is handled above


def _require(value: float | None, name: str) -> float:
    if value is None:
        raise ValueError(f"policy {name!r} needs a parameter")
    return float(value)
