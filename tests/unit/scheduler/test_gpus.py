"""The GPU budget rule (no GPU on this machine: Triton's GPU metrics are given as text)."""

from __future__ import annotations

import pytest

from controlplane.errors import ConfigError
from controlplane.scheduler.gpus import resolve_gpu_budget
from controlplane.triton.metrics import parse_prometheus

_MIB = 1 << 20

# As Triton 2.51 prints it on a two-GPU host (server docs/user_guide/metrics.md)
_TRITON_GPU_METRICS = """\
# HELP nv_gpu_memory_total_bytes GPU total memory, in bytes
# TYPE nv_gpu_memory_total_bytes gauge
nv_gpu_memory_total_bytes{gpu_uuid="GPU-aaaa"} 150754820096
nv_gpu_memory_total_bytes{gpu_uuid="GPU-bbbb"} 85899345920
nv_gpu_memory_used_bytes{gpu_uuid="GPU-aaaa"} 524288000
"""


def test_budget_defaults_to_what_the_gpus_have_minus_the_reserve() -> None:
    samples = parse_prometheus(_TRITON_GPU_METRICS, prefix="nv_gpu_memory_total_bytes")
    gpus = {s.labels["gpu_uuid"]: int(s.value) for s in samples
            if s.name == "nv_gpu_memory_total_bytes"}
    assert set(gpus) == {"GPU-aaaa", "GPU-bbbb"}
    budget = resolve_gpu_budget(None, gpus, reserve_mb=1024)
    assert budget == pytest.approx(150754820096 / _MIB - 1024 + 85899345920 / _MIB - 1024)


def test_no_gpu_means_no_gpu_budget_by_default() -> None:
    assert resolve_gpu_budget(None, {}, reserve_mb=1024) == 0
    assert resolve_gpu_budget(None, None, reserve_mb=1024) == 0
    # a reserve larger than a small GPU leaves it nothing, never a negative budget
    assert resolve_gpu_budget(None, {"g": 512 * _MIB}, reserve_mb=1024) == 0


def test_a_gpu_budget_on_a_host_without_gpus_is_refused() -> None:
    with pytest.raises(ConfigError, match="reports no GPU"):
        resolve_gpu_budget(8000, {}, reserve_mb=0)
    # unknown (metrics unreadable): the operator's word stands
    assert resolve_gpu_budget(8000, None, reserve_mb=0) == 8000
    assert resolve_gpu_budget(0, {}, reserve_mb=0) == 0
    assert resolve_gpu_budget(5000, {"g": 80 << 30}, reserve_mb=1024) == 5000
