import numpy as np
import pytest
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module, tensor

from lwc.passes._support import count_ops
from lwc.passes.canonicalize_clip import CanonicalizeClip
from lwc.passes.convert_conv_layout import ConvertConvLayout, layout_for
from lwc.passes.fuse_hard_swish import FuseHardSwish

RNG = np.random.default_rng(0)


def conv_block():
    """conv -> HardSwish (Paddle form) -> depthwise conv -> SE-style scale -> relu -> conv."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "three"], ["a"]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["cl"]),
        helper.make_node("Mul", ["c1", "cl"], ["m"]),
        helper.make_node("Div", ["m", "six"], ["hs"]),
        helper.make_node("Conv", ["hs", "w2"], ["c2"], group=8, pads=[1, 1, 1, 1], strides=[2, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Mul", ["c2", "g"], ["s"]),
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("Conv", ["r", "w3"], ["y"]),
    ]
    inits = [
        tensor("w1", RNG.standard_normal((8, 3, 3, 3))), tensor("b1", RNG.standard_normal(8)),
        tensor("three", np.array(3.0)), tensor("lo", np.array(0.0)), tensor("hi", np.array(6.0)),
        tensor("six", np.array(6.0)), tensor("w2", RNG.standard_normal((8, 1, 3, 3))),
        tensor("w3", RNG.standard_normal((4, 8, 1, 1))),
    ]
    return model(nodes, {"x": [1, 3, 8, 12]}, {"y": [1, 4, 4, 12]}, inits, opset=11)


def prepared():
    """The module as ConvertConvLayout sees it in the pipeline (hard_swish is a call_tir)."""
    return FuseHardSwish()(CanonicalizeClip()(relax_module(conv_block())))


def test_converts_convs_and_keeps_only_border_transposes():
    pass_obj = ConvertConvLayout("NHWC")
    after = pass_obj(prepared())
    assert pass_obj.stats.changed["conv2d converted to NHWC"] == 3
    # input NCHW -> NHWC and output NHWC -> NCHW; none around the hard_swish kernel
    assert pass_obj.stats.changed["transposes left"] == 2
    assert "hard_swish_nhwc" in {gv.name_hint for gv in after.get_global_vars()}
    layouts = []

    from tvm import relax

    relax.analysis.post_order_visit(after["main"], lambda e: layouts.append(str(e.attrs.data_layout))
                                    if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.nn.conv2d"
                                    else None)
    assert layouts == ["NHWC"] * 3


def test_declines_when_target_keeps_nchw():
    pass_obj = ConvertConvLayout("NCHW", reason="not measured")
    assert_unchanged(pass_obj, prepared())
    assert pass_obj.stats.declined == [("model", "not measured")]


def test_no_conv_no_change():
    onnx_model = model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 2, 3, 3]}, {"y": [1, 2, 3, 3]})
    pass_obj = ConvertConvLayout("NHWC")
    assert_unchanged(pass_obj, relax_module(onnx_model))
    assert count_ops(pass_obj(relax_module(onnx_model)), "relax.permute_dims") == 0


def test_layout_for_takes_the_override():
    assert layout_for(("avx512", "neon")) == "NCHW"  # nothing measured to pay yet
    assert layout_for((), "nhwc") == "NHWC"
    with pytest.raises(ValueError):
        layout_for((), "NCHWc")


def test_layout_is_not_read_from_the_environment(monkeypatch):
    """Graph decisions come from CompileOptions only (the old LWC_CONV_LAYOUT is ignored)."""
    monkeypatch.setenv("LWC_CONV_LAYOUT", "NHWC")
    assert layout_for(()) == "NCHW"


def test_numerics_match_onnxruntime_in_nhwc():
    x = RNG.standard_normal((1, 3, 8, 12)).astype("float32")
    assert_matches_onnxruntime(conv_block(), {"x": x}, conv_layout="NHWC")


def test_size_one_constants_do_not_pin_nchw():
    """PP-OCRv4 det: conv -> scale[1] * x + shift[1] -> conv stays NHWC throughout."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("Mul", ["scale", "c1"], ["m"]),
        helper.make_node("Add", ["m", "shift"], ["a"]),
        helper.make_node("Conv", ["a", "w2"], ["y"]),
    ]
    inits = [tensor("w1", RNG.standard_normal((4, 3, 1, 1))), tensor("w2", RNG.standard_normal((2, 4, 1, 1))),
             tensor("scale", np.array([0.5])), tensor("shift", np.array([0.25]))]
    onnx_model = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits)
    pass_obj = ConvertConvLayout("NHWC")
    pass_obj(relax_module(onnx_model))
    assert pass_obj.stats.changed["transposes left"] == 2


def test_conv_transpose_stays_nchw_and_builds():
    """det's upsampling ConvTranspose: TVM legalizes it in NCHW only; numerics vs onnxruntime."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("ConvTranspose", ["c1", "wt"], ["u"], strides=[2, 2]),
        helper.make_node("Conv", ["u", "w2"], ["y"]),
    ]
    inits = [tensor("w1", RNG.standard_normal((4, 3, 1, 1))), tensor("wt", RNG.standard_normal((4, 4, 2, 2))),
             tensor("w2", RNG.standard_normal((2, 4, 1, 1)))]
    onnx_model = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 10, 10]}, inits)
    assert_matches_onnxruntime(onnx_model, {"x": RNG.standard_normal((1, 3, 5, 5)).astype("float32")},
                               conv_layout="NHWC")


def test_declines_when_tvm_convert_layout_fails(monkeypatch):
    """TVM 0.27's ConvertLayout aborts on some light-zoo models; the pass declines instead."""
    from tvm import relax

    def broken(_desired):
        raise RuntimeError("Check failed: Expected nested to match tuple")

    monkeypatch.setattr(relax.transform, "ConvertLayout", broken)
    pass_obj = ConvertConvLayout("NHWC")
    assert_unchanged(pass_obj, prepared())
    assert "ConvertLayout failed" in pass_obj.stats.declined[0][1]
