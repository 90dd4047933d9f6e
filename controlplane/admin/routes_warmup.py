"""/models/{name}/warmup-config: the generated warm-up, its versions and their diffs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response

from controlplane.admin.deps import ControlPlaneDep, Manager
from controlplane.admin.schemas import WarmupConfigView
from controlplane.errors import Conflict, ControlPlaneError, ErrorCode
from controlplane.warmup.configs import StoredWarmup, diff

if TYPE_CHECKING:
    from controlplane.app import ControlPlane

router = APIRouter(prefix="/models", tags=["warm-up"])


def _versions(cp: ControlPlane, name: str) -> list[StoredWarmup]:
    versions = cp.warmups.versions(name)
    if not versions:
        raise ControlPlaneError(
            f"model '{name}' has no warm-up config yet: one is generated at its first load "
            "(or POST /models/{name}/warmup-config/regenerate)", code=ErrorCode.NOT_FOUND)
    return versions


def _pick(versions: list[StoredWarmup], version: int | None, name: str) -> StoredWarmup:
    if version is None:
        return versions[-1]
    for stored in versions:
        if stored.version == version:
            return stored
    raise ControlPlaneError(f"model '{name}' has no warm-up config v{version}",
                            code=ErrorCode.NOT_FOUND)


@router.get("/{name}/warmup-config", response_model=WarmupConfigView)
async def warmup_config(
    name: str, cp: ControlPlaneDep, manager: Manager,
    version: Annotated[int | None, Query(ge=1)] = None,
    format: Annotated[Literal["json", "pbtxt"], Query()] = "json",
) -> Response | WarmupConfigView:
    """The latest (or ``version``) generated config; ``format=pbtxt`` as config.pbtxt reads."""
    manager.state(name)
    stored = _pick(await cp.warmups.db.call(_versions, cp, name), version, name)
    states = stored.sample_states(await cp.warmups.db.call(cp.warmups.proofs, name))
    if format == "pbtxt":
        return PlainTextResponse(stored.pbtxt(states))
    return WarmupConfigView.of(stored, states)


@router.get("/{name}/warmup-config/versions", response_model=list[WarmupConfigView])
async def warmup_versions(name: str, cp: ControlPlaneDep,
                          manager: Manager) -> list[WarmupConfigView]:
    manager.state(name)
    return [WarmupConfigView.of(v) for v in await cp.warmups.db.call(_versions, cp, name)]


@router.get("/{name}/warmup-config/diff", response_class=PlainTextResponse)
async def warmup_diff(
    name: str, cp: ControlPlaneDep, manager: Manager,
    from_version: Annotated[int | None, Query(alias="from", ge=1)] = None,
    to_version: Annotated[int | None, Query(alias="to", ge=1)] = None,
) -> PlainTextResponse:
    """Unified diff of two versions' pbtxt; by default the previous against the latest."""
    manager.state(name)
    versions = await cp.warmups.db.call(_versions, cp, name)
    new = _pick(versions, to_version, name)
    if from_version is None:
        older = [v for v in versions if v.version < new.version]
        old = older[-1] if older else None
    else:
        old = _pick(versions, from_version, name)
    return PlainTextResponse(diff(old, new))


@router.post("/{name}/warmup-config/regenerate", response_model=WarmupConfigView)
async def regenerate(
    name: str, cp: ControlPlaneDep, manager: Manager,
    reload: Annotated[bool, Query(description="apply it now, the loaded instance serving "
                                              "until the new one is warm")] = False,
) -> WarmupConfigView:
    """Build a config from the traffic recorded now (a new version only if it differs)."""
    if cp.preparer is None:
        raise Conflict("warm-up is disabled (WARMCTL_WARMUP__ENABLED=false)")
    spec = manager.repository.spec(name)
    stored = await cp.warmups.db.call(cp.preparer.regenerate, spec, "requested via admin API")
    if reload and cp.fleet.ready_now(name):
        await cp.fleet.reload(name, trigger="api")  # every ready replica
    return WarmupConfigView.of(stored)
