"""Pooling rule: max/avg pool with a vectorized output row (widths that hold full
vectors), odd widths left to the reduction rule; numerics vs onnxruntime."""

from __future__ import annotations

import pytest
from onnx import helper
from schedules_support import AVX2, check_numerics, model, prim_scripts, rand, schedule

from lwc.schedules import CpuFacts

AVX512 = CpuFacts(vector_bits=512, vector_regs=32, cores=2)


def pool_model(op, c, hw, k, stride, pad):
    h, w = hw
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)
    return model([node], {"x": [1, c, h, w]}, {"y": [1, c, ho, wo]})


CASES = {
    "max 3x3 s2": ("MaxPool", 16, (64, 64), 3, 2, 1),
    "max 2x2 s2": ("MaxPool", 8, (32, 64), 2, 2, 0),
    "avg 3x3 s1": ("AveragePool", 8, (24, 32), 3, 1, 1),
    "max odd width": ("MaxPool", 16, (55, 55), 3, 2, 0),
    "max 56 wide": ("MaxPool", 8, (112, 112), 3, 2, 1),  # resnet50's stem pool
}


@pytest.mark.parametrize("case", list(CASES))
def test_pooling_matches_onnxruntime(case):
    op, c, hw, k, s, p = CASES[case]
    report = check_numerics(pool_model(op, c, hw, k, s, p), {"x": rand(1, c, *hw)})
    assert report.get("pooling", 0) + report.get("reduction", 0) >= 1, report


def test_pooling_row_is_vectorized():
    sched, report, _ = schedule(pool_model("MaxPool", 64, (256, 256), 3, 2, 1), AVX2)
    assert report.get("pooling") == 1, report
    pool = next(s for s in prim_scripts(sched).values() if "pool_max" in s)
    assert "T.vectorized(T.int64(" in pool
    assert "T.parallel(" in pool


def test_pooling_row_takes_half_a_vector_on_avx512():
    """resnet50's max pool (56 output columns): 8 of AVX-512's 16 lanes per vector, not
    declined to the reduction rule (which ran it scalar); numerics vs onnxruntime."""
    m = pool_model(*CASES["max 56 wide"])
    sched, report, _ = schedule(m, AVX512)
    assert report.get("pooling") == 1, report
    pool = next(s for s in prim_scripts(sched).values() if "pool_max" in s)
    assert "T.vectorized(T.int64(8))" in pool
    assert check_numerics(m, {"x": rand(1, 8, 112, 112)}, AVX512).get("pooling") == 1
