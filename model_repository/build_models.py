"""Build the example models' weights with a fixed seed (nothing is downloaded).

    python model_repository/build_models.py [--repository DIR] [--force] [--quiet]
                                            [--device cpu|cuda] [MODEL ...]

Writes ``<repository>/<model>/1/model.pt`` (TorchScript) or ``model.pt2`` (an ExportedProgram,
or an AOTInductor package) for each model below; config.pbtxt files are committed beside them.
Dynamic dims at export are read from the config (the batch dim and every ``-1``), so they
match what Triton sends; every exported model is checked against its eager module at the
smallest and largest batch before it is written. AOTInductor packages are compiled for
``--device`` and need a C++ compiler (g++). Existing files are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from controlplane.triton.repository import ModelRepository

SEED = 20261122


def _mlp(*sizes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class BagRanker(nn.Module):
    """Mean of the user's history embeddings plus dense context features -> click score."""

    def __init__(self, vocab: int, dim: int, context: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.history = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.head = _mlp(dim + context, *hidden, 1)

    def forward(self, user_history: Tensor, context: Tensor) -> Tensor:
        pooled = self.history(user_history)
        return torch.sigmoid(self.head(torch.cat([pooled, context], dim=1)))


class SequenceRanker(nn.Module):
    """A transformer over a variable-length watch history plus context -> score."""

    def __init__(self, vocab: int, dim: int, context: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.encoder = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim,
                                                  batch_first=True)
        self.head = _mlp(dim + context, 128, 1)

    def forward(self, watch_history: Tensor, context: Tensor) -> Tensor:
        encoded = self.encoder(self.embed(watch_history))
        return torch.sigmoid(self.head(torch.cat([encoded.mean(dim=1), context], dim=1)))


class QueryEncoder(nn.Module):
    """Token ids of a search query (variable length) -> unit-norm embedding."""

    def __init__(self, vocab: int, dim: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, batch_first=True),
            num_layers=layers, enable_nested_tensor=False)
        self.project = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        pooled = self.encoder(self.embed(tokens)).mean(dim=1)
        return nn.functional.normalize(self.project(pooled), dim=1)


class ThumbnailScorer(nn.Module):
    """Precomputed image features -> thumbnail quality score."""

    def __init__(self) -> None:
        super().__init__()
        self.head = _mlp(256, 512, 256, 1)

    def forward(self, image_features: Tensor) -> Tensor:
        return torch.sigmoid(self.head(image_features))


class HistoryRanker(nn.Module):
    """Mean of a variable-length history's embeddings plus context -> score.

    Plain ``Embedding`` + mean rather than ``EmbeddingBag``: torch.export specializes an
    EmbeddingBag's 2-D input to batch >= 2, so the exported model would refuse batch 1.
    """

    def __init__(self, vocab: int, dim: int, context: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = _mlp(dim + context, 128, 64, 1)

    def forward(self, history: Tensor, context: Tensor) -> Tensor:
        pooled = self.embed(history).mean(dim=1)
        return torch.sigmoid(self.head(torch.cat([pooled, context], dim=1)))


class Example(NamedTuple):
    make: Callable[[], nn.Module]
    #: added to SEED: fixed per model, so adding a model never changes another's weights
    seed: int
    #: torchscript (model.pt), exported_program or aoti (model.pt2)
    format: str = "torchscript"


def _history_ranker() -> nn.Module:
    return HistoryRanker(50_000, 32, 16)


MODELS: dict[str, Example] = {
    "longform_ranker": Example(lambda: SequenceRanker(200_000, 64, 32), 0),
    "premium_ranker": Example(lambda: BagRanker(300_000, 64, 64, (2048, 2048)), 1),
    "query_encoder": Example(lambda: QueryEncoder(30_000, 64, 2), 2),
    "shortform_ranker": Example(lambda: BagRanker(100_000, 64, 32, (256, 128)), 3),
    "thumbnail_scorer": Example(ThumbnailScorer, 4),
    # One architecture in each newer format (same seed: the same weights), for comparing them.
    "history_ranker_export": Example(_history_ranker, 5, "exported_program"),
    "history_ranker_aoti": Example(_history_ranker, 5, "aoti"),
    "history_ranker_compiled": Example(_history_ranker, 5, "exported_program"),
}
#: example history length and batch for export (not 0 or 1: torch.export would specialize)
EXAMPLE_LEN, EXAMPLE_BATCH = 8, 4


def module(name: str) -> nn.Module:
    """The eager module of example ``name`` with its fixed weights."""
    torch.manual_seed(SEED + MODELS[name].seed)
    return MODELS[name].make().eval()


def target_path(repository: Path, name: str) -> Path:
    suffix = ".pt" if MODELS[name].format == "torchscript" else ".pt2"
    return repository / name / "1" / f"model{suffix}"


def build(repository: Path, name: str, force: bool = False, device: str = "cpu",
          config_dir: Path | None = None) -> Path:
    """Write example ``name`` under ``repository``; its config.pbtxt is read from
    ``config_dir`` (default: this folder) to declare the dynamic dims."""
    target = target_path(repository, name)
    if target.exists() and not force:
        return target
    example = MODELS[name]
    eager = module(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.tmp{target.suffix}")  # AOTI insists on .pt2
    if example.format == "torchscript":
        torch.jit.script(eager).save(str(tmp))
    else:
        _export(eager, name, example.format, tmp, device, config_dir or Path(__file__).parent)
    tmp.replace(target)
    return target


def sample_inputs(name: str, batch: int, length: int, config_dir: Path | None = None,
                  device: str = "cpu") -> tuple[Tensor, ...]:
    """Valid inputs for ``name`` (ids within the config's input_range), ``-1`` dims = length."""
    spec = ModelRepository(config_dir or Path(__file__).parent).spec(name)
    args: list[Tensor] = []
    for t in spec.inputs:
        dims = [length if d == -1 else d for d in t.dims]
        if t.datatype == "INT64":
            high = int(spec.parameters[f"input_range.{t.name}"].split(":")[1])
            args.append(torch.randint(0, high, (batch, *dims), device=device))
        else:
            args.append(torch.randn(batch, *dims, device=device))
    return tuple(args)


def has_compiler() -> bool:
    """AOTInductor (at build) and torch.compile on CPU (where Triton runs) compile C++."""
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def _export(eager: nn.Module, name: str, fmt: str, tmp: Path, device: str,
            config_dir: Path) -> None:
    spec = ModelRepository(config_dir).spec(name)
    batch = torch.export.Dim("batch", min=1, max=spec.max_batch_size)
    dynamic = {
        t.name: {0: batch, **{i + 1: torch.export.Dim(f"{t.name}_{i + 1}", min=1)
                              for i, d in enumerate(t.dims) if d == -1}}
        for t in spec.inputs}
    eager = eager.to(device)
    args = sample_inputs(name, EXAMPLE_BATCH, EXAMPLE_LEN, config_dir, device)
    program = torch.export.export(eager, args, dynamic_shapes=dynamic)
    if fmt == "aoti":
        if not has_compiler():
            raise SystemExit(f"{name}: AOTInductor needs a C++ compiler (install g++)")
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
        runner = torch._inductor.aoti_load_package(str(tmp))
    else:
        torch.export.save(program, str(tmp))
        runner = torch.export.load(str(tmp)).module()
    # The exported dims must really accept what the config lets Triton send.
    for b, length in ((1, 1), (spec.max_batch_size, EXAMPLE_LEN * 4)):
        check = sample_inputs(name, b, length, config_dir, device)
        with torch.inference_mode():
            want, got = eager(*check), runner(*check)
        got = got[0] if isinstance(got, (list, tuple)) else got
        if not torch.allclose(want, got, atol=1e-5, rtol=1e-4):
            tmp.unlink()
            raise SystemExit(f"{name}: the exported model differs from its eager module "
                             f"at batch {b}, length {length}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="device AOTInductor packages are compiled for")
    parser.add_argument("models", nargs="*", default=sorted(MODELS))
    args = parser.parse_args(argv)
    if args.quiet:
        # torch's export warns of its own deprecations (FutureWarning): noise in an install
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in args.models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
        if MODELS[name].format == "aoti" and not has_compiler():
            # Skipped, not failed: the rest still serves. Its tests fail saying why.
            print(f"{name}: skipped: AOTInductor needs a C++ compiler (g++); install one and "
                  "run this script again", file=sys.stderr)
            continue
        path = build(args.repository, name, force=args.force, device=args.device)
        if not args.quiet:
            print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
