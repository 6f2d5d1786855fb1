"""Training throughput and time to reach a val top-1 target, with the committed params.

Trains the model of ``params.yaml`` (sections ``features``, ``train``, ``models``) on the packed
keypoints the pipeline wrote (``data/features/pose``, from ``make all`` or
``snakemake --cores 2 data/features/pose/keypoints.npy``) in a temporary folder, then prints side
by side: clips/s of the input pipeline alone (keypoints -> augmented model input), clips/s of
whole training steps, and the training time at which val top-1 first reached ``--target``.

    python bench/bench_train.py                 # --help for the options
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sldata.pose.store import load_packed  # noqa: E402
from sltrain.data import PoseClips  # noqa: E402
from sltrain.train import FeatureConfig, TrainConfig, _augmenter, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packed", default=str(REPO / "data/features/pose"), help="pack-pose output folder")
    parser.add_argument("--label-map", default=str(REPO / "data/subset/label_map.json"))
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--target", type=float, default=0.70, help="val per-instance top-1 to reach (default 0.70)")
    args = parser.parse_args(argv)

    params = yaml.safe_load(Path(args.params).read_text())
    if args.epochs is not None:
        params["train"]["epochs"] = args.epochs
    cfg = TrainConfig.from_params(params["train"], params["models"])
    features = FeatureConfig(**params["features"])
    _, _, meta = load_packed(args.packed)
    spec = features.input_spec(meta["skeleton"])

    clips = PoseClips(args.packed, ("train",), spec)
    rows = clips.rows_of("train")
    augment = _augmenter(cfg, spec)
    t0 = time.perf_counter()
    for r in rows:
        clips.features(int(r), augment, np.random.default_rng([cfg.seed, 0, int(r)]))
    data_rate = len(rows) / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        wall = time.perf_counter()
        metrics = train(args.packed, args.label_map, Path(tmp) / "out", Path(tmp) / "work", cfg, features,
                        progress=False)
        wall = time.perf_counter() - wall
        history = pd.read_csv(Path(tmp) / "out" / "history.csv")
    reached = history[history["val_top1"] >= args.target]
    train_rate = metrics["train_clips"] * metrics["epochs_run"] / metrics["train_time_s"]
    print(f"model {cfg.model}, {metrics['train_clips']} train / {metrics['val_clips']} val clips, "
          f"{metrics['epochs_run']} epochs, {cfg.threads} torch thread(s), device {metrics['device']}")
    print(f"{'input pipeline alone (features + augmentation)':48s} {data_rate:8.1f} clips/s")
    print(f"{'training (input + forward + backward + val)':48s} {train_rate:8.1f} clips/s "
          f"({data_rate / train_rate:.1f}x the training rate)")
    print(f"{'best val per-instance top-1':48s} {metrics['val_per_instance_top1']:8.3f} (epoch {metrics['best_epoch']})")
    if len(reached):
        first = reached.iloc[0]
        print(f"{f'time to val top-1 >= {args.target:.2f}':48s} {first['elapsed_s']:8.1f} s (epoch {int(first['epoch'])})")
    else:
        print(f"{f'time to val top-1 >= {args.target:.2f}':48s}      not reached in {metrics['train_time_s']:.0f} s")
    print(f"{'training time in the loop / wall time':48s} {metrics['train_time_s']:8.1f} s / {wall:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
