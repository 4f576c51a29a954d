"""lwc.schedules.int8: lwc's packed int8 convs without a tuning record get the
register-blocked space of their rule with a tile that fits the vector registers, one
thread below the parallel threshold, and stay the exact integer conv."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from lwc.kernels.int8_conv2d import (VNNI, conv_kernel, dot_product_for, pack_weight, pack_weight_pixels,
                                     pixel_conv_kernel)
from lwc.schedules import CpuFacts
from lwc.schedules.int8 import ARM_MAX_COLS, MAX_COLS, MAX_ROWS, block_work, choose_tile, dot_reduction
from lwc.targets import resolve
from lwc.tuning.apply import LWC_RULE_PREFIX, schedule_fixed


@pytest.mark.parametrize("regs", [16, 32], ids=["avx2", "neon-avx512"])
def test_tile_fits_the_registers_and_divides_the_loops(regs):
    facts = CpuFacts(vector_regs=regs)
    for rows, cols in [(96, 11), (48, 4), (7, 3), (1, 1), (56, 8), (160, 2)]:
        r1, c1 = choose_tile(rows, cols, facts)
        assert rows % r1 == 0 and cols % c1 == 0 and r1 <= MAX_ROWS and c1 <= MAX_COLS
        assert r1 * c1 + c1 + 1 <= regs  # accumulators + weight vectors + one broadcast


def test_tile_is_the_most_rows_that_divide_the_loop():
    # x86: one column block (MAX_COLS): the rows are the register reuse, up to MAX_ROWS
    assert MAX_COLS == 1
    assert choose_tile(96, 8, CpuFacts(vector_regs=16)) == (8, 1)
    assert choose_tile(160, 6, CpuFacts(vector_regs=32)) == (8, 1)
    assert choose_tile(7, 3, CpuFacts(vector_regs=16)) == (7, 1)
    assert choose_tile(6, 3, CpuFacts(vector_regs=16)) == (6, 1)


def test_arm_tile_takes_column_blocks_within_the_registers():
    # Arm sdot, 32 registers: PP-OCRv4 det's 96->24 convs (6 column blocks of 4 channels)
    # get 8 rows x 3 columns (24 accumulators + 3 weight vectors + 1 broadcast)
    neon = CpuFacts(vector_regs=32)
    assert choose_tile(160, 6, neon, ARM_MAX_COLS) == (8, 3)
    assert choose_tile(24, 8, neon, ARM_MAX_COLS) == (6, 4)  # 8 x 4 would need 37 registers
    assert choose_tile(7, 1, neon, ARM_MAX_COLS) == (7, 1)
    for rows, cols in [(96, 11), (48, 4), (7, 3), (1, 1), (56, 8), (160, 2), (40, 48)]:
        r1, c1 = choose_tile(rows, cols, neon, ARM_MAX_COLS)
        assert rows % r1 == 0 and cols % c1 == 0 and c1 <= ARM_MAX_COLS and r1 * c1 + c1 + 1 <= 32


def _reference(x, w, pads, zp):
    """int32 conv2d (stride 1) of uint8 ``x`` padded with the zero point ``zp``, int8 ``w``."""
    xp = np.pad(x.astype(np.int64), [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])], constant_values=zp)
    o, _, kh, kw = w.shape
    oh, ow = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    out = np.zeros((x.shape[0], o, oh, ow), np.int64)
    for r in range(kh):
        for q in range(kw):
            out += np.einsum("nchw,oc->nohw", xp[:, :, r:r + oh, q:q + ow], w[:, :, r, q].astype(np.int64))
    return out.astype(np.int32)


#: (input NCHW, weight OIHW, pads): 0.1 M MACs (one thread) and 12.8 M MACs (parallel)
CASES = [((1, 16, 6, 24), (32, 16, 3, 3), [1, 1, 1, 1]), ((1, 64, 56, 56), (64, 64, 1, 1), [0, 0, 0, 0])]


def _kernel(preset, case):
    shape, wshape, pads = case
    out_shape = (1, wshape[0], shape[2] + pads[0] + pads[2] - wshape[2] + 1, shape[3] + pads[1] + pads[3] - wshape[3] + 1)
    dot = dot_product_for(preset.arch, preset.features)
    return dot, conv_kernel(shape, wshape, out_shape, (1, 1), (1, 1), pads, 7, dot)


def _write_back_in_tile(mod) -> bool:
    """Whether the NCHW write-back runs inside the register tile's loop (write_back_in_tile):
    it shares its innermost enclosing multi-block loop with the tile's cache-write block."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    tile = [lp for lp in sch.get_loops(sch.get_sblock("matmul_global")) if len(sch.get_child_blocks(lp)) > 1]
    return any(sch.get(lp).same_as(sch.get(tile[-1])) for lp in sch.get_loops(sch.get_sblock("to_nchw")))


def _untuned(preset, func):
    mod, done = schedule_fixed(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), preset,
                               preset.tvm_target(), LWC_RULE_PREFIX, CpuFacts.from_preset(preset))
    assert done == 1
    return mod


@pytest.mark.parametrize("case", CASES, ids=["small", "large"])
def test_host_kernel_is_register_blocked_exact_and_parallel_only_when_it_pays(case):
    host = resolve("host")
    dot, func = _kernel(host, case)
    mod = _untuned(host, func)
    text = mod.script()
    assert "matmul_global" in text  # the register-blocked space: accumulators in a tile
    assert ("T.parallel" in text) == (block_work(func) >= 1 << 22)
    assert _write_back_in_tile(mod)
    rng = np.random.default_rng(0)
    shape, wshape, pads = case
    x = rng.integers(0, 256, shape).astype(np.uint8)
    w = rng.integers(-128, 128, wshape).astype(np.int8)
    ref = _reference(x, w, pads, 7)
    lib = tvm.compile(mod, target=host.tvm_target())
    out = tvm.runtime.tensor(np.zeros(ref.shape, np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(pack_weight(w, dot)), out)
    np.testing.assert_array_equal(out.numpy(), ref)


def test_rpi5_kernel_is_register_blocked_with_a_write_back_per_accumulator():
    """Cortex-A76 (sdot): 6 rows x 4 column blocks of 4 output channels, written back one
    4-lane accumulator at a time (a 16-lane write-back vector would straddle the
    accumulators, and LLVM would keep them on the stack), one thread below the threshold."""
    rpi5 = resolve("rpi5")
    _, func = _kernel(rpi5, CASES[0])
    text = _untuned(rpi5, func).script()
    assert "sdot" in text and "matmul_global" in text and "T.parallel" not in text
    assert "T.unroll(T.int64(6)" in text and text.count("T.unroll(T.int64(4)") >= 2  # rows, columns
    write_back = text[text.index('T.sblock("matmul_global")') - 400:text.index('T.sblock("matmul_global")')]
    assert "T.vectorized(T.int64(4))" in write_back and "T.vectorized(T.int64(16))" not in write_back
    assert _write_back_in_tile(_untuned(rpi5, func))
    assert tvm.compile(_untuned(rpi5, func), target=rpi5.tvm_target()) is not None


@pytest.mark.parametrize("channels, blocked", [(48, False), (192, True)], ids=["12-steps", "48-steps"])
def test_rpi5_short_1x1_reduction_keeps_the_seeded_space(channels, blocked):
    """A 1x1 conv of 8-24 reduction steps (SHORT_REDUCTION_STEPS) keeps the reduction-
    innermost space on Arm sdot; a longer one is register-blocked."""
    rpi5 = resolve("rpi5")
    case = ((1, channels, 4, 16), (channels, channels, 1, 1), [0, 0, 0, 0])
    dot, func = _kernel(rpi5, case)
    assert dot_reduction(func) == (1, channels // 4)
    mod = _untuned(rpi5, func)
    assert ("matmul_global" in mod.script()) == blocked
    assert tvm.compile(mod, target=rpi5.tvm_target()) is not None


@pytest.mark.parametrize("case, interleaved", [(((1, 16, 4, 32), (8, 16, 1, 1), [0, 0, 0, 0]), True),
                                               (((1, 12, 5, 16), (16, 12, 3, 3), [1, 1, 1, 1]), False)],
                         ids=["1x1-plain-copy", "3x3-padded"])
def test_pixel_lane_copy_interleaves_rows_and_the_conv_stays_exact(case, interleaved):
    """x86 VNNI's pixel-lane kernel, untuned: an unpadded activation copy is tensorized as
    4 row loads and one shuffle per 64 bytes (lwc_interleave_4x16_u8), a padded one stays
    a per-column copy; either way the scheduled kernel is the exact int32 conv."""
    host = resolve("host")
    if dot_product_for(host.arch, host.features) != VNNI:
        pytest.skip(f"the pixel-lane kernel is x86 VNNI only; this host ({host.cpu}) has none")
    shape, wshape, pads = case
    out_shape = (1, wshape[0], shape[2] + pads[0] + pads[2] - wshape[2] + 1, shape[3] + pads[1] + pads[3] - wshape[3] + 1)
    assert out_shape[3] % 16 == 0
    mod = _untuned(host, pixel_conv_kernel(shape, wshape, out_shape, (1, 1), pads, 9))
    assert ("T.Shuffle" in mod.script()) == interleaved
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    w = rng.integers(-128, 128, wshape).astype(np.int8)
    lib = tvm.compile(mod, target=host.tvm_target())
    out = tvm.runtime.tensor(np.zeros(out_shape, np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(pack_weight_pixels(w)), out)
    np.testing.assert_array_equal(out.numpy(), _reference(x, w, pads, 9))


@pytest.mark.qemu
def test_rpi5_register_blocked_conv_under_qemu_matches_onnxruntime(tmp_path):
    """A QDQ conv 24->24 (6 column blocks: an 8 x 3 tile) compiled for rpi5 without tuning
    records and run under qemu-aarch64 (cortex-a76): within one output step of onnxruntime."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "passes"))
    from qdq_models import conv_model, run_under_qemu

    x = np.random.default_rng(5).uniform(-2.5, 2.5, (1, 24, 16, 16)).astype(np.float32)
    result, got, ref = run_under_qemu(conv_model(channels=24, groups=1, hw=16, seed=4), "rpi5", x, tmp_path,
                                      qemu_cpu="cortex-a76")
    assert result.quantization["lowering"]["PackInt8Conv2d"] == 1
    assert np.abs(got - ref).max() <= 0.05 + 1e-6  # one output step


def _squeeze_excitation_model(c=16, h=6, w=48, seed=0):
    """fp32 ONNX: ``y = conv1x1(x * hard_sigmoid(conv(relu(conv(mean_hw(x))))))``, the
    squeeze-excitation block of MobileNetV3 (PP-OCR cls), input (1, c, h, w)."""
    import onnx
    from onnx import TensorProto, helper
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)

    def weight(name, o, i):
        return nh.from_array(rng.normal(0, 0.5, (o, i, 1, 1)).astype(np.float32), name)

    def bias(name, o):
        return nh.from_array(rng.normal(0, 0.2, o).astype(np.float32), name)

    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["m"]),
        helper.make_node("Conv", ["m", "w1", "b1"], ["s1"]),
        helper.make_node("Relu", ["s1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["s2"]),
        helper.make_node("HardSigmoid", ["s2"], ["g"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["x", "g"], ["xs"]),
        helper.make_node("Conv", ["xs", "w3", "b3"], ["y"]),
    ]
    inits = [weight("w1", c // 4, c), bias("b1", c // 4), weight("w2", c, c // 4), bias("b2", c),
             weight("w3", 8, c), bias("b3", 8)]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, h, w])], inits)
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_broadcast_epilogue_vectorized_along_the_width_and_matches_onnxruntime(tmp_path):
    """The int8 squeeze-excitation conv's fused epilogue (``x * hard_sigmoid(conv)`` over
    the whole feature map, then the next conv's quantize) runs along the width, one
    vector at a time (its per-channel NaN guard stays a scalar), instead of fused over all
    axes with a div/mod per lane; the compiled model stays within int8 error of
    onnxruntime fp32."""
    import re

    import onnxruntime as ort

    from lwc import artifact, driver
    from lwc.kernels.int8_conv2d import SCHEDULED_LOOP_ATTR
    from lwc.options import CompileOptions
    from lwc.prepare import prepare
    from lwc.quantize.options import QuantizeOptions
    from lwc.tuning.apply import apply_records

    model = _squeeze_excitation_model()
    options = CompileOptions(quantize=QuantizeOptions(calib_random=8, progress=False))
    prepared = prepare(model, "host", {"x": [1, 16, 6, 48]}, options)
    host = resolve("host")
    mod, _ = apply_records(prepared.mod, host, prepared.tvm_target, enabled=False)
    se = [f.script() for gv, f in mod.functions_items()
          if "int8_conv2d" in gv.name_hint and "hard_sigmoid" in gv.name_hint]
    assert len(se) == 1, [gv.name_hint for gv in mod.functions]
    lanes = CpuFacts.from_preset(host).lanes(32)
    loop = re.search(r'T\.vectorized\(T\.int64\((\d+)\), annotations=\{"' + SCHEDULED_LOOP_ATTR + r'": 1\}\):\s+'
                     r'with T\.sblock\("(\w+)"\)', se[0])
    assert loop is not None and int(loop.group(1)) == lanes and loop.group(2) != "to_nchw", se[0][-3000:]

    result = driver.compile(model, "host", {"x": [1, 16, 6, 48]}, options=options, use_tuning_logs=False)
    art = artifact.load(result.export(tmp_path / "se.so"))
    x = np.random.default_rng(1).standard_normal((1, 16, 6, 48)).astype(np.float32)
    (got,) = art.run({"x": x})
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()
