import numpy as np
import tvm
from tvm import relax
from onnx import helper
from support import assert_matches_onnxruntime, assert_unchanged, model, relax_module, tensor

from lwc.kernel_inventory import list_kernels
from lwc.passes._support import count_ops
from lwc.passes.fuse_transpose_into_matmul import FuseTransposeIntoMatmul

RNG = np.random.default_rng(0)
SHAPES = {"q": [1, 2, 5, 4], "k": [1, 2, 5, 4], "v": [1, 2, 5, 3]}
HOST = tvm.target.Target({"kind": "llvm"})


def attention_like():
    """scores = q @ k^T; y = v^T @ scores + bias: a transpose on each side of a matmul."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Transpose", ["v"], ["vt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["vt", "s"], ["m"]),
        helper.make_node("Add", ["m", "bias"], ["y"]),
    ]
    bias = tensor("bias", RNG.standard_normal((5,)))
    return model(nodes, SHAPES, {"y": [1, 2, 3, 5]}, [bias])


def test_fuses_both_sides_and_drops_kernels():
    before = relax_module(attention_like())
    pass_obj = FuseTransposeIntoMatmul()
    after = pass_obj(before)
    assert pass_obj.stats.changed["transpose fused into matmul"] == 2
    assert count_ops(after, "relax.permute_dims") == 0 and count_ops(after, "relax.matmul") == 0
    # two transposes and two matmuls (bias fused) -> two kernels, bias still fused
    assert len(list_kernels(before, HOST)) == 4
    assert len(list_kernels(after, HOST)) == 2


def test_broadcast_batch_against_2d_operand():
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["y"])]
    onnx_model = model(nodes, {"x": [2, 3, 4], "w": [6, 4]}, {"y": [2, 3, 6]})
    pass_obj = FuseTransposeIntoMatmul()
    assert count_ops(pass_obj(relax_module(onnx_model)), "relax.matmul") == 0
    inputs = {"x": RNG.standard_normal((2, 3, 4)).astype("float32"),
              "w": RNG.standard_normal((6, 4)).astype("float32")}
    assert_matches_onnxruntime(onnx_model, inputs)


def test_declines_constant_derived_operand():
    """matmul(x, permute_dims(full(...))): FoldConstant handles it at build time."""
    x = relax.Var("x", relax.TensorType((3, 4), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            w = bb.emit(relax.op.full((6, 4), relax.const(0.5, "float32"), "float32"))
            wt = bb.emit(relax.op.permute_dims(w, [1, 0]))
            out = bb.emit_output(relax.op.matmul(x, wt))
        bb.emit_func_output(out)
    pass_obj = FuseTransposeIntoMatmul()
    assert_unchanged(pass_obj, bb.get())
    assert "constant-derived" in pass_obj.stats.declined[0][1]


def test_declines_other_permutation_and_shared_transpose():
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),  # not a last-two swap
        helper.make_node("MatMul", ["q", "kt"], ["y"]),
        helper.make_node("Transpose", ["u"], ["k2"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "k2"], ["z"]),
        helper.make_node("Relu", ["k2"], ["r"]),  # a second reader keeps the transpose alive
    ]
    onnx_model = model(nodes, {"q": [1, 2, 3, 4], "k": [1, 5, 2, 4], "u": [1, 2, 5, 4]},
                       {"y": [1, 2, 3, 5], "z": [1, 2, 3, 5], "r": [1, 2, 4, 5]})
    pass_obj = FuseTransposeIntoMatmul()
    assert_unchanged(pass_obj, relax_module(onnx_model))
    reasons = sorted(r for _, r in pass_obj.stats.declined)
    assert reasons[0].startswith("permute [0, 2, 3, 1]")
    assert reasons[1] == "transposed tensor has other readers"


def test_numerics_match_onnxruntime():
    inputs = {n: RNG.standard_normal(s).astype("float32") for n, s in SHAPES.items()}
    assert_matches_onnxruntime(attention_like(), inputs)


def test_declines_transpose_of_a_slice():
    """rec's attention: k = slice(qkv); slice + transpose already form one kernel."""
    nodes = [
        helper.make_node("Slice", ["qk", "st", "en", "ax"], ["k"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["y"]),
    ]
    inits = [helper.make_tensor(n, 7, [1], [v]) for n, v in (("st", 0), ("en", 4), ("ax", 2))]
    onnx_model = model(nodes, {"q": [1, 3, 4], "qk": [1, 5, 8]}, {"y": [1, 3, 5]}, inits)
    pass_obj = FuseTransposeIntoMatmul()
    assert_unchanged(pass_obj, relax_module(onnx_model))
    assert pass_obj.stats.declined[0][1].startswith("transpose already fuses")
