import numpy as np
import tvm
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module, tensor

from lwc.kernel_inventory import list_kernels
from lwc.passes._support import count_ops
from lwc.passes.merge_parallel_branches import MergeParallelBranches

RNG = np.random.default_rng(0)
HOST = tvm.target.Target({"kind": "llvm"})


def inception(widths=(8, 6, 4), kernels=(1, 1, 1), bias=True):
    """Three conv(+bias)+relu branches on x; branch 1 feeds a 3x3 conv; outputs concatenated."""
    nodes, inits = [], []
    for i, (o, k) in enumerate(zip(widths, kernels)):
        ins = ["x", f"w{i}"] + ([f"b{i}"] if bias else [])
        nodes += [helper.make_node("Conv", ins, [f"c{i}"], pads=[k // 2] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        inits.append(tensor(f"w{i}", RNG.standard_normal((o, 12, k, k))))
        if bias:
            inits.append(tensor(f"b{i}", RNG.standard_normal(o)))
    nodes += [helper.make_node("Conv", ["r1", "w3"], ["d1"], pads=[1, 1, 1, 1]),
              helper.make_node("Concat", ["r0", "d1", "r2"], ["y"], axis=1)]
    inits.append(tensor("w3", RNG.standard_normal((5, widths[1], 3, 3))))
    out = widths[0] + 5 + widths[2]
    return model(nodes, {"x": [1, 12, 7, 7]}, {"y": [1, out, 7, 7]}, inits)


def qkv(width=16):
    """Q/K/V projections x @ W + b sharing x, then scores = q @ k^T."""
    nodes, inits = [], []
    for n in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{n}"], [f"m{n}"]),
                  helper.make_node("Add", [f"m{n}", f"b{n}"], [n])]
        inits += [tensor(f"w{n}", RNG.standard_normal((16, width))), tensor(f"b{n}", RNG.standard_normal(width))]
    nodes += [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
              helper.make_node("MatMul", ["q", "kt"], ["s"]),
              helper.make_node("MatMul", ["s", "v"], ["y"])]
    return model(nodes, {"x": [1, 6, 16]}, {"y": [1, 6, width]}, inits)


def test_merges_inception_branches_into_one_conv_and_split():
    before = relax_module(inception())
    pass_obj = MergeParallelBranches()
    after = pass_obj(before)
    assert pass_obj.stats.changed["convs merged"] == 3
    assert count_ops(after, "relax.nn.conv2d") == 2  # merged 1x1 + the 3x3
    assert count_ops(after, "relax.split") == 1
    assert count_ops(after, "relax.nn.relu") == 1  # bias and relu applied once, before the split
    assert len(list_kernels(after, HOST)) < len(list_kernels(before, HOST))


def test_merges_qkv_projections():
    before = relax_module(qkv())
    pass_obj = MergeParallelBranches()
    after = pass_obj(before)
    assert pass_obj.stats.changed["matmuls merged"] == 3
    assert count_ops(after, "relax.split") == 1
    assert count_ops(after, "relax.matmul") == 3  # one merged projection + the two attention matmuls


def test_declines_different_kernel_sizes():
    pass_obj = MergeParallelBranches()
    assert_unchanged(pass_obj, relax_module(inception(kernels=(1, 3, 1))))
    reasons = [r for _, r in pass_obj.stats.declined]
    assert any("kernel size (3, 3) vs (1, 1)" in r for r in reasons)
    assert any("only 2 mergeable branches" in r for r in reasons)


def test_declines_wide_branches():
    pass_obj = MergeParallelBranches()
    assert_unchanged(pass_obj, relax_module(qkv(width=300)))
    assert "columns > 256" in pass_obj.stats.declined[0][1]


def test_numerics_match_onnxruntime_inception():
    x = RNG.standard_normal((1, 12, 7, 7)).astype("float32")
    assert_matches_onnxruntime(inception(), {"x": x})


def test_numerics_match_onnxruntime_qkv():
    x = RNG.standard_normal((1, 6, 16)).astype("float32")
    assert_matches_onnxruntime(qkv(), {"x": x})
