"""Int8DepthwiseConv2d: structural, negative, numerical (the kernel as plain TIR and as
MetaSchedule schedules it, against a numpy integer conv; whole compiles against
onnxruntime and the TOPI conv), and the fixed schedule untuned builds get."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from lwc.frontend import import_model
from lwc.kernels.int8_depthwise import DEPTHWISE_RULE, depthwise_kernel, lanes_for, row_lanes
from lwc.passes._qdq import count_ops
from lwc.passes.int8_depthwise_conv2d import Int8DepthwiseConv2d
from lwc.passes.lower_qdq_conv2d import LowerQdqConv2d

from qdq_models import conv_model, ort_run, run_under_qemu


def _lowered(**kwargs):
    return LowerQdqConv2d()(import_model(conv_model(**kwargs)).mod)


def _kernels(mod) -> list:
    return [f for gv, f in mod.functions.items() if gv.name_hint.startswith("int8_depthwise_conv2d")]


def _reference(x, w, strides, pads, pad_value, dilation):
    """numpy int64 depthwise conv of the ``pad_value``-padded input, as int32."""
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    (sh, sw), (dh, dw) = strides, dilation
    _, _, kh, kw = w.shape
    oh = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((x.shape[0], x.shape[1], oh, ow), np.int64)
    for r in range(kh):
        for q in range(kw):
            patch = xp[:, :, r * dh:r * dh + sh * oh:sh, q * dw:q * dw + sw * ow:sw]
            out += patch * w[None, :, 0, r, q, None, None].astype(np.int64)
    return out.astype(np.int32)


#: (input shape, kh x kw, strides, dilation, pads [t, l, b, r], zero point): cls's 5x5 at
#: 2x96 (whole vectors), a strided 3x3 with asymmetric pads, rows that are cropped (20 ->
#: 32 columns, 11 -> 16), a dilated one, no padding at all.
GEOMETRIES = [
    ((1, 24, 2, 96), (5, 5), (1, 1), (1, 1), [2, 2, 2, 2], 10),
    ((2, 5, 9, 11), (3, 3), (2, 2), (1, 1), [1, 0, 1, 2], 131),
    ((1, 6, 12, 20), (3, 3), (1, 1), (2, 2), [2, 2, 2, 2], 7),
    ((1, 3, 7, 11), (3, 5), (1, 1), (1, 1), [1, 2, 1, 2], 255),
    ((1, 4, 8, 16), (3, 3), (1, 1), (1, 1), [0, 0, 0, 0], 0),
    ((1, 3, 11, 17), (3, 3), (2, 3), (2, 2), [1, 1, 2, 2], 60),
]
IDS = ["cls-5x5", "3x3-stride2-asym", "dilated-crop", "3x5-crop-zp255", "nopad", "stride3x2-dilated"]


def _case(geometry, seed: int = 0):
    shape, (kh, kw), strides, dilation, pads, zp = geometry
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    w = rng.integers(-128, 128, (shape[1], 1, kh, kw)).astype(np.int8)
    ref = _reference(x, w, strides, pads, zp, dilation)
    func = depthwise_kernel(shape, (kh, kw), ref.shape, strides, dilation, pads, zp)
    return x, w, ref, func


def _run(lib, x, w, ref) -> np.ndarray:
    out = tvm.runtime.tensor(np.zeros(ref.shape, np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w.reshape(w.shape[0], *w.shape[2:])), out)
    return out.numpy()


def _module(func) -> tvm.IRModule:
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def test_structural_depthwise_conv_and_its_pad_become_one_kernel():
    mod = _lowered()  # case Q1: depthwise 3x3, pad 1 with the zero point 128
    assert count_ops(mod, "relax.nn.pad") == 1
    p = Int8DepthwiseConv2d()
    out = p(mod)
    assert p.lowered == 1 and not p.declined
    assert count_ops(out, "relax.nn.conv2d") == 0 and count_ops(out, "relax.nn.pad") == 0
    [kernel] = _kernels(out)
    text = kernel.script()
    assert f'"schedule_rule": "{DEPTHWISE_RULE}"' in text
    assert "T.uint8(128)" in text  # the zero point pads, inside the kernel


def test_negative_grouped_and_int8_data_are_declined_dense_left_silently():
    for kwargs, reason in [(dict(groups=2, stride=2), "groups=2"),
                           (dict(x_zp=-7, x_dtype=np.int8, relu=False), "not uint8")]:
        mod = _lowered(**kwargs)
        p = Int8DepthwiseConv2d()
        tvm.ir.assert_structural_equal(p(mod), mod)
        assert p.lowered == 0 and reason in p.declined[0][1]
    mod = _lowered(groups=1)
    p = Int8DepthwiseConv2d()
    tvm.ir.assert_structural_equal(p(mod), mod)
    assert p.lowered == 0 and not p.declined  # dense convs are PackInt8Conv2d's


def test_lanes_fewest_vectors_then_fewest_padded_columns():
    assert [lanes_for(w) for w in (96, 16, 20, 24, 40, 11, 7, 8, 4)] == [16, 16, 16, 16, 16, 16, 8, 8, 4]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=IDS)
def test_kernel_is_the_exact_integer_conv(geometry):
    """As plain TIR: the int32 depthwise conv of the zero-point-padded input."""
    x, w, ref, func = _case(geometry)
    lib = tvm.compile(_module(func), target="llvm")
    np.testing.assert_array_equal(_run(lib, x, w, ref), ref)


def _fixed_schedule(func, preset):
    """``func`` as lwc.tuning.apply.schedule_fixed schedules it for ``preset``."""
    from lwc.tuning.apply import schedule_fixed

    mod, fixed = schedule_fixed(_module(func), preset, preset.tvm_target())
    assert fixed == 1
    return mod


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=IDS)
def test_fixed_schedule_is_parallel_vectorized_and_exact(geometry):
    """MetaSchedule's one design space (lwc's rule) + postprocessors: channels parallel, the
    accumulators one vector over the unrolled taps, the padded plane per channel; bit-exact
    on this host."""
    from lwc.targets import resolve

    x, w, ref, func = _case(geometry, seed=1)
    host = resolve("host")
    mod = _fixed_schedule(func, host)
    text = mod.script()
    lanes = row_lanes(ref.shape[3], geometry[2][1])
    assert "T.parallel" in text and f"T.vectorized(T.int64({lanes}))" in text and "T.unroll" in text
    assert mod["main"].attrs["tirx.is_scheduled"]
    np.testing.assert_array_equal(_run(tvm.compile(mod, target=host.tvm_target()), x, w, ref), ref)


@pytest.mark.parametrize("preset", ["rpi5", "arm64"])  # arm64's target names no core count
def test_fixed_schedule_builds_for_arm64(preset):
    from lwc.targets import resolve

    board = resolve(preset)
    _, _, _, func = _case(GEOMETRIES[1])
    mod = _fixed_schedule(func, board)
    assert tvm.compile(mod, target=board.tvm_target()) is not None


@pytest.mark.qemu
def test_arm64_artifact_under_qemu_matches_onnxruntime(tmp_path):
    """The quantized depthwise conv compiled for arm64 (fixed schedule, NEON) and run under
    qemu-aarch64: within one output step of onnxruntime."""
    x = np.random.default_rng(3).uniform(-2.7, 2.7, (1, 8, 16, 16)).astype(np.float32)
    result, got, ref = run_under_qemu(conv_model(stride=2, x_zp=3), "arm64", x, tmp_path)
    assert result.quantization["lowering"]["Int8DepthwiseConv2d"] == 1
    assert np.abs(got - ref).max() <= 0.05 + 1e-6  # one output step


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(stride=2, x_zp=3), dict(channels=16, groups=16, x_zp=17, pads=0, hw=20)],
    ids=["q1", "stride2", "nopad-width18"],
)
def test_numerical_matches_onnxruntime_and_the_topi_conv(kwargs):
    """Whole compiles (no tuning records: the fixed schedule): within one output step of
    onnxruntime, and equal to the build that keeps TOPI's conv (the pass disabled)."""
    from lwc import driver

    model = conv_model(**kwargs)
    fast = driver.compile(model, "host", use_tuning_logs=False)
    assert fast.quantization["lowering"]["Int8DepthwiseConv2d"] == 1
    assert fast.describe()["tuning"]["fixed_schedules"] == 1
    plain = driver.compile(model, "host", use_tuning_logs=False, disabled_passes=("Int8DepthwiseConv2d",))
    assert "Int8DepthwiseConv2d" not in plain.passes
    rng = np.random.default_rng(2)
    channels, hw = kwargs.get("channels", 8), kwargs.get("hw", 16)
    for _ in range(3):
        x = rng.uniform(-2.7, 2.7, (1, channels, hw, hw)).astype(np.float32)
        got = fast.run({"x": x})[0]
        np.testing.assert_array_equal(got, plain.run({"x": x})[0])
        assert np.abs(got - ort_run(model, {"x": x})[0]).max() <= 0.05 + 1e-6  # one output step


def test_compile_notes_name_the_depthwise_kernel_and_not_grouped_convs_as_fp32():
    """A grouped conv the pass declines is still int8 (TOPI's kernel): no "not lowered to
    int8" note for it."""
    from lwc import driver

    dw = driver.compile(conv_model(), "host", use_tuning_logs=False)
    assert "1 int8 depthwise conv2d on lwc's depthwise kernel (Int8DepthwiseConv2d)" in dw.notes
    grouped = driver.compile(conv_model(groups=2, stride=2), "host", use_tuning_logs=False)
    assert grouped.quantization["lowering"]["int8_conv2d"] == 1
    assert not any("not lowered to int8" in n for n in grouped.notes), grouped.notes


# --------------------------------------------------------------------------- row quads (x86 VNNI)

#: An AVX-512 VNNI CPU (Zen 4) as a JSON target: the row-quad kernel's structure is checked
#: for it on any host; it runs only where the host has VNNI.
VNNI_TARGET = '{"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4", "num-cores": 2}'

#: (input shape, kh x kw, strides, pads, zero point): det's 5x5 at 40x40 (whole vectors);
#: a 3x3 with rows strided by 2 and a cropped row (37 -> 48 columns); 7 kernel rows (two
#: quads, the second with 1 row of weights); no padding.
QUAD_GEOMETRIES = [
    ((1, 16, 40, 40), (5, 5), (1, 1), [2, 2, 2, 2], 10),
    ((1, 8, 66, 37), (3, 3), (2, 1), [1, 0, 1, 2], 131),
    ((2, 3, 38, 16), (7, 3), (1, 1), [0, 1, 0, 1], 255),
    ((1, 4, 34, 48), (3, 3), (1, 1), [0, 0, 0, 0], 0),
]
QUAD_IDS = ["det-5x5", "3x3-rows-stride2-crop", "7x3-two-quads-batch2", "nopad"]


def _host_has_vnni() -> bool:
    from lwc.kernels.int8_conv2d import VNNI, dot_product_for
    from lwc.targets import resolve

    host = resolve("host")
    return dot_product_for(host.arch, host.features) == VNNI


#: The row-window kernel's cases (5 kernel columns): cls's 5x5 at 2x96; rows strided by
#: 2 with a cropped row (37 -> 48 columns); batch 2 without padding.
WINDOW_GEOMETRIES = [
    ((1, 24, 2, 96), (5, 5), (1, 1), [2, 2, 2, 2], 10),
    ((1, 8, 21, 37), (5, 5), (2, 1), [1, 2, 2, 2], 131),
    ((2, 3, 9, 20), (3, 5), (1, 1), [0, 0, 0, 0], 255),
]
WINDOW_IDS = ["cls-5x5", "5x5-rows-stride2-crop", "3x5-batch2-nopad"]


def _row_kernel_case(kind: str, geometry):
    from lwc.kernels import int8_depthwise as dw

    shape, (kh, kw), strides, pads, zp = geometry
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    w = rng.integers(-128, 128, (shape[1], 1, kh, kw)).astype(np.int8)
    ref = _reference(x, w, strides, pads, zp, (1, 1))
    make, pack = ((dw.depthwise_quad_kernel, dw.pack_weight_quads) if kind == "quad"
                  else (dw.depthwise_window_kernel, dw.pack_weight_windows))
    return x, pack(w[:, 0]), ref, make(shape, (kh, kw), ref.shape, strides, pads, zp)


@pytest.mark.parametrize("kind, geometry", [("quad", g) for g in QUAD_GEOMETRIES]
                         + [("window", g) for g in WINDOW_GEOMETRIES], ids=QUAD_IDS + WINDOW_IDS)
def test_vnni_row_kernels_fixed_schedule_is_tensorized_and_exact(kind, geometry):
    """The row-quad and row-window kernels as schedule_fixed schedules them for a VNNI CPU:
    one parallel loop (plane, quads and taps per channel), every tap one vpdpbusd on
    interleaved or permuted bytes; bit-exact against the numpy integer conv where the host
    has VNNI."""
    from lwc.targets import resolve

    x, packed, ref, func = _row_kernel_case(kind, geometry)
    vnni = resolve(VNNI_TARGET)
    mod = _fixed_schedule(func, vnni)
    text = mod.script()
    assert text.count("T.parallel") == 1 and "llvm.x86.avx512.vpdpbusd.512" in text
    assert "T.Shuffle" in text  # the row interleave, or the window's byte permute
    lib = tvm.compile(mod, target=vnni.tvm_target())
    if not _host_has_vnni():
        pytest.skip("built for VNNI; this host has no VNNI to run it")
    out = tvm.runtime.tensor(np.zeros(ref.shape, np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(packed), out)
    np.testing.assert_array_equal(out.numpy(), ref)


def test_row_kernels_taken_on_vnni_only():
    """VNNI: 5 kernel columns take the row-window kernel; otherwise 32 output rows or more
    the row-quad kernel; the widening kernel elsewhere and on every other CPU."""
    from lwc.kernels.int8_conv2d import SDOT, VNNI
    from lwc.kernels.int8_depthwise import QUAD_RULE, row_windows

    tall = LowerQdqConv2d()(import_model(conv_model(hw=40)).mod)
    for dot, quads in ((VNNI, 1), (SDOT, 0), (None, 0)):
        p = Int8DepthwiseConv2d(dot)
        [kernel] = _kernels(p(tall))
        assert p.lowered == 1 and p.quad_rows == quads
        assert (f'"schedule_rule": "{QUAD_RULE}"' in kernel.script()) == bool(quads)
    p = Int8DepthwiseConv2d(VNNI)
    p(_lowered(hw=16))  # 16 output rows: the widening kernel
    assert p.lowered == 1 and p.quad_rows == 0 and p.row_windows == 0
    assert row_windows(VNNI, (2, 1), (1, 1), (5, 5)) and row_windows(VNNI, (1, 1), (1, 1), (3, 5))
    assert not row_windows(VNNI, (1, 2), (1, 1), (5, 5)) and not row_windows(VNNI, (1, 1), (1, 1), (3, 3))
    assert not row_windows(SDOT, (1, 1), (1, 1), (5, 5)) and not row_windows(None, (1, 1), (1, 1), (5, 5))


@pytest.mark.parametrize("k, hw, kind", [(3, 40, "depthwise_row_quads"), (5, 20, "depthwise_row_windows")])
def test_row_kernels_compile_matches_onnxruntime_and_the_widening_kernel(k, hw, kind):
    """A QDQ depthwise conv compiled for the host (no tuning records): on a VNNI host the
    row-quad kernel (3x3 at 40x40) or the row-window kernel (5x5), bit-equal to the build
    with the pass disabled (TOPI's conv) and within one output step of onnxruntime."""
    from lwc import driver

    model = conv_model(hw=hw, x_zp=3, k=k, pads=k // 2)
    fast = driver.compile(model, "host", use_tuning_logs=False)
    assert fast.quantization["lowering"]["Int8DepthwiseConv2d"] == 1
    assert fast.quantization["lowering"][kind] == int(_host_has_vnni())
    plain = driver.compile(model, "host", use_tuning_logs=False, disabled_passes=("Int8DepthwiseConv2d",))
    rng = np.random.default_rng(4)
    for _ in range(2):
        x = rng.uniform(-2.7, 2.7, (1, 8, hw, hw)).astype(np.float32)
        got = fast.run({"x": x})[0]
        np.testing.assert_array_equal(got, plain.run({"x": x})[0])
        assert np.abs(got - ort_run(model, {"x": x})[0]).max() <= 0.05 + 1e-6  # one output step
