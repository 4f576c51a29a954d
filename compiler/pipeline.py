"""lwc's pass pipeline, as data.

:data:`PASSES` lists lwc's own Relax passes in the order they run, each with a predicate
deciding from the preset and options whether it applies. Passes live in ``lwc.passes``
(one per file); their registered TVM pass name is what ``--disable-pass``, IR dumps
(``LWC_DUMP_IR=DIR``) and the compile report use. TVM's default lowering for the target
runs after them (:func:`lwc.tvm_compat.build`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lwc.errors import LwcError
from lwc.targets import Preset


@dataclass(frozen=True)
class PassEntry:
    """One lwc pass: registered name, factory, and when it applies."""

    name: str
    factory: Callable[[Preset], object]
    applies: Callable[[Preset], bool] = lambda preset: True


#: lwc's Relax passes in pipeline order (filled in by lwc.passes modules).
PASSES: list[PassEntry] = []


def pass_names() -> list[str]:
    return [p.name for p in PASSES]


def run_lwc_passes(mod, preset: Preset, disabled: tuple[str, ...] = ()) -> tuple[object, list[str]]:
    """Apply lwc's passes to a Relax module.

    Args:
        disabled: registered pass names to skip (``--disable-pass``).
    Returns:
        (new module, names of the passes applied in order).
    Raises:
        LwcError: ``disabled`` names a pass that does not exist.
    """
    unknown = sorted(set(disabled) - set(pass_names()))
    if unknown:
        raise LwcError(
            f"--disable-pass {', '.join(unknown)}: no such pass; passes: "
            + (", ".join(pass_names()) or "(none)")
        )
    dump_dir = os.environ.get("LWC_DUMP_IR")
    if dump_dir:
        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        _dump(Path(dump_dir), 0, "imported", mod)
    applied = []
    for entry in PASSES:
        if entry.name in disabled or not entry.applies(preset):
            continue
        mod = entry.factory(preset)(mod)
        applied.append(entry.name)
        if dump_dir:
            _dump(Path(dump_dir), len(applied), entry.name, mod)
    return mod, applied


def _dump(folder: Path, index: int, name: str, mod) -> None:
    (folder / f"{index:02d}_{name}.py").write_text(mod.script())
