"""Command-line interface: ``python -m sldata <command> --help``.

Every pipeline stage is a command here; Snakemake rules and DVC stages call these with
every value spelled out, so a stage can also be run by hand.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sldata import __version__

log = logging.getLogger("sldata")

Handler = Callable[[argparse.Namespace], int]


def parse_bool(text: str) -> bool:
    """``true``/``false`` (as DVC renders YAML booleans into commands)."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _cmd_check_params(args: argparse.Namespace) -> int:
    from sldata.params import load_params

    load_params(args.params)
    print(f"{args.params}: valid")
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    from sldata.manifest import build_manifest, format_report, write_manifest
    from sldata.params import validate_section

    sources = validate_section(
        "sources",
        {
            "wlasl": {
                "enabled": args.wlasl_enabled,
                "annotation": {
                    "local_path": args.wlasl_local_path,
                    "local_sha256": args.wlasl_local_sha256,
                    "url": args.wlasl_url,
                    "size": args.wlasl_size,
                    "sha256": args.wlasl_sha256,
                    "timeout_s": args.wlasl_timeout_s,
                },
            },
            "msasl": {
                "enabled": args.msasl_enabled,
                "dir": args.msasl_dir,
                "splits": args.msasl_splits,
                "max_time_frame_disagreement_s": args.msasl_max_time_frame_disagreement_s,
            },
        },
    )
    result = build_manifest(sources, args.raw_dir)
    report = write_manifest(result, args.out_dir)
    print(format_report(report))
    for reject in result.rejects.rejects[: args.show_rejects]:
        print(f"  rejected: {reject}")
    return 0


def _cmd_subset(args: argparse.Namespace) -> int:
    import pandas as pd

    from sldata.manifest import read_manifest
    from sldata.params import validate_section
    from sldata.subsets import build_subset, write_subset

    subset = validate_section(
        "subset",
        {
            "dataset": args.dataset,
            "k": args.k,
            "classes": args.classes,
            "resplit": {
                "enabled": args.resplit,
                "seed": args.resplit_seed,
                "fractions": {"train": args.resplit_train, "val": args.resplit_val, "test": args.resplit_test},
            },
        },
    )
    table, meta = read_manifest(args.manifest)
    manifest = table.to_pandas(types_mapper=pd.ArrowDtype)
    samples, label_map, report = build_subset(manifest, meta["classes"], subset)
    write_subset(samples, label_map, report, args.out_dir)
    name = f"{label_map.dataset}-{label_map.k}" if label_map.k else f"{label_map.dataset} ({label_map.num_classes} classes)"
    print(f"{name}: " + ", ".join(f"{s} {report[s]['clips']} clips / {report[s]['classes']} classes" for s in ("train", "val", "test")))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from sldata.fetch import fetch_pinned

    path = fetch_pinned(args.url, args.out, args.size, args.sha256, args.timeout)
    print(f"{path}: verified ({args.size} bytes, sha256 {args.sha256})")
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    from sldata.manifest_schema import describe_schema

    print(describe_schema())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sldata",
        description="Data stages of the sign-language pipeline. Each command is one pipeline stage or tool.",
    )
    parser.add_argument("--version", action="version", version=f"sldata {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("check-params", help="validate params.yaml and explain any error by key")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.set_defaults(handler=_cmd_check_params)

    p = sub.add_parser(
        "manifest",
        help="read WLASL / MS-ASL annotations into manifest.parquet, rejects.parquet and report.json",
        description="Reads the enabled annotation sources (params: sources.*) and writes the canonical manifest. "
        "Every flag mirrors one key of params.yaml.",
    )
    p.add_argument("--out-dir", required=True, type=Path, help="output folder, e.g. data/manifest")
    p.add_argument("--raw-dir", required=True, type=Path, help="where a fetched annotation is kept, e.g. data/raw")
    g = p.add_argument_group("WLASL (sources.wlasl.*)")
    g.add_argument("--wlasl-enabled", type=parse_bool, required=True, metavar="BOOL")
    g.add_argument("--wlasl-local-path", required=True, metavar="PATH", help='local WLASL v0.3 JSON; "" to fetch --wlasl-url')
    g.add_argument("--wlasl-local-sha256", required=True, metavar="HEX", help='expected sha256 of the local copy; "" = unchecked')
    g.add_argument("--wlasl-url", required=True)
    g.add_argument("--wlasl-size", required=True, type=int, metavar="BYTES")
    g.add_argument("--wlasl-sha256", required=True, metavar="HEX")
    g.add_argument("--wlasl-timeout-s", required=True, type=float, metavar="S")
    g = p.add_argument_group("MS-ASL (sources.msasl.*)")
    g.add_argument("--msasl-enabled", type=parse_bool, required=True, metavar="BOOL")
    g.add_argument("--msasl-dir", required=True, metavar="DIR")
    g.add_argument("--msasl-splits", required=True, metavar="LIST", help="comma-separated, e.g. train,val,test")
    g.add_argument("--msasl-max-time-frame-disagreement-s", required=True, type=float, metavar="S")
    p.add_argument("--show-rejects", type=int, default=20, metavar="N", help="print the first N rejects (default 20)")
    p.set_defaults(handler=_cmd_manifest)

    p = sub.add_parser(
        "subset",
        help="select a top-k or explicit class subset (optionally signer-independent) with its label map",
        description="Builds a class subset from a manifest (params: subset.*). Every flag mirrors one key of params.yaml.",
    )
    p.add_argument("--manifest", required=True, type=Path, help="manifest.parquet from the manifest stage")
    p.add_argument("--out-dir", required=True, type=Path, help="output folder, e.g. data/subset")
    p.add_argument("--dataset", required=True, choices=["wlasl", "msasl"])
    p.add_argument("--k", required=True, type=int, help="top-k classes (ignored when --classes is given)")
    p.add_argument("--classes", required=True, metavar="LIST", help='comma-separated glosses; "" to use --k')
    p.add_argument("--resplit", required=True, type=parse_bool, metavar="BOOL", help="signer-independent re-split")
    p.add_argument("--resplit-seed", required=True, type=int)
    p.add_argument("--resplit-train", required=True, type=float, metavar="FRACTION")
    p.add_argument("--resplit-val", required=True, type=float, metavar="FRACTION")
    p.add_argument("--resplit-test", required=True, type=float, metavar="FRACTION")
    p.set_defaults(handler=_cmd_subset)

    p = sub.add_parser("fetch", help="download a pinned file and verify its size and sha256")
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--size", required=True, type=int)
    p.add_argument("--sha256", required=True)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p.set_defaults(handler=_cmd_fetch)

    p = sub.add_parser("describe-manifest", help="print the manifest's columns and their meaning (Markdown)")
    p.set_defaults(handler=_cmd_describe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except (ValueError, RuntimeError, OSError) as exc:
        # Known failure modes (bad params, bad annotation files, fetch errors) carry a message
        # that names the key/file at fault; print it without a traceback.
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
