"""RemoveZeroChannels: structured pruning made physical (an ONNX-level lwc pass).

Runs on the simplified ModelProto (static shapes, BatchNorm already folded by onnxsim)
before Relax import. It is an ONNX pass rather than a Relax pass because a channel
deletion crosses many ops at once (conv -> BN -> activation -> depthwise conv -> SE ->
conv) and the shapes of every tensor in between change; at the ONNX level this is
numpy slicing of initializers plus a shape re-inference, and onnxruntime can check the
result directly.

Math (exact, no approximation): if channel ``c`` of a tensor ``x`` is zero everywhere,
then for any Conv reading ``x``:

    y[o] = sum_i W[o, i] * x[i] + b[o] = sum_{i != c} W[o, i] * x[i] + b[o]

(zero padding adds zeros too), so ``W[:, c]`` can be deleted together with ``x[c]``; and
every op between the channel's producer (a Conv/Gemm/MatMul weight row) and that
consumer is channel-wise, so it loses channel ``c`` with nothing else changed. Which
channels are zero and which components of tied channels may go is decided by
:mod:`lwc.channels` (see its docstring for the op rules).

Preconditions (checked; otherwise the channel stays, with the reason in the report):
the component has no member that is a graph output or is read by an op lwc cannot
shrink (Reshape, Flatten, grouped conv, ...), and every Conv/Gemm/MatMul that reads a
member reads a channel that is exactly zero (a residual ``Add`` whose other branch is
non-zero keeps the channel alive).

Before / after (channels 1 and 3 of conv1 are all-zero weight rows with zero bias)::

    x -> Conv(W1[8,3,3,3]) -> Relu -> Conv(W2[16,8,1,1]) -> y
    x -> Conv(W1[6,3,3,3]) -> Relu -> Conv(W2[16,6,1,1]) -> y
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from lwc import channels


@dataclass
class RemovalReport:
    """What RemoveZeroChannels did: per producing layer, channels removed / kept-zero and why."""

    removed: dict[str, int] = field(default_factory=dict)
    kept_zero: dict[str, str] = field(default_factory=dict)
    channels_before: int = 0
    channels_after: int = 0

    @property
    def total_removed(self) -> int:
        return sum(self.removed.values())

    def to_json(self) -> dict:
        return {
            "removed_channels": self.total_removed,
            "removed": self.removed,
            "kept_zero": self.kept_zero,
            "root_channels_before": self.channels_before,
            "root_channels_after": self.channels_after,
        }


class RemoveZeroChannels:
    """``RemoveZeroChannels()(model) -> model``; ``.last_report`` holds the :class:`RemovalReport`."""

    name = "RemoveZeroChannels"

    def __init__(self) -> None:
        self.last_report = RemovalReport()

    def __call__(self, model: onnx.ModelProto) -> onnx.ModelProto:
        g = channels.build(model)
        remove = channels.removable(g, require_zero=True)
        report = _report(model, g, remove)
        self.last_report = report
        if report.total_removed == 0:
            return model
        return channels.shrink(model, g, remove)


def _layer_name(model: onnx.ModelProto, index: int) -> str:
    node = model.graph.node[index]
    return node.name or f"{node.op_type}#{index}"


def _report(model: onnx.ModelProto, g: channels.ChannelGraph, remove: dict[str, np.ndarray]) -> RemovalReport:
    report = RemovalReport()
    comp = g.components()
    blocked = np.zeros(g.size, dtype=bool)
    if g.blocked:
        blocked[comp[np.fromiter(g.blocked, dtype=np.int64)]] = True
    for tensor, index in g.roots.items():
        name = _layer_name(model, index)
        n = g.tensors[tensor].channels
        gone = int(remove[tensor].sum())
        report.channels_before += n
        report.channels_after += n - gone
        if gone:
            report.removed[name] = gone
        stuck = g.zero[tensor] & ~remove[tensor]
        if stuck.any():
            idx = g.indices(tensor)[stuck]
            why = (
                "tied to a graph output or an op lwc cannot shrink (Reshape, Flatten, grouped conv)"
                if blocked[comp[idx]].any()
                else "tied to a channel that is non-zero where a Conv/Gemm reads it (e.g. a residual Add)"
            )
            report.kept_zero[name] = f"{int(stuck.sum())} zero channel(s) kept: {why}"
    return report
