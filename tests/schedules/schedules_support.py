"""Shared helpers of the schedule-rule tests: build a one-op ONNX model, compile it with
``lwc.schedules`` and compare with onnxruntime.

lwc's own passes are not run here (the rules must schedule whatever TVM legalizes); the
module goes through TVM's zero pipeline (legalize + fuse) as ``lwc.tuning.prepare`` does.
"""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from lwc.schedules import CpuFacts, apply_rules
from onnx import TensorProto, helper

#: Tolerance for fp32 kernels (tests/conftest.py TOL["fp32"]).
TOL = dict(rtol=1e-4, atol=1e-4)
#: Facts of a 2-core AVX2 machine and of a 4-core NEON board, fixed so tests do not depend
#: on the machine that runs them.
AVX2 = CpuFacts(vector_bits=256, vector_regs=16, cores=2)
NEON = CpuFacts(vector_bits=128, vector_regs=32, cores=4)


def model(nodes, inputs: dict, outputs: dict, inits: dict | None = None, opset: int = 13):
    """An ONNX ModelProto from nodes, {name: shape} inputs/outputs and numpy initializers."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel().tolist()) for n, a in (inits or {}).items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def fused_module(onnx_model, target: str = "host"):
    """(legalized + fused Relax module, tvm Target) of an ONNX model."""
    from lwc.frontend import import_model
    from lwc.targets import resolve
    from tvm import relax

    tgt = resolve(target).tvm_target()
    imp = import_model(onnx_model)
    with tgt:
        return relax.get_pipeline("zero")(imp.mod), tgt


def schedule(onnx_model, facts: CpuFacts = AVX2, target: str = "host"):
    """(scheduled module, report, target) of an ONNX model."""
    fused, tgt = fused_module(onnx_model, target)
    sched, report = apply_rules(fused, facts)
    return sched, report, tgt


def prim_scripts(mod) -> dict[str, str]:
    """TVMScript of each PrimFunc, by name."""
    return {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def run_lwc(mod, tgt, feed: dict) -> list[np.ndarray]:
    """Build ``mod`` for ``tgt`` and run it on this machine with the Relax VM."""
    from lwc import tvm_compat

    ex = tvm_compat.build(mod, tgt)
    vm = tvm_compat.virtual_machine(ex)
    out = vm["main"](*[tvm_compat.tensor(v) for v in feed.values()])
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


def run_ort(onnx_model, feed: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def check_numerics(onnx_model, feed: dict, facts: CpuFacts = AVX2) -> dict:
    """Schedule, build, run and compare with onnxruntime; returns the rules' report."""
    sched, report, tgt = schedule(onnx_model, facts)
    for got, want in zip(run_lwc(sched, tgt, feed), run_ort(onnx_model, feed)):
        np.testing.assert_allclose(got, want, **TOL)
    return report


def rand(*shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
