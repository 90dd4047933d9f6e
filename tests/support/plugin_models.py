"""Small torch models for the plugin's safety tests, built at test time (seeded: the test
compares the served values with the same eager module)."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

VOCAB = 100


class IdRanker(nn.Module):
    """Embedding(VOCAB, 4) -> mean -> Linear: an id >= VOCAB raises IndexError."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.emb = nn.Embedding(VOCAB, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, ids: Tensor) -> Tensor:
        return self.out(self.emb(ids).mean(dim=1))


class TwoHeads(nn.Module):
    """Returns a dict, keys in another order than the config's outputs; a row summing over
    1e6 raises (a model's own check, in TorchScript)."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if bool((x.sum(dim=1) > 1e6).any()):
            raise ValueError("feature sum over 1e6")
        return {"doubled": x * 2, "total": x.sum(dim=1, keepdim=True)}


class Nested(nn.Module):
    """Returns nested tuples: (x + 1, (x * 3, x.max over the row))."""

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return x + 1, (x * 3, x.amax(dim=1, keepdim=True))


class Picker(nn.Module):
    """Each row's first value picks the column to answer: a value of 3 or more fails inside
    the TorchScript interpreter (torch.gather's bounds check), with the serialized code."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.gather(x, 1, x[:, :1].long())


def config(name: str, inputs: str, outputs: str, *, max_batch_size: int = 8,
           delay_us: int | None = None, params: dict[str, str] | None = None) -> str:
    batching = "" if delay_us is None else \
        f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"
    parameters = "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
                         for k, v in (params or {}).items())
    return textwrap.dedent(f'''
        name: "{name}"
        backend: "torchscript"
        max_batch_size: {max_batch_size}
        input [ {inputs} ]
        output [ {outputs} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
    ''') + batching + parameters


IDS_IN = '{ name: "ids" data_type: TYPE_INT64 dims: [ 4 ] }'
SCORE_OUT = '{ name: "score" data_type: TYPE_FP32 dims: [ 1 ] }'
X_IN = '{ name: "x" data_type: TYPE_FP32 dims: [ 3 ] }'


def add_model(repo: Path, name: str, module: nn.Module, config_text: str, *,
              fmt: str = "torchscript", example: tuple[Tensor, ...] | None = None,
              dynamic: dict[str, dict[int, object]] | None = None) -> Path:
    """``repo/name`` with ``config_text`` and ``module`` saved as TorchScript (model.pt),
    an ExportedProgram or an AOTInductor package (model.pt2, exported from ``example``
    with ``dynamic`` shapes: None exports every size as it is in the example)."""
    folder = repo / name / "1"
    folder.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config_text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 deprecates TorchScript
        if fmt == "torchscript":
            torch.jit.script(module.eval()).save(str(folder / "model.pt"))
            return repo / name
        assert example is not None
        program = torch.export.export(module.eval(), example, dynamic_shapes=dynamic)
        if fmt == "exported_program":
            torch.export.save(program, str(folder / "model.pt2"))
        else:
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(folder / "model.pt2"))
    return repo / name
