"""ONNX-level rewrites that let TVM's importer take what models bring (before ``to_relax``).

:func:`legalize` runs each rewrite of :data:`REWRITES` in order (in :func:`lwc.frontend.to_relax`;
after an inlining or unrolling the frontend folds with onnxsim and legalizes once more); a
rewrite takes a ModelProto and returns a new one (its input is never modified), and one
that cannot apply leaves the model as it is, for the importer to name the node it cannot
take. Each is a pattern, a check and a replacement at the ONNX level:

* :func:`expand_functions`: a node of an op no converter takes, which ONNX defines as a
  function of other ops (LinearAttention, CausalConvWithState, ...), becomes that
  function's body (ONNX's own expansion, as its ``*_expanded`` tests);
* :func:`unroll_scan`: ``Scan`` (opset 9+) unrolled over its static sequence length,
  declined where a length is not static or the body holds subgraphs;
* :func:`constant_value_attr`: a ``Constant`` node holding ``value_float(s)``,
  ``value_int(s)`` (opset 12+) becomes the same tensor in ``value``, the only form TVM
  0.27's importer reads ("no value in Constant" otherwise). onnxsim folds these away, but
  it declines models whose opset it does not know.

:func:`bind_inputs` is a rewrite with an argument, not in :data:`REWRITES`: it turns graph
inputs into initializers with given values (an input that decides an output's shape, such
as Pad's ``pads`` or TopK's ``K``, must be known when compiling for static shapes).
:data:`SHAPE_INPUTS` lists, per op, the input positions whose values decide an output's
shape or an axis.
"""

from __future__ import annotations

import numpy as np
import onnx
from lwc.model_checks import all_graphs
from onnx import helper, numpy_helper

#: op type -> input positions whose values decide an output shape or an axis
SHAPE_INPUTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Pad": (1, 3),
    "TopK": (1,), "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
    "ReduceProd": (1,), "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,), "Resize": (1, 2, 3), "Upsample": (1,),
    "CumSum": (1,), "CumProd": (1,), "Range": (0, 1, 2), "OneHot": (1,), "CenterCropPad": (1,),
    "Col2Im": (1, 2), "DFT": (1, 2), "STFT": (1, 3), "HannWindow": (0,), "HammingWindow": (0,),
    "BlackmanWindow": (0,), "MelWeightMatrix": (0, 1, 2, 3, 4), "AffineGrid": (1,),
    "Trilu": (1,), "GroupNormalization": (), "NonMaxSuppression": (2, 3, 4),
}

_VALUE_ATTRS = {
    "value_float": lambda a: np.array(a.f, dtype=np.float32),
    "value_floats": lambda a: np.array(list(a.floats), dtype=np.float32),
    "value_int": lambda a: np.array(a.i, dtype=np.int64),
    "value_ints": lambda a: np.array(list(a.ints), dtype=np.int64),
}


def legalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every rewrite of :data:`REWRITES` applied, in order."""
    for rewrite in REWRITES:
        try:
            model = rewrite(model)
        except Exception:  # noqa: BLE001, S112  (a rewrite that cannot apply declines; the
            continue  # importer then reports the op it cannot take, naming the node)
    return model



def constant_value_attr(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Constant(value_float=..)`` and kin -> ``Constant(value=tensor)``; others unchanged."""
    def needs(node) -> bool:
        return node.op_type == "Constant" and any(a.name in _VALUE_ATTRS for a in node.attribute)

    if not any(needs(n) for g in all_graphs(model.graph) for n in g.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for graph in all_graphs(out.graph):
        for node in graph.node:
            if not needs(node):
                continue
            attr = next(a for a in node.attribute if a.name in _VALUE_ATTRS)
            value = _VALUE_ATTRS[attr.name](attr)
            node.ClearField("attribute")
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))
    return out


def shape_deciding_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs whose values reach a :data:`SHAPE_INPUTS` position of some node.

    The walk goes backwards from those positions through the nodes that compute them,
    stopping at nodes whose output depends only on their input's shape (Shape, Size).
    """
    inputs = {v.name for v in model.graph.input}
    producers = {out: node for g in all_graphs(model.graph) for node in g.node for out in node.output}
    todo = [node.input[pos] for g in all_graphs(model.graph) for node in g.node
            for pos in SHAPE_INPUTS.get(node.op_type, ()) if pos < len(node.input) and node.input[pos]]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producers.get(name)
        if node is not None and node.op_type not in _SHAPE_ONLY:
            todo.extend(i for i in node.input if i)
    return seen & inputs


#: ops whose output depends only on their input's shape, where the walk above stops
_SHAPE_ONLY = {"Shape", "Size"}


def bind_inputs(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The model with the named graph inputs replaced by initializers holding ``values``.

    Raises:
        ValueError: a name is not a graph input.
    """
    names = {v.name for v in model.graph.input}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"not graph inputs: {', '.join(unknown)}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [v for v in out.graph.input if v.name not in values]
    out.graph.ClearField("input")
    out.graph.input.extend(kept)
    for name, value in values.items():
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return out


def _function_body(node, opset: int, value_types: dict):
    """The ONNX function body (FunctionProto) defining ``node`` at ``opset``, or None."""
    from onnx import FunctionProto, defs

    try:
        schema = defs.get_schema(node.op_type, opset, domain=node.domain)
    except defs.SchemaError:
        return None
    raw = None
    versions = [v for v in schema.function_opset_versions if v <= opset]
    if versions:
        raw = schema.get_function_with_opset_version(max(versions))
    else:
        ctx = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
        if ctx and all(i in value_types for i in node.input if i):
            types = [value_types[i].SerializeToString() if i else onnx.TypeProto().SerializeToString()
                     for i in node.input]
            raw = schema.get_context_dependent_function_with_opset_version(
                max(ctx), node.SerializeToString(), types)
    if not raw:
        return None
    body = FunctionProto()
    body.ParseFromString(raw)
    for name, attr in schema.attributes.items():  # the body reads defaults as attributes
        if attr.default_value.name and name not in {a.name for a in node.attribute}:
            node.attribute.append(attr.default_value)
    return body


def expand_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes of ops that neither TVM nor lwc convert, but that ONNX defines as a function of
    other ops (LinearAttention, CausalConvWithState, ...), replaced by that function's body
    (ONNX's own expansion, the one its ``*_expanded`` backend tests use). Top graph only;
    repeated while a body brings in further such ops."""
    from lwc import onnx_ops
    from onnx.backend.test.case.node import function_expand_helper

    known = onnx_ops.convertible_op_types()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    out = model
    for round_ in range(3):
        todo = [n for n in out.graph.node if n.domain in ("", "ai.onnx") and n.op_type not in known]
        if not todo:
            break
        if out is model:
            out = onnx.ModelProto()
            out.CopyFrom(model)
        inferred = onnx.shape_inference.infer_shapes(out)
        types = {v.name: v.type for v in [*inferred.graph.input, *inferred.graph.value_info,
                                          *inferred.graph.output]}
        nodes = []
        for i, node in enumerate(out.graph.node):
            body = None
            if node.domain in ("", "ai.onnx") and node.op_type not in known:
                body = _function_body(node, opset, types)
            if body is None:
                nodes.append(node)
                continue
            prefix = f"{node.name or node.op_type}_{round_}_{i}_fn_"
            nodes.extend(function_expand_helper(node, body, prefix))
        out.graph.ClearField("node")
        out.graph.node.extend(nodes)
    return out


def expanded_functions(before: onnx.ModelProto, after: onnx.ModelProto) -> bool:
    """Whether :func:`legalize` inlined a function body or unrolled a Scan (the caller may
    fold again)."""
    return len(after.graph.node) != len(before.graph.node)


def unroll_scan(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Scan`` (opset 9+) unrolled over its static sequence length into copies of its body.

    Per step t (reversed for a reverse scan input): each scan input sliced at t (Gather
    with a scalar index), the body's nodes copied with its tensors renamed, its inputs bound
    to the current states and slices; the final states feed the Scan's state outputs and
    each scan output is the step slices stacked (Unsqueeze + Concat) on its axis. Declines
    (keeps the node) when a length is not static or the body holds subgraphs.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    if opset < 9 or not any(n.op_type == "Scan" for n in model.graph.node):
        return model  # opset 8's Scan has a batch axis and sequence_lens: not handled
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None
                       for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, inits = [], []
    for i, node in enumerate(out.graph.node):
        unrolled = _unroll_one(node, i, shapes, opset, inits) if node.op_type == "Scan" else None
        nodes.extend(unrolled if unrolled is not None else [node])
    out.graph.ClearField("node")
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    return out


def _unroll_one(node, index: int, shapes: dict, opset: int, inits: list):
    attrs = {a.name: a for a in node.attribute}
    body = attrs["body"].g
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in body.node for a in n.attribute):
        return None
    n_scan = attrs["num_scan_inputs"].i
    n_state = len(node.input) - n_scan
    in_axes = list(attrs["scan_input_axes"].ints) if "scan_input_axes" in attrs else [0] * n_scan
    in_dirs = list(attrs["scan_input_directions"].ints) if "scan_input_directions" in attrs else [0] * n_scan
    n_out = len(body.output) - n_state
    out_axes = list(attrs["scan_output_axes"].ints) if "scan_output_axes" in attrs else [0] * n_out
    out_dirs = list(attrs["scan_output_directions"].ints) if "scan_output_directions" in attrs else [0] * n_out
    scan_inputs = list(node.input[n_state:])
    ranks = []
    lengths = set()
    for name, axis in zip(scan_inputs, in_axes):
        shape = shapes.get(name)
        if not shape or any(d is None for d in shape):
            return None
        ranks.append(len(shape))
        lengths.add(shape[axis % len(shape)])
    if len(lengths) != 1:
        return None
    steps = lengths.pop()
    prefix = f"scan{index}_"
    new = []
    states = list(node.input[:n_state])
    slices_out = [[None] * steps for _ in range(n_out)]
    for t in range(steps):
        rename = {}
        for k, (name, axis, rank) in enumerate(zip(scan_inputs, in_axes, ranks)):
            pos = steps - 1 - t if in_dirs[k] else t
            idx = f"{prefix}idx{t}_{k}"
            inits.append(numpy_helper.from_array(np.array(pos, dtype=np.int64), idx))
            sl = f"{prefix}t{t}_in{k}"
            new.append(helper.make_node("Gather", [name, idx], [sl], axis=axis % rank))
            rename[body.input[n_state + k].name] = sl
        for k in range(n_state):
            rename[body.input[k].name] = states[k]
        local = {o for n in body.node for o in n.output} | {init.name for init in body.initializer}
        for init in body.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = f"{prefix}t{t}_{init.name}"
            inits.append(copy)
            rename[init.name] = copy.name
        for name in local - set(rename):
            rename[name] = f"{prefix}t{t}_{name}"
        for n in body.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = f"{prefix}t{t}_{n.name}" if n.name else ""
            copy.ClearField("input")
            copy.input.extend(rename.get(x, x) if x else "" for x in n.input)
            copy.ClearField("output")
            copy.output.extend(rename.get(x, x) if x else "" for x in n.output)
            new.append(copy)
        states = [rename.get(o.name, o.name) for o in body.output[:n_state]]
        for k in range(n_out):
            pos = steps - 1 - t if out_dirs[k] else t
            slices_out[k][pos] = rename.get(body.output[n_state + k].name, body.output[n_state + k].name)
    for k in range(n_state):
        if k < len(node.output) and node.output[k]:
            new.append(helper.make_node("Identity", [states[k]], [node.output[k]]))
    for k in range(n_out):
        target = node.output[n_state + k] if n_state + k < len(node.output) else ""
        if not target:
            continue
        axis = out_axes[k]
        expanded = []
        for t, sl in enumerate(slices_out[k]):
            name = f"{prefix}o{k}_{t}"
            if opset >= 13:
                axes = f"{prefix}axes{k}"
                if t == 0:
                    inits.append(numpy_helper.from_array(np.array([axis], dtype=np.int64), axes))
                new.append(helper.make_node("Unsqueeze", [sl, axes], [name]))
            else:
                new.append(helper.make_node("Unsqueeze", [sl], [name], axes=[axis]))
            expanded.append(name)
        new.append(helper.make_node("Concat", expanded, [target], axis=axis))
    return new


REWRITES: list = [constant_value_attr, expand_functions, unroll_scan]
