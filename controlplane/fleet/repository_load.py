"""Triton's repository API through the gateway: an operator's load, with or without a config.

Plain Triton (explicit mode) answers ``RepositoryModelLoad`` by loading the model, or loading
it again when it is loaded (from its directory, or from the ``config`` the request carries,
which then replaces config.pbtxt). Clients such as NVIDIA's model-control example depend on
that, so through the gateway (where repository control is allowed) the same request is an
operator's load of the fleet: it ends holds and quarantines, and

- with a ``config``: every replica loads the model again with that config as it is -- no
  warm-up or placement of ours, said so in the load record (``config_override``) -- or, where
  none holds it, one instance loads it; later loads (a new replica, a restore after a
  restart) use the same config until the operator loads the model without one;
- without one, after a config override: the replicas load it again from the repository;
- otherwise: it is made ready on one instance, as any load through the admin API.

A config that is not JSON, or one Triton refuses, fails the load with Triton's phrase
("failed to load ...") and our detail; a model that served before keeps serving (Triton keeps
the loaded instance when a reload fails).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from controlplane.errors import InvalidArgument, ModelLoadFailed, ModelNotFound
from controlplane.fleet.fleet import Fleet
from controlplane.lifecycle.states import ModelState
from controlplane.types import ModelName

TRIGGER = "repository"


def parse_config(model: ModelName, text: str) -> dict[str, Any]:
    """The JSON object of a ``config`` parameter; ModelLoadFailed (Triton's wording) when it
    is not one."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ModelLoadFailed(model, f"the config override is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelLoadFailed(model, "the config override must be a JSON object")
    return config


async def repository_load(fleet: Fleet, model: ModelName, config: str | None = None) -> None:
    """Load ``model`` as plain Triton's RepositoryModelLoad would (see the module's
    docstring). Raises ModelLoadFailed (an unknown model included, in Triton's words),
    TritonUnavailable, InvalidArgument."""
    try:
        fleet.status(model)
    except ModelNotFound:
        raise ModelLoadFailed(model, "no such model in the model repository") from None
    override = None if config is None else parse_config(model, config)
    changed = False
    for _, manager in fleet.managers():
        changed |= manager.set_override(model, override)
    holders = [m for _, m in fleet.managers() if m.state(model) is ModelState.READY]
    if (override is None and not changed) or not holders:
        await fleet.load(model, trigger=TRIGGER)
        return
    # the loaded replicas load it again (each keeps serving until its new one is ready)
    results = await asyncio.gather(*(m.reload(model, trigger=TRIGGER) for m in holders),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    await fleet.load(model, trigger=TRIGGER)  # ends holds elsewhere, as an operator's load


def no_files(parameters: dict[str, Any]) -> None:
    """File overrides write the model's directory on the Triton host: refused here."""
    files = [key for key in parameters if key.startswith("file:")]
    if files:
        raise InvalidArgument("file overrides ('file:' parameters) are not accepted through "
                              "the gateway; a config override is")
