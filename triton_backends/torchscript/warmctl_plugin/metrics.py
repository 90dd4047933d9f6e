"""The instance's ``warmctl_*`` metric families on Triton's /metrics (read by the control plane,
``controlplane/triton/metrics.py``)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

MAX_SHAPES = 32


class Metrics:
    """The instance's warmctl_* metric series."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self._phase = pb_utils.MetricFamily(
            name="warmctl_load_phase_seconds",
            description="Model instance load time by phase (import, read_weights, to_device, "
            "cache_restore, compile, first_execute, initialize)",
            kind=pb_utils.MetricFamily.GAUGE)
        self._memory = pb_utils.MetricFamily(
            name="warmctl_resident_bytes",
            description="Model instance memory: process RSS, CUDA allocated and reserved",
            kind=pb_utils.MetricFamily.GAUGE)
        self._shapes = pb_utils.MetricFamily(
            name="warmctl_request_shapes_total",
            description=f"Requests per input shape signature (first {MAX_SHAPES}, then other)",
            kind=pb_utils.MetricFamily.COUNTER)
        self._cache = pb_utils.MetricFamily(
            name="warmctl_compile_cache_bytes",
            description="torch.compile artifacts of this instance: the cache state at load "
            "(hit, miss, invalid, disabled, compile_failed), the entry key, and its size",
            kind=pb_utils.MetricFamily.GAUGE)
        self._series: dict[tuple[str, str], object] = {}
        self._sums: dict[str, float] = {}

    def _get(self, family: object, key: str, value: str,
             extra: dict[str, str] | None = None) -> object:
        series = self._series.get((key, value))
        if series is None:
            labels = {**self.labels, key: value, **(extra or {})}
            series = family.Metric(labels=labels)  # type: ignore[attr-defined]
            self._series[(key, value)] = series
        return series

    def close(self) -> None:
        self._series.clear()
        del self._phase, self._memory, self._shapes, self._cache

    def phase(self, name: str, seconds: float) -> None:
        self._get(self._phase, "phase", name).set(seconds)  # type: ignore[attr-defined]

    def add_phase(self, name: str, seconds: float) -> None:
        self._sums[name] = self._sums.get(name, 0.0) + seconds
        self.phase(name, self._sums[name])

    def memory(self, kind: str, value: int) -> None:
        self._get(self._memory, "kind", kind).set(value)  # type: ignore[attr-defined]

    def shape(self, signature: str, count: int) -> None:
        known = sum(1 for key, _ in self._series if key == "shape")
        if ("shape", signature) not in self._series and known >= MAX_SHAPES:
            signature = "other"
        self._get(self._shapes, "shape", signature).increment(count)  # type: ignore[attr-defined]

    def compile_cache(self, state: str, key: str, size: int) -> None:
        """One series per instance: the state is decided once, at initialize."""
        self._get(self._cache, "state", state, {"key": key}).set(size)  # type: ignore[attr-defined]
