"""Board audits: would what lwc writes load and run on the board the preset names?

Every ELF lwc writes or bundles (model ``.so``, ``libtvm_runtime.so``, ``libtvm_ffi.so``,
``liblwc_runtime.so``) is checked against the preset's ``isa`` and ``board_os`` data
(targets/presets.json) before anything is written (:func:`check_files`, called by
``CompileResult.export`` and ``lwc.bundle.write_bundle``), and on request by ``lwc audit``:

- **ISA**: ``objdump -d`` of the file; each instruction is classed by the Arm extension it
  needs (:data:`EXTENSIONS`, from the Arm ARM DDI 0487's feature lists, A2.x "Armv8.x
  extensions") and refused when the board lacks it (an Armv8.1 LSE ``ldaddal`` on a Pi 4
  dies with SIGILL). Exempt: libgcc's outline atomics (an LSE instruction between ``cbz
  w16`` on ``__aarch64_have_lse_atomics`` and ``ret``: chosen at run time) and HINT-space
  instructions (``paciasp``, ``bti``: NOPs on older cores). System-register accesses are
  not classed.
- **libc**: the ``GLIBC_x`` / ``GLIBCXX_x`` / ``CXXABI_x`` versions the file requires
  (``objdump -p``, "Version References") against the board OS's (a binary linked on a
  newer distro fails with "version GLIBC_2.34 not found").
- **PTX/SASS** (CUDA presets): the fatbin in the model must hold SASS for the preset's arch
  and PTX no newer than the board's CUDA JITs (:mod:`lwc.ptx`).
- **run** (``lwc audit`` only: it takes qemu and seconds to minutes): the bundle's C example
  (or, for a lone ``.so``, lwc's runner) under ``qemu-aarch64 -cpu <board core>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from bisect import bisect_right
from dataclasses import asdict, dataclass
from pathlib import Path

from lwc.errors import LwcError

#: Bump when the classification changes: cached scans are keyed by it.
SCANNER_VERSION = 1

#: Extensions each architecture level makes mandatory beyond Armv8.0-A (fp, asimd): Arm
#: ARM DDI 0487 K.a, A2.2-A2.7 (only those :func:`classify` can see in user code).
LEVELS = {
    "armv8.0-a": (),
    "armv8.1-a": ("crc", "lse", "rdm"),
    "armv8.2-a": ("crc", "lse", "rdm"),
    "armv8.3-a": ("crc", "lse", "rdm", "rcpc", "pauth", "fcma", "jscvt"),
    "armv8.4-a": (
        "crc",
        "lse",
        "rdm",
        "rcpc",
        "pauth",
        "fcma",
        "jscvt",
        "dotprod",
        "rcpc2",
        "flagm",
    ),
}

#: Extension name -> (Arm feature, mnemonic pattern). fp16, sve, sme, pmull, pauth and
#: cssc also look at operands (:func:`classify`).
EXTENSIONS = {
    "crc": ("FEAT_CRC32", r"crc32c?[bhwx]"),
    "lse": (
        "FEAT_LSE (Armv8.1)",
        (
            r"(ld|st)(add|clr|eor|set|smax|smin|umax|umin)(a|al|l)?[bh]?"
            r"|swp(a|al|l)?[bh]?|casp?(a|al|l)?[bh]?"
        ),
    ),
    "rdm": ("FEAT_RDM (Armv8.1)", r"sqrdml[as]h"),
    "fp16": ("FEAT_FP16 (Armv8.2)", None),
    "dotprod": ("FEAT_DotProd (Armv8.2 optional, 8.4)", r"[su]dot"),
    "fhm": ("FEAT_FHM (Armv8.2 optional)", r"fml[as]l2?"),
    "rcpc": ("FEAT_LRCPC (Armv8.3)", r"ldapr[bh]?"),
    "rcpc2": ("FEAT_LRCPC2 (Armv8.4)", r"ldapur(s?[bh]|sw)?|stlur[bh]?"),
    "pauth": (
        "FEAT_PAuth (Armv8.3)",
        (
            r"(pac|aut)(ia|ib|da|db|iza|izb|dza|dzb)|pacga|xpac[id]"
            r"|bra[ab]z?|blra[ab]z?|reta[ab]|eretaa|eretab|ldra[ab]"
        ),
    ),
    "fcma": ("FEAT_FCMA (Armv8.3)", r"fcmla|fcadd"),
    "jscvt": ("FEAT_JSCVT (Armv8.3)", r"fjcvtzs"),
    "flagm": ("FEAT_FlagM (Armv8.4)", r"cfinv|rmif|setf(8|16)|axflag|xaflag"),
    "frintts": ("FEAT_FRINTTS (Armv8.5)", r"frint(32|64)[xz]"),
    "sb": ("FEAT_SB (Armv8.5)", r"sb"),
    "mte": ("FEAT_MTE (Armv8.5)", r"irg|gmi|subps?|addg|subg|st2?z?g|stgp|ldgm?|stz?gm"),
    "bf16": ("FEAT_BF16 (Armv8.6)", r"bfdot|bfmmla|bfmlal[bt]|bfcvtn?2?"),
    "i8mm": ("FEAT_I8MM (Armv8.6)", r"[su]mmla|usmmla|usdot|sudot"),
    "aes": ("FEAT_AES", r"aes(e|d|mc|imc)"),
    "pmull": ("FEAT_PMULL", None),
    "sha1": ("FEAT_SHA1", r"sha1(c|h|m|p|su0|su1)"),
    "sha2": ("FEAT_SHA256", r"sha256(h2?|su[01])"),
    "sha3": ("FEAT_SHA3 / SHA512", r"eor3|rax1|xar|bcax|sha512(h2?|su[01])"),
    "sm4": ("FEAT_SM3 / SM4", r"sm3\w*|sm4e\w*"),
    "ls64": ("FEAT_LS64 (Armv8.7)", r"ld64b|st64bv?0?"),
    "mops": ("FEAT_MOPS (Armv8.8)", r"cpyf?[pme]\w*|setg?[pme]\w*"),
    "cssc": ("FEAT_CSSC (Armv8.9)", None),
    "sve": ("FEAT_SVE", r"ptrues?|while(lo|ls|lt|le|hi|hs|gt|ge)|rdvl|addvl|addpl|setffr|rdffr\w*"),
    "sme": ("FEAT_SME", r"smstart|smstop"),
    "unknown": (
        "an encoding objdump cannot decode (a newer extension, or data in code)",
        r"\.inst",
    ),
}
_MNEMONIC_RE = {name: re.compile(f"(?:{pat})") for name, (_, pat) in EXTENSIONS.items() if pat}
_FP_BASE_CONVERSIONS = {"fcvt", "fcvtl", "fcvtl2", "fcvtn", "fcvtn2", "fcvtxn", "fcvtxn2"}
_HALF_OPERAND = re.compile(r"\bh\d+\b|\.[48]h\b")
_SVE_OPERAND = re.compile(r"\bz\d+\.|\bz\d+\b|\bp\d+(\.[bhsdq]\b|/[zm])")
_SME_OPERAND = re.compile(r"\bza\d*\w*|\bzt0\b")
_CSSC = {"abs", "cnt", "ctz", "smax", "smin", "umax", "umin"}
_INSN_LINE = re.compile(
    r"^\s*([0-9a-f]+):\s+(?:(?:[0-9a-f]{2} ){4}\s*|[0-9a-f]{8}\s+)?"
    r"([a-z.][\w.]*)[ \t]*([^\n]*)$",
    re.MULTILINE,
)
_FUNC_LINE = re.compile(r"^[0-9a-f]+ <([^>]+)>:$", re.MULTILINE)


_ANY_MNEMONIC = re.compile("|".join(f"(?:{p.pattern})" for p in _MNEMONIC_RE.values()))
_SPECIAL = {"pmull", "pmull2", "scvtf", "ucvtf", *_CSSC}
_ANY_OPERAND = re.compile(r"\b[zp]\d|\bza|\bzt0")


def classify(mnemonic: str, operands: str) -> str | None:
    """The extension (a key of :data:`EXTENSIONS`) an A64 instruction needs; None: Armv8.0."""
    if (
        mnemonic[0] != "f"
        and mnemonic not in _SPECIAL
        and not _ANY_MNEMONIC.fullmatch(mnemonic)
        and not _ANY_OPERAND.search(operands)
    ):
        return None  # the fast path: almost every instruction
    ops = re.sub(r"<[^>]*>", "", operands).split("//")[0]
    if mnemonic in ("smstart", "smstop") or _SME_OPERAND.search(ops):
        return "sme"
    if _SVE_OPERAND.search(ops):
        return "sve"
    if mnemonic in ("pmull", "pmull2") and (".1q" in ops or ".1d" in ops or ".2d" in ops):
        return "pmull"
    if mnemonic in _CSSC and re.match(r"\s*[wx]\d+", ops):
        return "cssc"
    for name, pattern in _MNEMONIC_RE.items():
        if pattern.fullmatch(mnemonic):
            return name
    if (
        (mnemonic.startswith("f") or mnemonic in ("scvtf", "ucvtf"))
        and mnemonic not in _FP_BASE_CONVERSIONS
        and _HALF_OPERAND.search(ops)
    ):
        return "fp16"
    return None


def _outline_atomic(text: str, start: int, end: int) -> bool:
    """libgcc's outline atomics: ``cbz w16`` (no LSE) before the instruction, ``ret`` after."""
    prev = text[text.rfind("\n", 0, max(start - 1, 0)) + 1 : max(start - 1, 0)]
    stop = text.find("\n", end + 1)
    nxt = text[end + 1 : stop if stop >= 0 else len(text)]
    return re.search(r"\bcbz\s+w16\b", prev) is not None and re.search(r"\sret\b", nxt) is not None


@dataclass(frozen=True)
class Use:
    """Instructions of one extension found in one file (first occurrence)."""

    extension: str
    mnemonic: str
    address: str
    function: str
    count: int


def scan_disassembly(text: str) -> list[Use]:
    """Every non-Armv8.0 instruction in an ``objdump -d`` listing, one Use per mnemonic."""
    funcs = [(m.start(), m.group(1)) for m in _FUNC_LINE.finditer(text)]
    starts = [pos for pos, _ in funcs]
    found: dict[tuple[str, str], list] = {}
    for m in _INSN_LINE.finditer(text):
        ext = classify(m.group(2), m.group(3))
        if ext is None:
            continue
        if ext == "lse" and _outline_atomic(text, m.start(), m.end()):
            continue
        key = (ext, m.group(2))
        if key in found:
            found[key][-1] += 1
            continue
        i = bisect_right(starts, m.start()) - 1
        found[key] = [ext, m.group(2), "0x" + m.group(1), funcs[i][1] if i >= 0 else "?", 1]
    return [Use(*v) for v in found.values()]


def objdump() -> str | None:
    """A disassembler that reads AArch64 ELF files (GNU cross objdump, else llvm-objdump)."""
    for tool in ("aarch64-linux-gnu-objdump", "llvm-objdump"):
        if shutil.which(tool):
            return tool
    return None


def _cache_dir() -> Path:
    env = os.environ.get("LWC_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "lwc") / "audit"


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0:
        raise LwcError(
            f"{Path(cmd[0]).name} failed on {Path(cmd[-1]).name}: "
            f"{(proc.stderr.strip().splitlines() or ['exit ' + str(proc.returncode)])[-1]}"
        )
    return proc.stdout


def isa_uses(path: Path, tool: str) -> list[Use]:
    """:func:`scan_disassembly` of ``path`` (cached by content: wheel libraries are big)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:24]
    cache = _cache_dir() / f"isa-v{SCANNER_VERSION}-{digest}.json"
    if cache.is_file():
        return [Use(**u) for u in json.loads(cache.read_text())]
    uses = scan_disassembly(_run([tool, "-d", "--no-show-raw-insn", str(path)]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps([asdict(u) for u in uses]))
    os.replace(tmp, cache)
    return uses


def version_needs(objdump_p: str) -> dict[str, str]:
    """Newest required GLIBC / GLIBCXX / CXXABI version in ``objdump -p`` output."""
    newest: dict[str, tuple[int, ...]] = {}
    for prefix, ver in re.findall(
        r"\b(GLIBC|GLIBCXX|CXXABI)_(\d+(?:\.\d+)*)\b", objdump_p.split("Version References", 1)[-1]
    ):
        key = tuple(int(x) for x in ver.split("."))
        if key > newest.get(prefix, ()):
            newest[prefix] = key
    return {k: ".".join(map(str, v)) for k, v in newest.items()}


def _vt(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


# --------------------------------------------------------------------------- report


@dataclass
class Check:
    """One audit check of one file: ok True/False, or None when it could not run."""

    file: str
    check: str  # "isa", "glibc", "glibcxx", "cxxabi", "sass", "ptx", "run"
    ok: bool | None
    detail: str
    way_out: str = ""


@dataclass
class Report:
    preset: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def to_json(self) -> dict:
        return {"preset": self.preset, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def lines(self) -> list[str]:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}
        out = [f"{mark[c.ok]} {c.check:8} {c.file}: {c.detail}" for c in self.checks]
        return out + [f"     way out for {c.file}: {c.way_out}" for c in self.problems if c.way_out]


def _origin(name: str, preset) -> str:
    """The way out for a file that fails, by where it comes from."""
    if name in ("libtvm_runtime.so", "libtvm_ffi.so"):
        return (
            f"{name} comes from the apache-tvm(-ffi) manylinux aarch64 wheel; build TVM's "
            "runtime from the pinned sources on the board or in a sysroot of its OS: "
            "scripts/build_runtime_on_board.sh (docs/boards.md)"
        )
    if name == "liblwc_runtime.so":
        return (
            "liblwc_runtime.so is built by lwc (lwc.bundle.build_runtime_library); build it "
            "on the board with scripts/build_runtime_on_board.sh, and report this as an lwc bug"
        )
    return (
        f"compile with --target {preset.name} (its CPU and features), not a custom target "
        "with more; if it persists, report an lwc bug with the listed instruction"
    )


def isa_check(path: Path, preset, name: str, tool: str | None) -> Check:
    if tool is None:
        return Check(
            name, "isa", None, "no aarch64 objdump (apt-get install binutils-aarch64-linux-gnu)"
        )
    return judge_isa(isa_uses(path, tool), preset, name)


def judge_isa(uses: list[Use], preset, name: str) -> Check:
    """The ISA check of one file from its :func:`scan_disassembly` result."""
    isa = preset.isa
    have = set(isa["extensions"])
    label = f"{preset.name}: {isa['level']}" + "".join(f" +{e}" for e in isa["extensions"])
    bad = [u for u in uses if u.extension not in have]
    if not bad:
        return Check(name, "isa", True, f"no instruction outside {label}")
    first = bad[0]
    more = sum(u.count for u in bad) - 1
    listing = ", ".join(sorted({f"{u.mnemonic} ({u.extension})" for u in bad})[:6])
    return Check(
        name,
        "isa",
        False,
        f"{first.mnemonic} at {first.address} in <{first.function}> needs "
        f"{EXTENSIONS[first.extension][0]}, which {label} lacks"
        + (f" (and {more} more: {listing})" if more else ""),
        _origin(name, preset),
    )


def libc_checks(path: Path, preset, name: str, tool: str | None) -> list[Check]:
    board = preset.board_os
    if tool is None:
        return [Check(name, "glibc", None, "no objdump to read symbol versions")]
    needs = version_needs(_run([tool, "-p", str(path)]))
    checks = []
    for key, prefix in (("glibc", "GLIBC"), ("glibcxx", "GLIBCXX"), ("cxxabi", "CXXABI")):
        need, have = needs.get(prefix), board[key]
        if need is None:
            checks.append(Check(name, key, True, f"needs no {prefix}_x"))
        elif _vt(need) <= _vt(have):
            checks.append(
                Check(name, key, True, f"needs {prefix}_{need} <= {have} ({board['name']})")
            )
        else:
            checks.append(
                Check(
                    name,
                    key,
                    False,
                    f"needs {prefix}_{need}, {board['name']} has {prefix}_{have}",
                    _origin(name, preset),
                )
            )
    return checks


def device_checks(path: Path, preset, name: str) -> list[Check]:
    """SASS for the preset's arch and PTX no newer than the board's CUDA (CUDA presets)."""
    from lwc import cuda, ptx

    arch = preset.target["arch"]
    data = Path(path).read_bytes()
    offset = cuda._dynamic_symbol_offset(data, b"__tvm_ffi__library_bin")
    blobs = (
        []
        if offset is None
        else [p for k, p in cuda._unpack_library_bin(data, offset) if k == "cuda"]
    )
    entries = [e for b in blobs for e in ptx.fatbin_entries(b)]
    sass = sorted({e.arch for e in entries if e.kind == "sass"})
    checks = [
        Check(
            name,
            "sass",
            arch in sass,
            f"SASS for {', '.join(sass) or 'no arch'}"
            + ("" if arch in sass else f"; {preset.name} needs {arch}"),
            "" if arch in sass else "recompile with a CUDA toolkit that has the arch (--nvcc)",
        )
    ]
    limit = ptx.PTX_ISA_OF_CUDA.get(preset.board_cuda or "")
    for e in (e for e in entries if e.kind == "ptx"):
        version = e.version
        if version is None or limit is None:
            checks.append(
                Check(name, "ptx", None, f"PTX for {e.arch}: version or board CUDA unknown")
            )
            continue
        fits = version <= limit
        detail = (
            f"PTX {e.arch} .version {ptx.fmt(version)}, CUDA {preset.board_cuda} "
            f"({preset.name}) JITs <= {ptx.fmt(limit)}"
        )
        _, why = ptx.lower_version(e.data, limit)
        way_out = (
            f"recompile with lwc's NVRTC route (pip install 'lwc[cuda]'; it lowers "
            f".version to {ptx.fmt(limit)} where that is safe) or with the board's CUDA "
            f"{preset.board_cuda} nvcc (--nvcc PATH)"
        )
        if why:
            way_out = (
                f"compile with the board's CUDA {preset.board_cuda} nvcc (--nvcc PATH): "
                f"lwc cannot lower this PTX's .version, {why}"
            )
        checks.append(Check(name, "ptx", fits, detail, "" if fits else way_out))
    return checks


def audit_files(files: dict[str, Path], preset) -> Report:
    """The static checks (ISA, libc, PTX/SASS) of ``{name: path}`` for ``preset``; the
    first file is the model (the one whose device code is read)."""
    tool = objdump()
    checks: list[Check] = []
    for i, (name, path) in enumerate(files.items()):
        if preset.isa:
            checks.append(isa_check(path, preset, name, tool))
        if preset.board_os:
            checks += libc_checks(path, preset, name, tool)
        if preset.is_gpu and i == 0:
            checks += device_checks(path, preset, name)
    return Report(preset.name, checks)


def check_files(files: dict[str, Path], preset) -> Report:
    """:func:`audit_files`, raising LwcError (every problem, with its way out) if any fails.

    Presets without ``isa``/``board_os`` data (x86-64, custom targets) pass unchecked.
    """
    if not (preset.isa or preset.board_os or preset.is_gpu):
        return Report(preset.name, [])
    report = audit_files(files, preset)
    if not report.ok:
        problems = "; ".join(f"{c.file}: {c.detail} -- {c.way_out}" for c in report.problems)
        raise LwcError(
            f"refused: not loadable on {preset.name} as built, nothing written: {problems}"
        )
    return report


# --------------------------------------------------------------------------- run under qemu


def _zero_inputs(manifest: dict, folder: Path) -> list[Path]:
    import numpy as np

    paths = []
    for i, spec in enumerate(manifest["inputs"]):
        p = folder / f"input_{i}.bin"
        np.zeros(spec["shape"], dtype=spec["dtype"]).tofile(p)
        paths.append(p)
    return paths


def run_under_qemu(artifact: Path, preset, timeout_s: float = 600) -> Check:
    """Run the model under ``qemu-aarch64 -cpu <preset's qemu_cpu>``: the bundle's C example
    when ``artifact`` sits in a bundle (every ELF of it loads), else lwc's runner."""
    from lwc import cross_runtime

    cpu = (preset.isa or {}).get("qemu_cpu")
    name = artifact.name
    if cpu is None:
        return Check(name, "run", None, f"{preset.name} names no qemu CPU")
    if not cross_runtime.qemu_available():
        return Check(name, "run", None, "qemu-aarch64 not found (apt-get install qemu-user)")
    exact = cpu == preset.cpu
    label = f"qemu-aarch64 -cpu {cpu}" + (
        ""
        if exact
        else " (an Armv8.0 core)"
        if preset.cpu == "generic"
        else f" (qemu has no {preset.cpu})"
    )
    manifest = json.loads(artifact.with_suffix(".json").read_text())
    bundle = artifact.parent
    with tempfile.TemporaryDirectory(prefix="lwc-audit-") as tmp:
        tmp = Path(tmp)
        inputs = _zero_inputs(manifest, tmp)
        if (bundle / "example" / "run_model.c").is_file() and (bundle / "lib").is_dir():
            cmd = _example_command(bundle, tmp, cpu) + [
                str(artifact),
                *map(str, inputs),
                str(tmp / "out.bin"),
            ]
            env = {**os.environ, "LD_LIBRARY_PATH": str(bundle / "lib")}
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
                )
            except subprocess.TimeoutExpired:
                return Check(name, "run", False, f"{label}: timed out after {timeout_s:.0f} s")
            if proc.returncode != 0:
                lines = (
                    proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}"
                ).splitlines()
                return Check(
                    name,
                    "run",
                    False,
                    f"{label}: run_model failed: {lines[-1]}",
                    "an illegal instruction means the ISA scan missed one: report it",
                )
            return Check(
                name, "run", True, f"{label}: example/run_model ran every ELF of the bundle"
            )
        import numpy as np

        arrays = [
            (s["name"], np.fromfile(p, dtype=s["dtype"]).reshape(s["shape"]))
            for s, p in zip(manifest["inputs"], inputs)
        ]
        try:
            cross_runtime.run_aarch64(artifact, arrays, qemu_cpu=cpu, timeout_s=timeout_s)
        except LwcError as err:
            return Check(name, "run", False, f"{label}: {err}")
        return Check(name, "run", True, f"{label}: lwc's runner ran the model")


def _example_command(bundle: Path, tmp: Path, cpu: str) -> list[str]:
    from lwc import cross_runtime

    cc = "aarch64-linux-gnu-gcc"
    if shutil.which(cc) is None:
        raise LwcError(f"{cc} not found (apt-get install gcc-aarch64-linux-gnu)")
    exe = tmp / "run_model"
    _run(
        [
            cc,
            "-O2",
            "-std=c99",
            "-I",
            str(bundle / "include"),
            "-o",
            str(exe),
            str(bundle / "example" / "run_model.c"),
            "-L",
            str(bundle / "lib"),
            f"-Wl,-rpath-link,{bundle / 'lib'}",
            "-llwc_runtime",
        ]
    )
    return [cross_runtime.QEMU, "-cpu", cpu, "-L", str(cross_runtime.AARCH64_SYSROOT), str(exe)]


def audit_path(path: str | os.PathLike, preset=None, *, run: bool = True) -> Report:
    """``lwc audit``: an artifact (``NAME.so`` + ``NAME.json``) or a bundle folder.

    Args:
        preset: a Preset or name; default the manifest's.
        run: also run it under qemu (:func:`run_under_qemu`).
    Raises:
        LwcError: no artifact or manifest at ``path``, unknown preset.
    """
    from lwc import targets

    path = Path(path)
    if path.is_dir():
        sos = [p for p in sorted(path.glob("*.so")) if p.with_suffix(".json").is_file()]
        if not sos:
            raise LwcError(f"{path} holds no NAME.so + NAME.json: not an lwc bundle")
        artifact = sos[0]
        files = {artifact.name: artifact}
        files.update({p.name: p for p in sorted((path / "lib").glob("*.so"))})
    else:
        if not path.is_file() or not path.with_suffix(".json").is_file():
            raise LwcError(
                f"{path}: expected an artifact NAME.so with NAME.json beside it, or a bundle folder"
            )
        artifact, files = path, {path.name: path}
    if preset is None:
        preset = json.loads(artifact.with_suffix(".json").read_text())["target"]["preset"]
    if isinstance(preset, str):
        preset = targets.resolve(preset)
    report = audit_files(files, preset)
    if run and preset.arch == "aarch64" and not preset.is_gpu:
        report.checks.append(run_under_qemu(artifact, preset))
    return report
