"""The ``lwc`` command as a user sees it: bad inputs give one line and leave nothing behind.

Every bad input must give exactly one ``lwc: error: ...`` line on stderr (besides the
``lwc: compiling ...`` progress line), no Python traceback, no C++ frames, a non-zero
exit status, and no artifact (.so, .json or temporary file) in the output folder.
The CLI runs in this process with its file descriptors captured (:func:`lwc`), and a few
cases in a subprocess (``python -m lwc``) to see exit codes and streams exactly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lwc.frontend import supported_op_types
from lwc.targets import preset_names

# Signs of a leaked C++ or Python stack: TVM's log prefix, source locations, frames.
_LEAK = re.compile(r"Traceback|\.cc:\d+|\.h:\d+|tvm::|Stack trace|File \"|^\s+at ", re.M)


def lwc_subprocess(*args: str, cwd: Path | None = None, env: dict | None = None):
    """``python -m lwc ARGS``: exit status and streams exactly as a shell sees them."""
    return subprocess.run(
        [sys.executable, "-m", "lwc", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )


def lwc(*args: str, cwd: Path | None = None, env: dict | None = None):
    """``lwc ARGS`` through ``lwc.cli.main`` in this process (no 4-5 s interpreter and TVM
    start-up per case), with file descriptors 1 and 2 redirected to files so C++ output is
    seen as a subprocess's would be; with ``env``, a subprocess."""
    import tempfile
    from types import SimpleNamespace

    from lwc import cli

    if env is not None:
        return lwc_subprocess(*args, cwd=cwd, env=env)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    old_cwd = os.getcwd()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        py_streams = sys.stdout, sys.stderr  # pytest's capture objects, not fds 1 and 2
        sys.stdout, sys.stderr = out, err
        try:
            if cwd is not None:
                os.chdir(cwd)
            try:
                code = cli.main(list(args))
            except SystemExit as exc:  # argparse's own errors
                code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = py_streams
            os.chdir(old_cwd)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return SimpleNamespace(returncode=code, stdout=out.read(), stderr=err.read())


def assert_one_line_error(proc: subprocess.CompletedProcess, status: int = 2) -> str:
    """The single error line; fails on tracebacks, C++ frames or extra stderr output."""
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert not _LEAK.search(proc.stderr), proc.stderr
    assert not _LEAK.search(proc.stdout), proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("lwc: compiling ")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lwc: error: "), proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- models


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _dynamic_matmul() -> onnx.ModelProto:
    """Y = X @ W, X float32 [N, 64] (N dynamic)."""
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"], name="matmul")],
        "matmul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 64])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# Standard shape-preserving float ops, in order of preference; TVM's importer lacks these.
_STANDARD_CANDIDATES = ("Celu", "LpNormalization", "Swish", "Bernoulli", "RandomUniformLike",
                        "RandomNormalLike")


def _unsupported_standard_ops(count: int = 2) -> list[str]:
    schemas = {s.name for s in onnx.defs.get_all_schemas() if s.domain == ""}
    lacking = [op for op in _STANDARD_CANDIDATES if op in schemas and op not in supported_op_types()]
    if not lacking:
        pytest.skip("TVM's importer now converts every candidate standard op")
    return lacking[:count]


def _unsupported_model() -> tuple[onnx.ModelProto, dict[str, str]]:
    """Relu, a custom-domain op, and standard ops TVM lacks (each op twice, two names)."""
    standard = _unsupported_standard_ops()
    ops = [("com.acme", "FancyNorm")] + [("", op) for op in standard]
    nodes = [helper.make_node("Relu", ["X"], ["t0"], name="relu")]
    expected = {}
    for i, (domain, op) in enumerate(ops * 2):
        name = f"{op.lower()}_{i}"
        nodes.append(helper.make_node(op, [f"t{i}"], [f"t{i + 1}"], name=name, domain=domain))
        expected.setdefault(f"{domain}::{op}" if domain else op, name)
    nodes.append(helper.make_node("Identity", [f"t{len(ops) * 2}"], ["Y"], name="out"))
    graph = helper.make_graph(
        nodes, "unsupported",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 4])],
    )
    opset = max(schema.since_version for schema in
                (onnx.defs.get_schema(op) for op in standard))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", max(opset, 13)), helper.make_opsetid("com.acme", 1)]
    )
    model.ir_version = 10
    return model, expected


def _unsupported_in_subgraph() -> tuple[onnx.ModelProto, str]:
    """An If whose then-branch holds a standard op TVM lacks."""
    (op,) = _unsupported_standard_ops(1)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 4])
    then_branch = helper.make_graph(
        [helper.make_node(op, ["X"], ["a"], name="deep_node")], "then", [],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["b"], name="ident")], "else", [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 4])],
    )
    nodes = [
        helper.make_node("ReduceSum", ["X"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.float32(0), "z")),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["Y"], then_branch=then_branch, else_branch=else_branch,
                         name="branch"),
    ]
    graph = helper.make_graph(nodes, "subgraph", [x], [y])
    opset = max(onnx.defs.get_schema(op).since_version, 13)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model, op


def _rapidocr_cls() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("rapidocr-onnxruntime not installed (pip install --no-deps rapidocr-onnxruntime)")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    real = _rapidocr_cls().read_bytes()
    (folder / "text.onnx").write_text("this is a text file, not an ONNX model\n")
    (folder / "truncated.onnx").write_bytes(real[: len(real) // 2])
    (folder / "empty.onnx").write_bytes(b"")
    broken = _dynamic_matmul()
    broken.graph.node[0].input[1] = "nowhere"  # an input no one produces
    return {
        "text": folder / "text.onnx",
        "truncated": folder / "truncated.onnx",
        "empty": folder / "empty.onnx",
        "broken": _save(broken, folder / "broken.onnx"),
        "dynamic": _save(_dynamic_matmul(), folder / "dynamic.onnx"),
        "unsupported": _save(_unsupported_model()[0], folder / "unsupported.onnx"),
        "subgraph": _save(_unsupported_in_subgraph()[0], folder / "subgraph.onnx"),
        "missing": folder / "no_such_model.onnx",
    }


# (case id, model key, extra compile args, substrings the error line must contain)
BAD_COMPILES = [
    ("text-file", "text", [], ["text.onnx", "not a valid ONNX model"]),
    ("truncated", "truncated", [], ["truncated.onnx", "not a valid ONNX model"]),
    ("empty-file", "empty", [], ["empty.onnx", "not a valid ONNX model"]),
    ("missing-file", "missing", [], ["no_such_model.onnx", "not found"]),
    ("checker", "broken", ["--input-shape", "X:2,64"], ["ONNX checker"]),
    ("unknown-target", "dynamic", ["--input-shape", "X:2,64", "-t", "raspberry-pi"],
     ["'raspberry-pi'", *preset_names()]),
    ("unknown-cpu", "dynamic", ["--input-shape", "X:2,64", "-t",
                                "llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-z99"], ["cortex-z99"]),
    ("bad-json-target", "dynamic", ["--input-shape", "X:2,64", "-t", '{"kind": "llvm",'], ["JSON"]),
    ("bad-target-option", "dynamic", ["--input-shape", "X:2,64", "-t",
                                      "llvm -mtriple=aarch64-linux-gnu -bogus=3"], ["bogus"]),
    ("cuda-without-arch", "dynamic", ["--input-shape", "X:2,64", "-t", '{"kind": "cuda"}'],
     ["arch", "sm_87"]),
    ("unsupported-kind", "dynamic", ["--input-shape", "X:2,64", "-t", '{"kind": "opencl"}'],
     ["opencl"]),
    ("dynamic-input", "dynamic", [], ["'X'", "dynamic", "--input-shape X:"]),
    ("not-an-input", "dynamic", ["--input-shape", "Z:2,64"], ["'Z'", "not a model input", "X"]),
    ("wrong-rank", "dynamic", ["--input-shape", "X:1,2,64"], ["rank 3", "rank 2"]),
    ("conflicting-dim", "dynamic", ["--input-shape", "X:2,32"], ["conflicts", "64"]),
    ("malformed-shape", "dynamic", ["--input-shape", "X=2,64"], ["--input-shape", "NAME:"]),
    ("non-integer-dim", "dynamic", ["--input-shape", "X:2,a"], ["integers"]),
    # X:0,64 (a zero-size dim) compiles, as onnxruntime runs it: tests/test_frontend_cases.py
    ("negative-dim", "dynamic", ["--input-shape", "X:-1,64"], ["non-negative"]),
    ("missing-cross-compiler", "dynamic", ["--input-shape", "X:2,64", "--cross-compiler",
                                           "/nonexistent/g++"], ["/nonexistent/g++", "--cross-compiler"]),
    ("missing-arm64-compiler", "dynamic", ["--input-shape", "X:2,64", "-t", "arm64",
                                           "--cross-compiler", "/nonexistent/g++"],
     ["/nonexistent/g++", "apt-get install g++-aarch64-linux-gnu", "--cross-compiler"]),
    ("linker-fails", "dynamic", ["--input-shape", "X:2,64", "-t", "arm64",
                                 "--cross-compiler", "/bin/false"], ["linking", "/bin/false"]),
    ("unknown-pass", "dynamic", ["--input-shape", "X:2,64", "--disable-pass", "NoSuchPass"],
     ["NoSuchPass"]),
]


@pytest.mark.parametrize(
    "key, extra, needles", [c[1:] for c in BAD_COMPILES], ids=[c[0] for c in BAD_COMPILES]
)
def test_bad_compile_gives_one_line_and_no_artifact(models, tmp_path, key, extra, needles):
    """In process (:func:`lwc`); through a real subprocess in
    :func:`test_bad_compile_in_a_subprocess`."""
    out = tmp_path / "out"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = lwc("compile", str(models[key]), *extra, "-o", str(out / "model.so"), cwd=cwd)
    line = assert_one_line_error(proc)
    for needle in needles:
        assert needle in line, line
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("key, extra, needles", [
    ("missing", [], ["no_such_model.onnx", "not found"]),
    ("broken", ["--input-shape", "X:2,64"], ["ONNX checker"]),
    ("dynamic", ["--input-shape", "X:2,64", "-t", '{"kind": "cuda"}'], ["arch"]),
], ids=["missing-file", "checker", "cuda-without-arch"])
def test_bad_compile_in_a_subprocess(models, tmp_path, key, extra, needles):
    """``python -m lwc``: the exit status and both streams exactly as a shell sees them."""
    out = tmp_path / "out"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = lwc_subprocess("compile", str(models[key]), *extra, "-o", str(out / "model.so"), cwd=cwd)
    line = assert_one_line_error(proc)
    for needle in needles:
        assert needle in line, line
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []
    assert list(cwd.iterdir()) == []


def test_host_gxx_for_arm64_is_refused_up_front(models, tmp_path):
    """The F2 failure, when a user points --cross-compiler at the host's g++: caught from
    ``g++ -dumpmachine`` before any work, not as "file in wrong format" at link time."""
    out = tmp_path / "out"
    proc = lwc("compile", str(models["dynamic"]), "--input-shape", "X:2,64", "-t", "arm64",
               "--cross-compiler", "g++", "-o", str(out / "model.so"))
    line = assert_one_line_error(proc)
    assert "builds for x86_64" in line and "aarch64" in line and "--cross-compiler" in line
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


def test_unsupported_ops_are_all_listed_with_node_names(models, tmp_path):
    _, expected = _unsupported_model()
    out = tmp_path / "out"
    proc = lwc("compile", str(models["unsupported"]), "-o", str(out / "model.so"))
    line = assert_one_line_error(proc)
    assert f"{len(expected)} unsupported op type(s)" in line
    for op, node in expected.items():
        assert f"{op} (node '{node}'" in line, line  # then ", opset N)" for ai.onnx ops
    assert "Relu" not in line and "Identity" not in line
    assert not out.exists()


def test_unsupported_op_in_a_subgraph_is_listed(models, tmp_path):
    _, op = _unsupported_in_subgraph()
    proc = lwc("compile", str(models["subgraph"]), "-o", str(tmp_path / "out" / "model.so"))
    line = assert_one_line_error(proc)
    assert f"{op} (node 'deep_node'" in line
    assert not (tmp_path / "out").exists()


def test_inspect_lists_unsupported_ops(models):
    _, expected = _unsupported_model()
    proc = lwc("inspect", "--json", str(models["unsupported"]))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert {u["op"]: u["node"] for u in info["unsupported"]} == expected


@pytest.mark.parametrize("key", ["text", "truncated", "missing"])
def test_inspect_bad_model(models, key):
    assert_one_line_error(lwc("inspect", str(models[key])))


# --------------------------------------------------------------------------- run / verify


@pytest.fixture(scope="module")
def host_artifact(models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("artifact") / "m.so"
    proc = lwc("compile", str(models["dynamic"]), "--input-shape", "X:2,64", "-q", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_run_missing_artifact(tmp_path):
    line = assert_one_line_error(lwc("run", str(tmp_path / "absent.so"), "-o", str(tmp_path / "o")))
    assert "absent.so" in line and "not found" in line
    assert not (tmp_path / "o").exists()


def test_run_missing_manifest(host_artifact, tmp_path):
    so = tmp_path / "m.so"
    so.write_bytes(host_artifact.read_bytes())
    line = assert_one_line_error(lwc("run", str(so), "-o", str(tmp_path / "o")))
    assert "m.json" in line


def test_run_corrupt_manifest(host_artifact, tmp_path):
    so = tmp_path / "m.so"
    so.write_bytes(host_artifact.read_bytes())
    so.with_suffix(".json").write_text("{not json")
    line = assert_one_line_error(lwc("run", str(so), "-o", str(tmp_path / "o")))
    assert "unreadable" in line


def test_run_wrong_input_shape(host_artifact, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 64), np.float32))
    line = assert_one_line_error(lwc("run", str(host_artifact), "--input", f"X={x}",
                                     "-o", str(tmp_path / "o")))
    assert "'X'" in line and "[3, 64]" in line and "[2, 64]" in line
    assert not (tmp_path / "o").exists()


def test_run_unknown_input_name(host_artifact, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 64), np.float32))
    line = assert_one_line_error(lwc("run", str(host_artifact), "--input", f"Q={x}",
                                     "-o", str(tmp_path / "o")))
    assert "Q" in line and "X" in line


def test_run_unreadable_input_file(host_artifact, tmp_path):
    bad = tmp_path / "x.npy"
    bad.write_text("not numpy")
    line = assert_one_line_error(lwc("run", str(host_artifact), "--input", f"X={bad}",
                                     "-o", str(tmp_path / "o")))
    assert "x.npy" in line


def test_run_writes_outputs(host_artifact, tmp_path):
    proc = lwc("run", str(host_artifact), "-o", str(tmp_path / "o"), "--json")
    assert proc.returncode == 0, proc.stderr
    (written,) = json.loads(proc.stdout)["outputs"]
    assert written["shape"] == [2, 64]
    assert np.load(written["file"]).shape == (2, 64)


def test_verify_passes(host_artifact, models):
    proc = lwc("verify", str(models["dynamic"]), str(host_artifact))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout


def test_verify_missing_model(host_artifact, tmp_path):
    line = assert_one_line_error(lwc("verify", str(tmp_path / "absent.onnx"), str(host_artifact)))
    assert "absent.onnx" in line


def test_verify_against_another_model_names_the_source(host_artifact, models):
    """The artifact came from dynamic.onnx (input X); verifying it against PP-OCR cls
    (input x) must say so instead of surfacing onnxruntime's broadcast error."""
    line = assert_one_line_error(lwc("verify", str(_rapidocr_cls()), str(host_artifact)))
    assert "was compiled from dynamic.onnx" in line and "ch_ppocr_mobile_v2.0_cls_infer.onnx" in line


# --------------------------------------------------------------------------- good paths


def test_help():
    proc = lwc("--help")
    assert proc.returncode == 0 and proc.stderr == ""
    for command in ("compile", "verify", "run", "targets", "inspect"):
        assert command in proc.stdout


def test_compile_help():
    proc = lwc("compile", "--help")
    assert proc.returncode == 0 and proc.stderr == ""
    for flag in ("--target", "--input-shape", "--cross-compiler", "--output", "--disable-pass"):
        assert flag in proc.stdout


def test_no_command_is_a_usage_error():
    proc = lwc()
    assert proc.returncode == 2
    assert not _LEAK.search(proc.stderr)
    assert "lwc: error:" in proc.stderr


def test_targets_json():
    proc = lwc("targets", "--json")
    assert proc.returncode == 0, proc.stderr
    presets = {p["name"]: p for p in json.loads(proc.stdout)}
    assert list(presets) == preset_names()  # cuda too, with or without a local GPU
    for p in presets.values():
        assert {"triple", "cpu", "features", "cross_compiler", "tvm_target"} <= set(p)
    assert presets["arm64"]["triple"] == "aarch64-linux-gnu"
    assert presets["jetson-orin-nano"]["cpu"] == "cortex-a78ae"
    assert presets["host"]["triple"].startswith(os.uname().machine)


def test_targets_table():
    proc = lwc("targets")
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()][:len(preset_names())]
    assert listed == preset_names()  # cuda too, with or without a local GPU


def test_inspect_json_on_a_real_model():
    proc = lwc("inspect", "--json", str(_rapidocr_cls()))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    (x,) = info["inputs"]
    assert x["name"] == "x" and x["dynamic"] is True and x["shape"][1] == 3
    assert info["ops"]["Conv"] > 0
    assert info["nodes"] == sum(info["ops"].values())
    assert info["params"] > 0
    assert info["unsupported"] == []


def test_inspect_text_marks_dynamic_inputs():
    proc = lwc("inspect", str(_rapidocr_cls()))
    assert proc.returncode == 0, proc.stderr
    assert "--input-shape" in proc.stdout
