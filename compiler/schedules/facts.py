"""CpuFacts: what the schedule rules need to know about a CPU, taken from an lwc preset.

Rules ask these facts (vector width, cores, caches, dot-product instructions), never a
preset's name, so one rule serves NEON, AVX2 and AVX-512.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Vector register width in bits per lwc ISA feature, widest first.
#: Sources: Arm Architecture Reference Manual (Armv8-A), "Advanced SIMD" (128-bit V regs);
#: Intel 64 and IA-32 Architectures Software Developer's Manual vol. 1, ch. 14 (AVX/AVX2,
#: 256-bit YMM) and ch. 15 (AVX-512, 512-bit ZMM).
_VECTOR_BITS = (("avx512", 512), ("avx2", 256), ("neon", 128))
#: Baseline when no feature is known: SSE2 (x86-64) and NEON (AArch64) are both 128-bit and
#: mandatory in their 64-bit ISAs.
_BASELINE_VECTOR_BITS = 128

#: Architectural vector registers: AArch64 has 32 V registers (Armv8-A ARM, B1.2.1);
#: x86-64 has 16 XMM/YMM (SSE, AVX2) and 32 ZMM (AVX-512; Intel SDM vol. 1, 15.1).
_AARCH64_VECTOR_REGS = 32
_X86_VECTOR_REGS = {512: 32, 256: 16, 128: 16}

#: Cores of boards whose preset gives no ``num-cores``: every board lwc targets has 4 big
#: cores or more (Raspberry Pi 4/5 data sheets; Jetson Nano/TX2 module data sheets).
_BOARD_CORES = 4

#: Per-core data cache sizes in bytes when the preset does not say. Sources: Arm Cortex-A72
#: and Cortex-A76 Technical Reference Manuals (32 KiB / 64 KiB L1D, 512 KiB L2 per core);
#: AMD Zen 4/5 and Intel Skylake-SP and newer have 32-48 KiB L1D and >= 1 MiB L2 per core
#: (vendor optimization guides). The smaller value is used so tiles fit everywhere.
_L1_BYTES = 32 * 1024
_L2_BYTES = 512 * 1024


@dataclass(frozen=True)
class CpuFacts:
    """A CPU as the schedule rules see it.

    Attributes:
        vector_bits: SIMD register width in bits (NEON 128, AVX2 256, AVX-512 512).
        vector_regs: architectural SIMD registers (AArch64 32, AVX2 16, AVX-512 32).
        cores: worker threads a kernel may use.
        l1_bytes: L1 data cache per core, bytes.
        l2_bytes: L2 cache per core, bytes.
        has_dotprod: Arm SDOT/UDOT (Armv8.2-A dotprod extension).
        has_vnni: x86 AVX-512 VNNI / AVX-VNNI (VPDPBUSD).
    """

    vector_bits: int = _BASELINE_VECTOR_BITS
    vector_regs: int = 16
    cores: int = _BOARD_CORES
    l1_bytes: int = _L1_BYTES
    l2_bytes: int = _L2_BYTES
    has_dotprod: bool = False
    has_vnni: bool = False

    def lanes(self, dtype_bits: int = 32) -> int:
        """Elements of ``dtype_bits`` bits per vector register (fp32 on AVX2: 8)."""
        return max(1, self.vector_bits // dtype_bits)

    @classmethod
    def from_preset(cls, preset) -> CpuFacts:
        """Facts of an lwc :class:`~lwc.targets.Preset` (its CPU side for GPU presets).

        Cores come from the target's ``num-cores`` (``host`` resolves it to the cores this
        process may use), else :data:`_BOARD_CORES`.
        """
        features = set(preset.features)
        bits = next((b for name, b in _VECTOR_BITS if name in features), _BASELINE_VECTOR_BITS)
        if bits == _BASELINE_VECTOR_BITS and "neon" not in features and preset.arch == "aarch64":
            features.add("neon")  # NEON is mandatory in AArch64
        cores = int(preset.host_target.get("num-cores", _BOARD_CORES))
        return cls(
            vector_bits=bits,
            vector_regs=(
                _AARCH64_VECTOR_REGS if preset.arch == "aarch64" else _X86_VECTOR_REGS[bits]
            ),
            cores=max(1, cores),
            has_dotprod="dotprod" in features,
            has_vnni="vnni" in features,
        )
