"""Which of the gateway's server-wide RPCs a caller may make.

Inference is per model and open (as on plain Triton's port). These act on the whole shared
Triton instead, and are refused unless the settings allow them or the call carries the
admin token (``authorization: Bearer <token>`` metadata):

- shared-memory register/unregister (system and CUDA): Triton would read and write any
  ``/dev/shm`` object a client names, and unregister everyone's regions;
- log and trace settings changes (a client could flood the log or turn tracing on). Reading
  the settings (a request without settings) stays open, as do the shared-memory status calls;
- repository load/unload (``gateway.allow_repository_control``).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from tritonclient.grpc import service_pb2

SHARED_MEMORY = frozenset({"SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
                           "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister"})
SETTINGS = {"LogSettings": service_pb2.LogSettingsRequest,
            "TraceSetting": service_pb2.TraceSettingRequest}
REPOSITORY = frozenset({"RepositoryModelLoad", "RepositoryModelUnload"})
GUARDED = SHARED_MEMORY | REPOSITORY | frozenset(SETTINGS)


@dataclass(frozen=True)
class Guard:
    allow_shared_memory: bool = False
    allow_server_settings: bool = False
    allow_repository_control: bool = False
    #: the admin API's admin token as bytes; None: no token opens these calls
    admin_token: bytes | None = None

    def refusal(self, method: str, request: bytes,
                metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
        """None when the call may go on, else why not (a PERMISSION_DENIED message)."""
        if method in SHARED_MEMORY:
            allowed, setting = self.allow_shared_memory, "GATEWAY__ALLOW_SHARED_MEMORY"
        elif method in SETTINGS:
            if not SETTINGS[method].FromString(request).settings:
                return None  # a read
            allowed, setting = self.allow_server_settings, "GATEWAY__ALLOW_SERVER_SETTINGS"
        elif method in REPOSITORY:
            allowed, setting = self.allow_repository_control, \
                "GATEWAY__ALLOW_REPOSITORY_CONTROL"
        else:
            return None
        if allowed or self.has_admin_token(metadata):
            return None
        return (f"{method} acts on the whole shared Triton and is disabled on the inference "
                f"gateway: set WARMCTL_{setting}=true, or call it with the admin token "
                "(metadata 'authorization: Bearer <admin token>')")

    def has_admin_token(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        if self.admin_token is None or metadata is None:
            return False
        for key, value in metadata:
            if key.lower() != "authorization":
                continue
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                    token.strip().encode("utf-8", "surrogateescape"), self.admin_token):
                return True
        return False
