"""A Python-backend model with numbered versions whose behaviour a version folder chooses.

Every version answers ``OUTPUT0`` = 2 x ``INPUT0`` and ``VERSION`` = its own number, after
``base_ms``; a version's ``kind`` file changes that: ``nan`` (a NaN in the output), ``slow``
(10x ``base_ms``), ``errors`` (fails requests whose input is above 5, one error object per
response: a shared one crashes Triton 2.51), ``disagree`` (outputs off by 0.5), ``refused``
(fails to initialize: Triton refuses the version's load). Each version
folder holds its own bytecode-compiled model, so that a reload that keeps a version does not
find it changed (the stub writes ``__pycache__`` into the folder on first import otherwise).
"""

from __future__ import annotations

import compileall
import textwrap
from pathlib import Path

_MODEL = textwrap.dedent('''
    import os, time
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            here = os.path.dirname(os.path.abspath(__file__))
            kind_file = os.path.join(here, "kind")
            self.kind = open(kind_file).read().strip() if os.path.exists(kind_file) else "good"
            self.version = float(args["model_version"])
            if self.kind == "refused":
                raise RuntimeError(f"version {args['model_version']} refuses to load")
            self.sleep_s = float(open(os.path.join(here, "base_ms")).read()) / 1e3
            if self.kind == "slow":
                self.sleep_s *= 10

        def execute(self, requests):
            responses = []
            for request in requests:
                time.sleep(self.sleep_s)
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                if self.kind == "errors" and float(x.max()) > 5.0:
                    responses.append(pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"value {float(x.max())} above 5")))
                    continue
                y = (x * 2).astype(np.float32)
                if self.kind == "nan":
                    y = y.copy()
                    y.flat[0] = np.nan
                elif self.kind == "disagree":
                    y = y + np.float32(0.5)
                v = np.full((x.shape[0], 1), self.version, dtype=np.float32)
                responses.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUTPUT0", y), pb_utils.Tensor("VERSION", v)]))
            return responses
''')


def versioned_config(name: str) -> str:
    return textwrap.dedent(f'''
        name: "{name}"
        backend: "python"
        max_batch_size: 8
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }},
                 {{ name: "VERSION" data_type: TYPE_FP32 dims: [ 1 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
    ''')


def add_version(repo: Path, name: str, version: str, kind: str = "good",
                base_ms: float = 2.0) -> Path:
    """Version ``version`` of ``name`` (the model's config written with its first)."""
    model_dir = repo / name
    folder = model_dir / version
    # built beside and moved in whole: a rollout that notices the folder never sees it half
    staging = model_dir / f".{version}.tmp"
    staging.mkdir(parents=True)
    (staging / "model.py").write_text(_MODEL)
    (staging / "base_ms").write_text(str(base_ms))
    if kind != "good":
        (staging / "kind").write_text(kind)
    compileall.compile_dir(str(staging), quiet=1)
    staging.rename(folder)
    if not (model_dir / "config.pbtxt").exists():
        (model_dir / "config.pbtxt").write_text(versioned_config(name))
    return folder
