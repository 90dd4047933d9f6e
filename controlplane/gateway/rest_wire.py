"""The KServe-v2 HTTP/REST inference request, read for the serving core's facts.

A request is JSON, or JSON followed by binary tensor data (Triton's binary tensor data
extension: the ``Inference-Header-Content-Length`` header gives the JSON's length, and an
input whose ``parameters.binary_data_size`` is set takes that many bytes from after it, in
input order). The body is forwarded as it came; only the JSON header is parsed here, for the
model's inputs (name, datatype, shape), the request id, the sequence controls, the request's
own timeout (``parameters.timeout``, microseconds: Triton's schedule-policy extension) and
the byte ranges of binary inputs (value ranges and payload samples read them as for gRPC).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from controlplane.errors import InvalidArgument
from controlplane.serving.facts import RequestFacts, Sequence
from controlplane.tensors import TensorShape

HEADER_LENGTH = "Inference-Header-Content-Length"


class RestRequest(NamedTuple):
    facts: RequestFacts
    #: the request's own timeout (seconds), from ``parameters.timeout``; None: none given
    timeout_s: float | None


def _header(body: bytes, headers: Mapping[str, str]) -> tuple[Any, int]:
    """The JSON header (decompressed when the body is) and where the binary data begins."""
    encoding = headers.get("Content-Encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        try:
            body = zlib.decompress(body, 47 if encoding == "gzip" else 15)
        except zlib.error as exc:
            raise InvalidArgument(f"malformed {encoding} request body: {exc}") from None
    elif encoding not in ("", "identity"):
        raise InvalidArgument(f"unsupported Content-Encoding '{encoding[:40]}'")
    raw_length = headers.get(HEADER_LENGTH)
    try:
        length = len(body) if raw_length is None else int(raw_length)
    except ValueError:
        raise InvalidArgument(f"malformed {HEADER_LENGTH}: {str(raw_length)[:40]!r}") from None
    if not 0 <= length <= len(body):
        raise InvalidArgument(f"{HEADER_LENGTH} {length} is outside the body "
                              f"({len(body)} bytes)")
    try:
        return json.loads(body[:length]), length
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"malformed JSON in the inference request: {exc}") from None


def _sequence(parameters: Mapping[str, Any]) -> Sequence | None:
    corrid = parameters.get("sequence_id")
    if corrid in (None, 0, "") or isinstance(corrid, bool | float):
        return None
    return Sequence(str(corrid), bool(parameters.get("sequence_start")),
                    bool(parameters.get("sequence_end")))


def parse_infer(body: bytes, headers: Mapping[str, str], model: str,
                version: str) -> RestRequest:
    """The facts of one ``POST /v2/models/<model>[/versions/<version>]/infer`` body.
    Raises InvalidArgument for a body that is no KServe-v2 inference request."""
    header, offset = _header(body, headers)
    if not isinstance(header, dict):
        raise InvalidArgument("the inference request must be a JSON object")
    inputs: list[TensorShape] = []
    spans: list[tuple[int, int]] = []
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidArgument("the inference request has no 'inputs' list")
    binary = "Content-Encoding" not in headers  # compressed: byte ranges are not the body's
    for item in raw_inputs:
        if not isinstance(item, dict):
            raise InvalidArgument("each input must be a JSON object")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(
                shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                        for d in shape):
            raise InvalidArgument("each input needs a string 'name' and 'datatype' and an "
                                  "integer 'shape' list")
        inputs.append(TensorShape(name, datatype, tuple(shape)))
        parameters = item.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            if offset + size > len(body):
                raise InvalidArgument(f"input '{name[:100]}': binary_data_size {size} runs "
                                      "past the end of the body")
            spans.append((offset, offset + size))
            offset += size
        else:
            binary = False  # a JSON tensor among them: the ranges would not line up
    request_parameters = header.get("parameters") or {}
    if not isinstance(request_parameters, dict):
        raise InvalidArgument("'parameters' must be a JSON object")
    timeout_us = request_parameters.get("timeout")
    timeout_s = (timeout_us / 1e6 if isinstance(timeout_us, int) and timeout_us > 0
                 else None)
    request_id = header.get("id")
    facts = RequestFacts(model, version, request_id if isinstance(request_id, str) else "",
                         tuple(inputs), tuple(spans) if binary else (),
                         _sequence(request_parameters))
    return RestRequest(facts, timeout_s)


def error_body(message: str) -> bytes:
    """KServe-v2's error shape: ``{"error": "<message>"}``."""
    return json.dumps({"error": message}).encode()
