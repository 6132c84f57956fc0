"""Read a frozen TensorFlow ``GraphDef`` (``.pb``) without TensorFlow or generated protobuf code.

A frozen graph is a protobuf ``GraphDef``: repeated ``NodeDef`` (name, op, inputs, attributes);
constants hold their values in a ``TensorProto``. Only the few fields a weight converter needs
are decoded, straight from the protobuf wire format (field numbers from TensorFlow's
``graph.proto``, ``node_def.proto``, ``attr_value.proto``, ``tensor.proto``,
``tensor_shape.proto``); everything else is skipped. Tests check the result against
TensorBoard's generated ``graph_pb2`` parser.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# TensorFlow DataType enum -> NumPy dtype (types.proto); only the ones frozen graphs carry.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
}
# TensorProto repeated value field per dtype: float_val=5, double_val=6, int_val=7, int64_val=10,
# bool_val=11.
_VALUE_FIELD = {1: 5, 2: 6, 3: 7, 4: 7, 9: 10, 10: 11}


class GraphDefError(ValueError):
    """The file is not a GraphDef this reader understands."""


@dataclass
class Node:
    """One ``NodeDef``: its name, op type, inputs and the attributes we decode."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)  # str, int, float, bool, list, ndarray

    @property
    def value(self) -> np.ndarray:
        """The constant's value (only for ``op == "Const"``)."""
        if self.op != "Const" or not isinstance(self.attrs.get("value"), np.ndarray):
            raise GraphDefError(f"node {self.name!r} ({self.op}) holds no constant tensor")
        return self.attrs["value"]


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise GraphDefError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, Any]]:
    """Yield (field number, wire type, value) for one serialised message: varints as int,
    length-delimited as memoryview, fixed32/64 as raw 4/8 bytes."""
    buf = memoryview(buf)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise GraphDefError("truncated length-delimited field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            raise GraphDefError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _shape(buf: memoryview) -> list[int]:
    dims = []
    for number, _, value in _fields(buf):
        if number == 2:  # Dim
            size = 0
            for n, _, v in _fields(value):
                if n == 1:
                    size = _signed(v)
            dims.append(size)
    return dims


def _tensor(buf: memoryview) -> np.ndarray:
    dtype, shape, content, values = 0, [], None, []
    value_field: int | None = None
    raw: list[tuple[int, int, Any]] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype = value
        elif number == 2:
            shape = _shape(value)
        elif number == 4:
            content = bytes(value)
        else:
            raw.append((number, wire, value))
    if dtype not in _DTYPES:
        raise GraphDefError(f"unsupported tensor dtype enum {dtype}")
    np_dtype = _DTYPES[dtype]
    value_field = _VALUE_FIELD[dtype]
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        return np.frombuffer(content, dtype=np_dtype).reshape(shape).copy()
    for number, wire, value in raw:
        if number != value_field:
            continue
        if wire == 2 and dtype in (1, 2):  # packed floats / doubles
            values.extend(np.frombuffer(bytes(value), dtype=np_dtype).tolist())
        elif wire == 2:  # packed varints
            pos, data = 0, value
            while pos < len(data):
                v, pos = _varint(data, pos)
                values.append(_signed(v))
        elif wire == 5:
            values.append(struct.unpack("<f", bytes(value))[0])
        elif wire == 1:
            values.append(struct.unpack("<d", bytes(value))[0])
        else:
            values.append(_signed(value))
    if not values:
        return np.zeros(shape, dtype=np_dtype)
    arr = np.asarray(values, dtype=np_dtype)
    if arr.size == count:
        return arr.reshape(shape)
    # why: TensorProto semantics: when fewer values than elements are given, the last one
    # repeats (e.g. a [512] tensor of ones is stored as float_val: 1.0).
    out = np.empty(count, dtype=np_dtype)
    out[: arr.size] = arr
    out[arr.size :] = arr[-1]
    return out.reshape(shape)


def _attr_list(buf: memoryview) -> list[Any]:
    out: list[Any] = []
    for number, wire, value in _fields(buf):
        if number == 2:  # s
            out.append(bytes(value).decode("utf-8", "replace"))
        elif number == 3:  # i (packed or not)
            if wire == 2:
                pos = 0
                while pos < len(value):
                    v, pos = _varint(value, pos)
                    out.append(_signed(v))
            else:
                out.append(_signed(value))
        elif number == 4:  # f
            if wire == 2:
                out.extend(np.frombuffer(bytes(value), dtype="<f4").tolist())
            else:
                out.append(struct.unpack("<f", bytes(value))[0])
    return out


def _attr_value(buf: memoryview) -> Any:
    for number, _, value in _fields(buf):
        if number == 1:
            return _attr_list(value)
        if number == 2:
            return bytes(value).decode("utf-8", "replace")
        if number == 3:
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", bytes(value))[0]
        if number == 5:
            return bool(value)
        if number == 6:
            return int(value)  # a DataType enum
        if number == 7:
            return _shape(value)
        if number == 8:
            return _tensor(value)
    return None


def _node(buf: memoryview) -> Node:
    node = Node(name="", op="")
    for number, _, value in _fields(buf):
        if number == 1:
            node.name = bytes(value).decode()
        elif number == 2:
            node.op = bytes(value).decode()
        elif number == 3:
            node.inputs.append(bytes(value).decode())
        elif number == 5:  # map<string, AttrValue> entry: key=1, value=2
            key, attr = "", None
            for n, _, v in _fields(value):
                if n == 1:
                    key = bytes(v).decode()
                elif n == 2:
                    attr = _attr_value(v)
            node.attrs[key] = attr
    return node


def parse_graphdef(data: bytes) -> list[Node]:
    """Serialised ``GraphDef`` bytes -> its nodes in file order.

    Raises:
        GraphDefError: when the bytes are not a GraphDef (bad wire format, no nodes).
    """
    nodes = [_node(value) for number, wire, value in _fields(data) if number == 1 and wire == 2]
    if not nodes or any(not n.name or not n.op for n in nodes):
        raise GraphDefError("no named nodes: not a TensorFlow GraphDef")
    return nodes


def read_graphdef(path: str | os.PathLike) -> list[Node]:
    """Read a frozen ``.pb`` file -> its nodes; errors name the file."""
    path = Path(path)
    try:
        return parse_graphdef(path.read_bytes())
    except GraphDefError as e:
        raise GraphDefError(f"{path}: {e}") from None
