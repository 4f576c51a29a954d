"""``lwc audit ART.so|BUNDLE_DIR [--target PRESET] [--json] [--no-run]``: the board checks.

A thin parser over :func:`lwc.audit.audit_path`: ISA scan, glibc/GLIBCXX versions and (for
CUDA presets) PTX/SASS of every ELF, then a run under ``qemu-aarch64 -cpu <board core>``.
Exit status 0 when every check passes or could not run (``skip``), 1 when one fails.
"""

from __future__ import annotations

import json


def cmd_audit(args) -> int:
    from lwc import audit

    report = audit.audit_path(args.path, args.target, run=not args.no_run)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"audit for {report.preset}: {'ok' if report.ok else 'FAILED'}")
        for line in report.lines():
            print(f"  {line}")
    return 0 if report.ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "audit",
        help="check that an artifact or bundle loads and runs on its board",
        description="Scan every ELF (model, libtvm_runtime, libtvm_ffi, liblwc_runtime) for "
        "instructions outside the board's ISA and symbol versions newer than its OS's glibc "
        "and libstdc++; check a CUDA model's SASS arch and PTX version; then run the model "
        "under qemu-aarch64 -cpu <the board's core> (docs/boards.md).",
        epilog="Example: lwc audit deploy/det --target rpi4",
    )
    p.add_argument("path", help="NAME.so (with NAME.json beside it) or a bundle folder")
    p.add_argument(
        "--target",
        "-t",
        default=None,
        help="preset to check against (default: the one in the manifest)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-run", action="store_true", help="static checks only (no qemu run)")
    p.set_defaults(func=cmd_audit)
