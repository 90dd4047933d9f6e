"""Warmth levels: loaded on the GPU, loaded on the CPU, staged in the page cache, or cold.

A model's level is where the plan puts it: the most valuable held models on the GPU while the
GPU budget lasts, the other held models on the CPU (a cheaper warm tier), models expected soon
but not worth holding *staged* -- their files read into the page cache so a load skips the
disk -- and the rest cold. Loading on a given device is Triton's ``instance_group`` in the
config override; staging reads the model's files (and evicting, for measurements, is
``posix_fadvise(DONTNEED)``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from controlplane.types import ModelConfigJson, ModelName


class Level(StrEnum):
    GPU = "gpu"
    CPU = "cpu"
    STAGED = "staged"
    COLD = "cold"


@dataclass(frozen=True)
class Placement:
    """Where the plan moved models away from their own ``instance_group`` kind, and why.

    Placement is data: a model absent from ``devices`` loads on what its config says.
    """

    devices: Mapping[ModelName, Level]
    #: model -> why it was moved (shown in the plan)
    why: Mapping[ModelName, str] = field(default_factory=dict)

    def device(self, model: ModelName) -> Level | None:
        """The level the plan chose for ``model``; None: as its config says."""
        return self.devices.get(model)


def place(held: Iterable[tuple[ModelName, float, float]], gpu_budget_mb: float) -> Placement:
    """Keep GPU models on the GPU by value density while the budget lasts; move the rest to
    the CPU (a cheaper warm tier), each with its reason.

    ``held``: (model, memory MB, value density) of held models whose config asks for the GPU;
    models that ask for the CPU are never moved. Greedy by density, skipping models that do
    not fit rather than stopping, so smaller valuable models still get the GPU. A budget of 0
    means no GPU is known: nothing is moved (Triton decides, as it would without warmctl).
    """
    if gpu_budget_mb <= 0:
        return Placement({})
    devices: dict[ModelName, Level] = {}
    why: dict[ModelName, str] = {}
    left = gpu_budget_mb
    for name, memory, _ in sorted(held, key=lambda h: (-h[2], h[0])):
        if memory <= left:
            devices[name] = Level.GPU
            left -= max(memory, 0.0)
        else:
            devices[name] = Level.CPU
            why[name] = (f"moved to the CPU: needs {memory:.0f} MB of GPU memory, "
                         f"{left:.0f} MB of the {gpu_budget_mb:.0f} MB GPU budget left")
    return Placement(devices, why)


def own_level(instance_kind: str) -> Level | None:
    """The level a config asks for itself: GPU, CPU, or None (KIND_AUTO/KIND_MODEL: Triton's
    choice)."""
    return {"KIND_GPU": Level.GPU, "KIND_CPU": Level.CPU}.get(instance_kind)


def with_device(config: ModelConfigJson, level: Level) -> ModelConfigJson:
    """The config with every instance group on ``level``'s device (counts kept)."""
    kind = "KIND_GPU" if level is Level.GPU else "KIND_CPU"
    groups: list[dict[str, Any]] = [
        {**group, "kind": kind} for group in config.get("instance_group", [])
    ] or [{"kind": kind, "count": 1}]
    if level is not Level.GPU:
        for group in groups:
            group.pop("gpus", None)
    return {**config, "instance_group": groups}


def stage(files: Iterable[Path], chunk: int = 1 << 20) -> int:
    """Read ``files`` through, so they sit in the page cache; returns bytes read.

    Blocking (run it off the event loop). ``POSIX_FADV_WILLNEED`` alone started a readahead
    of under a tenth of a 95 MB file within half a second here, so the files are read.
    """
    total = 0
    for path in files:
        try:
            with path.open("rb", buffering=0) as fh:
                while block := fh.read(chunk):
                    total += len(block)
        except OSError:
            continue
    return total


def evict(files: Iterable[Path]) -> int:
    """Drop ``files`` from the page cache (what a cold machine has); returns bytes."""
    total = 0
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
            total += size
        finally:
            os.close(fd)
    return total


def resident_fraction(files: Iterable[Path]) -> float:
    """Share of the files' pages in the page cache now (mincore through mmap)."""
    import mmap

    cached = total = 0
    page = mmap.PAGESIZE
    for path in files:
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size == 0:
            continue
        pages = (size + page - 1) // page
        total += pages
        cached += _cached_pages(path, size, pages)
    return cached / total if total else 0.0


def _cached_pages(path: Path, size: int, pages: int) -> int:
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    prot_read, map_shared = 1, 1
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, prot_read, map_shared, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return 0
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(address, size, vec) != 0:
                return 0
            return sum(v & 1 for v in vec)
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)
