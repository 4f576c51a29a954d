"""lwc.tuning.threads: a kernel's parallel loops made serial compute the same bits; the decisions
stored by lwc tune are applied by workload hash, with a margin; unreadable files change
nothing. (The decisions of a real tuning run: tests/test_tuning.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm

from lwc.kernels.int8_depthwise import depthwise_kernel
from lwc.targets import resolve
from lwc.tuning import threads
from lwc.tuning.apply import schedule_fixed


@pytest.fixture(scope="module")
def kernel():
    """(unscheduled, scheduled) int8 depthwise conv: lwc's fixed schedule has parallel loops."""
    func = depthwise_kernel((1, 8, 6, 16), (3, 3), (1, 8, 6, 16), (1, 1), (1, 1), [1, 1, 1, 1], 3)
    host = resolve("host")
    mod, fixed = schedule_fixed(tvm.IRModule({"main": func}), host, host.tvm_target())
    assert fixed == 1
    return func, mod["main"]


def _run(func, x, w):
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=resolve("host").tvm_target())
    out = tvm.runtime.tensor(np.zeros((1, 8, 6, 16), np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    return out.numpy()


def test_serial_variant_has_no_parallel_loop_and_the_same_bits(kernel):
    _, scheduled = kernel
    assert "T.parallel(" in scheduled.script()
    one = threads.serial(scheduled)
    assert "T.parallel(" not in one.script() and one.attrs["tirx.is_scheduled"]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 8, 6, 16)).astype(np.uint8)
    w = rng.integers(-128, 128, (8, 3, 3)).astype(np.int8)
    np.testing.assert_array_equal(_run(one, x, w), _run(scheduled, x, w))
    assert threads.serial(one) is None  # nothing left to make serial


def test_apply_follows_the_decisions_with_the_margin(kernel):
    func, scheduled = kernel
    fused, applied = tvm.IRModule({"k": func}), tvm.IRModule({"k": scheduled})
    key = threads.kernel_key(func)
    faster = {key: {"name": "k", "parallel_us": 10.0, "serial_us": 5.0}}
    out, n, _ = threads.apply(fused, applied, faster)
    assert n == 1 and "T.parallel(" not in out["k"].script()
    within_margin = {key: {"name": "k", "parallel_us": 10.0, "serial_us": 9.5}}
    for decisions in (within_margin, {"123": faster[key]}, {}):
        out, n, _ = threads.apply(fused, applied, decisions)
        assert n == 0 and "T.parallel(" in out["k"].script()


def _matmul():
    from tvm import te

    a = te.placeholder((64, 128), "float32", name="a")
    b = te.placeholder((128, 96), "float32", name="b")
    k = te.reduce_axis((0, 128), name="k")
    c = te.compute((64, 96), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    return te.create_prim_func([a, b, c])


def test_the_rule_replaces_a_record_it_beat():
    """A record lwc tune timed slower than lwc's rule schedule is dropped at compile time
    (the kernel goes back unscheduled, and the compile's rules schedule it: never slower
    than untuned); a faster record stays."""
    from lwc.schedules import CpuFacts

    func = _matmul()
    record = func.with_attr("tirx.is_scheduled", True)  # a poor "record": the naive loop nest
    fused, applied = tvm.IRModule({"k": func}), tvm.IRModule({"k": record})
    key = threads.kernel_key(func)
    facts = CpuFacts.from_preset(resolve("host"))
    slower = {key: {"name": "k", "parallel_us": 10.0, "rule_us": 4.0}}
    out, serial_n, ruled = threads.apply(fused, applied, slower, facts)
    assert (serial_n, ruled) == (0, 1) and out["k"].same_as(func)  # unscheduled again
    from lwc.schedules import apply_rules

    assert "T.vectorized(" in apply_rules(out, facts)[0]["k"].script()
    assert threads.rule_wins(slower[key])
    faster = {key: {"name": "k", "parallel_us": 3.0, "rule_us": 4.0}}
    for decisions, f in ((faster, facts), (slower, None)):  # no facts: rules disabled
        out, _, ruled = threads.apply(fused, applied, decisions, f)
        assert ruled == 0 and out["k"].same_as(record)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 128), np.float32), rng.standard_normal((128, 96), np.float32)
    lib = tvm.compile(tvm.IRModule({"main": threads.rule_schedule(func, facts).with_attr(
        "global_symbol", "main")}), target=resolve("host").tvm_target())
    c = tvm.runtime.tensor(np.zeros((64, 96), np.float32))
    lib["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), c)
    np.testing.assert_allclose(c.numpy(), a @ b, rtol=1e-5, atol=1e-4)


def test_the_key_ignores_the_kernel_name(kernel):
    func, _ = kernel
    assert threads.kernel_key(func) == threads.kernel_key(func.with_attr("global_symbol", "fused_x1"))


def test_unreadable_or_foreign_decisions_are_ignored(tmp_path):
    assert threads.read(tmp_path) == {} and threads.read(None) == {}
    (tmp_path / threads.DECISIONS).write_text("{not json")
    assert threads.read(tmp_path) == {}
    (tmp_path / threads.DECISIONS).write_text(json.dumps({"version": 99, "kernels": {"1": {}}}))
    assert threads.read(tmp_path) == {}
    path = threads.write(tmp_path, {"7": {"name": "k", "parallel_us": 2.0, "serial_us": 1.0}}, "znver5")
    assert threads.read(tmp_path) == {"7": {"name": "k", "parallel_us": 2.0, "serial_us": 1.0}}
    assert json.loads(path.read_text())["measured_on"] == "znver5"
