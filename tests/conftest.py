"""Shared fixtures: tolerances, model paths, realistic inputs and a compiled-artifact cache.

- :data:`TOL` is the one table of numeric tolerances the model tests use.
- ``zoo_dir`` / ``ocr_models``: the ONNX "light" model zoo shipped inside the onnx
  package, and the PP-OCR models shipped inside the rapidocr-onnxruntime wheel.
- ``ocr_inputs``: PP-OCR inputs made from a synthetic page (printed text drawn with a
  5x7 bitmap font on a shaded, slightly noisy paper background), normalised the way
  PP-OCR does it. No image library is needed (numpy only).
- ``artifacts``: a session-scoped cache of compiled + exported artifacts keyed by
  (model, target), so every test that needs e.g. the arm64 det artifact shares one compile.
"""

from __future__ import annotations

import importlib.util
import platform
import struct
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

# --------------------------------------------------------------------------- tolerances

#: Numeric tolerances, for ``np.testing.assert_allclose(**TOL[kind])`` /
#: ``lwc.verify.verify(..., **TOL[kind])``.
#:
#: - ``fp32``: lwc vs onnxruntime on the same fp32 model and input.
#: - ``zoo``: lwc vs the expected outputs shipped with ONNX's light model zoo.
#: - ``ocr``: lwc vs onnxruntime on the PP-OCR models: max abs error <= 1e-4, no
#:   relative slack (their outputs are probabilities in [0, 1]).
TOL = {
    "fp32": dict(rtol=1e-4, atol=1e-4),
    "zoo": dict(rtol=1e-3, atol=1e-5),
    "ocr": dict(rtol=0.0, atol=1e-4),
}

# --------------------------------------------------------------------------- ELF

EM_X86_64 = 62
EM_AARCH64 = 183
#: e_machine an artifact for each target must have.
EXPECTED_E_MACHINE = {
    "host": {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}.get(platform.machine()),
    "arm64": EM_AARCH64,
}


def elf_machine(path: Path) -> int:
    """e_machine field of an ELF file."""
    header = Path(path).read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    endian = "<" if header[5] == 1 else ">"
    return struct.unpack(endian + "H", header[18:20])[0]


# --------------------------------------------------------------------------- models

ZOO_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

#: PP-OCR models in rapidocr-onnxruntime: file and the static input shape used here.
OCR_MODELS = {
    "det": ("ch_PP-OCRv4_det_infer.onnx", {"x": [1, 3, 640, 640]}),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", {"x": [1, 3, 48, 320]}),
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": [1, 3, 48, 192]}),
}


def rapidocr_models_dir() -> Path | None:
    # rapidocr_onnxruntime/__init__ imports cv2, which is not installed: find, not import.
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@pytest.fixture(scope="session")
def zoo_dir() -> Path:
    """Folder of ONNX's light model zoo (light_*.onnx + light_*_output_0.pb)."""
    if not ZOO_DIR.is_dir():
        pytest.skip(f"onnx {onnx.__version__} ships no light model zoo at {ZOO_DIR}")
    return ZOO_DIR


@pytest.fixture(scope="session")
def ocr_models() -> dict[str, Path]:
    """``{"det"|"rec"|"cls": path}`` of the PP-OCR models in rapidocr-onnxruntime."""
    root = rapidocr_models_dir()
    if root is None:
        pytest.skip(
            "rapidocr-onnxruntime not installed (pip install --no-deps rapidocr-onnxruntime)"
        )
    paths = {k: root / f for k, (f, _) in OCR_MODELS.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    assert not missing, f"rapidocr-onnxruntime lacks {missing}"
    return paths


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real graph inputs (initializers listed as inputs, as in opset < 9 models, excluded)."""
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def zoo_case(name: str) -> tuple[Path, dict[str, np.ndarray], list[np.ndarray]]:
    """``(model path, inputs, expected outputs)`` for light zoo model ``name``.

    The input is what onnx's backend test runner made the expected outputs with
    (``generate_dummy_data(random=False)``): ``arange(n).reshape(shape) / n`` as float32,
    dims without a dim_value taken as 1.
    """
    from onnx import numpy_helper

    path = ZOO_DIR / f"{name}.onnx"
    model = onnx.load(str(path), load_external_data=False)
    inputs = {}
    for vi in graph_inputs(model):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim
        )
        n = int(np.prod(shape))
        inputs[vi.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    expected = [
        numpy_helper.to_array(onnx.load_tensor(str(ZOO_DIR / f"{name}_output_{i}.pb")))
        for i in range(len(model.graph.output))
    ]
    return path, inputs, expected


# --------------------------------------------------------------------------- synthetic page

# 5x7 bitmap glyphs ('#' = ink), enough for the strings drawn below.
_FONT = {
    " ": [".....", ".....", ".....", ".....", ".....", ".....", "....."],
    "0": [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    "1": ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    "2": [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    "3": ["####.", "....#", "....#", ".###.", "....#", "....#", "####."],
    "4": ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    "5": ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    "6": [".###.", "#....", "#....", "####.", "#...#", "#...#", ".###."],
    "7": ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    "8": [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    "9": [".###.", "#...#", "#...#", ".####", "....#", "....#", ".###."],
    "A": [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
    "B": ["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."],
    "C": [".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."],
    "D": ["####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."],
    "E": ["#####", "#....", "#....", "####.", "#....", "#....", "#####"],
    "F": ["#####", "#....", "#....", "####.", "#....", "#....", "#...."],
    "G": [".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"],
    "H": ["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
    "I": [".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."],
    "K": ["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"],
    "L": ["#....", "#....", "#....", "#....", "#....", "#....", "#####"],
    "M": ["#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"],
    "N": ["#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"],
    "O": [".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
    "P": ["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."],
    "R": ["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"],
    "S": [".####", "#....", "#....", ".###.", "....#", "....#", "####."],
    "T": ["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."],
    "U": ["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
    "W": ["#...#", "#...#", "#...#", "#.#.#", "#.#.#", "##.##", "#...#"],
    "X": ["#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"],
    "Y": ["#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."],
}


def text_mask(text: str, scale: int) -> np.ndarray:
    """Ink coverage in [0, 1] of ``text`` in the 5x7 font, ``scale`` pixels per font pixel,
    one font pixel of spacing between glyphs; edges softened by a 3x3 box blur."""
    cols = []
    for ch in text.upper():
        glyph = np.array([[c == "#" for c in row] for row in _FONT[ch]], dtype=np.float32)
        cols += [glyph, np.zeros((7, 1), np.float32)]
    bitmap = np.concatenate(cols[:-1], axis=1)
    mask = np.kron(bitmap, np.ones((scale, scale), np.float32))
    padded = np.pad(mask, 1, mode="edge")
    h, w = mask.shape
    return sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def synthetic_page(height: int, width: int, lines: list[tuple[str, int, int, int]],
                   seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 image (channel order BGR, as PP-OCR reads with cv2) of printed text.

    Background: paper shaded by a diagonal gradient with a slight warm tint and noise.
    ``lines``: (text, scale, top, left); each drawn in a dark ink whose colour varies per
    line. Text running past the right edge is clipped.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 238.0 - 30.0 * (yy / height + xx / width) / 2
    page = np.stack([shade - 12, shade - 4, shade], axis=-1)  # B, G, R: warm paper
    page += rng.normal(0.0, 3.0, page.shape).astype(np.float32)
    for k, (text, scale, top, left) in enumerate(lines):
        mask = text_mask(text, scale)
        h = min(mask.shape[0], height - top)
        w = min(mask.shape[1], width - left)
        if h <= 0 or w <= 0:
            continue
        m = mask[:h, :w, None]
        ink = np.array([40.0 + 25 * (k % 3), 30.0 + 10 * (k % 2), 25.0], np.float32)
        region = page[top:top + h, left:left + w]
        page[top:top + h, left:left + w] = region * (1 - m) + ink * m
    return np.clip(np.rint(page), 0, 255).astype(np.uint8)


def normalize_det(image: np.ndarray) -> np.ndarray:
    """PP-OCR det preprocessing: /255, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225),
    HWC -> NCHW float32."""
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    x = (image.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def normalize_rec(image: np.ndarray) -> np.ndarray:
    """PP-OCR rec/cls preprocessing: (x / 255 - 0.5) / 0.5, HWC -> NCHW float32."""
    x = (image.astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


#: Text lines of the det page: (text, scale, top, left). Several sizes, one line clipped
#: at the right edge, large blank margins (where the det map must stay low).
DET_LINES = [
    ("LWC OCR TEST 2024", 4, 40, 30),
    ("HELLO WORLD", 6, 110, 40),
    ("INPUT 3X640X640", 3, 210, 60),
    ("PADDLE OCR DET", 5, 270, 20),
    ("0123456789", 4, 360, 120),
    ("TEXT RUNS OFF THE EDGE", 5, 440, 300),
    ("SMALL PRINT 42", 2, 540, 40),
]


def det_image() -> np.ndarray:
    return synthetic_page(640, 640, DET_LINES, seed=1)


def det_text_mask() -> np.ndarray:
    """640x640 bool: the boxes the det lines occupy (for checking the det map)."""
    mask = np.zeros((640, 640), bool)
    for text, scale, top, left in DET_LINES:
        h, w = text_mask(text, scale).shape
        mask[top:top + h, left:left + w] = True
    return mask


def rec_image() -> np.ndarray:
    # 48 px high crop, ~35 px glyphs, text filling the 320 px width (rapidocr resizes a
    # text box to height 48 and pads the rest; here the box is already 48 x 320).
    return synthetic_page(48, 320, [("HELLO 2024", 5, 6, 8)], seed=2)


def cls_image() -> np.ndarray:
    # Upright text: onnxruntime gives class "0" (upright) p ~= 0.93, not saturated.
    return synthetic_page(48, 192, [("HELLO", 4, 10, 6)], seed=3)


def rec_charset(model_path: Path) -> list[str]:
    """The rec model's CTC alphabet: blank, its 'character' metadata lines, space."""
    model = onnx.load(str(model_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return ["<blank>", *meta["character"].splitlines(), " "]


def ctc_decode(probs: np.ndarray, charset: list[str]) -> str:
    """Greedy CTC decoding of one [T, C] probability map (index 0 = blank)."""
    best = probs.argmax(-1)
    keep = [i for t, i in enumerate(best) if i != 0 and (t == 0 or i != best[t - 1])]
    return "".join(charset[i] for i in keep)


@pytest.fixture(scope="session")
def ocr_inputs() -> dict[str, dict[str, np.ndarray]]:
    """``{"det"|"rec"|"cls": {"x": float32 NCHW}}`` normalised synthetic pages."""
    return {
        "det": {"x": normalize_det(det_image())},
        "rec": {"x": normalize_rec(rec_image())},
        "cls": {"x": normalize_rec(cls_image())},
    }


# --------------------------------------------------------------------------- artifact cache


class ArtifactCache:
    """Compiled + exported artifacts, one per (model, target), built on first request.

    ``model`` is a key of :data:`OCR_MODELS` ("det", "rec", "cls"; their shapes are the
    default ``input_shapes``), a light zoo model name ("light_resnet50") or a path to an
    .onnx file (then ``input_shapes`` may be needed). The cache key is (model, target,
    input shapes). A failed compile is remembered and re-raised, not retried.

    Attributes:
        root: folder the artifacts are exported to.
        timings: ``{(model, target, shapes): {"compile_s": ..., "export_s": ...}}``.
    """

    def __init__(self, root: Path):
        self.root = root
        self.timings: dict[tuple, dict[str, float]] = {}
        self._done: dict[tuple, Path | BaseException] = {}

    @staticmethod
    def resolve(model: str | Path, input_shapes=None) -> tuple[str, Path, dict | None]:
        """``(key name, model path, input shapes)`` for ``model``."""
        if isinstance(model, str) and model in OCR_MODELS:
            root = rapidocr_models_dir()
            if root is None:
                pytest.skip("rapidocr-onnxruntime not installed")
            file, shapes = OCR_MODELS[model]
            return model, root / file, input_shapes or shapes
        if isinstance(model, str) and (ZOO_DIR / f"{model}.onnx").is_file():
            return model, ZOO_DIR / f"{model}.onnx", input_shapes
        path = Path(model)
        return str(path.resolve()), path, input_shapes

    def model_path(self, model: str | Path) -> Path:
        return self.resolve(model)[1]

    def get(self, model: str | Path, target: str, input_shapes=None) -> Path:
        """Path of the exported ``.so`` (manifest beside it) for ``model`` on ``target``."""
        from lwc.driver import compile as lwc_compile

        name, path, shapes = self.resolve(model, input_shapes)
        frozen = tuple(sorted((k, tuple(v)) for k, v in (shapes or {}).items()))
        key = (name, target, frozen)
        if key not in self._done:
            out = self.root / target / f"{Path(name).stem}-{len(self._done)}.so"
            start = time.perf_counter()
            try:
                result = lwc_compile(path, target, shapes)
                compiled = time.perf_counter()
                self._done[key] = result.export(out)
                self.timings[key] = {
                    "compile_s": compiled - start,
                    "export_s": time.perf_counter() - compiled,
                }
            except Exception as err:
                self._done[key] = err
        done = self._done[key]
        if isinstance(done, BaseException):
            raise done
        return done


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """Session-wide folder for exported artifacts."""
    return tmp_path_factory.mktemp("artifacts")


_CACHES: list[ArtifactCache] = []


@pytest.fixture(scope="session")
def artifacts(artifacts_dir) -> ArtifactCache:
    """Session-scoped :class:`ArtifactCache`: ``artifacts.get("det", "arm64") -> Path``."""
    cache = ArtifactCache(artifacts_dir)
    _CACHES.append(cache)
    return cache


def pytest_terminal_summary(terminalreporter):
    """One line per artifact the cache built: compile and export seconds."""
    timings = {k: v for cache in _CACHES for k, v in cache.timings.items()}
    if not timings:
        return
    terminalreporter.section("lwc artifacts built (compile s + export s)")
    for (model, target, _), t in sorted(timings.items(), key=lambda kv: -sum(kv[1].values())):
        terminalreporter.write_line(
            f"{t['compile_s'] + t['export_s']:7.1f}s  {Path(model).stem} [{target}]  "
            f"(compile {t['compile_s']:.1f}s, export {t['export_s']:.1f}s)"
        )


# --------------------------------------------------------------------------- fixtures
# Tests reach the helpers above through fixtures, not ``from conftest import``: a second
# conftest.py in a subfolder would shadow the module name "conftest".


def host_as(cpu: str):
    """This machine's host preset with its CPU (``mcpu``) set to ``cpu`` (an LLVM CPU name),
    as lwc would resolve ``--target host`` on that CPU."""
    from dataclasses import replace

    from lwc.targets import host_preset

    host = host_preset()
    return replace(host, cpu=cpu, target={**host.target, "mcpu": cpu})


@pytest.fixture(scope="session", name="host_as")
def host_as_fixture():
    """:func:`host_as` (LLVM CPU name -> host preset for that CPU)."""
    return host_as


@pytest.fixture(scope="session")
def tol() -> dict[str, dict[str, float]]:
    """:data:`TOL`."""
    return TOL


@pytest.fixture(scope="session", name="elf_machine")
def elf_machine_fixture():
    """:func:`elf_machine` (path -> e_machine)."""
    return elf_machine


@pytest.fixture(scope="session")
def expected_e_machine() -> dict[str, int | None]:
    """:data:`EXPECTED_E_MACHINE` (target -> e_machine)."""
    return EXPECTED_E_MACHINE


@pytest.fixture(name="zoo_case")
def zoo_case_fixture(zoo_dir, zoo_name):
    """:func:`zoo_case` of ``zoo_name`` (give it with ``@pytest.mark.parametrize``)."""
    return zoo_case(zoo_name)


@pytest.fixture(scope="session", name="det_text_mask")
def det_text_mask_fixture() -> np.ndarray:
    """:func:`det_text_mask`."""
    return det_text_mask()


@pytest.fixture(scope="session")
def rec_decode(ocr_models):
    """``rec_decode(probs[T, C]) -> str``: greedy CTC decoding with the rec model's alphabet."""
    charset = rec_charset(ocr_models["rec"])
    return lambda probs: ctc_decode(probs, charset)


@pytest.fixture
def tmp(tmp_path) -> Path:
    """A fresh per-test folder for artifacts a test writes itself."""
    return tmp_path
