"""The ``lwc`` command: a thin argparse layer over the library.

Every subcommand parses arguments, calls one library function and prints. Errors caused
by input or environment (:class:`lwc.errors.LwcError`) print one line,
``lwc: error: ...``, and exit 2. Anything else prints ``lwc: internal error: ...`` and
exits 1 (``LWC_DEBUG=1`` shows the Python traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from lwc.errors import LwcError
from lwc.imports import import_without_torch


def _log(args, message: str) -> None:
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        print(message, file=sys.stderr, flush=True)


def _input_shapes(values: list[str] | None) -> dict[str, list]:
    """``--input-shape`` flags -> ``{name: [dim, ...]}``, a dim an int or ``(lo, hi)``."""
    from lwc.frontend import parse_input_shape

    shapes = {}
    for text in values or []:
        name, shape = parse_input_shape(text)
        shapes[name] = shape
    return shapes


def _input_values(values: list[str] | None) -> dict[str, str]:
    """``--input-value NAME=V[,V...]`` flags -> ``{name: text}`` (checked against the
    model's declared dtype and shape when it is loaded: :func:`lwc.input_values.resolve`)."""
    from lwc.input_values import parse

    return parse(values)


def add_input_value_argument(p: argparse.ArgumentParser) -> None:
    """``--input-value``, beside ``--input-shape`` (compile, tune, inspect)."""
    p.add_argument("--input-value", action="append", metavar="NAME=V[,V,...]",
                   help="bind an input to a constant, e.g. sr=16000 or pads=0,1,0,1 (dtype and "
                   "rank as the model declares them): it becomes a weight before folding, so an "
                   "If or shape computation on it folds, and the artifact no longer takes it "
                   "(the manifest's bound_inputs; lwc verify feeds it to onnxruntime); repeatable")


def load_input_files(values: list[str] | None) -> dict[str, np.ndarray]:
    """``--input NAME=FILE.npy`` (repeatable) -> arrays; a folder of NAME.npy also works.

    Raises:
        LwcError: malformed flag, missing or unreadable file.
    """
    arrays: dict[str, np.ndarray] = {}
    for text in values or []:
        if "=" not in text:
            path = Path(text)
            if path.is_dir():
                for f in sorted(path.glob("*.npy")):
                    arrays[f.stem] = np.load(f)
                continue
            raise LwcError(f"--input {text!r}: expected NAME=FILE.npy or a folder of NAME.npy files")
        name, _, file = text.partition("=")
        try:
            arrays[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise LwcError(f"--input {text!r}: cannot read {file}: {err}") from None
    return arrays


# --------------------------------------------------------------------------- commands



def cmd_compile(args) -> int:
    import_without_torch("tvm")  # 1.2 s of torch a compile does not use (lwc.imports)
    from lwc import driver, pipeline
    from lwc.targets import resolve

    # the cheap checks first: a bad target, model path, shape or flag is reported before
    # the progress line and the long work
    preset = resolve(args.target)
    check_model_path(args.model)
    shapes = _input_shapes(args.input_shape)
    values = _input_values(args.input_value)
    options = compile_options(args)
    pipeline.check_pass_names(options.disabled_passes)
    driver.check_cross_compiler(preset, args.cross_compiler)
    out = Path(args.output) if args.output else Path(Path(args.model).stem + ".so")
    if args.bundle:
        from lwc import bundle

        bundle.check_bundle_target(preset)  # before the long work
        out = bundle.bundle_dir_for(args.output, args.model)
    _log(args, f"lwc: compiling {args.model} for {args.target} ...")
    result = driver.compile(
        args.model,
        preset,
        shapes,
        options,
        cross_compiler=args.cross_compiler,
        tuning_log=args.tuning_log,
        use_tuning_logs=not args.no_tuning_log,
        input_values=values,
    )
    if args.bundle:
        return _write_bundle(args, result, out)
    link_start = time.perf_counter()
    path = result.export(out)
    link_s = time.perf_counter() - link_start
    manifest = result.describe()
    if args.report:
        from lwc.report import write_html

        _log(args, f"lwc: report written to {write_html(manifest, args.report)}")
    if args.json:
        print(json.dumps({"artifact": str(path), "manifest": str(path.with_suffix(".json")), **manifest,
                          "command_times_s": _times(result.build_time_s, link_s)}, indent=2))
        return 0
    for note in result.notes:
        _log(args, f"lwc: note: {note}")
    if result.quantization:
        from lwc.quantize import format_report

        _log(args, format_report(result.quantization))
    if not args.quiet and result.extra.get("tuning", {}).get("message"):
        print(f"lwc: {result.extra['tuning']['message']}")
    from lwc.sparsity_stage import summary_line

    sparse_line = summary_line(result.extra.get("sparsity"))
    if sparse_line and not args.quiet:
        print(f"lwc: {sparse_line}")
    size = path.stat().st_size
    print(
        f"wrote {path} ({size / 1e6:.2f} MB, {result.preset.arch}, target {result.preset.name}) "
        f"and {path.with_suffix('.json').name} in {_format_times(_times(result.build_time_s, link_s))}"
    )
    return 0


_MODULE_LOADED = time.perf_counter()


def _since_start() -> float:
    """Seconds since this process started (interpreter start-up and imports included):
    from /proc/self/stat where there is one, else since this module was imported."""
    fallback = time.perf_counter() - _MODULE_LOADED
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, since boot
        elapsed = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return fallback
    return elapsed if fallback <= elapsed < fallback + 600 else fallback


def _times(compile_s: float, link_s: float) -> dict:
    """The command's wall time and its parts: compile (the manifest's build_time_s),
    link (export: linking and writing the files) and the rest (interpreter start-up,
    importing TVM, argument checks)."""
    total = max(_since_start(), compile_s + link_s)
    return {"total": round(total, 3), "compile": round(compile_s, 3), "link": round(link_s, 3),
            "startup_and_other": round(total - compile_s - link_s, 3)}


def _format_times(t: dict, link: str = "link") -> str:
    return (f"{t['total']:.1f} s (compile {t['compile']:.1f} s, {link} {t['link']:.1f} s, "
            f"start-up and imports {t['startup_and_other']:.1f} s)")


def check_model_path(model: str) -> None:
    """The MODEL argument names a file.

    Raises:
        LwcError: it does not exist, or it is a folder (its .onnx files are named: one
            is suggested, several are listed).
    """
    path = Path(model)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.onnx") if p.is_file())
        if len(found) == 1:
            hint = f"did you mean {str(path / found[0])!r}?"
        elif found:
            more = ", ..." if len(found) > 8 else ""
            hint = f"it holds {len(found)} .onnx files: {', '.join(found[:8])}{more}"
        else:
            hint = "it holds no .onnx file"
        raise LwcError(f"model {model!r} is a directory, not an ONNX file; {hint}")
    if not path.exists():
        raise LwcError(f"model file {model!r} not found")


def _write_bundle(args, result, out: Path) -> int:
    from lwc import bundle

    _log(args, f"lwc: writing bundle {out}/ ...")
    link_start = time.perf_counter()
    written = bundle.write_bundle(result, out)
    link_s = time.perf_counter() - link_start
    if args.json:
        print(json.dumps({"bundle": str(written.path), "artifact": str(written.artifact),
                          "size_bytes": written.size_bytes, "files": list(written.files),
                          **result.describe()}, indent=2))
        return 0
    for note in result.notes:
        _log(args, f"lwc: note: {note}")
    print(
        f"wrote bundle {written.path}/ ({written.size_bytes / 1e6:.2f} MB: {written.artifact.name} "
        f"{written.artifact.stat().st_size / 1e6:.2f} MB + runtime, {result.preset.arch}, "
        f"target {result.preset.name}) in "
        f"{_format_times(_times(result.build_time_s, link_s), 'link and bundle')}"
    )
    return 0


def _default_tolerances(args) -> None:
    """Fill --atol/--rtol left unset from the artifact's kind (lwc.verify.default_tolerance)."""
    from lwc import artifact as art
    from lwc.verify import default_tolerance

    if args.atol is not None and args.rtol is not None:
        return
    atol, rtol, _ = default_tolerance(art.read_manifest(args.artifact))
    args.atol = atol if args.atol is None else args.atol
    args.rtol = rtol if args.rtol is None else args.rtol


def _verify_structure(args) -> int | None:
    """A CUDA artifact on a machine without a GPU: check its structure only (lwc.cuda)."""
    from lwc import artifact as art
    from lwc import cuda

    manifest = art.read_manifest(args.artifact)
    machine, arch = cuda.expected_layout(manifest)
    if arch is None or cuda.runs_here(machine):
        return None
    report = cuda.inspect_artifact(args.artifact, machine=machine, arch=arch)
    if args.json:
        print(json.dumps({"ok": report.ok, "structural_only": True, **report.to_json()}, indent=2))
    else:
        print(f"no GPU here: structural check only (expected {machine} host code, SASS for {arch})")
        for line in report.lines():
            print(f"  {line}")
        print(f"{'PASS' if report.ok else 'FAIL'} (structure): {args.artifact}")
    return 0 if report.ok else 1


def _quantize_options(args):
    """``--quantize int8`` and the calibration flags -> QuantizeOptions (None: fp32)."""
    from lwc.quantize import QuantizeOptions

    calib_flags = args.calib or args.calib_random or args.max_accuracy_drop is not None
    if args.quantize is None:
        if calib_flags:
            raise LwcError("--calib/--calib-random/--max-accuracy-drop need --quantize int8")
        return None
    return QuantizeOptions(calib=args.calib, calib_random=args.calib_random, method=args.calib_method,
                           max_accuracy_drop=args.max_accuracy_drop,
                           progress=not (args.quiet or args.json))


def add_graph_arguments(p: argparse.ArgumentParser) -> None:
    """The options that change the graph compile builds: --disable-pass, --quantize and its
    calibration flags, --sparsity. ``lwc compile`` and ``lwc tune`` share them, so a tuned
    graph is the compiled one (read back with :func:`compile_options`)."""
    p.add_argument("--disable-pass", action="append", metavar="NAME",
                   help="skip an lwc pass (repeatable); 'all' skips every pass of lwc's graph "
                   "pipeline (fusion, folding, layout, NaN guards) -- the baseline the compile "
                   "report's kernel counts compare with")
    p.add_argument("--quantize", choices=("int8",), help="int8 post-training quantization "
                   "(needs --calib DIR or --calib-random N)")
    p.add_argument("--calib", metavar="DIR", help="calibration samples: .npy/.npz files (or images "
                   "with Pillow: RGB, resized, mean=std=0.5, NCHW)")
    p.add_argument("--calib-method", default="percentile:99.99", metavar="METHOD",
                   help="minmax, percentile:P or entropy (TensorRT's KL) (default percentile:99.99)")
    p.add_argument("--calib-random", type=int, metavar="N",
                   help="calibrate on N random inputs (poor accuracy; for smoke tests)")
    p.add_argument("--max-accuracy-drop", type=float, metavar="X",
                   help="keep the most sensitive layers in fp32 until every output's "
                   "1 - cosine vs fp32 is <= X (e.g. 0.01)")
    p.add_argument("--conv-layout", metavar="NCHW|NHWC",
                   help="run convolutions in NCHW or NHWC instead of the layout measured best for "
                   "the target (ConvertConvLayout's table; for experiments)")
    p.add_argument("--no-schedule-rules", action="store_true",
                   help="leave kernels that no tuning record covers as TVM lowers them (one "
                   "thread, scalar) instead of scheduling them with lwc's CPU rules (for comparisons)")
    p.add_argument("--sparsity", choices=("auto", "off", "force"), default="auto",
                   help="exploit zero weights: remove all-zero channels, sparse kernels where faster "
                   "(auto, default), never (off), or always where possible (force)")


def compile_options(args):
    """The :class:`lwc.options.CompileOptions` given by :func:`add_graph_arguments`' flags
    (and ``--precision`` / ``--nvcc`` where the command has them): what ``lwc compile``
    and ``lwc tune`` pass on, and what keys a tuning log.

    Raises:
        LwcError: calibration flags without --quantize, a bad option value.
    """
    from lwc.options import CompileOptions

    return CompileOptions(
        disabled_passes=expand_disabled(args.disable_pass or ()),
        quantize=_quantize_options(args),
        sparsity=args.sparsity,
        conv_layout=args.conv_layout,
        precision=getattr(args, "precision", None) or "fp32",
        nvcc=getattr(args, "nvcc", None),
        schedule_rules=not getattr(args, "no_schedule_rules", False),
    )


def expand_disabled(names) -> tuple[str, ...]:
    """``--disable-pass`` values with ``all`` replaced by every pass of lwc's graph pipeline
    (:func:`lwc.pipeline.pass_names`; the sparsity stage and int8 lowering keep their own
    names), duplicates dropped, order kept."""
    from lwc import pipeline

    out: list[str] = []
    for name in names:
        for n in (pipeline.pass_names() if name.strip().lower() == "all" else [name]):
            if n not in out:
                out.append(n)
    return tuple(out)


def _verify_samples(args) -> int:
    from lwc.quantize import verify_samples

    report = verify_samples(args.model, args.artifact, args.inputs, min_cosine=args.min_cosine)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    for w in report["warnings"]:
        print(f"lwc: warning: {w}", file=sys.stderr)
    width = _name_width(report["outputs"], 28)
    print(f"{'output':<{width}} {'cosine mean':>12} {'cosine min':>11} {'max abs':>10} {'top-1 agree':>12}  result")
    for o in report["outputs"]:
        agree = "-" if o["top1_agreement"] is None else f"{o['top1_agreement']:.1%}"
        print(f"{o['name']:<{width}} {o['cosine_mean']:>12.6f} {o['cosine_min']:>11.6f} "
              f"{o['max_abs']:>10.3g} {agree:>12}  {'ok' if o['ok'] else 'FAIL'}")
    print(f"{'PASS' if report['ok'] else 'FAIL'}: {report['artifact']} ({report['target']}) vs "
          f"onnxruntime fp32 on {report['samples']} samples from {args.inputs} "
          f"(mean cosine >= {report['min_cosine']:g})")
    return 0 if report["ok"] else 1


def _name_width(outputs: list[dict], minimum: int) -> int:
    """Column width that fits every output name in full (no silent truncation)."""
    return max([minimum, *(len(o["name"]) for o in outputs)])


def cmd_verify(args) -> int:
    from lwc.verify import verify

    check_model_path(args.model)
    if args.inputs:
        return _verify_samples(args)
    structural = _verify_structure(args)
    if structural is not None:
        return structural
    _default_tolerances(args)
    report = verify(
        args.model, args.artifact, load_input_files(args.input),
        atol=args.atol, rtol=args.rtol, seed=args.seed,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for w in report["warnings"]:
            print(f"lwc: warning: {w}", file=sys.stderr)
        width = _name_width(report["outputs"], 24)
        print(f"{'output':<{width}} {'shape':<20} {'max abs':>10} {'max rel':>10} {'cosine':>10}  result")
        for o in report["outputs"]:
            print(
                f"{o['name']:<{width}} {str(o['shape']):<20} {o['max_abs']:>10.3g} "
                f"{o['max_rel']:>10.3g} {o['cosine']:>10.6f}  {'ok' if o['ok'] else 'MISMATCH'}"
            )
        verdict = "PASS" if report["ok"] else "FAIL"
        print(f"{verdict}: {report['artifact']} ({report['target']}) vs onnxruntime "
              f"(atol {args.atol:g}, rtol {args.rtol:g})")
    return 0 if report["ok"] else 1


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "output"


def cmd_run(args) -> int:
    from lwc import artifact as art

    artifact = art.load(args.artifact)
    outputs = artifact.run(load_input_files(args.input), seed=args.seed)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec, array in zip(artifact.outputs, outputs):
        path = out_dir / f"{_safe_name(spec['name'])}.npy"
        np.save(path, array)
        written.append({"name": spec["name"], "file": str(path), "shape": list(array.shape), "dtype": str(array.dtype)})
    if args.json:
        print(json.dumps({"outputs": written}, indent=2))
    else:
        for w in written:
            print(f"{w['name']}: {w['dtype']}{w['shape']} -> {w['file']}")
    return 0


def cmd_targets(args) -> int:
    from lwc.targets import all_presets

    presets = all_presets(include_cuda=True)  # cuda listed even without a local GPU
    if args.json:
        unavailable = {"available": False}  # cuda without a local GPU
        print(json.dumps([{**p.to_json(), **(unavailable if p.is_gpu and "arch" not in p.target else {})}
                          for p in presets], indent=2))
        return 0
    print(f"{'name':<18} {'triple':<20} {'cpu':<14} {'gpu':<7} {'features':<34} description")
    for p in presets:
        gpu = p.target.get("arch", "local") if p.is_gpu else "-"
        print(f"{p.name:<18} {p.triple:<20} {p.cpu:<14} {gpu:<7} {','.join(p.features):<34} {p.description}")
    print("\nAlso accepted: old-style TVM strings ('llvm -mtriple=aarch64-linux-gnu -mattr=+neon')"
          " and JSON target dicts.")
    return 0


def cmd_inspect(args) -> int:
    from lwc.summary import describe_model, format_summary

    check_model_path(args.model)
    info = describe_model(args.model, input_values=_input_values(args.input_value))
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lwc",
        description="Compile ONNX models into deployable shared libraries for edge CPUs and "
        "Jetson GPUs, on Apache TVM.",
        epilog="Example: lwc compile model.onnx --target arm64 --input-shape x:1,3,224,224 -o model.so",
    )
    from lwc import __version__

    parser.add_argument("--version", action="version", version=f"lwc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compile", help="compile an ONNX model into NAME.so + NAME.json",
                       description="Import an ONNX model, run lwc's passes, lower with TVM for "
                       "the target and export a shared library plus its manifest (written atomically).")
    p.add_argument("model", help="ONNX model file (external data is read from its folder)")
    p.add_argument("--target", "-t", default="host",
                   help="preset name (see `lwc targets`), old-style TVM string or JSON dict (default: host)")
    p.add_argument("--input-shape", action="append", metavar="NAME:D0,D1,...",
                   help="shape for an input; repeat for several inputs. A dim is a number or "
                   "an inclusive range LO..HI (x:1,3,48,96..1280): the artifact then accepts "
                   "any value in the range there (one artifact, checked at run time; the "
                   "manifest's input lists it under \"dims\")")
    add_input_value_argument(p)
    p.add_argument("-o", "--output", help="artifact path (default: MODEL.so in the current folder)")
    p.add_argument("--cross-compiler", metavar="CXX", help="C++ compiler that links the artifact "
                   "(default: the preset's, e.g. aarch64-linux-gnu-g++)")
    p.add_argument("--report", metavar="REPORT.html", help="write an HTML compile report (passes, "
                   "kernels with their ONNX nodes, graph); the same data is in the manifest's \"report\"")
    add_graph_arguments(p)
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="cuda targets: fp16 runs conv/matmul in fp16 (fp32 accumulation), "
                   "softmax and norms in fp32 (default fp32)")
    p.add_argument("--nvcc", metavar="PATH", help="cuda targets: the nvcc that compiles the "
                   "kernels (default: $CUDA_PATH/bin/nvcc or nvcc on PATH)")
    p.add_argument("--bundle", action="store_true",
                   help="write a deployable folder (-o DIR): NAME.so + NAME.json, lib/ with the "
                   "target's TVM runtime and liblwc_runtime.so, include/lwc_runtime.h, example/, "
                   "lwc_runtime.py")
    p.add_argument("--tuning-log", metavar="PATH", help="apply this tuning log folder (from `lwc tune`); "
                   "default: the one under tuning_logs/ matching model, shapes and target")
    p.add_argument("--no-tuning-log", action="store_true", help="apply no tuning records")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result line")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("verify", help="run an artifact and compare with onnxruntime",
                       description="Run ARTIFACT (in-process for host, under qemu-aarch64 for arm64) "
                       "and onnxruntime on MODEL with the same inputs; compare every output. "
                       "Exit status 1 on mismatch.")
    p.add_argument("model", help="the ONNX model the artifact was compiled from")
    p.add_argument("artifact", help="NAME.so (its NAME.json must be beside it)")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="input data (default: seeded N(0,1) random)")
    p.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance (default by artifact: CPU 1e-4, CUDA fp32 1e-3, CUDA fp16 0.15)")
    p.add_argument("--rtol", type=float, default=None,
                   help="relative tolerance (default by artifact: CPU 1e-4, CUDA fp32 1e-3, CUDA fp16 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs")
    p.add_argument("--inputs", metavar="DIR", help="a folder of samples (.npy/.npz, as --calib): "
                   "compare with the fp32 model per output (cosine, top-1 agreement); for int8 artifacts")
    p.add_argument("--min-cosine", type=float, default=None, help="pass bound for --inputs "
                   "(default: 1 - the artifact's --max-accuracy-drop, else 0.99)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("run", help="run an artifact on .npy inputs, write outputs as .npy",
                       description="Run ARTIFACT once and write each output to OUTPUT/<name>.npy.")
    p.add_argument("artifact")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="input data (default: seeded random)")
    p.add_argument("--output", "-o", default="out", help="folder for the outputs (default: out/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("targets", help="list target presets",
                       description="List the target presets with triple, CPU, GPU arch and ISA features.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("inspect", help="summarise an ONNX model",
                       description="Inputs/outputs (dynamic dims marked), op histogram, "
                       "parameters and the ops TVM cannot import.")
    p.add_argument("model")
    add_input_value_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    for module_name in _EXTRA_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


#: Modules that add subcommands: each has ``register(subparsers)``.
_EXTRA_MODULES: list[str] = ["lwc.cli_prune", "lwc.cli_tuning", "lwc.cli_audit"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # lwc's library warnings also print an "lwc: WARNING: ..." line where they are raised;
    # the CLI shows that line only, not Python's warning with a source line under it
    warnings.filterwarnings("ignore", category=UserWarning, module=r"lwc(\.|$)")
    try:
        return args.func(args)
    except LwcError as err:
        print(f"lwc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lwc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `lwc inspect model.onnx | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # never show a C++ stack trace to a user
        if os.environ.get("LWC_DEBUG"):
            raise
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        print(f"lwc: internal error: {type(err).__name__}: {lines[-1] if lines else ''} "
              "(set LWC_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
