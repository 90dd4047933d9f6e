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


TORCHSCRIPT_ERROR = (
    "Failed to process the request(s) for model 'ranker_0_0', message: RuntimeError: The "
    "following operation failed in the TorchScript interpreter.\n"
    "Traceback of TorchScript, serialized code (most recent call last):\n"
    '  File "code/__torch__/torch/nn/modules/sparse.py", line 14, in forward\n'
    "    weight = self.weight\n"
    "    return torch.embedding(weight, input, -1, False, False)\n"
    "           ~~~~~~~~~~~~~~~ <--- HERE\n\n"
    "Traceback of TorchScript, original code (most recent call last):\n"
    '  File "/opt/venv/lib/python3.11/site-packages/torch/nn/functional.py", line 2237\n'
    "IndexError: index out of range in self\n")


def test_a_models_runtime_error_reaches_clients_without_its_code_or_server_paths() -> None:
    message = client_message(TORCHSCRIPT_ERROR)
    assert message == ("Failed to process the request(s) for model 'ranker_0_0', message: "
                       "RuntimeError: IndexError: index out of range in self")
    assert "site-packages" not in message and "HERE" not in message
    load = client_message("failed to load 'm': Traceback (most recent call last):\n"
                          '  File "/srv/models/m/1/model.py", line 3\n'
                          "ImportError: cannot import /srv/models/m/1/helpers.py")
    assert "/srv/" not in load and ".../helpers.py" in load
    assert client_message("see http://example.com/a/b") == "see http://example.com/a/b"
    # the operator may ask for everything
    assert client_message(TORCHSCRIPT_ERROR, expose_tracebacks=True) == TORCHSCRIPT_ERROR
