"""Options of ``--quantize int8`` (:class:`QuantizeOptions`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lwc import calibrate

DEFAULT_METHOD = "percentile:99.99"


@dataclass
class QuantizeOptions:
    """Options of ``--quantize int8``.

    Attributes:
        calib: folder of calibration samples (:func:`lwc.calibrate.load_samples`).
        calib_random: N random samples instead (warns loudly).
        method: ``minmax``, ``percentile:P`` or ``entropy``.
        max_accuracy_drop: bound on 1 - cosine(fp32, int8) of every output (mean over
            samples); layers fall back to fp32 until it holds. None: no fallback.
        metric: optional ``metric(fp32_outputs, int8_outputs) -> drop`` (lists over
            samples of lists of output arrays) replacing the cosine drop.
        exclude: ONNX node names to keep in fp32.
        max_samples: calibration samples used at most.
        preprocess: how image files become inputs.
        progress: show tqdm progress bars.
    """

    calib: str | Path | None = None
    calib_random: int | None = None
    method: str = DEFAULT_METHOD
    max_accuracy_drop: float | None = None
    metric: Callable | None = None
    exclude: tuple[str, ...] = ()
    max_samples: int = 256
    preprocess: calibrate.ImagePreprocess | None = None
    progress: bool = True

    def fingerprint(self) -> dict:
        """What decides the quantized graph, as JSON data (keys tuning logs).

        The calibration folder enters by the digest of its files
        (:func:`lwc.calibrate.folder_digest`), not by its path; ``progress`` is left out.
        A custom ``metric`` enters by its qualified name.
        """
        return {
            "calib": calibrate.folder_digest(self.calib) if self.calib is not None else None,
            "calib_random": self.calib_random,
            "method": str(calibrate.parse_method(self.method)),
            "max_accuracy_drop": self.max_accuracy_drop,
            "metric": None if self.metric is None else getattr(self.metric, "__qualname__", repr(self.metric)),
            "exclude": sorted(self.exclude),
            "max_samples": self.max_samples,
            "preprocess": (self.preprocess or calibrate.ImagePreprocess()).describe(),
        }
