"""The int8 report: :class:`QuantizationReport` of the flow and the manifest's ``quantization``
section (:func:`describe`), with the notes on why int8 may not be faster (:func:`speed_notes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class QuantizationReport:
    method: str
    samples: int
    source: str
    layers: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    lowering: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    max_accuracy_drop: float | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)

    def format(self, n: int = 5) -> str:
        return format_report(self.to_json(), n)


def format_report(info: dict, n: int = 5) -> str:
    """Human-readable summary of a manifest's ``quantization`` section: outputs, worst layers."""
    layers = info.get("layers", [])
    lines = []
    if layers:
        lines.append(f"int8: {info.get('samples')} calibration samples, {info.get('method')}; "
                     f"{sum(1 for layer in layers if layer['int8'])}/{len(layers)} layers int8")
    if info.get("fallback"):
        lines.append(f"kept in fp32 to meet the accuracy bound: {', '.join(info['fallback'])}")
    for o in info.get("outputs", []):
        agree = f", top-1 agreement {o['top1_agreement']:.1%}" if o.get("top1_agreement") is not None else ""
        lines.append(f"output {o['name']}: cosine vs fp32 {o['cosine']:.5f}{agree}")
    worst = sorted([x for x in layers if x["int8"]], key=lambda x: x["sqnr_db"])[:n]
    if worst:
        lines.append("worst layers (error vs fp32 accumulated up to the layer's output):")
        lines.append(f"  {'layer':<40} {'op':<7} {'SQNR dB':>8} {'cosine':>9}")
        for x in worst:
            lines.append(f"  {x['name'][:40]:<40} {x['op']:<7} {x['sqnr_db']:>8.2f} {x['cosine']:>9.5f}")
    low = info.get("lowering", {})
    if low:
        lines.append(f"integer kernels: {low.get('int8_conv2d', 0)} conv2d, {low.get('int8_matmul', 0)} matmul; "
                     f"{low.get('FuseRequantize', 0)} fixed-point requantizations")
    return "\n".join(lines)

def speed_notes(preset) -> list[str]:
    """Why int8 may not beat fp32 on ``preset`` (empty where lwc uses a 4-byte dot product).

    lwc's fast int8 path (:mod:`lwc.passes.pack_int8_conv2d`) tensorizes the dense convs
    with the CPU's int8 dot product: x86 VNNI (AVX512-VNNI or AVX-VNNI) or Arm dotprod
    (ARMv8.2+, e.g. Cortex-A76/A78), 4 byte products per 32-bit lane. x86 with only AVX2
    gets lwc's exact 16-bit ``vpmaddwd`` intrinsic instead: 2 products per lane, about
    1.4x an fp32 FMA kernel's rate (lwc.kernels.dot_intrin), which the activation copy, the
    requantize epilogue and the depthwise convs (lwc's own kernel, no dot product) can eat up: measured with
    tuning on a Zen 3, int8 took 0.56x (resnet50), 0.83x (PP-OCRv4 det) and 1.26x
    (PP-OCR cls, mostly depthwise) the fp32 latency (docs/int8.md). With VNNI the notes
    are empty, yet int8 is not always faster there either: tuned on a Zen 5, 0.33x
    (resnet50), 0.43x (det) and 1.22x (cls: small layers, depthwise convs, which no dot
    product helps, and many sub-10 us kernels). Elsewhere (the
    Cortex-A72 of a Raspberry Pi 4, the A57 of Jetson Nano/TX2, pre-AVX2 x86) the int8
    convs run as TOPI's generic kernels, which cast to int32 before multiplying: measured
    with tuning on a Zen 3 before the AVX2 kernel existed, int8 took 1.17x (det) to 1.76x
    (resnet50) the fp32 latency (docs/int8.md).
    """
    from lwc.kernels.int8_conv2d import AVX2, dot_product_for

    dot = None if preset.is_gpu else dot_product_for(preset.arch, preset.features)
    if preset.is_gpu or (dot is not None and dot != AVX2):
        return []
    if dot == AVX2:
        return [f"{preset.name} ({preset.cpu}) has no VNNI: dense int8 convs run on 16-bit "
                "vpmaddwd (2 products per lane, VNNI does 4) and int8 may be slower than fp32 "
                "on this CPU (measure with `lwc bench`)"]
    arm = preset.arch in ("aarch64", "arm64")
    missing = "has no dotprod" if arm else "has neither VNNI nor AVX2"
    return [f"{preset.name} ({preset.cpu}) {missing}: int8 kernels widen before multiplying "
            "and may be slower than fp32 on this CPU (measure with `lwc bench`)"]


def describe(report: QuantizationReport | None, lowering: dict, preset) -> dict:
    """The manifest's ``quantization`` section ({} for an fp32 model), with notes."""
    if report is None and not lowering:
        return {}
    info = {"scheme": "activations uint8 per-tensor asymmetric, weights int8 per-channel symmetric",
            "requantize": "fixed-point int32 multiplier, int64 product, one rounding (ties toward +inf)"}
    if report is not None:
        info.update(report.to_json())
    else:
        info["source"] = "pre-quantized QDQ model"
    info["lowering"] = lowering
    notes = list(info.pop("notes", []))
    notes += speed_notes(preset)
    if lowering.get("fp32_conv2d") or lowering.get("fp32_matmul"):
        notes.append(f"{lowering.get('fp32_conv2d', 0)} conv2d and {lowering.get('fp32_matmul', 0)} "
                     "matmul stay fp32")
    declined = lowering.get("declined", [])
    # PackInt8Conv2d's and Int8DepthwiseConv2d's declines stay int8 (on TOPI's conv2d)
    for d in [d for d in declined if d["pass"] not in ("PackInt8Conv2d", "Int8DepthwiseConv2d")][:5]:
        notes.append(f"{d['pass']}: {d['op']} not lowered to int8: {d['reason']}")
    packed, unpacked = lowering.get("PackInt8Conv2d"), [d for d in declined if d["pass"] == "PackInt8Conv2d"]
    depthwise = lowering.get("Int8DepthwiseConv2d", 0)
    if packed is not None:
        reasons = sorted({d["reason"].split(" (")[0].split("=")[0] for d in unpacked})
        left = max(0, lowering.get("int8_conv2d", packed) - packed - depthwise)
        notes.append(f"{packed} int8 conv2d on the CPU's dot-product instruction (PackInt8Conv2d); "
                     f"{left} not" + (f" ({', '.join(reasons)})" if left and reasons else ""))
    if depthwise:
        quads = lowering.get("depthwise_row_quads", 0)
        windows = lowering.get("depthwise_row_windows", 0)
        notes.append(f"{depthwise} int8 depthwise conv2d on lwc's depthwise kernel (Int8DepthwiseConv2d)"
                     + (f"; {windows} with 4 kernel columns per vpdpbusd" if windows else "")
                     + (f"; {quads} with 4 kernel rows per vpdpbusd" if quads else ""))
    info["notes"] = notes
    return info
