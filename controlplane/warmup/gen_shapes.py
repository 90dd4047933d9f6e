"""Which concrete shapes recorded traffic needs.

Histogram rows are checked against the config, variable dims are bucketed when traffic spreads
over too many values, and the smallest set of shapes reaching the coverage target is chosen.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# the one signature format, re-exported for the generator's callers
from controlplane.tensors import signature_of as signature_of
from controlplane.triton.repository import ModelSpec
from controlplane.warmup.types import ShapeCount

Dims = tuple[int, ...]
#: non-batch dims per input, in the config's input order; None: an optional input the
#: requests left out (samples follow what traffic sends)
ShapeKey = tuple[Dims | None, ...]


def key_order(key: ShapeKey) -> tuple[Dims, ...]:
    """``key`` in a form that sorts (absent inputs first)."""
    return tuple(() if d is None else (0, *d) for d in key)


def key_text(key: ShapeKey) -> str:
    return str(["absent" if d is None else list(d) for d in key])


def reaches(part: int, total: int, share: float) -> bool:
    """``part / total >= share``, in integers so that 95 of 100 reaches 0.95 exactly."""
    return part * 1_000_000 >= round(share * 1_000_000) * total


def dims_fit(dims: Sequence[int], config_dims: Sequence[int]) -> bool:
    """Concrete, positive ``dims`` that the config's dims (-1 = any) accept."""
    return len(dims) == len(config_dims) and all(
        d >= 1 and c in (-1, d) for d, c in zip(dims, config_dims, strict=True))


@dataclass(frozen=True)
class RecordedShape:
    """A histogram row that matches the config, split into batch size and non-batch dims."""

    signature: str
    batch_size: int
    key: ShapeKey
    count: int


def parse_row(spec: ModelSpec, row: ShapeCount) -> RecordedShape | str:
    """The row as a RecordedShape, or why Triton would not run it (so warm-up cannot)."""
    signature = signature_of(row.inputs)
    by_name = {t.name: t for t in row.inputs}
    expected = [t.name for t in spec.inputs]
    required = {t.name for t in spec.inputs if not t.optional}
    if (len(by_name) != len(row.inputs) or not set(by_name) <= set(expected)
            or not required <= set(by_name)):
        return f"inputs {sorted(by_name)} differ from the config's {sorted(expected)}"
    batching = spec.max_batch_size > 0
    batch_sizes: set[int] = set()
    dims: list[Dims | None] = []
    for tensor_spec in spec.inputs:
        tensor = by_name.get(tensor_spec.name)
        if tensor is None:
            dims.append(None)  # an optional input this request left out
            continue
        if tensor.datatype != tensor_spec.datatype:
            return f"{tensor.name} is {tensor.datatype}, the config says {tensor_spec.datatype}"
        shape = tensor.shape
        if batching:
            if not shape:
                return f"{tensor.name} has no batch dim"
            batch_sizes.add(shape[0])
            shape = shape[1:]
        if not dims_fit(shape, tensor_spec.dims):
            return f"{tensor.name} dims {list(shape)} do not fit the config's " \
                   f"{list(tensor_spec.dims)}"
        dims.append(tuple(shape))
    batch = 1
    if batching:
        if len(batch_sizes) != 1:
            return "inputs disagree on the batch size"
        batch = batch_sizes.pop()
        if not 1 <= batch <= spec.max_batch_size:
            return f"batch size {batch} outside 1..{spec.max_batch_size}"
    return RecordedShape(signature, batch, tuple(dims), row.count)


@dataclass(frozen=True)
class VariableDim:
    """How one variable dim (-1 in the config) is warmed."""

    input_index: int
    input_name: str
    axis: int
    #: warmed values, ascending; when bucketed, each is the upper edge of its bucket
    values: tuple[int, ...]
    bucketed: bool

    def representative(self, value: int) -> int | None:
        """The value warmed for ``value``: itself, or its bucket's upper edge; None above all."""
        if not self.bucketed:
            return value
        i = bisect_left(self.values, value)
        return self.values[i] if i < len(self.values) else None


def _quantile_edges(weights: Mapping[int, int], share: float, buckets: int) -> tuple[int, ...]:
    """Upper edges of ``buckets`` equal-traffic buckets over the lowest ``share`` of traffic."""
    ordered = sorted(weights.items())
    total = sum(weights.values())
    cumulative: list[tuple[int, int]] = []
    running = 0
    for value, count in ordered:
        running += count
        cumulative.append((value, running))
        if reaches(running, total, share):
            break
    covered = cumulative[-1][1]
    edges = {next(v for v, cum in cumulative if cum * buckets >= j * covered)
             for j in range(1, buckets + 1)}
    return tuple(sorted(edges))


def plan_variable_dims(
    spec: ModelSpec, recorded: Sequence[RecordedShape], coverage: float, max_buckets: int,
) -> tuple[list[VariableDim], list[str]]:
    """Decide per variable dim whether its exact values are warmed or buckets of them.

    Exact values when at most ``max_buckets`` of them reach the dim's share of traffic. Else
    the values up to that share's quantile are cut into ``max_buckets`` equal-traffic buckets,
    each warmed at its upper edge (the largest value seen in it): the largest shape sets the
    allocator's high-water mark, so shorter requests in the bucket find memory reserved, it
    warms the bucket's slowest case, and it is a value traffic really sent. Values above the
    last edge are the tail left cold.

    Each dim may leave out at most (1 - coverage) / n of traffic for n variable dims, so the
    requests dropped by all of them together stay within 1 - coverage (union bound).
    """
    positions = [(i, axis) for i, t in enumerate(spec.inputs)
                 for axis, d in enumerate(t.dims) if d == -1]
    if not positions or not recorded:
        return [], []
    per_dim_share = 1.0 - (1.0 - coverage) / len(positions)
    result, notes = [], []
    for i, axis in positions:
        name = spec.inputs[i].name
        weights: Counter[int] = Counter()
        for row in recorded:
            present = row.key[i]
            if present is not None:
                weights[present[axis]] += row.count
        if not weights:
            continue  # an optional input no request sent
        total = sum(weights.values())
        needed, running = 0, 0
        for _, count in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])):
            needed += 1
            running += count
            if reaches(running, total, per_dim_share):
                break
        if needed <= max_buckets:
            result.append(VariableDim(i, name, axis, tuple(sorted(weights)), bucketed=False))
            continue
        edges = _quantile_edges(weights, per_dim_share, max_buckets)
        above = sum(c for v, c in weights.items() if v > edges[-1])
        result.append(VariableDim(i, name, axis, edges, bucketed=True))
        notes.append(
            f"{name} dim {axis}: {len(weights)} distinct values, {needed} needed for "
            f"{per_dim_share:.1%} of requests; bucketed by traffic quantiles into {len(edges)} "
            f"buckets warmed at their upper edges {', '.join(map(str, edges))}; values above "
            f"{edges[-1]} ({above / total:.1%} of requests) are not warmed")
    return result, notes


@dataclass
class ShapeGroup:
    """Recorded requests that one concrete shape (after bucketing) stands for."""

    key: ShapeKey
    count: int = 0
    signatures: set[str] = field(default_factory=set)
    #: batch size clients sent -> requests
    batches: Counter[int] = field(default_factory=Counter)


def group_shapes(
    recorded: Sequence[RecordedShape], variable: Sequence[VariableDim],
) -> tuple[list[ShapeGroup], int]:
    """Requests grouped by warmed shape, largest first; and the count beyond every bucket."""
    groups: dict[ShapeKey, ShapeGroup] = {}
    beyond = 0
    for row in recorded:
        dims = [None if d is None else list(d) for d in row.key]
        for var in variable:
            this = dims[var.input_index]
            if this is None:
                continue
            value = var.representative(this[var.axis])
            if value is None:
                break
            this[var.axis] = value
        else:
            key = tuple(None if d is None else tuple(d) for d in dims)
            group = groups.setdefault(key, ShapeGroup(key))
            group.count += row.count
            group.signatures.add(row.signature)
            group.batches[row.batch_size] += row.count
            continue
        beyond += row.count
    return sorted(groups.values(), key=lambda g: (-g.count, key_order(g.key))), beyond


def select_groups(
    groups: Sequence[ShapeGroup], total: int, coverage: float,
) -> list[ShapeGroup]:
    """The fewest groups reaching ``coverage`` of ``total`` requests: largest first (optimal
    for a threshold on a sum); all of them when even that falls short."""
    chosen: list[ShapeGroup] = []
    running = 0
    for group in sorted(groups, key=lambda g: (-g.count, key_order(g.key))):
        if reaches(running, total, coverage):
            break
        chosen.append(group)
        running += group.count
    return chosen
