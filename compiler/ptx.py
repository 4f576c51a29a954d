"""PTX ISA versions: what a Jetson's CUDA accepts, reading fatbins, lowering ``.version``.

A fatbin holds SASS (cubin ELF, one GPU arch) and PTX (text the driver compiles at load
time). The driver JIT of CUDA release R accepts PTX up to ISA version ``PTX_ISA_OF_CUDA[R]``
and refuses newer text with CUDA_ERROR_UNSUPPORTED_PTX_VERSION, even when the text uses
nothing from the newer ISA: CUDA 12.9's NVRTC writes ``.version 8.8`` for every kernel,
which JetPack 6.2 (CUDA 12.6, PTX ISA 8.5) cannot JIT.

:func:`lower_version` rewrites the ``.version`` line down to the board's ISA when every
instruction, type modifier and directive of the text is on a list of those PTX ISA 6.0
and older already had (NVIDIA, "PTX ISA" release notes and each instruction's "PTX ISA
Notes"); anything else leaves the text as it is, and the audit (:mod:`lwc.audit`) refuses
the artifact. The ``.target`` line is kept, and the lowest version the target needs
(``MIN_PTX_FOR_ARCH``) bounds the rewrite from below.

Fatbin layout (as cuobjdump reads it; no public spec): a 16-byte header (magic
0xBA55ED50, u16 version, u16 header size, u64 body size), then entries: u16 kind (1 PTX,
2 ELF), u16, u32 entry header size, u64 padded payload size, u32 at 16 the stored
payload size, u16 at 24/26 the PTX ISA major/minor (PTX entries), u32 at 28 the SM
number, u64 at 40 flags (0x2000: payload LZ4-compressed), u64 at 56 the uncompressed size.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

#: Newest PTX ISA each CUDA release's driver/ptxas accepts (PTX ISA manual, "Release
#: Notes" table). JetPack 4.6 = CUDA 10.2, JetPack 5.1 = 11.4, JetPack 6.2 = 12.6.
PTX_ISA_OF_CUDA = {
    "10.0": (6, 3),
    "10.1": (6, 4),
    "10.2": (6, 5),
    "11.0": (7, 0),
    "11.1": (7, 1),
    "11.2": (7, 2),
    "11.3": (7, 3),
    "11.4": (7, 4),
    "11.5": (7, 5),
    "11.6": (7, 6),
    "11.7": (7, 7),
    "11.8": (7, 8),
    "12.0": (8, 0),
    "12.1": (8, 1),
    "12.2": (8, 2),
    "12.3": (8, 3),
    "12.4": (8, 4),
    "12.5": (8, 5),
    "12.6": (8, 5),
    "12.7": (8, 6),
    "12.8": (8, 7),
    "12.9": (8, 8),
    "13.0": (9, 0),
}

#: Oldest PTX ISA that knows each target (PTX ISA manual, "PTX ISA Notes" of ``.target``).
MIN_PTX_FOR_ARCH = {"sm_53": (4, 2), "sm_62": (5, 0), "sm_72": (6, 1), "sm_87": (7, 4)}

#: The version :func:`lower_version` can prove: every token below existed in PTX ISA 6.0.
_SAFE_FLOOR = (6, 0)

#: Instruction names (the part before the first dot) present in PTX ISA <= 6.0.
_OLD_INSTRUCTIONS = frozenset(
    """
add sub mul mad mul24 mad24 sad div rem abs neg min max popc clz bfind brev bfe bfi fns
dp4a dp2a prmt testp copysign rcp sqrt rsqrt sin cos lg2 ex2 fma set setp selp slct and or
xor not cnot lop3 shf shl shr mov shfl vote ld ldu st prefetch prefetchu isspacep cvta cvt
tex tld4 txq suld sust sured suq bar membar atom red bra brx call ret exit trap brkpt
pmevent match addc subc madc
""".split()  # noqa: SIM905 (a word list reads best as text)
)

#: Modifiers and types present in PTX ISA <= 6.0 (``.relu``, ``.bf16``, ``.L2::...``,
#: ``.NaN``, ``.xorsign``, ``.async`` and the like are newer and not listed).
_OLD_MODIFIERS = frozenset(
    """
s8 s16 s32 s64 u8 u16 u32 u64 b8 b16 b32 b64 f16 f16x2 f32 f64 pred
rn rz rm rp rni rzi rmi rpi ftz sat approx full lo hi wide cc uni to
eq ne lt le gt ge ls hs equ neu ltu leu gtu geu num nan and or xor popc red arrive sync
global shared local param const tex generic ca cg cs lu cv wb wt nc volatile v2 v4
all any ballot up down bfly idx add inc dec exch cas min max gl cta sys shiftamt clamp wrap
l r x y z w f4e b4e rc8 ecl ecr rc16 1d 2d 3d a1d a2d cube acube 2dms a2dms trap zero
""".split()  # noqa: SIM905 (a word list reads best as text)
)

#: Tokens newer than PTX ISA 6.0 with the version that introduced them (PTX ISA manual,
#: "PTX ISA Notes" of each instruction): text using them may be lowered to that version or
#: later. ``activemask``: warp reductions (TVM's cross-thread allreduce) since ISA 6.2.
_INTRODUCED = {"activemask": (6, 2)}

#: Directives present in PTX ISA <= 6.0.
_OLD_DIRECTIVES = frozenset(
    """
version target address_size visible extern weak entry func param reg shared global local
const align maxntid reqntid minnctapersm maxnctapersm maxnreg pragma loc file section
common callprototype calltargets branchtargets
""".split()  # noqa: SIM905 (a word list reads best as text)
)

_DOT_TOKEN = re.compile(r"(?<![\w%$.])\.[A-Za-z_]\w*")
_VERSION_RE = re.compile(rb"^(\s*\.version\s+)(\d+)\.(\d+)", re.MULTILINE)
_TARGET_RE = re.compile(rb"^\s*\.target\s+(sm_\d+)", re.MULTILINE)


def ptx_version(ptx: bytes) -> tuple[int, int] | None:
    """The ``.version`` of a PTX text, e.g. (8, 8); None when it has none."""
    m = _VERSION_RE.search(ptx)
    return (int(m.group(2)), int(m.group(3))) if m else None


def ptx_target(ptx: bytes) -> str | None:
    m = _TARGET_RE.search(ptx)
    return m.group(1).decode() if m else None


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def newer_tokens(ptx: bytes) -> list[str]:
    """Instructions, modifiers and directives of ``ptx`` not known to be in PTX ISA 6.0."""
    text = re.sub(rb"//[^\n]*|/\*.*?\*/", b"", ptx, flags=re.DOTALL).decode(errors="replace")
    text = re.sub(r'"[^"]*"', "", text)  # .pragma "nounroll"; string operands
    unknown: set[str] = set()
    for line in text.splitlines():
        line = line.strip().lstrip("{}").strip()
        if not line or line.endswith(":") or line[0] in "}%)(":
            continue
        line = re.sub(r"^@!?%\w+\s+", "", line)  # predicate guard
        word = line.split()[0].rstrip(";,")
        if word.startswith("."):  # a directive, with its attributes, types and state spaces
            for token in _DOT_TOKEN.findall(line):
                if token[1:] not in _OLD_DIRECTIVES and token[1:] not in _OLD_MODIFIERS:
                    unknown.add(token)
            continue
        name, *mods = word.split(".")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            continue  # operand continuation lines, initializer lists
        if name not in _OLD_INSTRUCTIONS:
            unknown.add(name)
        unknown.update(f"{name}.{m}" for m in mods if m not in _OLD_MODIFIERS)
    return sorted(unknown)


def lower_version(ptx: bytes, limit: tuple[int, int]) -> tuple[bytes, str | None]:
    """``ptx`` with ``.version`` lowered to ``limit`` where that is provably safe.

    Returns:
        (text, why not): the rewritten text and None, or the unchanged text and the
        reason it was kept (a token newer than PTX ISA 6.0, or a target that needs more
        than ``limit``). Text already within ``limit`` comes back unchanged with None.
    """
    have = ptx_version(ptx)
    if have is None or have <= limit:
        return ptx, None
    arch = ptx_target(ptx)
    need = MIN_PTX_FOR_ARCH.get(arch or "", _SAFE_FLOOR)
    if need > limit:
        return ptx, f"{arch} needs PTX ISA {fmt(need)}, newer than {fmt(limit)}"
    if limit < _SAFE_FLOOR:
        return ptx, f"lwc checks PTX text against ISA {fmt(_SAFE_FLOOR)} and older only"
    newer = [t for t in newer_tokens(ptx) if _INTRODUCED.get(t, (99, 0)) > limit]
    if newer:
        return ptx, f"it uses {', '.join(newer[:5])}, not known to be in PTX ISA {fmt(limit)}"
    lowered = _VERSION_RE.sub(lambda m: m.group(1) + fmt(limit).encode(), ptx, count=1)
    return lowered, None


# --------------------------------------------------------------------------- fatbin

FATBIN_MAGIC = 0xBA55ED50
_KIND = {1: "ptx", 2: "sass"}
_COMPRESSED = 0x2000


@dataclass
class FatbinEntry:
    """One image of a fatbin: SASS (cubin ELF) or PTX (text, decompressed)."""

    kind: str  # "ptx", "sass", or "kind N"
    arch: str  # "sm_87"
    data: bytes  # the cubin, or the PTX text

    @property
    def version(self) -> tuple[int, int] | None:
        return ptx_version(self.data) if self.kind == "ptx" else None


def lz4_block(src: bytes, size: int) -> bytes:
    """Decode one LZ4 block (the LZ4 block format: token, literals, 2-byte offset, match)."""
    out = bytearray()
    i = 0
    while i < len(src) and len(out) < size:
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                lit += src[i]
                i += 1
                if src[i - 1] != 255:
                    break
        out += src[i : i + lit]
        i += lit
        if i + 2 > len(src) or len(out) >= size:
            break
        offset = src[i] | src[i + 1] << 8
        i += 2
        length = token & 15
        if length == 15:
            while True:
                length += src[i]
                i += 1
                if src[i - 1] != 255:
                    break
        start = len(out) - offset
        if offset == 0 or start < 0:
            raise ValueError("corrupt LZ4 block")
        for k in range(length + 4):  # overlapping copies repeat the last bytes
            out.append(out[start + k])
    return bytes(out[:size])


def fatbin_entries(blob: bytes) -> list[FatbinEntry]:
    """Every fatbin image found anywhere in ``blob`` (PTX decompressed)."""
    entries = []
    for match in re.finditer(re.escape(struct.pack("<I", FATBIN_MAGIC)), blob):
        start = match.start()
        if start + 16 > len(blob):
            continue
        _magic, _ver, header, size = struct.unpack_from("<IHHQ", blob, start)
        pos, end = start + header, min(start + header + size, len(blob))
        while pos + 64 <= end:
            kind, _v, entry_header, padded = struct.unpack_from("<HHIQ", blob, pos)
            (stored,) = struct.unpack_from("<I", blob, pos + 16)
            (sm,) = struct.unpack_from("<I", blob, pos + 28)
            (flags,) = struct.unpack_from("<Q", blob, pos + 40)
            raw_size = struct.unpack_from("<Q", blob, pos + 56)[0] if entry_header >= 64 else 0
            body = blob[pos + entry_header : pos + entry_header + (stored or padded)]
            if flags & _COMPRESSED and raw_size:
                try:
                    body = lz4_block(body, raw_size)
                except (ValueError, IndexError):
                    body = b""
            entries.append(
                FatbinEntry(_KIND.get(kind, f"kind {kind}"), f"sm_{sm}", body.rstrip(b"\0"))
            )
            if entry_header == 0:
                break
            pos += entry_header + padded
    return entries
