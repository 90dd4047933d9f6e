"""Which server-wide gateway RPCs a caller may make."""

from __future__ import annotations

from tritonclient.grpc import service_pb2

from controlplane.gateway.guard import Guard

TOKEN = b"t" * 20
SET_LOG = service_pb2.LogSettingsRequest()
SET_LOG.settings["log_verbose_level"].uint32_param = 1
READ_LOG = service_pb2.LogSettingsRequest()


def test_refused_by_default_and_opened_by_settings_or_the_admin_token() -> None:
    guard = Guard(admin_token=TOKEN)
    for method in ("SystemSharedMemoryRegister", "CudaSharedMemoryUnregister",
                   "RepositoryModelLoad"):
        refused = guard.refusal(method, b"", [])
        assert refused is not None and method in refused
        assert guard.refusal(method, b"", [("authorization", "Bearer " + TOKEN.decode())]) \
            is None
        assert guard.refusal(method, b"", [("authorization", "Bearer wrong")]) is not None
    assert guard.refusal("LogSettings", SET_LOG.SerializeToString(), []) is not None
    assert guard.refusal("LogSettings", READ_LOG.SerializeToString(), []) is None
    assert guard.refusal("SystemSharedMemoryStatus", b"", []) is None
    assert guard.refusal("ModelInfer", b"", None) is None
    opened = Guard(allow_shared_memory=True, allow_server_settings=True)
    assert opened.refusal("SystemSharedMemoryRegister", b"", None) is None
    assert opened.refusal("LogSettings", SET_LOG.SerializeToString(), None) is None
    assert opened.refusal("RepositoryModelUnload", b"", None) is not None


def test_without_an_admin_token_no_metadata_opens_them() -> None:
    guard = Guard()
    assert guard.refusal("SystemSharedMemoryRegister", b"",
                         [("authorization", "Bearer ")]) is not None
