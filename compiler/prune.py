"""Magnitude pruning of an ONNX model without retraining (``lwc prune``).

Methods (``--method``), all by weight magnitude, ``--amount`` = fraction set to zero:

* ``unstructured`` / ``unstructured:global``: the smallest ``|w|`` over all conv/dense/
  matmul weights together (global L1 threshold);
* ``unstructured:layer``: the smallest ``|w|`` within each weight;
* ``channel:l1`` / ``channel:l2``: whole output channels with the smallest L1 / L2 norm,
  per layer. A "channel" is a group of tied channels from :mod:`lwc.channels` -- the conv's
  weight row and bias, the BN scale/shift after it, the depthwise conv and SE branch that
  carry it -- so a pruned channel is exactly zero and ``lwc compile`` can delete it
  (pass RemoveZeroChannels). Channels lwc could not delete (graph outputs, Reshape,
  residual streams read by non-prunable layers) are not pruned;
* ``block:RxC`` (e.g. ``block:1x4``, ``4x1``, ``4x4``, ``8x1``): ``R x C`` blocks of the
  ``[out, in]`` weight view with the smallest mean ``|w|``, per layer (the BSR layout).

The result is a valid ONNX model with the zeros in place (same names, same graph), a
per-layer sparsity table and the output deviation (cosine similarity, max abs difference)
of the pruned model vs the original under onnxruntime on given or seeded random inputs.

Pruning without retraining costs accuracy: recovering it needs fine-tuning. With the torch
model at hand, :func:`lwc.finetune.masked_finetune` applies this module's criterion as
torch.nn.utils.prune masks and distils the pruned model from the unpruned one for a few
steps before ONNX export -- an API, not a promise of accuracy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from lwc import channels, sparsity_analysis
from lwc.errors import LwcError

METHODS = ("unstructured", "unstructured:global", "unstructured:layer", "channel:l1", "channel:l2", "block:RxC")
ACCURACY_NOTE = (
    "pruning without retraining loses accuracy; recovering it needs fine-tuning "
    "(lwc measures the output deviation only)"
)


@dataclass(frozen=True)
class Method:
    kind: str  # unstructured | channel | block
    option: str  # global | layer | l1 | l2 | RxC
    block: tuple[int, int] = (1, 1)


def parse_method(text: str) -> Method:
    """``--method`` text -> :class:`Method`.

    Raises:
        LwcError: unknown method (the message lists the known ones).
    """
    t = text.strip().lower()
    if t in ("unstructured", "unstructured:global", "unstructured:l1"):
        return Method("unstructured", "global")
    if t == "unstructured:layer":
        return Method("unstructured", "layer")
    if t in ("channel", "channel:l1", "channel:l2"):
        return Method("channel", t.partition(":")[2] or "l1")
    m = re.fullmatch(r"block:(\d+)x(\d+)", t)
    if m and 0 < int(m[1]) <= 64 and 0 < int(m[2]) <= 64:
        return Method("block", f"{m[1]}x{m[2]}", (int(m[1]), int(m[2])))
    raise LwcError(f"unknown pruning method {text!r}; methods: {', '.join(METHODS)} (e.g. block:1x4)")


def check_amount(amount: float) -> float:
    if not (0.0 <= amount < 1.0) or np.isnan(amount):
        raise LwcError(f"--amount {amount:g} is outside [0, 1): it is the fraction of weights set to zero")
    return float(amount)


@dataclass
class PruneResult:
    """A pruned model and what happened to it.

    Attributes:
        model: the pruned ModelProto (zeros in place).
        layers: per weight: node, op, shape, zeros before/after, channels pruned.
        deviation: per output: name, cosine, max_abs (empty when not measured).
        notes: caveats (always includes the fine-tuning note).
    """

    model: onnx.ModelProto
    method: str
    amount: float
    layers: list[dict]
    deviation: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        total = sum(layer["params"] for layer in self.layers)
        zeros = sum(layer["zeros_after"] for layer in self.layers)
        return {
            "method": self.method,
            "amount": self.amount,
            "zero_fraction": zeros / total if total else 0.0,
            "layers": self.layers,
            "deviation": self.deviation,
            "notes": self.notes,
        }

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        onnx.save(self.model, str(path))
        return path


# --------------------------------------------------------------------------- masks


def _smallest(scores: np.ndarray, k: int) -> np.ndarray:
    """Bool mask of the ``k`` smallest entries (stable: ties broken by position)."""
    mask = np.zeros(scores.size, dtype=bool)
    if k > 0:
        mask[np.argsort(scores.reshape(-1), kind="stable")[:k]] = True
    return mask.reshape(scores.shape)


def _unstructured(weights: dict[str, np.ndarray], amount: float, scope: str) -> dict[str, np.ndarray]:
    if scope == "layer":
        return {n: np.where(_smallest(np.abs(w), int(amount * w.size)), 0, w).astype(w.dtype) for n, w in weights.items()}
    flat = np.concatenate([np.abs(w).reshape(-1) for w in weights.values()])
    mask = _smallest(flat, int(amount * flat.size))
    out, offset = {}, 0
    for n, w in weights.items():
        out[n] = np.where(mask[offset: offset + w.size].reshape(w.shape), 0, w).astype(w.dtype)
        offset += w.size
    return out


def _block(w: np.ndarray, layout: str, rows: int, cols: int, amount: float) -> np.ndarray:
    m = sparsity_analysis.as_matrix(w, layout)
    o, i = m.shape
    po, pi = -o % rows, -i % cols
    padded = np.pad(np.abs(m), ((0, po), (0, pi)))
    nb_o, nb_i = (o + po) // rows, (i + pi) // cols
    scores = padded.reshape(nb_o, rows, nb_i, cols).mean(axis=(1, 3))
    dead = _smallest(scores, int(amount * scores.size))
    full = np.repeat(np.repeat(dead, rows, axis=0), cols, axis=1)[:o, :i]
    return sparsity_analysis.from_matrix(np.where(full, 0, m).astype(w.dtype), layout, w.shape)


# --------------------------------------------------------------------------- channel groups


def _root_rows(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    """The output-channel rows of a root layer's weight, as [out, -1]."""
    if node.op_type == "Conv":
        return w.reshape(w.shape[0], -1)
    return w if sparsity_analysis.attr(node, "transB", 0) and node.op_type == "Gemm" else w.T


def _round_keep(total: int, prunable: int, amount: float, round_to: int) -> int:
    """How many of a layer's ``prunable`` channels to zero so ``total`` - that is a multiple of ``round_to``.

    The kept count is ``total - floor(amount * prunable)`` rounded to the nearest multiple of
    ``round_to`` (at least ``round_to``), as Torch-Pruning's ``round_to`` option does: vector
    units fill whole lanes (AVX-512: 16 fp32, AVX2 and NEON quads: 8 / 4), so 23 channels
    cost as much as 32 and pruning to odd counts can make a layer slower (docs/sparsity.md).
    Never all of the prunable channels; never more than ``prunable``.
    """
    k = int(amount * prunable)
    if round_to > 1 and k:
        keep = max(round_to, int(np.floor((total - k) / round_to + 0.5)) * round_to)
        k = max(0, total - keep)
    return min(k, prunable - 1)


def channel_plan(
    model: onnx.ModelProto, amount: float, norm: str, consts, round_to: int = 1
) -> list[np.ndarray]:
    """Groups of global channel indices to zero: per layer (same root set), the weakest ``amount``.

    ``round_to`` > 1 rounds each layer's kept output channels to a multiple of it
    (:func:`_round_keep`).
    """
    g = channels.build(model, consts)
    can = channels.removable(g, require_zero=False)
    comp = g.components()
    members: dict[int, list[int]] = {}
    for name in g.tensors:
        for i in g.indices(name)[can[name]]:
            members.setdefault(int(comp[i]), []).append(int(i))
    owner = np.empty(g.size, dtype=object)
    for name in g.tensors:
        owner[g.indices(name)] = name
    layers: dict[tuple, list[tuple[float, list[int]]]] = {}
    nodes = model.graph.node
    for idxs in members.values():
        roots = sorted({owner[i] for i in idxs if owner[i] in g.roots})
        score = 0.0
        for i in idxs:
            t = owner[i]
            if t in g.roots:
                node = nodes[g.roots[t]]
                row = _root_rows(node, consts[node.input[1]])[i - g.base[t]]
                score += float(np.abs(row).mean() if norm == "l1" else np.sqrt((row**2).mean()))
        layers.setdefault(tuple(roots), []).append((score / max(len(roots), 1), idxs))
    plan = []
    for roots, groups in layers.items():
        total = max((_root_rows(nodes[g.roots[r]], consts[nodes[g.roots[r]].input[1]]).shape[0] for r in roots),
                    default=len(groups))
        k = _round_keep(total, len(groups), amount, round_to)
        groups.sort(key=lambda s: s[0])
        plan.extend(np.array(idxs) for _, idxs in groups[:k])
    return plan, g, owner


def _zero_channels(model, g: channels.ChannelGraph, owner, plan, consts) -> dict[str, np.ndarray]:
    """Zero every parameter that produces a planned channel; returns changed constants by name."""
    changed: dict[str, np.ndarray] = {}

    def arr(name):
        if name not in changed:
            changed[name] = consts[name].copy()
        return changed[name]

    sliced_by_node: dict[int, list[tuple[int, int]]] = {}
    for (index, pos), (_, dim) in g.sliced.items():
        sliced_by_node.setdefault(index, []).append((pos, dim))
    nodes = model.graph.node
    for idxs in plan:
        for i in idxs:
            t = owner[i]
            c = i - g.base[t]
            index = g.producer[t]
            node = nodes[index]
            if t in g.roots or index in g.depthwise:
                if node.op_type == "Conv":
                    arr(node.input[1])[c] = 0
                elif node.op_type == "Gemm" and sparsity_analysis.attr(node, "transB", 0):
                    arr(node.input[1])[c, :] = 0
                else:
                    arr(node.input[1])[:, c] = 0
                if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
                    arr(node.input[2])[c] = 0
            if node.op_type == "BatchNormalization":
                arr(node.input[1])[c] = 0
                arr(node.input[2])[c] = 0
            elif node.op_type in ("Add", "Sub", "Gemm"):
                for pos, dim in sliced_by_node.get(index, []):
                    np.moveaxis(arr(node.input[pos]), dim, 0)[c] = 0
    return changed


# --------------------------------------------------------------------------- model edits


def set_constants(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> None:
    """Overwrite constants (initializers or Constant nodes) by name, in place."""
    for t in model.graph.initializer:
        if t.name in arrays:
            t.CopyFrom(numpy_helper.from_array(arrays[t.name], t.name))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in arrays:
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(numpy_helper.from_array(arrays[node.output[0]], a.t.name))


def _apply_changes(model: onnx.ModelProto, changed: dict[str, np.ndarray], consts) -> None:
    """Write changed constants; folded ones (e.g. ``Reshape(bias)``) are rewired per consumer."""
    set_constants(model, {n: a for n, a in changed.items() if n in consts})
    derived = {n: a for n, a in changed.items() if n not in consts}
    rewire = {
        (i, pos): derived[name]
        for i, node in enumerate(model.graph.node)
        for pos, name in enumerate(node.input)
        if name in derived
    }
    if rewire:
        channels.set_inputs(model, rewire)


def _computed_weight_count(model: onnx.ModelProto, consts) -> int:
    return sum(
        1 for n in model.graph.node
        if n.op_type in sparsity_analysis.PRUNABLE_OPS and len(n.input) > 1 and n.input[1] not in consts
        and n.input[1] not in {i.name for i in model.graph.input}
    )


def prune(
    model: str | os.PathLike | onnx.ModelProto,
    method: str,
    amount: float,
    *,
    inputs: dict[str, np.ndarray] | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    seed: int = 0,
    measure: bool = True,
    round_to: int = 1,
) -> PruneResult:
    """Prune ``model``'s conv/dense/matmul weights by magnitude.

    Args:
        method: see the module docstring (``channel:l1``, ``block:1x4``, ...).
        amount: fraction in [0, 1) of weights (channels, blocks) set to zero.
        inputs / input_shapes / seed: data for the deviation measurement; inputs with
            dynamic dims and no shape are not measured (noted).
        measure: False skips the onnxruntime comparison.
        round_to: channel methods only: each layer keeps a multiple of this many output
            channels (nearest to ``1 - amount``; 16 suits AVX-512 fp32, 4 NEON), so the
            achieved amount differs per layer.

    Raises:
        LwcError: bad method, amount or round_to, unreadable model, no prunable weights.
    """
    from lwc.frontend import load_onnx

    meth = parse_method(method)
    amount = check_amount(amount)
    if round_to < 1 or (round_to > 1 and meth.kind != "channel"):
        raise LwcError(f"--round-to {round_to}: must be >= 1, and applies to channel:* methods only")
    original = load_onnx(model) if not isinstance(model, onnx.ModelProto) else model
    consts = sparsity_analysis.constant_arrays(original)
    refs = sparsity_analysis.weight_refs(original, consts)
    if not refs:
        computed = _computed_weight_count(original, consts)
        hint = (
            f"; {computed} Conv/Gemm/MatMul weight(s) are computed in the graph: fold constants "
            "first (e.g. `onnxsim model.onnx folded.onnx`)" if computed else ""
        )
        raise LwcError(f"model has no prunable weights (no constant Conv/Gemm/MatMul weight){hint}")
    pruned = onnx.ModelProto()
    pruned.CopyFrom(original)
    groups: dict[str, int] = {}
    if meth.kind == "unstructured":
        weights = {r.weight: consts[r.weight] for r in refs}
        set_constants(pruned, _unstructured(weights, amount, meth.option))
    elif meth.kind == "block":
        rows, cols = meth.block
        set_constants(pruned, {r.weight: _block(consts[r.weight], r.layout, rows, cols, amount) for r in refs})
    else:
        plan, g, owner = channel_plan(original, amount, meth.option, consts, round_to)
        if not plan and amount > 0:
            raise LwcError(
                "no channel can be pruned: every output channel is tied to a graph output or to "
                "an op lwc cannot shrink (Reshape, Flatten, grouped conv)"
            )
        _apply_changes(pruned, _zero_channels(original, g, owner, plan, channels.fold_constants(original, consts)), consts)
        for idxs in plan:
            for i in idxs:
                if owner[i] in g.roots:
                    node = original.graph.node[g.roots[owner[i]]]
                    name = node.name or f"{node.op_type}#{g.roots[owner[i]]}"
                    groups[name] = groups.get(name, 0) + 1
    result = PruneResult(pruned, method, amount, _layer_table(original, pruned, groups), notes=[ACCURACY_NOTE])
    if measure:
        result.deviation, note = measure_deviation(original, pruned, inputs, input_shapes, seed)
        if note:
            result.notes.append(note)
    return result


def _layer_table(original, pruned, groups: dict[str, int]) -> list[dict]:
    before = {s.node: s for s in sparsity_analysis.analyze(original)}
    rows = []
    for s in sparsity_analysis.analyze(pruned):
        rows.append({
            "node": s.node, "op": s.op, "shape": s.shape, "params": s.params,
            "zeros_before": round(before[s.node].zero_fraction * s.params),
            "zeros_after": round(s.zero_fraction * s.params),
            "zero_fraction": s.zero_fraction,
            "channels_pruned": groups.get(s.node, 0),
            "zero_out_channels": s.zero_out_channels,
            "out_channels": s.out_channels,
            "block_1x4": s.blocks["1x4"],
        })
    return rows


def measure_deviation(original, pruned, inputs=None, input_shapes=None, seed: int = 0):
    """(per-output cosine / max abs diff of pruned vs original under onnxruntime, note or None)."""
    import onnxruntime as ort

    from lwc.artifact import random_inputs
    from lwc.frontend import graph_inputs

    feeds = dict(inputs or {})
    specs = []
    for spec in graph_inputs(original):
        if spec.name in feeds:
            continue
        shape = (input_shapes or {}).get(spec.name, spec.shape)
        if not all(isinstance(d, int) and d > 0 for d in shape):
            return [], (f"output deviation not measured: input {spec.name!r} has dynamic shape "
                        f"{list(spec.shape)}; give --input-shape")
        specs.append({"name": spec.name, "shape": list(shape), "dtype": spec.dtype})
    feeds.update(random_inputs(specs, seed))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    outs = []
    for m in (original, pruned):
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, feeds))
    rows = []
    for spec, a, b in zip(original.graph.output, *outs):
        a64, b64 = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
        norm = np.linalg.norm(a64) * np.linalg.norm(b64)
        cosine = float(a64 @ b64 / norm) if norm > 0 else float(np.array_equal(a64, b64))
        rows.append({"name": spec.name, "cosine": cosine, "max_abs": float(np.max(np.abs(a64 - b64), initial=0.0))})
    return rows, None


def format_result(result: PruneResult, limit: int = 25) -> str:
    j = result.to_json()
    lines = [f"method {result.method}, amount {result.amount:g}: {j['zero_fraction']:.1%} of "
             f"{sum(r['params'] for r in result.layers):,} weights are zero"]
    lines.append(f"  {'node':<32} {'op':<16} {'shape':<20} {'zeros':>7} {'ch. pruned':>11}")
    for r in result.layers[:limit]:
        ch = f"{r['channels_pruned']}/{r['out_channels']}" if r["channels_pruned"] else "-"
        lines.append(f"  {r['node'][:32]:<32} {r['op'][:16]:<16} {str(r['shape'])[:20]:<20} "
                     f"{r['zero_fraction']:>7.1%} {ch:>11}")
    if len(result.layers) > limit:
        lines.append(f"  ... {len(result.layers) - limit} more layers (--json lists all)")
    for d in result.deviation:
        lines.append(f"output {d['name']}: cosine vs unpruned {d['cosine']:.6f}, max abs diff {d['max_abs']:.4g}")
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
