"""Conv2d rule: structure (register tile: parallel outer, vectorized inner, unrolled
channel tile) and numerics against onnxruntime for plain, 1x1, strided, padded,
grouped and depthwise convolutions with a fused bias + ReLU epilogue."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from schedules_support import AVX2, NEON, check_numerics, model, prim_scripts, rand, schedule


def conv_model(c_in, c_out, hw, k, stride=1, pad=0, group=1, relu=True):
    h, w = hw
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[k, k], strides=[stride] * 2,
                              pads=[pad] * 4, group=group)]
    nodes.append(helper.make_node("Relu", ["c"], ["y"]) if relu else helper.make_node("Identity", ["c"], ["y"]))
    inits = {"W": rand(c_out, c_in // group, k, k, seed=1), "B": rand(c_out, seed=2)}
    return model(nodes, {"x": [1, c_in, h, w]}, {"y": [1, c_out, ho, wo]}, inits)


CASES = {
    "3x3": dict(c_in=16, c_out=32, hw=(24, 64), k=3, pad=1),
    "1x1": dict(c_in=32, c_out=64, hw=(20, 48), k=1),
    "strided": dict(c_in=8, c_out=16, hw=(32, 64), k=3, stride=2, pad=1),
    "grouped": dict(c_in=16, c_out=32, hw=(16, 32), k=3, pad=1, group=4),
    "depthwise": dict(c_in=32, c_out=32, hw=(24, 48), k=3, pad=1, group=32),
    "odd width": dict(c_in=8, c_out=16, hw=(13, 13), k=3, pad=1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conv2d_matches_onnxruntime(case):
    m = conv_model(**CASES[case])
    report = check_numerics(m, {"x": rand(1, CASES[case]["c_in"], *CASES[case]["hw"])})
    assert report.get("conv2d", 0) == 1, report


@pytest.mark.parametrize("facts", [AVX2, NEON], ids=["avx2", "neon"])
def test_conv2d_is_register_tiled(facts):
    sched, report, _ = schedule(conv_model(32, 64, (32, 64), 3, pad=1), facts)
    assert report.get("conv2d") == 1, report
    conv = next(s for n, s in prim_scripts(sched).items() if "conv2d" in s and "T.unroll" in s)
    assert "T.parallel(" in conv  # 32*64*64*288 MACs: worth both cores
    lanes = facts.lanes()
    widths = {f"T.vectorized(T.int64({k * lanes}))" for k in (1, 2, 4)}
    assert any(w in conv for w in widths)  # whole vectors of the output row
    # the accumulator tile is a global-scope buffer: TVM puts those (< 1 KB) on the stack, and
    # turns "local" ones into a workspace allocation per parallel iteration
    assert "alloc_buffer" in conv and 'scope="local"' not in conv
    assert "_init" in conv  # reduction decomposed: init outside the reduction loops


def test_small_conv_stays_serial():
    sched, _, _ = schedule(conv_model(4, 8, (8, 16), 1), AVX2)
    conv = next(s for s in prim_scripts(sched).values() if "conv2d" in s)
    assert "T.parallel(" not in conv
    assert "T.vectorized(" in conv


def test_odd_width_vectorizes_channels_with_packed_weights():
    # 13 wide: no whole vector of pixels, so channels go in the vector and each
    # [C, R, S, vi] weight tile is packed per channel tile (inside the parallel loop).
    from lwc.bench import set_tvm_threads

    set_tvm_threads(2)  # the packed tile must be per thread
    m = conv_model(64, 128, (13, 13), 3, pad=1)
    sched, report, _ = schedule(m, AVX2)
    conv = next(s for s in prim_scripts(sched).values() if "conv2d" in s)
    assert "param_0_global" in conv and "T.parallel(" in conv
    for seed in range(2):
        check_numerics(m, {"x": rand(1, 64, 13, 13, seed=seed)})


def test_nhwc_conv_matches_onnxruntime():
    # lwc runs NHWC/OHWI convs where ConvertConvLayout picks them (LWC_CONV_LAYOUT=NHWC)
    from schedules_support import run_lwc, run_ort
    from tvm import relax

    w_oihw, bias = rand(32, 16, 3, 3, seed=1), rand(32, seed=2)
    x_nchw = rand(1, 16, 24, 40, seed=3)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 24, 40, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = relax.const(w_oihw.transpose(0, 2, 3, 1).copy())
            c = bb.emit(relax.op.nn.conv2d(x, w, padding=1, data_layout="NHWC", kernel_layout="OHWI"))
            r = bb.emit(relax.op.nn.relu(relax.op.add(c, relax.const(bias))))
            out = bb.emit_output(r)
        bb.emit_func_output(out)
    from lwc.schedules import apply_rules
    from lwc.targets import resolve

    tgt = resolve("host").tvm_target()
    with tgt:
        fused = relax.get_pipeline("zero")(bb.get())
    sched, report = apply_rules(fused, AVX2)
    assert report.get("conv2d") == 1, report
    got = run_lwc(sched, tgt, {"x": x_nchw.transpose(0, 2, 3, 1).copy()})[0]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    ref = model(nodes, {"x": [1, 16, 24, 40]}, {"y": [1, 32, 24, 40]}, {"W": w_oihw, "B": bias})
    want = run_ort(ref, {"x": x_nchw})[0].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_then_pad_epilogue_is_not_register_tiled():
    """Conv -> Pad fuses into one kernel whose epilogue writes more than the conv: the
    rule declines it (tiling it wrote nothing into the padding: garbage there)."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("Pad", ["c", "p"], ["y"])]
    inits = {"W": rand(4, 2, 3, 3, seed=1), "p": np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64)}
    graph_inits = {"W": inits["W"]}
    m = model(nodes[:1], {"x": [1, 2, 9, 9]}, {"c": [1, 4, 4, 4]}, graph_inits)
    m.graph.node.append(nodes[1])
    m.graph.initializer.append(numpy_helper.from_array(inits["p"], "p"))
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5]))
    report = check_numerics(m, {"x": rand(1, 2, 9, 9)})
    assert report.get("conv2d", 0) == 0, report


def _squeeze_excite_model(c=48, c_mid=12, hw=(6, 80)):
    """x * hard_sigmoid(conv1x1(relu(conv1x1(mean(x))))): PP-OCR's SE block (LCNet), whose
    last conv fuses with a broadcast multiply writing far more than the conv's [1,c,1,1]."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Conv", ["p", "W1", "B1"], ["c1"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], kernel_shape=[1, 1]),
             helper.make_node("HardSigmoid", ["c2"], ["s"], alpha=0.2, beta=0.5),
             helper.make_node("Mul", ["x", "s"], ["y"])]
    inits = {"W1": rand(c_mid, c, 1, 1, seed=1), "B1": rand(c_mid, seed=2),
             "W2": rand(c, c_mid, 1, 1, seed=3), "B2": rand(c, seed=4)}
    return model(nodes, {"x": [1, c, *hw]}, {"y": [1, c, *hw]}, inits)


def test_squeeze_excite_broadcast_epilogue_is_register_tiled():
    """The broadcast epilogue is covered by the conv's channel tiles, so the conv2d rule takes
    the kernel (left to the reduction rule, the 1x1 conv was recomputed for every output
    element: 36% of PP-OCRv4 rec's time, 0.01 GFLOP/s) and vectorizes the multiply along x's
    rows; numerics against onnxruntime."""
    m = _squeeze_excite_model()
    report = check_numerics(m, {"x": rand(1, 48, 6, 80)})
    assert report.get("conv2d", 0) == 2, report
    sched, _, _ = schedule(m, AVX2)
    kernel = next(s for s in prim_scripts(sched).values() if "T_multiply" in s and "conv2d" in s)
    lines = [ln for ln in kernel.splitlines() if " for " in ln or "T.sblock(" in ln]
    last = max(i for i, ln in enumerate(lines) if 'T.sblock("T_multiply' in ln)
    assert "T.vectorized(" in lines[last - 1]  # the multiply's innermost loop


@pytest.mark.parametrize("stride, axis", [(1, "v_xx"), (2, "v_ff")])
def test_strided_conv_puts_channels_in_the_vector(stride, axis):
    # stride 2: the pixels of a row are every other input element (a gather), so the output
    # channels go in the vector (their weights are pre-packed contiguous) and pixels beside them
    import tvm
    from lwc.schedules import analysis
    from lwc.schedules.contraction import main_block, pick_axes
    from schedules_support import fused_module
    from tvm import s_tir

    fused, _ = fused_module(conv_model(16, 32, (32, 64), 3, stride=stride, pad=1))
    func = next(f for gv, f in fused.functions_items()
                if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint)
    sch = s_tir.Schedule(func)
    vec, _ = pick_axes(analysis.nest(sch, main_block(sch)), AVX2)
    assert vec.name == axis


def test_small_weights_step_innermost_over_a_large_input():
    """Weights that fit in L2 (24x32x3x3: 27 KB) against a 1.3 MB input: the output-channel
    tile loop is the innermost of the fused outer loops, so each input tile is read from
    memory once (PP-OCRv4 det's head convs); numerics unchanged."""
    m = conv_model(32, 24, (64, 160), 3, pad=1)
    sched, _, _ = schedule(m, AVX2)
    conv = next(s for s in prim_scripts(sched).values() if "conv2d" in s and "T.unroll" in s)
    assert "nn_yy_xx_0_ff_0_fused" in conv, conv[:2000]
    report = check_numerics(m, {"x": rand(1, 32, 64, 160)})
    assert report.get("conv2d", 0) == 1, report


def test_large_weights_keep_the_channel_tile_outermost():
    """Weights larger than half the L2 (64x256x3x3: 590 KB): the channel tile stays the
    outermost loop, each weight tile reused over every pixel."""
    sched, _, _ = schedule(conv_model(256, 64, (14, 16), 3, pad=1), AVX2)
    conv = next(s for s in prim_scripts(sched).values() if "conv2d" in s and "T.unroll" in s)
    assert "nn_ff_0_yy_xx_0_fused" in conv, conv[:2000]
