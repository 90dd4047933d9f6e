"""Triton Python-based backend ``torchscript``: serves ``<version>/model.pt`` TorchScript modules.

A model selects it with ``backend: "torchscript"`` and needs no model.py of its own. Inputs are
passed to ``forward`` positionally in config order; outputs are taken in config order from a
tensor or a tuple of tensors. The device follows ``instance_group`` (KIND_GPU -> cuda:<id>).

Two things here exist for the control plane:

* True batching: Triton hands a dynamic batch -- and a warm-up sample of ``batch_size`` B --
  to ``execute`` as separate requests. Requests whose non-batch shapes agree are concatenated
  into one tensor, so warm-up and traffic exercise the batched shapes the model really runs.
* Custom metrics on Triton's /metrics, per instance: the load-time breakdown, resident memory,
  and a bounded count of request shapes (``warmctl_*`` families).

Config parameters (all optional): ``model_file`` (default model.pt), ``torch_threads``
(intra-op threads per instance, default 1). One thread is the default because instances of
many models share few cores: with torch's default of one thread per core, any busy neighbour
stalls a parallel op at its barrier for a scheduler time slice (a batch-32 forward of the
short-form ranker took 24 ms instead of 0.15 ms on 2 shared cores). Raise it for a model
that owns its cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings

import numpy as np
import triton_python_backend_utils as pb_utils

_MAX_SHAPES = 32
_RSS_REFRESH_S = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE")

_NUMPY_TYPES = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


class _Metrics:
    """The instance's warmctl_* metric series."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self._phase = pb_utils.MetricFamily(
            name="warmctl_load_phase_seconds",
            description="Model instance load time by phase (import, read_weights, to_device, "
            "first_execute, initialize)",
            kind=pb_utils.MetricFamily.GAUGE)
        self._memory = pb_utils.MetricFamily(
            name="warmctl_resident_bytes",
            description="Model instance memory: process RSS, CUDA allocated and reserved",
            kind=pb_utils.MetricFamily.GAUGE)
        self._shapes = pb_utils.MetricFamily(
            name="warmctl_request_shapes_total",
            description=f"Requests per input shape signature (first {_MAX_SHAPES}, then other)",
            kind=pb_utils.MetricFamily.COUNTER)
        self._series: dict[tuple[str, str], object] = {}

    def _get(self, family: object, key: str, value: str) -> object:
        series = self._series.get((key, value))
        if series is None:
            series = family.Metric(labels={**self.labels, key: value})  # type: ignore[attr-defined]
            self._series[(key, value)] = series
        return series

    def close(self) -> None:
        self._series.clear()
        del self._phase, self._memory, self._shapes

    def phase(self, name: str, seconds: float) -> None:
        self._get(self._phase, "phase", name).set(seconds)  # type: ignore[attr-defined]

    def memory(self, kind: str, value: int) -> None:
        self._get(self._memory, "kind", kind).set(value)  # type: ignore[attr-defined]

    def shape(self, signature: str, count: int) -> None:
        known = sum(1 for key, _ in self._series if key == "shape")
        if ("shape", signature) not in self._series and known >= _MAX_SHAPES:
            signature = "other"
        self._get(self._shapes, "shape", signature).increment(count)  # type: ignore[attr-defined]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        t0 = time.perf_counter()
        import torch  # the largest part of a cold load: paid again by every instance

        t_import = time.perf_counter() - t0
        self.torch = torch
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("torch_threads") or 1)
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # settable once per process, before use
            torch.set_num_interop_threads(threads)

        if args["model_instance_kind"] == "GPU":
            self.device = torch.device(f"cuda:{int(args['model_instance_device_id'])}")
        else:
            self.device = torch.device("cpu")
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [(i["name"], i["data_type"]) for i in config["input"]]
        self.outputs = [(o["name"], _NUMPY_TYPES[o["data_type"]]) for o in config["output"]]
        for name, dtype in self.inputs:
            if dtype not in _NUMPY_TYPES:
                raise pb_utils.TritonModelException(
                    f"input '{name}': {dtype} is not supported by the torchscript backend")

        path = os.path.join(
            args["model_repository"], args["model_version"], params.get("model_file", "model.pt"))
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"TorchScript file not found: {path}")
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript in favour of torch.export; it still loads.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(path, map_location="cpu")
        t2 = time.perf_counter()
        module = module.to(self.device).eval()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t3 = time.perf_counter()
        self.module = module

        self.metrics = _Metrics({
            "model": args["model_name"],
            "version": args["model_version"],
            "instance": args["model_instance_name"],
        })
        self.metrics.phase("import", t_import)
        self.metrics.phase("read_weights", t2 - t1)
        self.metrics.phase("to_device", t3 - t2)
        self.metrics.phase("initialize", t3 - t0)
        self._first_execute = True
        self._rss_at = 0.0
        self._report_memory(force=True)

    def _report_memory(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._rss_at < _RSS_REFRESH_S:
            return
        self._rss_at = now
        self.metrics.memory("rss", _rss_bytes())
        if self.device.type == "cuda":
            cuda = self.torch.cuda
            self.metrics.memory("cuda_allocated", int(cuda.memory_allocated(self.device)))
            self.metrics.memory("cuda_reserved", int(cuda.memory_reserved(self.device)))

    def execute(self, requests: list[object]) -> list[object]:
        t0 = time.perf_counter()
        arrays = [
            [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name, _ in self.inputs]
            for r in requests
        ]
        responses: list[object] = [None] * len(requests)
        for members in self._group(arrays):
            try:
                outputs = self._run([arrays[i] for i in members])
            except Exception as exc:  # one bad group must not fail the others
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            for i, tensors in zip(members, outputs, strict=True):
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        if self._first_execute:
            self._first_execute = False
            self.metrics.phase("first_execute", time.perf_counter() - t0)
        self._report_memory()
        return responses

    def _group(self, arrays: list[list[np.ndarray]]) -> list[list[int]]:
        """Split requests into groups that share one forward pass; count their shapes.

        With batching, requests whose dims after the batch dim agree are concatenated;
        without it, every request runs alone.
        """
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for i, tensors in enumerate(arrays):
            self.metrics.shape(";".join(
                f"{name}:{'x'.join(str(d) for d in t.shape)}"
                for (name, _), t in zip(self.inputs, tensors, strict=True)), 1)
            if self.batching:
                groups.setdefault(tuple(t.shape[1:] for t in tensors), []).append(i)
            else:
                groups[((i,),)] = [i]
        return list(groups.values())

    def _run(self, batch: list[list[np.ndarray]]) -> list[list[object]]:
        """Output tensors per request of ``batch`` (one group from ``_group``)."""
        with self.torch.inference_mode():
            if self.batching and len(batch) > 1:
                merged = self._forward([np.concatenate(col) for col in zip(*batch, strict=True)])
                ends = np.cumsum([tensors[0].shape[0] for tensors in batch])
                per_request = [
                    [out[end - len_:end] for out in merged]
                    for end, len_ in zip(ends, (t[0].shape[0] for t in batch), strict=True)]
            else:
                per_request = [self._forward(tensors) for tensors in batch]
        return [
            [pb_utils.Tensor(name, out) for (name, _), out in zip(self.outputs, outs, strict=True)]
            for outs in per_request]

    def _forward(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
        out = self.module(*tensors)
        if isinstance(out, torch.Tensor):
            out = (out,)
        if len(out) != len(self.outputs):
            raise ValueError(f"model returned {len(out)} outputs, config declares "
                             f"{len(self.outputs)}")
        return [
            t.detach().cpu().numpy().astype(dtype, copy=False)
            for t, (_, dtype) in zip(out, self.outputs, strict=True)]

    def finalize(self) -> None:
        # Dropping the metric objects removes their series from /metrics; otherwise an unloaded
        # model's memory would still be counted by anyone scraping them.
        self.metrics.close()
        self.module = None
