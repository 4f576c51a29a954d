"""Injective rule: elementwise chains fused into one loop, broadcast, transpose, concat,
resize; vectorized inner loop, parallel only when large; numerics vs onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from schedules_support import AVX2, check_numerics, model, prim_scripts, rand, schedule


def chain_model(shape):
    nodes = [
        helper.make_node("Add", ["x", "b"], ["t0"]),
        helper.make_node("Sigmoid", ["t0"], ["t1"]),
        helper.make_node("Mul", ["t0", "t1"], ["y"]),
    ]
    return model(nodes, {"x": shape}, {"y": shape}, {"b": rand(shape[1], 1, 1, seed=3)})


def test_large_elementwise_is_parallel_and_vectorized():
    sched, report, _ = schedule(chain_model([1, 64, 64, 80]), AVX2)
    assert report.get("injective", 0) >= 1, report
    kernel = next(s for s in prim_scripts(sched).values() if "sigmoid" in s.lower() or "T.sigmoid" in s or "exp" in s)
    assert "T.parallel(" in kernel
    assert "T.vectorized(T.int64(8))" in kernel


def test_small_elementwise_stays_serial():
    sched, _, _ = schedule(chain_model([1, 4, 8, 16]), AVX2)
    for s in prim_scripts(sched).values():
        assert "T.parallel(" not in s


CASES = {
    "chain": (chain_model([1, 16, 24, 40]), {"x": [1, 16, 24, 40]}),
    "transpose": (model([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])],
                        {"x": [1, 24, 30, 40]}, {"y": [1, 30, 40, 24]}), {"x": [1, 24, 30, 40]}),
    "concat": (model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Concat", ["x", "r"], ["y"], axis=1)],
                     {"x": [1, 16, 27, 27]}, {"y": [1, 32, 27, 27]}), {"x": [1, 16, 27, 27]}),
    "resize": (model([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")],
                     {"x": [1, 8, 20, 24]}, {"y": [1, 8, 40, 48]},
                     {"s": np.array([1, 1, 2, 2], np.float32)}), {"x": [1, 8, 20, 24]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_injective_matches_onnxruntime(case):
    m, shapes = CASES[case]
    report = check_numerics(m, {k: rand(*v) for k, v in shapes.items()})
    assert report.get("injective", 0) >= 1, report
    assert not report["declined"], report


def test_isnan_stays_a_vector_operation_in_llvm_builds():
    """A NaN-preserving ReLU over gathered elements (a write-back epilogue's shape):
    inside tvm_compat.vectorizable_isnan the isnan is one vector compare (TVM alone
    scalarizes the loop), NaN still propagates, and the attribute is gone afterwards."""
    import numpy as np
    import tvm
    from tvm.script import tirx as T

    from lwc import tvm_compat

    @T.prim_func
    def relu_gather(a: T.Buffer((64,), "float32"), idx: T.Buffer((64,), "int32"), b: T.Buffer((64,), "float32")):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for i in T.vectorized(64):
            b[i] = T.Select(T.isnan(a[idx[i]]), a[idx[i]], T.max(a[idx[i]], T.float32(0)))

    mod = tvm.IRModule({"main": relu_gather})
    target = tvm.target.Target({"kind": "llvm"})
    with tvm_compat.vectorizable_isnan():
        lib = tvm.compile(mod, target=target)
    assert "<64 x float>" in lib.mod.inspect_source("ll")  # TVM's 64-lane vector (else a scalar loop)
    assert not tvm.ir.Op.get("tirx.isnan").get_attr("TVectorizable")
    a = np.array([np.nan, -1.5, 2.0, 0.0] * 16, np.float32)
    idx = np.arange(64, dtype=np.int32)[::-1].copy()
    out = tvm.runtime.tensor(np.zeros(64, np.float32))
    lib["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(idx), out)
    want = a[idx]
    np.testing.assert_array_equal(out.numpy(), np.where(np.isnan(want), want, np.maximum(want, 0)))
