"""Graph inputs bound to constant values at compile time (``--input-value NAME=V``).

Some inputs are constants of a deployment: Silero VAD's ``sr`` (16000 or 8000) selects
the 16 kHz or the 8 kHz network with an ``If``; ONNX test cases feed Pad's ``pads`` or
TopK's ``K`` as inputs. Binding one makes it an initializer before anything else
(:func:`lwc.onnx_legalize.bind_inputs`), so shape computations and ``If`` conditions on
it fold (:func:`lwc.onnx_fold_if.fold_constant_ifs`, then onnxsim), and the artifact no
longer has that input; its manifest records the values (``"bound_inputs": {"sr": 16000}``)
and ``lwc verify`` / ``lwc bench --vs-onnxruntime`` feed them to onnxruntime, which runs
the original model.

A value takes the dtype the model declares for the input and its shape: 0-d for an input
declared with rank 0, 1-D otherwise (its length checked against a static declared
length); an input declared with a static shape of higher rank takes that many values,
reshaped. :func:`parse` reads the CLI's text; :func:`resolve` checks the values (CLI
text or Python arrays) against the model; :func:`bind` applies them.
"""

from __future__ import annotations

import numpy as np
import onnx
from lwc.errors import LwcError
from onnx import helper

_TRUE, _FALSE = ("1", "true", "True"), ("0", "false", "False")


def parse(texts: list[str] | None) -> dict[str, str]:
    """``--input-value NAME=V`` / ``NAME=V0,V1,...`` flags -> ``{name: "V0,V1,..."}``.

    The name may itself contain ``=`` (the last one splits). Values are checked later,
    against the input's declared dtype (:func:`resolve`).

    Raises:
        LwcError: no ``=``, an empty name or value, or a name given twice.
    """
    values: dict[str, str] = {}
    for text in texts or []:
        name, sep, value = text.rpartition("=")
        if not sep or not name or not value.strip():
            raise LwcError(f"--input-value {text!r}: expected NAME=V or NAME=V0,V1,... e.g. sr=16000")
        if name in values:
            raise LwcError(f"--input-value names {name!r} twice ({name}={values[name]}, {text})")
        values[name] = value
    return values


def resolve(model: onnx.ModelProto, values: dict | None) -> dict[str, np.ndarray]:
    """Each value as an array of its input's declared dtype and shape.

    Args:
        values: ``{name: text}`` from :func:`parse`, or ``{name: array-like}``
            (the Python API: ``{"sr": 16000}``, ``{"pads": np.array([0, 1, 0, 1])}``).
    Raises:
        LwcError: a name that is no graph input (an initializer is named as such; the
            model's inputs are listed), a value that is not of the input's dtype, or the
            wrong number of values for the input's declared shape.
    """
    if not values:
        return {}
    inits = {t.name for t in model.graph.initializer}
    declared = {v.name: v for v in model.graph.input if v.name not in inits}
    out = {}
    for name, value in values.items():
        if name not in declared:
            what = ("an initializer (a weight), not a graph input" if name in inits
                    else "not a model input")
            listed = ", ".join(declared) or "none"
            raise LwcError(f"--input-value names {name!r}, which is {what}; inputs: {listed}")
        info = declared[name]
        dtype = _dtype(info)
        array = _parse_text(name, value, dtype) if isinstance(value, str) else _convert(name, value, dtype)
        out[name] = _shaped(name, array, info)
    return out


def bind(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``model`` with ``values`` (from :func:`resolve`) as initializers instead of inputs;
    ``model`` itself when ``values`` is empty."""
    from lwc.onnx_legalize import bind_inputs

    return bind_inputs(model, values) if values else model


def fold_ifs(model: onnx.ModelProto, values: dict, inputs: list) -> onnx.ModelProto:
    """After :func:`bind`: the ``If`` nodes whose condition is now constant inlined
    (:func:`lwc.onnx_fold_if.fold_constant_ifs`; ``inputs``, the specs of the inputs
    left, let conditions on their static shapes fold too). ``model`` itself when nothing
    was bound or it has no ``If``."""
    from lwc.model_checks import all_graphs
    from lwc.onnx_fold_if import fold_constant_ifs

    if not values or not any(n.op_type == "If" for g in all_graphs(model.graph) for n in g.node):
        return model
    shapes = {s.name: list(s.shape) for s in inputs if s.is_static}
    return fold_constant_ifs(model, shapes or None)


def shapes_without(input_shapes: dict | None, values: dict[str, np.ndarray]) -> dict | None:
    """``input_shapes`` less the bound inputs, whose shape their value gives.

    Raises:
        LwcError: an ``--input-shape`` for a bound input that differs from its value's.
    """
    if not input_shapes or not values:
        return input_shapes
    for name, value in values.items():
        if name in input_shapes and list(input_shapes[name]) != list(np.shape(value)):
            raise LwcError(f"--input-shape {name}:{','.join(map(str, input_shapes[name]))} conflicts "
                           f"with --input-value {name} (shape {list(np.shape(value))}); "
                           "a bound input needs no --input-shape")
    return {k: v for k, v in input_shapes.items() if k not in values}


def hint(model: onnx.ModelProto) -> str:
    """``"; input 'pads' decides a shape or an axis, ...: bind with --input-value pads=..."``
    for an import failure, where graph inputs reach a shape-deciding position
    (:func:`lwc.onnx_legalize.shape_deciding_inputs`); ``""`` where none do."""
    from lwc.onnx_legalize import shape_deciding_inputs

    try:
        names = sorted(shape_deciding_inputs(model))
    except Exception:  # noqa: BLE001  (a hint never hides the error it annotates)
        return ""
    if not names:
        return ""
    flags = " ".join(f"--input-value {n}=..." for n in names)
    which = f"input {names[0]!r} decides" if len(names) == 1 else f"inputs {', '.join(map(repr, names))} decide"
    return f"; {which} a shape or an axis, which lwc fixes at compile time: bind with {flags}"


def to_json(values: dict[str, np.ndarray]) -> dict:
    """``{name: value}`` for the manifest: a number for a 0-d value, else a (nested) list."""
    return {k: np.asarray(v).tolist() for k, v in values.items()}


def feed(manifest: dict, declared_dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """The manifest's ``bound_inputs`` as arrays for onnxruntime, in the dtypes the source
    model declares (``declared_dtypes``: input name -> numpy dtype name)."""
    return {k: np.asarray(v, dtype=declared_dtypes.get(k))
            for k, v in (manifest.get("bound_inputs") or {}).items()}


def _dtype(info: onnx.ValueInfoProto) -> np.dtype:
    elem = info.type.tensor_type.elem_type
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype("float32")
    except (KeyError, TypeError, ValueError):
        raise LwcError(f"--input-value {info.name}: the input's element type "
                       f"{onnx.TensorProto.DataType.Name(elem)} cannot be given as text") from None


def _parse_text(name: str, text: str, dtype: np.dtype) -> np.ndarray:
    items = [t.strip() for t in text.split(",")]
    try:
        if dtype.kind == "b":
            if any(t not in _TRUE + _FALSE for t in items):
                raise ValueError
            return np.array([t in _TRUE for t in items], dtype)
        if dtype.kind in "iu":
            numbers = [int(t) for t in items]
            info = np.iinfo(dtype)
            if any(not info.min <= n <= info.max for n in numbers):
                raise LwcError(f"--input-value {name}={text}: out of range for {dtype.name} "
                               f"[{info.min}, {info.max}]")
            return np.array(numbers, dtype)
        if dtype.kind == "f":
            return np.array([float(t) for t in items], dtype)
    except ValueError:
        kind = {"b": "true/false or 1/0", "i": "integers", "u": "non-negative integers",
                "f": "numbers"}[dtype.kind]
        raise LwcError(f"--input-value {name}={text}: input {name!r} is {dtype.name}; "
                       f"expected {kind}, comma-separated") from None
    raise LwcError(f"--input-value {name}: input {name!r} is {dtype.name}, which cannot be given as text")


def _convert(name: str, value, dtype: np.dtype) -> np.ndarray:
    """An array-like from Python as ``dtype``, refused where that changes a value."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise LwcError(f"input_values[{name!r}]: {array.dtype} values; input {name!r} is {dtype.name}")
    with np.errstate(all="ignore"):
        converted = array.astype(dtype)
        same = np.array_equal(converted.astype(array.dtype), array, equal_nan=array.dtype.kind == "f")
    if not same and not (dtype.kind == "f" and array.dtype.kind == "f"):  # float64 -> float32 rounds
        raise LwcError(f"input_values[{name!r}]: {array.tolist()} is not {dtype.name} "
                       f"(the dtype input {name!r} declares)")
    return converted


def _shaped(name: str, array: np.ndarray, info: onnx.ValueInfoProto) -> np.ndarray:
    """``array`` in the input's declared shape (see the module docstring)."""
    tensor = info.type.tensor_type
    dims = ([d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            if tensor.HasField("shape") else None)
    flat = array.reshape(-1)
    if dims is not None and len(dims) == 0:
        if flat.size != 1:
            raise LwcError(f"--input-value {name}: input {name!r} is a scalar (rank 0); "
                           f"got {flat.size} values")
        return flat.reshape(())
    if dims is not None and array.ndim == len(dims) and all(
            d is None or d == s for d, s in zip(dims, array.shape)) and array.ndim > 1:
        return array  # an array of the declared rank (Python API)
    if dims is None or len(dims) == 1:
        if dims and dims[0] is not None and dims[0] != flat.size:
            raise LwcError(f"--input-value {name}: input {name!r} has shape [{dims[0]}]; "
                           f"got {flat.size} value{'s' if flat.size != 1 else ''}")
        return flat
    if all(d is not None for d in dims):
        count = int(np.prod(dims))
        if flat.size != count:
            raise LwcError(f"--input-value {name}: input {name!r} has shape {dims} ({count} values); "
                           f"got {flat.size}")
        return flat.reshape(dims)
    shown = [d if d is not None else "?" for d in dims]
    raise LwcError(f"--input-value {name}: input {name!r} has shape {shown} with dynamic dims; "
                   "only scalars, 1-D inputs and inputs of static shape can be bound")
