"""int8 accuracy of a PP-OCR model vs fp32 (onnxruntime) on synthetic printed-text images.

Calibration and held-out sets are disjoint: random pages (det) or lines (rec, cls) of
printed text in the tests' 5x7 font (tests/conftest.py ``synthetic_page``: shaded paper,
noise, several ink colours), PP-OCR's preprocessing. The model is compiled with
``lwc compile --quantize int8 --calib CALIB`` (percentile:99.99 unless given), then
``lwc verify MODEL ARTIFACT --inputs HELDOUT`` gives per-output cosine vs onnxruntime fp32.
For det, the share of pixels on the same side of DBNet's 0.3 text threshold is added.

    .venv/bin/python benchmarks/int8_accuracy.py det [--target arm64] [--calib-n 16] [--held-n 8]
        [--calib-method M] [--max-accuracy-drop X]

Writes build/int8_accuracy/<model>-<target>/ (calib/, heldout/, the artifact, result.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402  (the tests' synthetic text images)

SHAPES = {"det": (640, 640), "rec": (48, 320), "cls": (48, 192)}
WORDS = ["LWC", "OCR", "HELLO", "WORLD", "INPUT", "PADDLE", "TEXT", "EDGE", "2024", "42",
         "SMALL", "PRINT", "MODEL", "KERNEL", "TUNE", "INT8", "0123456789", "DET", "REC"]


def page(kind: str, seed: int) -> np.ndarray:
    """One preprocessed NCHW float32 input of ``kind`` with random text (``seed``)."""
    rng = np.random.default_rng(seed)
    h, w = SHAPES[kind]
    lines = []
    if kind == "det":
        top = int(rng.integers(10, 60))
        while top < h - 30:
            scale = int(rng.integers(2, 7))
            text = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
            lines.append((text, scale, top, int(rng.integers(0, 300))))
            top += 7 * scale + int(rng.integers(10, 60))
        return conftest.normalize_det(conftest.synthetic_page(h, w, lines, seed=seed))
    return line(kind, seed)[0]


def line(kind: str, seed: int) -> tuple[np.ndarray, int]:
    """One preprocessed rec / cls text line (``seed``) and its cls label: 1 when the line is
    rotated by 180 degrees (cls's class "180"; for rec always 0)."""
    rng = np.random.default_rng(seed)
    h, w = SHAPES[kind]
    scale = int(rng.integers(3, 6))
    text = " ".join(rng.choice(WORDS, int(rng.integers(1, 3))))
    image = conftest.synthetic_page(h, w, [(text, scale, max(0, (h - 7 * scale) // 2), int(rng.integers(2, 20)))],
                                    seed=seed)
    rotated = int(kind == "cls" and rng.integers(0, 2))
    if rotated:
        image = image[::-1, ::-1]  # rotated 180 degrees: cls's other class
    return conftest.normalize_rec(np.ascontiguousarray(image)), rotated


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(SHAPES))
    p.add_argument("--target", default="host")
    p.add_argument("--calib-n", type=int, default=16)
    p.add_argument("--held-n", type=int, default=8)
    p.add_argument("--calib-method", default="percentile:99.99")
    p.add_argument("--max-accuracy-drop", type=float, help="passed to lwc compile (fp32 fallback)")
    args = p.parse_args()

    from lwc.models import ppocr_model

    model = ppocr_model(args.model)
    h, w = SHAPES[args.model]
    tag = f"-drop{args.max_accuracy_drop:g}" if args.max_accuracy_drop is not None else ""
    out = ROOT / "build" / "int8_accuracy" / f"{args.model}-{args.target}{tag}"
    for sub, n, base in (("calib", args.calib_n, 1000), ("heldout", args.held_n, 2000)):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(out / sub / f"{i:03d}.npy", page(args.model, base + i))
    lwc = str(ROOT / ".venv" / "bin" / "lwc")
    so = out / f"{args.model}-int8.so"
    subprocess.run([lwc, "compile", str(model), "--target", args.target, "--input-shape", f"x:1,3,{h},{w}",
                    "--quantize", "int8", "--calib", str(out / "calib"), "--calib-method", args.calib_method,
                    "-o", str(so), *(["--max-accuracy-drop", str(args.max_accuracy_drop)]
                                     if args.max_accuracy_drop is not None else [])], check=True)
    verify = subprocess.run([lwc, "verify", str(model), str(so), "--inputs", str(out / "heldout"), "--json"],
                            capture_output=True, text=True)
    result = {"model": args.model, "target": args.target, "calib": args.calib_n, "heldout": args.held_n,
              "method": args.calib_method, "max_accuracy_drop": args.max_accuracy_drop, "verify": json.loads(verify.stdout) if verify.stdout.strip() else None,
              "verify_rc": verify.returncode}
    if args.model == "det" and args.target == "host":
        import onnxruntime as ort

        from lwc import artifact

        vm = artifact.load(so)
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        same = []
        for f in sorted((out / "heldout").glob("*.npy")):
            x = np.load(f)
            got, want = vm.run({"x": x})[0], session.run(None, {"x": x})[0]
            same.append(float(((got > 0.3) == (want > 0.3)).mean()))
        result["same_side_of_0.3"] = {"mean": float(np.mean(same)), "min": float(np.min(same))}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
