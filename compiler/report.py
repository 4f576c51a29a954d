"""The compile report: what lwc did to a model, as manifest JSON and as one HTML page.

:func:`collect` builds the ``"report"`` entry of the manifest: model summary (ONNX ops,
parameters, FLOPs, size before/after), every lwc pass with what it changed and what it
declined (with reasons), the kernel list with the ONNX nodes each kernel came from,
kernel counts with and without lwc's passes, tuning coverage and quantized layers.
:func:`write_html` renders a manifest into a self-contained page (inline CSS and an SVG
picture of the kernel graph laid out with networkx; no network access, no JavaScript).
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
from onnx import numpy_helper

from lwc import kernel_inventory

# --------------------------------------------------------------------------- data


def _onnx_summary(model: onnx.ModelProto) -> dict:
    from lwc.frontend import op_histogram
    from lwc.summary import _constant_tensors

    tensors = [t for t in _constant_tensors(model) if t.data_type == onnx.TensorProto.FLOAT]
    params = sum(int(np.prod(t.dims)) for t in tensors)
    size = sum(numpy_helper.to_array(t).nbytes for t in tensors)
    return {"nodes": len(model.graph.node), "ops": dict(op_histogram(model).most_common()),
            "params": params, "param_bytes": size}


def _relax_const_bytes(mod) -> int:
    from tvm import relax
    from tvm.ir.expr import GenericConst

    seen, total = set(), 0

    def visit(expr):
        nonlocal total
        if isinstance(expr, GenericConst) and expr not in seen:
            seen.add(expr)
            total += expr.value.numpy().nbytes

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return total


def collect(imported, records, mod_before, mod_after, target) -> dict:
    """The manifest's ``"report"`` entry.

    Args:
        imported: :class:`lwc.frontend.ImportedModel` (its simplified ONNX model).
        records: :class:`lwc.pass_records.PassRecord` list, every stage.
        mod_before / mod_after: the Relax module before and after lwc's passes.
        target: the TVM target kernels are formed for.
    """
    after = kernel_inventory.list_kernels(mod_after, target)
    kernel_inventory.attribute_onnx_nodes(after, imported.onnx_model)
    before = kernel_inventory.list_kernels(mod_before, target)
    summary = _onnx_summary(imported.onnx_model)
    summary.update({
        "flops": sum(k.flops for k in after),
        "const_bytes_before": _relax_const_bytes(mod_before),
        "const_bytes_after": _relax_const_bytes(mod_after),
    })
    return {
        "model": summary,
        "passes": [r.to_json() for r in records],
        "kernel_count": {"without_lwc_passes": len(before), "with_lwc_passes": len(after)},
        "kernels": [k.to_json() for k in after],
        "kernel_mapping": "approximate: by execution order and op type",
    }


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1300px;color:#1d232a}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde}
.sub{color:#667;font-size:13px} table{border-collapse:collapse;font-size:13px;width:100%}
td,th{border-bottom:1px solid #eef;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f7fa} .num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.cards{display:flex;gap:12px;flex-wrap:wrap} .card{background:#f5f7fa;border-radius:8px;padding:10px 14px;min-width:140px}
.card b{display:block;font-size:20px} .decl{color:#a33} .ok{color:#276} .off{color:#999}
.chip{display:inline-block;background:#eef2f7;border-radius:4px;padding:0 5px;margin:1px;font-size:12px}
svg text{font-family:system-ui,sans-serif}
"""

_COLORS = {"conv2d": "#4e79a7", "conv2d_transpose": "#2c5985", "matmul": "#f28e2b",
           "mean": "#59a14f", "max_pool2d": "#76b7b2", "avg_pool2d": "#76b7b2",
           "resize2d": "#b07aa1", "softmax": "#edc948", "layer_norm": "#9c755f"}


def _kernel_color(ops: list[str]) -> str:
    for op in ops:
        if op in _COLORS:
            return _COLORS[op]
    return "#bab0ac"


def _graph_svg(kernels: list[dict]) -> str:
    """The kernel graph: one box per kernel, edges for data, laid out in layers."""
    graph = nx.DiGraph()
    for i, k in enumerate(kernels):
        graph.add_node(i)
        for src in k["inputs"]:
            graph.add_edge(int(src.rsplit("#", 1)[1]), i)
    layers = list(nx.topological_generations(graph)) if kernels else []
    box_w, box_h, gap_x, gap_y = 230, 34, 20, 22
    width = max((len(layer) for layer in layers), default=1) * (box_w + gap_x) + gap_x
    height = len(layers) * (box_h + gap_y) + gap_y
    pos = {}
    for row, layer in enumerate(layers):
        offset = (width - len(layer) * (box_w + gap_x) + gap_x) / 2
        for col, node in enumerate(sorted(layer)):
            pos[node] = (offset + col * (box_w + gap_x), gap_y + row * (box_h + gap_y))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}">',
             '<defs><marker id="a" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
             'markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z" fill="#889"/></marker></defs>']
    for src, dst in graph.edges:
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        parts.append(f'<line x1="{x1 + box_w / 2:.0f}" y1="{y1 + box_h:.0f}" x2="{x2 + box_w / 2:.0f}" '
                     f'y2="{y2:.0f}" stroke="#99a" stroke-width="1" marker-end="url(#a)"/>')
    for i, k in enumerate(kernels):
        x, y = pos[i]
        ops = kernel_inventory._tokens(k["name"])
        nodes = ", ".join(k["onnx_nodes"]) or "(no ONNX node)"
        label = " + ".join(o for o in ops if o not in ("tir", "isnan", "where"))[:34]
        parts.append(
            f'<g><title>{html.escape(k["name"])}\nONNX: {html.escape(nodes)}</title>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="5" '
            f'fill="{_kernel_color(ops)}" fill-opacity="0.85"/>'
            f'<text x="{x + 6:.0f}" y="{y + 14:.0f}" font-size="11" fill="#fff">#{i} {html.escape(label)}</text>'
            f'<text x="{x + 6:.0f}" y="{y + 28:.0f}" font-size="10" fill="#eef">'
            f'{html.escape(nodes[:40])}{"…" if len(nodes) > 40 else ""}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt_flops(flops: float) -> str:
    return f"{flops / 1e9:.3f} G" if flops >= 1e7 else f"{flops / 1e6:.2f} M"


def _passes_table(passes: list[dict]) -> str:
    rows = []
    for p in passes:
        changed = ", ".join(f"{n} {k}" for k, n in p.get("changed", {}).items()) or "—"
        declined = p.get("declined", [])
        decl = "<br>".join(f'{html.escape(d["where"])}: {html.escape(d["reason"])}' for d in declined[:8])
        if len(declined) > 8:
            decl += f"<br>… {len(declined) - 8} more"
        cls = "off" if p.get("disabled") else ("ok" if p.get("changed") else "")
        status = html.escape(p["summary"]) if p.get("disabled") else changed
        rows.append(
            f'<tr class="{cls}"><td><b>{html.escape(p["name"])}</b></td><td>{status}</td>'
            f'<td class="decl">{decl or ""}</td>'
            f'<td class="num">{p.get("ops_before", 0)} → {p.get("ops_after", 0)}</td>'
            f'<td class="num">{p.get("seconds", 0) * 1e3:.0f} ms</td></tr>')
    return ("<table><tr><th>pass</th><th>changed</th><th>declined (where: why)</th>"
            "<th class=num>Relax ops</th><th class=num>time</th></tr>" + "".join(rows) + "</table>")


def _kernels_table(kernels: list[dict]) -> str:
    total = sum(k["flops"] for k in kernels) or 1.0
    rows = []
    for i, k in enumerate(kernels):
        nodes = "".join(f'<span class="chip">{html.escape(n)}</span>' for n in k["onnx_nodes"])
        rows.append(f'<tr><td class="num">{i}</td><td>{html.escape(k["name"])}</td><td>{nodes}</td>'
                    f'<td class="num">{_fmt_flops(k["flops"])}</td>'
                    f'<td class="num">{100 * k["flops"] / total:.1f}%</td></tr>')
    return ("<table><tr><th class=num>#</th><th>kernel</th><th>ONNX nodes</th>"
            "<th class=num>FLOPs</th><th class=num>share</th></tr>" + "".join(rows) + "</table>")


def _tuning_html(tuning: dict, n_kernels: int) -> str:
    if not tuning:
        return "<p>No tuning information.</p>"
    tuned = tuning.get("tuned_tasks", 0)
    status = tuning.get("status", "?")
    extra = {k: v for k, v in tuning.items() if k not in ("status", "tuned_tasks")}
    return (f"<p>Status <b>{html.escape(str(status))}</b>: {tuned} tuned task(s) for {n_kernels} "
            f"kernels ({100 * tuned / max(n_kernels, 1):.0f}% coverage; untuned kernels run TVM's "
            f"default schedule).</p>"
            + (f"<pre>{html.escape(json.dumps(extra, indent=1))}</pre>" if extra else ""))


def _quant_html(quant: dict | None) -> str:
    if not quant:
        return "<p>Not quantized: every layer runs in fp32. (<code>--quantize int8</code> lists " \
               "the int8 layers here.)</p>"
    layers = quant.get("layers") or quant.get("quantized_layers") or []
    body = "".join(f"<tr><td>{html.escape(json.dumps(l) if not isinstance(l, str) else l)}</td></tr>"
                   for l in layers[:200])
    summary = {k: v for k, v in quant.items() if k not in ("layers", "quantized_layers")}
    return (f"<pre>{html.escape(json.dumps(summary, indent=1))}</pre>"
            + (f"<table><tr><th>layer</th></tr>{body}</table>" if body else ""))


def _sparsity_html(info: dict | None) -> str:
    """RemoveZeroChannels' result and one row per BSR candidate layer: decision, reason, times."""
    if not info:
        return "<p>No sparsity information.</p>"
    out = f"<p>Mode <b>{html.escape(str(info.get('mode')))}</b>."
    removed = info.get("remove_zero_channels", {}).get("removed_channels", 0)
    if removed:
        out += (f" {removed} all-zero channels removed: FLOPs {_fmt_flops(info['flops_before'])} → "
                f"{_fmt_flops(info['flops_after'])}, weights {info['weight_bytes_before']:,} → "
                f"{info['weight_bytes_after']:,} bytes.")
    if info.get("bsr_bytes_before"):
        out += (f" BSR weights {info['bsr_bytes_before']:,} → {info['bsr_bytes_after']:,} bytes.")
    rows = [d for key in ("dense_to_sparse", "conv1x1_to_sparse") for d in info.get(key, [])
            if d.get("bytes_sparse")]
    if not rows:
        return out + " No layer with an all-zero block.</p>"
    body = "".join(
        f"<tr><td>{html.escape(d['layer'])}</td><td>{html.escape(json.dumps(d.get('dims')))}</td>"
        f"<td>{d['block']}</td><td>{d['density']:.2f}</td><td>{'BSR' if d['used'] else 'dense'}</td>"
        f"<td>{d.get('sparse_ms', '')}</td><td>{d.get('dense_ms', '')}</td>"
        f"<td>{html.escape(d['reason'])}</td></tr>" for d in rows)
    return (out + "</p><table><tr><th>layer</th><th>dims</th><th>block</th><th>block density</th>"
            "<th>kernel</th><th>BSR ms</th><th>dense ms</th><th>reason</th></tr>" + body + "</table>")


def render_html(manifest: dict, title: str | None = None) -> str:
    """The report page for a manifest that has a ``"report"`` entry."""
    rep = manifest["report"]
    if "error" in rep:
        return (f"<!doctype html><html><body><h1>lwc compile report</h1><p>The report could not be "
                f"built: {html.escape(rep['error'])}</p>{_passes_table(rep.get('passes', []))}</body></html>")
    model = rep["model"]
    counts = rep["kernel_count"]
    src = manifest.get("source_model", {}).get("file") or "model"
    title = title or f"lwc compile report: {src}"
    inputs = ", ".join(f'{i["name"]} {i["dtype"]}{i["shape"]}' for i in manifest.get("inputs", []))
    outputs = ", ".join(f'{o["name"]} {o["dtype"]}{o["shape"]}' for o in manifest.get("outputs", []))
    ops = "".join(f'<span class="chip">{html.escape(op)} × {n}</span>' for op, n in model["ops"].items())
    ratio = counts["with_lwc_passes"] / max(counts["without_lwc_passes"], 1)
    cards = [
        ("ONNX nodes", model["nodes"]), ("parameters", f'{model["params"]:,}'),
        ("FLOPs", _fmt_flops(model["flops"])),
        ("weights", f'{model["const_bytes_before"] / 1e6:.2f} → {model["const_bytes_after"] / 1e6:.2f} MB'),
        ("kernels", f'{counts["without_lwc_passes"]} → {counts["with_lwc_passes"]} ({ratio:.0%})'),
        ("build", f'{manifest.get("build_time_s", 0):.1f} s'),
    ]
    target = manifest.get("target", {})
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<div class="sub">target <b>{html.escape(str(target.get("preset")))}</b> ({html.escape(str(target.get("triple")))},
cpu {html.escape(str(target.get("cpu")))}) · built {html.escape(str(manifest.get("built_at", "")))} ·
versions {html.escape(", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items()))}</div>
<h2>Model</h2>
<div class="cards">{"".join(f"<div class=card>{k}<b>{v}</b></div>" for k, v in cards)}</div>
<p>inputs: {html.escape(inputs)}<br>outputs: {html.escape(outputs)}</p>
<p>ONNX ops (after onnxsim): {ops}</p>
<p class="sub">Kernel counts: TVM's fusion (LegalizeOps → FuseOps → FuseTIR) on the imported module with
all lwc passes disabled, and with them on. Weights: constant bytes in the Relax module before and after.</p>
<h2>Passes</h2>{_passes_table(rep["passes"])}
<h2>Tuning</h2>{_tuning_html(manifest.get("tuning", {}), counts["with_lwc_passes"])}
<h2>Quantized layers</h2>{_quant_html(manifest.get("quantization"))}
<h2>Sparsity</h2>{_sparsity_html(manifest.get("sparsity"))}
<h2>Kernels ({len(rep["kernels"])})</h2>
<p class="sub">ONNX nodes per kernel: {html.escape(rep.get("kernel_mapping", ""))}.</p>
{_kernels_table(rep["kernels"])}
<h2>Graph</h2><p class="sub">One box per kernel (colour: its main op), arrows for data; hover for the ONNX nodes.</p>
<div style="overflow:auto">{_graph_svg(rep["kernels"])}</div>
</body></html>
"""


def write_html(manifest: dict, path: str | Path) -> Path:
    """Write the report page for ``manifest`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(manifest))
    return path


def op_counter(records) -> Counter:
    return Counter({r.name: sum(r.stats.get("changed", {}).values()) for r in records})


def collect_safely(imported, records, mod_before, mod_after, target) -> dict:
    """:func:`collect`, or ``{"error": ...}``: a report problem must never fail a compile."""
    try:
        return collect(imported, records, mod_before, mod_after, target)
    except Exception as err:  # noqa: BLE001
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        return {"error": f"{type(err).__name__}: {lines[-1] if lines else ''}",
                "passes": [r.to_json() for r in records]}
