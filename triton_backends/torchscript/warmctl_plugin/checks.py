"""What a model accepts and returns, checked against its config at initialize.

Batch sizes. Triton sends any batch from 1 to ``max_batch_size``, and the plugin concatenates
the requests of one ``execute``. An ExportedProgram knows the batch sizes it takes (the
placeholders' fake shapes, ``range_constraints``); an AOTInductor package states them in its
generated wrapper (``check_input_<i>``: "unmatched dim value at 0, expected: 1", "dim value is
too large at 0, expected to be <= 4"). A program exported from a batch-1 example without
``dynamic_shapes`` takes batch 1 only (pytorch#133653): the ExportedProgram raises a guard
error for batch 8, and an AOTInductor package does not even check by default -- it reads the
first row and answers one.

The choice: such a model is **served, in pieces it accepts**, not refused. Plain Triton's
Python backend hands such a model one request at a time and serves it; refusing a model that
works at batch 1 would turn a performance problem into an outage at the next deploy. The
plugin splits every forward pass into pieces of at most the exported maximum (padding a piece
up to an exported minimum by repeating its last row, whose answers are dropped: rows of a
batched model are independent) and logs once, at initialize, why and how to export the model
to batch for real. Only a program no batch size of the config can reach is refused.

Other dims: a config dim that the program can never take fails the load with both shapes; a
``-1`` dim that the program fixed is a warning (requests of other sizes will fail).

Outputs: the structure an ExportedProgram or AOTInductor package returns is in its output
spec (a pytree ``TreeSpec``), checked without running anything. A TorchScript module is run
once on a small input built from the config (``example_inputs``); ``model.py`` refuses the
load if the outputs do not map onto the config, and only warns if that input cannot run.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import errors, outputs

#: (low, high) a dim accepts; high None: unbounded
Bounds = tuple[int, int | None]

_AOTI_STATIC = re.compile(
    r'input_handles\[(\d+)\]: unmatched dim value at 0, "\s*<<\s*"expected: (\d+),')
_AOTI_MAX = re.compile(
    r'input_handles\[(\d+)\]: dim value is too large at 0, "\s*<<\s*"expected to be <= (\d+),')


class CheckError(Exception):
    """The model cannot serve what its config promises: the load fails with this reason."""


class tensor:  # lower case: the name ``outputs.describe`` shows for a leaf of a spec
    """A leaf of an output spec: a tensor whose shape is not known until the model runs."""


@dataclass(frozen=True)
class Pieces:
    """How to split a batch of rows into forward passes the model accepts."""

    low: int
    high: int

    def split(self, rows: int) -> list[tuple[int, int, int]]:
        """``(start, stop, padded)`` per forward pass: rows ``start:stop``, run at ``padded``
        rows (>= ``low``) when the piece is shorter than the model accepts."""
        return [(start, min(start + self.high, rows), max(min(self.high, rows - start),
                                                          self.low))
                for start in range(0, rows, self.high)]


def exported_bounds(program: Any) -> list[list[Bounds]]:
    """Per user input of an ExportedProgram, per dim: the sizes it accepts."""
    user_inputs = set(program.graph_signature.user_inputs)
    ranges = program.range_constraints
    found: list[list[Bounds]] = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        shape = getattr(node.meta.get("val"), "shape", None)
        found.append([] if shape is None else [_dim_bounds(d, ranges) for d in shape])
    return found


def _dim_bounds(dim: Any, ranges: dict[Any, Any]) -> Bounds:
    if isinstance(dim, int):
        return dim, dim
    expr = getattr(getattr(dim, "node", None), "expr", None)
    value_range = ranges.get(expr) if expr is not None else None
    if value_range is None:  # an expression of symbols: leave it to the program's own guard
        return 0, None
    return _as_int(value_range.lower) or 0, _as_int(value_range.upper)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except Exception:  # int_oo (sympy raises AttributeError for it), or a symbolic bound
        return None


def aoti_batch_bounds(path: str) -> list[Bounds]:
    """The batch dim's bounds per input stated by an AOTInductor package's wrapper (empty
    when the package has no source). Only a fixed size and an upper bound are taken: the
    lower bound inductor writes (">= 2", from torch's 0/1 specialization) is stricter than
    what the code runs correctly, and is not checked at run time either."""
    with zipfile.ZipFile(path) as archive:
        sources = [n for n in archive.namelist()
                   if "/data/aotinductor/" in n and n.endswith("wrapper.cpp")]
        if not sources:
            return []
        text = archive.read(sources[0]).decode("utf-8", "replace")
    bounds: dict[int, Bounds] = {}
    for index, value in _AOTI_STATIC.findall(text):
        bounds[int(index)] = (int(value), int(value))
    for index, value in _AOTI_MAX.findall(text):
        bounds.setdefault(int(index), (1, int(value)))
    return [bounds.get(i, (1, None)) for i in range(max(bounds, default=-1) + 1)]


def batch_pieces(batch_bounds: Sequence[Bounds], max_batch_size: int, model_file: str,
                 input_names: Sequence[str]) -> tuple[Pieces | None, str | None]:
    """``(pieces, warning)``: None, None when every batch from 1 to ``max_batch_size`` is
    accepted; raises CheckError when none is."""
    if not batch_bounds or max_batch_size <= 0:
        return None, None
    low = max([1, *(b[0] for b in batch_bounds)])
    highs = [b[1] for b in batch_bounds if b[1] is not None]
    high = min([max_batch_size, *highs])
    if low <= 1 and high >= max_batch_size:
        return None, None
    accepted = f"exactly {low}" if highs and low == min(highs) else \
        f"{low} to {min(highs) if highs else 'any'}"
    hint = ("export it with dynamic_shapes={" + ", ".join(
        f"'{n}': {{0: torch.export.Dim('batch', max={max_batch_size})}}" for n in input_names)
        + "} (and an example batch of 2 or more)")
    if high < low:
        raise CheckError(f"{model_file} takes batches of {accepted} row(s), which "
                         f"max_batch_size {max_batch_size} never sends: {hint}")
    warning = (f"{model_file} takes batches of {accepted} row(s) but max_batch_size is "
               f"{max_batch_size}: every forward pass is split into pieces of at most {high} "
               + (f"(padded to {low}) " if low > 1 else "") + "row(s)"
               + ("; batching gains nothing" if high == 1 else "")
               + f". To batch up to {max_batch_size}, {hint}")
    return Pieces(low, high), warning


def check_dims(bounds: Sequence[Sequence[Bounds]], inputs: Sequence[dict[str, Any]],
               batching: bool, model_file: str) -> list[str]:
    """Warnings for ``-1`` dims the program fixed; CheckError for a dim it can never take."""
    warnings: list[str] = []
    for dims, spec in zip(bounds, inputs, strict=False):
        if not dims or "reshape" in spec:
            continue  # the model sees the reshaped tensor, not the config's dims
        want = [int(d) for d in spec.get("dims", [])]
        got = list(dims[1:] if batching else dims)
        name = spec["name"]
        if len(want) != len(got):
            raise CheckError(f"input {name!r}: the config gives {len(want)} dim(s) "
                             f"{want}{' after the batch dim' if batching else ''}, "
                             f"{model_file} takes {len(got)}")
        for i, (size, (low, high)) in enumerate(zip(want, got, strict=True)):
            if size == -1:
                if high is not None and high == low:
                    warnings.append(f"input {name!r} dim {i} is -1 in the config but "
                                    f"{model_file} takes only {low}: other sizes will fail")
            elif size < low or (high is not None and size > high):
                raise CheckError(f"input {name!r} dim {i} is {size} in the config but "
                                 f"{model_file} takes {low}..{'any' if high is None else high}")
    return warnings


def example_inputs(inputs: Sequence[dict[str, Any]], params: dict[str, str], batching: bool,
                   dtypes: dict[str, Any], np: Any) -> list[Any] | None:
    """One small request from the config: batch 1, every ``-1`` dim 1, each value the low
    end of its ``warmctl.input_range.<name>`` parameter (``lo:hi``: ids that 0 is not valid
    for) or 0. None when the config cannot say (reshaped inputs, unsupported types)."""
    arrays = []
    for spec in inputs:
        dtype = dtypes.get(spec["data_type"])
        if dtype is None or "reshape" in spec:
            return None
        shape = ([1] if batching else []) + [max(int(d), 1) for d in spec.get("dims", [])]
        low = params.get(f"warmctl.input_range.{spec['name']}", "0").split(":", 1)[0]
        try:
            value = int(low)
        except ValueError:
            value = 0
        arrays.append(np.full(shape, value, dtype=dtype))
    return arrays


def check_loaded(loaded: Any, fmt: str, path: str, config: dict[str, Any],
                 params: dict[str, str], torch: Any, np: Any, dtypes: dict[str, Any],
                 device: Any) -> tuple[Pieces | None, list[str]]:
    """The load-time checks of the module docstring: ``(pieces, warnings)``; raises
    CheckError or ``outputs.OutputError`` when the model cannot serve its config."""
    model_file = os.path.basename(path)
    max_batch_size = int(config.get("max_batch_size", 0))
    inputs = config["input"]
    names = [o["name"] for o in config["output"]]
    warnings: list[str] = []
    batch_bounds: list[Bounds] = []
    if fmt == "exported_program" and loaded.program is not None:
        bounds = exported_bounds(loaded.program)
        warnings += check_dims(bounds, inputs, max_batch_size > 0, model_file)
        batch_bounds = [dims[0] for dims in bounds if dims]
    elif fmt == "aoti":
        batch_bounds = aoti_batch_bounds(path)
    pieces, warning = batch_pieces(batch_bounds, max_batch_size, model_file,
                                   [i["name"] for i in inputs])
    warnings += [warning] if warning else []

    if loaded.out_spec is not None:
        from torch.utils import _pytree

        shaped = _pytree.tree_unflatten([tensor()] * loaded.out_spec.num_leaves,
                                        loaded.out_spec)
        outputs.flatten(shaped, names, tensor)
    elif fmt == "torchscript":
        example = example_inputs(inputs, params, max_batch_size > 0, dtypes, np)
        if example is None:
            warnings.append("outputs not checked at load (no example input can be built from "
                            "the config): a mismatch fails each request")
            return pieces, warnings
        try:
            with torch.inference_mode():
                out = loaded.module(*(torch.from_numpy(a).to(device) for a in example))
        except Exception as exc:
            # zeros are not valid for every model (1-based ids): not a reason to refuse it
            warnings.append(f"outputs not checked at load: the example input "
                            f"{[list(a.shape) for a in example]} failed "
                            f"({errors.client_text(exc, 300)}); a mismatch fails each request")
            return pieces, warnings
        outputs.flatten(out, names, torch.Tensor)
    return pieces, warnings
