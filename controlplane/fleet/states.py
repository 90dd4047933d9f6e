"""An instance's states and the transitions allowed between them, checked in one place.

The membership phase (:class:`InstanceState` minus ``down`` and ``restarting``) is set only
through :func:`check` by the fleet's own code (``membership.py``, ``drain.py``); the
supervisor's view is laid over it, so an instance whose Triton died reads ``down`` (or
``restarting``) whatever its phase, and goes back to its phase when Triton serves again::

    provisioning ─► warming ─► standby ⇄ serving ─► draining ─► retired
         │             │          │                    │  ▲
         └─────────────┴──────────┴──► retired         ▼  │ (resume)
                                                     serving / standby

    (any started phase) ── supervisor ──► down / restarting ──► (the phase again)

``routable`` (the router may pick it) is derived: ``serving`` and Triton live. Modelled on
ModelMesh's documented cache-entry states: one table, so that a transition nobody planned is
an error rather than a surprise.
"""

from __future__ import annotations

from enum import StrEnum

from controlplane.errors import Conflict


class InstanceState(StrEnum):
    #: its Triton is being started or attached to; its lifecycle is being built
    PROVISIONING = "provisioning"
    #: started; loading and warming the models planned for it; no request goes there
    WARMING = "warming"
    #: started and warm, outside routing: promoted at once on a spike or a failure
    STANDBY = "standby"
    #: routed to
    SERVING = "serving"
    #: no new requests or loads; in-flight ones and open sequences finish
    DRAINING = "draining"
    #: closed and out of the fleet
    RETIRED = "retired"
    #: the supervisor's view laid over a started phase: Triton is down or hung ...
    DOWN = "down"
    #: ... or being restarted
    RESTARTING = "restarting"


S = InstanceState

#: phase -> the phases it may move to (``down``/``restarting`` are never phases)
TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    S.PROVISIONING: frozenset({S.WARMING, S.SERVING, S.RETIRED}),
    S.WARMING: frozenset({S.STANDBY, S.SERVING, S.DRAINING, S.RETIRED}),
    S.STANDBY: frozenset({S.SERVING, S.WARMING, S.DRAINING, S.RETIRED}),
    S.SERVING: frozenset({S.DRAINING, S.RETIRED}),
    S.DRAINING: frozenset({S.SERVING, S.STANDBY, S.RETIRED}),
    S.RETIRED: frozenset(),
}

#: phases whose Triton is started (the supervisor's view applies)
STARTED = frozenset({S.WARMING, S.STANDBY, S.SERVING, S.DRAINING})


class InvalidInstanceTransition(Conflict):
    """A move the table does not allow (HTTP 409)."""


def check(instance: str, current: InstanceState, to: InstanceState) -> InstanceState:
    """``to`` when ``current -> to`` is allowed; raises InvalidInstanceTransition."""
    if to not in TRANSITIONS.get(current, frozenset()):
        raise InvalidInstanceTransition(
            f"instance '{instance}' is {current.value}: it cannot become {to.value}")
    return to
