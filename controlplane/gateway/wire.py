"""Reads the header of a serialized ModelInferRequest without parsing its tensors.

The gateway forwards request bytes untouched; it needs only the model, version, id and each
input's name, datatype and shape. Reading those straight off the protobuf wire costs the same
few microseconds whatever the payload size, where a full parse copies every tensor.

ModelInferRequest: 1 model_name, 2 model_version, 3 id, 4 parameters, 5 inputs, 6 outputs,
7 raw_input_contents. InferInputTensor: 1 name, 2 datatype, 3 shape (packed int64).
parameters: map entries (1 key, 2 InferParameter: 1 bool, 2 int64, 3 string, 4 double,
5 uint64); only the sequence controls are read (``sequence_id``, ``sequence_start``,
``sequence_end``: what routes a stateful model's request, see ``fleet/sequences.py``).
"""

from __future__ import annotations

from controlplane.errors import InvalidArgument
from controlplane.serving.facts import RequestFacts, Sequence
from controlplane.tensors import TensorShape

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

#: one input's name, datatype and shape: the shared tensor description
InputHeader = TensorShape


#: the facts the serving core needs, read off the wire
RequestHeader = RequestFacts


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise InvalidArgument("malformed ModelInferRequest: varint too long")


def _skip(buf: bytes, pos: int, wire_type: int) -> int:
    if wire_type == _VARINT:
        return _varint(buf, pos)[1]
    if wire_type == _LEN:
        length, pos = _varint(buf, pos)
        return pos + length
    if wire_type == _I64:
        return pos + 8
    if wire_type == _I32:
        return pos + 4
    raise InvalidArgument(f"malformed ModelInferRequest: wire type {wire_type}")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _input(buf: bytes, pos: int, end: int) -> InputHeader:
    name = datatype = ""
    shape: list[int] = []
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if field == 3 and wire_type == _LEN:  # packed shape, the usual encoding
            length, pos = _varint(buf, pos)
            stop = pos + length
            while pos < stop:
                value, pos = _varint(buf, pos)
                shape.append(_signed(value))
        elif field == 3 and wire_type == _VARINT:
            value, pos = _varint(buf, pos)
            shape.append(_signed(value))
        elif field in (1, 2) and wire_type == _LEN:
            length, pos = _varint(buf, pos)
            text = buf[pos:pos + length].decode()
            pos += length
            if field == 1:
                name = text
            else:
                datatype = text
        else:
            pos = _skip(buf, pos, wire_type)
    return InputHeader(name, datatype, tuple(shape))


_SEQUENCE_KEYS = {b"sequence_id": 0, b"sequence_start": 1, b"sequence_end": 2}


def _parameter(buf: bytes, pos: int, end: int, found: list[object]) -> None:
    """One ``parameters`` map entry; a sequence control is stored into ``found``
    ([id, start, end])."""
    slot: int | None = None
    value: object = None
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if field == 1 and wire_type == _LEN:
            length, pos = _varint(buf, pos)
            slot = _SEQUENCE_KEYS.get(buf[pos:pos + length])
            pos += length
            if slot is None:
                return  # not a sequence control: the rest of the entry does not matter
        elif field == 2 and wire_type == _LEN:
            length, pos = _varint(buf, pos)
            stop = pos + length
            while pos < stop:
                key, pos = _varint(buf, pos)
                choice, kind = key >> 3, key & 7
                if choice in (1, 2, 5) and kind == _VARINT:
                    number, pos = _varint(buf, pos)
                    value = bool(number) if choice == 1 else (
                        _signed(number) if choice == 2 else number)
                elif choice == 3 and kind == _LEN:
                    length, pos = _varint(buf, pos)
                    value = buf[pos:pos + length].decode()
                    pos += length
                else:
                    pos = _skip(buf, pos, kind)
        else:
            pos = _skip(buf, pos, wire_type)
    if slot is not None and value is not None:
        found[slot] = value


def _sequence(found: list[object]) -> Sequence | None:
    corrid = found[0]
    if corrid is None or corrid == 0 or corrid == "":
        return None  # Triton: 0 / "" is no sequence
    return Sequence(str(corrid), bool(found[1]), bool(found[2]))


def parse_request_header(buf: bytes) -> RequestHeader:
    """The routing and recording fields of a serialized ModelInferRequest."""
    model = version = request_id = ""
    inputs: list[InputHeader] = []
    spans: list[tuple[int, int]] = []
    controls: list[object] | None = None
    pos, size = 0, len(buf)
    try:
        while pos < size:
            key, pos = _varint(buf, pos)
            field, wire_type = key >> 3, key & 7
            if wire_type != _LEN:
                pos = _skip(buf, pos, wire_type)
                continue
            length, pos = _varint(buf, pos)
            end = pos + length
            if end > size:
                raise InvalidArgument("malformed ModelInferRequest: truncated field")
            if field == 1:
                model = buf[pos:end].decode()
            elif field == 2:
                version = buf[pos:end].decode()
            elif field == 3:
                request_id = buf[pos:end].decode()
            elif field == 5:
                inputs.append(_input(buf, pos, end))
            elif field == 7:
                spans.append((pos, end))
            elif field == 4:
                if controls is None:
                    controls = [None, False, False]
                _parameter(buf, pos, end, controls)
            pos = end
    except (IndexError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"malformed ModelInferRequest: {exc}") from None
    if pos != size:
        raise InvalidArgument("malformed ModelInferRequest: truncated message")
    return RequestHeader(model, version, request_id, tuple(inputs), tuple(spans),
                         None if controls is None else _sequence(controls))


def stream_response_id(buf: bytes) -> str:
    """The request id a ModelStreamInferResponse answers ("" when none or an error)."""
    pos, size = 0, len(buf)
    try:
        while pos < size:
            key, pos = _varint(buf, pos)
            field, wire_type = key >> 3, key & 7
            if field == 2 and wire_type == _LEN:  # infer_response: ModelInferResponse
                length, pos = _varint(buf, pos)
                end = pos + length
                while pos < end:
                    key, pos = _varint(buf, pos)
                    if key == (3 << 3 | _LEN):  # id
                        n, pos = _varint(buf, pos)
                        return buf[pos:pos + n].decode()
                    pos = _skip(buf, pos, key & 7)
                return ""
            pos = _skip(buf, pos, wire_type)
    except (IndexError, UnicodeDecodeError, InvalidArgument):
        return ""
    return ""


def with_version(buf: bytes, version: str) -> bytes:
    """A serialized ModelInferRequest naming ``version`` (field 2): appended, since protobuf
    takes the last value of a scalar field that occurs twice -- no re-serialization."""
    data = version.encode()
    return buf + b"\x12" + _encode_varint(len(data)) + data


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
