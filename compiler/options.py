"""The one value that says how a model is compiled: :class:`CompileOptions`.

Everything that changes the graph lwc builds or the kernels it schedules lives here, and
nowhere else: the CLI builds one from its flags (:func:`lwc.cli.compile_options`),
:func:`lwc.prepare.prepare`, :func:`lwc.driver.compile` and ``lwc tune`` take it, and the
tuning-log key is computed from it (:meth:`CompileOptions.variant`), so ``lwc tune`` and
``lwc compile`` given the same options name the same tuning log. No pass reads the
environment for a graph decision; ``LWC_DUMP_IR``-style switches only change what is
written for debugging.

Options that only say where things go or how to link (``--cross-compiler``,
``--tuning-log``, ``-o``) are not graph options and stay arguments of the stage that
uses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from lwc.errors import LwcError

#: ``--sparsity`` modes (:mod:`lwc.sparsity_stage`).
SPARSITY_MODES = ("auto", "off", "force")
#: ``--precision`` values (fp16: CUDA targets only, :mod:`lwc.cuda`).
PRECISIONS = ("fp32", "fp16")
#: ``--conv-layout`` values; None keeps ConvertConvLayout's measured per-target table.
CONV_LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class CompileOptions:
    """What changes the graph or the kernels of a compile.

    Attributes:
        disabled_passes: registered names of lwc passes to skip, from any stage
            (``--disable-pass``; ``all`` is expanded by the CLI).
        quantize: :class:`lwc.quantize.QuantizeOptions` for int8 post-training
            quantization (``--quantize int8``), or None.
        sparsity: ``auto``, ``off`` or ``force`` (``--sparsity``).
        precision: ``fp32`` or ``fp16`` (``--precision``; CUDA targets).
        conv_layout: ``NCHW`` or ``NHWC`` to override ConvertConvLayout's measured
            per-target choice (``--conv-layout``), None to keep it.
        nvcc: CUDA compiler for device code (``--nvcc``); None: found on PATH.
        schedule_rules: schedule kernels that no tuning record covers with lwc's CPU
            rules (:mod:`lwc.schedules`); False (``--no-schedule-rules``) lowers them as
            written, TVM's default (for comparisons).

    Raises (on construction):
        LwcError: an unknown sparsity mode, precision or conv layout.
    """

    disabled_passes: tuple[str, ...] = ()
    quantize: object = None
    sparsity: str = "auto"
    precision: str = "fp32"
    conv_layout: str | None = None
    nvcc: str | None = None
    schedule_rules: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "disabled_passes", tuple(self.disabled_passes or ()))
        if self.sparsity not in SPARSITY_MODES:
            raise LwcError(f"--sparsity {self.sparsity!r}: expected one of {', '.join(SPARSITY_MODES)}")
        if self.precision not in PRECISIONS:
            raise LwcError(f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.conv_layout is not None:
            layout = self.conv_layout.strip().upper()
            if layout not in CONV_LAYOUTS:
                raise LwcError(f"--conv-layout {self.conv_layout!r}: expected one of {', '.join(CONV_LAYOUTS)}")
            object.__setattr__(self, "conv_layout", layout)

    def replace(self, **changes) -> "CompileOptions":
        """A copy with ``changes`` applied (the options are frozen)."""
        return dataclasses.replace(self, **changes)

    def variant(self) -> dict:
        """The options that change the graph, as JSON data; ``{}`` for the defaults.

        This is what keys tuning logs (:func:`lwc.tuning.keys.model_key`): the quantizer
        enters by its :meth:`~lwc.quantize.QuantizeOptions.fingerprint` (calibration data
        by digest, not path). The keys and their spelling are those tuning logs were
        written with, so committed logs keep their folder names. ``nvcc`` (a compiler, not
        a graph) and ``schedule_rules`` (kernels *without* a record) are left out; fp16
        enters only where it is asked for.

        Raises:
            LwcError: the calibration folder does not exist.
        """
        options: dict = {}
        if self.quantize is not None:
            options["quantize"] = {"scheme": "int8", **self.quantize.fingerprint()}
        if self.sparsity != "auto":
            options["sparsity"] = self.sparsity
        if self.disabled_passes:
            options["disabled_passes"] = sorted(set(self.disabled_passes))
        if self.conv_layout:
            options["conv_layout"] = self.conv_layout
        if self.precision != "fp32":
            options["precision"] = self.precision
        return options

    def variant_key(self) -> str:
        """8 hex digits naming :meth:`variant`, ``""`` for the defaults.

        An int8 variant is named by its scheme only: the calibration (samples, method,
        accuracy bound) changes the scales, and the scales are not part of any kernel
        (:mod:`lwc.passes.lift_quant_params`), so a log tuned with one calibration set
        serves every other; kernels that do differ (a layer kept in fp32 by
        ``--max-accuracy-drop``) simply find no record. The manifest keeps the whole
        :meth:`variant`.
        """
        options = self.variant()
        if not options:
            return ""
        if "quantize" in options:
            options["quantize"] = {"scheme": options["quantize"]["scheme"]}
        return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]


#: The defaults: an fp32 compile with every pass, sparsity ``auto`` and the schedule rules.
DEFAULT = CompileOptions()


def options_from(options: CompileOptions | None, fields: dict, caller: str) -> CompileOptions:
    """``options``, or :class:`CompileOptions` made from keyword ``fields`` (the library
    calls accept either: ``compile(m, "arm64", sparsity="off")``).

    Raises:
        LwcError: both given, or a field that is not an option (``caller`` names the call).
    """
    if options is not None and fields:
        raise LwcError(f"{caller}: give options= or {', '.join(sorted(fields))}, not both")
    if options is not None:
        return options
    try:
        return CompileOptions(**fields)
    except TypeError as err:
        raise LwcError(f"{caller}: {err}") from None
