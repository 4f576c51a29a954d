"""``--input-value NAME=V`` / ``input_values=``: graph inputs bound to constants at compile
time (lwc.input_values; issue 21).

- the raw Silero VAD from the silero-vad wheel (``sr`` an int64 scalar input deciding an
  ``If`` around the whole 16 kHz / 8 kHz network), compiled with ``sr`` bound, matches
  onnxruntime given the same ``sr`` on a few chunks of a speech-like signal, at 16 kHz
  (512-sample chunks) and at 8 kHz (256);
- small models whose Pad ``pads`` / ReduceSum ``axes`` come in as inputs, bound through
  the CLI and through the Python API;
- each refusal (unknown name, an initializer, a value not of the input's dtype, the wrong
  count, a repeated name) is one ``lwc: error:`` line, exit 2, and no file written.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from lwc import artifact, cli, driver, models, prepare
from lwc.errors import LwcError
from lwc.verify import onnxruntime_outputs, verify
from onnx import TensorProto, helper


def _silero():
    try:
        return models.wheel_model_source("vad")
    except LwcError as err:
        pytest.skip(str(err))


def _speech(samples: int, rate: int, rng) -> np.ndarray:
    """Voiced-speech-like audio: 140 Hz harmonics under a syllable envelope, plus noise."""
    t = np.arange(samples) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * t / t[-1]))
    return (0.3 * envelope * voice + 0.01 * rng.standard_normal(samples)).astype(np.float32)


@pytest.mark.parametrize("sr, chunk", [(16000, 512), (8000, 256)])
def test_raw_silero_with_sr_bound_matches_onnxruntime(sr, chunk, tmp_path, tol, capsys):
    model = _silero()
    out = tmp_path / "vad.so"
    assert cli.main(["compile", str(model), "--input-value", f"sr={sr}", "--input-shape",
                     f"input:1,{chunk}", "--input-shape", "state:2,1,128", "-o", str(out), "-q"]) == 0
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["bound_inputs"] == {"sr": sr}
    assert [i["name"] for i in manifest["inputs"]] == ["input", "state"]  # sr is no input
    vad = artifact.load(out)
    audio = _speech(4 * chunk, sr, np.random.default_rng(0))
    state_lwc = state_ort = np.zeros((2, 1, 128), np.float32)
    worst = 0.0
    for i in range(4):  # streaming: each side carries its own state
        x = audio[None, i * chunk:(i + 1) * chunk]
        prob, state_lwc = vad.run({"input": x, "state": state_lwc})
        want, state_ort = onnxruntime_outputs(str(model), {"input": x, "state": state_ort,
                                                           "sr": np.array(sr, np.int64)})
        np.testing.assert_allclose(prob, want, **tol["fp32"])
        np.testing.assert_allclose(state_lwc, state_ort, **tol["fp32"])
        worst = max(worst, float(np.abs(prob - want).max()), float(np.abs(state_lwc - state_ort).max()))
        assert 0.0 < float(want.reshape(-1)[0]) < 1.0
    print(f"vad sr={sr}: max abs diff vs onnxruntime over 4 chunks {worst:.2g}")
    # lwc verify runs onnxruntime on the original model with sr fed from the manifest
    x = {"input": audio[None, :chunk], "state": np.zeros((2, 1, 128), np.float32)}
    assert verify(str(model), str(out), x, **tol["fp32"])["ok"]
    # a feed written for onnxruntime, sr included, runs when sr has the bound value
    vad.run({**x, "sr": np.array(sr, np.int64)})
    with pytest.raises(LwcError, match="bound to"):
        vad.run({**x, "sr": np.array(24000 - sr, np.int64)})


def _pad_model(path) -> str:
    """Y = Pad(X, pads, cv) * W: pads (int64 [4]) and cv (float scalar) are inputs, W an
    initializer."""
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Pad", ["X", "pads", "cv"], ["P"]), helper.make_node("Mul", ["P", "W"], ["Y"])],
        "pad",
        [helper.make_tensor_value_info("X", f32, [3, 4]),
         helper.make_tensor_value_info("pads", TensorProto.INT64, [4]),
         helper.make_tensor_value_info("cv", f32, [])],
        [helper.make_tensor_value_info("Y", f32, ["h", "w"])],
        [helper.make_tensor("W", f32, [], [2.0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def test_pad_inputs_bound_from_the_cli(tmp_path):
    model = _pad_model(tmp_path / "pad.onnx")
    out = tmp_path / "pad.so"
    assert cli.main(["compile", model, "--input-value", "pads=0,1,0,2", "--input-value", "cv=1.5",
                     "-o", str(out), "-q"]) == 0
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["bound_inputs"] == {"pads": [0, 1, 0, 2], "cv": 1.5}
    assert [i["name"] for i in manifest["inputs"]] == ["X"]
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    (got,) = artifact.load(out).run({"X": x})
    (want,) = onnxruntime_outputs(model, {"X": x, "pads": np.array([0, 1, 0, 2], np.int64),
                                          "cv": np.array(1.5, np.float32)})
    assert got.shape == (3, 7)
    np.testing.assert_array_equal(got, want)


def test_reduce_axes_bound_from_the_python_api():
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["X", "axes"], ["Y"], keepdims=0)], "reduce",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    result = driver.compile(model, "host", input_values={"axes": [1]})  # a list: 1-D int64
    assert result.describe()["bound_inputs"] == {"axes": [1]}
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    (got,) = result.run({"X": x})
    np.testing.assert_allclose(got, x.sum(axis=1), rtol=1e-5, atol=1e-6)


def test_tuning_key_names_the_bound_values(tmp_path):
    model = _pad_model(tmp_path / "pad.onnx")
    keys = {prepare.prepare(model, "host", input_values={"pads": pads, "cv": 0.0}).model_key
            for pads in ([0, 1, 0, 1], [1, 0, 1, 0])}
    assert len(keys) == 2  # another value, another graph: another tuning log


@pytest.mark.parametrize("flags, message", [
    (["foo=1"], "names 'foo', which is not a model input; inputs: X, pads, cv"),
    (["W=3"], "names 'W', which is an initializer (a weight), not a graph input"),
    (["pads=0,1,a,1"], "input 'pads' is int64; expected integers"),
    (["cv=x"], "input 'cv' is float32; expected numbers"),
    (["pads=0,1"], "input 'pads' has shape [4]; got 2 values"),
    (["cv=1,2"], "input 'cv' is a scalar (rank 0); got 2 values"),
    (["pads=0,1,0,1", "pads=1,1,1,1"], "names 'pads' twice"),
    (["pads"], "expected NAME=V or NAME=V0,V1,..."),
])
def test_refusals_are_one_line_and_write_nothing(flags, message, tmp_path, capsys):
    model = _pad_model(tmp_path / "pad.onnx")
    out = tmp_path / "out.so"
    args = ["compile", model, "-o", str(out)]
    for flag in flags:
        args += ["--input-value", flag]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lwc: error: --input-value") and message in err[-1], err
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pad.onnx"]


def test_unbound_shape_input_error_names_the_flag():
    graph = helper.make_graph(
        [helper.make_node("Pad", ["X", "pads"], ["Y"])], "pad",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("pads", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(LwcError, match=r"input 'pads' decides a shape .* --input-value pads="):
        driver.compile(model, "host")
