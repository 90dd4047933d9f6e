"""Builds model repositories for tests: copies of example models plus purpose-built ones."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "model_repository"

# A plain Python-backend model (no torch import: loads in well under a second). Every
# initialize appends a line to the file named by parameter ``init_log``, so tests can count
# how many times Triton really loaded it; ``init_sleep_s`` and ``init_fail`` make it hang or
# fail on purpose; ``slow_executions`` makes its first N executions sleep ``slow_ms``, times
# ``slow_decay`` after each (a stand-in for a model whose latency settles after some runs);
# ``execute_fail`` makes every execution raise with that message (it loads, and serves nothing).
_IDENTITY_MODEL = textwrap.dedent('''
    import json, os, time
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            config = json.loads(args["model_config"])
            params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
            if params.get("init_log"):
                with open(params["init_log"], "a") as fh:
                    fh.write(f"{os.getpid()}\\n")
            time.sleep(float(params.get("init_sleep_s", "0")))
            if params.get("init_fail"):
                raise RuntimeError(params["init_fail"])
            self.slow_left = int(params.get("slow_executions", "0"))
            self.slow_s = float(params.get("slow_ms", "0")) / 1e3
            self.slow_decay = float(params.get("slow_decay", "1"))
            self.execute_fail = params.get("execute_fail")

        def execute(self, requests):
            if self.execute_fail:
                raise pb_utils.TritonModelException(self.execute_fail)
            if self.slow_left > 0:
                self.slow_left -= 1
                time.sleep(self.slow_s)
                self.slow_s *= self.slow_decay
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
            return responses
''')


def identity_config(name: str, **parameters: str) -> str:
    params = "\n".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
        for k, v in parameters.items())
    return textwrap.dedent(f'''
        name: "{name}"
        backend: "python"
        max_batch_size: 8
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
    ''') + params + "\n"


def add_identity(repo: Path, name: str, **parameters: str) -> Path:
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.py").write_text(_IDENTITY_MODEL)
    (model_dir / "config.pbtxt").write_text(identity_config(name, **parameters))
    return model_dir


def add_example(repo: Path, name: str) -> Path:
    """A copy of an example model; weights hard-linked (built first if missing)."""
    source = EXAMPLES / name
    weights = source / "1" / "model.pt"
    if not weights.exists():
        import subprocess
        import sys

        subprocess.run([sys.executable, str(EXAMPLES / "build_models.py"), "--quiet", name],
                       check=True)
    target = repo / name
    (target / "1").mkdir(parents=True)
    shutil.copy(source / "config.pbtxt", target / "config.pbtxt")
    try:
        os.link(weights, target / "1" / "model.pt")
    except OSError:
        shutil.copy(weights, target / "1" / "model.pt")
    return target


def add_triton_rejected(repo: Path, name: str) -> Path:
    """Parses as a ModelConfig, but Triton refuses it (preferred batch > max batch)."""
    model_dir = add_identity(repo, name)
    config = (model_dir / "config.pbtxt").read_text()
    (model_dir / "config.pbtxt").write_text(
        config + "dynamic_batching { preferred_batch_size: [ 64 ] }\n")
    return model_dir


def add_missing_weights(repo: Path, name: str) -> Path:
    """A torchscript-backend model whose weights file is missing: our plugin's initialize fails."""
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(textwrap.dedent(f'''
        name: "{name}"
        backend: "torchscript"
        max_batch_size: 4
        input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
    '''))
    return model_dir


_DECOUPLED_MODEL = textwrap.dedent('''
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        """Decoupled: answers a request of N values with N responses, one value each."""

        def execute(self, requests):
            for request in requests:
                sender = request.get_response_sender()
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                for value in x.reshape(-1):
                    out = pb_utils.Tensor("OUTPUT0", np.array([value], dtype=np.float32))
                    sender.send(pb_utils.InferenceResponse([out]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
''')


def add_decoupled(repo: Path, name: str) -> Path:
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text(_DECOUPLED_MODEL)
    (model_dir / "config.pbtxt").write_text(textwrap.dedent(f'''
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        model_transaction_policy {{ decoupled: true }}
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
    '''))
    return model_dir


def add_warmed_identity(repo: Path, name: str, *, batch_size: int, count: int) -> Path:
    """The identity model with a zero-data ``model_warmup`` that Triton runs at every load."""
    model_dir = add_identity(repo, name)
    config = model_dir / "config.pbtxt"
    config.write_text(config.read_text() + textwrap.dedent(f'''
        model_warmup [ {{
          name: "zeros"
          batch_size: {batch_size}
          count: {count}
          inputs {{ key: "INPUT0" value: {{ data_type: TYPE_FP32 dims: [ 4 ] zero_data: true }} }}
        }} ]
    '''))
    return model_dir
