"""Several threads on one artifact and on several: the C API through the Python loader
(compiler/runtime/lwc_runtime.py: ctypes drops the GIL in each call, so the calls really
overlap) and lwc.artifact give the outputs of a single-threaded run, bit for bit.

Three ways to share: a handle per thread (what lwc_runtime.h asks of C callers), one
lwc_runtime.Model shared by all threads, and one lwc.artifact.Artifact shared by all
(its Relax VM is one object). The C harness under ThreadSanitizer is
benchmarks/fuzz_capi.sh (tests/fuzz/capi_fuzz.c -DLWC_FUZZ_THREADS).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from lwc import artifact, bundle, driver
from lwc.errors import LwcError
from lwc.runtime import lwc_runtime
from onnx import TensorProto, helper, numpy_helper

THREADS = 6
ROUNDS = 12  # runs per thread


def _matmul_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.linspace(-1, 1, 96, dtype=np.float32).reshape(16, 6), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["s"]),
         helper.make_node("Tanh", ["s"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [8, 16]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [8, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 6])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two host artifacts, their liblwc_runtime, and single-threaded reference outputs."""
    try:
        bundle.build_runtime_library()
    except LwcError as err:  # no g++ / no runtime headers
        pytest.skip(f"cannot build liblwc_runtime.so: {err}")
    folder = tmp_path_factory.mktemp("threads")
    out = {}
    for name, model in (("matmul", _matmul_model()), ("conv", _conv_model())):
        onnx.save(model, folder / f"{name}.onnx")
        so = driver.compile(str(folder / f"{name}.onnx"), "host", use_tuning_logs=False).export(
            folder / f"{name}.so")
        art = artifact.load(so)
        inputs = [artifact.random_inputs(art.inputs, seed) for seed in range(4)]
        with lwc_runtime.load(so) as m:
            want = [m.run(**x) for x in inputs]
        out[name] = (so, inputs, want)
    return out


def _tasks(out: dict, names: list[str]):
    """(name, input index) for THREADS x ROUNDS runs, mixed over models and inputs."""
    return [[(names[(t + r) % len(names)], (t * 7 + r) % 4) for r in range(ROUNDS)]
            for t in range(THREADS)]


def _check(out, name, i, got):
    for g, w in zip(got, out[name][2][i]):
        np.testing.assert_array_equal(g, w, err_msg=f"{name} input {i}")


def _in_threads(fn, plans) -> None:
    barrier = threading.Barrier(len(plans))

    def worker(plan):
        barrier.wait()  # start together
        for name, i in plan:
            fn(name, i)

    with ThreadPoolExecutor(len(plans)) as pool:
        for f in [pool.submit(worker, plan) for plan in plans]:
            f.result()


@pytest.mark.parametrize("names", [["matmul"], ["matmul", "conv"]], ids=["one_model", "two_models"])
def test_c_api_handle_per_thread(models, names):
    out = models

    def run(name, i):
        so, inputs, _ = out[name]
        with lwc_runtime.load(so) as m:  # load + run + free in every thread at once
            _check(out, name, i, m.run(**inputs[i]))

    _in_threads(run, _tasks(out, names))


@pytest.mark.parametrize("names", [["matmul"], ["matmul", "conv"]], ids=["one_model", "two_models"])
def test_c_api_shared_model(models, names):
    out = models
    shared = {name: lwc_runtime.load(out[name][0]) for name in names}

    def run(name, i):
        _check(out, name, i, shared[name].run(**out[name][1][i]))

    try:
        _in_threads(run, _tasks(out, names))
    finally:
        for m in shared.values():
            m.close()


@pytest.mark.parametrize("names", [["matmul"], ["matmul", "conv"]], ids=["one_model", "two_models"])
def test_artifact_shared(models, names):
    out = models
    shared = {name: artifact.load(out[name][0]) for name in names}

    def run(name, i):
        _check(out, name, i, shared[name].run(out[name][1][i]))

    _in_threads(run, _tasks(out, names))
