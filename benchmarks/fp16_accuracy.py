"""fp16 accuracy of a PP-OCR model under lwc's CUDA ``--precision fp16`` transform.

The transform (ToMixedPrecision, softmax/norms kept fp32; :func:`lwc.cuda.to_mixed_precision`)
is built for the host CPU, whose LLVM code does fp16 arithmetic, so the numbers need no GPU.
Compared with onnxruntime fp32 on the synthetic text page the tests use (PP-OCR
preprocessing) and on N(0,1) noise: cosine, max/mean abs difference, and for det the share
of pixels on the same side of the 0.3 text threshold (PP-OCR's DBNet binarization).

    .venv/bin/python benchmarks/fp16_accuracy.py [det|cls|rec]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import conftest  # noqa: E402  (the tests' synthetic text images)
import onnxruntime as ort  # noqa: E402

from lwc import cuda, frontend, pipeline, tvm_compat  # noqa: E402
from lwc.models import ppocr_model  # noqa: E402
from lwc.targets import resolve  # noqa: E402

SHAPES = {"det": [1, 3, 640, 640], "rec": [1, 3, 48, 320], "cls": [1, 3, 48, 192]}
IMAGES = {
    "det": lambda: conftest.normalize_det(conftest.det_image()),
    "rec": lambda: conftest.normalize_rec(conftest.rec_image()),
    "cls": lambda: conftest.normalize_rec(conftest.cls_image()),
}


def main(name: str = "det") -> dict:
    path, shape = ppocr_model(name), SHAPES[name]
    host = resolve("host")
    imported = frontend.import_model(str(path), {"x": shape})
    mod, _ = pipeline.run_lwc_passes(imported.mod, host, disabled=cuda.FP16_SKIPPED_PASSES)
    vm = tvm_compat.virtual_machine(tvm_compat.build(cuda.to_mixed_precision(mod), host.tvm_target()))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = {}
    noise = np.random.default_rng(0).standard_normal(shape).astype("float32")
    for label, x in [("text image", IMAGES[name]()), ("N(0,1)", noise)]:
        x = np.ascontiguousarray(np.asarray(x, "float32").reshape(shape))
        got = vm["main"](tvm_compat.tensor(x)).numpy().astype(np.float64)
        want = session.run(None, {"x": x})[0].astype(np.float64)
        row = {
            "cosine": float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)),
            "max_abs": float(np.abs(got - want).max()),
            "mean_abs": float(np.abs(got - want).mean()),
        }
        if name == "det":
            row["same_side_of_0.3"] = float(((got > 0.3) == (want > 0.3)).mean())
        out[label] = row
        print(name, label, json.dumps(row), flush=True)
    return out


if __name__ == "__main__":
    main(*sys.argv[1:2])
