"""lwc.models: the bundled PP-OCR models are found without importing rapidocr (needs cv2)."""

import subprocess
import sys

import onnx

from lwc import models


def test_every_ppocr_model_is_found_and_is_onnx():
    for name, (file, shape) in models.PPOCR.items():
        path = models.ppocr_model(name)
        assert path.name == file and path.is_file()
        input_name = shape.split(":")[0]
        graph = onnx.load(str(path), load_external_data=False).graph
        assert input_name in [i.name for i in graph.input]


def test_cli_prints_one_path_and_refuses_unknown_names():
    proc = subprocess.run([sys.executable, "-m", "lwc.models", "det"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ch_PP-OCRv4_det_infer.onnx")
    proc = subprocess.run([sys.executable, "-m", "lwc.models", "ocr"], capture_output=True, text=True)
    assert proc.returncode == 2 and "det, rec, cls" in proc.stderr
