"""Response bodies of the fleet's routes: instances, replicas, drains and the fleet's actions.

Kept apart from ``schemas.py`` (the single-model views); the model views embed
:class:`ReplicaView` so one answer says where a model is resident and in which state.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from controlplane.lifecycle.states import ModelState, ModelStatus

if TYPE_CHECKING:
    from controlplane.fleet.drain import DrainReport
    from controlplane.fleet.fleet import FleetAction
    from controlplane.fleet.runtime import InstanceRuntime


class ReplicaView(BaseModel):
    """A model on one instance: its lifecycle state there, and whether it may take traffic."""

    instance: str
    state: ModelState
    reason: str | None
    busy: bool
    held: bool = False
    failures: int = 0
    memory_bytes: int | None
    load_s: float | None
    #: ready there and the instance serves and is not draining: the router may pick it
    routable: bool
    #: why it failed its health check (no traffic until a probe passes); None: healthy
    unhealthy: str | None = None

    @classmethod
    def of(cls, status: ModelStatus, runtime: InstanceRuntime | None) -> ReplicaView:
        unhealthy = (runtime.unhealthy.get(status.name) if runtime is not None
                     else status.unhealthy)
        routable = (runtime is not None and runtime.routable and unhealthy is None
                    and status.state is ModelState.READY)
        return cls(instance=status.instance, state=status.state, reason=status.reason,
                   busy=status.busy, held=status.held, failures=status.failures,
                   memory_bytes=status.memory_bytes, load_s=status.load_s, routable=routable,
                   unhealthy=unhealthy)


class InstanceView(BaseModel):
    """One Triton instance of the fleet (``fleet/views.describe`` plus its supervisor)."""

    name: str
    #: embedded (started here) or static (attached to)
    provider: str
    #: who asked for it: settings, operator (``POST /instances``), autoscaler
    origin: str
    url: str | None
    #: provisioning, warming, standby, serving, draining, retired, down, restarting
    #: (``fleet/states.py``)
    state: str
    #: why it is in that state, and for how long (seconds)
    state_reason: str
    state_for_s: float
    #: its Triton's state (the supervisor's): live, unresponsive, down, restarting, failed,
    #: stopped, starting
    triton_state: str
    #: why its Triton does not serve; None while it does
    reason: str | None
    #: serving and not draining: takes requests and new replicas
    routable: bool
    draining: bool
    #: requests in flight on it now
    outstanding: int
    #: None: unlimited
    memory_budget_mb: float | None
    memory_used_mb: float
    cuda_visible_devices: str | None
    #: resident models -> state (ready, warming, loading, unloading)
    models: dict[str, str]
    #: models the last replica plan puts here
    planned: list[str]
    #: model -> why its replica here failed its health check (no traffic until it passes)
    unhealthy: dict[str, str] = {}
    #: the supervisor's snapshot (pid, restarts, probes); empty while starting
    triton: dict[str, Any]

    @classmethod
    def of(cls, described: dict[str, Any], runtime: InstanceRuntime) -> InstanceView:
        sup = runtime.supervisor
        return cls(**described, triton=sup.snapshot() if sup is not None else {})


class AddInstance(BaseModel):
    """``POST /instances``: a name, and the keys of ``[instances.<name>]`` (checked as they
    are in the settings file)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=63, description="a-z, 0-9, '_' and '-'; starts with a "
                      "letter or digit")
    provider: str = "embedded"
    #: stay warm outside routing until promoted (``POST /instances/{name}/promote``)
    standby: bool = False


class DrainReportView(BaseModel):
    instance: str
    #: model -> the instances it is ready on now, "already ready elsewhere", or why not
    moved: dict[str, str]
    #: requests still in flight when the wait ended (0: all finished)
    in_flight_left: int
    #: open sequences of stateful models when the drain returned (they stay where they are)
    sequences_left: int
    waited_s: float
    unloaded: list[str]
    #: stateful model -> why it stays on the instance a while (unloaded once its open
    #: sequences end or idle out)
    lingering: dict[str, str]
    errors: dict[str, str]
    #: the instance after the drain
    after: InstanceView

    @classmethod
    def of(cls, report: DrainReport, after: InstanceView) -> DrainReportView:
        return cls(instance=report.instance, moved=dict(report.moved),
                   in_flight_left=report.in_flight_left,
                   sequences_left=report.sequences_left, waited_s=report.waited_s,
                   unloaded=list(report.unloaded), lingering=dict(report.lingering),
                   errors=dict(report.errors), after=after)


class FleetActionView(BaseModel):
    """Something the fleet did on its own: add/remove replica, failover, drain, unload."""

    at: datetime
    kind: str
    model: str
    instance: str
    why: str
    outcome: str

    @classmethod
    def of(cls, action: FleetAction) -> FleetActionView:
        return cls(**action.__dict__)
