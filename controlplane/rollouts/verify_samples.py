"""The inputs a new model version is verified on, best first.

1. Recorded payload samples (the gateway keeps raw request payloads for models with
   ``sample_payloads``): what clients really send, newest first, spread over the recorded
   shapes.
2. Else the proven samples of the latest warm-up config: requests a load-time probe of the
   active version served (proof state ``ok``), sent at batch 1, the form they were proven in.
3. Else inputs generated from the config's declared shapes: the default probe's data (safe
   values: integer inputs within recorded ranges or ``warmctl.input_range``), or, where no
   data is known to be safe, zeros. A last resort: the verdict's reason says so.

Samples the active version itself fails are skipped by the verification, so a poor guess
costs coverage, never a false rollback.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from controlplane.errors import ConfigError
from controlplane.store.models import PayloadSample
from controlplane.tensors import array_from_bytes, wire_name, zeros
from controlplane.traffic.store import TrafficStore
from controlplane.triton.repository import ModelSpec
from controlplane.warmup.configs import PROVEN, StoredWarmup, WarmupStore
from controlplane.warmup.gen_batches import default_key
from controlplane.warmup.generate import default_probe
from controlplane.warmup.types import WarmupPlan, WarmupSettings

#: where a sample came from, best first
RECORDED, PROVEN_PROBE, GENERATED = "recorded", "proven probe", "generated"


@dataclass(frozen=True)
class SampleInput:
    name: str
    #: KServe wire datatype (``FP32``, ``BYTES``)
    datatype: str
    #: batch dim first when the model batches; BYTES: an object array of ``bytes``
    array: np.ndarray[Any, Any]


@dataclass(frozen=True, eq=False)
class Sample:
    """One request's inputs, sent unchanged to both versions."""

    label: str
    #: RECORDED, PROVEN_PROBE or GENERATED
    source: str
    inputs: tuple[SampleInput, ...]

    def batch(self, spec: ModelSpec) -> int | None:
        """The request's batch size; None for a model without a batch dim."""
        if spec.max_batch_size <= 0 or not self.inputs or not self.inputs[0].array.shape:
            return None
        return int(self.inputs[0].array.shape[0])


async def samples_for(model: str, spec: ModelSpec, traffic: TrafficStore,
                      warmups: WarmupStore, limit: int) -> list[Sample]:
    """Up to ``limit`` samples of the best source that has any (see the module docstring).

    Database reads run on a worker thread. Never empty for a model whose config names its
    inputs (the zeros fallback); empty for one that names none (auto-completed configs: pass
    the completed spec). Malformed stored rows are skipped.
    """
    recorded = await asyncio.to_thread(traffic.samples, model)
    chosen = _dedupe(_recorded(recorded, spec), limit)
    if chosen:
        return chosen
    latest, proofs = await asyncio.to_thread(
        lambda: (warmups.latest(model), warmups.proofs(model)))
    chosen = _dedupe(_proven(latest, proofs, spec), limit)
    if chosen:
        return chosen
    ranges = await asyncio.to_thread(traffic.value_ranges, model)
    return _dedupe(_generated(spec, ranges), limit)


def _recorded(rows: Sequence[PayloadSample], spec: ModelSpec) -> list[Sample]:
    """Newest first, round-robin over signatures: every recorded shape before a second
    sample of any."""
    by_signature: dict[str, list[PayloadSample]] = {}
    for row in reversed(rows):
        by_signature.setdefault(row.signature, []).append(row)
    groups = list(by_signature.values())
    ordered = [group[rank] for rank in range(max(map(len, groups), default=0))
               for group in groups if rank < len(group)]
    known = {t.name for t in spec.inputs}
    samples = []
    for row in ordered:
        try:
            inputs = tuple(
                SampleInput(i["name"], i["datatype"], array_from_bytes(
                    i["datatype"], [int(d) for d in i["shape"]],
                    row.data[i["offset"]:i["offset"] + i["size"]]))
                for i in row.inputs)
        except (KeyError, TypeError, ValueError):
            continue  # a row that does not decode is no evidence either way
        if known and not {i.name for i in inputs} <= known:
            continue
        samples.append(Sample(f"recorded #{row.id} {row.signature}", RECORDED, inputs))
    return samples


def _proven(latest: StoredWarmup | None, proofs: dict[str, str],
            spec: ModelSpec) -> list[Sample]:
    if latest is None:
        return []
    return [sample for s in latest.samples if proofs.get(latest.sample_key(s)) == PROVEN
            if (sample := _from_warmup(s, latest.files, spec, PROVEN_PROBE)) is not None]


def _generated(spec: ModelSpec, ranges: dict[str, tuple[int, int]]) -> list[Sample]:
    try:
        plan: WarmupPlan | str = default_probe(spec, value_ranges=ranges)
    except ConfigError as exc:
        plan = str(exc)
    if isinstance(plan, WarmupPlan):
        return [sample for s in plan.model_warmup()
                if (sample := _from_warmup(s, dict(plan.files), spec, GENERATED)) is not None]
    try:
        key, _ = default_key(spec, WarmupSettings().default_variable_length)
    except ConfigError:
        return []  # malformed warmctl.default_dims: no dims to send
    batch = (1,) if spec.max_batch_size > 0 else ()
    inputs = tuple(SampleInput(t.name, t.datatype, zeros(t.datatype, (*batch, *dims)))
                   for t, dims in zip(spec.inputs, key, strict=True) if dims is not None)
    return [Sample(f"zeros at the config's dims (no safe data: {plan})", GENERATED, inputs)
            ] if inputs else []


def _from_warmup(sample: dict[str, Any], files: dict[str, bytes], spec: ModelSpec,
                 source: str) -> Sample | None:
    """A ``model_warmup`` sample at batch 1, filled as Triton fills it (zeros, or the data
    file's element); None for one that cannot be rebuilt (BYTES without data, bad file)."""
    inputs = []
    try:
        for name, entry in sample["inputs"].items():
            dims = [int(d) for d in entry["dims"]]
            datatype = wire_name(entry["data_type"])
            if "input_data_file" in entry:
                array = array_from_bytes(datatype, dims,
                                         files[f"warmup/{entry['input_data_file']}"])
            elif datatype == "BYTES":
                return None
            else:
                array = zeros(datatype, dims)
            inputs.append(SampleInput(name, datatype,
                                      array[None] if spec.max_batch_size > 0 else array))
    except (KeyError, TypeError, ValueError):
        return None
    return Sample(f"{source} {sample.get('name', '?')}", source, tuple(inputs))


def _dedupe(samples: list[Sample], limit: int) -> list[Sample]:
    """The first ``limit`` samples with distinct inputs (names, types, shapes and data)."""
    seen: set[str] = set()
    kept = []
    for sample in samples:
        digest = hashlib.sha256()
        for i in sorted(sample.inputs, key=lambda i: i.name):
            digest.update(f"{i.name}:{i.datatype}:{i.array.shape}:".encode())
            digest.update(repr(i.array.tolist()).encode() if i.array.dtype == object
                          else np.ascontiguousarray(i.array).tobytes())
        if digest.hexdigest() not in seen:
            seen.add(digest.hexdigest())
            kept.append(sample)
            if len(kept) >= limit:
                break
    return kept
