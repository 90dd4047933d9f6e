"""Each model's active and target version, and the version pin every load carries.

Plain Triton loads a model's highest version folder (``version_policy`` latest 1): a folder
added while it runs would be served at the next load or restart, unverified. warmctl records
the version it serves (ModelMesh's vModel: ``active``, and the ``target`` of a rollout) and
pins every load to it with ``version_policy { specific { versions: [...] } }``: the active
version alone, or the active and the target together while a rollout runs (Triton serves
both; the gateway names one in every request, ``serving/versions.py``). A model whose own
config sets another version policy is left as it is: the operator chose.

The first load of a model records the highest version folder there is (what plain Triton
would serve) as active. A load Triton refuses with the target falls back to the active
version alone (``LoadPlan.fallback``), never to the model's plain config (which would serve
the highest folder: the target).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from controlplane.lifecycle.port import LoadPreparer
from controlplane.lifecycle.states import LoadPlan
from controlplane.store.rollouts import RolloutStore
from controlplane.triton.repository import ModelRepository, ModelSpec
from controlplane.types import ModelConfigJson, ModelName

log = logging.getLogger(__name__)

#: Triton's default policy, as its JSON config shows it when config.pbtxt sets it explicitly
DEFAULT_POLICY = {"latest": {"num_versions": 1}}


def pinned_config(config: ModelConfigJson, versions: list[str]) -> ModelConfigJson:
    """``config`` serving exactly ``versions``."""
    return {**config, "version_policy": {"specific": {"versions": [int(v) for v in versions]}}}


class ModelVersions:
    def __init__(self, store: RolloutStore, repository: ModelRepository) -> None:
        self.store = store
        self.repository = repository
        #: model -> (active, target)
        self.records: dict[ModelName, tuple[str, str | None]] = {}
        #: models a rollout is reloading now: their loads carry no file overrides (a load
        #: with files is a new model directory to Triton, which then re-creates the serving
        #: version's instances as well -- under traffic that crashed the Python backend)
        self.reloading: set[ModelName] = set()

    async def start(self) -> None:
        """Read the records (a restart keeps serving the versions it served)."""
        self.records = await self.store.versions()

    def managed(self, spec: ModelSpec) -> bool:
        """Whether warmctl pins this model's versions (its config sets no policy of its own,
        and it has numbered version folders)."""
        policy = spec.config.get("version_policy")
        return policy in (None, DEFAULT_POLICY) and bool(self._on_disk(spec.name))

    def active(self, model: ModelName) -> str | None:
        found = self.records.get(model)
        return None if found is None else found[0]

    def target(self, model: ModelName) -> str | None:
        found = self.records.get(model)
        return None if found is None else found[1]

    def newest_on_disk(self, model: ModelName) -> str | None:
        found = self._on_disk(model)
        return found[-1] if found else None

    def _on_disk(self, model: ModelName) -> list[str]:
        try:
            return self.repository.versions(model)
        except OSError:
            return []

    async def set(self, model: ModelName, active: str, target: str | None) -> None:
        """Record ``model``'s versions (durable before it returns; StoreUnavailable)."""
        await self.store.set_versions(model, active, target)
        self.records[model] = (active, target)

    async def pin(self, spec: ModelSpec) -> tuple[list[str], str] | None:
        """The versions a load of ``spec`` serves, and the active one; None: unmanaged."""
        if not self.managed(spec):
            return None
        found = self.records.get(spec.name)
        on_disk = self._on_disk(spec.name)
        if found is None or found[0] not in on_disk:
            # first load (or the active folder went away): what plain Triton would serve
            active = on_disk[-1]
            await self.set(spec.name, active, None)
            return [active], active
        active, target = found
        versions = [active] if target is None or target not in on_disk else [active, target]
        return versions, active


class VersionPreparer:
    """A load preparer around another (warm-up, placement): adds the version pin."""

    def __init__(self, inner: LoadPreparer | None, versions: ModelVersions) -> None:
        self.inner = inner
        self.versions = versions

    async def prepare(self, spec: ModelSpec) -> LoadPlan:
        plan = await self.inner.prepare(spec) if self.inner is not None else LoadPlan()
        try:
            pinned = await self.versions.pin(spec)
        except Exception as exc:  # a store that cannot answer: load as the rest planned
            log.warning("versions of %s not pinned: %s", spec.name, exc)
            return plan
        if spec.name in self.versions.reloading:
            plan = without_files(plan)
        if pinned is None:
            return plan
        versions, active = pinned
        if versions == [self.versions.newest_on_disk(spec.name)]:
            # what plain Triton serves anyway: no override of ours (a load that fails is
            # then not tried twice, and a model without other additions loads plain)
            return plan
        config = pinned_config(plan.config or dict(spec.config), versions)
        return replace(plan, config=config,
                       fallback=pinned_config(dict(spec.config), [active]),
                       details={**(plan.details or {}), "versions_pinned": versions})


def without_files(plan: LoadPlan) -> LoadPlan:
    """``plan`` with no file overrides: the warm-up samples that read a data file left out
    (the others stay in the config)."""
    if plan.files is None:
        return plan
    config = plan.config
    if config is not None and "model_warmup" in config:
        kept = [w for w in config["model_warmup"]
                if not any("input_data_file" in i for i in w.get("inputs", {}).values())]
        config = {**config, "model_warmup": kept}
    return replace(plan, config=config, files=None,
                   details={**(plan.details or {}), "warmup_files": "left out: a rollout's "
                            "reload keeps the serving version's instances"})
