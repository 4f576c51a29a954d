import numpy as np
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module, tensor

from lwc.passes._support import count_ops
from lwc.passes.canonicalize_clip import CanonicalizeClip

SHAPE = [2, 3]


def clip_model(lo=0.0, hi=6.0):
    inits = [tensor("lo", np.array(lo)), tensor("hi", np.array(hi))]
    return model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], {"x": SHAPE}, {"y": SHAPE},
                 inits)


def test_rewrites_importer_clip_to_one_op():
    pass_obj = CanonicalizeClip()
    mod = pass_obj(relax_module(clip_model()))
    assert count_ops(mod, "relax.clip") == 1
    assert count_ops(mod, "relax.call_tir") == 0
    assert pass_obj.stats.changed["clips canonicalized"] == 1


def test_nan_bound_means_unbounded():
    mod = CanonicalizeClip()(relax_module(clip_model(lo=float("nan"))))
    assert count_ops(mod, "relax.clip") == 1
    x = np.array([[-np.inf, -1, 0], [3, 7, np.nan]], np.float32)
    assert_matches_onnxruntime(clip_model(lo=float("nan")), {"x": x})


def test_declines_runtime_bounds():
    onnx_model = model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                       {"x": SHAPE, "lo": [], "hi": []}, {"y": SHAPE})
    pass_obj = CanonicalizeClip()
    assert_unchanged(pass_obj, relax_module(onnx_model))


def test_numerics_match_onnxruntime():
    x = np.array([[-1, 2, 7], [0.5, 6, -0.0]], np.float32)
    assert_matches_onnxruntime(clip_model(), {"x": x})
