"""What the generator needs, read from recorded traffic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controlplane.store.models import PayloadSample
from controlplane.tensors import DATATYPES, parse_signature
from controlplane.traffic.store import TrafficStore
from controlplane.types import ModelName
from controlplane.warmup.types import PayloadSampleData, ShapeCount, TensorShape


@dataclass(frozen=True)
class TrafficView:
    """A model's recorded traffic as the generator takes it."""

    shapes: list[ShapeCount]
    samples: list[PayloadSampleData]
    #: observed [min, max + 1) of integer inputs: served requests sampled by the gateway
    #: (``traffic.range_sample_every``) and the payload samples
    value_ranges: dict[str, tuple[int, int]]
    #: requests behind ``shapes``
    requests: int


def read_traffic(traffic: TrafficStore, model: ModelName, *, since: float,
                 min_recent: int) -> TrafficView:
    """Recent requests when there are enough of them, else the whole retained histogram.

    Recent traffic is what the next load will see; the long histogram still counts old
    shapes that stopped arriving.
    """
    recent = traffic.signature_counts(model, since)
    if sum(n for _, n, _ in recent) >= min_recent:
        shapes = [ShapeCount(parse_signature(s), n, t) for s, n, t in recent]
    else:
        shapes = [
            ShapeCount(tuple(TensorShape(i["name"], i["datatype"], tuple(i["shape"]))
                             for i in row.inputs), row.count, row.last_seen)
            for row in traffic.shapes(model)]
    samples = [_sample_data(s) for s in traffic.samples(model)]
    ranges = _value_ranges(samples)
    for name, (lo, hi) in traffic.value_ranges(model).items():
        old = ranges.get(name)
        ranges[name] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
    return TrafficView(shapes, samples, ranges, sum(s.count for s in shapes))


def _sample_data(row: PayloadSample) -> PayloadSampleData:
    inputs, data = {}, {}
    for i in row.inputs:
        inputs[i["name"]] = TensorShape(i["name"], i["datatype"], tuple(i["shape"]))
        data[i["name"]] = row.data[i["offset"]:i["offset"] + i["size"]]
    return PayloadSampleData(inputs, data)


def _value_ranges(samples: list[PayloadSampleData]) -> dict[str, tuple[int, int]]:
    ranges: dict[str, tuple[int, int]] = {}
    for sample in samples:
        for name, shape in sample.inputs.items():
            info = DATATYPES.get(shape.datatype)
            if info is None or not info.is_integer or not sample.data[name]:
                continue
            try:
                values = np.frombuffer(sample.data[name], dtype=info.storage)
            except ValueError:
                continue  # a payload whose size does not fit its type: not a range witness
            lo, hi = int(values.min()), int(values.max()) + 1
            old = ranges.get(name)
            ranges[name] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
    return ranges
