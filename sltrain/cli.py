"""Command-line interface: ``python -m sltrain <command> --help``."""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence
from importlib import metadata

from sltrain import __version__

RUNTIME_PACKAGES = ("torch", "openvino", "mediapipe", "numpy", "av", "opencv-contrib-python")


def runtime_report() -> dict[str, object]:
    """Versions of the runtime packages and the compute devices torch and OpenVINO can see."""
    versions: dict[str, str | None] = {}
    for name in RUNTIME_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    report: dict[str, object] = {"python": platform.python_version(), "machine": platform.machine(), "packages": versions}
    import torch

    report["torch_cuda"] = torch.cuda.is_available()
    report["torch_threads"] = torch.get_num_threads()
    import openvino as ov

    report["openvino_devices"] = ov.Core().available_devices
    return report


def _cmd_env(args: argparse.Namespace) -> int:
    report = runtime_report()
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sltrain",
        description="Training, evaluation, export and inference for the sign-language pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"sltrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("env", help="print package versions and the devices torch and OpenVINO can use (JSON)")
    p.set_defaults(handler=_cmd_env)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))
