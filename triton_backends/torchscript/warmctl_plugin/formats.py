"""Which model file a version folder holds, in which format, and how to load it.

Formats, chosen by the files in ``<model>/<version>/`` unless the config says otherwise
(parameters ``model_file`` and ``model_format``):

* ``torchscript``: ``model.pt`` (``torch.jit.save``), as before.
* ``exported_program``: ``model.pt2`` written by ``torch.export.save``; runs the exported
  graph eagerly, or under ``torch.compile`` (see ``compiled.py``).
* ``aoti``: ``model.pt2`` written by ``torch._inductor.aoti_compile_and_package``: code
  compiled ahead of time for one device type (and CPU ISA), loaded with ``aoti_load_package``.

Both ``.pt2`` kinds are zip archives; they are told apart by their entries: an AOTInductor
package holds ``<archive>/data/aotinductor/...``, an ExportedProgram ``<archive>/models/*.json``.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

FORMATS = ("torchscript", "exported_program", "aoti")


class FormatError(Exception):
    """The version folder or the config does not say clearly what to load."""


@dataclass
class Loaded:
    #: called with the input tensors in config order; returns a tensor, tuple or list
    module: Any
    #: inputs saved with an ExportedProgram (``torch.export.export``'s args); None otherwise
    example_inputs: tuple[Any, ...] | None
    #: the pytree spec of what it returns (ExportedProgram, AOTInductor); None: unknown
    out_spec: Any = None
    #: the ExportedProgram (its input shapes are checked against the config: ``checks.py``)
    program: Any = None

    def to(self, device: Any, fmt: str) -> None:
        if fmt != "aoti":
            self.module = self.module.to(device)
        if self.example_inputs is not None:
            self.example_inputs = tuple(t.to(device) for t in self.example_inputs)


def locate(version_dir: str, params: dict[str, str]) -> tuple[str, str]:
    """``(path, format)`` of the model file in ``version_dir``.

    Raises FormatError with what was looked for when nothing (or nothing readable) is there.
    """
    fmt = params.get("model_format", "").strip().lower()
    if fmt and fmt not in FORMATS:
        raise FormatError(f"parameter model_format={fmt!r}: expected one of {', '.join(FORMATS)}")
    name = params.get("model_file", "").strip()
    if not name:
        # model.pt first: a folder that served TorchScript keeps doing so if a .pt2 appears.
        candidates = ["model.pt", "model.pt2"] if fmt != "exported_program" and fmt != "aoti" \
            else ["model.pt2"]
        found = [c for c in candidates if os.path.isfile(os.path.join(version_dir, c))]
        if not found:
            raise FormatError(f"no model file in {version_dir}: expected "
                              f"{' or '.join(candidates)} (or set parameter model_file)")
        name = found[0]
    path = os.path.join(version_dir, name)
    if not os.path.isfile(path):
        raise FormatError(f"model file not found: {path}")
    if not fmt:
        fmt = pt2_kind(path) if name.endswith(".pt2") else "torchscript"
    return path, fmt


def pt2_kind(path: str) -> str:
    """``aoti`` or ``exported_program``, from the archive's entries."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise FormatError(f"{path} is not a .pt2 archive: {exc}") from None
    if any("/data/aotinductor/" in n for n in names):
        return "aoti"
    if any("/models/" in n and n.endswith(".json") for n in names):
        return "exported_program"
    raise FormatError(f"{path} is neither an ExportedProgram (torch.export.save) nor an "
                      "AOTInductor package (aoti_compile_and_package); set model_format")


def aoti_target(path: str) -> dict[str, str]:
    """The device and CPU ISA an AOTInductor package was compiled for (empty if unknown)."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if "/data/aotinductor/" in name and name.endswith("wrapper_metadata.json"):
                meta: dict[str, str] = json.loads(archive.read(name))
                return meta
    return {}


def load(path: str, fmt: str, torch: Any, device: Any) -> Loaded:
    """Read the model: onto ``device`` for an AOTInductor package (its code is built for one
    device), onto the CPU otherwise (``Loaded.to`` moves it). Raises FormatError for a
    package built for another device or CPU; torch's own errors otherwise."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript in favour of torch.export; it still loads.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(path, map_location="cpu")
        return Loaded(module.eval(), None)
    if fmt == "exported_program":
        program = torch.export.load(path)
        # The graph was exported in eval mode: no train/eval switch is left to make.
        example = program.example_inputs[0] if program.example_inputs else None
        return Loaded(program.module(), tuple(example) if example else None,
                      program.call_spec.out_spec, program)
    if fmt == "aoti":
        _check_aoti_target(path, aoti_target(path), device, torch)
        index = device.index if device.type == "cuda" and device.index is not None else -1
        return Loaded(*_aoti_runner(path, torch, index))
    raise FormatError(f"unknown format {fmt!r}")


def _aoti_runner(path: str, torch: Any, device_index: int) -> tuple[Any, None, Any]:
    """A callable running the package, with its output spec. torch's C++ loader directly
    when the package takes plain positional tensors: ``aoti_load_package`` imports most of
    inductor first (5.5 s of a 5.6 s load here, against 0.02 s); the Python API for any other
    input structure. The loader answers a flat list: unflattened with the output spec, so a
    package returns a dict or a tuple as its exported program did."""
    from torch.utils import _pytree

    loader_class = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_class is not None:
        loader = loader_class(path, "model", False, 1, device_index)
        call_spec = loader.get_call_spec()
        out_spec = _pytree.treespec_loads(call_spec[1])
        in_spec = json.loads(call_spec[0])[1]
        args, kwargs = in_spec["children_spec"] if in_spec.get("type") == "builtins.tuple" \
            else (None, None)
        if (args is not None and kwargs is not None and kwargs.get("children_spec") == []
                and args.get("type") == "builtins.tuple"
                and all(c.get("type") is None for c in args["children_spec"])):
            return (lambda *tensors: _pytree.tree_unflatten(loader.boxed_run(list(tensors)),
                                                            out_spec)), None, out_spec
    runner = torch._inductor.aoti_load_package(path, device_index=device_index)
    loader = getattr(runner, "loader", None)
    out_spec = None if loader is None else _pytree.treespec_loads(loader.get_call_spec()[1])
    return runner, None, out_spec


def _check_aoti_target(path: str, meta: dict[str, str], device: Any, torch: Any) -> None:
    built_for = meta.get("AOTI_DEVICE_KEY", "")
    if built_for and built_for != device.type:
        raise FormatError(f"{path} was compiled for {built_for} but this instance runs on "
                          f"{device.type}: compile the package for {device.type} (or change "
                          "instance_group)")
    isa = meta.get("AOTI_CPU_ISA", "")
    host = str(torch.backends.cpu.get_cpu_capability())
    if device.type == "cpu" and isa.startswith("AVX512") and not host.startswith("AVX512"):
        # Running it would die on an illegal instruction, taking the stub with it.
        raise FormatError(f"{path} was compiled for {isa} CPUs; this CPU has {host}")
