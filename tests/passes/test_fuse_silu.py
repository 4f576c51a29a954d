import numpy as np
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module

from lwc.passes._support import count_ops
from lwc.passes.fuse_silu import FuseSilu

SHAPE = [2, 8]


def test_fuses_x_times_sigmoid_x():
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    pass_obj = FuseSilu()
    mod = pass_obj(relax_module(model(nodes, {"x": SHAPE}, {"y": SHAPE})))
    assert count_ops(mod, "relax.nn.silu") == 1 and count_ops(mod, "relax.sigmoid") == 0
    assert pass_obj.stats.changed["silu fused"] == 1


def test_leaves_gating_by_another_tensor():
    nodes = [helper.make_node("Sigmoid", ["g"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    assert_unchanged(FuseSilu(), relax_module(model(nodes, {"x": SHAPE, "g": SHAPE}, {"y": SHAPE})))


def test_numerics_match_onnxruntime():
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    x = np.linspace(-6, 6, 16, dtype=np.float32).reshape(SHAPE)
    assert_matches_onnxruntime(model(nodes, {"x": SHAPE}, {"y": SHAPE}), {"x": x})
