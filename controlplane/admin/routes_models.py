"""/models: states, loads and unloads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from controlplane.admin.deps import Manager
from controlplane.admin.schemas import ModelDetail, ModelView
from controlplane.errors import ConfigError
from controlplane.triton.repository import ModelSpec

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelView])
async def list_models(manager: Manager) -> list[ModelView]:
    return [ModelView.of(s) for s in manager.statuses()]


@router.get("/{name}", response_model=ModelDetail)
async def get_model(name: str, manager: Manager) -> ModelDetail:
    status = manager.status(name)
    try:
        spec: ModelSpec | str = manager.repository.spec(name)
    except ConfigError as exc:
        spec = str(exc)
    events = await manager.store.db.run(manager.store.events, name, limit=20)
    return ModelDetail.build(status, spec, events)


@router.post("/{name}/load", response_model=ModelView)
async def load_model(name: str, manager: Manager) -> ModelView:
    return ModelView.of(await manager.load(name, trigger="api"))


@router.post("/{name}/unload", response_model=ModelView)
async def unload_model(
    name: str, manager: Manager,
    force: Annotated[bool, Query(description="unload even a pinned model")] = False,
) -> ModelView:
    return ModelView.of(await manager.unload(name, trigger="api", force=force))
