"""Reads what our plugin reports on Triton's Prometheus endpoint (``warmctl_*`` families,
labelled ``model``, ``version``, ``model_instance`` and ``load_id`` (one load of the
instance: a reload creates the new one beside the old): the model instance of the
instance_group, as Triton names it; never ``instance``, which Prometheus sets to the scrape
target when it scrapes Triton itself)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from controlplane.errors import TritonUnavailable
from controlplane.types import ModelName


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_prometheus(text: str, prefix: str = "") -> list[Sample]:
    """The samples whose name starts with ``prefix``, read by prometheus-client's parser.
    TritonUnavailable when ``text`` is not Prometheus exposition text."""
    try:
        return [Sample(s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text)
                for s in family.samples if s.name.startswith(prefix)]
    except ValueError as exc:
        raise TritonUnavailable(f"Triton's metrics are not Prometheus text: {exc}") from None


@dataclass
class ModelFootprint:
    """One model's figures, summed over its loaded instances."""

    model: ModelName
    instances: int = 0
    rss_bytes: int = 0
    cuda_allocated_bytes: int = 0
    cuda_reserved_bytes: int = 0
    #: phase -> seconds; the slowest instance's value (instances load in parallel)
    load_phases: dict[str, float] = field(default_factory=dict)
    #: shape signature -> requests seen by the plugin since load
    shapes: dict[str, int] = field(default_factory=dict)
    #: torch.compile models: ``state`` at load (hit, miss, invalid, disabled, compile_failed),
    #: ``key`` and ``bytes`` of the cache entry (the largest instance's); empty otherwise
    compile_cache: dict[str, str | int] = field(default_factory=dict)


def footprints(samples: list[Sample]) -> dict[ModelName, ModelFootprint]:
    result: dict[ModelName, ModelFootprint] = {}
    instances: dict[ModelName, set[str]] = defaultdict(set)
    for s in samples:
        model = s.labels.get("model")
        if model is None:
            continue
        fp = result.setdefault(model, ModelFootprint(model))
        # an instance is one load of it: a reload beside the old one has the same name
        instances[model].add(s.labels.get("model_instance", "") + "/"
                             + s.labels.get("load_id", ""))
        if s.name == "warmctl_resident_bytes":
            kind = s.labels.get("kind")
            if kind == "rss":
                fp.rss_bytes += int(s.value)
            elif kind == "cuda_allocated":
                fp.cuda_allocated_bytes += int(s.value)
            elif kind == "cuda_reserved":
                fp.cuda_reserved_bytes += int(s.value)
        elif s.name == "warmctl_load_phase_seconds":
            phase = s.labels.get("phase", "")
            fp.load_phases[phase] = max(fp.load_phases.get(phase, 0.0), s.value)
        elif s.name == "warmctl_compile_cache_bytes":
            if int(s.value) >= int(fp.compile_cache.get("bytes", -1)):
                fp.compile_cache = {"state": s.labels.get("state", ""),
                                    "key": s.labels.get("key", ""), "bytes": int(s.value)}
        elif s.name == "warmctl_request_shapes_total":
            shape = s.labels.get("shape", "")
            fp.shapes[shape] = fp.shapes.get(shape, 0) + int(s.value)
    for model, names in instances.items():
        result[model].instances = len(names)
    return result


class PluginMetrics:
    """Scrapes one Triton's metrics endpoint."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    async def _scrape(self) -> str:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                response = await http.get(self.url)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise TritonUnavailable(f"cannot read Triton metrics at {self.url}: {exc}") from None
        return response.text

    async def footprints(self) -> dict[ModelName, ModelFootprint]:
        return footprints(parse_prometheus(await self._scrape(), prefix="warmctl_"))

    async def gpu_memory_total_bytes(self) -> dict[str, int]:
        """Total memory of each GPU Triton sees, by ``gpu_uuid``; empty without GPUs.

        Source: Triton's own GPU metrics (``nv_gpu_memory_total_bytes``, server
        docs/user_guide/metrics.md), present only when Triton found GPUs through DCGM/NVML.
        """
        samples = parse_prometheus(await self._scrape(), prefix="nv_gpu_memory_total_bytes")
        return {s.labels.get("gpu_uuid", str(i)): int(s.value) for i, s in enumerate(samples)
                if s.name == "nv_gpu_memory_total_bytes"}
