"""Print the issue-6 measurement table from the JSON files benchmarks/sparsity/measure.sh writes.

Usage: python benchmarks/sparsity/summarize.py DIR
"""

import json
import sys
from pathlib import Path


def load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def mlp(w: Path) -> None:
    if not any(w.glob("mlp_r*_bsr.bench.json")):
        return
    print("MLP 768->3072->768 (bias, ReLU), 1x4 block pruning; p50 ms (lwc bench, 2 threads)")
    print(f"{'rows':>4} {'blocks':>6} {'lwc BSR':>8} {'lwc auto':>9} {'lwc dense':>10} {'ort':>7} "
          f"{'dense/BSR':>9} {'ort/BSR':>8}  auto decisions")
    for rows in (1, 16):
        for pct in (90, 80):
            m = w / f"mlp_r{rows}_b{pct}"
            runs = {k: load(Path(f"{m}_{k}.bench.json")) for k in ("bsr", "auto", "dense")}
            if not all(runs.values()):
                continue
            ms = {k: r["lwc_ms"]["p50"] for k, r in runs.items()}
            ort = min(r["onnxruntime_ms"]["p50"] for r in runs.values())
            auto = load(Path(f"{m}_auto.compile.json"))["sparsity"].get("dense_to_sparse", [])
            why = "; ".join(f"{d['layer']} {'BSR' if d['used'] else 'dense'} ({d.get('sparse_ms')} vs "
                            f"{d.get('dense_ms')} ms, {d.get('dense_schedule')})" for d in auto)
            tuned = runs["dense"]["tuning"]["message"]
            print(f"{rows:>4} {pct:>5}% {ms['bsr']:>8.4f} {ms['auto']:>9.4f} {ms['dense']:>10.4f} {ort:>7.4f} "
                  f"{ms['dense'] / ms['bsr']:>8.2f}x {ort / ms['bsr']:>7.2f}x  {why}")
            print(f"{'':>12} dense: {tuned}; max |lwc-ort| "
                  + ", ".join(f"{k} {r['max_abs_diff']:.2g}" for k, r in runs.items()))


def cls(w: Path) -> None:
    dense, pruned = load(w / "cls_dense.bench.json"), load(w / "cls_pruned30.bench.json")
    manifest = load(w / "cls_pruned30.compile.json")
    if not (dense and pruned and manifest):
        return
    s = manifest["sparsity"]
    print("PP-OCR mobile cls 1x3x48x192, 30% channel pruning (channel:l1); p50 ms (lwc bench, 2 threads)")
    print(f"  FLOPs {s['flops_before'] / 1e6:.2f} M -> {s['flops_after'] / 1e6:.2f} M; weight bytes "
          f"{s['weight_bytes_before']:,} -> {s['weight_bytes_after']:,}")
    for name, r in (("dense", dense), ("pruned", pruned)):
        print(f"  {name:<7} lwc {r['lwc_ms']['p50']:.4f} ms, onnxruntime {r['onnxruntime_ms']['p50']:.4f} ms, "
              f"max |lwc-ort| {r['max_abs_diff']:.2g}; {r['tuning']['message']}")
    print(f"  pruned/dense (lwc tuned): {pruned['lwc_ms']['p50'] / dense['lwc_ms']['p50']:.3f}")


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    mlp(folder)
    cls(folder)
