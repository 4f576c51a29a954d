"""``lwc prune``: magnitude pruning of an ONNX model (a thin layer over :mod:`lwc.prune`)."""

from __future__ import annotations

import json
from pathlib import Path


def cmd_prune(args) -> int:
    from lwc.cli import _input_shapes, check_model_path, load_input_files
    from lwc.prune import format_result, prune

    check_model_path(args.model)
    result = prune(
        args.model, args.method, args.amount,
        inputs=load_input_files(args.input), input_shapes=_input_shapes(args.input_shape),
        seed=args.seed, measure=not args.no_measure, round_to=args.round_to,
    )
    out = Path(args.output) if args.output else Path(Path(args.model).stem + ".pruned.onnx")
    result.save(out)
    if args.json:
        print(json.dumps({"output": str(out), **result.to_json()}, indent=2))
    else:
        print(format_result(result))
        print(f"wrote {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prune", help="magnitude-prune an ONNX model's conv/dense/matmul weights",
        description="Set the smallest weights (elements, output channels or blocks) to zero and "
        "write a valid ONNX model with the zeros in place; report per-layer sparsity and the "
        "output deviation vs the unpruned model. No retraining: recovering accuracy needs "
        "fine-tuning.",
        epilog="Example: lwc prune model.onnx --method channel:l1 --amount 0.3 -o pruned.onnx",
    )
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--method", "-m", default="unstructured",
                   help="unstructured[:global|:layer], channel:l1, channel:l2, block:RxC "
                   "(e.g. block:1x4) (default: unstructured)")
    p.add_argument("--amount", "-a", type=float, required=True,
                   help="fraction in [0, 1) of weights / channels / blocks set to zero")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="channel methods: keep a multiple of N output channels per layer, nearest "
                   "to 1-amount (e.g. 16 for AVX-512, 8 for AVX2, 4 for NEON; odd counts leave "
                   "vector lanes empty and can make the pruned model slower) (default: 1)")
    p.add_argument("-o", "--output", help="pruned model path (default: MODEL.pruned.onnx)")
    p.add_argument("--input-shape", action="append", metavar="NAME:D0,D1,...",
                   help="static shape of a dynamic input, for the deviation measurement")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="input data for the deviation measurement (default: seeded N(0,1))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-measure", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prune)
