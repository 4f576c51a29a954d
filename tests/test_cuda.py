"""CUDA targets: Jetson builds on a GPU-less x86 machine, the structural check, fp16.

Compiling is slow on CI's 2 cores (cls ~65 s with nvcc, det/rec minutes), so the small cls
model is compiled for every Jetson preset and det/rec for jetson-orin only. Presets whose
GPU the local nvcc cannot target (CUDA 13 dropped sm_53/sm_62/sm_72) must fail early with
the message that names a toolkit that can. Tests that run kernels are marked ``gpu`` and
skip where there is no GPU.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
import struct
from pathlib import Path

import numpy as np
import pytest

from lwc import cuda, driver
from lwc.errors import LwcError
from lwc.targets import resolve

JETSONS = ["jetson-nano", "jetson-tx2", "jetson-xavier", "jetson-orin", "jetson-orin-nano"]
MODELS = {
    "det": ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 640, 640]),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320]),
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192]),
}


def _model(key: str) -> tuple[str, dict]:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        pytest.skip("rapidocr-onnxruntime (PP-OCR models) is not installed")
    name, shape = MODELS[key]
    return str(Path(spec.origin).parent / "models" / name), {"x": shape}


TOOLKIT = cuda.find_toolkit()
NVRTC = cuda.nvrtc_toolkit()
needs_nvcc = pytest.mark.skipif(TOOLKIT is None and NVRTC is None,
                                reason="no nvcc and no CUDA 12 NVRTC (pip install 'lwc[cuda]') here")
needs_gpu = pytest.mark.skipif(not cuda.gpu_available(), reason="no CUDA GPU here (nvidia-smi / tvm.cuda().exist)")


# --------------------------------------------------------------------------- toolkit checks


def test_missing_nvcc_is_one_clear_error(monkeypatch, tmp_path):
    for var in ("LWC_NVCC", "CUDA_PATH", "CUDA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(cuda, "_nvcc_candidates", lambda explicit: [])
    monkeypatch.setenv("LWC_NVRTC", "0")
    with pytest.raises(LwcError, match=r"no CUDA compiler \(nvcc\) for jetson-orin \(sm_87\).*install"):
        cuda.check_toolkit(resolve("jetson-orin"))


def test_explicit_nvcc_that_does_not_exist():
    with pytest.raises(LwcError, match="--nvcc '/nonexistent/nvcc' not found"):
        cuda.check_toolkit(resolve("jetson-orin"), "/nonexistent/nvcc")


def test_fp16_only_for_cuda_targets():
    with pytest.raises(LwcError, match="--precision fp16 is for cuda targets"):
        cuda.prepare(resolve("arm64"), "fp16")
    with pytest.raises(LwcError, match="choose one of fp32, fp16"):
        cuda.prepare(resolve("jetson-orin"), "int4")
    assert cuda.prepare(resolve("arm64")) is None


@pytest.mark.skipif(TOOLKIT is None, reason="no nvcc on this machine")
@pytest.mark.parametrize("name", JETSONS)
def test_toolkit_supports_arch_or_says_which_does(name, monkeypatch):
    preset = resolve(name)
    arch = preset.target["arch"]
    chosen = cuda.check_toolkit(preset) if TOOLKIT.supports(arch) or NVRTC else None
    if TOOLKIT.supports(arch) and cuda.loads_on_board(TOOLKIT, preset):
        assert chosen.kind == "nvcc"
        return
    if NVRTC is not None:
        # CUDA 13's nvcc lacks sm_53/62/72, and its sm_87 code needs a CUDA 13 driver that
        # JetPack 6 (CUDA 12.6) lacks: NVRTC 12 from pip takes over
        assert chosen.kind == "nvrtc"
    if TOOLKIT.supports(arch):
        return
    monkeypatch.setenv("LWC_NVRTC", "0")
    with pytest.raises(LwcError, match=rf"cannot compile for {arch} \({name}\).*Install CUDA 12.*lwc\[cuda\]"):
        cuda.check_toolkit(preset)


def _toolkit(kind: str, version: tuple[int, int]) -> "cuda.Toolkit":
    return cuda.Toolkit(nvcc=f"/opt/{kind}", version=version, codes=frozenset({"sm_53", "sm_87"}), kind=kind)


def test_toolkit_newer_than_the_board_is_avoided_or_noted(monkeypatch):
    """CUDA 13 nvcc + CUDA 12 NVRTC: Orin (JetPack 6, CUDA 12.6) gets NVRTC 12 so its stock
    driver loads the code; with only the newer toolkit the compile output says what the
    board needs; the local ``cuda`` GPU has no such constraint."""
    monkeypatch.setattr(cuda, "find_toolkit", lambda nvcc=None: _toolkit("nvcc", (13, 0)))
    monkeypatch.setattr(cuda, "nvrtc_toolkit", lambda: _toolkit("nvrtc", (12, 9)))
    orin = resolve("jetson-orin")
    assert cuda.check_toolkit(orin).kind == "nvrtc"
    assert cuda.CudaBuild(orin, cuda.check_toolkit(orin)).notes() == []
    nano = resolve("jetson-nano")  # JetPack 4.6: CUDA 10.2; both toolkits are too new
    build = cuda.CudaBuild(nano, cuda.check_toolkit(nano))
    assert build.toolkit.kind == "nvcc"
    (note,) = build.notes()
    assert "needs a CUDA 13.x driver" in note and "CUDA 10.2" in note and "--nvcc" in note
    assert build.describe()["loads_on_stock_board"] is False
    monkeypatch.setattr(cuda, "nvrtc_toolkit", lambda: None)  # only CUDA 13 nvcc
    build = cuda.CudaBuild(orin, cuda.check_toolkit(orin))
    assert build.toolkit.kind == "nvcc" and "CUDA 12.6" in build.notes()[0]
    assert cuda.loads_on_board(_toolkit("nvcc", (13, 0)), replace(orin, board_cuda=None))


@pytest.mark.skipif(NVRTC is None, reason="CUDA 12 NVRTC not installed (pip install 'lwc[cuda]')")
def test_nvrtc_fatbin_for_old_jetson_archs():
    source = 'extern "C" __global__ void __launch_bounds__(64) k(float* x) { x[threadIdx.x] *= 2.0f; }\n'
    for arch in ("sm_53", "sm_62", "sm_72"):
        fatbin = cuda.compile_device_code(source, NVRTC, arch)
        assert [str(i) for i in cuda._device_images(fatbin)] == [f"sass {arch} (fatbin)", f"ptx {arch} (fatbin)"]


# --------------------------------------------------------------------------- structural check helpers


def _fatbin(entries: list[tuple[int, int]]) -> bytes:
    body = b""
    for kind, sm in entries:
        elf = b"\x7fELF" + bytes(14) + struct.pack("<H", cuda.EM_CUDA) + bytes(44)
        payload = elf if kind == 2 else b".version 7.0\n.target sm_%d\n" % sm
        header = struct.pack("<HHIQIII", kind, 1, 64, len(payload), 0, len(payload), 0)
        header += struct.pack("<I", sm).ljust(64 - len(header), b"\0")
        body += header + payload
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_fatbin_entries_are_read():
    images = cuda._device_images(b"junk" + _fatbin([(2, 87), (1, 87)]))
    assert [str(i) for i in images] == ["sass sm_87 (fatbin)", "ptx sm_87 (fatbin)"]


def test_source_only_cuda_module_is_a_problem():
    report = cuda.StructuralReport("x.so", "aarch64", ["cuda"], cuda_format="cuda")
    cuda._check_device_code(report, "sm_87")
    assert not report.ok
    assert any("kernel source" in p for p in report.problems)


def test_recompile_library_bin_replaces_source():
    source = b'extern "C" __global__ void k() {}\n'
    fmap = struct.pack("<Q", 0)
    payload = cuda._lpstr(b"cuda") + fmap + cuda._lpstr(source)
    tree = struct.pack("<Q", 2) + struct.pack("<QQ", 0, 1) + struct.pack("<Q", 0)
    body = tree + cuda._lpstr(b"_lib") + cuda._lpstr(b"cuda") + cuda._lpstr(payload)
    blob = struct.pack("<Q", len(body)) + body
    seen = []
    out = cuda.recompile_library_bin(blob, lambda src: seen.append(src) or b"FATBIN")
    assert seen == [source.decode()]
    modules = cuda._unpack_library_bin(out, 0)
    assert [k for k, _ in modules] == ["_lib", "cuda"]
    assert modules[1][1] == cuda._lpstr(b"fatbin") + fmap + cuda._lpstr(b"FATBIN")


# --------------------------------------------------------------------------- real models


def _compile_and_check(key: str, target: str, tmp_path: Path, precision: str = "fp32"):
    path, shapes = _model(key)
    preset = resolve(target)
    arch = preset.target["arch"]
    if not (TOOLKIT and TOOLKIT.supports(arch)) and not (NVRTC and NVRTC.supports(arch)):
        with pytest.raises(LwcError, match=rf"cannot compile for {arch}"):
            driver.compile(path, preset, shapes, precision=precision)
        pytest.skip(f"CUDA {TOOLKIT.release if TOOLKIT else '(none)'}'s nvcc has no {arch} and CUDA 12 NVRTC is not "
                    "installed; the clear error was checked")
    result = driver.compile(path, preset, shapes, precision=precision)
    artifact = result.export(tmp_path / f"{key}-{target}.so")
    report = cuda.inspect_artifact(artifact, machine="aarch64", arch=arch)
    assert report.ok, report.problems
    assert report.cuda_format == "fatbin"
    assert {"sass", "ptx"} <= {i.kind for i in report.images if i.arch == arch}
    assert result.describe()["cuda"]["precision"] == precision
    return result


@pytest.mark.slow
@needs_nvcc
@pytest.mark.parametrize("target", JETSONS)
def test_cls_compiles_for_every_jetson(target, tmp_path):
    _compile_and_check("cls", target, tmp_path)


#: det and rec each on one end of the compiler routes (sm_87: NVRTC 12 / nvcc; sm_53: NVRTC 12
#: only): every board already compiles cls above, so a model's kernels and a board's flags are
#: each covered without all ten det/rec x board builds (~35 s each on 2 cores)
DET_REC_BOARDS = [("det", "jetson-orin"), ("rec", "jetson-nano")]


@pytest.mark.slow
@needs_nvcc
@pytest.mark.parametrize(("key", "target"), DET_REC_BOARDS)
def test_det_rec_compile_for_the_jetsons(key, target, tmp_path):
    _compile_and_check(key, target, tmp_path)


@pytest.mark.slow
@needs_nvcc
def test_cls_fp16_for_orin(tmp_path):
    _compile_and_check("cls", "jetson-orin", tmp_path, precision="fp16")


@pytest.mark.slow
def test_fp16_transform_is_accurate_on_the_cpu():
    """The fp16 Relax transform the CUDA path uses, built for the host CPU (LLVM emits fp16
    arithmetic), so its numerics are checked without a GPU: cls vs onnxruntime fp32."""
    import onnxruntime as ort

    from lwc import frontend, pipeline, tvm_compat

    path, shapes = _model("cls")
    host = resolve("host")
    imported = frontend.import_model(path, shapes)
    mod, _ = pipeline.run_lwc_passes(imported.mod, host, disabled=cuda.FP16_SKIPPED_PASSES)
    mod = cuda.to_mixed_precision(mod)
    assert "R.clip(" not in mod["main"].script()  # bounds rewritten as tensors
    vm = tvm_compat.virtual_machine(tvm_compat.build(mod, host.tvm_target()))
    x = np.random.default_rng(0).standard_normal(shapes["x"]).astype("float32")
    got = vm["main"](tvm_compat.tensor(x)).numpy()
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    cosine = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
    assert cosine >= 0.999 and np.abs(got - want).max() < 5e-3  # fp16: ~3 decimal digits


def test_mixed_precision_keeps_softmax_fp32():
    from tvm.script import ir as I
    from tvm.script import relax as R

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 8), "float32"), w: R.Tensor((8, 8), "float32")):
            with R.dataflow():
                y = R.matmul(x, w)
                z = R.nn.softmax(y)
                n = R.nn.layer_norm(z, R.const(np.ones(8, "float32")), R.const(np.zeros(8, "float32")), [1])
                R.output(n)
            return n

    text = cuda.to_mixed_precision(Mod).script()
    assert 'R.matmul(' in text and '"float16"' in text
    for op in ("softmax", "layer_norm"):
        line = next(ln for ln in text.splitlines() if f"R.nn.{op}(" in ln)
        assert "float16" not in line.split("=")[0], line


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@needs_gpu
def test_cls_on_local_gpu_matches_onnxruntime(tmp_path):
    from lwc.verify import verify

    path, shapes = _model("cls")
    result = driver.compile(path, "cuda", shapes)
    artifact = result.export(tmp_path / "cls-cuda.so")
    report = verify(path, str(artifact), atol=1e-3, rtol=1e-3)
    assert report["ok"], report["outputs"]


def test_verify_tolerance_follows_the_artifact_kind():
    """lwc verify's defaults: CPU 1e-4, CUDA fp32 1e-3 (issue 7), CUDA fp16 stated looser."""
    from lwc.verify import default_tolerance

    assert default_tolerance({"target": {}}) == (1e-4, 1e-4, "cpu")
    assert default_tolerance({"cuda": {"precision": "fp32"}}) == (1e-3, 1e-3, "cuda fp32")
    atol, rtol, which = default_tolerance({"cuda": {"precision": "fp16"}})
    assert which == "cuda fp16" and 1e-3 < atol <= 0.15 and rtol <= 0.05
