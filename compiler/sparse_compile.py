"""The ``--sparsity`` stage of ``lwc compile``: make the model's zeros pay.

Runs between ONNX import and lwc's Relax passes:

1. analysis (:mod:`lwc.sparsity`) of every constant conv/dense/matmul weight, for the
   compile report;
2. RemoveZeroChannels (``passes/remove_zero_channels.py``) on the simplified ModelProto:
   exact, so it runs under ``auto`` and ``force``; when it removed anything the model is
   re-imported to Relax;
3. DenseToSparse (``passes/dense_to_sparse.py``) on the Relax module: matmuls with a
   block-sparse constant weight become a BSR TIR kernel where the block density is low
   enough to beat the dense kernel (``auto``), or wherever a zero block exists (``force``).

Modes: ``auto`` (exploit what is there where it pays), ``force`` (same, for tests and
measurements), ``off`` (nothing; the report still carries the analysis).
"""

from __future__ import annotations

import dataclasses

from lwc import sparsity
from lwc.errors import LwcError

MODES = ("auto", "off", "force")


def apply(imported, mode: str = "auto"):
    """(imported model after the sparsity stage, report dict with the passes applied)."""
    if mode not in MODES:
        raise LwcError(f"--sparsity {mode!r}: expected one of {', '.join(MODES)}")
    proto = imported.onnx_model
    layers = sparsity.analyze(proto)
    info = {"mode": mode, "analysis": sparsity.summarize(layers), "passes": [], "relax_passes": []}
    if mode == "off" or not layers:
        return imported, info
    from lwc.frontend import to_relax
    from lwc.passes.remove_zero_channels import RemoveZeroChannels

    pass_ = RemoveZeroChannels()
    shrunk = pass_(proto)
    report = pass_.last_report
    info["remove_zero_channels"] = report.to_json()
    if report.total_removed:
        info["flops_before"] = sparsity.count_flops(proto)
        info["flops_after"] = sparsity.count_flops(shrunk)
        info["weight_bytes_before"] = sparsity.weight_bytes(proto)
        info["weight_bytes_after"] = sparsity.weight_bytes(shrunk)
        info["passes"].append(RemoveZeroChannels.name)
        imported = dataclasses.replace(imported, onnx_model=shrunk, mod=to_relax(shrunk, imported.inputs))
    return _dense_to_sparse(imported, mode, info)


def _dense_to_sparse(imported, mode: str, info: dict):
    """Relax: block-sparse constant matmul weights -> the BSR TIR kernel, per layer."""
    from lwc.passes.dense_to_sparse import DenseToSparse

    pass_ = DenseToSparse(mode)
    mod = pass_(imported.mod)
    info["dense_to_sparse"] = [d.to_json() for d in pass_.decisions]
    if mod is not imported.mod:
        info["relax_passes"].append(DenseToSparse.name)
        imported = dataclasses.replace(imported, mod=mod)
    return imported, info
