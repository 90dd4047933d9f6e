"""Samples from chosen shapes and batch sizes: their order, the caps, names, data files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controlplane.triton.repository import ModelSpec
from controlplane.warmup.data import WARMUP_DIR, ShapeFill
from controlplane.warmup.gen_batches import cover_batches
from controlplane.warmup.gen_shapes import ShapeGroup, ShapeKey
from controlplane.warmup.gen_tensors import numel
from controlplane.warmup.types import InputData, WarmupSample, WarmupSettings

#: how many dropped items a note names before it just counts the rest
EXAMPLES_IN_NOTES = 3


@dataclass(frozen=True)
class Candidate:
    key: ShapeKey
    batch_size: int
    share: float
    group: ShapeGroup | None

    def elements(self, count: int) -> int:
        return self.batch_size * count * sum(numel(d) for d in self.key if d is not None)

    def describe(self, spec: ModelSpec) -> str:
        dims = " ".join(f"{t.name}{list(d)}" for t, d in zip(spec.inputs, self.key, strict=True)
                        if d is not None)
        return f"batch {self.batch_size} x {dims} ({self.share:.1%})"


def order_candidates(
    groups: Sequence[ShapeGroup], total: int, spec: ModelSpec,
    stats_batches: list[tuple[int, float]] | None, batch_coverage: float,
) -> list[Candidate]:
    """Each shape's most used batch size first (in shape order), then the rest by share.

    A shape never seen costs more than a new batch size of a shape already warm, so when the
    caps cut, they cut second batch sizes before whole shapes.
    """
    firsts: list[Candidate] = []
    rest: list[Candidate] = []
    for group in groups:
        if spec.max_batch_size <= 0:
            batches = [(1, 1.0)]
        elif stats_batches is not None:
            batches = stats_batches
        else:
            batches = cover_batches(group.batches, batch_coverage)
        shape_share = group.count / total
        for rank, (size, share) in enumerate(batches):
            candidate = Candidate(group.key, size, shape_share * share, group)
            (rest if rank else firsts).append(candidate)
    return firsts + sorted(rest, key=lambda c: -c.share)


def apply_caps(candidates: Sequence[Candidate], settings: WarmupSettings,
               spec: ModelSpec) -> tuple[list[Candidate], list[str]]:
    """Candidates in order until ``max_samples``; one over the element budget is skipped, not
    the end of the list, since a later and smaller one may still fit."""
    accepted: list[Candidate] = []
    over_count: list[Candidate] = []
    over_elements: list[Candidate] = []
    elements = 0
    for candidate in candidates:
        cost = candidate.elements(settings.count)
        if len(accepted) >= settings.max_samples:
            over_count.append(candidate)
        elif elements + cost > settings.max_total_elements:
            over_elements.append(candidate)
        else:
            accepted.append(candidate)
            elements += cost
    notes = []
    for dropped, why in ((over_count, f"max_samples {settings.max_samples} reached"),
                         (over_elements, f"over max_total_elements "
                                         f"{settings.max_total_elements:,}")):
        if dropped:
            listed = "; ".join(c.describe(spec) for c in dropped[:EXAMPLES_IN_NOTES])
            more = f" and {len(dropped) - EXAMPLES_IN_NOTES} more" \
                if len(dropped) > EXAMPLES_IN_NOTES else ""
            notes.append(f"dropped {len(dropped)} samples, {why}: {listed}{more}")
    return accepted, notes


def assemble_samples(
    accepted: Sequence[Candidate], fills: Mapping[ShapeKey, ShapeFill], spec: ModelSpec,
    count: int,
) -> tuple[list[WarmupSample], dict[str, bytes], list[str]]:
    """Samples named ``s<i>_b<batch>``; a shape's data files are shared by its samples and
    named after the first sample that reads them."""
    samples: list[WarmupSample] = []
    files: dict[str, bytes] = {}
    notes: list[str] = []
    file_names: dict[tuple[ShapeKey, str], str] = {}
    written: dict[tuple[str, str], list[str]] = {}
    for i, candidate in enumerate(accepted):
        name = f"s{i}_b{candidate.batch_size}"
        fill = fills[candidate.key]
        inputs = {}
        for j, (tensor, dims) in enumerate(zip(spec.inputs, candidate.key, strict=True)):
            if dims is None:
                continue  # an optional input the requests left out
            source = fill.inputs[tensor.name]
            file = None
            if source.source == "file":
                file = file_names.get((candidate.key, tensor.name))
                if file is None:
                    file = f"s{i}_{_safe(tensor.name, j)}.bin"
                    file_names[(candidate.key, tensor.name)] = file
                    files[f"{WARMUP_DIR}/{file}"] = source.content
                    written.setdefault((tensor.name, source.origin), []).append(file)
            inputs[tensor.name] = InputData(tensor.datatype, dims, source.source, file)
        for note in fill.notes:
            if note not in notes:  # a shape's samples share its fill and its notes
                notes.append(note)
        samples.append(WarmupSample(name, candidate.batch_size, inputs, count,
                                    round(candidate.share, 6)))
    for (name, origin), names in written.items():
        notes.append(f"{name}: {origin}, in {len(names)} file(s) under {WARMUP_DIR}/ "
                     f"({', '.join(names)})")
    return samples, files, notes


def _safe(name: str, index: int) -> str:
    if name and all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
        return name
    # Distinct unsafe names could clean up to the same text: the index keeps them apart.
    return f"input{index}_" + "".join(c if c.isascii() and c.isalnum() else "_" for c in name)
