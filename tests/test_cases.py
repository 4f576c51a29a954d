"""Field cases F1-F5 (shared/cases/README.md), each with its right value.

F6 (the tvm-ffi pin and a tiny real tuning run) lives with the tuning tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lwc.frontend
from lwc import artifact, driver, tvm_compat
from lwc.errors import LwcError
from lwc.targets import preset_names, resolve

EM_AARCH64 = 183
EM_X86_64 = 62
ATOL = {"F1": 1e-5, "F5": 1e-4}


def _matmul_model(x_shape=(2, 64)) -> onnx.ModelProto:
    """Y = X @ W with X float32 ``x_shape`` and W a float32 [64, 64] initializer."""
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"], name="matmul")],
        "matmul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [x_shape[0], 64])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ort(model_path: Path, feed: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    endian = "<" if header[5] == 1 else ">"
    return struct.unpack(endian + "H", header[18:20])[0]


def _lwc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lwc", *args],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single ``lwc: error:`` line of a failed CLI run (progress lines aside)."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("lwc: error: ")]
    others = [
        ln for ln in proc.stderr.splitlines()
        if ln.strip() and not ln.startswith(("lwc: error: ", "lwc: compiling "))
    ]
    assert len(errors) == 1 and not others, proc.stderr
    return errors[0]


# --------------------------------------------------------------------------- F1


def _save_with_external_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(
        _matmul_model(), str(path),
        save_as_external_data=True, all_tensors_to_one_file=True,
        location="w.bin", size_threshold=0,
    )
    assert (folder / "w.bin").is_file()
    return path


def _set_external_location(model_path: Path, location: str) -> None:
    """Rewrite every external-data location in the model file (no data is written)."""
    model = onnx.load(str(model_path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    model_path.write_bytes(model.SerializeToString())


def test_f1_external_data_compiles_from_another_directory(tmp_path, monkeypatch):
    model_path = _save_with_external_data(tmp_path / "model_dir")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = driver.compile(model_path, "host")
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    (got,) = result.run({"X": x})

    (want,) = _ort(model_path, {"X": x})
    w = numpy_helper.to_array(_matmul_model().graph.initializer[0])
    np.testing.assert_allclose(got, want, atol=ATOL["F1"], rtol=0)
    np.testing.assert_allclose(got, x @ w, atol=ATOL["F1"], rtol=1e-5)
    assert list(elsewhere.iterdir()) == []


def test_f1_cli_from_another_directory(tmp_path):
    model_path = _save_with_external_data(tmp_path / "model_dir")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out" / "m.so"
    proc = _lwc("compile", str(model_path), "-q", "-o", str(out), cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    proc = _lwc("verify", str(model_path), str(out), "--atol", "1e-5", "--rtol", "0", cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout


def test_f1_missing_external_file_is_refused(tmp_path, monkeypatch):
    model_path = _save_with_external_data(tmp_path / "model_dir")
    (model_path.parent / "w.bin").unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LwcError) as info:
        driver.compile(model_path, "host")
    message = str(info.value)
    assert "w.bin" in message and "not found" in message
    assert "\n" not in message


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../w.bin"])
def test_f1_escaping_external_location_is_refused(tmp_path, monkeypatch, location):
    model_path = _save_with_external_data(tmp_path / "a" / "b" / "model_dir")
    _set_external_location(model_path, location)
    monkeypatch.chdir(model_path.parent)
    with pytest.raises(LwcError) as info:
        driver.compile(model_path, "host")
    message = str(info.value)
    assert location in message and "outside the model's folder" in message
    assert "\n" not in message


def test_f1_symlink_out_of_the_model_folder_is_refused(tmp_path):
    model_path = _save_with_external_data(tmp_path / "model_dir")
    secret = tmp_path / "secret.bin"
    (model_path.parent / "w.bin").rename(secret)
    (model_path.parent / "w.bin").symlink_to(secret)
    with pytest.raises(LwcError, match="outside the model's folder"):
        driver.compile(model_path, "host")


# --------------------------------------------------------------------------- F2


@pytest.fixture(scope="module")
def matmul_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("matmul") / "matmul.onnx"
    onnx.save(_matmul_model(), str(path))
    return path


def test_f2_arm64_export_is_aarch64_elf(matmul_path, tmp_path):
    if not driver.shutil.which("aarch64-linux-gnu-g++"):
        pytest.skip("aarch64-linux-gnu-g++ not installed (apt-get install g++-aarch64-linux-gnu)")
    result = driver.compile(matmul_path, "arm64")
    assert result.cross_compiler == "aarch64-linux-gnu-g++"
    so = result.export(tmp_path / "m.so")
    assert _elf_machine(so) == EM_AARCH64
    manifest = json.loads(so.with_suffix(".json").read_text())
    assert manifest["target"]["arch"] == "aarch64"
    assert manifest["target"]["cross_compiler"] == "aarch64-linux-gnu-g++"


def test_f2_host_export_is_native_elf(matmul_path, tmp_path):
    so = driver.compile(matmul_path, "host").export(tmp_path / "m.so")
    want = {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}.get(os.uname().machine)
    if want is None:
        pytest.skip(f"no e_machine pinned for {os.uname().machine}")
    assert _elf_machine(so) == want


def _forbid_import(monkeypatch):
    """Make any import work fail loudly: the compiler check must come first."""

    def fail(*args, **kwargs):
        raise AssertionError("import_model ran before the cross-compiler check")

    import lwc.prepare

    monkeypatch.setattr(lwc.frontend, "import_model", fail)
    monkeypatch.setattr(lwc.prepare, "import_model", fail)  # the prepare stage's import


def _assert_missing_compiler_message(message: str, compiler: str) -> None:
    assert compiler in message
    assert "apt-get install g++-aarch64-linux-gnu" in message
    assert "--cross-compiler" in message
    assert "\n" not in message


def test_f2_missing_cross_compiler_override(tmp_path, monkeypatch):
    _forbid_import(monkeypatch)
    # The model need not even exist: nothing is read before the check.
    with pytest.raises(LwcError) as info:
        driver.compile(
            tmp_path / "huge_model_never_read.onnx", "arm64",
            cross_compiler="aarch64-nonexistent-g++",
        )
    _assert_missing_compiler_message(str(info.value), "aarch64-nonexistent-g++")


def test_f2_cross_compiler_not_on_path(tmp_path, monkeypatch, matmul_path):
    _forbid_import(monkeypatch)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    assert driver.shutil.which("aarch64-linux-gnu-g++") is None
    for preset in ("arm64", "rpi4", "rpi5", "jetson-orin-cpu"):
        with pytest.raises(LwcError) as info:
            driver.compile(matmul_path, preset)
        _assert_missing_compiler_message(str(info.value), "aarch64-linux-gnu-g++")


def test_f2_cli_cross_compiler_not_on_path(tmp_path, matmul_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "lwc", "compile", str(matmul_path), "-t", "arm64",
         "-o", str(out / "m.so")],
        capture_output=True, text=True, env={**os.environ, "PATH": str(empty_bin)}, timeout=300,
    )
    line = _assert_one_line_error(proc)
    assert proc.returncode == 2
    _assert_missing_compiler_message(line, "aarch64-linux-gnu-g++")
    assert not out.exists() or list(out.iterdir()) == []


def test_f2_host_gxx_for_arm64_is_refused_before_work(matmul_path, tmp_path, monkeypatch):
    """The original failure (host g++ linking aarch64 objects: "file in wrong format") is
    caught up front from ``g++ -dumpmachine``, before import and lowering."""

    def must_not_import(*args, **kwargs):
        raise AssertionError("import ran before the compiler check")

    import lwc.prepare

    monkeypatch.setattr(lwc.prepare, "import_model", must_not_import)
    with pytest.raises(LwcError) as info:
        driver.compile(matmul_path, "arm64", cross_compiler="g++")
    message = str(info.value)
    assert "x86_64" in message and "aarch64" in message and "--cross-compiler" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- F3


@pytest.mark.parametrize(
    "spec, preset",
    [
        ("llvm -mtriple=aarch64-linux-gnu -mattr=+neon", "arm64"),
        ("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72 -mattr=+neon", "rpi4"),
        ("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a76 -mattr=+neon,+dotprod,+fullfp16", "rpi5"),
        ('{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}', "arm64"),
    ],
)
def test_f3_old_style_string_means_the_preset(spec, preset):
    got = resolve(spec)
    want = resolve(preset)
    assert str(got.tvm_target()) == str(want.tvm_target())
    assert got.name == preset
    assert got.features == want.features
    assert got.cross_compiler == want.cross_compiler


def test_f3_old_style_arm64_string_compiles(matmul_path, tmp_path):
    if not driver.shutil.which("aarch64-linux-gnu-g++"):
        pytest.skip("aarch64-linux-gnu-g++ not installed")
    result = driver.compile(matmul_path, "llvm -mtriple=aarch64-linux-gnu -mattr=+neon")
    assert result.preset.name == "arm64"
    assert _elf_machine(result.export(tmp_path / "m.so")) == EM_AARCH64


def test_f3_old_style_cuda_string():
    preset = resolve("cuda -arch=sm_87")
    target = preset.tvm_target()
    assert target.kind.name == "cuda"
    assert str(target.attrs["arch"]) == "sm_87"
    assert preset.is_gpu and preset.has("cuda")
    assert target.host is not None and target.host.kind.name == "llvm"


def test_f3_cuda_without_arch_is_explained():
    with pytest.raises(LwcError, match="sm_87"):
        resolve('{"kind": "cuda"}')


@pytest.mark.parametrize("name", ["raspberrypi", "rpi", "jetson_orin", "arm"])
def test_f3_unknown_name_lists_the_presets(name):
    with pytest.raises(LwcError) as info:
        resolve(name)
    message = str(info.value)
    assert repr(name) in message
    for preset in preset_names():
        assert preset in message


def test_f3_unknown_cpu_is_refused():
    """TVM only logs a warning for an unknown mcpu and compiles for generic."""
    with pytest.raises(LwcError, match="'cortex-z99'"):
        resolve("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-z99")


# --------------------------------------------------------------------------- F4


@pytest.fixture(scope="module")
def host_artifact(matmul_path, tmp_path_factory) -> Path:
    return driver.compile(matmul_path, "host").export(tmp_path_factory.mktemp("f4") / "m.so")


def _mismatched_copy(host_artifact: Path, folder: Path, package: str, version: str) -> Path:
    so = folder / host_artifact.name
    so.write_bytes(host_artifact.read_bytes())
    manifest = json.loads(host_artifact.with_suffix(".json").read_text())
    manifest["versions"][package] = version
    so.with_suffix(".json").write_text(json.dumps(manifest))
    return so


def test_f4_manifest_records_versions_and_target(host_artifact):
    manifest = json.loads(host_artifact.with_suffix(".json").read_text())
    for package in ("lwc", "apache-tvm", "apache-tvm-ffi"):
        assert manifest["versions"][package] == tvm_compat.versions()[package]
    assert manifest["target"]["preset"] == "host"
    assert manifest["target"]["tvm"]["kind"] == "llvm"
    artifact.load(host_artifact)  # matching versions load


@pytest.mark.parametrize(
    "package, version", [("apache-tvm-ffi", "0.1.15.post2"), ("apache-tvm", "0.26.0")]
)
def test_f4_loader_refuses_mismatch(host_artifact, tmp_path, package, version):
    so = _mismatched_copy(host_artifact, tmp_path, package, version)
    with pytest.raises(LwcError) as info:
        artifact.load(so)
    message = str(info.value)
    assert package in message and version in message
    assert tvm_compat.versions()[package] in message
    assert "\n" not in message


def test_f4_cli_run_and_verify_refuse_mismatch(host_artifact, matmul_path, tmp_path):
    so = _mismatched_copy(host_artifact, tmp_path, "apache-tvm-ffi", "0.1.15.post2")
    out = tmp_path / "outputs"
    for args in (["run", str(so), "-o", str(out)], ["verify", str(matmul_path), str(so)]):
        proc = _lwc(*args)
        line = _assert_one_line_error(proc)
        assert proc.returncode == 2
        assert "apache-tvm-ffi" in line and "0.1.15.post2" in line
    assert not out.exists()


def test_f4_manifest_without_versions_is_refused(host_artifact, tmp_path):
    so = _mismatched_copy(host_artifact, tmp_path, "apache-tvm-ffi", "x")
    manifest = json.loads(so.with_suffix(".json").read_text())
    del manifest["versions"]
    so.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(LwcError, match="apache-tvm"):
        artifact.load(so)


# --------------------------------------------------------------------------- F5


def _rapidocr_models() -> Path:
    # The package's __init__ imports cv2, which the --no-deps install lacks: find, not import.
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("rapidocr-onnxruntime not installed (pip install --no-deps rapidocr-onnxruntime)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


PP_OCR = {
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192]),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320]),
}


@pytest.mark.slow
@pytest.mark.parametrize("which", sorted(PP_OCR))
def test_f5_pp_ocr_with_input_shapes_matches_onnxruntime(which, artifacts):
    """The session's compiled artifact (``lwc.driver.compile`` with the input shape, shared
    with tests/test_models.py) on another seeded input."""
    file, shape = PP_OCR[which]
    model_path = _rapidocr_models() / file
    loaded = artifact.load(artifacts.get(which, "host", {"x": shape}))
    assert [s["shape"] for s in loaded.inputs] == [list(shape)]
    x = np.random.default_rng(5).random(shape, dtype=np.float32) * 2 - 1
    got = loaded.run({"x": x})
    want = _ort(model_path, {"x": x})
    assert len(got) == len(want) == 1
    assert got[0].shape == want[0].shape
    np.testing.assert_allclose(got[0], want[0], atol=ATOL["F5"], rtol=0)


@pytest.mark.parametrize("which", sorted(PP_OCR))
def test_f5_without_input_shapes_names_the_dynamic_input(which, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("simplify ran for a model with dynamic inputs")

    monkeypatch.setattr(lwc.frontend, "simplify", fail)
    model_path = _rapidocr_models() / PP_OCR[which][0]
    with pytest.raises(LwcError) as info:
        driver.compile(model_path, "host")
    message = str(info.value)
    assert "'x'" in message and "dynamic" in message
    assert "--input-shape x:" in message
    assert "\n" not in message


def test_f5_cli_without_input_shapes(tmp_path):
    model_path = _rapidocr_models() / PP_OCR["cls"][0]
    proc = _lwc("compile", str(model_path), "-o", str(tmp_path / "cls.so"))
    line = _assert_one_line_error(proc)
    assert "'x'" in line and "--input-shape x:" in line
    assert list(tmp_path.iterdir()) == []
