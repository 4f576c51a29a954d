"""Fuzz lwc's ONNX loader: seeded mutations of real and small models through the CLI.

Every case is an ONNX file (sometimes with an external-data file beside it) made from a
seed model by one to three mutations: byte-level (truncation, flipped or inserted bytes,
garbage) or proto-level (wrong dtypes, negative/huge dims, graph cycles, missing
initializers, duplicated names, unknown ops, bad opsets, empty graphs, external-data
paths escaping the folder, broken attributes, raw data of the wrong size). Each case runs

    lwc inspect CASE.onnx
    lwc compile CASE.onnx -o OUT/x.so -q --no-tuning-log

through ``lwc.cli.main`` in a worker forked from this process (lwc, TVM, onnx and onnxsim
are imported once, so a case costs milliseconds, not the 10 s of a fresh interpreter),
with a wall-clock timeout (default 10 s) and an address-space limit. By default the
compile stops after the *prepare* stage (import, ONNX checks, onnxsim, Relax import,
graph passes): that is where input reaches code; scheduling and building a model that
imported cleanly does not depend on how it was mangled, and costs seconds to minutes.
``--stage full`` runs the whole compile.

A case passes when each command exits 0 or 2; on 2 stderr is exactly one
``lwc: error: ...`` line; no stream shows a Python traceback or C++ failure
("Traceback", "InternalError", "Check failed", "Segmentation"); no signal killed the
worker; it ended within the timeout; and a failed compile left nothing in OUT.

    python benchmarks/fuzz_loader.py --cases 10000 --seed 0 --report benchmarks/fuzz_loader.md

``tests/test_fuzz.py`` runs a seeded subset (``run(...)``) as a CI test.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import os
import random
import re
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
BANNED = ("Traceback", "InternalError", "Check failed", "Segmentation")
MEMORY_LIMIT = 6 << 30  # bytes of address space per worker: a huge dim must fail, not swap

# --------------------------------------------------------------------------- seed models


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    scale = numpy_helper.from_array(np.ones(4, np.float32), "scale")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3], strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Mul", ["f", "scale"], ["m"], name="mul"),
        helper.make_node("Softmax", ["m"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w, b, scale],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _matmul_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 5], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="matmul"),
        helper.make_node("Reshape", ["mm", "shape"], ["rs"], name="reshape"),
        helper.make_node("Transpose", ["rs"], ["t"], name="transpose", perm=[1, 0]),
        helper.make_node("ReduceSum", ["t"], ["s"], name="sum", keepdims=0),
        helper.make_node("Concat", ["s", "s"], ["y"], name="concat", axis=0),
    ]
    graph = helper.make_graph(
        nodes, "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _cls_model() -> onnx.ModelProto | None:
    try:
        from lwc.models import model_path

        return onnx.load(str(model_path("cls")))
    except Exception:  # noqa: BLE001  (rapidocr not installed: fuzz the small models only)
        return None


def seed_models() -> dict[str, onnx.ModelProto]:
    models = {"conv": _conv_model(), "matmul": _matmul_model()}
    cls = _cls_model()
    if cls is not None:
        models["cls"] = cls
    return models


# --------------------------------------------------------------------------- mutations
#
# A proto mutation edits ``m`` in place and returns a short label, or None when it does
# not apply to this model. A case may also carry an extra file (external data).

HUGE = [-1, -7, 0, 2**31, 2**40, 2**62, 2**63 - 1]
OPS = ["Conv", "Relu", "Add", "MatMul", "Reshape", "Gather", "Softmax", "Concat", "Transpose",
       "Slice", "Resize", "If", "Loop", "Split", "Expand", "ConstantOfShape", "Tile", "Pad",
       "ReduceMean", "Gemm", "BatchNormalization", "Flatten", "Squeeze", "Unsqueeze", "Cast",
       "TopK", "NonZero", "Range", "Where", "Einsum", "LSTM", "Scan", "Identity"]


def _pick_vi(m, rng):
    vis = [*m.graph.input, *m.graph.output, *m.graph.value_info]
    return rng.choice(vis) if vis else None


def mut_dtype(m, rng):
    if rng.random() < 0.5 and m.graph.initializer:
        t = rng.choice(m.graph.initializer)
        t.data_type = rng.choice([0, 2, 7, 8, 9, 10, 11, 16, 17, 23, 99, -1 & 0x7FFFFFFF])
        return f"initializer dtype {t.data_type}"
    vi = _pick_vi(m, rng)
    if vi is None:
        return None
    vi.type.tensor_type.elem_type = rng.choice([0, 2, 6, 7, 8, 9, 10, 11, 13, 16, 17, 23, 77])
    return f"value dtype {vi.type.tensor_type.elem_type}"


def mut_dim(m, rng):
    if rng.random() < 0.3 and m.graph.initializer:
        t = rng.choice(m.graph.initializer)
        if t.dims:
            t.dims[rng.randrange(len(t.dims))] = rng.choice(HUGE)
            return "initializer dim"
    vi = _pick_vi(m, rng)
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = vi.type.tensor_type.shape.dim
    if not dims or rng.random() < 0.15:
        dims.add().dim_value = rng.choice(HUGE)
        return "extra dim"
    d = dims[rng.randrange(len(dims))]
    choice = rng.random()
    if choice < 0.7:
        d.dim_value = rng.choice(HUGE)
    elif choice < 0.85:
        d.dim_param = rng.choice(["", "n", "-1", "0x10", "é", "a" * 300])
    else:
        d.Clear()
    return "dim"


def mut_cycle(m, rng):
    nodes = m.graph.node
    if len(nodes) < 2:
        return None
    i, j = sorted(rng.sample(range(len(nodes)), 2))
    if not nodes[j].output or not nodes[i].input:
        return None
    nodes[i].input[rng.randrange(len(nodes[i].input))] = nodes[j].output[0]
    return "cycle"


def mut_self_loop(m, rng):
    n = rng.choice(m.graph.node)
    if not n.input or not n.output:
        return None
    n.input[0] = n.output[0]
    return "self loop"


def mut_missing_initializer(m, rng):
    if not m.graph.initializer:
        return None
    del m.graph.initializer[rng.randrange(len(m.graph.initializer))]
    return "missing initializer"


def mut_duplicate(m, rng):
    nodes = m.graph.node
    choice = rng.randrange(5)
    if choice == 0 and len(nodes) >= 2:
        a, b = rng.sample(range(len(nodes)), 2)
        if nodes[a].output and nodes[b].output:
            nodes[b].output[0] = nodes[a].output[0]
            return "duplicate node output"
    if choice == 1 and m.graph.initializer:
        m.graph.initializer.append(rng.choice(m.graph.initializer))
        return "duplicate initializer"
    if choice == 2 and m.graph.input:
        m.graph.input.append(m.graph.input[0])
        return "duplicate input"
    if choice == 3 and m.graph.output:
        m.graph.output.append(m.graph.output[0])
        return "duplicate output"
    if nodes and m.graph.input and nodes[0].output:
        nodes[0].output[0] = m.graph.input[0].name
        return "node output shadows input"
    return None


def mut_unknown_op(m, rng):
    n = rng.choice(m.graph.node)
    choice = rng.random()
    if choice < 0.4:
        n.op_type = rng.choice(["FooBar", "", "conv", "Conv2D", "Relu ", "X" * 200])
    elif choice < 0.6:
        n.domain = rng.choice(["com.evil", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"])
    else:
        n.op_type = rng.choice(OPS)
    return f"op {n.op_type!r}"


def mut_opset(m, rng):
    choice = rng.random()
    if choice < 0.2:
        del m.opset_import[:]
        return "no opset"
    if choice < 0.35:
        m.opset_import.add(domain="com.evil", version=1)
        return "extra opset"
    if choice < 0.5:
        m.opset_import.append(m.opset_import[0] if m.opset_import else helper.make_opsetid("", 13))
        return "duplicate opset"
    if choice < 0.65:
        m.ir_version = rng.choice([0, 1, 2, 3, 99, 2**40])
        return f"ir_version {m.ir_version}"
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = rng.choice([0, 1, 6, 7, 9, 11, 17, 21, 22, 23, 99, 2**40, -3])
            return f"opset {o.version}"
    return None


def mut_empty(m, rng):
    choice = rng.randrange(5)
    if choice == 0:
        del m.graph.node[:]
        return "no nodes"
    if choice == 1:
        del m.graph.output[:]
        return "no outputs"
    if choice == 2:
        del m.graph.input[:]
        return "no inputs"
    if choice == 3:
        m.ClearField("graph")
        return "no graph"
    if not m.graph.node:
        return None
    del m.graph.node[rng.randrange(len(m.graph.node)):]
    return "nodes cut"


def mut_dangling(m, rng):
    n = rng.choice(m.graph.node)
    if rng.random() < 0.5 and n.input:
        n.input[rng.randrange(len(n.input))] = rng.choice(["nowhere", "", "x ", "\x00"])
        return "dangling input"
    if rng.random() < 0.5:
        n.input.append(rng.choice(["", "nowhere", n.input[0] if n.input else "x"]))
        return "extra input"
    if m.graph.output:
        m.graph.output[0].name = rng.choice(["nowhere", "", "x"])
        return "output renamed"
    return None


def mut_attribute(m, rng):
    n = rng.choice(m.graph.node)
    if n.attribute and rng.random() < 0.7:
        a = rng.choice(n.attribute)
        choice = rng.random()
        if choice < 0.3:
            n.attribute.remove(a)
            return f"drop attr {a.name}"
        if choice < 0.6 and a.ints:
            a.ints[rng.randrange(len(a.ints))] = rng.choice(HUGE + [-2, 5, 100])
            return f"attr {a.name} value"
        if choice < 0.8 and a.ints:
            if rng.random() < 0.5:
                del a.ints[rng.randrange(len(a.ints))]
            else:
                a.ints.append(rng.choice([0, 1, -1]))
            return f"attr {a.name} length"
        a.type = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 99])
        return f"attr {a.name} type"
    name = rng.choice(["axis", "perm", "group", "kernel_shape", "pads", "strides", "dilations",
                       "keepdims", "mode", "to", "then_branch", "auto_pad", "bogus"])
    value = rng.choice([0, -1, 2**40, [0], [-1, -1], [], "SAME_UPPER", "nope", 1.5])
    n.attribute.append(helper.make_attribute(name, value) if value != [] else
                       helper.make_attribute(name, [], attr_type=onnx.AttributeProto.INTS))
    return f"attr {name}={value!r}"


def mut_raw_data(m, rng):
    if not m.graph.initializer:
        return None
    t = rng.choice(m.graph.initializer)
    data = numpy_helper.to_array(t).tobytes() if not t.raw_data else t.raw_data
    t.ClearField("float_data")
    t.ClearField("int64_data")
    t.ClearField("int32_data")
    choice = rng.random()
    if choice < 0.4:
        t.raw_data = data[: rng.randrange(len(data) + 1)]
        return "raw data short"
    if choice < 0.6:
        t.raw_data = data + bytes(rng.randrange(1, 9))
        return "raw data long"
    if choice < 0.8:
        t.raw_data = b""
        t.float_data.extend([1.0] * rng.randrange(3))
        return "typed data count"
    t.raw_data = bytes(rng.randrange(256) for _ in range(len(data)))  # NaN/inf weights
    return "raw data garbage"


def mut_subgraph(m, rng):
    """Wrap a node's output in an If whose branches are broken in some way."""
    n = rng.choice(m.graph.node)
    if not n.output:
        return None
    out = n.output[0]
    n.output[0] = out + "_pre"
    branch_out = helper.make_tensor_value_info(out + "_b", TensorProto.FLOAT, None)
    body_nodes = [helper.make_node("Identity", [out + "_pre"], [out + "_b"])]
    if rng.random() < 0.5:
        body_nodes[0].input[0] = "nowhere"
    then_g = helper.make_graph(body_nodes, "then", [], [branch_out])
    else_g = helper.make_graph([] if rng.random() < 0.5 else body_nodes, "else", [], [branch_out])
    cond = numpy_helper.from_array(np.array(rng.random() < 0.5), out + "_cond")
    m.graph.initializer.append(cond)
    m.graph.node.append(helper.make_node("If", [cond.name], [out], then_branch=then_g,
                                         else_branch=else_g))
    return "if subgraph"


def mut_external(m, rng):
    """Move an initializer to external data; the location may escape the folder."""
    if not m.graph.initializer:
        return None
    t = rng.choice(m.graph.initializer)
    data = t.raw_data or numpy_helper.to_array(t).tobytes()
    for f in ("raw_data", "float_data", "int64_data", "int32_data"):
        t.ClearField(f)
    t.data_location = TensorProto.EXTERNAL
    location = rng.choice(["weights.bin", "weights.bin", "../weights.bin", "/etc/passwd",
                           "sub/../../etc/passwd", "nowhere.bin", "", ".", "sub/", "\x00x",
                           "../../../../../../proc/self/environ", "weights.bin/../weights.bin"])
    entries = {"location": location}
    choice = rng.random()
    if choice < 0.3:
        entries["offset"] = str(rng.choice([0, 4, -4, 2**40, 99999]))
    if choice < 0.6 or rng.random() < 0.3:
        entries["length"] = str(rng.choice([len(data), len(data) // 2, 0, -1, 2**40, "abc"]))
    if rng.random() < 0.1:
        entries["checksum"] = "x"
    del t.external_data[:]
    for k, v in entries.items():
        t.external_data.add(key=k, value=v)
    _EXTRA_FILE.append(("weights.bin", data))  # written beside the model
    return f"external {location!r}"


_EXTRA_FILE: list[tuple[str, bytes]] = []  # mut_external's data file for the case being made

PROTO_MUTATIONS = [mut_dtype, mut_dim, mut_cycle, mut_self_loop, mut_missing_initializer,
                   mut_duplicate, mut_unknown_op, mut_opset, mut_empty, mut_dangling,
                   mut_attribute, mut_raw_data, mut_subgraph, mut_external]


def byte_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    choice = rng.random()
    if choice < 0.3:
        return data[: rng.randrange(len(data))], "truncated"
    if choice < 0.65:
        buf = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 4, 16])):
            # bias towards the structure (node list, types), not the weights
            i = rng.randrange(min(len(buf), 4096)) if rng.random() < 0.6 else rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf), "flipped bytes"
    if choice < 0.8:
        i = rng.randrange(len(data) + 1)
        return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16))) + data[i:], "inserted bytes"
    if choice < 0.9:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 2000))), "garbage"
    return b"", "empty file"


@dataclasses.dataclass
class Case:
    index: int
    seed_model: str
    mutations: list[str]
    data: bytes
    extra: tuple[str, bytes] | None = None


def make_case(index: int, seed: int, models: dict[str, onnx.ModelProto]) -> Case:
    rng = random.Random(seed * 1_000_003 + index)
    # the real model is costly to import when it survives: one case in eight
    names = sorted(models)
    name = "cls" if "cls" in models and rng.random() < 0.125 else rng.choice([n for n in names if n != "cls"])
    m = onnx.ModelProto()
    m.CopyFrom(models[name])
    labels = []
    if rng.random() < 0.25:
        data, label = byte_mutation(m.SerializeToString(), rng)
        return Case(index, name, [label], data)
    _EXTRA_FILE.clear()
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        mutation = rng.choice(PROTO_MUTATIONS)
        try:
            label = mutation(m, rng)
        except Exception:  # noqa: BLE001  (the mutation does not fit this model)
            label = None
        if label:
            labels.append(label)
    if not labels:
        labels = ["unchanged"]
    try:
        data = m.SerializeToString()
    except Exception:  # noqa: BLE001  (an invalid proto field value: fuzz its bytes instead)
        data, label = byte_mutation(models[name].SerializeToString(), rng)
        labels = [label]
    return Case(index, name, labels, data, _EXTRA_FILE[-1] if _EXTRA_FILE else None)


# --------------------------------------------------------------------------- running


class _FrontDone(BaseException):
    """Raised after the prepare stage in --stage front: skips scheduling and building."""


def _patch_front_stage() -> None:
    from lwc import prepare

    original = prepare.prepare

    def prepare_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        raise _FrontDone

    prepare.prepare = prepare_then_stop


@dataclasses.dataclass
class Outcome:
    command: str
    rc: int | None  # None: killed by timeout; negative: a signal
    stderr: str
    stdout: str
    seconds: float
    leftovers: list[str]


def _run_in_child(argv: list[str]) -> int:
    from lwc.cli import main

    try:
        return main(argv)
    except _FrontDone:
        return 0
    except SystemExit as err:  # argparse
        return err.code if isinstance(err.code, int) else 1
    except BaseException:  # noqa: BLE001  (anything else is a finding: show it)
        import traceback

        traceback.print_exc()
        return 3


def _child(commands: list[list[str]], work: Path, out_dir: Path, front: bool) -> None:
    """Runs in the forked worker: each command with stdout/stderr in files of its own and
    its result (exit code, seconds, files in OUT) written to work/result<i>.json."""
    import json

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    os.setsid()
    if front:
        _patch_front_stage()
    for i, argv in enumerate(commands):
        for fd, name in ((1, f"stdout{i}.txt"), (2, f"stderr{i}.txt")):
            f = os.open(work / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), write_through=True)
        start = time.perf_counter()
        rc = _run_in_child(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        result = {"rc": rc, "seconds": time.perf_counter() - start,
                  "leftovers": sorted(p.name for p in out_dir.iterdir())}
        (work / f"result{i}.json").write_text(json.dumps(result))
    os._exit(0)


def run_commands(commands: list[list[str]], work: Path, out_dir: Path, timeout: float,
                 front: bool) -> list[Outcome]:
    """Run ``commands`` one after the other in one forked worker (a fork of this process
    costs tens of ms: one per case, not one per command). A command that takes longer
    than ``timeout``, or is running when the worker is killed at ``timeout`` x the number
    of commands, counts as a hang (rc None); a signal shows as a negative rc."""
    import json

    sys.stdout.flush()
    sys.stderr.flush()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            _child(commands, work, out_dir, front)
        finally:
            os._exit(4)
    status, deadline = None, start + timeout * len(commands)
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
        elif time.perf_counter() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            break
        else:
            time.sleep(0.002)
    signalled = status is not None and os.WIFSIGNALED(status)
    outcomes = []
    for i, argv in enumerate(commands):
        result_path = work / f"result{i}.json"
        err = (work / f"stderr{i}.txt").read_text(errors="replace") if (work / f"stderr{i}.txt").exists() else ""
        out = (work / f"stdout{i}.txt").read_text(errors="replace") if (work / f"stdout{i}.txt").exists() else ""
        if result_path.exists():
            r = json.loads(result_path.read_text())
            rc = None if r["seconds"] > timeout else r["rc"]
            outcomes.append(Outcome(argv[0], rc, err, out, r["seconds"], r["leftovers"]))
            continue
        rc = -os.WTERMSIG(status) if signalled else None  # this command died or hung
        leftovers = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
        outcomes.append(Outcome(argv[0], rc, err, out, time.perf_counter() - start, leftovers))
        break
    return outcomes


def problems(o: Outcome) -> list[str]:
    """What is wrong with one command's outcome: a list of finding classes (empty: fine)."""
    found = []
    if o.rc is None:
        found.append("hang")
    elif o.rc < 0:
        found.append(f"signal {signal.Signals(-o.rc).name}")
    elif o.rc not in (0, 2):
        found.append("internal error" if "lwc: internal error" in o.stderr else f"exit {o.rc}")
    text = o.stderr + o.stdout
    for word in BANNED:
        if word in text:
            found.append(f"'{word}' in output")
    if o.rc == 2:
        lines = [ln for ln in o.stderr.splitlines() if ln.strip()]
        if len(lines) != 1 or not lines[0].startswith("lwc: error: "):
            found.append("not one error line")
    if o.rc != 0 and o.leftovers:
        found.append("artifact left behind")
    return found


def _signature(o: Outcome) -> str:
    """A short, case-independent summary of an outcome's message (for grouping)."""
    lines = [ln for ln in o.stderr.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    line = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", line)
    line = re.sub(r"\d+", "N", line)
    return line[:160]


@dataclasses.dataclass
class Finding:
    command: str
    kind: str
    signature: str
    case: Case
    outcome: Outcome


def run_case(case: Case, root: Path, timeout: float, front: bool) -> tuple[list[Finding], list[Outcome]]:
    work = root / f"case{case.index}"
    work.mkdir()
    model = work / "case.onnx"
    model.write_bytes(case.data)
    if case.extra:
        (work / case.extra[0]).write_bytes(case.extra[1])
    out_dir = work / "out"
    out_dir.mkdir()
    commands = [
        ["inspect", str(model)],
        ["compile", str(model), "-o", str(out_dir / "x.so"), "-q", "--no-tuning-log"],
    ]
    outcomes = run_commands(commands, work, out_dir, timeout, front)
    findings = [Finding(o.command, k, _signature(o), case, o) for o in outcomes for k in problems(o)]
    _rmtree(work)
    return findings, outcomes


def _rmtree(path: Path) -> None:
    for p in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    path.rmdir()


@dataclasses.dataclass
class Summary:
    cases: int
    seconds: float
    findings: list[Finding]
    by_exit: collections.Counter
    by_mutation: collections.Counter
    slowest: list[tuple[float, str]]


def preload() -> None:
    """Import what a compile imports, once, before forking workers."""
    import lwc.cli
    import lwc.driver
    import lwc.prepare
    import lwc.summary  # noqa: F401
    import onnxsim  # noqa: F401
    import tvm  # noqa: F401
    from lwc import cli

    for module_name in cli._EXTRA_MODULES:
        __import__(module_name)
    # warm the lazy imports and caches of both commands once, on a model that fails late
    # (in the Relax import), so that each forked case starts warm
    with tempfile.TemporaryDirectory(prefix="lwc_fuzz_warm_") as tmp:
        model = _conv_model()
        model.graph.node[1].op_type = "Conv"
        path = Path(tmp) / "warm.onnx"
        onnx.save(model, str(path))
        saved = os.dup(2)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            cli.main(["inspect", str(path)])
            cli.main(["compile", str(path), "-o", str(Path(tmp) / "x.so"), "-q", "--no-tuning-log"])
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def run(cases: int, seed: int = 0, timeout: float = 10.0, front: bool = True,
        start: int = 0, progress: bool = False, small_only: bool = False) -> Summary:
    """Run cases ``start .. start + cases`` of ``seed``; ``small_only``: no PP-OCR cls cases."""
    preload()
    models = seed_models()
    if small_only:
        models.pop("cls", None)
    findings: list[Finding] = []
    by_exit: collections.Counter = collections.Counter()
    by_mutation: collections.Counter = collections.Counter()
    slowest: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lwc_fuzz_") as tmp:
        root = Path(tmp)
        for i in range(start, start + cases):
            case = make_case(i, seed, models)
            found, outcomes = run_case(case, root, timeout, front)
            findings += found
            for o in outcomes:
                by_exit[(o.command, o.rc)] += 1
                slowest.append((o.seconds, f"case {i} {o.command} ({case.seed_model}: {', '.join(case.mutations)})"))
            slowest = sorted(slowest, reverse=True)[:10]
            for label in case.mutations:
                by_mutation[label.split(" ")[0]] += 1
            if progress and (i - start + 1) % 100 == 0:
                print(f"{i - start + 1} cases, {time.perf_counter() - t0:.0f} s, {len(findings)} findings",
                      file=sys.stderr, flush=True)
    return Summary(cases, time.perf_counter() - t0, findings, by_exit, by_mutation, slowest)


def format_findings(findings: list[Finding], limit: int = 3) -> str:
    groups: dict[tuple, list[Finding]] = collections.defaultdict(list)
    for f in findings:
        groups[(f.command, f.kind, f.signature)].append(f)
    out = []
    for (command, kind, sig), items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        out.append(f"- {len(items)} x `{command}` {kind}: {sig}")
        for f in items[:limit]:
            out.append(f"    case {f.case.index} ({f.case.seed_model}: {', '.join(f.case.mutations)}) "
                       f"rc={f.outcome.rc}: {f.outcome.stderr.strip().splitlines()[-1][:200] if f.outcome.stderr.strip() else ''}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0, help="first case index (resume)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--stage", choices=["front", "full"], default="front")
    parser.add_argument("--case", type=int, help="write case N to --write and exit")
    parser.add_argument("--write", default="case.onnx")
    args = parser.parse_args(argv)
    if args.case is not None:
        case = make_case(args.case, args.seed, seed_models())
        Path(args.write).write_bytes(case.data)
        if case.extra:
            (Path(args.write).parent / case.extra[0]).write_bytes(case.extra[1])
        print(f"case {case.index}: {case.seed_model}: {', '.join(case.mutations)} -> {args.write}")
        return 0
    s = run(args.cases, args.seed, args.timeout, args.stage == "front", args.start, progress=True)
    print(f"{s.cases} cases in {s.seconds:.0f} s ({s.cases / s.seconds:.1f}/s), "
          f"{len(s.findings)} findings")
    print("exit codes:", dict(sorted(s.by_exit.items(), key=str)))
    print("mutations:", dict(s.by_mutation.most_common()))
    print("slowest:", *[f"  {sec:.1f} s {what}" for sec, what in s.slowest], sep="\n")
    print(format_findings(s.findings))
    return 1 if s.findings else 0


if __name__ == "__main__":
    sys.exit(main())
