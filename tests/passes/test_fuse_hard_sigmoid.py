import numpy as np
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module, tensor

from lwc.passes._support import count_ops
from lwc.passes.fuse_hard_sigmoid import FuseHardSigmoid

SHAPE = [1, 4, 3, 3]


def hard_sigmoid(alpha=0.2, beta=0.5):
    node = helper.make_node("HardSigmoid", ["x"], ["y"], alpha=alpha, beta=beta)
    return model([node], {"x": SHAPE}, {"y": SHAPE})


def test_fuses_into_one_call():
    pass_obj = FuseHardSigmoid()
    mod = pass_obj(relax_module(hard_sigmoid()))
    assert pass_obj.stats.changed["hard_sigmoid fused"] == 1
    assert count_ops(mod, "relax.call_tir") == 1
    assert count_ops(mod, "relax.clip") == 0


def test_declines_other_clip_bounds():
    nodes = [helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Add", ["m", "b"], ["s"]),
             helper.make_node("Clip", ["s"], ["y"], min=0.0, max=6.0)]
    onnx_model = model(nodes, {"x": SHAPE}, {"y": SHAPE},
                       [tensor("a", np.array(0.2)), tensor("b", np.array(0.5))], opset=6)
    mod = relax_module(onnx_model)
    pass_obj = FuseHardSigmoid()
    assert_unchanged(pass_obj, mod)


def test_numerics_match_onnxruntime():
    x = np.linspace(-4, 4, 36, dtype=np.float32).reshape(SHAPE)
    assert_matches_onnxruntime(hard_sigmoid(alpha=1 / 6, beta=0.5), {"x": x})
