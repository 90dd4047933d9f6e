"""Build the example models' TorchScript weights with a fixed seed (nothing is downloaded).

    python model_repository/build_models.py [--repository DIR] [--force] [--quiet]

Writes ``<repository>/<model>/1/model.pt`` for each model below; config.pbtxt files are
committed beside them. Existing weights are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

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


#: name -> (builder, approximate share of traffic in the example scenario)
MODELS: dict[str, Callable[[], nn.Module]] = {
    "shortform_ranker": lambda: BagRanker(100_000, 64, 32, (256, 128)),
    "longform_ranker": lambda: SequenceRanker(200_000, 64, 32),
    "premium_ranker": lambda: BagRanker(300_000, 64, 64, (2048, 2048)),
    "query_encoder": lambda: QueryEncoder(30_000, 64, 2),
    "thumbnail_scorer": ThumbnailScorer,
}


def build(repository: Path, name: str, force: bool = False) -> Path:
    target = repository / name / "1" / "model.pt"
    if target.exists() and not force:
        return target
    # One seed per model, so adding a model never changes another's weights.
    torch.manual_seed(SEED + sorted(MODELS).index(name))
    module = MODELS[name]().eval()
    scripted = torch.jit.script(module)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    scripted.save(str(tmp))
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("models", nargs="*", default=sorted(MODELS))
    args = parser.parse_args(argv)
    for name in args.models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
        path = build(args.repository, name, force=args.force)
        if not args.quiet:
            print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
