"""The client's gRPC metadata that travels on with a forwarded call."""

from __future__ import annotations

from typing import Any


def forwarded_metadata(context: Any) -> tuple[tuple[str, str], ...] | None:
    """The client's headers worth passing on (auth, custom), without gRPC's own.
    ``context``: a grpc.aio.ServicerContext."""
    metadata = context.invocation_metadata()
    if not metadata:
        return None
    kept = tuple((m.key, m.value) for m in metadata
                 if not m.key.startswith(("grpc-", ":")) and m.key != "user-agent")
    return kept or None
