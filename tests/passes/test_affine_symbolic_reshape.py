"""AffineSymbolicReshape: reshapes over a dynamic dim become kernels TVM fuses, as with
fixed shapes (rec at a dynamic width ran 18 more kernels than its fixed build)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from lwc import artifact, driver
from lwc import prepare as prepare_stage
from lwc.kernels.reshape import dim_groups
from lwc.options import CompileOptions
from lwc.tuning.apply import prepare as lower
from onnx import TensorProto, helper, numpy_helper

W = tvm.tirx.Var("W", "int64")
ROWS = (W - 5) // 8 + 1  # rec's sequence length for a width W


def _i(v: int):
    return tvm.tirx.IntImm("int64", v)


@pytest.mark.parametrize("src, dst, groups", [
    ([_i(1), ROWS, _i(120)], [ROWS, _i(120)], [([1], [0]), ([2], [1])]),        # unit dim dropped
    ([ROWS, _i(120)], [_i(1), ROWS, _i(8), _i(15)], [([0], [1]), ([1], [2, 3])]),  # split
    ([_i(2), ROWS, _i(4)], [_i(2), ROWS * 4], [([0], [0]), ([1, 2], [1])]),       # merge
    ([_i(2), W, _i(3)], [W, _i(6)], [([0, 1, 2], [0, 1])]),                     # regrouped
    ([W, _i(3)], [_i(3), W + 1], None),                                         # not provable
])
def test_dim_groups(src, dst, groups):
    assert dim_groups(src, dst) == groups


def _model() -> onnx.ModelProto:
    """X [1, 8, W] -> Transpose [1, W, 8] -> Reshape [W, 8] -> Add b -> MatMul [8, 8]
    -> Reshape [1, W, 2, 4] -> Transpose [1, 2, W, 4] -> Reshape [2, 4W] -> Mul 2: a
    transformer block's reshapes (the one after the MatMul fuses with nothing: a view),
    W symbolic."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "m"),
             numpy_helper.from_array(np.array([-1, 8], np.int64), "s1"),
             numpy_helper.from_array(np.array([1, -1, 2, 4], np.int64), "s2"),
             numpy_helper.from_array(np.array([2, -1], np.int64), "s3"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    nodes = [helper.make_node("Transpose", ["X"], ["t1"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["t1", "s1"], ["r1"]),
             helper.make_node("Add", ["r1", "b"], ["a"]),
             helper.make_node("MatMul", ["a", "m"], ["mm"]),
             helper.make_node("Reshape", ["mm", "s2"], ["r2"]),
             helper.make_node("Transpose", ["r2"], ["t2"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["t2", "s3"], ["r3"]),
             helper.make_node("Mul", ["r3", "two"], ["Y"])]
    graph = helper.make_graph(
        nodes, "reshapes", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8, "W"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _kernels(shape: list, disabled: tuple = ()) -> list[str]:
    """The kernels main calls after TVM's fusion."""
    options = CompileOptions(disabled_passes=disabled)
    prepared = prepare_stage.prepare(_model(), "host", {"X": shape}, options)
    fused = lower(prepared.mod, prepared.tvm_target)
    called = []

    def visit(expr):
        if isinstance(expr, tvm.relax.Call) and isinstance(expr.op, tvm.ir.Op) \
                and expr.op.name == "relax.call_tir":
            called.append(expr.args[0].name_hint)

    tvm.relax.analysis.post_order_visit(fused["main"], visit)
    return called


def test_symbolic_reshapes_fuse_as_fixed_ones_do():
    fixed = _kernels([1, 8, 16])
    assert _kernels([1, 8, "4..64"]) == fixed == [
        "fused_transpose_reshape_add", "matmul", "fused_reshape1_transpose1_reshape2_multiply"]
    # TOPI's reshapes over W are opaque: nothing fuses with them (the test can fail)
    assert len(_kernels([1, 8, "4..64"], disabled=("AffineSymbolicReshape",))) > len(fixed)


@pytest.mark.parametrize("src, dst", [
    ([_i(1), ROWS, _i(120)], [ROWS, _i(120)]),
    ([ROWS, _i(120)], [_i(1), ROWS, _i(8), _i(15)]),
    ([_i(2), ROWS, _i(4)], [_i(2), ROWS * 4]),
])
def test_symbolic_reshape_kernel_is_injective(src, dst):
    """AnnotateTIROpPattern calls lwc's kernel injective (FuseOps may fuse it) and TOPI's
    opaque at the same shapes; RewriteDataflowReshape still sees both as reshapes."""
    from lwc.kernels.reshape import reshape_compute
    from tvm import te, topi
    from tvm.relax.transform import AnnotateTIROpPattern

    x = te.placeholder(src, "float32", name="x")
    patterns = []
    for y in (reshape_compute(x, dst), topi.reshape(x, dst)):
        func = te.create_prim_func([x, y])
        assert tvm.relax.analysis.has_reshape_pattern(func)
        annotated = AnnotateTIROpPattern()(tvm.IRModule({"main": func}))["main"]
        patterns.append(int(annotated.attrs["op_pattern"]))
    assert patterns[0] <= 2 and patterns[1] == 8  # kInjective or finer; kOpaque


@pytest.fixture(scope="module")
def reshape_artifact(tmp_path_factory):
    result = driver.compile(_model(), "host", {"X": [1, 8, "4..64"]}, use_tuning_logs=False)
    return artifact.load(result.export(tmp_path_factory.mktemp("reshape") / "r.so"))


@pytest.mark.parametrize("width", [4, 13, 64])
def test_symbolic_reshapes_match_onnxruntime(reshape_artifact, width):
    x = np.random.default_rng(width).standard_normal((1, 8, width)).astype(np.float32)
    sess = ort.InferenceSession(_model().SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"X": x})
    (got,) = reshape_artifact.run({"X": x})
    assert got.shape == (2, 4 * width)
    np.testing.assert_array_equal(got, want)

