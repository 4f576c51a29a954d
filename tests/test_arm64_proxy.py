"""benchmarks/arm64_proxy.py: guest instruction counts under qemu-aarch64 are deterministic.

Counts instructions per inference of a tiny conv artifact twice under ``-cpu cortex-a76``
(lwc's runner, the qemu TCG plugin, no onnxruntime) and checks both counts are > 0 and agree
within 0.1 %. Skips when qemu-aarch64, gcc, the aarch64 cross toolchain or the plugin build is
missing (needs network on the first run for the aarch64 TVM runtime, like test_cross_runtime).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# ~10 M multiply-adds: large enough that the runners' own value-dependent work (printing the
# measured time with printf, ~1-2 k instructions that vary run to run) stays far below 0.1 %.
SHAPE = (1, 16, 48, 48)
OUT_SHAPE = (1, 32, 48, 48)


def _load_proxy():
    spec = importlib.util.spec_from_file_location(
        "arm64_proxy", ROOT / "benchmarks" / "arm64_proxy.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def proxy():
    for tool in ("qemu-aarch64", "gcc", "aarch64-linux-gnu-g++"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found (apt-get install qemu-user gcc g++-aarch64-linux-gnu)")
    mod = _load_proxy()
    if not mod.SYSROOT.is_dir():
        pytest.skip(f"aarch64 sysroot {mod.SYSROOT} missing")
    try:
        mod.plugin()
    except Exception as exc:  # noqa: BLE001 - any build failure means: cannot test here
        pytest.skip(f"cannot build the qemu instruction-count plugin: {exc}")
    return mod


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    import tvm
    from onnx import TensorProto, helper, numpy_helper
    from tvm.relax.frontend.onnx import from_onnx

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["y"]),
        ],
        "tiny_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(OUT_SHAPE))],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    mod = from_onnx(model, shape_dict={"x": list(SHAPE)}, keep_params_in_input=False)
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    path = tmp_path_factory.mktemp("arm64_proxy") / "tiny_conv.so"
    tvm.compile(mod, target=target).export_library(
        str(path), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++")
    )
    return path


def test_instruction_count_is_deterministic(proxy, artifact):
    x = np.random.default_rng(0).uniform(-1, 1, SHAPE).astype(np.float32)
    try:
        first = proxy.count_lwc(artifact, [("x", x)], "cortex-a76", timeout=120)
    except Exception as exc:
        if "pip download" in str(exc) or "cross compiler" in str(exc):
            pytest.skip(f"aarch64 TVM runtime unavailable: {exc}")
        raise
    second = proxy.count_lwc(artifact, [("x", x)], "cortex-a76", timeout=120)
    a, b = first["insns"], second["insns"]
    assert a > 1e6 and b > 1e6  # the conv alone is ~10 M multiply-adds
    assert abs(a - b) <= 1e-3 * max(a, b), (a, b)
    # the conv does its multiply-adds in floating point: some FP class must be non-zero
    assert (
        first["cls_fp_fmadd"] + first["cls_fmla"] + first["cls_fp_scalar"] + first["cls_simd_vec"]
        > 0
    )
    # and it computed the right thing
    (y,) = first["outputs"]
    assert y.shape == OUT_SHAPE and float(y.min()) >= 0.0


def test_kernel_counts_attribute_the_instructions_to_the_kernels(proxy, artifact):
    """``kernels``: per translated block counts mapped to the artifact's symbols add up to the
    total per inference, and the conv kernel is where nearly all of them are."""
    x = np.random.default_rng(0).uniform(-1, 1, SHAPE).astype(np.float32)
    try:
        total = proxy.count_lwc(artifact, [("x", x)], "cortex-a76", timeout=120)["insns"]
    except Exception as exc:
        if "pip download" in str(exc) or "cross compiler" in str(exc):
            pytest.skip(f"aarch64 TVM runtime unavailable: {exc}")
        raise
    kernels = proxy.kernel_counts(artifact, [("x", x)], "cortex-a76", timeout=120)
    assert abs(sum(kernels.values()) - total) <= 0.01 * total, (sum(kernels.values()), total)
    top, count = next(iter(kernels.items()))
    assert "conv2d" in top and count > 0.8 * total, kernels
