"""Runs NVIDIA's perf_analyzer (shipped in the tritonclient 2.51 wheel) and reads its CSV."""

from __future__ import annotations

import asyncio
import csv
import glob
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PerfResult:
    concurrency: int
    throughput: float
    p50_us: float
    p99_us: float


def _library_dir() -> Path:
    """perf_analyzer wants libb64.so.0d and libcudart.so.12: link them from the pytriton wheel."""
    import pytriton

    libs = Path(pytriton.__file__).resolve().parents[1] / "nvidia_pytriton.libs"
    target = Path(tempfile.gettempdir()) / "warmctl-perf-libs"
    target.mkdir(exist_ok=True)
    for pattern, name in (("libb64-*.so.0d", "libb64.so.0d"),
                          ("libcudart-*.so.12*", "libcudart.so.12")):
        link = target / name
        if not link.exists():
            link.symlink_to(glob.glob(str(libs / pattern))[0])
    return target


async def perf_analyzer(url: str, model: str, concurrency: int, shapes: dict[str, str],
                        interval_ms: int = 2000, protocol: str = "grpc") -> PerfResult:
    """One perf_analyzer run; ``protocol`` "grpc" or "http" (``url``: host:port either way)."""
    binary = Path(sys.executable).parent / "perf_analyzer"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.csv"
        args = [str(binary), "-m", model, "-u", url.removeprefix("http://"), "-i", protocol,
                "--concurrency-range", str(concurrency), "--measurement-interval",
                str(interval_ms), "--max-trials", "20", "--stability-percentage", "25",
                "--input-data", "zero",
                "-f", str(report)]
        for name, dims in shapes.items():
            args += ["--shape", f"{name}:{dims}"]
        env = {**os.environ, "LD_LIBRARY_PATH": str(_library_dir())}
        # asynchronous: the gateway under test may live in this very event loop
        process = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"perf_analyzer failed:\n{output.decode()[-2000:]}")
        with report.open() as fh:
            row = next(csv.DictReader(fh))
    return PerfResult(concurrency, float(row["Inferences/Second"]), float(row["p50 latency"]),
                      float(row["p99 latency"]))
