"""arm64: the scheduled conv kernel is NEON code (``fmla vN.4s`` in the exported .so) and
gives onnxruntime's numbers when run under qemu-aarch64 (lwc.cross_runtime)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from lwc import cross_runtime, tvm_compat
from lwc.schedules import CpuFacts, apply_rules
from lwc.targets import resolve
from onnx import helper
from schedules_support import TOL, fused_module, model, rand, run_ort

pytestmark = pytest.mark.skipif(
    not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("aarch64-linux-gnu-objdump")),
    reason="needs the aarch64 cross toolchain (apt-get install g++-aarch64-linux-gnu)",
)


def conv_relu(c_in=16, c_out=32, hw=(24, 32)):
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = {"W": rand(c_out, c_in, 3, 3, seed=1), "B": rand(c_out, seed=2)}
    return model(nodes, {"x": [1, c_in, *hw]}, {"y": [1, c_out, *hw]}, inits)


@pytest.fixture(scope="module")
def arm64_artifact(tmp_path_factory):
    from tvm.support import cc

    m = conv_relu()
    preset = resolve("arm64")
    fused, tgt = fused_module(m, "arm64")
    sched, report = apply_rules(fused, CpuFacts.from_preset(preset))
    assert report.get("conv2d") == 1, report
    path = tmp_path_factory.mktemp("arm64") / "conv.so"
    tvm_compat.build(sched, tgt).export_library(str(path), fcompile=cc.cross_compiler(preset.cross_compiler))
    return m, path


def test_conv_uses_neon_fma(arm64_artifact):
    _, path = arm64_artifact
    asm = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    vector_fmas = re.findall(r"\bfmla\s+v\d+\.4s", asm)
    assert len(vector_fmas) >= 8, "expected a NEON register tile of fmla v.4s"


@pytest.mark.skipif(not cross_runtime.qemu_available(), reason="needs qemu-aarch64 (apt-get install qemu-user)")
def test_conv_runs_under_qemu(arm64_artifact):
    m, path = arm64_artifact
    x = rand(1, 16, 24, 32)
    try:
        outs, _ = cross_runtime.run_aarch64(path, [("x", x)], timeout_s=120)
    except Exception as err:  # noqa: BLE001 - the aarch64 runtime wheel is downloaded once; offline: skip
        pytest.skip(f"aarch64 runtime unavailable: {err}")
    np.testing.assert_allclose(outs[0], run_ort(m, {"x": x})[0], **TOL)
