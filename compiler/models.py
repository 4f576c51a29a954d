"""The real models lwc's demo and tests use, and where they are on this machine.

PP-OCR models ship inside the ``rapidocr-onnxruntime`` wheel (installed ``--no-deps`` by
scripts/setup.sh). Importing that package needs OpenCV, so the files are located with
``importlib.util.find_spec`` without importing it.

``python -m lwc.models`` lists them with the input shape to compile them with;
``python -m lwc.models det`` prints one path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from lwc.errors import LwcError

#: name -> (file in rapidocr_onnxruntime/models, --input-shape to compile it with)
PPOCR = {
    "det": ("ch_PP-OCRv4_det_infer.onnx", "x:1,3,640,640"),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", "x:1,3,48,320"),
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", "x:1,3,48,192"),
}


def ppocr_dir() -> Path:
    """Folder holding the PP-OCR .onnx files.

    Raises:
        LwcError: rapidocr-onnxruntime is not installed.
    """
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise LwcError(
            "the PP-OCR models come from the rapidocr-onnxruntime wheel: "
            "pip install --no-deps rapidocr-onnxruntime==1.4.4"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def ppocr_model(name: str) -> Path:
    """Path of PP-OCR model ``name`` (det, rec or cls)."""
    if name not in PPOCR:
        raise LwcError(f"unknown model {name!r}; models: {', '.join(PPOCR)}")
    return ppocr_dir() / PPOCR[name][0]


def main(argv: list[str]) -> int:
    try:
        if argv:
            print(ppocr_model(argv[0]))
            return 0
        for name, (_, shape) in PPOCR.items():
            print(f"  {name:<4} --input-shape {shape:<16} {ppocr_model(name)}")
    except LwcError as err:
        print(f"lwc: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
