"""/models/{name}/rollouts: new versions verified and shifted to in steps (``rollouts/``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from controlplane.admin.deps import ControlPlaneDep
from controlplane.errors import ModelNotFound
from controlplane.store.rollouts import RolloutRow

router = APIRouter(prefix="/models/{name}/rollouts", tags=["rollouts"])


class StartRollout(BaseModel):
    """``POST /models/{name}/rollouts``: the version folder to roll out to."""

    version: str = Field(pattern=r"^[0-9]{1,19}$", description="a version folder's name")


class RolloutView(BaseModel):
    id: int
    model: str
    #: the version it started from, and the one it moves to
    active: str
    version: str
    #: verifying, shifting, paused, promoted, rolled_back, aborted
    state: str
    #: the step reached (0-based; -1 before the first) of ``options.steps``
    step: int
    #: the new version's share of the model's traffic now, 0..1
    share: float
    reason: str
    #: operator or auto (a new version folder)
    origin: str
    options: dict[str, Any]
    #: what the verification found (samples, p50 of each version, failures)
    verification: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: RolloutRow) -> RolloutView:
        return cls(**{k: getattr(row, k) for k in cls.model_fields})


@router.post("", response_model=RolloutView, status_code=202)
async def start_rollout(name: str, body: StartRollout, cp: ControlPlaneDep) -> RolloutView:
    """Load ``version`` beside the active one, verify it on recorded samples before any
    client request reaches it, then shift the model's traffic to it in steps (rolled back
    at once on a regression). 202 with the rollout (``verifying``); 400 for a version folder
    that does not exist, 409 while another rollout of the model runs."""
    return RolloutView.of(await cp.rollouts.begin(name, body.version, origin="operator"))


@router.get("", response_model=list[RolloutView])
async def list_rollouts(name: str, cp: ControlPlaneDep,
                        limit: Annotated[int, Query(ge=1, le=50)] = 20) -> list[RolloutView]:
    """The model's rollouts, newest first (the one under way as it is now)."""
    if name not in cp.repository:
        raise ModelNotFound(name)
    running = cp.rollouts.running.get(name)
    rows = await cp.rollouts.store.listed(name, limit)
    return [RolloutView.of(running if running is not None and r.id == running.id else r)
            for r in rows]


@router.post("/{rollout_id}/{action}", response_model=RolloutView)
async def act(name: str, rollout_id: int,
              action: Literal["pause", "resume", "promote", "abort"],
              cp: ControlPlaneDep) -> RolloutView:
    """pause (hold the step), resume, promote (shift the rest at once; not before the
    verification passed) or abort (every request back to the active version, the new one
    unloaded). Answered once the rollout has taken the action (within a second for a pause
    or resume; a promotion or an abort after its reload, up to 15 s: then the state it is
    still moving from); 409 when the rollout is not under way."""
    row = await cp.rollouts.act(name, rollout_id, action)
    return RolloutView.of(row)
