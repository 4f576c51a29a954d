"""ONNX import: file -> checked, shape-fixed, simplified ModelProto -> Relax IRModule.

Stages (each a function, data flows one way):

1. :func:`load_onnx` reads the file, resolves external data relative to the model's
   folder (never outside it; case F1) and runs ``onnx.checker``.
2. :func:`resolve_input_shapes` (:mod:`lwc.input_shapes`) fixes every graph input to a static shape from
   ``--input-shape NAME:D0,D1,...`` (dynamic dims without one are an error; case F5).
3. :func:`check_supported` lists every op TVM's ONNX importer lacks, with node names,
   before any compile work.
4. :func:`simplify` folds constants and shape computations at the ONNX level with onnxsim,
   which turns Shape -> Slice -> Concat -> Reshape chains into constants (case F5).
5. :func:`to_relax` calls TVM's ``from_onnx``.

:func:`import_model` runs all five, with an optional ONNX-level ``rewrite`` stage between
4 and 5 (int8 quantization: :func:`lwc.quantize.import_quantized`).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx
from lwc import model_checks
from lwc.errors import LwcError
from lwc.imports import import_without_torch
from lwc.input_shapes import (  # noqa: F401  (re-exported: lwc.frontend.TensorSpec, ...)
    TensorSpec,
    graph_inputs,
    graph_outputs,
    parse_dim,
    parse_input_shape,
    resolve_input_shapes,
)
from onnx import external_data_helper

ONNX_DOMAINS = ("", "ai.onnx")


@dataclass
class ImportedModel:
    """Result of :func:`import_model`.

    Attributes:
        source: path of the ONNX file (None when given a ModelProto).
        sha256: hex digest of the ONNX file bytes (of the serialized proto otherwise).
        onnx_model: the simplified ModelProto with static input shapes.
        inputs, outputs: specs with static shapes, in graph order.
        mod: the Relax IRModule from ``from_onnx`` (parameters bound as constants).
        notes: human-readable notes from import (e.g. simplifier fallbacks).
        bound: inputs bound to constants (``--input-value``), ``{name: value}`` as JSON
            data (:func:`lwc.input_values.to_json`); they are not in ``inputs``.
    """

    source: Path | None
    sha256: str
    onnx_model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    mod: object
    notes: list[str] = field(default_factory=list)
    bound: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- loading


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX model, with external data resolved beside the file.

    Raises:
        LwcError: missing file, not a protobuf / truncated file, external data missing or
            escaping the model's folder, or a model the ONNX checker rejects.
    """
    path = Path(path)
    if not path.is_file():
        raise LwcError(f"model file {str(path)!r} not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise LwcError(
            f"{path.name} is not a valid ONNX model (protobuf parse failed: {_one_line(err)})"
        ) from None
    if not model.HasField("graph") or not model.graph.node:
        raise LwcError(f"{path.name} is not a valid ONNX model (no graph; truncated file?)")
    model_checks.check_external_data(model, path.parent)
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as err:  # checked above; a file changed meanwhile, ...
        raise LwcError(f"{path.name}: cannot read its external data: {_one_line(err)}") from None
    check_model(model, path.name)
    return model


def check_model(model: onnx.ModelProto, label: str = "model") -> None:
    """Run the ONNX checker (full check incl. shape inference where < 2 GiB).

    A tensor whose declared type has no ``shape`` field (graph outputs written by many
    exporters, If/Loop branch outputs) is accepted: ONNX IR.md ("Static tensor shapes":
    a missing shape means the rank is unknown) and onnxruntime allow it, the checker
    does not. The check runs on a copy with those shapes marked present; the model
    itself is not changed (shape inference fills them in later).

    Then every initializer's data must fit its dtype and dims, graph values have known
    element types and strides/dilations/kernel sizes/groups are >= 1
    (:func:`lwc.model_checks.check`).

    Raises:
        LwcError: the checker's first complaint, or the first tensor whose data is wrong.
    """
    try:
        if model.ByteSize() < 2**31 - 1:
            onnx.checker.check_model(_with_shape_fields(model))
    except (onnx.checker.ValidationError, Exception) as err:
        raise LwcError(f"{label} fails the ONNX checker: {_one_line(err)}") from None
    model_checks.check(model)



def _with_shape_fields(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy where every tensor type without a ``shape`` field has one."""

    def missing(vi: onnx.ValueInfoProto) -> bool:
        return vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")

    def value_infos(graph: onnx.GraphProto):
        return [*graph.input, *graph.output, *graph.value_info]

    if not any(missing(vi) for g in model_checks.all_graphs(model.graph) for vi in value_infos(g)):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for graph in model_checks.all_graphs(copy.graph):
        for vi in value_infos(graph):
            if missing(vi):
                vi.type.tensor_type.shape.SetInParent()
    return copy


def _one_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) < 300 else text[:297] + "..."


def model_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes (external data files not included)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- op support


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def op_histogram(model: onnx.ModelProto) -> Counter:
    """Count of nodes per op type (``domain::Op`` for non-default domains), subgraphs included."""
    return Counter(
        n.op_type if n.domain in ONNX_DOMAINS else f"{n.domain}::{n.op_type}"
        for n in _all_nodes(model.graph)
    )


def supported_op_types() -> set[str]:
    """ONNX op types lwc imports: TVM's Relax ONNX importer's plus lwc's (:mod:`lwc.onnx_ops`)."""
    from lwc import onnx_ops

    return onnx_ops.supported_op_types()


def unsupported_nodes(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(op type, first node name) for each op type the importer cannot convert."""
    supported = supported_op_types()
    found: dict[str, str] = {}
    for i, node in enumerate(_all_nodes(model.graph)):
        custom = node.domain not in ONNX_DOMAINS
        op = f"{node.domain}::{node.op_type}" if custom else node.op_type
        if (custom or node.op_type not in supported) and op not in found:
            found[op] = node.name or f"<node #{i}>"
    return sorted(found.items())


def check_supported(model: onnx.ModelProto) -> None:
    """Raises LwcError listing every unsupported op type with a node name and the opset
    of its domain each: ``2 unsupported op type(s): Foo (node 'f', opset 17), ...``."""
    missing = unsupported_nodes(model)
    if missing:
        versions = {o.domain or "ai.onnx": o.version for o in model.opset_import}

        def opset(op: str) -> str:
            domain = op.rpartition("::")[0] or "ai.onnx"
            return f", opset {versions[domain]}" if domain in versions else ""

        listed = ", ".join(f"{op} (node {name!r}{opset(op)})" for op, name in missing)
        raise LwcError(f"{len(missing)} unsupported op type(s): {listed}")


# --------------------------------------------------------------------------- simplify / import


def simplify(model: onnx.ModelProto, inputs: list[TensorSpec]) -> tuple[onnx.ModelProto, list[str]]:
    """Fix input shapes and fold constants/shape chains with onnxsim.

    Returns the simplified model and notes. If onnxsim fails, the model is returned
    with its input shapes fixed and shape inference run, and the failure noted.
    """
    onnxsim = import_without_torch("onnxsim")  # its package imports torch (1.4 s), unused here
    shapes = {spec.name: list(spec.shape) for spec in inputs}
    try:
        # skip_fuse_bn: lwc's FoldBatchNorm pass folds BatchNormalization (and reports it).
        if all(spec.is_static for spec in inputs):
            simplified, ok = onnxsim.simplify(model, overwrite_input_shapes=shapes,
                                              skip_fuse_bn=True)
        else:  # symbolic dims stay symbolic (dim_param): onnxsim folds only what is static
            simplified, ok = onnxsim.simplify(_with_input_dims(model, shapes), skip_fuse_bn=True)
        if ok:
            return simplified, []
        note = "onnxsim's self-check failed; using the unsimplified model"
    except Exception as err:  # onnxsim raises assorted C++/python errors
        note = f"onnxsim failed ({_one_line(err)}); using the unsimplified model"
    return onnx.shape_inference.infer_shapes(_with_input_dims(model, shapes)), [note]


def _with_input_dims(model: onnx.ModelProto, shapes: dict[str, list]) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs declare ``shapes`` (int: dim_value; str: dim_param)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for vi in fixed.graph.input:
        if vi.name in shapes:
            vi.type.tensor_type.shape.Clear()
            for d in shapes[vi.name]:
                dim = vi.type.tensor_type.shape.dim.add()
                if isinstance(d, str):
                    dim.dim_param = d
                else:
                    dim.dim_value = d
    return fixed


def to_relax(model: onnx.ModelProto, inputs: list[TensorSpec]):
    """TVM's ``from_onnx`` with the input shapes and dtypes; params become constants.

    A ranged dim becomes a ``tir.Var`` of its symbol (one per symbol, shared by the
    inputs), and ``main`` carries the ranges as ``tir_var_lower_bound`` /
    ``tir_var_upper_bound`` (memory planning sizes buffers for the upper bound).

    Raises:
        LwcError: the importer fails: one line naming the node, its op type and the
            model's opset (unnamed nodes are named ``<node #i>``, their graph index),
            with the converter's own reason but never TVM's internal IR text.
    """
    from lwc import onnx_legalize, onnx_ops

    legal = onnx_legalize.legalize(model)  # ONNX-level rewrites for the importer
    if onnx_legalize.expanded_functions(model, legal):  # fold the shape math bodies bring
        legal, _ = simplify(legal, inputs)
        legal = onnx_legalize.legalize(legal)  # what folding made static (a Scan's length)
    model = legal
    model = _name_nodes(model)
    from lwc import tvm_compat

    variables = {sym: tvm_compat.shape_var(sym) for s in inputs for sym, _, _ in s.ranges}
    shape_dict = {s.name: [variables.get(d, d) for d in s.shape] for s in inputs}
    dtype_dict = {s.name: s.dtype for s in inputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = onnx_ops.from_onnx(
                model, shape_dict=shape_dict, dtype_dict=dtype_dict, keep_params_in_input=False
            )
            ranges = {sym: (lo, hi) for s in inputs for sym, lo, hi in s.ranges}
            return tvm_compat.with_dim_bounds(mod, ranges) if ranges else mod
        except onnx_ops.NodeError as err:
            message = f"cannot import {_without_internals(str(err))}"
            _release_quietly(err)
            raise LwcError(message) from None
        except Exception as err:  # noqa: BLE001  (TVM raises assorted types; one line out)
            lines = [ln for ln in str(err).splitlines() if ln.strip()]
            why = _without_internals(lines[-1]) if lines else type(err).__name__
            _release_quietly(err)
            raise LwcError(f"TVM's ONNX importer failed: {why}") from None


def _release_quietly(err: BaseException) -> None:
    """Free the importer a failed ``from_onnx`` left behind, with C++ stderr silenced.

    The exception's traceback keeps TVM's BlockBuilder alive; destroyed later (at exit)
    with its function still open, it logs "BlockBuilder destroyed with remaining
    blocks!" from C++ onto stderr, a second line after lwc's one-line error.
    """
    import gc
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        chain: list[BaseException] = []
        link: BaseException | None = err
        while link is not None and all(link is not c for c in chain):
            chain.append(link)
            link.__traceback__ = None
            link = link.__cause__ or link.__context__
        gc.collect()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy where every unnamed top-level node is named ``<node #i>``."""
    if all(node.name for node in model.graph.node):
        return model
    named = onnx.ModelProto()
    named.CopyFrom(model)
    for i, node in enumerate(named.graph.node):
        if not node.name:
            node.name = f"<node #{i}>"
    return named


#: Signs of TVM's internal text in an error line: Relax/TIR script, C++ checks, FFI names.
_INTERNAL = ("R.", "T.", "tvm", "Check failed", ".cc:", ".h:", "ir.", "relax.", "tirx.")


def _without_internals(line: str) -> str:
    """An importer error line with TVM's internal text (IR dumps, C++ checks) cut off.

    ``node 'n' (Op, opset 13): <reason>`` keeps its reason when the reason is the
    converter's own sentence, and becomes ``... : TVM's converter cannot handle it``
    when the reason is TVM's internal text.
    """
    head, sep, why = line.partition("): ")
    if not sep:
        head, why = "", line
    if any(mark in why for mark in _INTERNAL):
        why = "TVM's converter cannot handle it (an internal error of TVM's importer)"
    return f"{head}{sep}{why}" if sep else why


def import_model(
    model: str | os.PathLike | onnx.ModelProto,
    input_shapes: dict[str, list[int]] | None = None,
    *,
    rewrite: Callable[[onnx.ModelProto, list[TensorSpec]], onnx.ModelProto] | None = None,
    input_values: dict | None = None,
) -> ImportedModel:
    """Load, check, fix shapes, check op support, simplify and convert to Relax.

    Args:
        model: path to an .onnx file, or a ModelProto (external data already loaded).
        input_shapes: ``{input name: [d0, d1, ...]}`` for inputs with dynamic dims.
        rewrite: an ONNX-level stage between simplification and conversion,
            ``rewrite(simplified, inputs) -> model`` (``--quantize int8``:
            :func:`lwc.quantize.import_quantized`); its model is the one converted and kept.
        input_values: ``{input name: value}`` to bind as constants before anything else
            (``--input-value``, :mod:`lwc.input_values`); those inputs leave the model.

    Raises:
        LwcError: any failure of the stages above, as one line.
    """
    if isinstance(model, onnx.ModelProto):
        source, proto = None, model
        check_model(proto)
        sha = hashlib.sha256(proto.SerializeToString()).hexdigest()
    else:
        source = Path(model)
        proto = load_onnx(source)
        sha = model_sha256(source)
    from lwc import input_values as values_stage

    bound = values_stage.resolve(proto, input_values)
    proto = values_stage.bind(proto, bound)
    inputs = resolve_input_shapes(proto, values_stage.shapes_without(input_shapes, bound))
    proto = values_stage.fold_ifs(proto, bound, inputs)
    check_supported(proto)
    simplified, notes = simplify(proto, inputs)
    check_supported(simplified)
    if rewrite is not None:
        simplified = rewrite(simplified, inputs)
    try:
        mod = to_relax(simplified, inputs)
    except LwcError as err:
        raise LwcError(f"{err}{values_stage.hint(proto)}") from None
    outputs = _relax_outputs(mod, graph_outputs(simplified), any(s.ranges for s in inputs))
    return ImportedModel(source, sha, simplified, inputs, outputs, mod, notes,
                         values_stage.to_json(bound))


def _relax_outputs(mod, onnx_outputs: list[TensorSpec], dynamic: bool = False) -> list[TensorSpec]:
    """Output specs with the shapes and dtypes Relax inferred for ``main`` (a symbolic
    dim as its expression in the input symbols, e.g. ``"(W - 5) // 8 + 1"``)."""
    from lwc import tvm_compat

    types = tvm_compat.return_tensor_types(mod["main"])
    if not dynamic:  # a data-dependent dim (NonZero) keeps the ONNX dim_param, as before
        types = [(s if s and all(isinstance(d, int) for d in s) else None, t) for s, t in types]
    return [
        TensorSpec(spec.name, shape or spec.shape, dtype)
        for spec, (shape, dtype) in zip(onnx_outputs, types)
    ]
