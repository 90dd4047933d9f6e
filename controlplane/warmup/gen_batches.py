"""Batch sizes to warm, and the config-only dims of the probe sent before any traffic."""

from __future__ import annotations

import re
from collections.abc import Mapping

from controlplane.errors import ConfigError
from controlplane.triton.repository import ModelSpec
from controlplane.warmup.gen_shapes import ShapeKey, reaches


def cover_batches(weights: Mapping[int, int], coverage: float) -> list[tuple[int, float]]:
    """The fewest batch sizes reaching ``coverage`` of ``weights``, most used first, each with
    its share."""
    total = sum(weights.values())
    chosen: list[tuple[int, float]] = []
    running = 0
    for size, count in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])):
        if reaches(running, total, coverage):
            break
        chosen.append((size, count / total))
        running += count
    return chosen


def batches_from_stats(
    spec: ModelSpec, batch_stats: Mapping[int, int], coverage: float,
) -> tuple[list[tuple[int, float]] | None, list[str]]:
    """Batch sizes Triton's batcher really formed (executed size -> executions).

    None when the stats hold no usable execution (the caller then uses client batch sizes).
    """
    notes = []
    usable = {b: n for b, n in batch_stats.items() if n > 0 and 1 <= b <= spec.max_batch_size}
    if outside := sorted(b for b, n in batch_stats.items() if n > 0 and b not in usable):
        notes.append(f"batch_stats sizes {outside} ignored: outside 1..{spec.max_batch_size}")
    if not usable:
        notes.append("batch_stats hold no executions: batch sizes from client requests")
        return None, notes
    chosen = cover_batches(usable, coverage)
    total = sum(usable.values())
    share = sum(usable[b] for b, _ in chosen) / total
    notes.append(f"batch sizes {[b for b, _ in chosen]} from Triton batch_stats: {share:.1%} of "
                 f"{total} executions (target {coverage:.0%})")
    return chosen, notes


def default_key(spec: ModelSpec, default_length: int) -> tuple[ShapeKey, list[str]]:
    """Concrete dims per input from the config alone.

    Variable dims take ``warmctl.default_dims.<input>`` when set (all dims, or just the
    variable ones, separated by ``x`` or ``,``), else ``default_length``. Optional inputs
    are left out (None).
    """
    dims: list[tuple[int, ...] | None] = []
    notes = []
    for tensor in spec.inputs:
        if tensor.optional:
            # the smallest valid request: without it (once traffic is recorded, samples
            # follow what clients send)
            dims.append(None)
            notes.append(f"{tensor.name}: optional, left out")
            continue
        variable = [i for i, d in enumerate(tensor.dims) if d == -1]
        text = spec.parameters.get(f"default_dims.{tensor.name}")
        if text is None:
            values = [default_length if d == -1 else d for d in tensor.dims]
            if variable:
                notes.append(f"{tensor.name}: variable dims at default length {default_length}")
            dims.append(tuple(values))
            continue
        where = f"{spec.name}: warmctl.default_dims.{tensor.name}"
        try:
            given = [int(p) for p in re.split(r"[x,]", text.replace(" ", "")) if p]
        except ValueError:
            raise ConfigError(f"{where}: expected dims like '64' or '8x64', got {text!r}") from None
        if len(given) == len(tensor.dims):
            values = given
        elif len(given) == len(variable):
            values = list(tensor.dims)
            for i, value in zip(variable, given, strict=True):
                values[i] = value
        else:
            raise ConfigError(f"{where}: {len(given)} dims given, config has {len(tensor.dims)} "
                              f"of which {len(variable)} variable")
        if any(v < 1 or (c != -1 and v != c) for v, c in zip(values, tensor.dims, strict=True)):
            raise ConfigError(f"{where}: {values} do not fit the config's {list(tensor.dims)}")
        notes.append(f"{tensor.name}: dims {values} from warmctl.default_dims")
        dims.append(tuple(values))
    return tuple(dims), notes
