"""lwc.constant_folding: the same module as TVM's FoldConstant, with one LLVM build."""

import importlib

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import relax

from lwc.constant_folding import fold_constants
from lwc.frontend import import_model
from lwc.targets import resolve

from ort_reference import run as ort_run

RNG = np.random.default_rng(3)


def _init(name, shape, low=-1.0, high=1.0):
    value = RNG.uniform(low, high, shape).astype(np.float32)
    return helper.make_tensor(name, TensorProto.FLOAT, shape, value.ravel())


def _model():
    """conv -> BatchNormalization -> Clip(min, max) -> Add(split of a constant) -> Relu.

    Constant-only work left after onnxsim: BatchNorm's scale/shift (a chain of kernels on
    constants) and Clip's bounds.
    """
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"]),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["cl"]),
        helper.make_node("Split", ["pair", "sizes"], ["p0", "p1"], axis=0),
        helper.make_node("Mul", ["p0", "p1"], ["shift"]),
        helper.make_node("Add", ["cl", "shift"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    inits = [_init("w", [8, 3, 3, 3]), _init("g", [8]), _init("b", [8]), _init("m", [8]),
             _init("v", [8], 0.5, 2.0), _init("pair", [2, 8, 1, 1]),
             helper.make_tensor("lo", TensorProto.FLOAT, [], [-0.5]),
             helper.make_tensor("hi", TensorProto.FLOAT, [], [2.0]),
             helper.make_tensor("sizes", TensorProto.INT64, [2], [1, 1])]
    graph = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 12, 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def legalized():
    mod = import_model(_model()).mod
    with resolve("host").tvm_target():
        return relax.transform.AnnotateTIROpPattern()(relax.transform.LegalizeOps()(mod))


def _llvm_builds(monkeypatch) -> list:
    builds = []
    module = importlib.import_module("tvm.tirx.build")
    real = module.codegen_build
    monkeypatch.setattr(module, "codegen_build", lambda *a, **k: builds.append(1) or real(*a, **k))
    return builds


def test_same_module_as_tvm_fold_constant_with_one_build(legalized, monkeypatch):
    builds = _llvm_builds(monkeypatch)
    expected = relax.transform.FoldConstant()(legalized)
    tvm_builds = len(builds)
    builds.clear()
    got = fold_constants(legalized)
    assert tvm_builds >= 3  # the model has that many constant-only kernels (else the test is moot)
    assert len(builds) == 1
    tvm.ir.assert_structural_equal(got, expected)  # constants compared by value


def test_folds_through_items_of_a_folded_tuple():
    """x + exp(c[0] * c[1]) with c split in two: TVM's FoldConstant folds the split but
    keeps the multiply and exp on its items as kernels; lwc folds them too."""
    c = RNG.standard_normal((2, 8)).astype(np.float32)
    x = relax.Var("x", relax.TensorType([1, 8], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            parts = bb.emit(relax.op.split(relax.const(c), 2, axis=0))
            items = [bb.emit(relax.TupleGetItem(parts, i)) for i in (0, 1)]
            out = bb.emit_output(relax.op.add(x, relax.op.exp(relax.op.multiply(*items))))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())

    def kernels(m):
        return [b.value.args[0].name_hint for b in m["main"].body.blocks[0].bindings
                if isinstance(b.value, relax.Call) and b.value.op.name == "relax.call_tir"]

    assert kernels(relax.transform.FoldConstant()(mod)) == ["multiply", "tir_exp", "add"]
    folded = fold_constants(mod)
    assert kernels(folded) == ["add"]
    vm = relax.VirtualMachine(tvm.compile(folded, target="llvm"), tvm.cpu())
    xv = RNG.standard_normal((1, 8)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(xv)).numpy()
    np.testing.assert_allclose(got, xv + np.exp(c[:1] * c[1:]), rtol=1e-6)


def test_module_without_constant_calls_is_left_to_fold_constant(monkeypatch):
    x = relax.Var("x", relax.TensorType([4], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit_te(tvm.topi.exp, x))
        bb.emit_func_output(out)
    mod = bb.get()
    builds = _llvm_builds(monkeypatch)
    tvm.ir.assert_structural_equal(fold_constants(mod), mod)
    assert builds == []


def test_folded_model_matches_onnxruntime(tmp_path):
    from lwc import driver

    model = _model()
    x = RNG.standard_normal((1, 3, 12, 12)).astype(np.float32)
    result = driver.compile(model, "host", use_tuning_logs=False)
    got = result.run({"x": x})[0]
    want = ort_run(model, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_failed_batched_build_leaves_the_calls_to_fold_constant(legalized, monkeypatch):
    """If LLVM cannot build the batch, each call is left to TVM's FoldConstant (same module)."""
    expected = relax.transform.FoldConstant()(legalized)
    real = tvm.tirx.build

    def refuse_batches(mod, *args, **kwargs):
        if isinstance(mod, tvm.IRModule) and len(mod.functions) > 1:
            raise RuntimeError("cannot build this batch")
        return real(mod, *args, **kwargs)

    monkeypatch.setattr(tvm.tirx, "build", refuse_batches)
    tvm.ir.assert_structural_equal(fold_constants(legalized), expected)
