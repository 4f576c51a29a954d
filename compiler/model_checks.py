"""Checks of an ONNX model that the ONNX checker does not make.

``onnx.checker`` accepts an initializer with more bytes than its dims need (a truncated or
hand-edited file, a dtype changed without its data), an unknown ``data_type``, and
external-data entries with a NUL byte in the location or an offset/length past the end
of the data file. Every later stage (``numpy_helper.to_array``, onnxsim, TVM's importer)
then fails with its own error text, or reads out of range. These checks run before any
of them (:func:`lwc.frontend.check_model`: :func:`check`; :func:`lwc.frontend.load_onnx`:
:func:`check_external_data`) and say which tensor, value or node is wrong, as one
:class:`LwcError` line. Likewise graph values of an unknown element type, and a zero
stride, dilation, kernel size or group, on which onnxsim dies with SIGFPE, and names
that are not UTF-8 (protobuf hands them over as bytes). Each check
answers a finding of ``benchmarks/fuzz_loader.py`` (benchmarks/fuzz_loader.md).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import onnx
from lwc.errors import LwcError
from onnx import TensorProto, external_data_helper

#: Data types whose typed field holds one entry per element (raw_data: itemsize bytes).
_ITEMSIZE = {
    TensorProto.FLOAT: 4, TensorProto.UINT8: 1, TensorProto.INT8: 1, TensorProto.UINT16: 2,
    TensorProto.INT16: 2, TensorProto.INT32: 4, TensorProto.INT64: 8, TensorProto.BOOL: 1,
    TensorProto.FLOAT16: 2, TensorProto.DOUBLE: 8, TensorProto.UINT32: 4, TensorProto.UINT64: 8,
    TensorProto.BFLOAT16: 2, TensorProto.FLOAT8E4M3FN: 1, TensorProto.FLOAT8E4M3FNUZ: 1,
    TensorProto.FLOAT8E5M2: 1, TensorProto.FLOAT8E5M2FNUZ: 1,
}
_FIELD = {
    TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data",
    TensorProto.INT64: "int64_data", TensorProto.UINT32: "uint64_data",
    TensorProto.UINT64: "uint64_data",
}  # the rest of _ITEMSIZE's types: int32_data


def _tensors(graph: onnx.GraphProto, where: str = ""):
    """(tensor, label) for every initializer and Constant value, subgraphs included."""
    for t in graph.initializer:
        yield t, f"initializer {t.name!r}{where}"
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t, f"node {node.name or node.op_type!r} attribute {attr.name!r}{where}"
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(attr.g, f" (in {attr.g.name or attr.name!r})")
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _tensors(g, f" (in {g.name or attr.name!r})")


def check(model: onnx.ModelProto) -> None:
    """All of this module's checks of a loaded model (external data already read):
    names, tensor data, value types, spatial attributes.

    Raises:
        LwcError: the first problem, naming the tensor, value or node.
    """
    if not model.HasField("graph"):
        return
    check_names(model)
    check_tensor_data(model)
    check_value_types(model)
    check_attributes(model)


def check_names(model: onnx.ModelProto) -> None:
    """Names, op types and domains must be UTF-8 text. (Protobuf's Python API returns
    ``bytes`` for a string field that is not, e.g. a node name with a flipped byte; the
    summary's table and the manifest's JSON then fail on it.)

    Raises:
        LwcError: naming the node (by index) or the field.
    """
    fields = [("model producer_name", model.producer_name), ("model domain", model.domain),
              *[("opset domain", o.domain) for o in model.opset_import]]
    for graph in all_graphs(model.graph):
        fields.append(("graph name", graph.name))
        for kind, values in (("input", graph.input), ("output", graph.output),
                             ("value_info", graph.value_info), ("initializer", graph.initializer)):
            fields += [(f"graph {kind} #{i} name", v.name) for i, v in enumerate(values)]
        for i, node in enumerate(graph.node):
            where = f"node #{i} ({node.op_type!r})"
            fields += [(f"{where} name", node.name), (f"node #{i} op_type", node.op_type),
                       (f"{where} domain", node.domain)]
            fields += [(f"{where} input/output", v) for v in (*node.input, *node.output)]
            fields += [(f"{where} attribute name", a.name) for a in node.attribute]
    for label, value in fields:
        if not isinstance(value, str):
            raise LwcError(f"{label} {value!r} is not UTF-8 text (a corrupt file?)")


def check_value_types(model: onnx.ModelProto) -> None:
    """Graph inputs, outputs and value_info: a tensor type must be a known element type
    (the checker lets ``elem_type: 77`` through; numpy's dtype table then has no key 77).

    Raises:
        LwcError: naming the value and the number.
    """
    for graph in all_graphs(model.graph):
        for kind, values in (("input", graph.input), ("output", graph.output),
                             ("value_info", graph.value_info)):
            for vi in values:
                if not vi.type.HasField("tensor_type"):
                    continue
                elem = vi.type.tensor_type.elem_type
                if elem != TensorProto.UNDEFINED and elem not in TensorProto.DataType.values():
                    raise LwcError(f"graph {kind} {vi.name!r} has unknown element type {elem}")


#: Attributes that count pixels or steps: each entry must be >= 1 (ONNX operators.md).
#: onnxsim's shape inference divides by strides and dies with SIGFPE on a 0.
_POSITIVE_INTS = ("strides", "dilations", "kernel_shape")
_POSITIVE_INT = ("group",)


def check_attributes(model: onnx.ModelProto) -> None:
    """Nodes of the ONNX domain: ``strides``, ``dilations``, ``kernel_shape`` entries and
    ``group`` must be >= 1.

    Raises:
        LwcError: naming the node, its op type and the attribute.
    """
    for graph in all_graphs(model.graph):
        for i, node in enumerate(graph.node):
            if node.domain not in ("", "ai.onnx"):
                continue
            for attr in node.attribute:
                bad = (attr.name in _POSITIVE_INTS and any(v < 1 for v in attr.ints)) or (
                    attr.name in _POSITIVE_INT and attr.type == onnx.AttributeProto.INT and attr.i < 1)
                if bad:
                    value = list(attr.ints) if attr.name in _POSITIVE_INTS else attr.i
                    name = node.name or f"<node #{i}>"
                    raise LwcError(f"node {name!r} ({node.op_type}): {attr.name} {value} must be >= 1")


def all_graphs(graph: onnx.GraphProto):
    """``graph`` and every subgraph below it (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from all_graphs(g)


def check_tensor_data(model: onnx.ModelProto) -> None:
    """Each initializer / Constant tensor: a known data type, dims >= 0, and as many
    elements (raw bytes or typed entries) as its dims say. External data must be loaded.

    Raises:
        LwcError: the first tensor that fails, with its name and what is wrong.
    """
    if not model.HasField("graph"):
        return
    for tensor, label in _tensors(model.graph):
        _check_one(tensor, label)


def _check_one(t: TensorProto, label: str) -> None:
    if t.data_type not in TensorProto.DataType.values() or t.data_type == TensorProto.UNDEFINED:
        raise LwcError(f"{label} has unknown data type {t.data_type}")
    if any(d < 0 for d in t.dims):
        raise LwcError(f"{label} has a negative dimension in {list(t.dims)}")
    if t.data_location == TensorProto.EXTERNAL or t.data_type not in _ITEMSIZE:
        return  # strings, complex, sub-byte types: the importer's own checks
    count = math.prod(t.dims)
    dtype = TensorProto.DataType.Name(t.data_type).lower()
    if t.HasField("raw_data"):
        need = count * _ITEMSIZE[t.data_type]
        if len(t.raw_data) != need:
            raise LwcError(f"{label}: {len(t.raw_data)} bytes of data, but its shape "
                           f"{list(t.dims)} of {dtype} needs {need}")
        return
    field = _FIELD.get(t.data_type, "int32_data")
    have = len(getattr(t, field))
    if have != count:
        raise LwcError(f"{label}: {have} values in {field}, but its shape {list(t.dims)} "
                       f"of {dtype} has {count} elements")


def check_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Each external-data entry: a plain relative location inside ``base_dir`` naming a
    file there, and an offset/length (whole numbers >= 0) inside that file.

    Raises:
        LwcError: the first entry that fails, naming its tensor.
    """
    base = base_dir.resolve()
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        label = f"initializer {tensor.name!r}"
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if not location or "\x00" in location:
            raise LwcError(f"{label}: external data location {location!r} is not a file name")
        target = (base / location).resolve()
        if os.path.isabs(location) or base not in target.parents:
            raise LwcError(
                f"{label}: external data location {location!r} points outside the model's "
                f"folder {base}; refusing to read it"
            )
        if not target.is_file():
            raise LwcError(
                f"{label}: external data file {location!r} not found beside the model "
                f"(looked in {base})"
            )
        size = target.stat().st_size
        numbers = {}
        for key in ("offset", "length"):
            text = info.get(key)
            if text is None:
                continue
            if not text.isdigit():
                raise LwcError(f"{label}: external data {key} {text!r} is not a whole number >= 0")
            numbers[key] = int(text)
        offset = numbers.get("offset", 0)
        length = numbers.get("length", 0)
        if offset > size or offset + length > size:
            raise LwcError(f"{label}: external data bytes {offset}..{offset + length} lie past "
                           f"the end of {location!r} ({size} bytes)")
