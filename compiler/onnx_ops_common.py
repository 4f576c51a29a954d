"""Helpers shared by lwc's ONNX op converters (``lwc.onnx_ops*``).

A converter is a TVM ``OnnxOpConverter`` subclass: ``_impl_vN(bb, inputs, attr, params)``
returns a Relax expression (or a ``relax.Tuple`` for several outputs). lwc's converters
emit every intermediate value with ``bb.emit`` so that a value used twice (an RNN's hidden
state) is computed once, and read shapes only when they are static: lwc compiles for
static input shapes, so a converter that meets a symbolic dim declines with a message.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter  # noqa: F401  (re-exported)


def dtype_of(x: relax.Expr) -> str:
    """The element type of a tensor-typed Relax expression, e.g. ``"float32"``."""
    return str(x.ty.dtype.dtype)


def shape_of(x: relax.Expr, op: str = "op") -> list[int]:
    """The static shape of ``x``.

    Raises:
        ValueError: a dim is symbolic (the importer turns it into an LwcError line).
    """
    shape = getattr(x.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None:
        raise ValueError(f"{op}: input shape is not known statically")
    try:
        return [int(v) for v in values]
    except TypeError:
        raise ValueError(f"{op}: input shape {list(values)} is not static") from None


def const(value, dtype: str) -> relax.Expr:
    return relax.const(np.asarray(value, dtype=dtype), dtype)  # dtype given: 0-d values default to 32 bits


def constant_value(x: relax.Expr | None) -> np.ndarray | None:
    """The numpy value of a Relax constant, None for anything else."""
    if isinstance(x, tvm.ir.GenericConst):
        return x.value.numpy()
    return None


def emit(bb: relax.BlockBuilder, expr: relax.Expr) -> relax.Expr:
    """``bb.emit`` for calls; variables and constants pass through."""
    if isinstance(expr, (relax.Var, tvm.ir.GenericConst)):
        return expr
    return bb.emit(expr)


def take_index(bb, x: relax.Expr, index: int, axis: int = 0) -> relax.Expr:
    """``x`` indexed at ``index`` along ``axis`` (that axis removed)."""
    sliced = relax.op.strided_slice(x, axes=[axis], begin=[index], end=[index + 1])
    return emit(bb, relax.op.squeeze(emit(bb, sliced), axis=[axis]))


def attr_str(attr: dict, name: str, default: str) -> str:
    value = attr.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def tvm_converter(op_type: str):
    """TVM's own converter class for ``op_type`` (for lwc converters that handle only some
    forms of an op and hand the rest back)."""
    return getattr(onnx_frontend, op_type)  # the classes _get_convert_map() lists
