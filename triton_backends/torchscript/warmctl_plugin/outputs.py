"""From what a torch model returns to the config's outputs, in config order.

Models return a tensor, a tuple or list of tensors (nested ones are flattened in order, as
``torch.utils._pytree`` does), or a dict keyed by output name (TorchScript ``Dict[str,
Tensor]``, an exported program whose ``forward`` returns a dict). Iterating a dict yields its
keys, so treating it as a sequence fed strings to ``.detach()``; a str, a number or None
among the outputs is named here instead. ``OutputError`` says what came back and what the
config declares; ``model.py`` raises it at initialize where the structure can be known then
(see ``checks.py``), otherwise it fails the request.

Pure apart from the tensor type passed in (unit-tested with torch, without Triton).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class OutputError(Exception):
    """The model's return value does not map onto the config's outputs."""


def flatten(out: Any, names: Sequence[str], tensor_type: type) -> list[Any]:
    """The tensors of ``out`` for the outputs ``names``, in that order.

    A dict gives the value of each name (keys the config does not declare are ignored: the
    config chooses what is served); anything else is flattened depth-first and must hold
    exactly ``len(names)`` tensors.
    """
    if isinstance(out, Mapping):
        missing = [n for n in names if n not in out]
        if missing:
            raise OutputError(
                f"the model returned a dict with keys {_keys(out)}; the config's output(s) "
                f"{', '.join(repr(n) for n in missing)} are not among them")
        leaves = [(repr(n), out[n]) for n in names]
    else:
        leaves = list(_walk(out, "output"))
        if len(leaves) != len(names):
            raise OutputError(
                f"the model returned {len(leaves)} value(s) ({describe(out)}); the config "
                f"declares {len(names)} output(s): {', '.join(names)}")
    for (where, value), name in zip(leaves, names, strict=True):
        if not isinstance(value, tensor_type):
            raise OutputError(f"{where} (config output {name!r}) is a {type(value).__name__}, "
                              "not a tensor")
    return [value for _, value in leaves]


def _walk(value: Any, where: str) -> list[tuple[str, Any]]:
    if isinstance(value, (tuple, list)):
        found: list[tuple[str, Any]] = []
        for i, item in enumerate(value):
            found += _walk(item, f"{where}[{i}]")
        return found
    if isinstance(value, Mapping):
        # which value is which output cannot be told: only a dict at the top level is keyed
        raise OutputError(f"{where} is a dict inside a tuple or list; return a dict keyed by "
                          "the config's output names at the top level, or tensors in order")
    return [(where, value)]


def describe(value: Any, depth: int = 0) -> str:
    """A short picture of a return value: ``tuple(tensor[4, 1], dict(a, b))``."""
    if depth > 3:
        return "..."
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (str, bytes)):
        return f"tensor[{', '.join(str(int(d)) for d in shape)}]"
    if isinstance(value, Mapping):
        return f"dict({_keys(value)})"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe(v, depth + 1) for v in list(value)[:8])
        more = ", ..." if len(value) > 8 else ""
        return f"{type(value).__name__}({inner}{more})"
    return type(value).__name__


def _keys(mapping: Mapping[Any, Any]) -> str:
    keys = [repr(k) for k in list(mapping)[:10]]
    return ", ".join(keys) + (", ..." if len(mapping) > 10 else "")


def check_rows(arrays: Sequence[Any], names: Sequence[str], rows: int) -> None:
    """With batching, every output's first dim must be the batch's rows: anything else
    cannot be split back into one answer per request (a static-batch program fed a larger
    batch answers one row and would hand the other requests nothing, or another's rows)."""
    for array, name in zip(arrays, names, strict=True):
        got = array.shape[0] if array.ndim else None
        if got != rows:
            raise OutputError(
                f"output {name!r} has shape {list(array.shape)} for a batch of {rows} row(s): "
                "with max_batch_size > 0 its first dim must be the batch")
