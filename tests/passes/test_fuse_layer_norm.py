import numpy as np
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module, tensor

from lwc.passes._support import count_ops
from lwc.passes.fuse_layer_norm import FuseLayerNorm

RNG = np.random.default_rng(0)
SHAPE = [1, 6, 16]


def decomposed_layer_norm(axes=(-1,), eps=1e-5):
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mu"], axes=list(axes)),
        helper.make_node("Sub", ["x", "mu"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["s"]),
        helper.make_node("Add", ["s", "b"], ["y"]),
    ]
    inits = [tensor("two", np.array(2.0)), tensor("eps", np.array(eps)),
             tensor("g", RNG.standard_normal(16)), tensor("b", RNG.standard_normal(16))]
    return model(nodes, {"x": SHAPE}, {"y": SHAPE}, inits)


def test_fuses_into_layer_norm():
    pass_obj = FuseLayerNorm()
    mod = pass_obj(relax_module(decomposed_layer_norm()))
    assert count_ops(mod, "relax.nn.layer_norm") == 1
    assert count_ops(mod, "relax.mean") == 0 and count_ops(mod, "relax.sqrt") == 0


def test_declines_means_over_different_axes():
    pass_obj = FuseLayerNorm()
    assert_unchanged(pass_obj, relax_module(decomposed_layer_norm(axes=(1,))))
    assert pass_obj.stats.declined[0][1] == "means reduce different axes or drop them"


def test_numerics_match_onnxruntime():
    x = RNG.standard_normal(SHAPE).astype(np.float32)
    assert_matches_onnxruntime(decomposed_layer_norm(), {"x": x})
