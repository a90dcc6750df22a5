"""A protobuf writer for the part of ONNX that nnc emits, so that `nnc compile` never imports
onnx (whose import alone costs more than the whole compilation).

Each function returns one message, encoded, as a list of bytes-like chunks (weights stay
zero-copy views of their arrays until they are written); `join` makes them one bytes. The
encoding is the protobuf runtime's: fields in field-number order, proto2 presence (a field
that was set is written even when it is zero or empty), repeated scalars unpacked (onnx.proto
marks none of the ones used here `packed`), negative int64 as ten-byte varints, floats as
little-endian fixed32. tests/onnx/test_onnx_proto.py checks the bytes against onnx's own
`SerializeToString()` of the same model built with onnx.helper.

Field numbers are onnx/onnx.proto's (onnx 1.23, syntax proto2); the message each function
writes is named in its docstring. Only the fields nnc sets are written."""

from __future__ import annotations

import numbers
import struct
from typing import Iterable, Sequence, Union

Chunk = Union[bytes, bytearray, memoryview]

# AttributeProto.AttributeType
FLOAT, INT, STRING, FLOATS, INTS, STRINGS = 1, 2, 3, 6, 7, 8
# TensorProto.DataType, as nnc uses them
DTYPE = {"float32": 1, "int64": 7}
# TensorProto.DataLocation
EXTERNAL = 1

DEFAULT_OPSET = 17
"""Default ai.onnx opset: supported by onnxruntime >= 1.11, TensorRT 8.6, OpenVINO and others."""
MIN_OPSET = 14
"""Opset 14 is the first with the recurrent operators' current definitions (and `layout`)."""
MAX_OPSET = 26
"""The newest opset onnxruntime 1.31 loads; every opset in the range is tested (tests/onnx/test_onnx_opsets.py)."""
SUPPORTED_OPSETS = range(MIN_OPSET, MAX_OPSET + 1)
"""The opsets nnc writes (nnc.onnx.export re-exports these names)."""

IR_VERSION = {14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11, 24: 12, 25: 13, 26: 13}
"""The lowest IR version that carries each ai.onnx opset: onnx.helper.find_min_ir_version_for
(its OP_SET_ID_VERSION_MAP), copied; tests/onnx/test_onnx_proto.py checks it against onnx."""

_VARINT, _FIXED32, _LEN = 0, 5, 2
_SMALL = [bytes([i]) for i in range(128)]


def varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL[n]
    n &= (1 << 64) - 1  # int64: a negative number is its two's complement, ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def _int(field: int, n: int) -> bytes:
    return _tag(field, _VARINT) + varint(n)


def _float(field: int, x: float) -> bytes:
    return _tag(field, _FIXED32) + struct.pack("<f", x)


def _bytes(field: int, b: bytes) -> bytes:
    return _tag(field, _LEN) + varint(len(b)) + b


def _str(field: int, s: str) -> bytes:
    return _bytes(field, s.encode("utf-8"))


def size(chunks: Iterable[Chunk]) -> int:
    return sum(len(c) for c in chunks)


def _message(field: int, chunks: list[Chunk]) -> list[Chunk]:
    """An embedded message: its tag, its length, its chunks."""
    return [_tag(field, _LEN) + varint(size(chunks)), *chunks]


def join(chunks: Iterable[Chunk]) -> bytes:
    return b"".join(chunks)


def attribute(name: str, value) -> bytes:
    """AttributeProto, typed from the Python value as onnx.helper.make_attribute types it:
    name = 1, f = 2, i = 3, s = 4, floats = 7, ints = 8, strings = 9, type = 20."""
    out = _str(1, name)
    if isinstance(value, numbers.Integral):
        return out + _int(3, int(value)) + _int(20, INT)
    if isinstance(value, numbers.Real):
        return out + _float(2, float(value)) + _int(20, FLOAT)
    if isinstance(value, (str, bytes)):
        return out + _bytes(4, value.encode("utf-8") if isinstance(value, str) else value) + _int(20, STRING)
    value = list(value)
    if value and all(isinstance(v, numbers.Integral) for v in value):
        return out + b"".join(_int(8, int(v)) for v in value) + _int(20, INTS)
    if value and all(isinstance(v, numbers.Real) for v in value):
        return out + b"".join(_float(7, float(v)) for v in value) + _int(20, FLOATS)
    if value and all(isinstance(v, (str, bytes)) for v in value):
        return out + b"".join(_bytes(9, v.encode("utf-8") if isinstance(v, str) else v) for v in value) \
            + _int(20, STRINGS)
    raise TypeError(f"attribute {name}: cannot encode {value!r}")


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "", **attrs) -> bytes:
    """NodeProto as onnx.helper.make_node makes it: input = 1, output = 2, name = 3 (when not
    empty), op_type = 4, attribute = 5 (sorted by name, None left out)."""
    out = [_str(1, i) for i in inputs] + [_str(2, o) for o in outputs]
    if name:
        out.append(_str(3, name))
    out.append(_str(4, op_type))
    out += [_bytes(5, attribute(k, v)) for k, v in sorted(attrs.items()) if v is not None]
    return b"".join(out)


def tensor(name: str, dims: Sequence[int], data_type: int, raw: Chunk,
           external: tuple[str, int] | None = None) -> list[Chunk]:
    """TensorProto with its data in raw_data, as onnx.numpy_helper.from_array makes it:
    dims = 1, data_type = 2, name = 8 (when not empty), raw_data = 9. With `external`
    (location, offset), the data lives in a side file instead, as onnx.save_model's external
    data writes it: no raw_data, external_data = 13 (location, offset, length), data_location = 14."""
    head = b"".join(_int(1, d) for d in dims) + _int(2, data_type) + (_str(8, name) if name else b"")
    if external is None:
        return [head + _tag(9, _LEN) + varint(len(raw)), raw]
    location, offset = external
    entries = [("location", location), ("offset", str(offset)), ("length", str(len(raw)))]
    return [head + b"".join(_bytes(13, string_entry(k, v)) for k, v in entries) + _int(14, EXTERNAL)]


def string_entry(key: str, value: str) -> bytes:
    """StringStringEntryProto: key = 1, value = 2."""
    return _str(1, key) + _str(2, value)


def value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    """ValueInfoProto of a tensor, as onnx.helper.make_tensor_value_info makes it: name = 1,
    type = 2 -> TypeProto.tensor_type = 1 -> elem_type = 1, shape = 2 (written even when it
    has no dims) -> TensorShapeProto.dim = 1 -> dim_value = 1 or dim_param = 2."""
    shape = b"".join(_bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    tensor_type = _int(1, elem_type) + _bytes(2, shape)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


def graph(nodes: Sequence[bytes], name: str, initializers: Sequence[list[Chunk]], inputs: Sequence[bytes],
          outputs: Sequence[bytes], value_infos: Sequence[bytes] = (), doc_string: str = "") -> list[Chunk]:
    """GraphProto: node = 1, name = 2, initializer = 5, doc_string = 10 (when not empty),
    input = 11, output = 12, value_info = 13."""
    out: list[Chunk] = [b"".join(_bytes(1, n) for n in nodes) + _str(2, name)]
    for t in initializers:
        out += _message(5, t)
    tail = [_str(10, doc_string)] if doc_string else []
    tail += [_bytes(11, v) for v in inputs] + [_bytes(12, v) for v in outputs] + [_bytes(13, v) for v in value_infos]
    out.append(b"".join(tail))
    return out


def model(graph: list[Chunk], opset: int, ir_version: int, producer_name: str, producer_version: str,
          model_version: int, metadata: dict[str, str]) -> list[Chunk]:
    """ModelProto with one ai.onnx opset: ir_version = 1, producer_name = 2, producer_version = 3,
    model_version = 5, graph = 7, opset_import = 8 -> OperatorSetIdProto (domain = 1, written
    empty as onnx.helper.make_opsetid sets it; version = 2), metadata_props = 14."""
    head = _int(1, ir_version) + _str(2, producer_name) + _str(3, producer_version) + _int(5, model_version)
    opset_id = _str(1, "") + _int(2, opset)
    tail = _bytes(8, opset_id) + b"".join(_bytes(14, string_entry(k, v)) for k, v in metadata.items())
    return [head, *_message(7, graph), tail]
