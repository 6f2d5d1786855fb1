"""Command-line interface: ``python -m sltrain <command> --help``.

The training and evaluation stages take paths as flags and read their settings from the params
file (``--params``, default ``params.yaml``; ``--set key.sub=value`` overrides one value), like
the ``sldata`` stages. ``predict``, ``stream`` and ``serve`` need no params: an exported model
carries what they need.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata

from sldata.params import SCHEMA_PATH, add_params_arguments, params_from_args
from sldata.progress import LOG_DATEFMT, LOG_FORMAT
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


def torchrun_argv(processes: int, argv: Sequence[str]) -> list[str]:
    """The command that reruns ``python -m sltrain <argv>`` as ``processes`` torchrun processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "sltrain", *argv]


def _cmd_train(args: argparse.Namespace) -> int:
    from sldata.stages import stage_params
    from sltrain.train import FeatureConfig, TrainConfig, train

    params = params_from_args(args)
    features = FeatureConfig.from_params(params["features"])
    cfg = TrainConfig.from_params(params["train"], params["models"])
    if cfg.processes > 1 and "WORLD_SIZE" not in os.environ:  # start the data-parallel processes
        argv = torchrun_argv(cfg.processes, args.argv)
        print("running:", " ".join(argv), file=sys.stderr, flush=True)
        return subprocess.call(argv)
    # The checkpoints record the values this stage depends on (sldata/stages.py), no others.
    metrics = train(args.packed, args.label_map, args.out_dir, args.work_dir, cfg, features,
                    params=stage_params(params, "train"), progress=not args.no_progress, samples_path=args.samples)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def _cmd_train_rgb(args: argparse.Namespace) -> int:
    from sldata.stages import stage_params
    from sltrain.train import clip_section, train_rgb

    params = params_from_args(args)
    recorded = stage_params(params, "train_rgb")
    cfg, clip_input = clip_section(params["train_rgb"], params["models"], "train_rgb")
    metrics = train_rgb(args.frames, args.samples, args.label_map, args.out_dir, args.work_dir, cfg, clip_input,
                        params=recorded, progress=not args.no_progress, source=recorded["frames"])
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def _cmd_train_hands(args: argparse.Namespace) -> int:
    from sldata.stages import stage_params
    from sltrain.train import clip_section, train_hands

    params = params_from_args(args)
    recorded = stage_params(params, "train_hands")
    cfg, clip_input = clip_section(params["train_hands"], params["models"], "train_hands")
    metrics = train_hands(args.hand_crops, args.packed, args.label_map, args.out_dir, args.work_dir, cfg, clip_input,
                          params=recorded, progress=not args.no_progress, samples_path=args.samples,
                          source=recorded["hand_crops"])
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def _needs_checkout(args: argparse.Namespace) -> int:
    print(f"error: {args.command} takes its settings from the params schema ({SCHEMA_PATH}), which only a source "
          "checkout has: run it from a clone set up with `make setup` (this install is for predict, stream and serve)",
          file=sys.stderr)
    return 2


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from sltrain.evaluate import evaluate

    splits = list(dict.fromkeys(args.splits))
    seed = params_from_args(args)["train"]["seed"]
    combined = evaluate(args.model, args.packed, args.samples, splits, args.out_dir, seed=seed)
    for split in splits:
        m = combined[split]
        print(f"{split}: {m['clips_evaluated']}/{m['clips_annotated']} clips (coverage {m['coverage']}); "
              f"per-instance top-1 {m['per_instance_top1']}, top-5 {m['per_instance_top5']}; "
              f"mean per-class top-1 {m['mean_per_class_top1']}; top-1 95% CI {m['top1_ci95']}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from sltrain.export import main_export  # before the params: an install without torch says so first

    return main_export(args, params_from_args(args)["export"])


def _cmd_predict(args: argparse.Namespace) -> int:
    from sltrain.predict import main_predict

    return main_predict(args)


def _cmd_stream(args: argparse.Namespace) -> int:
    from sltrain.stream import main_stream

    return main_stream(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from sltrain.serve import main_serve

    return main_serve(args)


def add_inference_commands(sub: argparse._SubParsersAction) -> None:
    """``export``, ``predict``, ``stream`` and ``serve`` (their heavy modules are imported when a command runs)."""
    from sltrain.predict import add_predict_arguments
    from sltrain.serve import add_serve_arguments
    from sltrain.stream import add_stream_arguments

    p = sub.add_parser("export", help="export a checkpoint to OpenVINO IR + ONNX (model repository layout), "
                                      "with a PyTorch/OpenVINO/ONNX parity check")
    p.add_argument("checkpoint", help="sltrain checkpoint (.pt)")
    add_params_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="model repository root")
    p.add_argument("--name", default="sign-recognizer", help="model name (folder; default %(default)s)")
    p.add_argument("--version", type=int, default=1, help="version folder, a positive integer (default %(default)s)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest allowed |logit difference| of the IR (default 1e-4, 1e-2 with export.fp16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version folder")
    p.add_argument("--parity-packed", metavar="DIR", default=None,
                   help="pack-pose folder: check parity on its real val clips (params export.parity_clips; with "
                   "export.int8, calibrated on export.calibration_clips train clips) instead of synthetic inputs")
    p.add_argument("--eval-metrics", metavar="JSON", default=None,
                   help="the evaluate stage's metrics.json: its numbers (with coverage) go into MODEL_CARD.md")
    p.set_defaults(handler=_cmd_export)
    p = sub.add_parser("predict", help="top-5 glosses of video files with an exported model (no torch needed)")
    add_predict_arguments(p)
    p.set_defaults(handler=_cmd_predict)
    p = sub.add_parser("stream", help="sliding-window recognition of a long video, webcam index or stream URL")
    add_stream_arguments(p)
    p.set_defaults(handler=_cmd_stream)
    p = sub.add_parser("serve", help="HTTP service: POST /predict (raw video body) -> top-5 JSON, GET /health")
    add_serve_arguments(p)
    p.set_defaults(handler=_cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sltrain",
        description="Training, evaluation, export and inference for the sign-language pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"sltrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    training = SCHEMA_PATH.is_file()  # the params schema lives in the source checkout (pipeline/schemas/)
    p = sub.add_parser("env", help="print package versions and the devices torch and OpenVINO can use (JSON)")
    p.set_defaults(handler=_cmd_env)

    p = sub.add_parser(
        "train",
        help="train a pose model on the packed keypoints (train split; model selection on val)",
        description="Trains the model of params train.model on the train split, selects and early-stops on val "
        "(the test split is never read), resumes from WORK_DIR/last.pt, and writes OUT_DIR/model.pt, metrics.json, "
        "history.csv and curves.png. Settings: params features, train and models (--params, --set).",
    )
    add_params_arguments(p)
    p.add_argument("--packed", required=True, help="pack-pose output folder, e.g. data/features/pose")
    p.add_argument("--label-map", required=True, help="label_map.json of the subset stage")
    p.add_argument("--out-dir", required=True, help="output folder, e.g. data/train")
    p.add_argument("--work-dir", required=True, help="resumable state, e.g. data/cache/train")
    p.add_argument("--samples", default=None,
                   help="samples.parquet of the subset: columns for heads that the pack's index lacks (train and "
                   "val rows only are read)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_train if training else _needs_checkout)

    p = sub.add_parser(
        "train-rgb",
        help="train the RGB clip model (S3D / MobileNet-V3 style) on the frames stage's output",
        description="Trains models.rgb_s3d with params train_rgb on the train split's RGB frames, selects and "
        "early-stops on val (test clips are never read), resumes from WORK_DIR/last.pt, and writes OUT_DIR/model.pt, "
        "metrics.json, history.csv and curves.png. Settings: params train_rgb, models.rgb_s3d and frames (recorded "
        "in the checkpoint's input spec), from --params with any --set. evaluate, export and predict support pose models "
        "only and refuse this checkpoint.",
    )
    add_params_arguments(p)
    p.add_argument("--frames", required=True, help="frames stage output folder (shard-NNN/), e.g. data/frames")
    p.add_argument("--samples", required=True, help="samples.parquet of the subset (labels, splits, head columns)")
    p.add_argument("--label-map", required=True, help="label_map.json of the subset stage")
    p.add_argument("--out-dir", required=True, help="output folder, e.g. data/train_rgb")
    p.add_argument("--work-dir", required=True, help="resumable state, e.g. data/cache/train_rgb")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_train_rgb if training else _needs_checkout)

    p = sub.add_parser(
        "train-hands",
        help="train the VTN on hand crops and pose flow (hand-crop stage + packed keypoints)",
        description="Trains models.vtn with params train_hands on the train split's hand crops and keypoints, "
        "selects and early-stops on val (test clips are never read), resumes from WORK_DIR/last.pt, and writes "
        "OUT_DIR/model.pt, metrics.json, history.csv and curves.png. Settings: params train_hands, models.vtn and "
        "hand_crops (recorded in the checkpoint's input spec), from --params with any --set. evaluate, export "
        "and predict support pose models only and refuse this checkpoint.",
    )
    add_params_arguments(p)
    p.add_argument("--hand-crops", required=True, help="hand-crop stage output folder (shard-NNN/), e.g. data/hand_crops")
    p.add_argument("--packed", required=True, help="pack-pose output folder (labels, splits, keypoints)")
    p.add_argument("--label-map", required=True, help="label_map.json of the subset stage")
    p.add_argument("--out-dir", required=True, help="output folder, e.g. data/train_hands")
    p.add_argument("--work-dir", required=True, help="resumable state, e.g. data/cache/train_hands")
    p.add_argument("--samples", default=None,
                   help="samples.parquet of the subset: columns for heads that the pack's index lacks")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_train_hands if training else _needs_checkout)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained model on val/test: top-k, per-class, per-signer, bootstrap CI, coverage, confusion",
        description="The only command that reads the test split. Writes OUT_DIR/<split>/{metrics.json, "
        "predictions.csv, confusion.csv, confusion.png} and OUT_DIR/metrics.json. The bootstrap seed is params "
        "train.seed.",
    )
    add_params_arguments(p)
    p.add_argument("--model", required=True, help="model.pt from the train stage")
    p.add_argument("--packed", required=True, help="pack-pose output folder")
    p.add_argument("--samples", required=True, help="samples.parquet of the subset (for coverage)")
    p.add_argument("--splits", required=True, nargs="+", choices=["train", "val", "test"], metavar="SPLIT",
                   help="splits to evaluate, e.g. --splits val test")
    p.add_argument("--out-dir", required=True, help="output folder, e.g. data/eval")
    p.set_defaults(handler=_cmd_evaluate)
    add_inference_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt=LOG_DATEFMT)
    try:
        return int(args.handler(args))
    except ModuleNotFoundError as exc:  # e.g. export or train in an inference-only install (pip install .[infer])
        print(f"error: {args.command} needs the {exc.name!r} package, which is not installed here "
              "(pip install '.[train]' for training and export, or `make setup` for everything)", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # bad params, missing inputs, refused checkpoints: no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
