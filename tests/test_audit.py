"""Board audits (lwc.audit, lwc.ptx): cases B1 and B2 of /work/shared/cases/README.md.

B1: Conv3x3+Relu on [1,3,32,32] and its QDQ int8 version, bundled for rpi4 and
jetson-orin-cpu: every ELF runs under ``qemu-aarch64 -cpu <board core>`` (cortex-a72 for
rpi4), has no instruction outside the preset's ISA and needs no GLIBC/GLIBCXX newer than
the board's OS. B2: Conv+Relu for jetson-orin/xavier/nano: SASS for the arch and PTX no
newer than the board's CUDA. Plus the scanner, the version reader and the PTX rewrite on
hand-made inputs. Tests needing the cross toolchain, qemu or NVRTC skip with the reason.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from lwc import audit, bundle, cuda, driver, ptx
from lwc.errors import LwcError
from lwc.targets import _static_presets, resolve
from onnx import TensorProto, helper, numpy_helper

HAVE_CROSS = shutil.which("aarch64-linux-gnu-g++") is not None and audit.objdump() is not None
HAVE_QEMU = shutil.which("qemu-aarch64") is not None
needs_cross = pytest.mark.skipif(
    not HAVE_CROSS, reason="no aarch64 cross toolchain (apt-get install g++-aarch64-linux-gnu)"
)
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason="no qemu-aarch64 (apt-get install qemu-user)")
NVRTC = cuda.nvrtc_toolkit()

# --------------------------------------------------------------------------- scanner

LISTING = """
libx.so:     file format elf64-littleaarch64

Disassembly of section .text:

0000000000001000 <atomic_add>:
    1000:\tldaddal\tw1, w0, [x2]
    1004:\tret

0000000000001010 <__aarch64_ldadd4_acq_rel>:
    1010:\tadrp\tx16, 2000 <x>
    1014:\tldrb\tw16, [x16, #8]
    1018:\tcbz\tw16, 1024 <__aarch64_ldadd4_acq_rel+0x14>
    101c:\tldaddal\tw0, w0, [x1]
    1020:\tret
    1024:\tldaxr\tw16, [x1]

0000000000001030 <kernels>:
    1030:\tpaciasp
    1034:\tbti\tc
    1038:\tfcvt\ts0, h1
    103c:\tfmla\tv0.4s, v1.4s, v2.s[0]
    1040:\tsdot\tv0.4s, v1.16b, v2.16b
    1044:\tfadd\th0, h1, h2
    1048:\tld1w\t{z0.s}, p0/z, [x0]
    104c:\tautiasp
"""


def _isa(preset: str, text: str = LISTING):
    return audit.judge_isa(audit.scan_disassembly(text), resolve(preset), "libx.so")


def test_scanner_classes_instructions():
    uses = {u.mnemonic: u for u in audit.scan_disassembly(LISTING)}
    assert set(uses) == {"ldaddal", "sdot", "fadd", "ld1w"}  # hints, fcvt, fmla are Armv8.0
    assert uses["ldaddal"].count == 1  # the outline-atomics copy is chosen at run time
    assert (uses["ldaddal"].extension, uses["ldaddal"].address, uses["ldaddal"].function) == (
        "lse",
        "0x1000",
        "atomic_add",
    )
    assert (uses["sdot"].extension, uses["fadd"].extension, uses["ld1w"].extension) == (
        "dotprod",
        "fp16",
        "sve",
    )


def test_ldaddal_refused_for_rpi4_accepted_for_orin():
    text = LISTING.split("0000000000001030")[0]  # the atomics only
    check = _isa("rpi4", text)
    assert check.ok is False
    assert "ldaddal at 0x1000 in <atomic_add>" in check.detail and "FEAT_LSE" in check.detail
    assert "rpi4: armv8.0-a +crc lacks" in check.detail and check.way_out
    assert _isa("jetson-orin-cpu", text).ok is True
    assert _isa("jetson-orin", text).ok is True


def test_extensions_follow_the_board():
    dot = "0000000000001000 <k>:\n    1000:\tsdot\tv0.4s, v1.16b, v2.16b\n"
    half = "0000000000001000 <k>:\n    1000:\tfadd\tv0.8h, v1.8h, v2.8h\n"
    assert _isa("rpi4", dot).ok is False and _isa("rpi5", dot).ok is True
    assert _isa("jetson-xavier", dot).ok is False  # Carmel: Armv8.2 without dotprod
    assert _isa("rpi4", half).ok is False and _isa("jetson-xavier", half).ok is True
    assert _isa("rpi5").ok is False  # SVE: no preset has it


def test_version_needs_and_libc_verdict(monkeypatch, tmp_path):
    dump = """Version References:
  required from libstdc++.so.6:
    0x0297f879 0x00 06 GLIBCXX_3.4.29
    0x0297f871 0x00 04 GLIBCXX_3.4.21
    0x056bafd3 0x00 05 CXXABI_1.3.9
  required from libc.so.6:
    0x06969197 0x00 02 GLIBC_2.17
    0x06969197 0x00 03 GLIBC_2.34
"""
    assert audit.version_needs(dump) == {"GLIBCXX": "3.4.29", "CXXABI": "1.3.9", "GLIBC": "2.34"}
    monkeypatch.setattr(audit, "_run", lambda cmd: dump)
    checks = {
        c.check: c
        for c in audit.libc_checks(tmp_path, resolve("jetson-nano"), "libx.so", "objdump")
    }
    assert checks["glibc"].ok is False and "GLIBC_2.34" in checks["glibc"].detail
    assert "GLIBCXX_2" not in checks["glibcxx"].detail and checks["glibcxx"].ok is False
    assert checks["cxxabi"].ok is True
    orin = {
        c.check: c for c in audit.libc_checks(tmp_path, resolve("jetson-orin-cpu"), "x", "objdump")
    }
    assert orin["glibc"].ok and orin["glibcxx"].ok


# --------------------------------------------------------------------------- preset data


def test_every_arm_preset_names_its_isa_and_os():
    for preset in _static_presets().values():
        if preset.arch != "aarch64":
            assert preset.isa is None, preset.name
            continue
        isa, board = preset.isa, preset.board_os
        assert set(audit.LEVELS[isa["level"]]) <= set(isa["extensions"]) <= set(audit.EXTENSIONS), (
            preset.name
        )
        for feature in ("dotprod", "fp16"):  # the compiler's features never exceed the board's
            assert (feature in preset.features) == (feature in isa["extensions"]), (
                preset.name,
                feature,
            )
        assert {"glibc", "glibcxx", "cxxabi", "name"} <= set(board), preset.name
        if preset.board_cuda:
            assert ptx.PTX_ISA_OF_CUDA[preset.board_cuda] >= ptx.MIN_PTX_FOR_ARCH.get(
                preset.target["arch"], (0, 0)
            )
    assert resolve("rpi4").isa["extensions"] == ["crc"]  # BCM2711: no crypto extension
    assert resolve("jetson-nano").board_os["glibcxx"] == "3.4.25"  # Ubuntu 18.04: GCC 8


@needs_qemu
def test_qemu_knows_every_preset_cpu():
    listing = subprocess.run(
        ["qemu-aarch64", "-cpu", "help"], capture_output=True, text=True, check=False
    ).stdout
    for preset in _static_presets().values():
        if preset.isa:
            assert preset.isa["qemu_cpu"] in listing.split(), preset.name


@needs_cross
@needs_qemu
def test_qemu_cpu_model_traps_lse(tmp_path):
    """The run check means something: qemu's cortex-a72 raises SIGILL on ldaddal."""
    src = tmp_path / "lse.c"
    src.write_text(
        "int main(void){int v=1,r,*p=&v;"
        '__asm__ volatile("ldaddal %w1, %w0, [%2]":"=r"(r):"r"(1),"r"(p):"memory");'
        "return v==2?0:1;}\n"
    )
    exe = tmp_path / "lse"
    subprocess.run(["aarch64-linux-gnu-gcc", "-march=armv8.1-a", "-o", exe, src], check=True)
    run = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", "-cpu"]
    assert subprocess.run([*run, "cortex-a76", exe], check=False).returncode == 0
    assert (
        subprocess.run([*run, "cortex-a72", exe], capture_output=True, check=False).returncode != 0
    )


@needs_cross
def test_real_elf_lse_refused_unless_outline(tmp_path):
    """B1's SIGILL: a library built for Armv8.1 (inline LSE atomics) is refused for rpi4 by
    name and address; built with GCC's outline atomics (run-time choice) it passes."""
    src = tmp_path / "count.c"
    src.write_text(
        "int counter; int bump(int n) { return __atomic_fetch_add(&counter, n, __ATOMIC_SEQ_CST); }\n"
    )
    tool = audit.objdump()
    for flags, ok in (
        (["-march=armv8.1-a", "-mno-outline-atomics"], False),
        (["-march=armv8-a", "-moutline-atomics"], True),
    ):
        lib = tmp_path / f"lib{len(flags[0])}.so"
        subprocess.run(
            ["aarch64-linux-gnu-gcc", "-O2", "-shared", "-fPIC", *flags, "-o", lib, src], check=True
        )
        check = audit.isa_check(lib, resolve("rpi4"), lib.name, tool)
        assert check.ok is ok, check.detail
        if not ok:
            assert "ldaddal at 0x" in check.detail and "<bump>" in check.detail
        assert audit.isa_check(lib, resolve("jetson-orin-cpu"), lib.name, tool).ok


# --------------------------------------------------------------------------- PTX

PTX = b""".version 8.8
.target sm_87
.address_size 64
.visible .entry k(.param .u64 k_param_0)
{
\t.reg .f32 \t%f<3>;
\t.reg .b64 \t%rd<3>;
\tld.param.u64 \t%rd1, [k_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tld.global.nc.f32 \t%f1, [%rd2];
\tmax.ftz.f32 \t%f2, %f1, 0f00000000;
\tst.global.f32 \t[%rd2], %f2;
\tret;
}
"""


def test_ptx_version_lowered_only_when_safe():
    out, why = ptx.lower_version(PTX, (8, 5))
    assert why is None and ptx.ptx_version(out) == (8, 5) and out.replace(b"8.5", b"8.8", 1) == PTX
    nano = PTX.replace(b"sm_87", b"sm_53")
    assert ptx.ptx_version(ptx.lower_version(nano, (6, 5))[0]) == (6, 5)
    newer = nano.replace(b"max.ftz.f32", b"max.NaN.f32")  # .NaN: PTX ISA 7.0
    out, why = ptx.lower_version(newer, (6, 5))
    assert out == newer and "max.NaN" in why
    assert "sm_87 needs PTX ISA 7.4" in ptx.lower_version(PTX, (6, 5))[1]
    ptr = PTX.replace(b".param .u64 k_param_0", b".param .u64 .ptr .global .align 4 k_param_0")
    assert ".ptr" in ptx.lower_version(ptr, (8, 5))[1]  # a PTX ISA 6.4 attribute: not proven
    assert ptx.lower_version(PTX.replace(b"8.8", b"8.0", 1), (8, 5)) == (
        PTX.replace(b"8.8", b"8.0", 1),
        None,
    )


def _lz4_literals(data: bytes) -> bytes:
    n = len(data)
    ext = b"" if n < 15 else bytes([255] * ((n - 15) // 255) + [(n - 15) % 255])
    return bytes([min(n, 15) << 4]) + ext + data


def test_fatbin_entries_decompress_ptx():
    cubin = b"\x7fELF" + bytes(60)
    packed = _lz4_literals(PTX)

    def entry(kind: int, sm: int, body: bytes, flags: int, raw: int) -> bytes:
        head = struct.pack("<HHIQII", kind, 0x101, 64, len(body), len(body), 0)
        head += (
            struct.pack("<HHI", 8, 8, sm)
            + struct.pack("<IIQ", 64, 0, flags)
            + struct.pack("<QQ", 0, raw)
        )
        return head + body

    body = entry(2, 87, cubin, 0, 0) + entry(1, 87, packed, 0x2000, len(PTX))
    blob = b"junk" + struct.pack("<IHHQ", ptx.FATBIN_MAGIC, 1, 16, len(body)) + body
    sass, text = ptx.fatbin_entries(blob)
    assert (sass.kind, sass.arch, text.kind, text.arch) == ("sass", "sm_87", "ptx", "sm_87")
    assert text.data == PTX
    assert text.version == (8, 8)


# --------------------------------------------------------------------------- B1


def _conv_relu(path: Path, qdq: bool) -> Path:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype("float32") * 0.2
    b = rng.standard_normal(8).astype("float32") * 0.1
    inits = [numpy_helper.from_array(b, "b")]
    nodes = []
    x, wname = "x", "w"
    if qdq:
        s = numpy_helper.from_array(np.array(0.02, "float32"), "s")
        zp = numpy_helper.from_array(np.array(0, "int8"), "zp")
        ws = np.abs(w).reshape(8, -1).max(1) / 127
        wq = np.round(w / ws[:, None, None, None]).astype("int8")
        inits += [
            s,
            zp,
            numpy_helper.from_array(wq, "wq"),
            numpy_helper.from_array(ws.astype("float32"), "ws"),
            numpy_helper.from_array(np.zeros(8, "int8"), "wzp"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=0),
        ]
        x, wname = "xd", "wd"
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    nodes += [
        helper.make_node("Conv", [x, wname, "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    if qdq:
        nodes[-1].output[0] = "r"
        nodes += [
            helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["yq"]),
            helper.make_node("DequantizeLinear", ["yq", "s", "zp"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes,
        "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@needs_cross
@needs_qemu
@pytest.mark.parametrize("qdq", [False, True], ids=["fp32", "qdq"])
def test_b1_bundles_load_and_run_on_the_boards(qdq, tmp_path):
    model = _conv_relu(tmp_path / "m.onnx", qdq)
    result = driver.compile(model, "jetson-orin-cpu")
    orin = bundle.write_bundle(result, tmp_path / "orin")
    rpi4 = bundle.write_bundle(driver.compile(model, "rpi4"), tmp_path / "rpi4")
    for folder, preset in ((rpi4.path, "rpi4"), (orin.path, "jetson-orin-cpu")):
        report = audit.audit_path(folder, preset)
        assert report.ok, report.lines()
        checked = {(c.file, c.check) for c in report.checks if c.ok}
        for elf in (f"{folder.name}.so", "libtvm_runtime.so", "libtvm_ffi.so", "liblwc_runtime.so"):
            assert {(elf, k) for k in ("isa", "glibc", "glibcxx")} <= checked, (preset, elf)
        run = next(c for c in report.checks if c.check == "run")
        assert run.ok and f"-cpu {resolve(preset).isa['qemu_cpu']}" in run.detail
    # the Orin model is refused for a Pi 4 exactly where it uses what the A72 lacks
    uses = audit.isa_uses(orin.artifact, audit.objdump())
    check = audit.judge_isa(uses, resolve("rpi4"), orin.artifact.name)
    assert check.ok == (not any(u.extension not in ("crc",) for u in uses)), check.detail


@needs_cross
def test_bundle_refused_before_writing(tmp_path, monkeypatch):
    """A board whose libstdc++ is too old for the wheel's libtvm_runtime.so: refused by name,
    with the way out, and no folder (or half-written stage) left behind."""
    old = replace(
        resolve("rpi4"),
        board_os={"name": "Old OS", "glibc": "2.17", "glibcxx": "3.4.19", "cxxabi": "1.3.7"},
    )
    result = driver.compile(_conv_relu(tmp_path / "m.onnx", False), "rpi4")
    result.preset = old
    with pytest.raises(LwcError) as err:
        bundle.write_bundle(result, tmp_path / "out" / "dep")
    message = str(err.value)
    assert "libtvm_runtime.so: needs GLIBCXX_3.4.22, Old OS has GLIBCXX_3.4.19" in message
    assert "GLIBC_2.27" in message and "scripts/build_runtime_on_board.sh" in message
    assert list((tmp_path / "out").iterdir()) == []


# --------------------------------------------------------------------------- B2


@pytest.mark.skipif(NVRTC is None, reason="CUDA 12 NVRTC not installed (pip install 'lwc[cuda]')")
@pytest.mark.parametrize("target", ["jetson-orin", "jetson-xavier", "jetson-nano"])
def test_b2_fatbin_fits_the_board(target, tmp_path, monkeypatch):
    monkeypatch.setenv("LWC_NVRTC", "1")  # the route that reaches sm_53/sm_72 here
    preset = resolve(target)
    artifact = driver.compile(_conv_relu(tmp_path / "m.onnx", False), preset).export(
        tmp_path / "m.so"
    )
    checks = audit.device_checks(artifact, preset, artifact.name)
    assert all(c.ok for c in checks), [c.detail for c in checks]
    assert any(c.check == "sass" and preset.target["arch"] in c.detail for c in checks)
    (ptx_check,) = [c for c in checks if c.check == "ptx"]
    limit = ptx.fmt(ptx.PTX_ISA_OF_CUDA[preset.board_cuda])
    assert f".version {limit}" in ptx_check.detail  # NVRTC wrote 8.8; lwc lowered it
    _ptxas_accepts(artifact, tmp_path)


def _ptxas_accepts(artifact: Path, tmp_path: Path) -> None:
    """Where a ptxas is installed, it assembles the lowered PTX: ptxas refuses a text that
    uses anything newer than its ``.version``. CUDA 13's ptxas starts at sm_75, so an older
    ``.target`` is assembled as sm_75 (a superset; sm_75 needs PTX ISA 6.3 <= 6.5)."""
    if shutil.which("ptxas") is None:
        return
    data = artifact.read_bytes()
    offset = cuda._dynamic_symbol_offset(data, b"__tvm_ffi__library_bin")
    blob = next(p for k, p in cuda._unpack_library_bin(data, offset) if k == "cuda")
    (entry,) = [e for e in ptx.fatbin_entries(blob) if e.kind == "ptx"]
    arch = entry.arch if int(entry.arch[3:]) >= 75 else "sm_75"
    text = entry.data.replace(f".target {entry.arch}".encode(), f".target {arch}".encode())
    src = tmp_path / "k.ptx"
    src.write_bytes(text.rstrip(b"\0") + b"\n")
    proc = subprocess.run(
        ["ptxas", f"-arch={arch}", "-o", str(tmp_path / "k.cubin"), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_b2_too_new_ptx_is_refused(monkeypatch, tmp_path):
    """An artifact whose PTX the board cannot JIT is refused at export, with the way out."""
    entries = [ptx.FatbinEntry("sass", "sm_87", b""), ptx.FatbinEntry("ptx", "sm_87", PTX)]
    monkeypatch.setattr(ptx, "fatbin_entries", lambda blob: entries)
    monkeypatch.setattr(cuda, "_dynamic_symbol_offset", lambda data, name: 0)
    monkeypatch.setattr(cuda, "_unpack_library_bin", lambda data, offset: [("cuda", b"")])
    lib = tmp_path / "m.so"
    lib.write_bytes(b"")
    old = replace(resolve("jetson-orin"), board_cuda="11.4", isa=None, board_os=None)
    with pytest.raises(
        LwcError, match=r"PTX sm_87 \.version 8\.8, CUDA 11\.4 .* JITs <= 7\.4 -- .*--nvcc"
    ):
        audit.check_files({"m.so": lib}, old)


def test_ptx_with_warp_reductions_is_lowered_where_activemask_exists():
    """TVM's cross-thread reductions (PP-OCR cls's softmax on Jetsons) use activemask, PTX ISA
    6.2: lowered for JetPack 4.6 (6.5) and 6 (8.5), refused below 6.2."""
    nano = PTX.replace(b"sm_87", b"sm_53").replace(b"\tret;", b"\tactivemask.b32 \t%r1;\n\tret;")
    out, why = ptx.lower_version(nano, (6, 5))
    assert why is None and ptx.ptx_version(out) == (6, 5)
    out, why = ptx.lower_version(nano, (6, 1))
    assert out == nano and "activemask" in why
