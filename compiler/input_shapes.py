"""Model inputs and outputs as lwc sees them (:class:`TensorSpec`), and ``--input-shape``:
its parsing (a dim is a number or an inclusive range ``LO..HI``) and its resolution against
the model's declared shapes (:func:`resolve_input_shapes`, stage 2 of :mod:`lwc.frontend`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx
from lwc.errors import LwcError
from onnx import helper


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (ints; str for a symbolic dim), numpy dtype.

    ``ranges`` gives the accepted values of the symbolic dims of a dynamic-dims compile
    (``--input-shape x:1,3,48,96..1280``): ``((symbol, lo, hi), ...)``, both bounds
    inclusive. Output shapes may hold expressions of the symbols (``"(W - 5) // 8 + 1"``).
    """

    name: str
    shape: tuple
    dtype: str
    ranges: tuple = ()

    @property
    def is_static(self) -> bool:
        """Every dim a number; 0-d (scalar) and zero-size dims are static (onnxruntime
        runs both)."""
        return all(isinstance(d, int) and d >= 0 for d in self.shape)

    @property
    def is_bounded(self) -> bool:
        """Every dim a number or a symbol with a range (what lwc compiles)."""
        named = {sym for sym, _, _ in self.ranges}
        return all(isinstance(d, int) and d >= 0 or d in named for d in self.shape)

    def key_shape(self) -> list:
        """The shape as tuning-log keys name it: ints, and ``"W=96..1280"`` for a range."""
        bounds = {sym: f"{sym}={lo}..{hi}" for sym, lo, hi in self.ranges}
        return [bounds.get(d, d) if isinstance(d, str) else d for d in self.shape]

    def to_json(self) -> dict:
        """The manifest entry: ``{"name", "shape", "dtype"}``, plus ``"dims": {symbol:
        [lo, hi]}`` when the shape has symbolic dims (str entries of ``shape``)."""
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.ranges:
            out["dims"] = {sym: [lo, hi] for sym, lo, hi in self.ranges}
        return out




def _dims(value_info: onnx.ValueInfoProto) -> tuple:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:  # 0: a zero-size dim
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return tuple(dims)


def _dtype(value_info: onnx.ValueInfoProto) -> str:
    elem = value_info.type.tensor_type.elem_type
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name if elem else "float32"


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Real inputs (initializers listed as inputs, as in opset < 9 models, excluded)."""
    inits = {t.name for t in model.graph.initializer}
    return [
        TensorSpec(v.name, _dims(v), _dtype(v)) for v in model.graph.input if v.name not in inits
    ]


def graph_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [TensorSpec(v.name, _dims(v), _dtype(v)) for v in model.graph.output]


#: A dim of ``--input-shape``: a number, or an inclusive range ``(lo, hi)`` (``LO..HI``).
Dim = "int | tuple[int, int]"


def parse_dim(dim, where: str = "--input-shape") -> int | tuple[int, int]:
    """One dim of an input shape: an int, ``"7"``, ``"LO..HI"`` or ``(lo, hi)``.

    Returns:
        an int for a fixed dim, ``(lo, hi)`` (inclusive, ``1 <= lo < hi``) for a range;
        ``"5..5"`` is the fixed dim 5.
    Raises:
        LwcError: anything else, naming ``where``.
    """
    if isinstance(dim, (tuple, list)) and len(dim) == 2:
        lo, hi = dim
    elif isinstance(dim, str) and ".." in dim:
        lo, _, hi = dim.partition("..")
    else:
        lo = hi = dim
    try:
        exact = not any(isinstance(v, (float, bool)) for v in (lo, hi))
        lo, hi = int(str(lo).strip()), int(str(hi).strip())
    except (TypeError, ValueError):
        exact = False
    if not exact:
        raise LwcError(f"{where}: dims must be integers or ranges LO..HI, got {dim!r} "
                       "(e.g. x:1,3,224,224 or x:1,3,48,96..1280)")
    if lo < 0:
        raise LwcError(f"{where}: dims must be non-negative")
    if lo == hi:
        return lo
    if lo < 1 or hi < lo:
        raise LwcError(f"{where}: range {lo}..{hi} must satisfy 1 <= LO < HI")
    return (lo, hi)


def parse_input_shape(text: str) -> tuple[str, list]:
    """Parse ``NAME:D0,D1,...`` (``--input-shape``). The name may itself contain ':'.

    A dim is a non-negative integer (0 is a zero-size dim, as onnxruntime accepts) or an
    inclusive range ``LO..HI`` (``x:1,3,48,96..1280``): the artifact then accepts any
    value in the range for that dim.

    Returns:
        (name, dims): each dim an int or a ``(lo, hi)`` tuple.
    Raises:
        LwcError: no ':', or a dim that is neither a non-negative integer nor a range
            with ``1 <= LO <= HI``.
    """
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise LwcError(f"--input-shape {text!r}: expected NAME:D0,D1,... e.g. x:1,3,224,224 "
                       "(or a range LO..HI for a dim: x:1,3,48,96..1280)")
    shape = [parse_dim(d, f"--input-shape {text!r}") for d in dims.split(",")]
    return name, shape


def _dim_text(dim) -> str:
    return f"{dim[0]}..{dim[1]}" if isinstance(dim, tuple) else str(dim)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _symbol(model_dim, input_name: str, axis: int) -> str:
    """The name of a ranged dim: the model's ``dim_param`` where it is an identifier
    (``W``, ``batch``), else ``<input>_<axis>`` (``x_3``; non-identifier characters as _)."""
    if isinstance(model_dim, str) and _IDENTIFIER.match(model_dim):
        return model_dim
    base = re.sub(r"[^A-Za-z0-9_]", "_", input_name)
    return f"{base if _IDENTIFIER.match(base) else 'in_' + base}_{axis}"


def resolve_input_shapes(
    model: onnx.ModelProto, overrides: dict[str, list] | None = None
) -> list[TensorSpec]:
    """Input specs: the model's shapes with ``overrides`` applied.

    Args:
        overrides: ``{input name: [d0, d1, ...]}``; a dim is an int, or a range
            (``"LO..HI"`` or ``(lo, hi)``, inclusive) that keeps it symbolic: the spec's
            shape then names it (the model's ``dim_param`` where that is an identifier,
            else ``<input>_<axis>``) and ``ranges`` holds its bounds.
    Raises:
        LwcError: an override names no input, has the wrong rank or a bad dim, a range
            lands on a fixed dim of the model, one symbol gets two different ranges, or an
            input keeps a dynamic dim without a number or range, or declares no shape at
            all (the message names it and shows the ``--input-shape`` to use). Zero-size
            dims (0) and 0-d inputs are static.
    """
    overrides = {
        name: [parse_dim(d, f"input_shapes[{name!r}]") for d in dims]
        for name, dims in dict(overrides or {}).items()
    }
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    for name in overrides:
        if name not in names:
            raise LwcError(
                f"--input-shape names {name!r}, which is not a model input; inputs: "
                + ", ".join(f"{i.name} {list(i.shape)}" for i in inputs)
            )
    no_shape = {v.name for v in model.graph.input if not v.type.tensor_type.HasField("shape")}
    symbols: dict[str, tuple[int, int]] = {}  # symbol -> range, shared by every input
    resolved = []
    for spec in inputs:
        shape = overrides.get(spec.name)
        if shape is None and spec.name in no_shape:
            raise LwcError(
                f"input {spec.name!r} declares no shape (unknown rank); give it with "
                f"--input-shape {spec.name}:D0,D1,..."
            )
        if shape is not None and spec.name in no_shape:
            spec = _with_ranges(TensorSpec(spec.name, (None,) * len(shape), spec.dtype),
                                shape, symbols)
        elif shape is not None:
            if spec.shape and len(shape) != len(spec.shape):
                raise LwcError(
                    f"--input-shape {spec.name}:{','.join(map(str, shape))} has rank "
                    f"{len(shape)}, but input {spec.name!r} has rank {len(spec.shape)} "
                    f"{list(spec.shape)}"
                )
            for want, have in zip(shape, spec.shape):
                if isinstance(have, int) and have != want:
                    raise LwcError(
                        f"--input-shape {spec.name}:{','.join(map(_dim_text, shape))} conflicts "
                        f"with the model's fixed shape {list(spec.shape)}"
                    )
            spec = _with_ranges(spec, shape, symbols)
        if not spec.is_static and not spec.is_bounded:
            example = ",".join(str(d) if isinstance(d, int) else "N" for d in spec.shape)
            raise LwcError(
                f"input {spec.name!r} has dynamic shape {list(spec.shape)}; fix it with "
                f"--input-shape {spec.name}:{example} (numbers for every dim, or a range "
                "LO..HI for a dim that varies)"
            )
        resolved.append(spec)
    return resolved


def _with_ranges(spec: TensorSpec, shape: list, symbols: dict) -> TensorSpec:
    """``spec`` with ``shape`` applied: ints fixed, ``(lo, hi)`` dims named and bounded.

    ``symbols`` (symbol -> range) is shared across inputs: a ``dim_param`` that two inputs
    share is one symbol, so it must get one range.
    """
    dims, ranges = [], []
    for axis, (want, have) in enumerate(zip(shape, spec.shape)):
        if not isinstance(want, tuple):
            dims.append(want)
            continue
        sym = _symbol(have, spec.name, axis)
        if symbols.setdefault(sym, want) != want:
            raise LwcError(
                f"--input-shape {spec.name}:{','.join(map(_dim_text, shape))}: dim {axis} "
                f"({sym}) was given the range {_dim_text(symbols[sym])} for another input"
            )
        dims.append(sym)
        if all(s != sym for s, _, _ in ranges):
            ranges.append((sym, *want))
    return TensorSpec(spec.name, tuple(dims), spec.dtype, tuple(ranges))


def refuse_ranges(input_shapes: dict | None) -> None:
    """For commands that take fixed shapes only (``lwc tune``: MetaSchedule tunes fixed
    shapes, and a dynamic-dims compile uses lwc's rule schedules).

    Raises:
        LwcError: an ``input_shapes`` dim is a range (``96..1280``), naming the input.
    """
    for name, dims in (input_shapes or {}).items():
        if any(isinstance(parse_dim(d), tuple) for d in dims):
            raise LwcError(f"lwc tune takes fixed shapes; --input-shape {name} has a range "
                           "(a dynamic-dims compile uses lwc's schedule rules: docs/dynamic_dims.md)")
