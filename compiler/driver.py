"""The compile driver: ONNX model + target preset -> Relax executable -> artifact.

``lwc.compile(model, target="arm64", input_shapes={"x": [1, 3, 640, 640]})`` returns a
:class:`CompileResult` that can export itself (``NAME.so`` + manifest ``NAME.json``),
run on inputs and describe itself. The CLI (``lwc compile``) is a thin layer over it.

Flow, four stages (docs/architecture.md): checks before any long work (pass names, CUDA
toolkit, cross compiler: case F2) -> **prepare** (:func:`lwc.prepare.prepare`: import,
sparsity, graph passes, int8 lowering, precision) -> **schedule** (tuning records and
lwc's fixed schedules, :mod:`lwc.tuning`) -> **build** (``tvm.compile``) -> **artifact**
(:meth:`CompileResult.export`: ``NAME.so`` + ``NAME.json``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lwc import tvm_compat
from lwc.errors import LwcError
from lwc.frontend import ImportedModel
from lwc.options import CompileOptions, options_from
from lwc.targets import Preset

MANIFEST_FORMAT = 1


def _install_hint(preset: Preset) -> str:
    """The Debian package with a C++ compiler for the preset's CPU side.

    Keyed by the preset's architecture, not by the compiler's name: a mistyped
    ``--cross-compiler`` must still be told the right package.
    """
    if preset.arch == platform.machine():
        return "apt-get install g++"
    if preset.arch in ("aarch64", "arm64"):
        return "apt-get install g++-aarch64-linux-gnu"
    if preset.arch.startswith("arm"):
        return "apt-get install g++-arm-linux-gnueabihf"
    return f"apt-get install g++-{preset.arch}-linux-gnu"


def _linker_complaint(err: BaseException) -> str:
    """The informative line of a failed link (TVM's message ends with the command line)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Compilation error", "Command line:"))]
    errors = [ln for ln in useful if "error" in ln.lower() and not ln.startswith("collect2")]
    if errors:
        return errors[0]
    if useful:
        return useful[-1]
    return lines[-1] if lines else repr(err)


def check_cross_compiler(preset: Preset, override: str | None = None) -> str:
    """The C++ compiler that links artifacts for ``preset``, checked to exist.

    Args:
        override: ``--cross-compiler`` (a name on PATH or a path).

    Raises:
        LwcError: the compiler is not found; the message names it, the package to
            install and the ``--cross-compiler`` flag (case F2).
    """
    cxx = override or preset.cross_compiler
    if shutil.which(cxx) is None:
        raise LwcError(
            f"cross compiler {cxx!r} for {preset.arch} ({preset.name}) not found; install it "
            f"with `{_install_hint(preset)}` or point at one with --cross-compiler PATH"
        )
    machine = _compiler_machine(cxx)
    if machine and _normalize_arch(machine.split("-")[0]) != _normalize_arch(preset.arch):
        raise LwcError(
            f"compiler {cxx!r} builds for {machine}, but {preset.name} artifacts are "
            f"{preset.arch}; install `{_install_hint(preset)}` or point at an {preset.arch} "
            "compiler with --cross-compiler PATH"
        )
    return cxx


def _normalize_arch(arch: str) -> str:
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)


def _compiler_machine(cxx: str) -> str | None:
    """The target triple a GCC/Clang driver builds for (``-dumpmachine``), or None if unknown."""
    try:
        out = subprocess.run([cxx, "-dumpmachine"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and text else None


@dataclass
class CompileResult:
    """A compiled model: the Relax executable plus everything the manifest records.

    Attributes:
        executable: TVM ``relax.Executable``.
        preset: the target preset it was built for.
        model: the imported model (inputs/outputs with static shapes, sha256).
        cross_compiler: compiler used to link exported artifacts.
        passes: names of the passes applied, in order.
        build_time_s: import + passes + lowering + codegen time in seconds.
    """

    executable: object
    preset: Preset
    model: ImportedModel
    cross_compiler: str
    passes: list[str]
    build_time_s: float
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    pack_imports: object = None  # export_library's fpack_imports (CUDA: lwc.cuda.pack_imports)
    quantization: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """The manifest (JSON-serialisable dict) written beside the artifact."""
        return {
            "format": MANIFEST_FORMAT,
            "inputs": [s.to_json() for s in self.model.inputs],
            "outputs": [s.to_json() for s in self.model.outputs],
            "target": {
                "preset": self.preset.name,
                "tvm": self.preset.target,
                "triple": self.preset.triple,
                "arch": self.preset.arch,
                "cpu": self.preset.cpu,
                "features": list(self.preset.features),
                "cross_compiler": self.cross_compiler,
            },
            "versions": tvm_compat.versions(),
            "source_model": {
                "file": self.model.source.name if self.model.source else None,
                "sha256": self.model.sha256,
            },
            **({"bound_inputs": self.model.bound} if self.model.bound else {}),
            "passes": self.passes,
            "build_time_s": round(self.build_time_s, 3),
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "built_on": platform.node() and platform.machine(),
            "notes": self.notes,
            **self.extra,
            **({"quantization": self.quantization} if self.quantization else {}),
        }

    def export(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (.so) and its manifest (same name, .json) atomically.

        Both are written to temporary files in the destination folder and renamed into
        place only when both are complete; on any failure neither file is left behind.

        Returns:
            the artifact path.
        Raises:
            LwcError: linking failed (the linker's last line is kept), or the library would
                not load on the preset's board (:func:`lwc.audit.check_files`: ISA, glibc,
                PTX version).
        """
        path = Path(path)
        if path.suffix != ".so":
            path = path.with_name(path.name + ".so")
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path = path.with_suffix(".json")
        fd, tmp_so = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".so", dir=path.parent)
        os.close(fd)
        tmp_json = tmp_so[:-3] + ".json"
        try:
            fcompile = None if self.preset.is_native and self.cross_compiler == "g++" else (
                tvm_compat.cc.cross_compiler(self.cross_compiler)
            )
            try:
                self.executable.export_library(tmp_so, fcompile=fcompile, fpack_imports=self.pack_imports)
            except Exception as err:
                raise LwcError(
                    f"linking {path.name} with {self.cross_compiler} failed: "
                    f"{_linker_complaint(err)}"
                ) from None
            from lwc import audit  # the board checks, before anything is in place (lwc.audit)

            audit.check_files({path.name: Path(tmp_so)}, self.preset)
            Path(tmp_json).write_text(json.dumps(self.describe(), indent=2) + "\n")
            os.replace(tmp_so, path)
            os.replace(tmp_json, manifest_path)
        finally:
            for tmp in (tmp_so, tmp_json):
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return path

    def run(self, inputs: dict[str, np.ndarray] | None = None, seed: int = 0) -> list[np.ndarray]:
        """Run the model once; missing inputs get seeded random data.

        Host artifacts run in-process; others are exported to a temporary folder and run
        the way :func:`lwc.artifact.load` runs them (qemu-aarch64 for aarch64).
        """
        from lwc import artifact

        with tempfile.TemporaryDirectory(prefix="lwc-run-") as tmp:
            path = self.export(Path(tmp) / "model.so")
            return artifact.load(path).run(inputs, seed=seed)


def compile(  # noqa: A001  (the product's verb)
    model,
    target: str | Preset = "host",
    input_shapes: dict[str, list[int]] | None = None,
    options: CompileOptions | None = None,
    *,
    cross_compiler: str | None = None,
    tuning_log: str | None = None,
    use_tuning_logs: bool = True,
    input_values: dict | None = None,
    **option_fields,
) -> CompileResult:
    """Compile an ONNX model for a target: prepare -> schedule -> build -> artifact.

    Args:
        model: path to an .onnx file or an ``onnx.ModelProto``.
        target: preset name, old-style TVM target string, JSON target dict or a Preset.
        input_shapes: ``{input name: [d0, ...]}``; required for inputs with dynamic dims.
        options: the graph and kernel options (:class:`lwc.options.CompileOptions`:
            ``--disable-pass``, ``--quantize``, ``--sparsity``, ``--precision``,
            ``--conv-layout``, ``--nvcc``, ``--no-schedule-rules``). Its fields may be given as keywords instead
            (``compile(m, "arm64", disabled_passes=("PreserveNaN",))``), not both.
        cross_compiler: overrides the preset's C++ compiler (``--cross-compiler``).
        tuning_log: a tuning_logs/ folder to apply (``--tuning-log``); default: the
            matching one under tuning_logs/ if any.
        use_tuning_logs: False skips tuning records entirely (``--no-tuning-log``).
        input_values: ``{input name: value}`` (``{"sr": 16000}``, arrays for 1-D inputs)
            bound as constants before folding (``--input-value``, :mod:`lwc.input_values`):
            the artifact no longer takes them and its manifest records them
            (``"bound_inputs"``).

    Returns:
        a :class:`CompileResult` (nothing is written until ``export``).
    Raises:
        LwcError: unknown target or option, missing cross compiler, bad model or shapes,
            unsupported ops, or a TVM build failure (one line each).
    """
    from lwc import prepare as prepare_stage
    from lwc.tuning.apply import apply_records

    start = time.perf_counter()
    options = options_from(options, option_fields, "compile")
    preset = prepare_stage.resolve_target(target)
    prepare_stage.check(preset, options)  # before any long work: pass names, CUDA toolkit
    cxx = check_cross_compiler(preset, cross_compiler)

    # 1. prepare: import, sparsity, graph passes, int8 lowering, precision
    prepared = prepare_stage.prepare(
        model, preset, input_shapes, options,
        tuning_log=prepare_stage.log_lookup(preset, tuning_log, use_tuning_logs),
        input_values=input_values,
    )
    # 2. schedule: tuning records, then lwc's fixed schedules and CPU rules for the rest
    try:
        mod, tuning_info = apply_records(
            prepared.mod, preset, prepared.tvm_target, tuning_log=tuning_log,
            enabled=use_tuning_logs, model_key=prepared.model_key, rules=options.schedule_rules,
        )
    except LwcError:
        raise
    except Exception as err:  # noqa: BLE001  (TVM InternalError, bare asserts: one line)
        raise _lowering_error(prepared.mod, prepared.tvm_target, err) from None
    # 3. build
    executable = _build(mod, prepared)
    # 4. artifact (written by CompileResult.export)
    cuda_build = prepared.cuda_build
    return CompileResult(
        executable=executable,
        preset=preset,
        model=prepared.model,
        cross_compiler=cxx,
        passes=[*prepared.passes, "tvm.default_pipeline"],
        build_time_s=time.perf_counter() - start,
        notes=prepared.notes,
        quantization=prepared.quantization,
        extra={"tuning": tuning_info, "sparsity": prepared.sparsity, "report": prepared.report,
               **({"cuda": cuda_build.describe()} if cuda_build else {})},
        pack_imports=cuda_build.pack_imports() if cuda_build else None,
    )


def _lowering_error(mod, tvm_target, err: BaseException) -> LwcError:
    """One line for an exception from TVM's lowering, naming the Relax op that fails.

    The op is found by lowering each call of ``main`` alone (only on this failure path).
    """
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    why = lines[-1] if lines else type(err).__name__
    culprit = tvm_compat.failing_op(mod, tvm_target)
    where = f" {culprit}" if culprit else ""
    return LwcError(f"TVM cannot lower{where or ' the model'}: {why}")


def _build(mod, prepared):
    """``tvm.compile`` for the prepared target; LwcError naming the preset on failure."""
    try:
        return tvm_compat.build(mod, prepared.tvm_target)
    except LwcError:
        raise
    except Exception as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        raise LwcError(f"TVM build for {prepared.preset.name} failed: "
                       f"{lines[-1] if lines else err!r}") from None
