"""Instances join and leave the running fleet: the one owner of its membership.

A join builds a runtime (``provisioning``), starts it on its own exit stack, attaches it to
the fleet (membership listeners: failover, crash tracing, metrics, budgets), then pre-warms
it (``warming``: the models the replica plan gives it, hottest first, each loaded with its
traffic-shaped warm-up and probed) and only then makes it ``serving`` -- or ``standby``,
warm and outside routing until :meth:`Membership.promote`. No request reaches a joining
instance before that: the router picks only routable replicas. Each of its replicas then
ramps up to its full share (``ramp.py``).

A leave is the lossless drain (``drain.py``), then ``retired``: detached, closed alone,
forgotten by the store. Instances added at run time (``POST /instances``, the autoscaler)
are stored and come back after a restart of the control plane.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from controlplane.background import Background
from controlplane.config import InstanceSettings, valid_instance_name
from controlplane.errors import ConfigError, Conflict, ControlPlaneError, InstanceNotFound
from controlplane.fleet import drain
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.prewarm import prewarm
from controlplane.fleet.provider import KINDS, Joined, Provider
from controlplane.fleet.removal import wait_settled
from controlplane.fleet.runtime import InstanceRuntime, Shared
from controlplane.fleet.states import InstanceState
from controlplane.store.base import utcnow
from controlplane.types import InstanceName, ModelName

log = logging.getLogger(__name__)

#: start-to-warm times kept for the autoscaler's lead time
WARM_UP_SAMPLES = 20


class InstanceRecords(Protocol):
    """Where instances added at run time are kept (``store/instances.py``)."""

    async def added(self) -> dict[str, tuple[dict[str, Any], str]]: ...
    async def put(self, name: str, spec: dict[str, Any], origin: str) -> None: ...
    async def delete(self, name: str) -> None: ...


class Membership:
    def __init__(self, fleet: Fleet, shared: Shared, providers: Mapping[str, Provider],
                 records: InstanceRecords | None = None,
                 planned: Callable[[InstanceRuntime, bool], list[ModelName]] = (
                     lambda rt, standby: [])) -> None:
        self.fleet = fleet
        self.shared = shared
        self.providers = providers
        self.records = records
        #: the models a joining instance loads before it serves: (runtime, standby) -> names
        self.planned = planned
        #: awaited with each started runtime before it is attached (GPU detection)
        self.on_started: list[Callable[[InstanceRuntime], Awaitable[object]]] = []
        #: told of each replica that starts taking traffic beside others (the ramp)
        self.on_serving: list[Callable[[InstanceRuntime, ModelName], None]] = []
        #: called after each change of membership or phase (budgets, the autoscaler)
        self.on_change: list[Callable[[], None]] = []
        #: instances being provisioned (not in the fleet yet), by name
        self.joining: dict[InstanceName, InstanceRuntime] = {}
        self.leaving: set[InstanceName] = set()
        #: seconds from a join's start to warm, newest last (the autoscaler's lead time)
        self.warm_up_s: deque[float] = deque(maxlen=WARM_UP_SAMPLES)
        self._tasks: dict[InstanceName, asyncio.Task[None]] = {}
        #: what each joining instance becomes once warm (serving or standby)
        self._targets: dict[InstanceName, InstanceState] = {}
        self._background = Background()

    # -- start-up -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every configured instance, those a discovering provider finds, and those
        added at run time before a restart. A configured one that cannot start fails the
        start (TritonStartError); a found or stored one is logged and left out (a found one
        is offered again by its provider's watch)."""
        configured: list[InstanceRuntime] = []
        optional: list[InstanceRuntime] = []
        for p in self.providers.values():
            found = await p.discover()
            for name, spec in found.items():
                if p.kind in KINDS:
                    configured.append(self.build(name, spec, "settings"))
                else:
                    optional.append(self.build(name, spec, p.kind))
        configured.sort(key=lambda rt: rt.name)
        if self.records is not None:
            known = {rt.name for rt in [*configured, *optional]}
            for name, (raw, origin) in sorted((await self.records.added()).items()):
                try:
                    if name not in known:
                        optional.append(self.build(name, self.spec_of(raw), origin))
                except ConfigError as exc:
                    log.error("stored instance %s left out: %s", name, exc)
        await asyncio.gather(*(rt.start() for rt in configured))
        results = await asyncio.gather(*(rt.start() for rt in optional),
                                       return_exceptions=True)
        started = configured + [rt for rt, r in zip(optional, results, strict=True)
                                if not isinstance(r, BaseException)]
        for rt, r in zip(optional, results, strict=True):
            if isinstance(r, BaseException):
                log.error("instance %s (%s) did not start: %s", rt.name, rt.origin, r)
        for rt in started:
            for hook in self.on_started:
                await hook(rt)
            self.fleet.attach(rt)
            rt.move(InstanceState.SERVING, "started with the control plane")
            rt.start_supervision()
        self._changed()
        for provider in self.providers.values():
            self._background.spawn(self._follow(provider))

    async def _follow(self, provider: Provider) -> None:
        """Joins and leaves a provider sees on its own (a Kubernetes watch)."""
        async for event in provider.watch():
            try:
                if isinstance(event, Joined):
                    await self.add(event.name, event.spec, origin=provider.kind, store=False)
                else:
                    self.remove(event.name, event.why, force=True)
            except ControlPlaneError as exc:
                log.warning("provider %s: %s", provider.kind, exc)

    # -- joining --------------------------------------------------------------------------
    def spec_of(self, raw: Mapping[str, Any]) -> InstanceSettings:
        """An instance's keys (``[instances.<name>]``'s) checked, budgets defaulted; raises
        ConfigError naming the bad key."""
        from pydantic import ValidationError

        try:
            spec = InstanceSettings.model_validate(dict(raw))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'instance'}: "
                + ("unknown key" if e["type"] == "extra_forbidden"
                   else str(e["msg"]).removeprefix("Value error, "))
                for e in exc.errors())
            raise ConfigError(f"invalid instance: {problems}") from None
        return self.shared.settings.with_defaults(spec)

    def build(self, name: InstanceName, spec: InstanceSettings, origin: str
              ) -> InstanceRuntime:
        if not valid_instance_name(name):
            raise ConfigError(f"instance names must be 1-63 of a-z, 0-9, '_' or '-' and start "
                              f"with a letter or digit: {name[:80]!r}")
        provider = self.providers.get(spec.provider)
        if provider is None:
            raise ConfigError(f"unknown provider '{spec.provider}'; providers: "
                              + ", ".join(self.providers))
        return InstanceRuntime(name, spec, provider, self.shared, origin=origin)

    async def add(self, name: InstanceName, spec: InstanceSettings, *, origin: str,
                  standby: bool = False, store: bool = True) -> InstanceRuntime:
        """Start a new instance in the background; returns it ``provisioning``. Raises
        ConfigError (bad name or provider), Conflict (name in use), and the store's error
        when it cannot be recorded (nothing is started then)."""
        if name in self.fleet.runtimes or name in self.joining:
            raise Conflict(f"instance '{name}' is already in the fleet")
        rt = self.build(name, spec, origin)
        if store and self.records is not None:
            await self.records.put(name, spec.model_dump(exclude_defaults=True), origin)
        self.joining[name] = rt
        target = InstanceState.STANDBY if standby else InstanceState.SERVING
        self._targets[name] = target
        self._tasks[name] = self._background.spawn(self._join(rt, target))
        return rt

    async def _join(self, rt: InstanceRuntime, target: InstanceState) -> None:
        began = time.monotonic()
        try:
            await rt.start()
            for hook in self.on_started:
                await hook(rt)
        except BaseException as exc:
            self.joining.pop(rt.name, None)
            rt.move(InstanceState.RETIRED, f"did not start: {exc}")
            self.fleet.retired.append((rt.name, rt.phase_reason, utcnow()))
            self.fleet.record("join", "", rt.name, rt.origin, f"failed: {exc}")
            await self._forget(rt.name)
            if not isinstance(exc, Exception):
                raise
            return
        self.joining.pop(rt.name, None)
        self.fleet.attach(rt)
        rt.start_supervision()
        rt.move(InstanceState.WARMING, "loading the models planned for it")
        models = self.planned(rt, target is InstanceState.STANDBY)
        outcome = await prewarm(self.fleet, rt, models)
        took = time.monotonic() - began
        self.warm_up_s.append(took)
        warm = [m for m, result in outcome.items() if result == "ready"]
        why = (f"warm in {took:.1f}s: {len(warm)}/{len(models)} planned model(s) ready"
               + (f" ({', '.join(warm[:8])})" if warm else ""))
        if rt.phase is not InstanceState.WARMING:  # removed meanwhile
            return
        rt.move(target, why)
        self._changed()
        self.fleet.record("join", ",".join(warm[:8]), rt.name, rt.origin, why)
        if target is InstanceState.SERVING:
            self._serving(rt)
        await self.fleet.publish()

    def promote(self, name: InstanceName, why: str) -> InstanceRuntime:
        """A standby instance takes traffic now (no load on the request path: its models are
        warm). Raises InstanceNotFound, InvalidInstanceTransition."""
        rt = self.fleet.runtime(name)
        rt.move(InstanceState.SERVING, why)
        self._changed()
        self.fleet.record("promote", "", name, why, "ok")
        self._serving(rt)
        return rt

    def _changed(self) -> None:
        for hook in self.on_change:
            hook()

    def _serving(self, rt: InstanceRuntime) -> None:
        assert rt.manager is not None
        for model in rt.manager.ready_names():
            for hook in self.on_serving:
                hook(rt, model)

    # -- leaving --------------------------------------------------------------------------
    def remove(self, name: InstanceName, why: str, *, force: bool = False) -> InstanceRuntime:
        """Drain ``name`` (losslessly), then retire and close it, in the background; returns
        it. Raises InstanceNotFound, and Conflict for the last serving instance (unless
        ``force``)."""
        pending = self.joining.get(name)
        if pending is not None:  # not started yet: stop the join
            task = self._tasks.get(name)
            if task is not None:
                task.cancel()
            return pending
        rt = self.fleet.runtime(name)
        if name in self.leaving:
            return rt
        others = [o for o in self.fleet.order if o is not rt and o.routable]
        if rt.routable and not others and not force:
            raise Conflict(f"instance '{name}' is the last one serving: removing it would "
                           "leave every model unserved (force=true to remove anyway)")
        self.leaving.add(name)
        self._background.spawn(self._leave(rt, why))
        return rt

    async def _leave(self, rt: InstanceRuntime, why: str) -> None:
        name = rt.name
        try:
            joining = self._tasks.get(name)
            if joining is not None and not joining.done():
                joining.cancel()
                await asyncio.gather(joining, return_exceptions=True)
            if rt.started and rt.manager is not None:
                await drain.drain(self.fleet, name, why)
                # a stateful model's open sequences are given their time (drain.py)
                await wait_settled(self.fleet, rt, None, self.fleet.options.drain_timeout_s)
        except ControlPlaneError as exc:  # it stays, draining: DELETE again, or resume it
            self.fleet.record("retire", "", name, why, f"failed: {exc}")
            log.warning("removing instance %s: %s", name, exc)
            self.leaving.discard(name)
            return
        rt.move(InstanceState.RETIRED, why)
        self.fleet.detach(name, why)
        self.leaving.discard(name)
        self._changed()
        await self._forget(name)  # before the close: a restart meanwhile does not bring it back
        self.fleet.record("retire", "", name, why, "ok")
        await self.fleet.publish()
        await rt.close()

    async def _forget(self, name: InstanceName) -> None:
        self._tasks.pop(name, None)
        self._targets.pop(name, None)
        if self.records is not None:
            try:
                await self.records.delete(name)
            except Exception as exc:  # the store's outage must not keep it running
                log.warning("instance %s retired, but the store still lists it: %s",
                            name, exc)

    def standby_target(self, name: InstanceName) -> bool:
        """Whether ``name``, joining, becomes a standby once warm."""
        return self._targets.get(name) is InstanceState.STANDBY

    def get(self, name: InstanceName) -> InstanceRuntime:
        """A member or a joining instance; raises InstanceNotFound."""
        found = self.fleet.runtimes.get(name) or self.joining.get(name)
        if found is None:
            raise InstanceNotFound(name, [*self.fleet.runtimes, *self.joining])
        return found

    async def close(self) -> None:
        """Stop joins and leaves, then close every instance (together; each bounded)."""
        await self._background.close()
        runtimes = [*self.fleet.order, *self.joining.values()]
        await asyncio.gather(*(_close(rt) for rt in runtimes))


async def _close(rt: InstanceRuntime) -> None:
    try:
        await asyncio.wait_for(rt.close(), 60)
    except TimeoutError:
        log.warning("stopping instance %s took over 60s; going on", rt.name)
    except Exception:
        log.exception("stopping instance %s failed; going on", rt.name)
