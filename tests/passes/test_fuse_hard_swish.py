import numpy as np
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module, tensor

from lwc.passes._support import count_ops
from lwc.passes.canonicalize_clip import CanonicalizeClip
from lwc.passes.fuse_hard_swish import FuseHardSwish

SHAPE = [1, 4, 5, 5]


def paddle_hard_swish(three=3.0, six=6.0):
    """x * clip(x + 3, 0, 6) / 6 as Paddle exports it (PP-OCR)."""
    nodes = [
        helper.make_node("Add", ["x", "three"], ["a"]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["c"]),
        helper.make_node("Mul", ["x", "c"], ["m"]),
        helper.make_node("Div", ["m", "six"], ["y"]),
    ]
    inits = [tensor("three", np.array(three)), tensor("lo", np.array(0.0)),
             tensor("hi", np.array(6.0)), tensor("six", np.array(six))]
    return model(nodes, {"x": SHAPE}, {"y": SHAPE}, inits, opset=11)


def fused(onnx_model):
    mod = CanonicalizeClip()(relax_module(onnx_model))
    pass_obj = FuseHardSwish()
    return pass_obj(mod), pass_obj, mod


def test_fuses_paddle_form_into_one_call():
    mod, pass_obj, _ = fused(paddle_hard_swish())
    assert pass_obj.stats.changed["hard_swish fused"] == 1
    assert count_ops(mod, "relax.call_tir") == 1
    assert count_ops(mod, "relax.clip") + count_ops(mod, "relax.multiply") == 0


def test_fuses_onnx_hard_swish_op_form():
    onnx_model = model([helper.make_node("HardSwish", ["x"], ["y"])], {"x": SHAPE}, {"y": SHAPE},
                       opset=14)
    _, pass_obj, _ = fused(onnx_model)
    assert pass_obj.stats.changed["hard_swish fused"] == 1


def test_declines_wrong_constant():
    _, pass_obj, before = fused(paddle_hard_swish(three=2.0))
    assert_unchanged(FuseHardSwish(), before)
    assert pass_obj.stats.declined[0][1] == "added constant is not 3"


def test_numerics_match_onnxruntime():
    x = np.linspace(-5, 5, 100, dtype=np.float32).reshape(SHAPE)
    assert_matches_onnxruntime(paddle_hard_swish(), {"x": x})
