"""One load as Triton sees it: prepared, sent with our additions (plain when Triton refuses
them), probed and measured (footprint, versions); and why a load failed, in words.

The manager decides when to load, holds the model's lock and records the outcome; this
module talks to Triton through the port and to the preparer and probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from controlplane.errors import (
    ControlPlaneError,
    DeadlineExceeded,
    ModelLoadFailed,
    TritonUnavailable,
)
from controlplane.lifecycle.port import model_entries
from controlplane.lifecycle.recovery import fresh_instances
from controlplane.lifecycle.states import Cause, LoadPlan, ModelState, ready_versions
from controlplane.types import ModelName

if TYPE_CHECKING:
    from controlplane.lifecycle.managed import ManagedModel
    from controlplane.lifecycle.manager import ModelManager

log = logging.getLogger(__name__)

#: the first probe error as a model's reason quotes it (the load's details keep more)
_REASON_ERROR_CHARS = 200


@dataclass(frozen=True)
class BroughtUp:
    """What a successful load measured."""

    #: the Triton load call alone, seconds
    triton_s: float
    #: resident bytes the plugin reports; None: not measured
    memory_bytes: int | None
    #: the versions Triton serves now; None: its index could not be read
    versions: tuple[str, ...] | None


class Loads:
    """The Triton side of one manager's loads (the manager holds the model's lock)."""

    def __init__(self, manager: ModelManager) -> None:
        self.m = manager
        #: models whose last load with our additions ended with Triton gone (why): a second
        #: time in a row rejects the additions (``load``); bounded by the repository
        self.suspect: dict[ModelName, str] = {}

    async def bring_up(self, model: ManagedModel, details: dict[str, Any], *,
                       mark_warming: bool) -> BroughtUp:
        """Prepare, load in Triton, probe (``warming`` first if ``mark_warming``), measure.
        Fills ``details`` (the load record's) as it goes; raises what the load raised."""
        spec = self.m.repository.spec(model.name)
        if model.override is not None:
            # the operator's own config, as plain Triton would load it: no warm-up or
            # placement of ours, and no plain fallback (its failure is the operator's answer)
            plan = LoadPlan(config=model.override)
            details["config_override"] = ("the operator's config (RepositoryModelLoad); "
                                          "warmctl's additions off")
        else:
            plan = await self.m.preparer.prepare(spec) if self.m.preparer else LoadPlan()
            if model.reverting and plan.config is None:
                plan = replace(plan, config=dict(spec.config))
        details.update(plan.details or {})
        if model.stub_dead:  # the same config again would leave its dead stub in place
            plan = replace(plan, config=fresh_instances(plan.config or dict(spec.config)))
            details["stub_restart"] = True
        t_call = time.monotonic()
        if model.override is not None:
            await self.m.instance.load(model.name, config=plan.config,
                                       timeout_s=self.m.load_timeout_s)
        else:
            await self.load(model.name, plan, details)
        triton_s = details["triton_s"] = time.monotonic() - t_call
        model.reverting = False
        if self.m.probe is not None:
            if mark_warming:
                await self.m._set(model, ModelState.WARMING, "probing before routing traffic",
                                  cause=Cause.PROBE)
            details.update(await self.m.probe.probe(spec))
            if (warning := probes_all_failed(details)) is not None:
                log.warning("%s is loaded and serves, but %s", model.name, warning)
        footprint = await self.footprint(model.name)
        details.update(footprint)
        versions = await self.versions(model.name)
        if versions is not None:
            details["versions"] = list(versions)
        if model.state is ModelState.COLD:
            # Triton was seen down meanwhile (Recovery.down): what we loaded is gone with it,
            # and the restore once it is back loads the model again
            raise TritonUnavailable("Triton stopped serving during the load")
        return BroughtUp(triton_s, footprint.get("rss_bytes"), versions)

    async def load(self, name: ModelName, plan: LoadPlan, details: dict[str, Any]) -> None:
        """Load with ``plan``; if Triton refuses our additions, load the model plain.

        The rule: what plain Triton serves, warmctl serves. A plan with a config or files
        carries our additions (warm-up, placement); when Triton refuses it, the hooks mark
        them rejected with Triton's reason and the model loads from its own config.pbtxt.
        A Triton that died or timed out is not retried here: a timed-out load goes on in
        Triton, and a dead Triton is restored by its supervisor. Triton dying during a load
        with our additions makes them suspect; dying again during the next one (nothing
        loaded with them in between) rejects them, and the restore after it loads plain.
        """
        port, timeout_s = self.m.instance, self.m.load_timeout_s
        try:
            await port.load(name, config=plan.config, files=plan.files, timeout_s=timeout_s)
            self.suspect.pop(name, None)
            return
        except ModelLoadFailed as exc:
            if plan.config is None and plan.files is None:
                raise
            reason = self.reason(name, exc)
            failure: BaseException = exc
        except TritonUnavailable as exc:
            if plan.config is not None or plan.files is not None:
                reason = f"Triton became unavailable during a load with our additions: {exc}"
                if self.suspect.pop(name, None) is None:
                    # Once may be another's doing (a crash from elsewhere, from a model's
                    # own code): the additions are tried again at the next load. Twice in a
                    # row with nothing loaded in between is theirs: never applied again.
                    self.suspect[name] = reason
                    details["additions_suspect"] = reason
                    log.warning("%s: %s; tried once more at its next load, never again if "
                                "Triton goes down during that one too", name, reason)
                else:
                    await self._reject_additions(name, plan, f"{reason} (the second time in "
                                                            "a row)", details)
            raise
        if plan.fallback is None:
            await self._reject_additions(name, plan, reason, details)
        else:  # a version pin's load (a rollout's target): the version failed, not the
            # warm-up (which stays applicable); the fallback serves the active version
            details["target_refused"] = reason
        if plan.fallback is not None and plan.fallback == plan.config and plan.files is None:
            raise failure  # the fallback is what just failed: no second try
        log.warning("load of %s with warmctl's additions failed (%s); loading it %s",
                    name, reason, "plain" if plan.fallback is None else "with its fallback")
        try:
            await port.load(name, config=plan.fallback, timeout_s=timeout_s)
        except ModelLoadFailed as plain:
            raise ModelLoadFailed(name, f"{self.reason(name, plain)} (also with warmctl's "
                                        f"additions: {reason})") from failure
        details["loaded_plain" if plan.fallback is None else "loaded_fallback"] = True

    async def _reject_additions(self, name: ModelName, plan: LoadPlan, reason: str,
                                details: dict[str, Any]) -> None:
        details["additions_rejected"] = reason
        for hook in self.m.additions_rejected:
            try:
                await hook(name, plan, reason)
            except ControlPlaneError as exc:
                log.warning("additions-rejected hook for %s: %s", name, exc)

    def reason(self, name: ModelName, exc: BaseException) -> str:
        """Why a load failed, in words, with Triton's own detail from its log when known."""
        reason = failure_reason(exc, self.m.load_timeout_s)
        detail = self.m.instance.failure_detail(name)
        return f"{reason} ({detail})" if detail and detail not in reason else reason

    async def footprint(self, name: ModelName) -> dict[str, Any]:
        """The plugin's figures for a freshly loaded model; empty if they cannot be read."""
        try:
            footprint = await self.m.instance.footprint(name)
        except ControlPlaneError as exc:
            log.warning("no plugin metrics for %s: %s", name, exc)
            return {}
        if footprint is None:
            return {}
        return {
            "instances": footprint.instances,
            "rss_bytes": footprint.rss_bytes,
            "cuda_allocated_bytes": footprint.cuda_allocated_bytes,
            "load_phases": footprint.load_phases,
            **({"compile_cache": footprint.compile_cache} if footprint.compile_cache else {}),
        }

    async def versions(self, name: ModelName) -> tuple[str, ...] | None:
        """The versions Triton serves of ``name`` now; None when its index cannot be read."""
        try:
            return ready_versions(model_entries(await self.m.instance.index(), name))
        except ControlPlaneError as exc:
            log.warning("cannot read the loaded versions of %s: %s", name, exc)
            return None


def probes_all_failed(details: Mapping[str, Any]) -> str | None:
    """``all N warm-up probes failed: <the first error>`` when probes were sent in this load
    and none was answered; else None (none sent, or one succeeded)."""
    sent, ok = int(details.get("probe_count") or 0), int(details.get("probe_ok") or 0)
    if sent == 0 or ok > 0:
        return None
    # one line (Triton's Python backend appends a traceback's "At:" lines), then bounded
    first = " ".join(str(details.get("probe_first_error") or details.get("probe_error")
                         or "no detail").split())
    first = first if len(first) <= _REASON_ERROR_CHARS else \
        first[:_REASON_ERROR_CHARS - 3] + "..."
    which = "its only warm-up probe" if sent == 1 else f"all {sent} warm-up probes"
    return f"{which} failed: {first}"


#: How a ready model's reason says the version a rollout pinned was refused (the fallback, the
#: active version, serves): followed by Triton's reason (:func:`refused_target` reads it).
TARGET_REFUSED = "the target version was refused, the active version serves: "


def refused_target(reason: str | None) -> str | None:
    """Triton's reason for refusing a rollout's target, from a ready model's reason; None
    when the last load did not refuse one."""
    if reason is None or TARGET_REFUSED not in reason:
        return None
    return reason.split(TARGET_REFUSED, 1)[1]


def ready_reason(reason: str | None, details: Mapping[str, Any]) -> str | None:
    """The reason a model that just loaded is ready with. Probes never fail a load (what
    plain Triton serves, warmctl serves), so a load whose every probe failed is ready, and
    its reason says so: ``ready, but all N warm-up probes failed: …``. A load whose pinned
    target version Triton refused says that last (:data:`TARGET_REFUSED`)."""
    warning = probes_all_failed(details)
    if warning is not None:
        reason = f"ready, but {warning}" if reason is None else f"{reason}; ready, but {warning}"
    refused = details.get("target_refused")
    if refused:
        said = f"{TARGET_REFUSED}{refused}"
        reason = said if reason is None else f"{reason}; {said}"
    return reason


def failure_reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, ModelLoadFailed):
        return exc.reason
    if isinstance(exc, DeadlineExceeded):
        return f"load did not finish within {timeout_s:g}s ({exc})"
    if isinstance(exc, asyncio.CancelledError):
        return "load cancelled (control plane stopping)"
    if isinstance(exc, ControlPlaneError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"
