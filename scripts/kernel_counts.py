"""Kernel count of one model after lwc's passes (host target, no tuning records).

Usage: python scripts/kernel_counts.py MODEL [DISABLED_PASS ...]
  MODEL: cls, rec, det (PP-OCR, shapes 1x3x48x192 / 1x3x48x320 / 1x3x640x640) or a light
  zoo name (light_inception_v1, ...). Set LWC_CONV_LAYOUT=NHWC for the layout variant.
Prints one JSON line: model, disabled passes, number of kernels (lwc.kernel_inventory.list_kernels:
the call_tir left after LegalizeOps -> FuseOps -> FuseTIR, as the compile report counts
them) and the summaries of the passes of issue 4.
"""

import json
import sys
from pathlib import Path

import onnx

from lwc import pipeline
from lwc.frontend import import_model
from lwc.kernel_inventory import list_kernels
from lwc.models import ppocr_model
from lwc.targets import resolve

SHAPES = {"det": {"x": [1, 3, 640, 640]}, "rec": {"x": [1, 3, 48, 320]}, "cls": {"x": [1, 3, 48, 192]}}
LIGHT = Path(onnx.__file__).parent / "backend/test/data/light"
SHOWN = ("MergeParallelBranches", "FuseTransposeIntoMatmul", "ConvertConvLayout")


def main(name: str, disabled: tuple[str, ...]) -> dict:
    preset = resolve("host")
    source = str(ppocr_model(name)) if name in SHAPES else str(LIGHT / f"{name}.onnx")
    imported = import_model(source, SHAPES.get(name))
    mod, records = pipeline.run_passes(imported.mod, preset, disabled)
    return {"model": name, "disabled": list(disabled), "kernels": len(list_kernels(mod, preset.tvm_target())),
            "passes": {r.name: r.summary for r in records if r.name in SHOWN}}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], tuple(sys.argv[2:]))))
