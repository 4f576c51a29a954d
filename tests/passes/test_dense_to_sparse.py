"""DenseToSparse: BSR kernel for block-sparse constant matmul weights."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lwc import prune
from lwc.frontend import import_model
from lwc.kernels.bsr import to_bsr
from lwc.passes.dense_to_sparse import DenseToSparse
from tests.conftest import TOL


def mlp(rows=4, d=32, h=64, seed=0):
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((d, h)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((h, d)).astype(np.float32), "w2"),
    ]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, d])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def count_call_tir(mod, prefix="bsr_matmul"):
    return sum(1 for gv in mod.functions if gv.name_hint.startswith(prefix))


def test_to_bsr_roundtrip():
    wt = np.zeros((8, 12), np.float32)
    wt[2, 4:8] = [1, 2, 3, 4]
    wt[5, 0] = 5
    data, indices, indptr = to_bsr(wt, 1, 4)
    assert indptr.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert indices.tolist() == [1, 0]
    assert data.shape == (2, 1, 4) and data[0, 0].tolist() == [1, 2, 3, 4]


def test_structural_force_rewrites_both_matmuls():
    model = prune.prune(mlp(), "block:1x4", 0.8, measure=False).model
    p = DenseToSparse("force")
    mod = p(import_model(model).mod)
    assert [d.used for d in p.decisions] == [True, True]
    assert all(d.bytes_sparse < d.bytes_dense for d in p.decisions)
    assert count_call_tir(mod) >= 1


def test_negative_dense_weights_unchanged():
    mod = import_model(mlp()).mod
    p = DenseToSparse("force")
    assert p(mod) is mod
    assert all(d.reason == "no all-zero block" for d in p.decisions)


def test_negative_auto_declines_dense_enough_layers():
    model = prune.prune(mlp(), "block:1x4", 0.2, measure=False).model
    mod = import_model(model).mod
    p = DenseToSparse("auto")
    assert p(mod) is mod
    assert all("dense is faster" in d.reason for d in p.decisions)


def test_auto_keeps_dense_when_bsr_wins_by_less_than_the_noise_margin(monkeypatch):
    """BSR must beat dense by MIN_GAIN; a 5% win (timing noise on a small layer) keeps dense."""
    from lwc import sparsity_decide
    from lwc.targets import resolve

    model = prune.prune(mlp(), "block:1x4", 0.9, measure=False).model
    times = iter([0.0095, 0.0050])  # BSR timings of the two layers (ms); dense: 0.0100
    monkeypatch.setattr(sparsity_decide, "time_prim_func",
                        lambda func, target, inputs=None: next(times) if inputs is not None else 0.0100)
    p = DenseToSparse("auto", decide=sparsity_decide.MeasuredDecider(resolve("host").tvm_target()))
    p(import_model(model).mod)
    first, second = p.decisions
    assert not first.used and "within timing noise): dense kept" in first.reason
    assert second.used and "BSR is faster" in second.reason


@pytest.mark.parametrize("rows,method", [(1, "block:1x4"), (1, "block:4x1"), (8, "block:1x4"), (3, "block:4x1")])
def test_numerical_matches_onnxruntime(rows, method):
    import lwc.driver
    from lwc import pipeline

    model = prune.prune(mlp(rows=rows), method, 0.85, measure=False).model
    result = lwc.driver.compile(model, "host", sparsity="force", disabled_passes=tuple(pipeline.pass_names()))
    assert "DenseToSparse" in result.passes
    x = np.random.default_rng(1).standard_normal((rows, 32)).astype(np.float32)
    (y,) = result.run({"x": x})
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, ref, **TOL["fp32"])


# --------------------------------------------------------------------------- --sparsity auto


def test_auto_measures_both_kernels_on_host():
    from lwc import sparsity_decide, sparsity_stage
    from lwc.targets import resolve

    model = prune.prune(mlp(rows=4), "block:1x4", 0.9, measure=False).model
    _, info = sparsity_stage.apply(import_model(model), "auto", preset=resolve("host"))
    decisions = info["dense_to_sparse"]
    assert len(decisions) == 2
    for d in decisions:
        assert d["reason"].startswith("measured: BSR") and d["dense_schedule"] == "TVM default schedule"
        assert d["sparse_ms"] > 0 and d["dense_ms"] > 0
        assert d["used"] == (d["sparse_ms"] < (1 - sparsity_decide.MIN_GAIN) * d["dense_ms"])


def test_auto_uses_the_cost_model_for_cross_targets():
    from lwc import sparsity_stage
    from lwc.targets import resolve

    model = prune.prune(mlp(rows=4), "block:1x4", 0.9, measure=False).model
    _, info = sparsity_stage.apply(import_model(model), "auto", preset=resolve("arm64"))
    for d in info["dense_to_sparse"]:
        assert "cost model" in d["reason"] and "cross target" in d["reason"]
        assert d["used"] and "sparse_ms" not in d


def test_auto_times_the_tuned_dense_kernel_from_the_tuning_log(tmp_path):
    """A tuning log holding the (bias-fused) dense matmul workloads is found by shape and replayed."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.schedule import Trace

    from lwc import sparsity_decide
    from lwc.targets import resolve
    from lwc.tuning.apply import prepare, task_workloads
    from lwc.tuning.database import RECORD_FILE, open_database
    from lwc.tuning.logs import LogChoice

    target = resolve("host").tvm_target()
    dense = import_model(mlp(rows=4)).mod
    database = open_database(tmp_path)
    for workload in task_workloads(prepare(dense, target), target):
        entry = database.commit_workload(workload)
        args = ms.arg_info.ArgInfo.from_prim_func(workload["main"])
        database.commit_tuning_record(ms.database.TuningRecord(Trace([], {}), entry, [1e-4], target, args))
    with open(tmp_path / RECORD_FILE, "a") as f:
        f.write('[0, [["torn line of an interrupted run"\n')
    index = sparsity_decide.tuned_dense_kernels(tmp_path, target)
    assert set(index) == {("matmul", 4, 32, 64), ("matmul", 4, 64, 32)}
    model = prune.prune(mlp(rows=4), "block:1x4", 0.9, measure=False).model
    p = DenseToSparse("auto", decide=sparsity_decide.MeasuredDecider(target, LogChoice(tmp_path, records_target=target)))
    p(import_model(model).mod)
    assert [d.dense_schedule.split(",")[0] for d in p.decisions] == ["tuned", "tuned"]
    assert all(tmp_path.name in d.reason for d in p.decisions)


def test_gemm_trans_b_weight_is_a_candidate():
    """Gemm(transB=1) (torch's nn.Linear export) imports as matmul(x, permute_dims(W))."""
    import lwc.driver
    from lwc import pipeline

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])],
        [numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b")])
    model = prune.prune(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
                        "block:1x4", 0.8, measure=False).model
    result = lwc.driver.compile(model, "host", sparsity="force", disabled_passes=tuple(pipeline.pass_names()))
    (d,) = result.extra["sparsity"]["dense_to_sparse"]
    assert d["used"] and d["shape"] == [32, 64] and d["dims"] == {"m": 4, "k": 32, "n": 64}
    x = rng.standard_normal((4, 32)).astype(np.float32)
    (y,) = result.run({"x": x})
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, ref, **TOL["fp32"])


def test_auto_falls_back_to_the_cost_model_when_timing_fails(monkeypatch):
    from lwc import sparsity_decide
    from lwc.targets import resolve

    def broken(*args, **kwargs):
        raise RuntimeError("no such device\nLLVM ERROR: broken")

    monkeypatch.setattr(sparsity_decide, "time_prim_func", broken)
    model = prune.prune(mlp(rows=4), "block:1x4", 0.9, measure=False).model
    p = DenseToSparse("auto", decide=sparsity_decide.MeasuredDecider(resolve("host").tvm_target()))
    p(import_model(model).mod)
    assert all(d.reason.startswith("cost model (timing failed: LLVM ERROR: broken)") for d in p.decisions)
    assert all(d.sparse_ms is None for d in p.decisions)


def test_gpu_targets_get_no_bsr_kernel():
    """The BSR kernels are CPU kernels (parallel loops): a Jetson build keeps the dense matmul."""
    from lwc import sparsity_stage
    from lwc.targets import resolve

    model = prune.prune(mlp(rows=4), "block:1x4", 0.9, measure=False).model
    out, info = sparsity_stage.apply(import_model(model), "force", preset=resolve("jetson-orin"))
    assert count_call_tir(out.mod) == 0 and "DenseToSparse" not in info["relax_passes"]
    assert "CPU kernels" in info["bsr"]


def test_lwc_tune_graph_uses_the_cost_model_for_untuned_dense_kernels():
    """Under lwc tune an untuned dense kernel is about to be tuned: no timing against it."""
    from lwc import sparsity_decide
    from lwc.targets import resolve

    model = prune.prune(mlp(rows=4), "block:1x4", 0.9, measure=False).model
    decide = sparsity_decide.decider(resolve("host"), resolve("host").tvm_target(), None, tuning_run=True)
    p = DenseToSparse("auto", decide=decide)
    p(import_model(model).mod)
    assert all(d.reason.startswith("cost model (lwc tune:") and d.sparse_ms is None for d in p.decisions)


def test_sparse_stage_knows_when_it_prepares_for_lwc_tune():
    from lwc import sparsity_stage
    from lwc.targets import resolve

    model = prune.prune(mlp(rows=4), "block:1x4", 0.9, measure=False).model
    _, info = sparsity_stage.apply(import_model(model), "auto", preset=resolve("host"), tuning_run=True)
    assert all("lwc tune" in d["reason"] for d in info["dense_to_sparse"])
