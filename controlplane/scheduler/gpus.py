"""The GPU memory budget: what the GPUs really have, unless the operator says otherwise.

A model's own ``instance_group`` kind is respected by default; the placement moves a model
from the GPU to the CPU only to stay within this budget, and says so in the plan.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from controlplane.errors import ConfigError, ControlPlaneError
from controlplane.triton.metrics import PluginMetrics

log = logging.getLogger(__name__)

_MIB = 1 << 20


def resolve_gpu_budget(configured_mb: float | None, gpus: Mapping[str, int] | None,
                       reserve_mb: float) -> float:
    """The GPU budget in MiB.

    ``configured_mb``: the operator's setting (None: derive it); ``gpus``: total bytes per GPU
    Triton sees (None: unknown, e.g. an external Triton whose metrics we cannot read);
    ``reserve_mb``: left free on each GPU when derived. Raises ConfigError for a budget above
    0 on a host where Triton sees no GPU (models would silently run elsewhere).
    """
    if configured_mb is None:
        return sum(max(0.0, total / _MIB - reserve_mb) for total in (gpus or {}).values())
    if configured_mb > 0 and gpus is not None and not gpus:
        raise ConfigError(
            f"scheduler.gpu_memory_budget_mb = {configured_mb:g} but Triton reports no GPU "
            "(no nv_gpu_memory_total_bytes metric): remove the setting on a host without GPUs")
    return configured_mb


async def detect_gpus(metrics: PluginMetrics | None) -> dict[str, int] | None:
    """Total bytes per GPU from Triton's metrics: empty when Triton sees none, None when they
    cannot be read (an external Triton without ``triton.metrics_url``; logged)."""
    if metrics is None:
        log.warning("no Triton metrics URL: GPUs cannot be detected; set "
                    "scheduler.gpu_memory_budget_mb explicitly on a GPU host")
        return None
    try:
        return await metrics.gpu_memory_total_bytes()
    except ControlPlaneError as exc:
        log.warning("GPUs cannot be detected: %s", exc)
        return None
