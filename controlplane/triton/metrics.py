"""Reads what our plugin reports on Triton's Prometheus endpoint (``warmctl_*`` families)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from controlplane.errors import TritonUnavailable
from controlplane.types import ModelName

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_prometheus(text: str, prefix: str = "") -> list[Sample]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#") or not line.startswith(prefix):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        samples.append(Sample(match["name"], labels, float(match["value"])))
    return samples


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


def footprints(samples: list[Sample]) -> dict[ModelName, ModelFootprint]:
    result: dict[ModelName, ModelFootprint] = {}
    instances: dict[ModelName, set[str]] = defaultdict(set)
    for s in samples:
        model = s.labels.get("model")
        if model is None:
            continue
        fp = result.setdefault(model, ModelFootprint(model))
        instances[model].add(s.labels.get("instance", ""))
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

    async def footprints(self) -> dict[ModelName, ModelFootprint]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                response = await http.get(self.url)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise TritonUnavailable(f"cannot read Triton metrics at {self.url}: {exc}") from None
        return footprints(parse_prometheus(response.text, prefix="warmctl_"))
