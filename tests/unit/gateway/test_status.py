"""Error text for gRPC clients: bounded on the wire, tracebacks only when configured."""

from __future__ import annotations

from urllib.parse import quote

from controlplane.gateway.status import STATUS_MESSAGE_LIMIT, client_message
from tests.unit.test_errors import INFER_ERROR


def _on_the_wire(text: str) -> int:
    # grpc-message is percent-encoded: printable ASCII but '%' as is, the rest %XX per byte
    return len(quote(text, safe="".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")))


def test_tracebacks_are_stripped_unless_exposed() -> None:
    assert client_message(INFER_ERROR).endswith("message: ValueError: bad input value (1, 3)")
    assert "model.py(8): execute" in client_message(INFER_ERROR, expose_tracebacks=True)


def test_a_reason_of_any_length_fits_the_metadata_limit_with_its_root_cause() -> None:
    # newlines and non-ASCII triple on the wire: the bound is in encoded bytes
    reason = "RuntimeError: weights missing\n" + "détail\n" * 20_000 + "last line"
    message = client_message(reason, expose_tracebacks=True)
    assert _on_the_wire(message) <= STATUS_MESSAGE_LIMIT
    assert message.startswith("RuntimeError: weights missing\n")
    assert message.endswith("last line")
    assert client_message("short reason") == "short reason"
