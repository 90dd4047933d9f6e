"""The one datatype table and shape-signature format (controlplane.tensors)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from controlplane.tensors import (
    DATATYPES,
    TensorShape,
    array_from_bytes,
    bf16_bytes,
    bf16_to_float32,
    config_name,
    datatype,
    decode_bytes_elements,
    encode_bytes_elements,
    parse_signature,
    signature_of,
    wire_name,
    zeros,
)


def test_every_triton_datatype_with_its_size_and_config_name() -> None:
    assert set(DATATYPES) == {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                              "INT32", "INT64", "FP16", "BF16", "FP32", "FP64", "BYTES"}
    for name, info in DATATYPES.items():
        if name != "BYTES":
            assert info.size == info.storage.itemsize
        assert wire_name(config_name(name)) == name == wire_name(info.config_name)
    assert config_name("BYTES") == "TYPE_STRING" and wire_name("TYPE_STRING") == "BYTES"
    assert datatype("BF16").size == 2 and datatype("BF16").kind == "float"
    assert datatype("UINT8").is_integer and not datatype("BOOL").is_integer
    with pytest.raises(ValueError, match="unknown datatype 'FP8'"):
        datatype("FP8")


def test_signature_round_trip_sorted_by_name() -> None:
    inputs = (TensorShape("b", "FP32", (4, 32)), TensorShape("a", "INT64", (4, 20)),
              TensorShape("s", "BYTES", ()))
    text = signature_of(inputs)
    assert text == "a:INT64:4x20,b:FP32:4x32,s:BYTES:"
    assert parse_signature(text) == tuple(sorted(inputs))
    with pytest.raises(ValueError, match="malformed"):
        parse_signature("a:INT64:4xq")


def test_bf16_is_float32_truncated_as_tritonclient_sends_it() -> None:
    values = np.array([1.5, -2.0, 3.140625, 1.0 + 2 ** -10], dtype=np.float32)
    raw = bf16_bytes(values)
    sent = grpcclient.InferInput("x", [4], "BF16")
    sent.set_data_from_numpy(values)
    assert raw == sent._get_content()  # the very bytes tritonclient puts on the wire
    # exact where BF16 holds the value; the low mantissa bits are dropped otherwise
    assert bf16_to_float32(raw).tolist() == [1.5, -2.0, 3.140625, 1.0]
    assert array_from_bytes("BF16", (2, 2), raw).dtype == np.float32


@pytest.mark.parametrize("name", sorted(DATATYPES))
def test_zeros_and_bytes_round_trip_through_tritonclient(name: str) -> None:
    array = zeros(name, (2, 3))
    tensor = grpcclient.InferInput("x", [2, 3], name)
    tensor.set_data_from_numpy(array)  # accepted as this datatype
    raw = tensor._get_content()
    if name == "BYTES":
        assert decode_bytes_elements(raw) == [b""] * 6
    else:
        assert raw == b"\0" * 6 * DATATYPES[name].storage.itemsize
        assert not array_from_bytes(name, (2, 3), raw).any()


def test_bytes_codec() -> None:
    raw = encode_bytes_elements([b"hi", b"", "wörld".encode()])
    assert decode_bytes_elements(raw) == [b"hi", b"", "wörld".encode()]
    assert array_from_bytes("BYTES", (3,), raw).tolist() == [b"hi", b"", "wörld".encode()]
    with pytest.raises(ValueError, match="claims 9 bytes"):
        decode_bytes_elements(b"\x09\0\0\0abc")
