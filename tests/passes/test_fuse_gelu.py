import math

import numpy as np
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module, tensor

from lwc.passes._support import count_ops
from lwc.passes.fuse_gelu import FuseGelu

SHAPE = [2, 8]


def erf_gelu(k=math.sqrt(2.0)):
    nodes = [
        helper.make_node("Div", ["x", "k"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
    ]
    inits = [tensor("k", np.array(k)), tensor("one", np.array(1.0)), tensor("half", np.array(0.5))]
    return model(nodes, {"x": SHAPE}, {"y": SHAPE}, inits)


def tanh_gelu():
    nodes = [
        helper.make_node("Pow", ["x", "three"], ["p"]), helper.make_node("Mul", ["c", "p"], ["cp"]),
        helper.make_node("Add", ["x", "cp"], ["i"]), helper.make_node("Mul", ["k", "i"], ["ki"]),
        helper.make_node("Tanh", ["ki"], ["t"]), helper.make_node("Add", ["one", "t"], ["a"]),
        helper.make_node("Mul", ["half", "x"], ["hx"]), helper.make_node("Mul", ["hx", "a"], ["y"]),
    ]
    inits = [tensor("three", np.array(3.0)), tensor("c", np.array(0.044715)),
             tensor("k", np.array(math.sqrt(2 / math.pi))), tensor("one", np.array(1.0)),
             tensor("half", np.array(0.5))]
    return model(nodes, {"x": SHAPE}, {"y": SHAPE}, inits)


def test_fuses_erf_form():
    pass_obj = FuseGelu()
    mod = pass_obj(relax_module(erf_gelu()))
    assert count_ops(mod, "relax.nn.gelu") == 1 and count_ops(mod, "relax.erf") == 0


def test_fuses_tanh_form():
    pass_obj = FuseGelu()
    mod = pass_obj(relax_module(tanh_gelu()))
    assert count_ops(mod, "relax.nn.gelu_tanh") == 1 and count_ops(mod, "relax.tanh") == 0


def test_declines_wrong_scale():
    pass_obj = FuseGelu()
    assert_unchanged(pass_obj, relax_module(erf_gelu(k=2.0)))
    assert pass_obj.stats.declined[0][1] == "erf argument is not x / sqrt(2)"


def test_numerics_match_onnxruntime():
    x = np.linspace(-4, 4, 16, dtype=np.float32).reshape(SHAPE)
    assert_matches_onnxruntime(erf_gelu(), {"x": x})
    assert_matches_onnxruntime(tanh_gelu(), {"x": x})
