"""lwc's pass pipeline, as data.

A compile's graph work is four stages, each a list of passes run in order
(:func:`lwc.prepare.prepare` runs them):

1. ``sparsity`` (:mod:`lwc.sparsity_stage`): RemoveZeroChannels on the ONNX graph,
   DenseToSparse / Conv1x1ToSparse on the Relax module;
2. ``graph``: :data:`PASSES`, lwc's Relax passes, each with a predicate deciding from
   the preset and the :class:`~lwc.options.CompileOptions` whether it applies;
3. ``int8``: QDQ -> integer kernels (:func:`lwc.quantize.lowering_passes`), where the
   module has dequantize ops;
4. ``precision``: fp16 on CUDA targets (:func:`lwc.cuda.to_mixed_precision`).

Every pass's registered name (its class name) is what ``--disable-pass``, IR dumps
(``LWC_DUMP_IR=DIR``: the module after each pass, numbered across stages) and the compile
report use; :func:`check_pass_names` is the one check of those names. Every pass run gives
one :class:`~lwc.pass_records.PassRecord` (what it changed, what it declined and why),
read from the pass by :func:`lwc.pass_records.pass_outcome`. TVM's default lowering for
the target runs after the stages (:func:`lwc.tvm_compat.build`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lwc.errors import LwcError
from lwc.options import DEFAULT, CompileOptions
from lwc.pass_records import IrDump, PassRecord, run_pass, skipped
from lwc.targets import Preset


def _always(preset: Preset, options: CompileOptions) -> bool:
    return True


@dataclass(frozen=True)
class PassEntry:
    """One lwc pass: registered name, factory, and when it applies."""

    name: str
    factory: Callable[[Preset, CompileOptions], object]
    applies: Callable[[Preset, CompileOptions], bool] = _always


def _entry(cls, applies: Callable[[Preset, CompileOptions], bool] = _always) -> PassEntry:
    return PassEntry(cls.__name__, lambda preset, options: cls(), applies)


def _lwc_passes() -> list[PassEntry]:
    from lwc.passes.affine_symbolic_reshape import AffineSymbolicReshape
    from lwc.passes.canonicalize_clip import CanonicalizeClip
    from lwc.passes.canonicalize_min_max import CanonicalizeMinMax
    from lwc.passes.conv1d_to_conv2d import Conv1dToConv2d
    from lwc.passes.conv_transpose_to_conv import ConvTransposeToConv
    from lwc.passes.convert_conv_layout import ConvertConvLayout, layout_for
    from lwc.passes.fold_batch_norm import FoldBatchNorm
    from lwc.passes.fold_pad_into_conv import FoldPadIntoConv
    from lwc.passes.fuse_gelu import FuseGelu
    from lwc.passes.fuse_hard_sigmoid import FuseHardSigmoid
    from lwc.passes.fuse_hard_swish import FuseHardSwish
    from lwc.passes.fuse_layer_norm import FuseLayerNorm
    from lwc.passes.fuse_silu import FuseSilu
    from lwc.passes.fuse_transpose_into_matmul import FuseTransposeIntoMatmul
    from lwc.passes.merge_parallel_branches import MergeParallelBranches
    from lwc.passes.preserve_nan import PreserveNaN
    from lwc.passes.remove_no_ops import RemoveNoOps
    from lwc.passes.subsample_strided_conv1x1 import SubsampleStridedConv1x1

    return [
        # canonical forms first, so the fusions below see one spelling of each op
        _entry(CanonicalizeClip),
        _entry(CanonicalizeMinMax),
        _entry(RemoveNoOps),
        _entry(Conv1dToConv2d),  # conv1d as conv2d of height 1: conv2d's rules and layouts
        _entry(FoldPadIntoConv),
        # activation / normalization recognition (before folding eats their constants)
        _entry(FuseHardSwish),
        _entry(FuseHardSigmoid),
        _entry(FuseSilu),
        _entry(FuseGelu),
        _entry(FuseLayerNorm),
        # folding into conv / matmul weights
        _entry(FoldBatchNorm),
        # stride == kernel transposed convs (upsamplers) as 1x1 convs + depth-to-space (after
        # FoldBatchNorm folded into their weights)
        _entry(ConvTransposeToConv),
        # strided 1x1 convs (ResNet downsampling) read a subsampled copy of their input
        _entry(SubsampleStridedConv1x1),
        # parallel narrow convs / matmuls on one input -> one wider op + split (biases folded)
        _entry(MergeParallelBranches),
        # matmul reading a transposed operand in place (after RemoveNoOps merged permutes)
        _entry(FuseTransposeIntoMatmul),
        # conv layout per target, as measured (before PreserveNaN: ConvertLayout has no rule for where)
        PassEntry("ConvertConvLayout", lambda preset, options: ConvertConvLayout(
            layout_for(preset.features, options.conv_layout))),
        # NaN guards around the max/min-based ops that remain
        _entry(PreserveNaN),
        # last (the passes above match relax.reshape): reshapes of symbolic shapes as
        # injective kernels, which TVM fuses (a dynamic-dims compile)
        _entry(AffineSymbolicReshape),
    ]


#: lwc's Relax passes in pipeline order.
PASSES: list[PassEntry] = _lwc_passes()


def pass_names() -> list[str]:
    """The graph stage's pass names, in order."""
    return [p.name for p in PASSES]


def stage_pass_names() -> dict[str, list[str]]:
    """Every stage's pass names, in pipeline order: ``{"sparsity": [...], "graph": [...], ...}``."""
    from lwc import sparsity_stage
    from lwc.quantize import LOWERING_PASS_NAMES

    return {
        "sparsity": list(sparsity_stage.PASS_NAMES),
        "graph": pass_names(),
        "int8": list(LOWERING_PASS_NAMES),
        "precision": ["ToMixedPrecision"],
    }


def known_pass_names() -> list[str]:
    """Every name ``--disable-pass`` accepts, all stages, in pipeline order."""
    return [name for names in stage_pass_names().values() for name in names]


def check_pass_names(disabled) -> None:
    """The one check of ``--disable-pass`` names (before any long work).

    Raises:
        LwcError: one line naming the unknown passes and listing every pass by stage.
    """
    stages = stage_pass_names()
    known = {name for names in stages.values() for name in names}
    unknown = sorted(set(disabled) - known)
    if unknown:
        listing = "; ".join(f"{stage}: {', '.join(names)}" for stage, names in stages.items())
        raise LwcError(f"--disable-pass {', '.join(unknown)}: no such pass; passes by stage: {listing} "
                       "(or all: every graph-stage pass)")


def run_passes(mod, preset: Preset, disabled: tuple[str, ...] = (), options: CompileOptions = DEFAULT,
               dump: IrDump | None = None) -> tuple[object, list[PassRecord]]:
    """Run the graph stage (:data:`PASSES`) on a Relax module, recording what each pass did.

    Args:
        disabled: registered pass names to skip (``--disable-pass``; names of other
            stages are ignored here).
        options: the compile options the passes' factories and predicates read.
        dump: where IR dumps go (default: ``LWC_DUMP_IR``).
    Returns:
        (new module, one record per pass in pipeline order, disabled ones included).
    Raises:
        LwcError: ``disabled`` names a pass that does not exist in any stage.
    """
    check_pass_names(disabled)
    dump = dump if dump is not None else IrDump()
    dump("graph", "imported", mod)
    records: list[PassRecord] = []
    for entry in PASSES:
        if entry.name in disabled or not entry.applies(preset, options):
            why = "disabled (--disable-pass)" if entry.name in disabled else "not for this target"
            records.append(skipped("graph", entry.name, why))
            continue
        mod, record = run_pass("graph", entry.name, entry.factory(preset, options), mod, dump)
        records.append(record)
    return _drop_unused_functions(mod), records


def run_lwc_passes(mod, preset: Preset, disabled: tuple[str, ...] = ()) -> tuple[object, list[str]]:
    """:func:`run_passes` returning only the names of the passes applied, in order."""
    mod, records = run_passes(mod, preset, disabled)
    return mod, [r.name for r in records if not r.disabled]


def _drop_unused_functions(mod):
    """Remove TIR functions no longer called (e.g. the importer's Clip kernels)."""
    from tvm import relax

    return relax.transform.DeadCodeElimination()(mod)

