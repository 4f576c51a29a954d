"""apply_rules / CpuFacts: report, ``tirx.is_scheduled``, declines (schedule_rule
annotations, blockless functions, already scheduled functions, rules that raise)."""

from __future__ import annotations

import pytest
import tvm
from lwc.schedules import RULES, CpuFacts, apply_rules
from lwc.targets import resolve
from onnx import helper
from schedules_support import AVX2, fused_module, model
from tvm.script import ir as I
from tvm.script import tirx as T


@I.ir_module
class Annotated:
    @T.prim_func(s_tir=True)
    def int8_kernel(a: T.Buffer((64, 64), "float32"), b: T.Buffer((64, 64), "float32")):
        for i, j in T.grid(64, 64):
            with T.sblock("b"):
                vi, vj = T.axis.remap("SS", [i, j])
                T.sblock_attr({"schedule_rule": "lwc_int8_depthwise"})
                b[vi, vj] = a[vi, vj] * T.float32(2)

    @T.prim_func(s_tir=True)
    def plain(a: T.Buffer((64, 64), "float32"), b: T.Buffer((64, 64), "float32")):
        for i, j in T.grid(64, 64):
            with T.sblock("b"):
                vi, vj = T.axis.remap("SS", [i, j])
                b[vi, vj] = a[vi, vj] + T.float32(1)

    @T.prim_func(s_tir=True)
    def done(a: T.Buffer((64,), "float32"), b: T.Buffer((64,), "float32")):
        T.func_attr({"tirx.is_scheduled": True})
        for i in range(64):
            with T.sblock("b"):
                vi = T.axis.remap("S", [i])
                b[vi] = a[vi]


def test_annotated_kernel_is_left_alone_and_reported():
    out, report = apply_rules(Annotated, AVX2)
    tvm.ir.assert_structural_equal(out["int8_kernel"], Annotated["int8_kernel"])
    assert ("int8_kernel", "a block has a schedule_rule annotation") in report["declined"]
    assert report["injective"] == 1
    assert out["plain"].attrs["tirx.is_scheduled"]
    tvm.ir.assert_structural_equal(out["done"], Annotated["done"])  # already scheduled


def test_input_module_is_not_modified():
    before = Annotated["plain"]
    apply_rules(Annotated, AVX2)
    assert Annotated["plain"].same_as(before)


@T.prim_func
def blockless(a: T.Buffer((16,), "float32")):
    for i in range(16):
        a[i] = T.float32(0)


def test_blockless_function_is_declined():
    mod = tvm.IRModule({"bsr": blockless})
    out, report = apply_rules(mod, AVX2)
    assert [name for name, _ in report["declined"]] == ["bsr"]
    assert out["bsr"].same_as(mod["bsr"])


class Exploding:
    name = "exploding"

    def apply(self, func, facts):
        raise RuntimeError("rule bug")


def test_rule_that_raises_is_a_decline():
    fused, _ = fused_module(model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 8]}, {"y": [1, 8]}))
    _, report = apply_rules(fused, AVX2, rules=[Exploding()])
    assert report["declined"] and "rule bug" in report["declined"][0][1]
    assert "exploding" not in report


def test_rules_are_a_plain_list():
    assert [r.name for r in RULES] == ["conv2d", "matmul", "pooling", "reduction", "injective"]


@pytest.mark.parametrize(
    "preset, bits, cores",
    [("arm64", 128, 4), ("rpi4", 128, 4), ("rpi5", 128, 4), ("jetson-orin-cpu", 128, 12), ("x86_64", 256, 4)],
)
def test_facts_from_preset(preset, bits, cores):
    facts = CpuFacts.from_preset(resolve(preset))
    assert (facts.vector_bits, facts.cores) == (bits, cores)
    assert facts.lanes() == bits // 32
    assert facts.vector_regs == (32 if resolve(preset).arch == "aarch64" else 16)
    assert facts.has_dotprod == resolve(preset).has("dotprod")


def test_host_facts_match_host_features():
    preset = resolve("host")
    facts = CpuFacts.from_preset(preset)
    expect = 512 if preset.has("avx512") else 256 if preset.has("avx2") else 128
    assert facts.vector_bits == expect
    assert facts.has_vnni == preset.has("vnni")
