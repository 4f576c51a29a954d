import numpy as np
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module

from lwc.passes._support import count_ops
from lwc.passes.canonicalize_min_max import CanonicalizeMinMax


def max_model(op="Max"):
    return model([helper.make_node(op, ["a", "b", "c"], ["y"])],
                 {"a": [2, 3], "b": [1, 3], "c": [2, 1]}, {"y": [2, 3]})


def test_stack_reduce_becomes_pairwise():
    pass_obj = CanonicalizeMinMax()
    mod = pass_obj(relax_module(max_model()))
    assert count_ops(mod, "relax.stack") == 0 and count_ops(mod, "relax.max") == 0
    assert count_ops(mod, "relax.maximum") == 2
    assert pass_obj.stats.changed["max of 3 made pairwise"] == 1


def test_leaves_plain_reduce_max():
    onnx_model = model([helper.make_node("ReduceMax", ["a"], ["y"], axes=[0], keepdims=0)],
                       {"a": [2, 3]}, {"y": [3]})
    assert_unchanged(CanonicalizeMinMax(), relax_module(onnx_model))


def test_numerics_match_onnxruntime():
    rng = np.random.default_rng(0)
    inputs = {"a": rng.standard_normal((2, 3)), "b": rng.standard_normal((1, 3)),
              "c": rng.standard_normal((2, 1))}
    inputs = {k: v.astype(np.float32) for k, v in inputs.items()}
    for op in ("Max", "Min", "Sum"):
        assert_matches_onnxruntime(max_model(op), inputs)
