"""PackInt8Conv2d: structural, negative, numerical (vs onnxruntime and the unpacked
integer conv), weight packing, the sdot variant's arithmetic, and that MetaSchedule's
design space really tensorizes the kernel (vpdpbusd on x86 VNNI, vpmaddwd on x86 AVX2, sdot on
aarch64)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from lwc.frontend import import_model
from lwc.passes._qdq import count_ops
from lwc.passes.lower_qdq_conv2d import LowerQdqConv2d
from lwc.kernels.int8_conv2d import (
    AVX2,
    SDOT,
    VNNI,
    conv_kernel,
    dot_product_for,
    pack_weight,
    pack_weight_pixels,
    pixel_conv_kernel,
    pixel_lanes,
)
from lwc.passes.pack_int8_conv2d import PackInt8Conv2d

from qdq_models import conv_model, ort_run


def _lowered(**kwargs):
    return LowerQdqConv2d()(import_model(conv_model(**kwargs)).mod)


def _packed_funcs(mod) -> list:
    return [f for gv, f in mod.functions.items() if gv.name_hint.startswith("int8_conv2d_packed")]


def test_structural_dense_conv_becomes_one_packed_kernel():
    mod = _lowered(groups=1, hw=12)  # output width 12: channel lanes
    p = PackInt8Conv2d(VNNI)
    out = p(mod)
    assert p.lowered == 1 and not p.declined
    assert count_ops(mod, "relax.nn.conv2d") == 1 and count_ops(out, "relax.nn.conv2d") == 0
    assert count_ops(out, "relax.nn.pad") == 0  # the zero-point padding went into the im2col
    [kernel] = _packed_funcs(out)
    text = kernel.script()
    assert '"schedule_rule": "lwc_int8_dot_16x4"' in text
    assert '"meta_schedule.inline_rule": "disable"' in text
    # a 3x3 conv reads a padded NHWC copy of its input (implicit GEMM), never an im2col
    assert 'T.sblock("nhwc")' in text and 'T.sblock("im2col")' not in text


def test_structural_1x1_conv_keeps_its_im2col():
    """A 1x1 conv's im2col is its input in NHWC (subsampled by the stride): kept, so its
    workload (and the tuning records filed under it) did not change with the implicit GEMM."""
    func = conv_kernel((1, 16, 12, 16), (32, 16, 1, 1), (1, 32, 6, 8), (2, 2), (1, 1), [0] * 4, 0, VNNI)
    text = func.script()
    assert 'T.sblock("im2col")' in text and 'T.sblock("nhwc")' not in text


def test_structural_pixel_lanes_for_stride_1_and_widths_of_16_on_vnni_only():
    """The pixel-lane kernel (16 output pixels per vpdpbusd) takes stride-1 convs whose
    output width is a multiple of 16, on VNNI; the rest keep the channel-lane kernel, so
    resnet50's convs (widths 56, 28, 14, 7) and their tuning records are unchanged."""
    assert pixel_lanes(VNNI, (1, 24, 160, 160), (1, 1))
    assert not pixel_lanes(VNNI, (1, 24, 160, 160), (2, 2))  # lanes would read every 2nd pixel
    assert not pixel_lanes(VNNI, (1, 64, 56, 56), (1, 1))  # 8 of 64 lanes wasted
    assert not pixel_lanes(AVX2, (1, 24, 160, 160), (1, 1)) and not pixel_lanes(SDOT, (1, 24, 160, 160), (1, 1))
    mod = _lowered(groups=1, hw=16)  # 3x3, pad 1, 16x16 output
    p = PackInt8Conv2d(VNNI)
    out = p(mod)
    assert p.lowered == 1 and p.pixel_lanes == 1
    [kernel] = _packed_funcs(out)
    text = kernel.script()
    assert '"schedule_rule": "lwc_int8_dot_pixels_16x4"' in text and 'T.sblock("nchw4c")' in text
    assert count_ops(out, "relax.nn.pad") == 0  # the zero point went into the activation block
    p = PackInt8Conv2d(AVX2)
    p(mod)
    assert p.lowered == 1 and p.pixel_lanes == 0


@pytest.mark.parametrize(
    "case",
    [((2, 5, 9, 16), (7, 5, 3, 3), (1, 1), [1, 1, 1, 1], 131),  # C, O not multiples of 4/16
     ((1, 16, 4, 32), (32, 16, 1, 1), (1, 1), [0, 0, 0, 0], 3),  # 1x1
     ((1, 6, 12, 16), (3, 6, 3, 3), (2, 2), [2, 2, 2, 2], 0),  # dilated
     ((1, 3, 7, 17), (4, 3, 2, 2), (1, 1), [1, 0, 0, 0], 200)],  # asymmetric pads, 2x2
    ids=["3x3", "1x1", "dilated", "asymmetric"],
)
def test_pixel_kernel_is_the_exact_integer_conv(case):
    """The pixel-lane kernel as plain TIR (no tensorization) equals the int32 conv2d of
    the zero-point-padded input (scipy-free reference: numpy sums over the taps)."""
    data_shape, weight_shape, dilation, pads, zp = case
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, data_shape).astype(np.uint8)
    w = rng.integers(-128, 128, weight_shape).astype(np.int8)
    ref = _reference_conv(x, w, 1, pads, zp, dilation[0])
    assert ref.shape[3] % 16 == 0
    func = pixel_conv_kernel(x.shape, w.shape, ref.shape, dilation, pads, zp)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(ref.shape, np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(pack_weight_pixels(w)), out)
    np.testing.assert_array_equal(out.numpy(), ref)


def test_pack_weight_pixels_layout():
    w = np.random.default_rng(0).integers(-127, 128, (6, 5, 3, 3)).astype(np.int8)
    packed = pack_weight_pixels(w)
    assert packed.shape == (6, 3, 3, 8)  # C padded to 8
    np.testing.assert_array_equal(packed[:, :, :, :5], w.transpose(0, 2, 3, 1))
    assert not packed[:, :, :, 5:].any()


def test_negative_depthwise_is_declined_with_its_reason():
    mod = _lowered()  # case Q1: depthwise
    p = PackInt8Conv2d(VNNI)
    out = p(mod)
    tvm.ir.assert_structural_equal(out, mod)
    assert p.lowered == 0 and "groups=8" in p.declined[0][1]


def test_negative_int8_data_is_declined():
    mod = _lowered(groups=1, x_zp=-7, x_dtype=np.int8, relu=False)
    p = PackInt8Conv2d(VNNI)
    tvm.ir.assert_structural_equal(p(mod), mod)
    assert "not uint8" in p.declined[0][1]


def test_dot_product_geometry_follows_the_preset_features():
    assert dot_product_for("x86_64", ("avx2", "avx512", "vnni")) == VNNI
    assert dot_product_for("x86_64", ("avx2", "avx512")) == AVX2  # Skylake-SP: vpdpbusd would fault
    assert dot_product_for("x86_64", ("avx2", "fma", "vnni")) == AVX2  # Alder Lake: AVX-VNNI, 256-bit only
    assert dot_product_for("x86_64", ("avx2", "fma")) == AVX2  # Zen 3: 16-bit vpmaddwd
    assert dot_product_for("x86_64", ("sse4",)) is None
    assert dot_product_for("aarch64", ("neon", "dotprod")) == SDOT
    assert dot_product_for("aarch64", ("neon",)) is None  # Cortex-A72: no dotprod


@pytest.mark.parametrize("dot", [VNNI, SDOT, AVX2], ids=["vnni", "sdot", "avx2"])
def test_pack_weight_layout(dot):
    w = np.random.default_rng(0).integers(-127, 128, (6, 3, 3, 3)).astype(np.int8)  # C=3, O=6
    packed = pack_weight(w, dot)
    lanes, width = dot.lanes, dot.width
    assert packed.shape == (-(-6 // lanes), 3, 3, -(-3 // width), lanes, width)
    for o in range(6):
        for c in range(3):
            for r in range(3):
                for q in range(3):
                    assert packed[o // lanes, r, q, c // width, o % lanes, c % width] == w[o, c, r, q]
    assert np.abs(packed.astype(np.int64)).sum() == np.abs(w.astype(np.int64)).sum()  # padding is zeros


def _reference_conv(x, w, stride, pads, pad_value, dilation=1):
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    n, c, h, wd = xp.shape
    o, _, kh, kw = w.shape
    oh, ow = (h - (kh - 1) * dilation - 1) // stride + 1, (wd - (kw - 1) * dilation - 1) // stride + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    for r in range(kh):
        for q in range(kw):
            y0, x0 = r * dilation, q * dilation
            patch = xp[:, :, y0:y0 + stride * oh:stride, x0:x0 + stride * ow:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, r, q].astype(np.int64))
    return out.astype(np.int32)


@pytest.mark.parametrize("dot", [VNNI, SDOT, AVX2], ids=["vnni", "sdot", "avx2"])
def test_kernel_is_the_exact_integer_conv(dot):
    """Every geometry (sdot shifts the activations to int8 and adds 128 * row sums back,
    AVX2 widens them to int16) gives the exact int32 conv2d, built as plain TIR for this
    machine."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 5, 9, 11)).astype(np.uint8)
    w = rng.integers(-127, 128, (7, 5, 3, 3)).astype(np.int8)
    stride, pads, zp = 2, [1, 0, 1, 2], 131
    ref = _reference_conv(x, w, stride, pads, zp)
    func = conv_kernel(x.shape, w.shape, ref.shape, (stride, stride), (1, 1), pads, zp, dot)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    args = [tvm.runtime.tensor(x), tvm.runtime.tensor(pack_weight(w, dot))]
    if dot.act_dtype == "int8":
        args.append(tvm.runtime.tensor(w.astype(np.int32).reshape(7, -1).sum(axis=1).astype(np.int32)))
    out = tvm.runtime.tensor(np.zeros(ref.shape, np.int32))
    lib["main"](*args, out)
    np.testing.assert_array_equal(out.numpy(), ref)


@pytest.mark.parametrize(
    "kwargs",
    [dict(groups=1), dict(groups=1, stride=2), dict(groups=1, channels=6, x_zp=17, pads=0)],
    ids=["3x3-pixel-lanes", "3x3-stride2", "K54-O6-nopad"],  # widths 16, 8, 14
)
def test_numerical_matches_onnxruntime_and_the_unpacked_conv(kwargs):
    from lwc import driver

    model = conv_model(**kwargs)
    packed = driver.compile(model, "host")
    if "PackInt8Conv2d" not in packed.passes:
        pytest.skip("this CPU has no int8 dot-product instruction lwc packs for")
    assert packed.quantization["lowering"]["PackInt8Conv2d"] == 1
    plain = driver.compile(model, "host", disabled_passes=("PackInt8Conv2d",))
    assert "PackInt8Conv2d" not in plain.passes
    rng = np.random.default_rng(1)
    channels = kwargs.get("channels", 8)
    for _ in range(3):
        x = rng.uniform(-2.7, 2.7, (1, channels, 16, 16)).astype(np.float32)
        got = packed.run({"x": x})[0]
        np.testing.assert_array_equal(got, plain.run({"x": x})[0])
        assert np.abs(got - ort_run(model, {"x": x})[0]).max() <= 0.05 + 1e-6  # one output step


def _x86_preset(mcpu: str = "znver4", features=("avx2", "fma", "avx512", "vnni")):
    """An x86-64 preset (default Zen 4, AVX512-VNNI): code for it compiles on any x86 host."""
    from lwc.targets import Preset

    return Preset(name=mcpu, description=mcpu, target={"kind": "llvm", "mtriple": "x86_64-linux-gnu",
                  "mcpu": mcpu, "num-cores": 2}, cpu=mcpu, features=features, cross_compiler="g++")


#: (weight shape, pads) of the kernels the design-space tests schedule: a 1x1 conv (im2col)
#: and a 3x3 conv (implicit GEMM on a padded NHWC copy).
KERNELS = [((32, 16, 1, 1), [0, 0, 0, 0]), ((32, 16, 3, 3), [1, 1, 1, 1])]


def _scheduled(preset, func, seed: int, count: int) -> list[tuple[str, object]]:
    """``func`` after each of MetaSchedule's ``count`` design spaces for ``preset`` (tiles
    sampled with ``seed``) and its postprocessors: (script, module)."""
    from lwc.targets import resolve
    from lwc.tuning.apply import space_generator
    from lwc.tuning.database import fast_tensor_intrin

    preset = resolve(preset) if isinstance(preset, str) else preset
    fast_tensor_intrin(preset.arch)
    from tvm.s_tir import meta_schedule as ms

    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    ctx = ms.TuneContext(mod=mod, target=preset.tvm_target(), space_generator=space_generator(ms, preset),
                         search_strategy="evolutionary", task_name="packed", rand_state=seed)
    spaces = ctx.generate_design_space()
    assert len(spaces) == count
    for sch in spaces:
        for postproc in ctx.space_generator.postprocs:
            assert postproc.apply(sch)
    return [(sch.mod.script(), sch.mod) for sch in spaces]


def _design_spaces(preset, seed: int, kernel=KERNELS[0]) -> list[tuple[str, object]]:
    """The packed conv kernel after MetaSchedule's design spaces (four: the activation
    block as the postprocessor schedules it or by input rows, times the matmul with its
    reduction innermost or register-blocked) and postprocessors: (script, module)."""
    from lwc.targets import resolve

    preset = resolve(preset) if isinstance(preset, str) else preset
    weight_shape, pads = kernel
    func = conv_kernel((1, 16, 6, 8), weight_shape, (1, 32, 6, 8), (1, 1), (1, 1), pads, 0,
                       dot_product_for(preset.arch, preset.features))
    return _scheduled(preset, func, seed, 4)


def _spaces_build(preset, seeds: int, intrinsic: str, run: bool, never: str | None = None) -> None:
    """For a 1x1 and a 3x3 kernel, every design space of ``seeds`` seeds calls ``intrinsic``
    (never ``never``) and builds for ``preset``; with ``run`` each is also run on this host
    and must equal the reference integer conv bit for bit."""
    dot = dot_product_for(preset.arch, preset.features)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 16, 6, 8)).astype(np.uint8)
    for kernel in KERNELS:
        weight_shape, pads = kernel
        w = rng.integers(-128, 128, weight_shape).astype(np.int8)
        ref = _reference_conv(x, w, 1, pads, 0)
        for seed in range(seeds):  # sampled tiles and compute locations differ by seed
            for text, mod in _design_spaces(preset, seed, kernel):
                assert intrinsic in text
                assert never is None or never not in text
                lib = tvm.compile(mod, target=preset.tvm_target())  # LLVM 22 verifies intrinsic signatures
                if run:
                    out = tvm.runtime.tensor(np.zeros(ref.shape, np.int32))
                    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(pack_weight(w, dot)), out)
                    np.testing.assert_array_equal(out.numpy(), ref)


def test_design_space_tensorizes_with_vnni_and_builds():
    """Every sampled space uses vpdpbusd and builds; on a VNNI host it is the exact conv."""
    from lwc.targets import resolve

    znver4 = _x86_preset()
    assert dot_product_for(znver4.arch, znver4.features) == VNNI
    _spaces_build(znver4, 4, "llvm.x86.avx512.vpdpbusd.512", run="vnni" in resolve("host").features)


def test_pixel_design_space_tensorizes_with_vnni_and_is_exact():
    """The pixel-lane kernel's two design spaces (matmul reduction innermost or
    register-blocked; one activation schedule) call vpdpbusd with 64 activation bytes and
    build; on a VNNI host every sampled schedule is the exact conv."""
    from lwc.targets import resolve

    preset = _x86_preset()
    run = "vnni" in resolve("host").features
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 16, 6, 16)).astype(np.uint8)
    for weight_shape, pads in KERNELS:
        w = rng.integers(-128, 128, weight_shape).astype(np.int8)
        ref = _reference_conv(x, w, 1, pads, 7)
        func = pixel_conv_kernel(x.shape, weight_shape, ref.shape, (1, 1), pads, 7)
        for seed in range(4):
            for text, mod in _scheduled(preset, func, seed, 2):
                assert "llvm.x86.avx512.vpdpbusd.512" in text
                # the weights are broadcast, the 64 activation bytes loaded as they lie
                assert 'T.reinterpret("int8x64", T.Broadcast(' in text
                assert "A[T.int64(0), T.Ramp(T.int64(0), T.int64(1), 64)]" in text
                lib = tvm.compile(mod, target=preset.tvm_target())
                if run:
                    out = tvm.runtime.tensor(np.zeros(ref.shape, np.int32))
                    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(pack_weight_pixels(w)), out)
                    np.testing.assert_array_equal(out.numpy(), ref)


def test_design_space_tensorizes_with_vpmaddwd_on_avx2_and_is_exact():
    """x86-64-v3 (AVX2, no VNNI): lwc's tuning adds RewriteTensorize, every sampled
    schedule uses vpmaddwd, and the built kernel is the exact integer conv on this host."""
    x86 = _x86_preset("x86-64-v3", ("avx2", "fma"))
    assert dot_product_for(x86.arch, x86.features) == AVX2
    _spaces_build(x86, 3, "llvm.x86.avx2.pmadd.wd", run=True, never="pmadd.ub.sw")


def test_design_space_tensorizes_with_sdot_for_arm_dotprod():
    for kernel in KERNELS:
        for seed in range(3):
            for text, _ in _design_spaces("rpi5", seed, kernel):
                assert "llvm.aarch64.neon.sdot" in text


def test_compile_says_when_int8_may_be_slower_than_fp32():
    """Cortex-A72 (rpi4) has no dotprod and x86-64-v3 no VNNI (it packs for 16-bit
    vpmaddwd): the compile notes say so; Cortex-A76 (rpi5) packs its dense convs for sdot
    and gets no such note."""
    from lwc import driver
    from lwc.quantize import speed_notes
    from lwc.targets import resolve

    assert "has no dotprod" in speed_notes(resolve("rpi4"))[0]
    assert "has no VNNI: dense int8 convs run on 16-bit vpmaddwd" in speed_notes(resolve("x86_64"))[0]
    assert speed_notes(_x86_preset()) == []  # znver4: VNNI
    assert "has neither VNNI nor AVX2: int8 kernels widen" in speed_notes(_x86_preset("x86-64", ("sse4",)))[0]
    assert speed_notes(resolve("rpi5")) == []
    slow = driver.compile(conv_model(groups=1), "rpi4")
    assert any("rpi4 (cortex-a72) has no dotprod" in n for n in slow.notes)
    assert "PackInt8Conv2d" not in slow.passes
    fast = driver.compile(conv_model(groups=1), "rpi5")
    assert not any("has no" in n for n in fast.notes)
    assert fast.quantization["lowering"]["PackInt8Conv2d"] == 1
    assert "1 int8 conv2d on the CPU's dot-product instruction (PackInt8Conv2d); 0 not" in fast.notes
