"""A rollout's states and the moves between them, checked in one place.

::

    verifying ─► shifting ⇄ paused
        │           │         │
        ▼           ▼         ▼
    rolled_back / aborted / promoted     (verifying ─► promoted: loaded nowhere)

``shifting`` moves to itself at each step. ``promoted``, ``rolled_back`` and ``aborted`` are
final: a restart resumes only the others.
"""

from __future__ import annotations

from enum import StrEnum

from controlplane.errors import Conflict


class RolloutState(StrEnum):
    VERIFYING = "verifying"
    SHIFTING = "shifting"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


R = RolloutState
_ENDS = frozenset({R.PROMOTED, R.ROLLED_BACK, R.ABORTED})
TRANSITIONS: dict[RolloutState, frozenset[RolloutState]] = {
    R.VERIFYING: frozenset({R.SHIFTING}) | _ENDS,
    R.SHIFTING: frozenset({R.SHIFTING, R.PAUSED}) | _ENDS,
    R.PAUSED: frozenset({R.SHIFTING}) | _ENDS,
    R.PROMOTED: frozenset(),
    R.ROLLED_BACK: frozenset(),
    R.ABORTED: frozenset(),
}
#: states of a rollout under way (resumed after a restart)
ACTIVE_STATES = frozenset({R.VERIFYING.value, R.SHIFTING.value, R.PAUSED.value})


def check(rollout_id: int, current: RolloutState, to: RolloutState) -> RolloutState:
    """``to`` when allowed; raises Conflict naming the rollout."""
    if to not in TRANSITIONS[current]:
        raise Conflict(f"rollout {rollout_id} is {current.value}: it cannot become {to.value}")
    return to
