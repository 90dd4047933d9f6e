"""/models: states, loads and unloads."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from controlplane.admin.deps import ControlPlaneDep, Manager
from controlplane.admin.schemas import ModelDetail, ModelView
from controlplane.errors import ConfigError
from controlplane.triton.repository import ModelSpec

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelView])
async def list_models(manager: Manager) -> list[ModelView]:
    return [ModelView.of(s) for s in manager.statuses()]


@router.get("/{name}", response_model=ModelDetail)
async def get_model(name: str, manager: Manager, cp: ControlPlaneDep) -> ModelDetail:
    status = manager.status(name)
    try:
        spec: ModelSpec | str = manager.repository.spec(name)
    except ConfigError as exc:
        spec = str(exc)
    events = await manager.store.db.run(manager.store.events, name, limit=20)
    cache = cp.compile_cache.entries(name) if cp.compile_cache else []
    return ModelDetail.build(status, spec, events, cache)


@router.post("/{name}/load", response_model=ModelView)
async def load_model(name: str, manager: Manager) -> ModelView:
    """Load now: ends an operator hold and skips a failed model's back-off."""
    return ModelView.of(await manager.load(name, trigger="api"))


@router.post("/{name}/unload", response_model=ModelView)
async def unload_model(
    name: str, manager: Manager,
    force: Annotated[bool, Query(description="unload even a pinned model")] = False,
) -> ModelView:
    """Unload and hold cold: lazy loads and the scheduler leave the model alone until an
    operator loads it or releases the hold (``/release``)."""
    return ModelView.of(await manager.unload(name, trigger="api", force=force))


@router.post("/{name}/release", response_model=ModelView)
async def release_model(name: str, manager: Manager) -> ModelView:
    """End the operator's hold on a model unloaded through the API, and its failure back-off:
    lazy loads and the scheduler may load it again. The model is not loaded by this call."""
    return ModelView.of(manager.release(name))


@router.delete("/{name}/compile-cache")
async def forget_compile_cache(name: str, manager: Manager, cp: ControlPlaneDep) -> dict[str, int]:
    """Drop the model's torch.compile cache entries: its next load compiles afresh (a loaded
    instance keeps serving). ``{"removed": <entries>}``; 404 for an unknown model."""
    manager.status(name)
    removed = await asyncio.to_thread(cp.compile_cache.forget, name) if cp.compile_cache else 0
    return {"removed": removed}
