"""An operator's requests to a running rollout (pause, resume, promote, abort), held until the
rollout's loop takes them, and the answer that waits for it.

The loop takes a request at its next tick (``Rollouts._dwell``, once a second) and answers
it once the action has taken effect; the HTTP answer then shows the rollout as it is after
the action. One request per rollout at a time: a newer one replaces one not yet taken (whose
answer goes at once, showing the state then).
"""

from __future__ import annotations

import asyncio
import contextlib

from controlplane.errors import Conflict
from controlplane.rollouts.states import RolloutState
from controlplane.store.rollouts import RolloutRow

#: how long an operator's action waits for the rollout to take it before answering, seconds
#: (a pause or resume within a tick; a promotion or an abort after its reload, mostly)
ACT_WAIT_S = 15.0

ACTIONS = ("pause", "resume", "promote", "abort")


class OperatorRequests:
    def __init__(self) -> None:
        #: rollout id -> (action, what its answer waits for: taken)
        self._asked: dict[int, tuple[str, asyncio.Future[None]]] = {}

    def ask(self, row: RolloutRow, what: str) -> None:
        """Hold ``what`` for the running rollout ``row``. Raises Conflict when its state does
        not allow it."""
        if what not in ACTIONS:
            raise Conflict(f"unknown action '{what[:40]}': one of {', '.join(ACTIONS)}")
        if what == "pause" and row.state != RolloutState.SHIFTING:
            raise Conflict(f"rollout {row.id} is {row.state}: only a shifting one pauses")
        if what == "resume" and row.state != RolloutState.PAUSED:
            raise Conflict(f"rollout {row.id} is {row.state}: only a paused one resumes")
        if what == "promote" and row.state == RolloutState.VERIFYING:
            raise Conflict(f"rollout {row.id} is still verifying: it cannot be promoted "
                           "before its verification passes")
        earlier = self._asked.get(row.id)
        if earlier is not None:
            answer(earlier[1])  # replaced by this one before it was taken
        self._asked[row.id] = (what, asyncio.get_running_loop().create_future())

    async def wait(self, row: RolloutRow, wait_s: float = ACT_WAIT_S) -> None:
        """Until the request held for ``row`` was taken and done (or ``wait_s`` seconds)."""
        asked = self._asked.get(row.id)
        if asked is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(asked[1]), wait_s)

    def take(self, row: RolloutRow) -> tuple[str | None, asyncio.Future[None] | None]:
        """The request held for ``row`` and its answer (answer it with :func:`answer`)."""
        asked = self._asked.pop(row.id, None)
        return (None, None) if asked is None else asked

    def close(self) -> None:
        """Every waiting answer goes (the rollouts stop where they are)."""
        for _, taken in self._asked.values():
            answer(taken)
        self._asked.clear()


def answer(taken: asyncio.Future[None] | None) -> None:
    """Let an operator's answer go (the action was taken, replaced, or the rollout ended)."""
    if taken is not None and not taken.done():
        taken.set_result(None)
