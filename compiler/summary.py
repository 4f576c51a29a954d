"""``lwc inspect``: what is in an ONNX model, without compiling it.

Inputs/outputs with dynamic dims marked, opset, producer, op histogram, parameter count
and bytes (initializers plus Constant nodes), and the op types TVM's importer lacks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from lwc import sparsity_analysis
from lwc.frontend import graph_inputs, graph_outputs, load_onnx, op_histogram, unsupported_nodes


def _constant_tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    yield attr.t


def describe_model(path: str | Path, input_values: dict | None = None) -> dict:
    """Summary of an ONNX file as a JSON-serialisable dict.

    Keys: file, opset, producer, inputs/outputs (name, shape with str for dynamic dims,
    dtype, dynamic: bool), ops (type -> count, most frequent first), nodes, params
    (element count), param_bytes, unsupported ([{op, node}]).

    With ``input_values`` (``--input-value``, :mod:`lwc.input_values`) those inputs are
    bound first and the ``If`` nodes they decide inlined: the model lwc would import
    (a ``bound_inputs`` key lists them).

    Raises:
        LwcError: the file is missing or not a valid ONNX model, or a bad input value.
    """
    from lwc import input_values as values_stage

    model = load_onnx(path)
    bound = values_stage.resolve(model, input_values)
    model = values_stage.bind(model, bound)
    model = values_stage.fold_ifs(model, bound, [s for s in graph_inputs(model) if s.is_static])
    params = 0
    param_bytes = 0
    for t in _constant_tensors(model):
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        params += n
        param_bytes += n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    hist = op_histogram(model)

    def spec(s):
        return {**s.to_json(), "dynamic": not s.is_static}

    return {
        "file": str(path),
        **({"bound_inputs": values_stage.to_json(bound)} if bound else {}),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [spec(s) for s in graph_inputs(model)],
        "outputs": [spec(s) for s in graph_outputs(model)],
        "nodes": sum(hist.values()),
        "ops": dict(hist.most_common()),
        "params": params,
        "param_bytes": param_bytes,
        "unsupported": [{"op": op, "node": node} for op, node in unsupported_nodes(model)],
        "sparsity": [layer.to_json() for layer in sparsity_analysis.analyze(model)],
    }


def format_summary(info: dict) -> str:
    """Human-readable text of :func:`describe_model`'s dict."""
    lines = [f"model     {info['file']}", f"opset     {info['opset']}  producer: {info['producer'] or '?'}"]
    for kind in ("inputs", "outputs"):
        for s in info[kind]:
            dyn = "  (dynamic: fix with --input-shape)" if s["dynamic"] and kind == "inputs" else ""
            lines.append(f"{kind[:-1]:<9} {s['name']}  {s['dtype']}{s['shape']}{dyn}")
        if kind == "inputs":
            lines += [f"bound     {k} = {v}  (--input-value)" for k, v in info.get("bound_inputs", {}).items()]
    lines.append(f"params    {info['params']:,} ({info['param_bytes'] / 1e6:.2f} MB)")
    lines.append(f"nodes     {info['nodes']}")
    width = max((len(k) for k in info["ops"]), default=0)
    for op, count in info["ops"].items():
        lines.append(f"  {op:<{width}}  {count}")
    if info["unsupported"]:
        listed = ", ".join(f"{u['op']} (node {u['node']!r})" for u in info["unsupported"])
        lines.append(f"unsupported by TVM's importer: {listed}")
    else:
        lines.append("unsupported ops: none")
    layers = [sparsity_analysis.WeightSparsity(**s) for s in info.get("sparsity", [])]
    lines.extend(sparsity_analysis.format_table(layers, limit=20))
    return "\n".join(lines)
