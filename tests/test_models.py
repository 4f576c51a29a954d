"""End-to-end model tests: ONNX's light model zoo and the PP-OCR models of rapidocr.

- Light zoo (nine models shipped in the onnx package): compile for host, run on the
  input the shipped expected outputs were made with, compare within ``TOL["zoo"]``.
- PP-OCR det / rec / cls (rapidocr-onnxruntime wheel): compile for host and arm64,
  check the ELF machine, run on a normalised synthetic page of printed text (arm64 under
  qemu-aarch64) and compare with onnxruntime through :func:`lwc.verify.verify`
  (max abs error <= 1e-4).

Artifacts come from the session-scoped ``artifacts`` cache (tests/conftest.py), so each
(model, target) is compiled once per session.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lwc import artifact, cross_runtime
from lwc.verify import onnxruntime_outputs, verify

#: The models of onnx/backend/test/data/light (all of them; none may be dropped).
ZOO_MODELS = [
    "light_bvlc_alexnet",
    "light_densenet121",
    "light_inception_v1",
    "light_inception_v2",
    "light_resnet50",
    "light_shufflenet",
    "light_squeezenet",
    "light_vgg19",
    "light_zfnet512",
]

OCR = ["det", "rec", "cls"]
TARGETS = [
    pytest.param("host", id="host"),
    pytest.param("arm64", id="arm64", marks=pytest.mark.qemu),
]


# --------------------------------------------------------------------------- light zoo


def test_zoo_ships_the_nine_models(zoo_dir):
    models = sorted(p.stem for p in zoo_dir.glob("light_*.onnx"))
    assert models == ZOO_MODELS
    for name in models:
        assert (zoo_dir / f"{name}_output_0.pb").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("zoo_name", ZOO_MODELS)
def test_zoo_model_matches_expected_output(
    zoo_name, zoo_case, artifacts, elf_machine, expected_e_machine, tol
):
    # Note: the light models build their weights with ConstantOfShape, so most expected
    # outputs are a uniform softmax (0.001 everywhere); densenet121's is 0.46095502.
    _, inputs, expected = zoo_case
    so = artifacts.get(zoo_name, "host")
    assert elf_machine(so) == expected_e_machine["host"]

    outputs = artifact.load(so).run(inputs)

    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got.shape == want.shape
        assert got.dtype == want.dtype
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, **tol["zoo"])


# --------------------------------------------------------------------------- PP-OCR


def _check_reference_is_meaningful(which, reference, det_text_mask, rec_decode):
    """The onnxruntime outputs on the synthetic page show the model at work.

    The artifact's outputs are within 1e-4 of these (checked by verify), and every margin
    here is far larger than that, so they hold for the artifact's outputs too: the match
    is not a comparison of constant or empty maps.
    """
    assert len(reference) == 1
    out = reference[0]
    assert np.all(np.isfinite(out))
    assert out.std() > 1e-2, f"{which}: output is (nearly) constant, std {out.std()}"
    if which == "det":
        # Probability map: high on the printed lines, ~0 on the blank paper.
        assert out.shape == (1, 1, 640, 640)
        prob = out[0, 0]
        inside, outside = prob[det_text_mask].mean(), prob[~det_text_mask].mean()
        assert inside > 0.2 and outside < 0.01, (inside, outside)
    elif which == "rec":
        # CTC probabilities over 6625 classes for 40 time steps; the line reads "HELLO 2024"
        # (onnxruntime decodes it as "HELL0 2024").
        assert out.shape == (1, 40, 6625)
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-3)
        text = rec_decode(out[0])
        assert "2024" in text, text
    else:
        # Orientation classifier ("0", "180"): upright text, not saturated (p0 ~ 0.93).
        assert out.shape == (1, 2)
        np.testing.assert_allclose(out.sum(), 1.0, atol=1e-5)
        assert out[0, 0] - out[0, 1] > 0.5, out


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("which", OCR)
def test_ppocr_matches_onnxruntime(
    which, target, ocr_models, ocr_inputs, artifacts, elf_machine, expected_e_machine, tol,
    det_text_mask, rec_decode,
):
    if target == "arm64":
        if not cross_runtime.cross_compiler_available():
            pytest.skip("aarch64-linux-gnu-g++ not found (apt-get install g++-aarch64-linux-gnu)")
        if not cross_runtime.qemu_available():
            pytest.skip("qemu-aarch64 not found (apt-get install qemu-user)")
    model, inputs = ocr_models[which], ocr_inputs[which]

    so = artifacts.get(which, target)
    assert so.with_suffix(".json").is_file()
    assert elf_machine(so) == expected_e_machine[target]

    report = verify(str(model), str(so), inputs, **tol["ocr"])

    summary = json.dumps(report["outputs"], indent=1)
    assert report["target"] == target
    assert not report["warnings"], report["warnings"]
    assert len(report["outputs"]) == 1, summary
    for out in report["outputs"]:
        assert out["max_abs"] <= tol["ocr"]["atol"], f"{which} [{target}]: {summary}"
    assert report["ok"], f"{which} [{target}]: {summary}"
    _check_reference_is_meaningful(
        which, onnxruntime_outputs(str(model), inputs), det_text_mask, rec_decode
    )
