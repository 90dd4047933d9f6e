"""Ready means warm: after Triton reports a model ready, probe it until latency settles.

Probes go straight to Triton (not through the gateway, so they never count as usage), with
the shapes and data of the warm-up config that was applied, most frequent shape first.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import aio as triton_aio
from tritonclient.utils import InferenceServerException

from controlplane.config import ProbeOptions
from controlplane.triton.client import TritonClient
from controlplane.triton.repository import ModelSpec
from controlplane.warmup.batch_stats import BatchStatsTracker, warmup_figures
from controlplane.warmup.configs import StoredWarmup
from controlplane.warmup.preparer import WarmupPreparer

_NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
          "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


def _bytes_elements(raw: bytes) -> list[bytes]:
    """Triton's TYPE_STRING file layout: 4-byte little-endian length, then the bytes."""
    items, pos = [], 0
    while pos < len(raw):
        size = int.from_bytes(raw[pos:pos + 4], "little")
        items.append(raw[pos + 4:pos + 4 + size])
        pos += 4 + size
    return items


def probe_inputs(stored: StoredWarmup, spec: ModelSpec,
                 limit: int) -> list[list[grpcclient.InferInput]]:
    """One request per warm-up sample (its full batch), filled like the sample."""
    requests = []
    for sample in stored.samples[:limit]:
        batch = int(sample.get("batch_size", 1))
        inputs = []
        for name, entry in sample["inputs"].items():
            dims = [int(d) for d in entry["dims"]]
            datatype = "BYTES" if entry["data_type"] == "TYPE_STRING" else entry[
                "data_type"].removeprefix("TYPE_")
            shape = [max(batch, 1), *dims] if spec.max_batch_size > 0 else dims
            array: np.ndarray[Any, Any]
            element: np.ndarray[Any, Any]
            if "input_data_file" in entry:
                raw = stored.files[f"warmup/{entry['input_data_file']}"]
                if datatype == "BYTES":
                    element = np.array(_bytes_elements(raw), dtype=np.object_).reshape(dims)
                else:
                    element = np.frombuffer(raw, dtype=_NUMPY[datatype]).reshape(dims)
                array = np.broadcast_to(element, shape).copy()
            elif datatype == "BYTES":
                array = np.full(shape, b"", dtype=np.object_)
            else:
                array = np.zeros(shape, dtype=_NUMPY[datatype])
            tensor = grpcclient.InferInput(name, shape, datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        requests.append(inputs)
    return requests


def expected_warmup_executions(stored: StoredWarmup | None, spec: ModelSpec) -> int:
    """Executions Triton runs for the applied warm-up: each sample ``count`` times (0 means
    once), on every model instance."""
    if stored is None:
        return 0
    return spec.instance_count * sum(max(1, int(s.get("count", 0))) for s in stored.samples)


def settled(latencies: list[float], window: int, tolerance: float) -> bool:
    """The last ``window`` latencies all lie within ``tolerance`` of their median."""
    if len(latencies) < window:
        return False
    last = latencies[-window:]
    mid = statistics.median(last)
    return all(abs(x - mid) <= tolerance * mid for x in last)


class WarmupProbe:
    """The lifecycle's ReadinessProbe."""

    def __init__(self, *, preparer: WarmupPreparer, client: TritonClient,
                 options: ProbeOptions, batch_stats: BatchStatsTracker) -> None:
        self.preparer = preparer
        self.client = client
        self.options = options
        self.batch_stats = batch_stats
        self._aio: triton_aio.InferenceServerClient | None = None

    async def close(self) -> None:
        if self._aio is not None:
            await self._aio.close()
            self._aio = None

    async def probe(self, spec: ModelSpec) -> dict[str, Any]:
        stored = self.preparer.applied.get(spec.name)
        figures: dict[str, Any] = warmup_figures(await self.batch_stats.settled_statistics(
            spec.name, expected=expected_warmup_executions(stored, spec)))
        requests = probe_inputs(stored, spec, self.options.shapes) if stored else []
        if requests and self.options.max_probes:
            figures.update(await self._probe(spec.name, requests))
        # probes and warm-up are not traffic; probes run one at a time, one execution each
        await self.batch_stats.reset(spec.name, expected=figures["warmup_executions"]
                                     + figures.get("probe_count", 0))
        return figures

    async def _probe(self, model: str, requests: list[list[grpcclient.InferInput]]
                     ) -> dict[str, Any]:
        if self._aio is None:
            self._aio = triton_aio.InferenceServerClient(self.client.url)
        o = self.options
        latencies: list[list[float]] = [[] for _ in requests]
        first: float | None = None
        count, error = 0, None
        t0 = time.perf_counter()
        while count < o.max_probes and time.perf_counter() - t0 < o.max_s and error is None:
            pending = [i for i, lat in enumerate(latencies)
                       if not settled(lat, o.window, o.tolerance)]
            if not pending:
                break
            for i in pending:
                start = time.perf_counter()
                try:
                    await self._aio.infer(model, requests[i],
                                          client_timeout=max(o.max_s, 1.0))
                except InferenceServerException as exc:
                    error = exc.message() or str(exc)
                    break
                elapsed = time.perf_counter() - start
                latencies[i].append(elapsed)
                first = elapsed if first is None else first
                count += 1
        top = latencies[0][-o.window:]
        return {
            "probe_count": count,
            "probe_s": time.perf_counter() - t0,
            "first_probe_ms": None if first is None else first * 1e3,
            "probe_latency_ms": statistics.median(top) * 1e3 if top else None,
            "probe_converged": error is None and all(
                settled(lat, o.window, o.tolerance) for lat in latencies),
            **({"probe_error": error} if error else {}),
        }
