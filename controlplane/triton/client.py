"""A typed, timeout-bound wrapper over ``tritonclient.grpc.aio`` for one Triton instance.

Every call carries a deadline, every tritonclient exception becomes a ControlPlaneError, and
at most one load or unload per model is in flight (Triton has loaded one Python model several
times when asked concurrently: server issue #7058).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from tritonclient.grpc import aio as triton_aio
from tritonclient.utils import InferenceServerException

from controlplane.errors import (
    ControlPlaneError,
    DeadlineExceeded,
    ModelLoadFailed,
    ModelNotFound,
    TritonUnavailable,
)
from controlplane.types import ModelConfigJson, ModelFiles, ModelName

#: Every channel to Triton (this client's, the gateway's): tritonclient's own options
#: (unlimited messages, its keep-alive defaults), plus: an error with a Python traceback can
#: exceed gRPC's default 8/16 KiB of metadata and would otherwise never arrive (the gateway
#: bounds it for its clients, gateway/status.py); and after Triton restarts, reconnect within
#: a second (gRPC's default back-off grows to minutes while it is down)
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.keepalive_time_ms", 2**31 - 1),
    ("grpc.keepalive_timeout_ms", 20000),
    ("grpc.keepalive_permit_without_calls", False),
    ("grpc.http2.max_pings_without_data", 2),
    ("grpc.max_metadata_size", 8 << 20),
    ("grpc.absolute_max_metadata_size", 8 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

T = TypeVar("T")

#: Triton's repository index states.
READY = "READY"
LOADING = "LOADING"
UNLOADING = "UNLOADING"
UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class IndexEntry:
    name: ModelName
    #: None for a model Triton has never loaded (the index shows only its name then).
    version: str | None
    state: str | None
    reason: str


def _status_name(exc: InferenceServerException) -> str:
    status = exc.status() or ""
    return str(status).removeprefix("StatusCode.")


class TritonClient:
    def __init__(
        self,
        url: str,
        *,
        call_timeout_s: float = 10.0,
        load_timeout_s: float = 300.0,
        unload_timeout_s: float = 60.0,
    ) -> None:
        self.url = url
        self.call_timeout_s = call_timeout_s
        self.load_timeout_s = load_timeout_s
        self.unload_timeout_s = unload_timeout_s
        self._client: triton_aio.InferenceServerClient | None = None
        self._model_locks: dict[ModelName, asyncio.Lock] = {}

    @property
    def _grpc(self) -> triton_aio.InferenceServerClient:
        # Created lazily: a grpc.aio channel binds to the event loop that first uses it.
        if self._client is None:
            self._client = triton_aio.InferenceServerClient(self.url, channel_args=CHANNEL_OPTIONS)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _lock(self, model: ModelName) -> asyncio.Lock:
        return self._model_locks.setdefault(model, asyncio.Lock())

    def busy(self, model: ModelName) -> bool:
        """Whether a load or unload of ``model`` is in flight through this client."""
        lock = self._model_locks.get(model)
        return lock is not None and lock.locked()

    async def _call(
        self,
        what: str,
        call: Callable[[float], Awaitable[T]],
        timeout_s: float,
        *,
        model: ModelName | None = None,
        on_error: Callable[[str, str], ControlPlaneError] | None = None,
    ) -> T:
        # tritonclient enforces the deadline through gRPC; the outer wait_for also covers a
        # channel that never connects.
        try:
            return await asyncio.wait_for(call(timeout_s), timeout_s + 1.0)
        except TimeoutError:
            raise DeadlineExceeded(f"{what} timed out after {timeout_s:g}s") from None
        except InferenceServerException as exc:
            status, message = _status_name(exc), exc.message() or str(exc)
            if status == "DEADLINE_EXCEEDED" or "Deadline Exceeded" in message:
                raise DeadlineExceeded(f"{what} timed out after {timeout_s:g}s") from None
            if status == "UNAVAILABLE":
                raise TritonUnavailable(f"Triton at {self.url} is unreachable: {message}") from None
            if on_error is not None:
                raise on_error(status, message) from None
            raise TritonUnavailable(f"{what} failed: {message}") from None
        except grpc.RpcError as exc:  # raised directly by some channel failures
            raise TritonUnavailable(f"Triton at {self.url} is unreachable: {exc}") from None

    # -- health -----------------------------------------------------------------------------
    async def is_live(self) -> bool:
        return bool(await self._call(
            "liveness check", lambda t: self._grpc.is_server_live(client_timeout=t),
            self.call_timeout_s))

    async def is_ready(self) -> bool:
        return bool(await self._call(
            "readiness check", lambda t: self._grpc.is_server_ready(client_timeout=t),
            self.call_timeout_s))

    async def is_model_ready(self, model: ModelName) -> bool:
        return bool(await self._call(
            f"readiness check of '{model}'",
            lambda t: self._grpc.is_model_ready(model, client_timeout=t),
            self.call_timeout_s, model=model, on_error=lambda s, m: ModelNotFound(model)))

    # -- repository -------------------------------------------------------------------------
    async def index(self) -> list[IndexEntry]:
        raw: dict[str, Any] = await self._call(
            "repository index",
            lambda t: self._grpc.get_model_repository_index(as_json=True, client_timeout=t),
            self.call_timeout_s)
        return [
            IndexEntry(
                name=m["name"],
                version=m.get("version") or None,
                state=m.get("state") or None,
                reason=m.get("reason", ""),
            )
            for m in raw.get("models", [])
        ]

    async def model_index(self, model: ModelName) -> list[IndexEntry]:
        return [entry for entry in await self.index() if entry.name == model]

    async def load(
        self,
        model: ModelName,
        *,
        config: ModelConfigJson | None = None,
        files: ModelFiles | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Load (or reload) ``model``; returns once every instance initialized and warmed up.

        ``config`` replaces config.pbtxt entirely; ``files`` replace the whole model directory
        (paths relative to it, e.g. ``1/model.pt``).
        """
        timeout = timeout_s or self.load_timeout_s
        config_text = json.dumps(config) if config is not None else None
        file_params = {f"file:{path}": data for path, data in (files or {}).items()} or None

        def failed(_status: str, message: str) -> ControlPlaneError:
            return ModelLoadFailed(model, message)

        async with self._lock(model):
            await self._call(
                f"load of '{model}'",
                lambda t: self._grpc.load_model(
                    model, config=config_text, files=file_params, client_timeout=t),
                timeout, model=model, on_error=failed)

    async def unload(self, model: ModelName, *, timeout_s: float | None = None) -> None:
        """Unload ``model`` and wait until Triton reports every version UNAVAILABLE.

        Triton's unload returns at once while versions drain in-flight requests; memory is
        only worth counting as freed after this returns.
        """
        timeout = timeout_s or self.unload_timeout_s
        deadline = time.monotonic() + timeout
        async with self._lock(model):
            await self._call(
                f"unload of '{model}'",
                lambda t: self._grpc.unload_model(model, client_timeout=t),
                min(timeout, self.call_timeout_s), model=model,
                on_error=lambda s, m: ModelNotFound(model) if s == "NOT_FOUND"
                else TritonUnavailable(f"unload of '{model}' failed: {m}"))
            delay = 0.02
            while True:
                entries = await self.model_index(model)
                if all(e.state in (None, UNAVAILABLE) for e in entries):
                    return
                if time.monotonic() + delay > deadline:
                    states = ", ".join(f"v{e.version}={e.state}" for e in entries)
                    raise DeadlineExceeded(
                        f"'{model}' still not unloaded after {timeout:g}s ({states})")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)

    # -- models -----------------------------------------------------------------------------
    async def model_config(self, model: ModelName) -> ModelConfigJson:
        raw: dict[str, Any] = await self._call(
            f"config of '{model}'",
            lambda t: self._grpc.get_model_config(model, as_json=True, client_timeout=t),
            self.call_timeout_s, on_error=lambda s, m: ModelNotFound(model))
        config: ModelConfigJson = raw.get("config", raw)
        return config

    async def statistics(self, model: ModelName) -> dict[str, Any]:
        """Triton's statistics for ``model`` (all versions), in Triton's JSON form."""
        raw: dict[str, Any] = await self._call(
            f"statistics of '{model}'",
            lambda t: self._grpc.get_inference_statistics(model, as_json=True, client_timeout=t),
            self.call_timeout_s, on_error=lambda s, m: ModelNotFound(model))
        return raw
