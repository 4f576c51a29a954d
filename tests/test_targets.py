"""Every target preset's data, pinned, and checked against TVM's bundled LLVM.

A preset is data (targets/presets.json plus the computed ``host``): a wrong CPU name or a
feature that the CPU lacks gives code that is slow or dies with SIGILL on the board, and
nothing else would notice. TVM's own board tags are not a reference either: its
``nvidia/jetson-orin-nano`` tag names the Xavier core (carmel) for the Orin's Cortex-A78AE.
"""

from __future__ import annotations

import os
import platform

import pytest
import tvm
import tvm.target.codegen

from lwc import tvm_compat
from lwc.errors import LwcError
from lwc.targets import _static_presets, all_presets, host_features, host_preset, resolve, usable_cores

A64 = "aarch64-linux-gnu"
A64_CXX = "aarch64-linux-gnu-g++"
NEON = ["+neon"]
V82 = ["+neon", "+dotprod", "+fullfp16"]

# name: (mcpu, mtriple, mattr, num-cores, features, cross compiler, gpu arch)
EXPECTED = {
    "x86_64": ("x86-64-v3", "x86_64-linux-gnu", None, None, ("avx2", "fma"), "g++", None),
    "arm64": ("generic", A64, NEON, None, ("neon",), A64_CXX, None),
    "rpi4": ("cortex-a72", A64, NEON, 4, ("neon",), A64_CXX, None),
    "rpi5": ("cortex-a76", A64, V82, 4, ("neon", "dotprod", "fp16"), A64_CXX, None),
    "jetson-orin-cpu": ("cortex-a78ae", A64, V82, 12, ("neon", "dotprod", "fp16"), A64_CXX, None),
    "jetson-nano": ("cortex-a57", A64, NEON, 4, ("neon", "cuda"), A64_CXX, "sm_53"),
    "jetson-tx2": ("cortex-a57", A64, NEON, 6, ("neon", "cuda"), A64_CXX, "sm_62"),
    "jetson-xavier": ("carmel", A64, NEON, 8, ("neon", "fp16", "cuda", "tensorcore"), A64_CXX, "sm_72"),
    "jetson-orin": ("cortex-a78ae", A64, V82, 12,
                    ("neon", "dotprod", "fp16", "cuda", "tensorcore"), A64_CXX, "sm_87"),
    "jetson-orin-nano": ("cortex-a78ae", A64, V82, 6,
                         ("neon", "dotprod", "fp16", "cuda", "tensorcore"), A64_CXX, "sm_87"),
}

# lwc feature name -> TVM's derived attribute on an AArch64 llvm target
AARCH64_ATTRS = {
    "neon": "feature.has_asimd",
    "dotprod": "feature.has_dotprod",
    "fp16": "feature.has_fp16_simd",
    "i8mm": "feature.has_matmul_i8",
}
# lwc feature name -> LLVM CPU features (any of them) on x86-64
X86_LLVM = {
    "avx2": {"avx2"},
    "fma": {"fma"},
    "avx512": {"avx512f"},
    "vnni": {"avx512vnni", "avxvnni"},
}


def _presets() -> dict:
    return {p.name: p for p in all_presets()}


def test_every_preset_is_pinned():
    assert set(_static_presets()) == set(EXPECTED)
    assert set(_presets()) == {"host", *EXPECTED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_data(name):
    mcpu, triple, mattr, cores, features, cxx, gpu_arch = EXPECTED[name]
    preset = resolve(name)
    host = preset.host_target
    assert host["kind"] == "llvm"
    assert host["mcpu"] == mcpu == preset.cpu
    assert host["mtriple"] == triple == preset.triple
    assert host.get("mattr") == mattr
    assert host.get("num-cores") == cores
    assert preset.features == features
    assert preset.cross_compiler == cxx
    assert preset.arch == triple.split("-")[0]
    if gpu_arch is None:
        assert not preset.is_gpu and "host" not in preset.target
    else:
        assert preset.is_gpu
        assert preset.target["kind"] == "cuda"
        assert preset.target["arch"] == gpu_arch
        # CUDA programming guide, compute capability tables
        assert preset.target["max_num_threads"] == 1024
        assert preset.target["thread_warp_size"] == 32
        assert preset.target["max_shared_memory_per_block"] == 49152
        # tensor cores arrived with Volta, sm_70
        assert preset.has("tensorcore") == (int(gpu_arch[3:]) >= 70)
    assert preset.description


def test_host_preset_is_detected():
    preset = host_preset()
    machine = platform.machine()
    assert resolve("host") is preset
    assert preset.cpu == preset.target["mcpu"] == tvm_compat.system_cpu()
    assert preset.cpu != "generic"
    assert preset.arch == machine
    if platform.system() == "Linux":
        assert preset.triple == f"{machine}-linux-gnu"
    assert preset.features == host_features()
    assert preset.cross_compiler == "g++"
    assert preset.is_native and not preset.is_gpu
    assert preset.target["num-cores"] == usable_cores()
    assert 1 <= usable_cores() <= os.cpu_count()


def test_host_features_from_cpu_flags():
    assert host_features({"avx2", "fma", "avx512f", "avx512_vnni"}) == ("avx2", "fma", "avx512", "vnni")
    assert host_features({"avx2", "avx_vnni"}) == ("avx2", "vnni")
    assert host_features({"asimd", "asimddp", "asimdhp", "i8mm"}) == ("neon", "dotprod", "fp16", "i8mm")
    assert host_features(set()) == ()


@pytest.mark.parametrize("name", ["host", *sorted(EXPECTED)])
def test_cpu_is_valid_for_its_triple(name):
    preset = _presets()[name]
    assert tvm_compat.llvm_is_valid_cpu(preset.cpu, preset.triple), (preset.cpu, preset.triple)


@pytest.mark.parametrize("name", ["host", *sorted(EXPECTED)])
def test_features_agree_with_tvm(name):
    """The features lwc's passes see are the ones TVM/LLVM derive from the target."""
    preset = _presets()[name]
    target = preset.tvm_target()
    cpu_target = target.host if preset.is_gpu else target
    assert cpu_target.kind.name == "llvm"
    assert str(cpu_target.attrs["mcpu"]) == preset.cpu
    if preset.is_gpu:
        assert target.kind.name == "cuda"
        assert str(target.attrs["arch"]) == preset.target["arch"]
        assert {"cuda", "neon"} <= set(preset.features)
    cpu_features = set(preset.features) - {"cuda", "tensorcore"}
    if preset.arch == "aarch64":
        assert bool(cpu_target.attrs["feature.is_aarch64"])
        derived = {f for f, attr in AARCH64_ATTRS.items() if bool(cpu_target.attrs[attr])}
    else:
        assert preset.arch == "x86_64"
        llvm = set(tvm.target.codegen.llvm_get_cpu_features(cpu_target))
        derived = {f for f, names in X86_LLVM.items() if llvm & names}
        assert cpu_features <= set(X86_LLVM)
    assert cpu_features == derived, (name, sorted(cpu_features), sorted(derived))


def test_orin_nano_cpu_is_cortex_a78ae_not_tvms_carmel():
    preset = resolve("jetson-orin-nano")
    assert preset.cpu == preset.host_target["mcpu"] == "cortex-a78ae"
    assert resolve("jetson-orin").cpu == "cortex-a78ae"
    assert resolve("jetson-xavier").cpu == "carmel"  # carmel is Xavier's core

    tag = tvm.target.list_tags().get("nvidia/jetson-orin-nano")
    if tag is None:
        pytest.skip("this TVM has no nvidia/jetson-orin-nano tag to compare with")
    assert str(tag.attrs["arch"]) == preset.target["arch"]
    assert int(tag.host.attrs["num-cores"]) == preset.host_target["num-cores"]
    # TVM 0.27's tag: the Xavier core. If this changes, re-check the tag before trusting it.
    assert str(tag.host.attrs["mcpu"]) == "carmel"
    assert str(tag.host.attrs["mcpu"]) != preset.cpu


# lwc preset -> TVM tag with the same board
TVM_TAGS = {
    "jetson-nano": "nvidia/jetson-nano",
    "jetson-tx2": "nvidia/jetson-tx2",
    "jetson-xavier": "nvidia/jetson-agx-xavier",
    "jetson-orin": "nvidia/jetson-agx-orin-64gb",
    "jetson-orin-nano": "nvidia/jetson-orin-nano",
    "rpi4": "raspberry-pi/4b-aarch64",
}


@pytest.mark.parametrize("name", sorted(TVM_TAGS))
def test_board_data_agrees_with_tvm_tags(name):
    """GPU arch, core count and (but for Orin) CPU agree with TVM's tag where it has one."""
    tag = tvm.target.list_tags().get(TVM_TAGS[name])
    if tag is None:
        pytest.skip(f"this TVM has no {TVM_TAGS[name]} tag")
    preset = resolve(name)
    if preset.is_gpu:
        assert str(tag.attrs["arch"]) == preset.target["arch"]
        tag_host = tag.host
    else:
        tag_host = tag
    if tag_host is None or "mcpu" not in tag_host.attrs:
        return  # TVM's tag leaves the host out (jetson-nano, jetson-tx2)
    assert int(tag_host.attrs["num-cores"]) == preset.host_target["num-cores"]
    if name not in ("jetson-orin", "jetson-orin-nano"):
        # Orin: TVM says cortex-a78 (AGX) / carmel (Nano); the core is Cortex-A78AE.
        assert str(tag_host.attrs["mcpu"]) == preset.cpu


def test_translated_targets_are_checked_too():
    with pytest.raises(LwcError, match="cortex-z99"):
        resolve("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-z99")
    custom = resolve("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a55 -mattr=+i8mm,+fullfp16,+dotprod")
    assert custom.name == "custom"
    assert custom.features == ("neon", "dotprod", "fp16", "i8mm")  # canonical order, every run
    assert custom.cross_compiler == A64_CXX
