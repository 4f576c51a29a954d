import numpy as np
import tvm
from lwc.passes._support import count_ops
from lwc.passes.conv1d_to_conv2d import Conv1dToConv2d
from onnx import helper
from support import TOLERANCE, assert_matches_onnxruntime, assert_unchanged, model, tensor
from tvm import relax

RNG = np.random.default_rng(0)
W = RNG.standard_normal((6, 3, 5)).astype("float32")


def conv1d(layout="NCW", const_weight=True, **attrs):
    shape = (1, 3, 40) if layout == "NCW" else (1, 40, 3)
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    w = relax.Var("w", relax.TensorType(W.shape, "float32"))
    params = [x] if const_weight else [x, w]
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            weight = relax.const(W) if const_weight else w
            out = bb.emit_output(relax.op.nn.conv1d(x, weight, data_layout=layout, **attrs))
        bb.emit_func_output(out)
    return bb.get()


def run(mod, *args):
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


def test_conv1d_becomes_conv2d_of_height_1():
    pass_obj = Conv1dToConv2d()
    mod = pass_obj(conv1d(strides=2, padding=[1, 3], dilation=2))
    assert count_ops(mod, "relax.nn.conv1d") == 0
    assert count_ops(mod, "relax.nn.conv2d") == 1
    assert pass_obj.stats.changed["conv1d as conv2d"] == 1


def test_declines_nwc_layout():
    pass_obj = Conv1dToConv2d()
    assert_unchanged(pass_obj, conv1d(layout="NWC"))
    assert pass_obj.stats.declined[0][1].startswith("layout NWC")


def test_numerics_unchanged():
    x = RNG.standard_normal((1, 3, 40)).astype("float32")
    for mod, args in [
        (conv1d(strides=3, padding=[2, 1], dilation=2), (x,)),
        (conv1d(const_weight=False, padding=[2, 2]), (x, W)),
    ]:
        np.testing.assert_allclose(run(Conv1dToConv2d()(mod), *args), run(mod, *args),
                                   **TOLERANCE["float32"])


def test_grouped_conv1d_with_bias_relu_matches_onnxruntime():
    # depthwise-style grouped conv, dilation and asymmetric pads, then bias and Relu
    w = RNG.standard_normal((8, 2, 3)).astype("float32")
    b = RNG.standard_normal(8).astype("float32")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], group=2, dilations=[2], pads=[1, 2],
                         strides=[2]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    onnx_model = model(nodes, {"x": [1, 4, 33]}, {"y": [1, 8, 16]}, [tensor("w", w), tensor("b", b)])
    x = RNG.standard_normal((1, 4, 33)).astype("float32")
    assert_matches_onnxruntime(onnx_model, {"x": x})
