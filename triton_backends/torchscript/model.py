"""Triton Python-based backend ``torchscript``: serves PyTorch models in every format torch saves.

A model selects it with ``backend: "torchscript"`` and needs no model.py of its own. The version
folder's file decides the format (``warmctl_plugin/formats.py``): ``model.pt`` TorchScript,
``model.pt2`` an ExportedProgram (``torch.export.save``) or an AOTInductor package; an
ExportedProgram can be served under ``torch.compile`` with warmctl's compile cache
(``warmctl_plugin/compiled.py``). The name stays ``torchscript`` so existing configs keep
working. Inputs are passed to the model positionally in config order; outputs are taken
from a tensor, a (nested) tuple or list of tensors in config order, or a dict keyed by output
name (``warmctl_plugin/outputs.py``). The device follows ``instance_group`` (KIND_GPU ->
cuda:<id>).

No request can take the server down. ``execute`` never raises, and answers every request
with its outputs or an error object of its own: one ``pb_utils.TritonError`` attached to
several responses segfaults tritonserver 2.51 (python_backend PR#268), taking every model on
it down. A batch whose forward pass fails is run again request by request, so one bad
request (an out-of-range id) fails alone, with the model's error text cleaned for the client
(``warmctl_plugin/errors.py``: no TorchScript code, no server paths, bounded) and logged in
full. At initialize the model is checked against its config (``warmctl_plugin/checks.py``):
outputs that cannot map fail the load; an exported program that takes fewer batch sizes than
``max_batch_size`` sends is served in pieces it accepts, with a warning saying how to export
it (why serve rather than refuse: see there).

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
import uuid

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from warmctl_plugin import cache, checks, compiled, errors, formats, outputs
from warmctl_plugin.metrics import Metrics

_RSS_REFRESH_S = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE")

_NUMPY_TYPES = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
}


def _log(level: str, message: str) -> None:
    """To Triton's log through the stub (stderr outside a stub, as in unit tests)."""
    logger = getattr(pb_utils, "Logger", None)
    if logger is None:
        print(f"[torchscript backend] {level}: {message}", file=sys.stderr, flush=True)
    else:
        getattr(logger, f"log_{level}")(message)


def _error_response(text: str) -> object:
    # A fresh TritonError per response, always: a shared one is freed with the first
    # response and read back as garbage (or a segfault) for the others.
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(text))


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
        for kind, specs in (("input", config["input"]), ("output", config["output"])):
            for spec in specs:
                if spec["data_type"] not in _NUMPY_TYPES:
                    raise pb_utils.TritonModelException(
                        f"{kind} '{spec['name']}': {spec['data_type']} is not supported by "
                        f"the torchscript backend ({', '.join(_NUMPY_TYPES)})")
        self.outputs = [(o["name"], _NUMPY_TYPES[o["data_type"]]) for o in config["output"]]
        self.output_names = [name for name, _ in self.outputs]
        self.failures = errors.LogLimiter()

        self.metrics = Metrics({
            "model": args["model_name"],
            "version": args["model_version"],
            # not "instance": Prometheus sets that to the scrape target of Triton's /metrics
            "model_instance": args["model_instance_name"],
            # A load of its own: a reload with a changed config (every version pin's) makes
            # Triton create the new instance beside the old one, with the same model, version
            # and instance name. With equal labels both got the one Prometheus series, which
            # the old instance's finalize freed under the new one: its next write corrupted
            # Triton's heap (SIGABRT "unaligned tcache chunk", 3 crashes in 11 rollouts).
            "load_id": uuid.uuid4().hex[:12],
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
        try:
            self.pieces, warnings = checks.check_loaded(
                loaded, fmt, path, config, params, torch, np, _NUMPY_TYPES, self.device)
        except (checks.CheckError, outputs.OutputError) as exc:
            raise pb_utils.TritonModelException(
                f"{os.path.basename(path)} does not fit its config: {exc}") from None
        for warning in warnings:
            _log("warn", f"{args['model_name']}: {warning}")
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
        responses: list[object | None] = [None] * len(requests)
        try:
            self._execute(requests, responses)
        except Exception as exc:  # a bug of ours: still one answer per request, never a raise
            _log("error", errors.log_text(exc, "torchscript backend: execute failed"))
            text = f"torchscript backend: {errors.client_text(exc)}"
            responses = [r if r is not None else _error_response(text) for r in responses]
        try:
            if self._first_execute:
                self._first_execute = False
                self.metrics.phase("first_execute", time.perf_counter() - t0)
            if self.compiled is not None:
                self.compiled.save()  # new graphs (warm-up, a new traffic shape) join the cache
            self._report_memory()
        except Exception as exc:  # bookkeeping must not fail requests that were answered
            _log("warn", errors.log_text(exc, "torchscript backend: after execute"))
        return responses

    def _execute(self, requests: list[object], responses: list[object | None]) -> None:
        arrays: dict[int, list[np.ndarray]] = {}
        for i, request in enumerate(requests):
            try:
                arrays[i] = [self._input(request, name) for name, _ in self.inputs]
            except Exception as exc:
                responses[i] = self._failed(exc)
        with self.torch.inference_mode():
            for members in self._group(arrays):
                answers = self._run_group([arrays[i] for i in members])
                for i, answer in zip(members, answers, strict=True):
                    responses[i] = answer

    @staticmethod
    def _input(request: object, name: str) -> np.ndarray:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"the request has no input '{name}'")
        return tensor.as_numpy()

    def _failed(self, exc: BaseException) -> object:
        text = errors.client_text(exc)
        if self.failures.allow():
            _log("error", errors.log_text(exc, f"request failed ({self.failures.note()})"))
        return _error_response(text)

    def _group(self, arrays: dict[int, list[np.ndarray]]) -> list[list[int]]:
        """Split requests into groups that share one forward pass; count their shapes.

        With batching, requests whose dims after the batch dim agree are concatenated;
        without it, every request runs alone.
        """
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for i, tensors in arrays.items():
            self.metrics.shape(";".join(
                f"{name}:{'x'.join(str(d) for d in t.shape)}"
                for (name, _), t in zip(self.inputs, tensors, strict=True)), 1)
            if self.batching:
                groups.setdefault(tuple(t.shape[1:] for t in tensors), []).append(i)
            else:
                groups[((i,),)] = [i]
        return list(groups.values())

    def _run_group(self, batch: list[list[np.ndarray]]) -> list[object]:
        """One response per request of ``batch`` (a group from ``_group``).

        The group runs as one forward pass; if that fails, request by request, so that only
        the request that caused it fails (Triton's own backends fail the whole batch).
        """
        if self.batching and len(batch) > 1:
            try:
                merged = self._rows([np.concatenate(col) for col in zip(*batch, strict=True)])
                ends = np.cumsum([tensors[0].shape[0] for tensors in batch])
                return [self._response([out[end - tensors[0].shape[0]:end] for out in merged])
                        for end, tensors in zip(ends, batch, strict=True)]
            except Exception as exc:
                if self.failures.allow():
                    _log("info", f"a batch of {len(batch)} requests failed "
                         f"({errors.client_text(exc, 200)}); running them one by one")
        answers = []
        for tensors in batch:
            try:
                outs = self._rows(tensors) if self.batching else self._forward(tensors, None)
                answers.append(self._response(outs))
            except Exception as exc:
                answers.append(self._failed(exc))
        return answers

    def _response(self, arrays: list[np.ndarray]) -> object:
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, out) for name, out in zip(self.output_names, arrays,
                                                             strict=True)])

    def _rows(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs for a batch of rows, in the pieces the model accepts (``checks.Pieces``)."""
        rows = int(arrays[0].shape[0])
        pieces = self.pieces
        if pieces is None or rows == 0 or pieces.low <= rows <= pieces.high:
            return self._forward(arrays, rows)
        parts = []
        for start, stop, padded in pieces.split(rows):
            piece = [a[start:stop] for a in arrays]
            if padded > stop - start:  # repeat the last row; its answers are dropped
                piece = [np.concatenate([p, np.repeat(p[-1:], padded - len(p), axis=0)])
                         for p in piece]
            parts.append([out[:stop - start] for out in self._forward(piece, padded)])
        return [np.concatenate(col) for col in zip(*parts, strict=True)]

    def _forward(self, arrays: list[np.ndarray], rows: int | None) -> list[np.ndarray]:
        """The model's outputs for ``arrays`` in config order; ``rows``: the batch, which
        every output's first dim must be (None without batching)."""
        torch = self.torch
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
        leaves = outputs.flatten(self.module(*tensors), self.output_names, torch.Tensor)
        result = []
        for t, (_, dtype) in zip(leaves, self.outputs, strict=True):
            t = t.detach()
            if t.dtype == torch.bfloat16:  # numpy has no bfloat16
                t = t.float()
            result.append(t.cpu().numpy().astype(dtype, copy=False))
        if rows is not None:
            outputs.check_rows(result, self.output_names, rows)
        return result

    def finalize(self) -> None:
        # Dropping the metric objects removes their series from /metrics; otherwise an unloaded
        # model's memory would still be counted by anyone scraping them.
        self.metrics.close()
        if self.compiled is not None:
            self.compiled.close()
        self.module = self.compiled = None
