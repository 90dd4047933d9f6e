"""Small Python-backend models of the kinds Triton serves (no torch unless said), for the
model-kind tests: each is written for its test, after the cases in shared/cases."""

from __future__ import annotations

import textwrap
from pathlib import Path

#: answers ``y = x + 1`` (FP32 [4]): the ensemble's steps
_PLUS_ONE = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() + 1)]) for r in requests]
'''

#: a running sum per correlation id, reset by START (sequence_batching)
_RUNNING_SUM = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
            start = int(pb_utils.get_input_tensor_by_name(r, "START").as_numpy().flat[0])
            corrid = int(pb_utils.get_input_tensor_by_name(r, "CORRID").as_numpy().flat[0])
            if not start and corrid not in self.sums:
                out.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"sequence {corrid} was never started")))
                continue
            self.sums[corrid] = (0 if start else self.sums[corrid]) + float(x.sum())
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor(
                "sum", np.full((x.shape[0], 1), self.sums[corrid], np.float32))]))
        return out
'''

#: 1-based category ids (0 and > 50 are errors), a score per row
_CATEGORIES = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            ids = pb_utils.get_input_tensor_by_name(r, "category").as_numpy()
            if ids.min() < 1 or ids.max() > 50:
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"unknown category id {int(ids.min())}")))
                continue
            score = (ids.astype(np.float32) * 0.01).sum(axis=1, keepdims=True)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("score", score)]))
        return out
'''

#: fails an execute of more than 4 rows in all (a host smaller than max_batch_size says)
_FOUR_ROWS = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        rows = sum(pb_utils.get_input_tensor_by_name(r, "x").as_numpy().shape[0]
                   for r in requests)
        if rows > 4:
            raise pb_utils.TritonModelException(f"out of memory: {rows} rows > 4")
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]) for r in requests]
'''

#: ``y`` = per request the sum of ``x`` as float32, whatever x's datatype and rank;
#: BF16 read through DLPack (numpy has no bfloat16), only then importing torch
_SUM = '''
import numpy as np
import triton_python_backend_utils as pb_utils

def values(tensor):
    try:
        return tensor.as_numpy().astype(np.float32)
    except Exception:
        import torch
        return torch.utils.dlpack.from_dlpack(tensor.to_dlpack()).to(torch.float32).numpy()

class TritonPythonModel:
    def initialize(self, args):
        import json
        self.batching = json.loads(args["model_config"])["max_batch_size"] > 0

    def execute(self, requests):
        out = []
        for r in requests:
            x = values(pb_utils.get_input_tensor_by_name(r, "x"))
            if self.batching:
                y = x.reshape(x.shape[0], -1).sum(axis=1, keepdims=True)
            else:
                y = np.array([x.sum()], np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y.astype(np.float32))]))
        return out
'''

#: BYTES in, the length of each string out
_LENGTHS = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            words = pb_utils.get_input_tensor_by_name(r, "words").as_numpy()
            n = np.array([[len(w) for w in row] for row in words], np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("n", n)]))
        return out
'''

#: inputs from auto_complete_config: y = 2 x (FP32 [4])
_AUTO = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        config.add_input({"name": "x", "data_type": "TYPE_FP32", "dims": [4]})
        config.add_output({"name": "y", "data_type": "TYPE_FP32", "dims": [4]})
        return config

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() * 2)]) for r in requests]
'''

#: answers each request alone, but fails an execute that holds several: Triton's warm-up of
#: batch N hands it N requests at once, where a probe of batch N is one request
_ONE_AT_A_TIME = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        if len(requests) > 1:
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"{len(requests)} requests in one execute")) for _ in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]) for r in requests]
'''

#: ``y`` = sum of ``x``, plus sum of the optional ``mask`` when the request has one
_OPTIONAL = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
            y = x.sum(axis=1, keepdims=True)
            mask = pb_utils.get_input_tensor_by_name(r, "mask")
            if mask is not None:
                y = y + mask.as_numpy().sum(axis=1, keepdims=True)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y.astype(np.float32))]))
        return out
'''

SOURCES = {"optional": _OPTIONAL, "one_at_a_time": _ONE_AT_A_TIME, "plus_one": _PLUS_ONE,
           "running_sum": _RUNNING_SUM, "categories": _CATEGORIES, "four_rows": _FOUR_ROWS,
           "sum": _SUM, "lengths": _LENGTHS, "auto": _AUTO}


def add_model(repo: Path, name: str, source: str | None, config: str) -> Path:
    """``<repo>/<name>`` with config.pbtxt (``name`` filled in) and ``1/model.py`` from
    :data:`SOURCES` (none for an ensemble)."""
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    if source is not None:
        (model_dir / "1" / "model.py").write_text(SOURCES[source])
    (model_dir / "config.pbtxt").write_text(
        f'name: "{name}"\n' + textwrap.dedent(config).strip() + "\n")
    return model_dir


def add_ensemble(repo: Path, name: str) -> None:
    """``name`` = plus_one -> plus_one (models ``<name>_pre`` and ``<name>_post``)."""
    for step in ("pre", "post"):
        add_model(repo, f"{name}_{step}", "plus_one", '''
            backend: "python"
            max_batch_size: 8
            input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
            output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
            dynamic_batching { }
            instance_group [ { kind: KIND_CPU count: 1 } ]''')
    add_model(repo, name, None, f'''
        platform: "ensemble"
        max_batch_size: 8
        input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "z" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        ensemble_scheduling {{ step [
          {{ model_name: "{name}_pre" model_version: -1
             input_map {{ key: "x" value: "x" }} output_map {{ key: "y" value: "mid" }} }},
          {{ model_name: "{name}_post" model_version: -1
             input_map {{ key: "x" value: "mid" }} output_map {{ key: "y" value: "z" }} }}
        ] }}''')


def add_sequence(repo: Path, name: str) -> None:
    add_model(repo, name, "running_sum", '''
        backend: "python"
        max_batch_size: 4
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
        output [ { name: "sum" data_type: TYPE_FP32 dims: [ 1 ] } ]
        sequence_batching {
          max_sequence_idle_microseconds: 5000000
          control_input [
            { name: "START" control [ { kind: CONTROL_SEQUENCE_START
                                        int32_false_true: [ 0, 1 ] } ] },
            { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID
                                         data_type: TYPE_UINT64 } ] }
          ]
        }
        instance_group [ { kind: KIND_CPU count: 1 } ]''')


def add_categories(repo: Path, name: str, *, max_batch_size: int = 8) -> None:
    add_model(repo, name, "categories", f'''
        backend: "python"
        max_batch_size: {max_batch_size}
        input [ {{ name: "category" data_type: TYPE_INT64 dims: [ 4 ] }} ]
        output [ {{ name: "score" data_type: TYPE_FP32 dims: [ 1 ] }} ]
        dynamic_batching {{ }}
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]''')


def add_sum(repo: Path, name: str, datatype: str, dims: str, *, max_batch_size: int = 8,
            extra: str = "") -> None:
    """``y`` = sum of ``x`` per request (``[1]``, batched when max_batch_size > 0)."""
    add_model(repo, name, "sum", f'''
        backend: "python"
        max_batch_size: {max_batch_size}
        input [ {{ name: "x" data_type: TYPE_{datatype} dims: [ {dims} ] {extra} }} ]
        output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]''')
