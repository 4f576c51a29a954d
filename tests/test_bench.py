"""lwc bench: statistics, thread count, onnxruntime comparison, and refusing qemu timings."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lwc import bench, driver
from lwc.errors import LwcError


def small_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [32, 16], rng.standard_normal((32, 16)).astype(np.float32).ravel())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "mm_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 16])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def host_artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    model = folder / "mm.onnx"
    onnx.save(small_model(), model)
    path = driver.compile(str(model), "host", use_tuning_logs=False).export(folder / "mm.so")
    return model, path


def test_stats_percentiles():
    s = bench.Stats.of([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert s.n == 100 and s.min == pytest.approx(1.0)
    assert s.p50 == pytest.approx(50.5) and s.p90 == pytest.approx(90.1) and s.p99 == pytest.approx(99.01)
    assert s.mean == pytest.approx(50.5)


def test_bench_vs_onnxruntime(host_artifact):
    model, path = host_artifact
    result = bench.bench(path, vs_onnxruntime=model, repeat=7, warmup=1, threads=1)
    assert result.threads == 1 and result.lwc.n == 7 and result.onnxruntime.n == 7
    assert result.ratio == pytest.approx(result.lwc.p50 / result.onnxruntime.p50)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    text = bench.format_result(result)
    assert "1 thread," in text and "ratio lwc/onnxruntime" in text and "p99 ms" in text


def test_cli_bench_json(host_artifact, capsys):
    from lwc.cli import main

    _, path = host_artifact
    assert main(["bench", str(path), "--repeat", "3", "--warmup", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threads"] >= 1 and report["repeat"] == 3 and report["onnxruntime_ms"] is None
    assert set(report["lwc_ms"]) >= {"p50", "p90", "p99", "mean"}


def test_bench_rejects_bad_counts(host_artifact):
    with pytest.raises(LwcError, match="--repeat"):
        bench.bench(host_artifact[1], repeat=0)


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None, reason="no aarch64 cross compiler")
def test_bench_refuses_qemu_timings(host_artifact, tmp_path):
    model, _ = host_artifact
    path = driver.compile(str(model), "arm64", use_tuning_logs=False).export(tmp_path / "mm_arm.so")
    with pytest.raises(LwcError, match="emulated time"):
        bench.bench(path, repeat=3)


def test_cli_bench_profile_lists_every_kernel(host_artifact, capsys):
    from lwc.cli import main

    _, path = host_artifact
    assert main(["bench", str(path), "--profile", "--repeat", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [k["kernel"] for k in report["kernels"]]
    assert any("matmul" in n for n in names), names
    assert sum(k["percent"] for k in report["kernels"]) == pytest.approx(100, abs=0.5)
    ms = [k["ms"] for k in report["kernels"]]
    assert ms == sorted(ms, reverse=True) and all(m >= 0 for m in ms)
