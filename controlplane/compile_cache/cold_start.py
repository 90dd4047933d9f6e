"""What the next cold start of a torch.compile model costs: with its compiled code cached, or not.

A compiled model's load-to-ready depends on the cache: 2-4x longer when it must compile
afresh. The policy values a load by the model's last measured load-to-ready; for these models
that figure is wrong whenever the cache state changed since (the first load compiled and saved,
so the next one restores; a torch upgrade or a new model file makes the next one compile). So
the load-to-ready is kept per cache state, ``cached`` (a hit) and ``uncached`` (a miss, an
invalid entry), and the figure handed to the policy is the one of the state the next load will
be in: ``cached`` when the store has an entry for the model's current file, else ``uncached``.

The figures live beside the entries (``<cache>/<model>/cold_starts.json``), so they outlast a
restart and every control plane sharing the cache volume sees them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from controlplane.compile_cache.store import CompileCacheStore
from controlplane.types import ModelName

log = logging.getLogger(__name__)

_FILE = "cold_starts.json"
_STATES = {"hit": "cached", "miss": "uncached", "invalid": "uncached"}


class ColdStarts:
    def __init__(self, store: CompileCacheStore, repository_root: Path) -> None:
        self.store = store
        self.repository_root = repository_root
        self._measured: dict[ModelName, dict[str, float]] = {}
        #: model file -> ((size, mtime), sha256): a digest is read once per file change
        self._digests: dict[Path, tuple[tuple[int, float], str]] = {}

    async def observe(self, model: ModelName, load_s: float, details: dict[str, Any]) -> None:
        """A load finished (a manager ``after_load`` hook): keep its figure, bound the store."""
        cache = details.get("compile_cache")
        state = _STATES.get(str(cache.get("state"))) if isinstance(cache, dict) else None
        if state is None:
            return
        measured = self.measured(model)
        measured[state] = round(load_s, 3)
        path = self.store.root / model / _FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(measured))
            tmp.replace(path)
            self.store.prune()
        except OSError as exc:
            log.warning("compile cache of %s: cannot record its cold start: %s", model, exc)

    def measured(self, model: ModelName) -> dict[str, float]:
        """``{"cached": s, "uncached": s}`` as far as measured."""
        if model not in self._measured:
            try:
                loaded = json.loads((self.store.root / model / _FILE).read_text())
                self._measured[model] = {k: float(v) for k, v in loaded.items()
                                         if k in ("cached", "uncached")}
            except (OSError, ValueError, AttributeError):
                self._measured[model] = {}
        return self._measured[model]

    def cached(self, model: ModelName) -> bool:
        """Whether the store has an entry the next load of ``model`` can restore: one made
        from its current model file (any entry when that file cannot be found)."""
        entries = self.store.entries(model)
        if not entries:
            return False
        digest = self._model_digest(model)
        return digest is None or any(e.fields.get("model_sha256") == digest for e in entries)

    def expected_load_s(self, model: ModelName, last_load_s: float | None) -> float | None:
        """The load-to-ready to plan with: the measured one of the state the next load will
        be in; ``last_load_s`` for models that never compiled, or a state never measured."""
        measured = self.measured(model)
        if not measured:
            return last_load_s
        state = "cached" if self.cached(model) else "uncached"
        return measured.get(state, last_load_s)

    def _model_digest(self, model: ModelName) -> str | None:
        folder = self.repository_root / model
        versions = sorted((p for p in folder.iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name)) if folder.is_dir() else []
        path = versions[-1] / "model.pt2" if versions else None
        if path is None or not path.is_file():
            return None
        stat = os.stat(path)
        stamp = (stat.st_size, stat.st_mtime)
        known = self._digests.get(path)
        if known is None or known[0] != stamp:
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            known = self._digests[path] = (stamp, digest.hexdigest())
        return known[1]
