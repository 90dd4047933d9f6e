"""Pure checks of one answer of a model version: declared shapes and types, finite values,
agreement with the active version's answer, and the latency bound.

Each returns human-readable problems (one line each, with numbers); an empty list or None
means the check passed. No I/O: the verification feeds them Triton's answers.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from controlplane.tensors import DATATYPES
from controlplane.triton.repository import ModelSpec

#: elements quoted when two answers disagree
_QUOTED = 3


@dataclass(frozen=True)
class Output:
    #: the wire datatype Triton answered with (``FP32``, ``BYTES``)
    datatype: str
    #: as tritonclient decodes it: batch dim first when the model batches
    array: np.ndarray[Any, Any]


Outputs = Mapping[str, Output]


def is_float(datatype: str) -> bool:
    info = DATATYPES.get(datatype)
    return info is not None and info.kind == "float"


def declared_problems(spec: ModelSpec, outputs: Outputs, batch: int | None) -> list[str]:
    """Each declared output present with its declared datatype and dims (-1: any size;
    ``batch`` first when the model batches). Outputs the config does not declare are left
    alone (a config completed by Triton may name none)."""
    problems = []
    for declared in spec.outputs:
        got = outputs.get(declared.name)
        if got is None:
            problems.append(f"output '{declared.name}' missing")
            continue
        if got.datatype != declared.datatype:
            problems.append(f"output '{declared.name}' is {got.datatype}, "
                            f"declared {declared.datatype}")
        expected = ((batch if batch is not None else -1, *declared.dims)
                    if spec.max_batch_size > 0 else declared.dims)
        shape = tuple(got.array.shape)
        if len(shape) != len(expected) or any(
                e != -1 and e != s for e, s in zip(expected, shape, strict=False)):
            problems.append(f"output '{declared.name}' has shape {list(shape)}, declared "
                            f"{['-1' if e == -1 else e for e in expected]}")
    return problems


def nonfinite_problems(outputs: Outputs) -> list[str]:
    """NaN or infinite values in float outputs (counted)."""
    problems = []
    for name, got in outputs.items():
        if not is_float(got.datatype) or got.array.size == 0:
            continue
        values = np.asarray(got.array, dtype=np.float64)
        nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
        if nan or inf:
            problems.append(f"output '{name}' has {nan} NaN and {inf} infinite of "
                            f"{values.size} values")
    return problems


def disagreement(name: str, target: Output, active: Output, *, atol: float | None,
                 rtol: float | None, top_k: int | None) -> str | None:
    """Why the target's output differs from the active's, or None when they agree.

    Float outputs: with ``top_k``, the same set of top-k indices along the last axis in every
    row (order within the top k ignored: near-ties swap places without changing what a
    ranker shows); else ``|t - a| <= atol + rtol * |a|`` where the active's value is finite
    (the active's own NaNs are not the target's fault). Other datatypes: equal values.
    """
    if target.datatype != active.datatype or target.array.shape != active.array.shape:
        return (f"output '{name}' is {target.datatype}{list(target.array.shape)}, the active "
                f"version's {active.datatype}{list(active.array.shape)}")
    if not is_float(target.datatype):
        if np.array_equal(target.array, active.array):
            return None
        differ = int((target.array != active.array).sum())
        return f"output '{name}' differs from the active version's in {differ} values"
    t = np.asarray(target.array, dtype=np.float64)
    a = np.asarray(active.array, dtype=np.float64)
    if top_k is not None:
        return _top_k_disagreement(name, t, a, top_k)
    bound = (atol or 0.0) + (rtol or 0.0) * np.abs(a)
    delta = np.abs(t - a)
    bad = np.isfinite(a) & ~(delta <= bound)
    if not bad.any():
        return None
    where = np.argwhere(bad)[:_QUOTED]
    worst = float(np.max(np.where(bad, delta, 0.0)))
    quoted = ", ".join(f"{tuple(int(i) for i in w)}: {t[tuple(w)]:.6g} vs {a[tuple(w)]:.6g}"
                       for w in where)
    return (f"output '{name}' disagrees with the active version's in {int(bad.sum())} of "
            f"{a.size} values (max |diff| {worst:.6g} > atol {atol or 0:g} + rtol "
            f"{rtol or 0:g} x |active|; {quoted})")


def _top_k_disagreement(name: str, t: np.ndarray[Any, Any], a: np.ndarray[Any, Any],
                        k: int) -> str | None:
    if t.ndim == 0 or t.shape[-1] == 0:
        return None
    k = min(k, t.shape[-1])
    rows_t, rows_a = t.reshape(-1, t.shape[-1]), a.reshape(-1, a.shape[-1])
    top_t = np.sort(np.argsort(-rows_t, axis=-1, kind="stable")[:, :k], axis=-1)
    top_a = np.sort(np.argsort(-rows_a, axis=-1, kind="stable")[:, :k], axis=-1)
    bad = np.flatnonzero((top_t != top_a).any(axis=-1))
    if not bad.size:
        return None
    row = int(bad[0])
    return (f"output '{name}' top-{k} indices differ from the active version's in "
            f"{bad.size} of {rows_t.shape[0]} rows (row {row}: {top_t[row].tolist()} vs "
            f"{top_a[row].tolist()})")


def converged_p50(rounds: Sequence[Sequence[float]]) -> float | None:
    """Median latency (s) of the rounds after the first (the first pays first-execution
    effects); of the first when it is the only one. None without any latency."""
    later = [x for r in rounds[1:] for x in r] or [x for r in rounds[:1] for x in r]
    return statistics.median(later) if later else None


def latency_problem(active_p50_s: float, target_p50_s: float, factor: float,
                    floor_s: float) -> str | None:
    """The target's converged p50 above ``factor`` x the active's plus ``floor_s`` (so that
    sub-millisecond models do not fail on scheduling noise)."""
    limit = factor * active_p50_s + floor_s
    if target_p50_s <= limit:
        return None
    return (f"latency: p50 {target_p50_s * 1e3:.2f} ms vs {active_p50_s * 1e3:.2f} ms active, "
            f"above the limit of {limit * 1e3:.2f} ms ({factor:g} x active + "
            f"{floor_s * 1e3:g} ms)")
