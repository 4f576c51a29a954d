"""Models for the issue-6 measurements (benchmarks/sparsity/measure.sh), written to DIR.

- ``mlp_r{1,16}.onnx``: a transformer-style MLP 768 -> 3072 -> 768 (bias, ReLU) for 1 and 16
  rows (scripts/bench_sparsity.py's ``mlp``), dense;
- ``mlp_r{rows}_b{90,80}.onnx``: the same pruned to 90% / 80% 1x4 block sparsity (lwc prune);
- ``cls_pruned30.onnx``: PP-OCR mobile cls pruned 30% by channel (channel:l1), each layer
  keeping a multiple of 16 channels (``--round-to 16``: AVX-512's fp32 lanes; unrounded
  counts such as 17 or 23 made the pruned model slower than the dense one).

Usage: python benchmarks/sparsity/make_models.py DIR
"""

import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_sparsity import mlp  # noqa: E402

from lwc import models, prune  # noqa: E402


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for rows in (1, 16):
        dense = mlp(rows)
        onnx.save(dense, out / f"mlp_r{rows}.onnx")
        for amount in (0.9, 0.8):
            result = prune.prune(dense, "block:1x4", amount)
            result.save(out / f"mlp_r{rows}_b{int(amount * 100)}.onnx")
            print(f"mlp_r{rows}_b{int(amount * 100)}: cosine vs dense {result.deviation[0]['cosine']:.4f}")
    cls = prune.prune(models.ppocr_model("cls"), "channel:l1", 0.3, input_shapes={"x": [1, 3, 48, 192]},
                      round_to=16)
    cls.save(out / "cls_pruned30.onnx")
    print(f"cls_pruned30: cosine vs dense {cls.deviation[0]['cosine']:.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
