"""Rollouts: a new version loaded beside the active one, verified, shifted to in steps.

One task per rollout runs its state machine (``states.py``), storing each state before it
acts on it so that a restarted control plane resumes it (``resume``):

* ``verifying``: the model's versions record gets the target (``versions.py``), every ready
  replica is reloaded serving both (each keeps serving meanwhile; Triton unloads nothing),
  then :func:`~controlplane.rollouts.verify.verify_version` sends recorded samples (or proven
  probe inputs) to both versions on one replica. No client request names the target yet: the
  gateway names the active version in every request (a split at share 0).
* ``shifting``: the target's share of the model's traffic rises step by step (``steps``
  percent, ``dwell_s`` each) through the gateway's version split; every second its live error
  rate and latency are compared with the active's (``watch.py``); a regression rolls back at
  once. ``paused`` holds the step.
* ``promoted``: every request names the target, the record makes it active, the replicas are
  reloaded serving it alone (Triton unloads the old version once its requests finish), then
  the split goes. Warm-up configs, value ranges and usage are the model's: they carry over.
* ``rolled_back`` / ``aborted``: the split goes at once (every request to the active), the
  record drops the target, the replicas are reloaded serving the active version alone.

A model that is loaded nowhere is not verified live: the record makes the new version active
and its next load (with its probes) serves it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from controlplane.background import Background
from controlplane.config import Settings
from controlplane.errors import Conflict, ControlPlaneError, InvalidArgument, ModelNotFound
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.lifecycle.loading import refused_target
from controlplane.lifecycle.states import ModelState
from controlplane.rollouts.requests import ACT_WAIT_S, OperatorRequests, answer
from controlplane.rollouts.states import ACTIVE_STATES, RolloutState, check
from controlplane.rollouts.verify import Verdict, VerifyOptions
from controlplane.rollouts.versions import ModelVersions
from controlplane.rollouts.watch import RolloutWatch, regression
from controlplane.serving.versions import VersionSplit
from controlplane.store.rollouts import RolloutRow, RolloutStore
from controlplane.types import ModelName

log = logging.getLogger(__name__)

#: how often a shifting rollout compares its versions, seconds
TICK_S = 1.0
#: how often version folders are looked for (a directory listing per model), seconds
DETECT_S = 5.0
#: after the last step, how long requests already naming the active version get to finish
SETTLE_S = 1.0



class Verifier(Protocol):
    """Verifies ``target`` against ``active`` on one replica (``verify.py``)."""

    async def __call__(self, rt: InstanceRuntime, model: ModelName, active: str, target: str,
                       options: VerifyOptions) -> Verdict: ...


class Rollouts:
    def __init__(self, fleet: Fleet, versions: ModelVersions, store: RolloutStore,
                 settings: Settings, verifier: Verifier,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self.versions = versions
        self.store = store
        self.settings = settings
        self.verifier = verifier
        self.clock = clock
        self.watch = RolloutWatch()
        #: rollouts under way, by model
        self.running: dict[ModelName, RolloutRow] = {}
        #: (model, version) rolled back or aborted: a new folder is not retried by itself
        self.tried: set[tuple[ModelName, str]] = set()
        #: model -> the highest version there was when the operator chose one (a rollback
        #: to an older version): auto-detection rolls out only folders above it
        self.chosen: dict[ModelName, int] = {}
        #: an operator's requests to a running rollout: pause, resume, promote, abort
        self.requests = OperatorRequests()
        self._background = Background()

    async def start(self) -> None:
        """Read the version records; resume every rollout a restart interrupted."""
        await self.versions.start()
        rows = await self.store.listed(limit=10_000)
        self.tried = {(r.model, r.version) for r in rows
                      if r.state in (RolloutState.ROLLED_BACK, RolloutState.ABORTED)}
        for r in rows:  # newest first: an operator's choice between versions stands
            if r.origin == "operator" and r.state == RolloutState.PROMOTED:
                self.chosen.setdefault(r.model, max(int(r.active), int(r.version)))
        for row in await self.store.unfinished():
            if row.model in self.running or row.model not in self.fleet.repository:
                continue
            log.info("resuming rollout %d of %s to version %s (%s)", row.id, row.model,
                     row.version, row.state)
            self.running[row.model] = row
            self._background.spawn(self._run(row, resumed=True))

    async def detect(self, only: ModelName | None = None) -> None:
        """``rollouts.auto``: a model served at version A with a higher version folder on
        disk (one not rolled back before) is rolled out to it (a loop, every
        ``DETECT_S``; and at an operator's load of ``only``)."""
        for model, (active, _) in list(self.versions.records.items()):
            if only is not None and model != only:
                continue
            if model in self.running or not self.settings.rollout_options(model).auto:
                continue
            newest = self.versions.newest_on_disk(model)
            if newest is None or int(newest) <= int(active) or (model, newest) in self.tried \
                    or int(newest) <= self.chosen.get(model, -1):
                continue
            try:
                await self.begin(model, newest, origin="auto")
            except ControlPlaneError as exc:
                self.tried.add((model, newest))
                log.warning("new version %s of %s not rolled out: %s", newest, model, exc)

    # -- the operator's side ----------------------------------------------------------------
    async def begin(self, model: ModelName, version: str, origin: str = "operator"
                    ) -> RolloutRow:
        """Start rolling ``model`` out to ``version``. Raises ModelNotFound, InvalidArgument
        (no such version folder, or the model's config chose its own version policy),
        Conflict (a rollout of it is under way, or ``version`` is active already)."""
        if model not in self.fleet.repository:
            raise ModelNotFound(model)
        spec = self.fleet.repository.spec(model)
        if not self.versions.managed(spec):
            raise InvalidArgument(f"model '{model}' sets its own version_policy in "
                                  "config.pbtxt: its versions are Triton's to choose")
        on_disk = self.fleet.repository.versions(model)
        if version not in on_disk:
            raise InvalidArgument(f"model '{model}' has no version folder '{version[:20]}'; "
                                  f"versions: {', '.join(on_disk)}")
        if model in self.running:
            raise Conflict(f"a rollout of '{model}' is under way "
                           f"(id {self.running[model].id}): abort it first")
        active = self.versions.active(model) or on_disk[-1]
        if version == active:
            raise Conflict(f"version {version} of '{model}' is the active one already")
        options = self.settings.rollout_options(model)
        row = await self.store.create(model, active, version, origin, options.model_dump(),
                                      f"started by {origin}: {active} -> {version}")
        if origin == "operator":  # the operator chose among the folders there are now
            self.chosen[model] = max(int(v) for v in on_disk)
        self.running[model] = row
        self._background.spawn(self._run(row, resumed=False))
        return row

    def ask(self, model: ModelName, rollout_id: int, what: str) -> RolloutRow:
        """pause, resume, promote or abort the running rollout ``rollout_id`` of ``model``
        (``requests.py``). Raises Conflict when it is not running (or not in a state that
        allows ``what``)."""
        row = self.running.get(model)
        if row is None or row.id != rollout_id:
            raise Conflict(f"rollout {rollout_id} of '{model}' is not under way")
        self.requests.ask(row, what)
        return row

    async def act(self, model: ModelName, rollout_id: int, what: str,
                  wait_s: float = ACT_WAIT_S) -> RolloutRow:
        """:meth:`ask`, then wait (up to ``wait_s`` seconds) until the rollout has taken the
        action: paused, resumed, promoted or rolled back. The row is the rollout as it is
        then, so an answer shows the action's effect (or, after ``wait_s``, the state it is
        still moving from: a promotion or an abort reloads the model)."""
        row = self.ask(model, rollout_id, what)
        await self.requests.wait(row, wait_s)
        return row

    # -- the state machine ------------------------------------------------------------------
    async def _run(self, row: RolloutRow, *, resumed: bool) -> None:
        try:
            if row.state == RolloutState.VERIFYING and not await self._verify(row):
                return
            await self._shift(row)
        except asyncio.CancelledError:
            raise  # a stop: the stored state is resumed at the next start
        except Exception as exc:  # a bug or the store: never leave the target half-served
            log.exception("rollout %d of %s failed", row.id, row.model)
            await self._roll_back(row, f"the rollout failed: {exc}")
        finally:
            answer(self.requests.take(row)[1])
            if row.state not in ACTIVE_STATES:
                self.running.pop(row.model, None)
                self.watch.forget(row.model)

    async def _verify(self, row: RolloutRow) -> bool:
        model = row.model
        ready = [rt for rt, m in self.fleet.managers() if m.state(model) is ModelState.READY]
        if not ready:
            await self.versions.set(model, row.version, None)
            await self._move(row, RolloutState.PROMOTED, 1.0,
                             f"'{model}' is loaded nowhere: version {row.version} is active "
                             "and its next load (probed) serves it")
            return False
        # share 0: every request names the active version before Triton serves two
        self.fleet.splits[model] = VersionSplit(row.active, row.version, 0.0)
        await self.fleet.publish()
        await self.versions.set(model, row.active, row.version)
        try:
            await self._reload(model)
        except ControlPlaneError as exc:
            await self._roll_back(row, f"version {row.version} did not load: {exc}")
            return False
        both = [rt for rt in ready if rt.manager is not None
                and {row.active, row.version} <= set(rt.manager.status(model).versions)]
        if not both:
            said = next((found for rt in ready if rt.manager is not None and (
                found := refused_target(rt.manager.status(model).reason)) is not None),
                "Triton did not load it; see the model's load events")
            await self._roll_back(row, f"version {row.version} did not load beside "
                                       f"{row.active}: {said}")
            return False
        opts = self.settings.rollout_options(model)
        verdict = await self.verifier(both[0], model, row.active, row.version, VerifyOptions(
            latency_factor=opts.latency_factor, atol=opts.atol, rtol=opts.rtol,
            top_k=opts.top_k, max_samples=opts.max_samples))
        row.verification = {"passed": verdict.passed, "reason": verdict.reason,
                            "samples": verdict.samples, "active_p50_s": verdict.active_p50_s,
                            "target_p50_s": verdict.target_p50_s,
                            "failures": list(verdict.failures)}
        if not verdict.passed:
            await self._roll_back(row, f"verification failed: {verdict.reason}")
            return False
        await self._move(row, RolloutState.SHIFTING, 0.0, f"verified: {verdict.reason}")
        return True

    async def _shift(self, row: RolloutRow) -> None:
        opts = self.settings.rollout_options(row.model)
        steps = [s / 100 for s in row.options.get("steps", opts.steps)]
        if row.step >= 0:  # resumed after a restart: the step it was in, again
            await self._split(row, steps[row.step], row.reason, RolloutState(row.state))
            if not await self._dwell(row, opts.dwell_s, last=row.step == len(steps) - 1):
                return
        while row.step + 1 < len(steps):
            step = row.step + 1
            row.step = step
            await self._split(row, steps[step], f"step {step + 1}/{len(steps)}: "
                                                f"{steps[step]:.0%} of the traffic")
            if not await self._dwell(row, opts.dwell_s, last=step == len(steps) - 1):
                return
        await self._promote(row)

    async def _dwell(self, row: RolloutRow, dwell_s: float, *, last: bool) -> bool:
        """Hold a step for ``dwell_s`` (paused time not counted, nor time when no routable
        replica serves both versions: a Triton down or restarting); False when it ended the
        rollout (a regression, an abort)."""
        opts = self.settings.rollout_options(row.model)
        held = 0.0
        self.watch.follow(row.model)
        serving = True
        while held < dwell_s or row.state == RolloutState.PAUSED:
            asked, taken = self.requests.take(row)
            try:
                if asked == "abort":
                    await self._roll_back(row, "aborted by the operator", RolloutState.ABORTED)
                    return False
                if asked == "promote":
                    await self._promote(row, early=not last)
                    return False
                if asked == "pause":
                    await self._move(row, RolloutState.PAUSED, row.share,
                                     "paused by the operator")
                elif asked == "resume":
                    await self._move(row, RolloutState.SHIFTING, row.share, "resumed")
            finally:
                answer(taken)
            was_serving, serving = serving, self._both_serve(row)
            if not serving:
                # an outage judges neither version: the step waits for it to end, and the
                # comparison starts again after it (its failures were the outage's)
                if was_serving:
                    log.warning("rollout %d of %s: no replica serves both versions; the step "
                                "waits", row.id, row.model)
                await asyncio.sleep(TICK_S)
                continue
            if not was_serving:
                self.watch.follow(row.model)
            why = regression(self.watch.of(row.model, row.active),
                             self.watch.of(row.model, row.version),
                             max_error_rate=opts.max_error_rate,
                             latency_factor=opts.latency_factor, min_requests=opts.min_requests)
            if why is not None:
                await self._roll_back(row, f"at {row.share:.0%}: version {row.version}'s {why}")
                return False
            await asyncio.sleep(TICK_S)
            if row.state == RolloutState.SHIFTING:
                held += TICK_S
        return True

    def _both_serve(self, row: RolloutRow) -> bool:
        """Some routable replica has both the active and the target version ready."""
        wanted = {row.active, row.version}
        return any(rt.routable and rt.manager is not None
                   and rt.manager.state(row.model) is ModelState.READY
                   and wanted <= set(rt.manager.status(row.model).versions)
                   for rt in self.fleet.order)

    async def _promote(self, row: RolloutRow, *, early: bool = False) -> bool:
        model = row.model
        self.fleet.splits[model] = VersionSplit(row.active, row.version, 1.0)
        await self.fleet.publish()
        await asyncio.sleep(SETTLE_S)  # requests already sent to the active version finish
        await self.versions.set(model, row.version, None)
        try:
            await self._reload(model)
        except ControlPlaneError as exc:  # the target serves; the old version may linger
            log.warning("promoting %s to %s: %s", model, row.version, exc)
        self.fleet.splits.pop(model, None)
        await self.fleet.publish()
        await self._move(row, RolloutState.PROMOTED, 1.0,
                         ("promoted by the operator" if early else "promoted")
                         + f": version {row.version} is active")
        self.fleet.record("rollout", model, "", f"{row.active} -> {row.version}", "promoted")
        return True

    async def _roll_back(self, row: RolloutRow, why: str,
                         to: RolloutState = RolloutState.ROLLED_BACK) -> None:
        model = row.model
        # at once: every request names the active version (an unversioned one would get
        # Triton's highest loaded, the target, until the reload below unloads it)
        self.fleet.splits[model] = VersionSplit(row.active, row.version, 0.0)
        await self.fleet.publish()
        try:
            await self.versions.set(model, row.active, None)
            await self._reload(model)
        except ControlPlaneError as exc:
            log.warning("rolling back %s: %s", model, exc)
        if not any(row.version in m.status(model).versions for _, m in self.fleet.managers()):
            self.fleet.splits.pop(model, None)  # else requests keep naming the active one
            await self.fleet.publish()
        await self._move(row, to, 0.0, why)
        self.tried.add((model, row.version))
        self.fleet.record("rollout", model, "", f"{row.active} -> {row.version}: {why}"[:300],
                          to.value)

    async def _reload(self, model: ModelName) -> None:
        """Every ready replica loaded again with the versions recorded now (no file
        overrides: ``ModelVersions.reloading``)."""
        self.versions.reloading.add(model)
        try:
            await self.fleet.reload(model, trigger="rollout")
        finally:
            self.versions.reloading.discard(model)

    async def _split(self, row: RolloutRow, share: float, why: str,
                     state: RolloutState = RolloutState.SHIFTING) -> None:
        self.fleet.splits[row.model] = VersionSplit(row.active, row.version, share)
        await self.fleet.publish()
        if RolloutState(row.state) is state is RolloutState.PAUSED:
            return  # resumed paused: stays so
        await self._move(row, state, share, why)

    async def _move(self, row: RolloutRow, to: RolloutState, share: float, why: str) -> None:
        row.state = check(row.id, RolloutState(row.state), to).value
        row.share, row.reason = share, why
        log.info("rollout %d of %s: %s (%s)", row.id, row.model, row.state, why)
        await self.store.save(row)

    async def close(self) -> None:
        """Stop every rollout where it is (stored: resumed by the next start, here or on
        the replica that leads next)."""
        await self._background.close()
        self.running.clear()
        self.requests.close()

