from __future__ import annotations

import random

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from controlplane.errors import InvalidArgument
from controlplane.gateway.wire import (
    InputHeader,
    parse_request_header,
    stream_response_id,
)


def _request(seed: int) -> tuple[service_pb2.ModelInferRequest, list[bytes]]:
    rng = random.Random(seed)
    request = service_pb2.ModelInferRequest(
        model_name=f"model_{seed}", model_version=rng.choice(["", "1", "17"]),
        id=rng.choice(["", f"req-{seed}"]))
    request.parameters["sequence_id"].int64_param = 7
    raws = []
    for i in range(rng.randint(0, 4)):
        tensor = request.inputs.add(name=f"in{i}", datatype=rng.choice(["FP32", "INT64"]))
        tensor.shape.extend(rng.randint(1, 3000) for _ in range(rng.randint(1, 3)))
        tensor.parameters["binary_data_size"].int64_param = 5
        raw = np.random.default_rng(seed + i).bytes(rng.randint(0, 300))
        request.raw_input_contents.append(raw)
        raws.append(raw)
    request.outputs.add(name="out")
    return request, raws


@pytest.mark.parametrize("seed", range(40))
def test_header_matches_a_full_protobuf_parse(seed: int) -> None:
    request, raws = _request(seed)
    buf = request.SerializeToString()
    header = parse_request_header(buf)
    assert (header.model, header.version, header.id) == (
        request.model_name, request.model_version, request.id)
    assert header.inputs == tuple(
        InputHeader(t.name, t.datatype, tuple(t.shape)) for t in request.inputs)
    assert [buf[a:b] for a, b in header.raw_spans] == raws


def test_negative_dims_and_unpacked_shape() -> None:
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32")
    tensor.shape.extend([-1, 4])
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.append(tensor)
    assert parse_request_header(request.SerializeToString()).inputs[0].shape == (-1, 4)
    # an encoder may write repeated int64 unpacked: field 3, varint, one entry per dim
    unpacked_input = b"\x0a\x01x" + b"\x18\x02" + b"\x18\x05"
    buf = b"\x0a\x01m" + b"\x2a" + bytes([len(unpacked_input)]) + unpacked_input
    assert parse_request_header(buf).inputs == (InputHeader("x", "", (2, 5)),)


@pytest.mark.parametrize("cut", [1, 5, 17, 30])
def test_truncated_or_garbage_bytes_are_invalid_argument(cut: int) -> None:
    request, _ = _request(3)
    buf = request.SerializeToString()
    with pytest.raises(InvalidArgument, match="malformed ModelInferRequest"):
        parse_request_header(buf[:-cut])
    with pytest.raises(InvalidArgument):
        parse_request_header(b"\xff" * cut)


def test_stream_response_id() -> None:
    response = service_pb2.ModelStreamInferResponse()
    response.infer_response.model_name = "m"
    response.infer_response.id = "abc"
    response.infer_response.raw_output_contents.append(b"\x00" * 64)
    assert stream_response_id(response.SerializeToString()) == "abc"
    assert stream_response_id(service_pb2.ModelStreamInferResponse(
        error_message="boom").SerializeToString()) == ""
    assert stream_response_id(b"\xff\xff") == ""


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("int64_param", 5, "5"), ("uint64_param", 2**63 + 5, str(2**63 + 5)),
    ("string_param", "client-7", "client-7")])
def test_sequence_controls_are_read_from_the_parameters(kind: str, value: object,
                                                        expected: str) -> None:
    request = service_pb2.ModelInferRequest(model_name="acc", id="r1")
    setattr(request.parameters["sequence_id"], kind, value)
    request.parameters["sequence_start"].bool_param = True
    request.parameters["priority"].uint64_param = 3  # other parameters are skipped
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    header = parse_request_header(request.SerializeToString())
    assert header.sequence == (expected, True, False)
    assert (header.model, header.id, header.inputs[0].shape) == ("acc", "r1", (1, 1))
    request.parameters["sequence_start"].bool_param = False
    request.parameters["sequence_end"].bool_param = True
    assert parse_request_header(request.SerializeToString()).sequence == (expected, False, True)


def test_no_sequence_without_a_correlation_id_or_with_id_zero() -> None:
    request = service_pb2.ModelInferRequest(model_name="acc")
    assert parse_request_header(request.SerializeToString()).sequence is None
    request.parameters["sequence_start"].bool_param = True
    assert parse_request_header(request.SerializeToString()).sequence is None
    request.parameters["sequence_id"].int64_param = 0  # Triton: 0 is "no sequence"
    assert parse_request_header(request.SerializeToString()).sequence is None
