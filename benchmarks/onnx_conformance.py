"""ONNX conformance: the ONNX backend node tests through lwc (and onnxruntime for scale).

Every case is a one-node (or one function, ``*_expanded``) model with its inputs and
expected outputs, from ``onnx/backend/test/data/node`` in the onnx package. Wheels that
ship without that folder get it generated once from onnx's own case definitions
(``onnx.backend.test.case.node``, the code that writes the shipped folder) into
``~/.cache/lwc/onnx-node-tests-<onnx version>``.

For each applicable case (the rule: :func:`applicable`) and each backend:

* lwc: ``lwc.driver.compile(model.onnx, target="host", input_shapes=<shapes of the test
  inputs>)``, the artifact exported and run through ``lwc.artifact`` (``CompileResult.run``);
* ort: ``onnxruntime.InferenceSession`` on the CPU provider;

the outputs are compared as onnx's backend runner does (``assert_similar_outputs``): same
count, shape and dtype, then ``np.testing.assert_allclose(rtol=1e-3, atol=1e-7)`` (NaNs
equal). Each case runs in a worker process with a timeout; a crash or hang costs that case
and a fresh worker, never the run.

    .venv/bin/python benchmarks/onnx_conformance.py [--filter REGEX] [--jobs N]
        [--timeout S] [--backends lwc,ort]

Writes ``benchmarks/onnx_conformance.json`` (per case and backend: status, failure class,
one-line reason) and ``benchmarks/onnx_conformance.md`` (pass rates, failures by class,
the list of remaining failures). With ``--filter`` the matching cases are re-run and
merged into the existing JSON.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import multiprocessing as mp
import os
import re
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_JSON = ROOT / "benchmarks" / "onnx_conformance.json"
OUT_MD = ROOT / "benchmarks" / "onnx_conformance.md"
RTOL, ATOL = 1e-3, 1e-7
BACKENDS = ("lwc", "ort")
#: ops whose outputs are random by the spec: a fixed expected output cannot be matched
RANDOM_OPS = {"Bernoulli", "RandomNormal", "RandomUniform", "RandomNormalLike",
              "RandomUniformLike", "Multinomial"}
#: TensorProto element types numpy has no dtype for (bfloat16, float8, 4-bit, 2-bit)
_NUMPYLESS = ("BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
              "FLOAT8E8M0", "INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
APPLICABLE_RULE = """\
A case is **applicable** when all of these hold (otherwise it is listed as excluded, with
the first rule it breaks):

1. every graph input and output is a tensor (no sequence, optional or map types);
2. no graph input or output has string dtype;
3. no graph input or output has a dtype numpy cannot hold (bfloat16, float8 variants,
   int4/uint4, float4, int2/uint2): lwc's artifacts take and return numpy arrays;
4. every node is in the default ONNX domain (``ai.onnx.ml``, ``ai.onnx.preview`` and the
   training ops of ``ai.onnx.preview.training`` are out of scope for an inference compiler);
5. no node is random by the spec (Bernoulli, RandomNormal/Uniform[Like], Multinomial):
   its expected output is one draw of an implementation-defined generator.
"""


# --------------------------------------------------------------------------- cases


def node_test_dir() -> Path:
    """The node-test folder of the installed onnx, generated into a cache if not shipped."""
    import onnx

    shipped = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
    if shipped.is_dir() and any(shipped.iterdir()):
        return shipped
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    folder = cache / "lwc" / f"onnx-node-tests-{onnx.__version__}"
    if not (folder / "node").is_dir():
        _generate_node_tests(folder)
    return folder / "node"


def _generate_node_tests(folder: Path) -> None:
    """Write the node cases with onnx's own generator (cmd_tools.generate_data)."""
    import types

    import onnx.backend.test.case.node as node_cases
    from onnx.backend.test import cmd_tools

    print(f"generating onnx node tests into {folder} ...", file=sys.stderr)
    tmp = folder.with_name(folder.name + ".tmp")
    cmd_tools.model_test = types.SimpleNamespace(collect_testcases=node_cases.collect_testcases)
    cmd_tools.generate_data(argparse.Namespace(output=str(tmp)))
    tmp.rename(folder)


def _all_nodes(graph):
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def applicable(model) -> str | None:
    """None when the case is applicable, else the rule it breaks (APPLICABLE_RULE)."""
    from onnx import TensorProto

    values = list(model.graph.input) + list(model.graph.output)
    if any(v.type.WhichOneof("value") != "tensor_type" for v in values):
        return "non-tensor input/output (sequence, optional or map)"
    elem = {v.type.tensor_type.elem_type for v in values}
    if TensorProto.STRING in elem:
        return "string dtype"
    numpyless = {getattr(TensorProto, n) for n in _NUMPYLESS if hasattr(TensorProto, n)}
    if elem & numpyless:
        return "dtype without a numpy equivalent (bfloat16, float8, int4, ...)"
    nodes = list(_all_nodes(model.graph))
    domains = sorted({n.domain for n in nodes} - {"", "ai.onnx"})
    if domains:
        return f"non-default domain ({', '.join(domains)})"
    if any(n.op_type in RANDOM_OPS for n in nodes):
        return "random op (expected output is one draw)"
    return None


def load_case(case_dir: str):
    """(model, [(inputs by name, expected outputs)]) of one node-test folder."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.path.join(case_dir, "model.onnx"))
    init = {t.name for t in model.graph.initializer}
    in_names = [v.name for v in model.graph.input if v.name not in init]
    sets = []
    for ds in sorted(glob.glob(os.path.join(case_dir, "test_data_set_*"))):
        ins = [numpy_helper.to_array(onnx.load_tensor(p))
               for p in sorted(glob.glob(os.path.join(ds, "input_*.pb")), key=_pb_index)]
        outs = [numpy_helper.to_array(onnx.load_tensor(p))
                for p in sorted(glob.glob(os.path.join(ds, "output_*.pb")), key=_pb_index)]
        sets.append((dict(zip(in_names, ins)), outs))
    return model, sets


def _pb_index(path: str) -> int:
    return int(re.search(r"_(\d+)\.pb$", path).group(1))


# --------------------------------------------------------------------------- comparing


def compare(got: list, want: list) -> tuple[str, str] | None:
    """None when equal as onnx's runner judges; else (failure class, reason)."""
    import numpy as np

    if len(got) != len(want):
        return "wrong output count", f"{len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        g = np.asarray(g)
        if g.shape != w.shape:
            return "wrong shape", f"output {i}: shape {list(g.shape)}, expected {list(w.shape)}"
        if g.dtype != w.dtype:
            return "wrong dtype", f"output {i}: dtype {g.dtype}, expected {w.dtype}"
        try:
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
        except AssertionError as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = "; ".join(ln for ln in lines if ln.startswith(("Mismatched", "Max abs")))
            return "wrong values", f"output {i}: {detail or 'values differ'}"
    return None


def _one_line(text: str, limit: int = 240) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------- backends


def classify_lwc_error(stage: str, err: BaseException) -> str:
    """The failure class of an exception from lwc's compile or run."""
    from lwc.errors import LwcError

    text = str(err)
    if not isinstance(err, LwcError):
        return f"{stage}: uncaught {type(err).__name__}"
    if stage == "run":
        return "run: refused or failed"
    if "unsupported op type" in text:
        return "unsupported op"
    if "TVM's ONNX importer failed" in text or text.startswith("cannot import node"):
        return "converter error"
    if "dynamic shape" in text or "zero-size" in text or "zero size" in text:
        return "dynamic / zero-size shape refused"
    if "ONNX checker" in text:
        return "ONNX checker"
    if text.startswith("TVM cannot lower"):
        return "TVM lowering error"
    if "TVM build" in text:
        return "TVM build error"
    return "compile: other lwc error"


def run_lwc(case_dir: str) -> dict:
    """Compile with the test inputs' shapes and run; on a failure, once more with the
    shape-deciding inputs bound to their test values (the result then says ``bound``)."""
    from lwc import onnx_legalize

    model, sets = load_case(case_dir)
    result = _run_lwc(os.path.join(case_dir, "model.onnx"), sets)
    shape_inputs = sorted(onnx_legalize.shape_deciding_inputs(model) & set(sets[0][0]))
    if result["status"] == "pass" or not shape_inputs or len(sets) != 1:
        return result
    values = {k: sets[0][0][k] for k in shape_inputs}
    bound_model = onnx_legalize.bind_inputs(model, values)
    rest = {k: v for k, v in sets[0][0].items() if k not in values}
    bound = _run_lwc(bound_model, [(rest, sets[0][1])])
    if bound["status"] == "pass":
        return {"status": "pass", "bound": shape_inputs, "strict": result}
    return result


def _run_lwc(model, sets) -> dict:
    from lwc import driver

    compiled, compiled_shapes = None, None
    for feeds, want in sets:
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        if shapes != compiled_shapes:
            try:
                compiled = driver.compile(model, target="host", input_shapes=shapes)
            except Exception as err:  # noqa: BLE001  (classified, not hidden)
                return _fail(classify_lwc_error("compile", err), err)
            compiled_shapes = shapes
        try:
            got = compiled.run(feeds)
        except Exception as err:  # noqa: BLE001
            return _fail(classify_lwc_error("run", err), err)
        bad = compare(got, want)
        if bad:
            return {"status": "fail", "class": bad[0], "reason": bad[1]}
    return {"status": "pass"}


def run_ort(case_dir: str) -> dict:
    import onnxruntime as ort

    _model, sets = load_case(case_dir)
    try:
        sess = ort.InferenceSession(os.path.join(case_dir, "model.onnx"),
                                    providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001
        return _fail("ort: session creation", err)
    for feeds, want in sets:
        try:
            got = sess.run(None, feeds)
        except Exception as err:  # noqa: BLE001
            return _fail("ort: run", err)
        bad = compare(got, want)
        if bad:
            return {"status": "fail", "class": bad[0], "reason": bad[1]}
    return {"status": "pass"}


def _fail(cls: str, err: BaseException) -> dict:
    return {"status": "fail", "class": cls, "reason": _one_line(str(err) or type(err).__name__)}


RUNNERS = {"lwc": run_lwc, "ort": run_ort}


# --------------------------------------------------------------------------- workers


def _worker(conn, backend: str) -> None:
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    import warnings

    warnings.simplefilter("ignore")
    runner = RUNNERS[backend]
    while True:
        case_dir = conn.recv()
        if case_dir is None:
            return
        try:
            result = runner(case_dir)
        except Exception as err:  # noqa: BLE001  (the harness itself must go on)
            result = {"status": "fail", "class": "harness error",
                      "reason": _one_line(traceback.format_exc() or repr(err))}
        conn.send(result)


class Worker:
    """One worker process for one backend; restarted after a crash, hang or N cases."""

    MAX_CASES = 150

    def __init__(self, backend: str):
        self.backend = backend
        self.proc = None
        self.done = 0

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.backend), daemon=True)
        self.proc.start()
        self.done = 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.proc = None

    def run(self, case_dir: str, timeout: float) -> dict:
        if self.proc is None or self.done >= self.MAX_CASES:
            self.stop()
            self._start()
            timeout += 60  # the worker's first case pays for importing TVM
        self.conn.send(case_dir)
        self.done += 1
        start = time.monotonic()
        try:
            if not self.conn.poll(timeout):
                self.stop()
                return {"status": "fail", "class": "timeout", "reason": f"no result in {timeout:.0f} s"}
            result = self.conn.recv()
        except (EOFError, OSError):
            code = self.proc.exitcode if self.proc else None
            self.stop()
            return {"status": "fail", "class": "crash", "reason": f"worker died (exit code {code})"}
        result["seconds"] = round(time.monotonic() - start, 2)
        return result


def run_all(cases: list[str], backends: list[str], jobs: int, timeout: float) -> dict:
    """{case name: {backend: result}} for every case dir and backend, ``jobs`` at a time."""
    todo = [(c, b) for b in backends for c in cases]
    results: dict = defaultdict(dict)
    lock = threading.Lock()
    progress = Counter()

    def loop() -> None:
        workers = {b: Worker(b) for b in backends}
        while True:
            with lock:
                if not todo:
                    break
                case_dir, backend = todo.pop(0)
            result = workers[backend].run(case_dir, timeout)
            with lock:
                results[os.path.basename(case_dir)][backend] = result
                progress[backend, result["status"]] += 1
                n = sum(progress.values())
                if n % 50 == 0 or not todo:
                    summary = ", ".join(f"{b} {progress[b, 'pass']}/{progress[b, 'pass'] + progress[b, 'fail']}"
                                        for b in backends)
                    print(f"[{n}/{len(cases) * len(backends)}] {summary}", file=sys.stderr, flush=True)
        for w in workers.values():
            w.stop()

    threads = [threading.Thread(target=loop) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return dict(results)


# --------------------------------------------------------------------------- reports


def write_reports(data: dict) -> None:
    OUT_JSON.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    OUT_MD.write_text(render_md(data))


def render_md(data: dict) -> str:
    cases = data["cases"]
    excluded = data["excluded"]
    n = len(cases)
    lines = ["# ONNX conformance: backend node tests", ""]
    lines += [(f"Measured {data['measured']} with onnx {data['versions']['onnx']}, "
               f"onnxruntime {data['versions']['onnxruntime']}, "
               f"apache-tvm {data['versions'].get('apache-tvm', '?')}; "
               f"`benchmarks/onnx_conformance.py` (every case in a worker process, "
               f"{data['timeout_s']:.0f} s timeout; outputs compared as onnx's runner does: "
               f"count, shape, dtype, then rtol {RTOL:g} / atol {ATOL:g})."), ""]
    lines += ["| backend | passed | of applicable | pass rate |", "|---|---:|---:|---:|"]
    for b in data["backends"]:
        p = sum(1 for c in cases.values() if c.get(b, {}).get("status") == "pass")
        if b == "lwc":
            strict = sum(1 for c in cases.values()
                         if c.get(b, {}).get("status") == "pass" and not c[b].get("bound"))
            lines.append(f"| lwc, inputs as given | {strict} | {n} | {100 * strict / max(n, 1):.1f}% |")
            lines.append(f"| lwc, shape-deciding inputs bound (below) | {p} | {n} | {100 * p / max(n, 1):.1f}% |")
        else:
            lines.append(f"| {b} | {p} | {n} | {100 * p / max(n, 1):.1f}% |")
    lines += ["", f"{n} applicable cases of {n + len(excluded)} in the node-test folder.", ""]
    lines += [("Before lwc's own converters and ONNX-level rewrites (issue 21's measurement, "
               "another harness, onnx wheel data, 1,633 applicable cases): lwc 871 = 53.3%, raw "
               "TVM 0.27 46.4%, onnxruntime 94.3%."), ""]
    lines += [("**Shape-deciding inputs.** lwc compiles for static shapes. Where a node test feeds "
               "a value that decides an output's shape or an axis (Pad's `pads`, TopK's `K`, "
               "Reshape's `shape`, Reduce*'s `axes`, CumSum's `axis`, ...: "
               "`lwc.onnx_legalize.SHAPE_INPUTS`) as a graph input, lwc cannot take it at run "
               "time, as it cannot take a new input shape. After a failure with the inputs as "
               "given, the harness compiles once more with those inputs bound to the test's values "
               "(`lwc.onnx_legalize.bind_inputs`, the same information as the input shapes it "
               "already takes from the test data); a case that passes only so is marked `bound` in "
               "the JSON and counted in the second lwc row only. In real models these values are "
               "initializers or computed from shapes, which lwc folds before import; where one is an "
               "input, a user binds it the same way with `lwc compile --input-value NAME=V0,V1,...` "
               "(`input_values=` in Python)."), ""]
    lines += ["## Applicable", "", APPLICABLE_RULE]
    reasons = Counter(excluded.values())
    lines += ["| excluded because | cases |", "|---|---:|"]
    lines += [f"| {r} | {k} |" for r, k in reasons.most_common()]
    for b in data["backends"]:
        by_class = defaultdict(list)
        for name, res in sorted(cases.items()):
            r = res.get(b)
            if r and r["status"] != "pass":
                by_class[r["class"]].append((name, r.get("reason", "")))
        lines += ["", f"## {b}: failures by class", "", "| class | cases |", "|---|---:|"]
        for cls, items in sorted(by_class.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"| {cls} | {len(items)} |")
        if b != "lwc":
            continue
        lines += ["", "## lwc: remaining failures", ""]
        for cls, items in sorted(by_class.items(), key=lambda kv: -len(kv[1])):
            lines += [f"### {cls} ({len(items)})", ""]
            lines += [f"- `{name}`: {reason}" for name, reason in items]
            lines.append("")
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("onnx", "onnxruntime", "apache-tvm", "apache-tvm-ffi"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--filter", help="only cases whose name matches this regex (merged into the JSON)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes at a time (default 1)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default 60)")
    ap.add_argument("--backends", default="lwc,ort", help="comma-separated: lwc, ort")
    ap.add_argument("--no-write", action="store_true", help="print results, write nothing")
    ap.add_argument("--report-only", action="store_true", help="re-render the .md from the JSON")
    args = ap.parse_args(argv)
    if args.report_only:
        OUT_MD.write_text(render_md(json.loads(OUT_JSON.read_text())))
        return 0
    backends = [b for b in args.backends.split(",") if b]
    if any(b not in BACKENDS for b in backends):
        ap.error(f"--backends: expected some of {', '.join(BACKENDS)}")
    sys.path.insert(0, str(ROOT))

    import onnx

    folder = node_test_dir()
    pattern = re.compile(args.filter) if args.filter else None
    cases, excluded = [], {}
    for case_dir in sorted(glob.glob(str(folder / "test_*"))):
        name = os.path.basename(case_dir)
        if pattern and not pattern.search(name):
            continue
        why = applicable(onnx.load(os.path.join(case_dir, "model.onnx")))
        if why:
            excluded[name] = why
        else:
            cases.append(case_dir)
    print(f"{len(cases)} applicable cases, {len(excluded)} excluded", file=sys.stderr)
    start = time.monotonic()
    results = run_all(cases, backends, args.jobs, args.timeout)
    if args.no_write:
        for name, res in sorted(results.items()):
            print(name, "  ".join(f"{b}: {r['status']}" + (f" [{r['class']}] {r.get('reason', '')[:160]}" if r["status"] != "pass" else "")
                                  for b, r in sorted(res.items())))
        return 0
    data = {"cases": {}, "excluded": {}, "backends": list(BACKENDS)}
    if OUT_JSON.is_file():  # keep the cases and backends this run does not redo
        data = json.loads(OUT_JSON.read_text())
        if not pattern:
            for res in data["cases"].values():
                for b in backends:
                    res.pop(b, None)
    for name, res in results.items():
        data["cases"].setdefault(name, {}).update(res)
    data["excluded"].update(excluded)
    data.update(
        measured=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        versions=_versions(), timeout_s=args.timeout,
        wall_s={**data.get("wall_s", {}), **({",".join(backends): round(time.monotonic() - start, 1)}
                                              if not pattern else {})},
        jobs=args.jobs,
    )
    write_reports(data)
    for b in backends:
        p = sum(1 for r in results.values() if r.get(b, {}).get("status") == "pass")
        print(f"{b}: {p}/{len(results)} passed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
