"""``lwc tune``, ``lwc compact-logs`` and ``lwc bench``: thin layers over
:mod:`lwc.tuning.search`, :mod:`lwc.tuning.compact` and :mod:`lwc.bench`."""

from __future__ import annotations

import json
import sys


class _ProgressBar:
    """tqdm bar: trials done / planned, tasks done, estimated model latency, ETA."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def __call__(self, p) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.trials_planned, unit="trial", file=sys.stderr,
                            desc="tuning", dynamic_ncols=True)
        self.bar.n = min(p.trials_done, p.trials_planned)
        est = f"{p.estimated_ms:.3f} ms" if p.estimated_ms else "-"
        postfix = {"tasks": f"{p.tasks_done}/{len(p.tasks)}", "best": est}
        if p.time_budget_s:
            postfix["budget_left"] = f"{max(0, p.time_budget_s - p.elapsed_s) / 60:.0f}m"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_task_table(tasks) -> str:
    """The per-task table printed at the end of ``lwc tune``."""
    lines = [(f"{'#':>3} {'task':<44} {'MFLOP':>9} {'weight':>6} {'rule us':>10} {'best us':>10} "
              f"{'GFLOP/s':>8} {'trials':>6}")]
    total_us = rule_total_us = 0.0
    notes = []
    for i, t in enumerate(tasks):
        best = f"{t.best_us:.2f}" if t.best_us else "-"
        rule_us = getattr(t, "rule_us", None)
        rule = f"{rule_us:.2f}" if rule_us else "-"
        gflops = f"{t.gflops:.1f}" if t.gflops else "-"
        lines.append(f"{i:>3} {t.name[:44]:<44} {t.flops / 1e6:>9.3f} {t.weight:>6} {rule:>10} {best:>10} "
                     f"{gflops:>8} {t.trials:>6}")
        total_us += (t.best_us or 0) * t.weight
        if rule_us and t.best_us:
            rule_total_us += rule_us * t.weight
        if getattr(t, "rule_note", None):
            notes.append(f"  #{i}: {t.rule_note}")
    tuned = sum(1 for t in tasks if t.best_us)
    lines.append(f"{tuned}/{len(tasks)} tasks have a measured schedule; sum of weight x best "
                 f"latency over them: {total_us / 1e3:.3f} ms")
    seeded = [t for t in tasks if getattr(t, "rule_us", None) and t.best_us]
    if seeded:
        tuned_us = sum(t.best_us * t.weight for t in seeded)
        lines.append(f"{len(seeded)} tasks started from lwc's rule schedule: rule {rule_total_us / 1e3:.3f} ms "
                     f"-> tuned {tuned_us / 1e3:.3f} ms (weight x latency)")
    if notes:
        lines.append("tasks without a measured rule schedule:")
        lines += notes
    return "\n".join(lines)


def cmd_tune(args) -> int:
    from lwc.cli import _input_shapes, _input_values, compile_options
    from lwc.tuning.search import RpcSettings, parse_duration, tune

    rpc = None
    if args.rpc_tracker or args.rpc_key:
        from lwc.errors import LwcError

        if not (args.rpc_tracker and args.rpc_key):
            raise LwcError("--rpc-tracker and --rpc-key go together")
        rpc = RpcSettings(args.rpc_tracker, args.rpc_key)
        rpc.host_port  # validate before the long work
    budget = parse_duration(args.time_budget) if args.time_budget else None
    bar = _ProgressBar(args.quiet or args.json)
    try:
        result = tune(
            args.model, args.target, _input_shapes(args.input_shape),
            trials=args.trials, time_budget_s=budget, log_root=args.log_dir, rpc=rpc,
            on_progress=bar, reuse_records=args.reuse_records or (), only_tasks=args.only_tasks,
            options=compile_options(args), input_values=_input_values(args.input_value),
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    if not args.quiet:
        print(format_task_table(result.tasks))
    resumed = f" (resumed from {result.resumed_trials} earlier trials)" if result.resumed_trials else ""
    print(f"tuned {args.model}: {result.trials_run} trials in {result.elapsed_s / 60:.1f} min{resumed}; "
          f"{result.stop_reason}; records in {result.log_dir} (MetaSchedule logs: {result.log_dir}/logs)")
    st = result.single_thread
    if st.get("skipped"):
        print(f"threads: {st['skipped']}")
    elif st:
        print(f"timed alone: {st['kernels_timed']} tuned kernels; {st['single_thread']} run faster on one "
              f"thread, lwc's rule beats the record for {st.get('rule_faster', 0)} "
              f"({st['parallel_us']} us as tuned -> {st['best_us']} us); compile applies both")
        print(_whole_model_line(st.get("whole_model") or {}))
    return 0


def _whole_model_line(timed: dict) -> str:
    """``lwc tune``'s last line: the whole model with the log against the rules alone."""
    from lwc.tuning import whole_model

    if "log_ms" not in timed:
        return f"whole model: not timed ({timed.get('skipped', 'no result')})"
    verdict = ("compile applies no record of this log (the rules are faster in the model)"
               if whole_model.rules_win(timed) else "compile applies the records")
    return (f"whole model, interleaved: {timed['log_ms']} ms with the records, "
            f"{timed['rules_ms']} ms with lwc's rules alone; {verdict}")


def cmd_bench(args) -> int:
    from lwc.bench import bench, format_result

    if args.profile:
        return _profile(args)
    result = bench(args.artifact, vs_onnxruntime=args.vs_onnxruntime, repeat=args.repeat,
                   warmup=args.warmup, threads=args.threads, seed=args.seed)
    print(json.dumps(result.to_json(), indent=2) if args.json else format_result(result))
    return 0


def _profile(args) -> int:
    from lwc import artifact
    from lwc.profile import format_profile, profile_artifact

    rows = profile_artifact(artifact.load(args.artifact), repeat=args.repeat, seed=args.seed)
    if args.json:
        print(json.dumps({"artifact": args.artifact, "repeat": args.repeat,
                          "kernels": [r.to_json() for r in rows]}, indent=2))
    else:
        print(format_profile(rows))
    return 0


def cmd_compact_logs(args) -> int:
    from lwc.errors import LwcError
    from lwc.tuning.compact import compact

    done = []
    for folder in args.folders:
        try:
            done.append(compact(folder))
        except FileNotFoundError as error:
            raise LwcError(str(error)) from None
    if args.json:
        print(json.dumps([d.to_json() for d in done], indent=2))
        return 0
    for d in done:
        print(f"{d.folder}: {d.records_before} -> {d.records_after} records, {d.workloads_before} -> "
              f"{d.workloads_after} workloads, {d.bytes_before / 1e6:.1f} -> {d.bytes_after / 1e6:.2f} MB")
    return 0


def register(subparsers) -> None:
    from lwc.cli import add_graph_arguments, add_input_value_argument

    p = subparsers.add_parser(
        "tune", help="auto-tune a model's kernels with MetaSchedule into tuning_logs/",
        description="Tune every kernel (task) of MODEL for TARGET with MetaSchedule (evolutionary "
        "search, XGBoost cost model); trials are spread so every task gets some. Then every tuned "
        "kernel is timed on one thread and on all, and compile runs those faster on one thread "
        "serially (--trials 0: only that). Records go to "
        "tuning_logs/<model-key>-<target>/ with a manifest; `lwc compile` applies them. Give the same graph "
        "options as to `lwc compile` (--quantize int8 --calib DIR, --sparsity, --disable-pass): the graph "
        "tuned is the one compile builds, and the model key names the options. Ctrl-C, "
        "SIGTERM or --time-budget stop cleanly after the current batch; running again resumes.",
        epilog="Example: lwc tune det.onnx --target host --input-shape x:1,3,640,640 --trials 3000 "
        "--time-budget 40m",
    )
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--target", "-t", default="host", help="preset name, TVM string or JSON dict")
    p.add_argument("--input-shape", action="append", metavar="NAME:D0,D1,...",
                   help="static shape for an input; repeat for several inputs")
    add_input_value_argument(p)
    p.add_argument("--trials", type=int, default=1000,
                   help="measured trials in this run, spread over the tasks (default 1000)")
    p.add_argument("--time-budget", metavar="DURATION",
                   help="stop cleanly after this long (e.g. 40m, 1h30m, 600s), keeping all records")
    add_graph_arguments(p)
    p.add_argument("--rpc-tracker", metavar="HOST:PORT",
                   help="measure on devices registered with this TVM RPC tracker")
    p.add_argument("--rpc-key", metavar="KEY", help="device key at the tracker (e.g. rpi5)")
    p.add_argument("--log-dir", metavar="DIR",
                   help="tuning logs root (default: $LWC_TUNING_LOGS or ./tuning_logs)")
    p.add_argument("--reuse-records", action="append", metavar="LOG_FOLDER",
                   help="start from another tuning log's records for the kernels both graphs share "
                   "(records are per workload: a --disable-pass or pruned variant of a tuned model "
                   "keeps most kernels); same target, or for host a log tuned on a CPU whose ISA this one "
                   "includes (a znver4 log on a znver5); repeatable")
    p.add_argument("--only-tasks", metavar="REGEX",
                   help="tune only the tasks whose name matches (names as `lwc bench --profile` "
                   "prints them, e.g. 'fused_conv2d14_'): --trials more whatever they have (several matches: "
                   "up to the most-tuned one's trials + --trials/N each)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or table")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_tune)

    p = subparsers.add_parser(
        "compact-logs", help="shrink tuning logs to the best record per workload",
        description="MetaSchedule keeps every trial; compile uses only the best record of each "
        "workload. Keep that one per (workload, target), drop failed runs, store the workloads "
        "xz-compressed (database_workload.json.xz). Compiles pick the same kernels; `lwc tune` "
        "expands a compacted log again when it resumes. Trial counts stay in manifest.json.",
        epilog="Example: lwc compact-logs tuning_logs/*",
    )
    p.add_argument("folders", nargs="+", metavar="LOG_FOLDER", help="tuning log folders (with manifest.json)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compact_logs)

    p = subparsers.add_parser(
        "bench", help="time an artifact (p50/p90/p99), optionally against onnxruntime",
        description="Run ARTIFACT on seeded inputs: warm-up, then N timed runs; p50/p90/p99/mean "
        "in ms with the thread count. --vs-onnxruntime runs onnxruntime on the same inputs with "
        "the same threads in the same process, interleaved, and prints the ratio. aarch64 "
        "artifacts on an x86 machine are refused (qemu time is not board time).",
        epilog="Example: lwc bench det.so --vs-onnxruntime det.onnx --repeat 50 --json",
    )
    p.add_argument("artifact", help="NAME.so (its NAME.json beside it)")
    p.add_argument("--vs-onnxruntime", metavar="MODEL.onnx", help="also time onnxruntime on MODEL")
    p.add_argument("--repeat", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--threads", type=int, help="threads for lwc and onnxruntime "
                   "(default: the CPUs this process may use)")
    p.add_argument("--seed", type=int, default=0, help="seed for the generated inputs")
    p.add_argument("--profile", action="store_true",
                   help="time every kernel (Relax VM instrument hook): ms, %% of the run, GFLOP/s, "
                   "slowest first; host artifacts only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
