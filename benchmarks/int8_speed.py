"""int8 speed on the host: lwc int8 vs lwc fp32 vs onnxruntime fp32 vs onnxruntime int8, tuned.

The issue's measurement (PP-OCR mobile cls, PP-OCRv4 det, resnet50 from onnx's light zoo),
reproducible end to end:

    .venv/bin/python benchmarks/int8_speed.py calib            # build/int8_speed/calib_<model>/
    .venv/bin/lwc tune MODEL --input-shape ... --quantize int8 --calib build/int8_speed/calib_<model> ...
    .venv/bin/python benchmarks/int8_speed.py run [cls det resnet50] [--repeat N]

``calib`` writes the calibration samples deterministically (fixed seeds), so every machine
quantizes the same way (the int8 tuning log's key does not depend on them: records match
any calibration, lwc.passes.lift_quant_params). cls and det get synthetic printed text in
PP-OCR's preprocessing (benchmarks/int8_accuracy.py ``page``); resnet50 (whose light-zoo
weights are constant fills: a speed case only) gets ImageNet-normalized random images.
``run`` compiles each model twice (fp32 and ``--quantize int8``, each with its tuning
log) and times the four engines interleaved in one process (benchmarks/int8_bench.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

OUT = ROOT / "build" / "int8_speed"
#: model -> (calibration samples, input name, shape)
MODELS = {
    "cls": (32, "x", (1, 3, 48, 192)),
    "det": (8, "x", (1, 3, 640, 640)),
    "resnet50": (8, "gpu_0/data_0", (1, 3, 224, 224)),
}


def model_path(name: str) -> Path:
    from run_benchmarks import MODELS as PATHS

    return Path(PATHS[name][0]())


def sample(name: str, seed: int) -> np.ndarray:
    """One calibration input of ``name`` (float32 NCHW), deterministic in ``seed``."""
    if name in ("cls", "det"):
        import int8_accuracy

        return int8_accuracy.page(name, seed)
    rng = np.random.default_rng(seed)
    image = rng.random(MODELS[name][2], dtype=np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    return ((image - mean) / std).astype(np.float32)


def calib_dir(name: str) -> Path:
    return OUT / f"calib_{name}"


def write_calib(names) -> None:
    for name in names:
        folder = calib_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(MODELS[name][0]):
            np.save(folder / f"{i:03d}.npy", sample(name, 1000 + i))
        print(f"{folder}: {MODELS[name][0]} samples")


def shape_flag(name: str) -> str:
    _, input_name, shape = MODELS[name]
    return f"{input_name}:{','.join(map(str, shape))}"


def run(names, repeat: int) -> list[dict]:
    import int8_bench

    from lwc import driver
    from lwc.quantize import QuantizeOptions

    results = []
    for name in names:
        model = model_path(name)
        _, input_name, shape = MODELS[name]
        shapes = {input_name: list(shape)}
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        fp32 = driver.compile(str(model), "host", shapes).export(folder / "fp32.so")
        q = QuantizeOptions(calib=calib_dir(name), progress=False)
        int8 = driver.compile(str(model), "host", shapes, quantize=q).export(folder / "int8.so")
        out = folder / "bench.json"
        int8_bench.main([str(model), "--input-shape", shape_flag(name), "--calib", str(calib_dir(name)),
                         "--fp32", str(fp32), "--int8", str(int8), "--repeat", str(repeat), "--json", str(out)])
        results.append(json.loads(out.read_text()))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calib", help="write the calibration samples")
    c.add_argument("models", nargs="*", default=list(MODELS))
    r = sub.add_parser("run", help="compile fp32 and int8 with their tuning logs and time all four engines")
    r.add_argument("models", nargs="*", default=list(MODELS))
    r.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args(argv)
    if args.cmd == "calib":
        write_calib(args.models)
    else:
        run(args.models, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
