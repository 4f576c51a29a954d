"""Calibration: sample inputs, and the activation ranges observed on them.

Inputs (:func:`load_samples`), from a folder:

* ``*.npy``: one array per file for a single-input model, shaped like the input
  (one sample) or ``[N, *input_shape[1:]]`` / ``[N, *input_shape]`` (N samples).
* ``*.npz``: one archive per sample (or per batch, same rules), keys = input names.
* images (``.png .jpg .jpeg .bmp``, needs Pillow): the stated preprocessing of
  :class:`ImagePreprocess`: convert to RGB, resize to the input's H x W (bilinear), scale
  to [0, 1], ``(x - mean) / std`` per channel, NCHW float32. The default mean = std = 0.5
  is PaddleOCR's; ImageNet models want ``ImagePreprocess.imagenet()``.

:func:`random_samples` (``--calib-random N``) draws N(0, 1) data and warns loudly: the
ranges it gives describe noise, not the model's real activations.

Observation (:func:`observe`) runs the fp32 model in onnxruntime once per sample with
every tensor to calibrate added as a graph output (exact fp32 values, no TVM compile),
behind a tqdm progress bar. Methods (:func:`parse_method`):

* ``minmax``: the smallest and largest value seen (onnxruntime's default).
* ``percentile:P``: clip each tail at its P-th percentile over all samples (2048-bin
  histograms, as onnxruntime's ``PercentileCalibrater`` does for |x|).
* ``entropy``: TensorRT's KL-divergence calibration (S. Migacz, "8-bit Inference with
  TensorRT", GTC 2017; also onnxruntime's ``EntropyCalibrater``): a 2048-bin histogram of
  |x|; for each candidate threshold i (128..2048 bins) the clipped distribution P (the
  tail folded into bin i-1) is compared with Q, P merged into 128 levels and expanded
  back over P's non-empty bins; the threshold with the least KL(P || Q) wins.

Ranges always contain 0 (so 0 is exact, as ONNX QuantizeLinear requires). Percentile and
entropy clip the positive and the negative tail separately (one histogram per sign), so a
mostly-positive tensor keeps its asymmetric uint8 range.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lwc.errors import LwcError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
NUM_BINS = 2048
NUM_QUANT_BINS = 128


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ImagePreprocess:
    """How an image file becomes an input tensor (stated in the compile report)."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    layout: str = "NCHW"

    @staticmethod
    def imagenet() -> "ImagePreprocess":
        return ImagePreprocess((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

    def describe(self) -> str:
        return (f"RGB, resized to the input's HxW (bilinear), /255, mean {list(self.mean)}, "
                f"std {list(self.std)}, {self.layout}")

    def load(self, path: Path, shape: tuple) -> np.ndarray:
        try:
            from PIL import Image
        except ImportError:
            raise LwcError(f"{path.name}: reading images needs Pillow (pip install pillow); "
                           "or give .npy/.npz files") from None
        h, w = (shape[2], shape[3]) if self.layout == "NCHW" else (shape[1], shape[2])
        img = Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR)
        x = (np.asarray(img, np.float32) / 255.0 - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        x = x[None]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "NCHW" else x)


def _split(array: np.ndarray, spec, origin: str) -> list[np.ndarray]:
    """One array -> samples shaped like ``spec`` (see the module docstring)."""
    shape = tuple(spec.shape)
    if np.dtype(array.dtype) != np.dtype(spec.dtype):
        if np.issubdtype(array.dtype, np.floating) and np.issubdtype(np.dtype(spec.dtype), np.floating):
            array = array.astype(spec.dtype)
        else:
            raise LwcError(f"{origin}: dtype {array.dtype}, but input {spec.name!r} is {spec.dtype}")
    if array.shape == shape:
        return [array]
    if array.ndim == len(shape) + 1 and array.shape[1:] == shape:
        return list(array)
    if shape and shape[0] == 1 and array.ndim == len(shape) and array.shape[1:] == shape[1:]:
        return [a[None] for a in array]
    raise LwcError(
        f"{origin}: shape {list(array.shape)} does not fit input {spec.name!r} of shape "
        f"{list(shape)} (give {list(shape)}, or [N, ...] stacks of it)"
    )


def load_samples(folder: str | Path, inputs: list, preprocess: ImagePreprocess | None = None,
                 limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """Calibration samples ``[{input name: array}, ...]`` from a folder.

    Args:
        inputs: the model's input specs (name, static shape, dtype).
        limit: keep at most this many samples (files in name order).
    Raises:
        LwcError: missing/empty folder, unreadable file, or a file whose names, shapes or
            dtypes do not fit the inputs (the message names the file and the expected shape).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LwcError(f"calibration folder {str(folder)!r} not found")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".npy", ".npz", *IMAGE_SUFFIXES))
    if not files:
        expected = ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in inputs)
        raise LwcError(f"calibration folder {str(folder)!r} has no .npy/.npz/image files; "
                       f"expected samples for: {expected}")
    samples: list[dict[str, np.ndarray]] = []
    by_name = {s.name: s for s in inputs}
    for f in files:
        samples.extend(_load_file(f, inputs, by_name, preprocess or ImagePreprocess()))
        if limit and len(samples) >= limit:
            return samples[:limit]
    return samples


def folder_digest(folder: str | Path) -> str:
    """sha256 (hex) of the files :func:`load_samples` reads from ``folder``: names and bytes.

    Two folders with the same sample files give the same digest wherever they lie; it
    keys tuning logs of quantized graphs (the scales, hence the graph, depend on the data).

    Raises:
        LwcError: the folder does not exist.
    """
    import hashlib

    folder = Path(folder)
    if not folder.is_dir():
        raise LwcError(f"calibration folder {str(folder)!r} not found")
    digest = hashlib.sha256()
    for f in sorted(f for f in folder.iterdir() if f.suffix.lower() in (".npy", ".npz", *IMAGE_SUFFIXES)):
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _load_file(f: Path, inputs: list, by_name: dict, preprocess: ImagePreprocess) -> list[dict]:
    if f.suffix.lower() in IMAGE_SUFFIXES or f.suffix == ".npy":
        if len(inputs) != 1:
            raise LwcError(f"{f.name}: the model has {len(inputs)} inputs "
                           f"({', '.join(by_name)}); give .npz files with one key per input")
        spec = inputs[0]
        if f.suffix == ".npy":
            try:
                array = np.load(f, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise LwcError(f"{f.name}: cannot read ({err})") from None
        else:
            array = preprocess.load(f, spec.shape)
        return [{spec.name: a} for a in _split(array, spec, f.name)]
    try:
        archive = dict(np.load(f, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise LwcError(f"{f.name}: cannot read ({err})") from None
    if set(archive) != set(by_name):
        raise LwcError(f"{f.name}: keys {sorted(archive)}, but the model's inputs are "
                       + ", ".join(f"{s.name} {list(s.shape)}" for s in inputs))
    split = {name: _split(archive[name], by_name[name], f"{f.name}[{name}]") for name in by_name}
    counts = {len(v) for v in split.values()}
    if len(counts) != 1:
        raise LwcError(f"{f.name}: inputs hold different numbers of samples")
    return [{name: split[name][i] for name in by_name} for i in range(counts.pop())]


def random_samples(inputs: list, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` N(0, 1) samples, with a loud warning (``--calib-random N``)."""
    message = (f"calibrating on {count} random N(0,1) inputs: the ranges describe noise, not "
               "your data, and int8 accuracy on real inputs will be poor. Use --calib DIR "
               "with real samples.")
    warnings.warn(message, stacklevel=2)
    print(f"lwc: WARNING: {message}", file=sys.stderr, flush=True)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        sample = {}
        for spec in inputs:
            dt = np.dtype(spec.dtype)
            if np.issubdtype(dt, np.floating):
                sample[spec.name] = rng.standard_normal(spec.shape).astype(dt)
            else:
                sample[spec.name] = rng.integers(0, 10, spec.shape).astype(dt)
        out.append(sample)
    return out


def calibration_samples(inputs: list, calib: str | Path | None, calib_random: int | None,
                        preprocess: ImagePreprocess | None = None,
                        limit: int | None = None) -> tuple[list[dict], str]:
    """The samples of ``--calib DIR`` (:func:`load_samples`) or ``--calib-random N``
    (:func:`random_samples`), and a label of their source for the report.

    Raises:
        LwcError: both or neither given, or :func:`load_samples`'s errors.
    """
    if calib is not None and calib_random:
        raise LwcError("give either --calib DIR or --calib-random N, not both")
    if calib is not None:
        return load_samples(calib, inputs, preprocess, limit), f"{calib}"
    if calib_random:
        return random_samples(inputs, calib_random), f"random N(0,1) x{calib_random}"
    raise LwcError("--quantize int8 needs calibration data: --calib DIR (.npy/.npz/images) "
                   "or --calib-random N (poor accuracy)")


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A calibration method: ``minmax``, ``percentile`` (with ``percentile``) or ``entropy``."""

    name: str
    percentile: float = 99.99

    def __str__(self) -> str:
        return f"percentile:{self.percentile:g}" if self.name == "percentile" else self.name


def parse_method(text: str) -> Method:
    """``minmax`` | ``percentile[:P]`` | ``entropy`` (``--calib-method``)."""
    name, _, arg = text.partition(":")
    name = name.strip().lower().replace("-", "")
    if name == "minmax" and not arg:
        return Method("minmax")
    if name in ("entropy", "kl") and not arg:
        return Method("entropy")
    if name == "percentile":
        try:
            p = float(arg) if arg else 99.99
        except ValueError:
            p = -1.0
        if not 50.0 < p <= 100.0:
            raise LwcError(f"--calib-method {text!r}: percentile must be in (50, 100], e.g. percentile:99.99")
        return Method("percentile", p)
    raise LwcError(f"--calib-method {text!r}: expected minmax, percentile:P (e.g. percentile:99.99) or entropy")


def percentile_threshold(hist: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    """|x| value below which ``percentile`` % of the histogram's mass lies."""
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    idx = int(np.searchsorted(cdf, percentile / 100.0))
    return float(edges[min(idx + 1, len(edges) - 1)])


def entropy_threshold(hist: np.ndarray, edges: np.ndarray, stride: int = 16) -> float:
    """TensorRT's KL-divergence threshold over a histogram of |x| (module docstring)."""
    hist = hist.astype(np.float64)
    n = len(hist)
    if hist.sum() == 0:
        return float(edges[-1])
    best_kl, best_i = np.inf, n
    for i in range(NUM_QUANT_BINS, n + 1, stride):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nonzero = hist[:i] > 0
        # merge hist[:i] into NUM_QUANT_BINS levels, expand over the non-empty bins
        bounds = np.linspace(0, i, NUM_QUANT_BINS + 1).astype(int)
        q = np.zeros(i)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            nz = nonzero[lo:hi].sum()
            if nz:
                q[lo:hi] = np.where(nonzero[lo:hi], hist[lo:hi].sum() / nz, 0.0)
        p_sum, q_sum = p.sum(), q.sum()
        if q_sum == 0:
            continue
        p, q = p / p_sum, q / q_sum
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


# --------------------------------------------------------------------------- observing


def _ort_session(model, outputs: list[str]):
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in outputs:
        if name not in have:
            probe.graph.output.add().name = name
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_with_intermediates(model, samples: list[dict], names: list[str], progress: bool = False,
                           desc: str = "calibrating"):
    """Yield ``{tensor name: value}`` per sample for the fp32 ONNX model (onnxruntime)."""
    from tqdm import tqdm

    sess = _ort_session(model, names)
    for sample in tqdm(samples, desc=desc, disable=not progress, file=sys.stderr, leave=False):
        values = sess.run(names, sample)
        yield dict(zip(names, values))


def _bin_counts(v: np.ndarray, top: float) -> np.ndarray:
    """Counts of the positive values of ``v`` in NUM_BINS equal bins over (0, top]."""
    v = v[v > 0]
    idx = np.minimum((v * (NUM_BINS / top)).astype(np.int64), NUM_BINS - 1)
    return np.bincount(idx, minlength=NUM_BINS)


def observe(model, samples: list[dict], names: list[str], method: Method,
            progress: bool = True) -> dict[str, tuple[float, float]]:
    """Activation range ``(lo, hi)`` of each tensor in ``names`` over ``samples``.

    Raises:
        LwcError: no samples, or onnxruntime cannot run the model on them.
    """
    if not samples:
        raise LwcError("no calibration samples")
    lo = {n: 0.0 for n in names}
    hi = {n: 0.0 for n in names}
    try:
        for values in run_with_intermediates(model, samples, names, progress, "calibrating (ranges)"):
            for n, v in values.items():
                lo[n] = min(lo[n], float(np.min(v)))
                hi[n] = max(hi[n], float(np.max(v)))
        if method.name == "minmax":
            return {n: (lo[n], hi[n]) for n in names}
        # one histogram per sign: the two tails are clipped separately
        pos = {n: np.zeros(NUM_BINS, np.int64) for n in names}
        neg = {n: np.zeros(NUM_BINS, np.int64) for n in names}
        pos_edges = {n: np.linspace(0.0, max(hi[n], 1e-8), NUM_BINS + 1) for n in names}
        neg_edges = {n: np.linspace(0.0, max(-lo[n], 1e-8), NUM_BINS + 1) for n in names}
        for values in run_with_intermediates(model, samples, names, progress, f"calibrating ({method})"):
            for n, v in values.items():
                v = v.ravel()
                pos[n] += _bin_counts(v, pos_edges[n][-1])
                neg[n] += _bin_counts(-v, neg_edges[n][-1])
    except LwcError:
        raise
    except Exception as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        raise LwcError(f"onnxruntime failed on the calibration samples: {lines[0] if lines else err!r}") from None
    ranges = {}
    for n in names:
        if method.name == "percentile":
            t_pos = percentile_threshold(pos[n], pos_edges[n], method.percentile)
            t_neg = percentile_threshold(neg[n], neg_edges[n], method.percentile)
        else:
            t_pos = entropy_threshold(pos[n], pos_edges[n])
            t_neg = entropy_threshold(neg[n], neg_edges[n])
        ranges[n] = (max(lo[n], -t_neg) if lo[n] < 0 else 0.0, min(hi[n], t_pos) if hi[n] > 0 else 0.0)
    return ranges
