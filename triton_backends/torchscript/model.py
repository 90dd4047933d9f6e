"""Triton Python-based backend ``torchscript``: serves PyTorch models in every format torch saves.

A model selects it with ``backend: "torchscript"`` and needs no model.py of its own. The version
folder's file decides the format (``warmctl_plugin/formats.py``): ``model.pt`` TorchScript,
``model.pt2`` an ExportedProgram (``torch.export.save``) or an AOTInductor package; an
ExportedProgram can be served under ``torch.compile`` with warmctl's compile cache
(``warmctl_plugin/compiled.py``). The name stays ``torchscript`` so existing configs keep
working. Inputs are passed to the model positionally in config order; outputs are taken in
config order from a tensor or a tuple or list of tensors. The device follows
``instance_group`` (KIND_GPU -> cuda:<id>).

Two things here exist for the control plane:

* True batching: Triton hands a dynamic batch -- and a warm-up sample of ``batch_size`` B --
  to ``execute`` as separate requests. Requests whose non-batch shapes agree are concatenated
  into one tensor, so warm-up and traffic exercise the batched shapes the model really runs.
* Custom metrics on Triton's /metrics, per instance: the load-time breakdown, resident memory,
  and a bounded count of request shapes (``warmctl_*`` families).

Config parameters (all optional): ``model_file`` (default model.pt, else model.pt2),
``model_format`` (torchscript, exported_program, aoti; default: from the file), ``torch_threads``
(intra-op threads per instance, default 1). One thread is the default because instances of
many models share few cores: with torch's default of one thread per core, any busy neighbour
stalls a parallel op at its barrier for a scheduler time slice (a batch-32 forward of the
short-form ranker took 24 ms instead of 0.15 ms on 2 shared cores). Raise it for a model
that owns its cores. torch.compile's parameters: see ``warmctl_plugin/compiled.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from warmctl_plugin import cache, compiled, formats
from warmctl_plugin.metrics import Metrics

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

        self.metrics = Metrics({
            "model": args["model_name"],
            "version": args["model_version"],
            # not "instance": Prometheus sets that to the scrape target of Triton's /metrics
            "model_instance": args["model_instance_name"],
        })
        self.metrics.phase("import", t_import)
        try:
            path, fmt = formats.locate(
                os.path.join(args["model_repository"], args["model_version"]), params)
            compile_opts = compiled.options(params)
        except (formats.FormatError, ValueError) as exc:
            raise pb_utils.TritonModelException(str(exc)) from None
        if compile_opts is not None and fmt != "exported_program":
            raise pb_utils.TritonModelException(
                f"torch_compile needs an ExportedProgram (torch.export.save); {path} is {fmt}")
        t1 = time.perf_counter()
        try:
            loaded = formats.load(path, fmt, torch, self.device)
        except formats.FormatError as exc:
            raise pb_utils.TritonModelException(str(exc)) from None
        t2 = time.perf_counter()
        loaded.to(self.device, fmt)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t3 = time.perf_counter()
        self.module = loaded.module
        self.format = fmt
        self.metrics.phase("read_weights", t2 - t1)
        self.metrics.phase("to_device", t3 - t2)
        self.compiled: compiled.CompiledModule | None = None
        if compile_opts is not None:
            entry = cache.CompileCache(
                os.environ.get(cache.ENV_DIR) or None, args["model_name"],
                cache.key_fields(torch, self.device, path, compile_opts))
            self.compiled = compiled.CompiledModule(
                torch, loaded.module, compile_opts, entry, self.metrics)
            try:
                self.compiled.prepare(loaded.example_inputs)
            except compiled.CompileError as exc:
                self.compiled.close()
                raise pb_utils.TritonModelException(str(exc)) from None
            self.module = self.compiled
        self.metrics.phase("initialize", time.perf_counter() - t0)
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
        if self.compiled is not None:
            self.compiled.save()  # new graphs (warm-up, a new traffic shape) join the cache
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
            out = (out,)  # TorchScript and ExportedProgram return a tensor; AOTI returns a list
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
        if self.compiled is not None:
            self.compiled.close()
        self.module = self.compiled = None
