"""ONNX conformance: a representative subset of the ONNX backend node tests, and the
"Older frontend cases" GRU and QLinearConv of shared/cases/README.md.

Each node test is compiled for the host with its test inputs' shapes, run, and compared
with the expected outputs as onnx's backend runner compares (count, shape, dtype, then
rtol 1e-3 / atol 1e-7): one or two cases per op family lwc converts itself (recurrent,
quantized, losses, attention, ...; :mod:`lwc.onnx_ops`), cases that need the ONNX-level
rewrites (:mod:`lwc.onnx_legalize`), and some that TVM's importer already handled. The
full run is ``benchmarks/onnx_conformance.py`` (benchmarks/onnx_conformance.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from lwc import driver, onnx_legalize
from lwc.errors import LwcError
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import onnx_conformance

CASES = [
    # recurrent (lwc.onnx_ops_rnn)
    "test_gru_defaults", "test_gru_seq_length", "test_lstm_with_peepholes",
    "test_lstm_bidirectional", "test_simple_rnn_batchwise",
    # quantized (lwc.onnx_ops_quant)
    "test_qlinearconv", "test_qlinearmatmul_3D_int8_float32",
    # losses, attention, others (lwc.onnx_ops, lwc.onnx_ops_attention)
    "test_nllloss_NCd1d2_with_weight_reduction_mean", "test_sce_mean_weight_ii_3d_log_prob",
    "test_attention_4d_gqa_causal", "test_attention_3d_with_past_and_present_qk_matmul_bias",
    "test_attention_23_fullymasked_qk_matmul_output_mode3_zero", "test_swish",
    "test_bitcast_float32_to_int32", "test_hannwindow", "test_reversesequence_time",
    "test_rotary_embedding_interleaved", "test_center_crop_pad_crop_and_pad", "test_dft_rfft",
    "test_pow_types_int32_int32", "test_rms_normalization_2d_axis0",
    # Constant(value_float=...), function inlining, Scan unrolling (lwc.onnx_legalize)
    "test_celu_expanded", "test_causal_conv_with_state_basic", "test_scan9_sum",
    "test_linear_attention_linear",
    # shape-deciding inputs bound to the test's values (lwc.onnx_legalize.bind_inputs)
    "test_cumprod_2d_axis_1", "test_reduce_sum_keepdims_example",
    # already handled by TVM's importer
    "test_conv_with_strides_padding", "test_matmul_3d", "test_softmax_axis_1",
]


@pytest.fixture(scope="module")
def node_tests() -> Path:
    return onnx_conformance.node_test_dir()


def _compile_and_run(model, feeds: dict) -> list[np.ndarray]:
    compiled = driver.compile(model, target="host",
                              input_shapes={k: list(v.shape) for k, v in feeds.items()})
    return compiled.run(feeds)


@pytest.mark.parametrize("case", CASES)
def test_node_case(node_tests: Path, case: str):
    model, sets = onnx_conformance.load_case(str(node_tests / case))
    feeds, want = sets[0]
    bound = sorted(onnx_legalize.shape_deciding_inputs(model) & set(feeds))
    if bound:
        model = onnx_legalize.bind_inputs(model, {k: feeds[k] for k in bound})
        feeds = {k: v for k, v in feeds.items() if k not in bound}
    got = _compile_and_run(model, feeds)
    assert onnx_conformance.compare(got, want) is None


def test_lowering_failure_is_one_lwc_line_naming_the_op(node_tests: Path):
    """A TVM lowering failure (here ConstantOfShape of a runtime shape) is an LwcError
    naming the Relax op, not a bare AssertionError from TVM."""
    model, sets = onnx_conformance.load_case(str(node_tests / "test_constantofshape_int_zeros"))
    with pytest.raises(LwcError, match=r"^TVM cannot lower relax\.\w+ on \("):
        _compile_and_run(model, sets[0][0])


def test_bind_inputs_makes_initializers():
    """bind_inputs: the named inputs leave graph.input and become initializers."""
    graph = helper.make_graph(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("i", TensorProto.INT64, [2])])
    model = helper.make_model(graph)
    assert onnx_legalize.shape_deciding_inputs(model) == {"k"}
    bound = onnx_legalize.bind_inputs(model, {"k": np.array([2], dtype=np.int64)})
    assert [v.name for v in bound.graph.input] == ["x"]
    assert [t.name for t in bound.graph.initializer] == ["k"]
    assert [v.name for v in model.graph.input] == ["x", "k"]  # the input model is unchanged


# --------------------------------------------------------------------------- README cases


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_readme_gru_opset14_matches_onnxruntime():
    """GRU opset 14, X[5,1,4], hidden 3, default activations: Y and Y_h equal to onnxruntime."""
    rng = np.random.default_rng(0)
    seq, batch, inp, hidden = 5, 1, 4, 3
    w = rng.standard_normal((1, 3 * hidden, inp)).astype(np.float32)
    r = rng.standard_normal((1, 3 * hidden, hidden)).astype(np.float32)
    b = rng.standard_normal((1, 6 * hidden)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("GRU", ["X", "W", "R", "B"], ["Y", "Y_h"], hidden_size=hidden)], "gru",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [seq, batch, inp])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [seq, 1, batch, hidden]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, batch, hidden])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"),
                     numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    feeds = {"X": rng.standard_normal((seq, batch, inp)).astype(np.float32)}
    got = _compile_and_run(model, feeds)
    for g, want in zip(got, _ort(model, feeds)):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


def _qlinearconv_model(w: np.ndarray, rng) -> onnx.ModelProto:
    """QLinearConv 3x3 pad 1, uint8 x [1,3,8,8] (zp 128), int8 per-channel w (zp 0), int32 bias."""
    cout = w.shape[0]
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zp"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(rng.uniform(0.002, 0.01, cout).astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(cout, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(100, np.uint8), "y_zp"),
        numpy_helper.from_array(rng.integers(-500, 500, cout).astype(np.int32), "bias"),
    ]
    node = helper.make_node(
        "QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "bias"],
        ["y"], pads=[1, 1, 1, 1], strides=[1, 1])
    graph = helper.make_graph(
        [node], "qconv", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, cout, 8, 8])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def _steps_apart(a: np.ndarray, b: np.ndarray) -> int:
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def test_readme_qlinearconv_u8_i8_per_channel_matches_onnxruntime():
    """QLinearConv, uint8 activations, int8 per-channel weights: within one output step of
    onnxruntime. Weights in [-64, 63], as onnxruntime's quantizer makes them for x86
    (reduce_range): with full-range int8 weights its u8 x s8 kernel saturates int16 pair
    sums (vpmaddubsw) and differs from the ONNX reference by tens of steps."""
    rng = np.random.default_rng(0)
    model = _qlinearconv_model(rng.integers(-64, 64, (4, 3, 3, 3)).astype(np.int8), rng)
    feeds = {"x": rng.integers(0, 256, (1, 3, 8, 8)).astype(np.uint8)}
    (got,) = _compile_and_run(model, feeds)
    (want,) = _ort(model, feeds)
    assert _steps_apart(got, want) <= 1


def test_qlinearconv_full_range_weights_match_the_onnx_reference():
    """Full-range int8 weights: lwc (int32 accumulation) within one step of the ONNX reference."""
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(1)
    model = _qlinearconv_model(rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), rng)
    feeds = {"x": rng.integers(0, 256, (1, 3, 8, 8)).astype(np.uint8)}
    (got,) = _compile_and_run(model, feeds)
    (want,) = ReferenceEvaluator(model).run(None, feeds)
    assert _steps_apart(got, want) <= 1
