"""ONNX ``If`` nodes whose condition is a constant become the branch they take.

Models exported for several configurations switch between them with ``If`` on an input
(Silero VAD: ``If(sr == 16000)`` around the whole 16 kHz network, else the 8 kHz one).
Once that input is bound to a value (:func:`lwc.onnx_legalize.bind_inputs`), the condition
is a constant and the ``If`` is dead control flow; TVM's importer and onnxsim both stumble
on it (onnxsim inlines the branch but not in topological order and then gives up).

Rewrite, for a node ``outs = If(cond)`` with ``cond`` computable from constants only:

    before:  c = Equal(sr_init, Constant(16000));  y = If(c, then=T, else=E)
    after:   <T's nodes, in topological order>;  y = Identity(T.output)

The condition is evaluated by onnx's reference runtime on the constant sub-graph that
feeds it (initializers, ``Constant`` nodes, small nodes on constants, and ``Shape`` of a
value whose inferred shape is static). Each branch graph is also put in topological order
(exporters such as spox write branch nodes out of order, which the ONNX spec forbids). Preconditions: names are unique across the model
(SSA, as the ONNX spec requires), so inlined nodes keep their names.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def fold_constant_ifs(
    model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None
) -> onnx.ModelProto:
    """The model with every top-level ``If`` on a constant condition inlined (repeated
    until none is left); the input is not modified.

    With ``input_shapes`` (static shapes of graph inputs) the shapes are fixed on the model
    and ``Shape``/``Size`` of a value whose inferred shape is static count as constants, so
    an ``If`` on a dimension (``If(Shape(x)[0] == 1)``) folds too. Only the ``If`` nodes
    change: the constants found on the way are left for onnxsim to fold.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in out.graph.input:
        if input_shapes and vi.name in input_shapes:
            vi.type.tensor_type.shape.Clear()
            for d in input_shapes[vi.name]:
                vi.type.tensor_type.shape.dim.add().dim_value = d
    _toposort(out.graph, set())
    while _fold_one(out.graph, _known_values(out, bool(input_shapes))):
        _toposort(out.graph, set())
    return out


def _known_values(model: onnx.ModelProto, with_shapes: bool) -> dict[str, np.ndarray]:
    """Values computable before run time; with shapes, a value found constant (a Pad's
    pads, say) lets shape inference find more static shapes, so this iterates."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    known: dict[str, np.ndarray] = {}
    for _ in range(_MAX_ROUNDS):
        shapes = _static_shapes(_with_initializers(model, known)) if with_shapes else {}
        found = _constants(model.graph, shapes, opset)
        if len(found) == len(known):
            break
        known = found
    return known


#: rounds of (constants -> shape inference -> constants) before giving up
_MAX_ROUNDS = 8
#: a node is evaluated at compile time only when its constant inputs are this small
_MAX_ELEMENTS = 1 << 16


def _with_initializers(model: onnx.ModelProto, known: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``model`` with every known value an initializer and its producing node dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = [n for n in out.graph.node if not all(o in known for o in n.output)]
    have = {t.name for t in out.graph.initializer}
    out.graph.ClearField("node")
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(
        numpy_helper.from_array(np.asarray(v), k) for k, v in known.items() if k not in have)
    return out


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Name -> shape of every value whose inferred shape is fully static."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    return shapes


def _constants(graph: onnx.GraphProto, shapes: dict[str, list[int]], opset: int) -> dict:
    """Values known at compile time: initializers, Constant nodes, Shape/Size of statically
    shaped values, and any small node (no subgraph) whose inputs are all known."""
    from onnx.reference import ReferenceEvaluator

    known = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes and not node.attribute:
            shape = np.array(shapes[node.input[0]], dtype=np.int64)
            known[node.output[0]] = shape if node.op_type == "Shape" else np.array(shape.prod())
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute) or node.domain not in ("", "ai.onnx"):
            continue
        if not all(i in known for i in node.input if i):
            continue
        feeds = {i: known[i] for i in node.input if i}
        if node.op_type != "Constant" and (
                not feeds or any(np.asarray(v).size > _MAX_ELEMENTS for v in feeds.values())):
            continue
        try:
            value = ReferenceEvaluator(_single(node, list(feeds.items()), opset)).run(None, feeds)
        except Exception:  # noqa: BLE001, S112  (an op the reference runtime lacks stays unknown)
            continue
        known.update(zip(node.output, value))
    return known


def _single(node: onnx.NodeProto, feeds: list, opset: int) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype),
                                            np.asarray(v).shape) for n, v in feeds]
    outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _fold_one(graph: onnx.GraphProto, known: dict[str, np.ndarray]) -> bool:
    """Inline the first If with a constant condition; False when there is none."""
    for index, node in enumerate(graph.node):
        if node.op_type != "If":
            continue
        if node.input[0] not in known:
            continue
        taken = "then_branch" if bool(np.asarray(known[node.input[0]]).reshape(-1)[0]) else "else_branch"
        branch = next(a.g for a in node.attribute if a.name == taken)
        body = list(branch.node) + [
            helper.make_node("Identity", [b.name], [o], name=f"{node.name or o}/{taken}/{o}")
            for b, o in zip(branch.output, node.output)
        ]
        graph.initializer.extend(branch.initializer)
        nodes = list(graph.node)
        graph.ClearField("node")
        graph.node.extend(nodes[:index] + body + nodes[index + 1:])
        return True
    return False


def _toposort(graph: onnx.GraphProto, outer: set[str]) -> None:
    """Order ``graph``'s nodes (and, recursively, its subgraphs') so every input is defined
    before its use; names from ``outer`` (enclosing graphs) count as defined."""
    defined = set(outer) | {t.name for t in graph.initializer} | {v.name for v in graph.input} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in defined for i in _needs(n))]
        if not ready:  # a cycle or a name from nowhere: keep the rest as it was
            ordered.extend(pending)
            break
        for node in ready:
            ordered.append(node)
            defined.update(node.output)
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
    graph.ClearField("node")
    graph.node.extend(ordered)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _toposort(attr.g, defined)


def _needs(node: onnx.NodeProto) -> set[str]:
    """Names a node reads: its inputs and the outer names its subgraphs use."""
    names = set(node.input)
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            names |= _free_names(attr.g)
    return names


def _free_names(graph: onnx.GraphProto) -> set[str]:
    local = {t.name for t in graph.initializer} | {v.name for v in graph.input}
    local |= {o for n in graph.node for o in n.output}
    used = set()
    for node in graph.node:
        used |= _needs(node)
    used |= {o.name for o in graph.output}
    return used - local - {""}
