"""What TVM will generate for a Relax module: the kernel list, FLOPs, and ONNX provenance.

:func:`list_kernels` runs the part of TVM's CPU lowering that decides kernels
(LegalizeOps -> AnnotateTIROpPattern -> FoldConstant -> FuseOps -> FuseTIR) and returns one
:class:`Kernel` per ``call_tir`` left in ``main``, in execution order. The kernel count
with and without lwc's passes is the compile report's measure of fusion.

:func:`attribute_onnx_nodes` maps kernels back to ONNX node names. TVM keeps no source
locations through its passes, so this is done by order and op type: each "anchor" ONNX
node (Conv, MatMul, pooling, Resize, ...) is given to the next kernel that contains the
matching Relax op, and the elementwise nodes after it (bias, BatchNorm, activations)
follow it into the same kernel. The report labels the mapping as approximate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx
import tvm
from tvm import relax

from lwc.constant_folding import fold_constants

#: ONNX op type -> the op token TVM's FuseOps puts in a kernel's name.
ANCHORS = {
    "Conv": "conv2d", "ConvTranspose": "conv2d_transpose", "MatMul": "matmul", "Gemm": "matmul",
    "MaxPool": "max_pool2d", "AveragePool": "avg_pool2d", "GlobalAveragePool": "mean",
    "ReduceMean": "mean", "Resize": "resize2d", "Softmax": "softmax", "Concat": "concatenate",
    "Transpose": "transpose", "LayerNormalization": "layer_norm", "Split": "split",
    "Slice": "strided_slice", "Gather": "take", "ReduceSum": "sum", "ReduceMax": "max",
    "Reshape": "reshape", "Flatten": "reshape",
}


@dataclass
class Kernel:
    """One generated kernel: its TIR function name, FLOPs estimate and what it reads."""

    name: str
    flops: float
    inputs: list[str] = field(default_factory=list)  # kernel names it reads from
    onnx_nodes: list[str] = field(default_factory=list)

    @property
    def ops(self) -> list[str]:
        return _tokens(self.name)

    def to_json(self) -> dict:
        return {"name": self.name, "flops": self.flops, "inputs": self.inputs,
                "onnx_nodes": self.onnx_nodes}


def _tokens(name: str) -> list[str]:
    """Op tokens of a kernel name: fused_conv2d3_add2_hard_swish -> [conv2d, add, hard_swish]."""
    parts = name.removeprefix("fused_").split("_")
    tokens = []
    for part in parts:
        stem = part.rstrip("0123456789") or part
        if tokens and stem in ("transpose", "pool2d", "norm", "swish", "sigmoid", "slice", "nan") and tokens[-1] in (
            "conv2d", "max", "avg", "layer", "group", "hard", "strided", "isnan"
        ):
            tokens[-1] += "_" + stem
        else:
            tokens.append(stem)
    return tokens


def lower_to_kernels(mod: tvm.IRModule, target) -> tvm.IRModule:
    """TVM's kernel-forming passes of the default CPU/GPU pipeline (its zero pipeline
    without a tuning database).

    FoldConstant is :func:`lwc.constant_folding.fold_constants` (the same result with one
    LLVM build instead of one per constant-only kernel). The last result is kept: the
    compile report and the schedule stage (:func:`lwc.tuning.apply.prepare`) lower the same
    module. The result is shared, so callers must not modify it in place (TVM passes and
    ``IRModule.clone`` make new ones).
    """
    key = str(target)
    if _LAST and _LAST[0].same_as(mod) and _LAST[1] == key:
        return _LAST[2]
    seq = tvm.transform.Sequential([
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        _FOLD_CONSTANTS, relax.transform.FuseOps(), relax.transform.FuseTIR(),
    ])
    with target:
        out = seq(mod)
    _LAST[:] = [mod, key, out]
    return out


#: TVM's FoldConstant, one LLVM build for all (see :mod:`lwc.constant_folding`).
_FOLD_CONSTANTS = tvm.transform.module_pass(lambda mod, _ctx: fold_constants(mod), opt_level=0,
                                            name="FoldConstant")

#: (module, target string, lowered module) of the last :func:`lower_to_kernels` call.
_LAST: list = []


def list_kernels(mod: tvm.IRModule, target) -> list[Kernel]:
    """The kernels ``main`` calls, in order, after TVM's fusion (see module docstring)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    lowered = lower_to_kernels(mod, target)
    producer: dict = {}
    kernels: list[Kernel] = []
    flops_cache: dict[str, float] = {}
    for block in lowered["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            reads = [producer[v] for v in relax.analysis.free_vars(value) if v in producer]
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
                gvar = value.args[0]
                name = gvar.name_hint
                if name not in flops_cache:
                    try:
                        flops_cache[name] = float(estimate_tir_flops(tvm.IRModule({"main": lowered[gvar]})))
                    except Exception:  # TIR the estimator does not understand
                        flops_cache[name] = 0.0
                kernels.append(Kernel(name, flops_cache[name], sorted(set(reads))))
                producer[binding.var] = len(kernels) - 1
            elif reads:  # tuple / alias bindings pass their producers through
                producer[binding.var] = reads[-1]
    for k in kernels:
        k.inputs = [kernels[i].name + f"#{i}" for i in k.inputs]
    return kernels


def attribute_onnx_nodes(kernels: list[Kernel], model: onnx.ModelProto) -> None:
    """Fill each kernel's ``onnx_nodes`` (approximate; see module docstring)."""
    used: list[Counter] = [Counter() for _ in kernels]
    cursor = 0
    current = None
    for i, node in enumerate(model.graph.node):
        label = node.name or f"{node.op_type}_{i}"
        token = ANCHORS.get(node.op_type)
        if token is not None:
            for j in range(cursor, len(kernels)):
                have = Counter(kernels[j].ops)
                if have[token] > used[j][token]:
                    used[j][token] += 1
                    current, cursor = j, j
                    break
        if node.op_type == "Constant":
            continue
        if current is None:
            current = 0 if kernels else None
        if current is not None:
            kernels[current].onnx_nodes.append(label)


def count(kernels: list[Kernel]) -> int:
    return len(kernels)
