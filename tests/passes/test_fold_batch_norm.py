import numpy as np
import pytest
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module, tensor

from lwc.passes._support import count_ops
from lwc.passes.fold_batch_norm import FoldBatchNorm

RNG = np.random.default_rng(0)


def conv_bn(extra_nodes=(), bias=True, out="y"):
    w = tensor("w", RNG.standard_normal((4, 3, 3, 3)))
    params = [tensor(n, RNG.standard_normal(4)) for n in ("g", "be", "mu")]
    params.append(tensor("v", RNG.uniform(0.5, 2.0, 4)))
    inits = [w, *params] + ([tensor("b", RNG.standard_normal(4))] if bias else [])
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "v"], ["bn"]),
        *extra_nodes,
    ]
    last = extra_nodes[-1].output[0] if extra_nodes else "bn"
    return model(nodes, {"x": [1, 3, 8, 8]}, {last: [1, 4, 8, 8]}, inits)


def test_folds_batch_norm_into_conv():
    pass_obj = FoldBatchNorm()
    mod = pass_obj(relax_module(conv_bn()))
    assert count_ops(mod, "relax.nn.batch_norm") == 0
    assert count_ops(mod, "relax.nn.conv2d") == 1
    assert pass_obj.stats.changed["batch_norm folded"] == 1


def test_folds_scale_shift_chain():
    scale = helper.make_node("Mul", ["bn", "s"], ["m"])
    shift = helper.make_node("Add", ["m", "t"], ["y"])
    onnx_model = conv_bn([scale, shift])
    onnx_model.graph.initializer.extend([
        tensor("s", RNG.standard_normal((4, 1, 1))), tensor("t", RNG.standard_normal((1, 4, 1, 1)))
    ])
    pass_obj = FoldBatchNorm()
    mod = pass_obj(relax_module(onnx_model))
    assert count_ops(mod, "relax.multiply") == 0
    assert count_ops(mod, "relax.add") == 1  # the folded bias
    assert pass_obj.stats.changed["scale/shift folded"] == 2


def test_declines_spatial_scale_and_says_why():
    mul = helper.make_node("Mul", ["c", "s"], ["y"])
    w = tensor("w", RNG.standard_normal((4, 3, 3, 3)))
    onnx_model = model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), mul],
                       {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]},
                       [w, tensor("s", RNG.standard_normal((1, 1, 8, 8)))])
    pass_obj = FoldBatchNorm()
    assert_unchanged(pass_obj, relax_module(onnx_model))
    assert "varies along non-channel axes" in pass_obj.stats.declined[0][1]


def test_declines_when_conv_output_has_other_readers():
    relu = helper.make_node("Relu", ["c"], ["r"])
    add = helper.make_node("Add", ["bn", "r"], ["y"])
    pass_obj = FoldBatchNorm()
    assert_unchanged(pass_obj, relax_module(conv_bn([relu, add])))
    assert "other readers" in pass_obj.stats.declined[0][1]


@pytest.mark.parametrize("bias", [True, False])
def test_numerics_match_onnxruntime(bias):
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert_matches_onnxruntime(conv_bn(bias=bias), {"x": x})


def test_declines_integer_conv_and_says_why():
    """An int8 x int8 -> int32 conv followed by a constant subtract (the zero-point
    correction of lowered QDQ) must not be folded: scaling int8 weights is not exact."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "int8"))
    w = relax.const(RNG.integers(-127, 128, (4, 3, 3, 3)).astype("int8"))
    corr = relax.const(RNG.integers(-50, 50, (1, 4, 1, 1)).astype("int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, w, padding=1, out_dtype="int32"))
            y = bb.emit_output(relax.op.subtract(c, corr))
        bb.emit_func_output(y)
    pass_obj = FoldBatchNorm()
    assert_unchanged(pass_obj, bb.get())
    assert "int32" in pass_obj.stats.declined[0][1]


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_onnx_level_fold_of_the_int8_flow_matches_onnxruntime(op):
    """fold_batch_norm_onnx (the int8 flow's fold, before calibration) folds BN into a Conv
    and into a ConvTranspose (PP-OCRv4 det's head: weight axis 1 is the output channel);
    the folded model gives onnxruntime's outputs of the unfolded one."""
    import onnxruntime as ort

    from lwc.passes.fold_batch_norm import fold_batch_norm_onnx

    rng = np.random.default_rng(3)
    shape = (4, 3, 2, 2) if op == "Conv" else (3, 4, 2, 2)  # Conv OIHW, ConvTranspose IOHW
    inits = [tensor("w", rng.standard_normal(shape)), tensor("b", rng.standard_normal(4)),
             *(tensor(n, rng.standard_normal(4)) for n in ("g", "be", "mu")),
             tensor("v", rng.uniform(0.5, 2.0, 4))]
    out_hw = 7 if op == "Conv" else 16
    nodes = [helper.make_node(op, ["x", "w", "b"], ["c"], kernel_shape=[2, 2], strides=[1, 1] if op == "Conv" else [2, 2]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "v"], ["y"])]
    m = model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 4, out_hw, out_hw]}, inits)
    folded = fold_batch_norm_onnx(m)
    assert [n.op_type for n in folded.graph.node] == [op]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)

    def run(mm):
        return ort.InferenceSession(mm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    np.testing.assert_allclose(run(folded), run(m), rtol=1e-5, atol=1e-5)


def test_onnx_level_fold_leaves_a_grouped_conv_transpose():
    from lwc.passes.fold_batch_norm import fold_batch_norm_onnx

    rng = np.random.default_rng(4)
    inits = [tensor("w", rng.standard_normal((4, 1, 2, 2))),
             *(tensor(n, rng.standard_normal(4)) for n in ("g", "be", "mu")), tensor("v", rng.uniform(0.5, 2.0, 4))]
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["c"], kernel_shape=[2, 2], strides=[2, 2], group=4),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "v"], ["y"])]
    m = model(nodes, {"x": [1, 4, 4, 4]}, {"y": [1, 4, 8, 8]}, inits)
    assert [n.op_type for n in fold_batch_norm_onnx(m).graph.node] == ["ConvTranspose", "BatchNormalization"]
