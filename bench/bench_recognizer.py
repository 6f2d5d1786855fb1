"""The recognizer's ablation: val top-1 over seeds for each step from the old model to the committed one.

Each row is ``params.yaml`` with a few keys overridden (dotted names, as ``dvc exp run -S`` takes
them); each (row, seed) is one full training run of ``sltrain.train.train`` on the packed
keypoints of the pipeline (``data/features/pose``, from ``make all``), on the train split, scored
on val. Runs go to separate processes (``--jobs``, one torch thread each: two small models on two
cores train faster side by side than one on two threads), and their results are kept in
``--results`` (JSON), so an interrupted benchmark resumes and a row already measured with the same
overrides is not trained again. The table prints val top-1 as mean +/- sample sd over the seeds,
top-5, and the CPU minutes of one run (user + system of its process: machine-independent of how
many other jobs ran beside it; wall time is printed too).

    python bench/bench_recognizer.py                      # every row, seeds 0 1 2, 2 jobs
    python bench/bench_recognizer.py --rows baseline,committed --seeds 0
    python bench/bench_recognizer.py --table-only         # print what --results holds
    python bench/bench_recognizer.py --import-pipeline    # committed seed 0 = make all's own training run

Val is what every choice here was made on (the test split is never read outside ``evaluate``),
and each run keeps its best val epoch, so the numbers are val scores, not test estimates.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sldata.atomic import write_json  # noqa: E402

_CANONICAL = {"features.canonical_hand": True, "train.augment.flip_prob": 0.0}
_CONFORMER = {"train.model": "pose_conformer"}
_REGULARIZE = {"features.interpolate_max_gap": 6, "train.augment.hand_drop_prob": 0.3,
               "train.mixup_alpha": 0.2, "train.mixup_prob": 0.5}

# The three members committed before the fourth (a second on mirrored clips), and the four committed today.
_THREE = {"canonical_a": {"model": "pose_conformer", "seed": 0, "flip_prob": 0.0},
          "canonical_b": {"model": "pose_conformer", "seed": 1, "flip_prob": 0.0},
          "mirrored": {"model": "pose_conformer", "seed": 2, "flip_prob": 0.5}}
_FOUR = {**_THREE, "mirrored_b": {"model": "pose_conformer", "seed": 3, "flip_prob": 0.5}}

ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("the previous model: pose transformer, mirror augmentation, 60 epochs",
                 {"train.model": "pose_transformer", "features.canonical_hand": False, "train.flip_tta": False,
                  "train.augment.flip_prob": 0.5, "train.epochs": 60, "train.ensemble": {},
                  "features.interpolate_max_gap": 0, "train.augment.hand_drop_prob": 0.0, "train.mixup_alpha": 0.0,
                  "train.mixup_prob": 0.0}),
    "flip_tta": ("+ the clip and its mirror averaged when scoring",
                 {"train.model": "pose_transformer", "features.canonical_hand": False, "train.flip_tta": True,
                  "train.augment.flip_prob": 0.5, "train.epochs": 60, "train.ensemble": {}}),
    "conformer": ("+ pose conformer (per-part embeddings, temporal convolution, attention)",
                  {**_CONFORMER, "features.canonical_hand": False, "train.flip_tta": True,
                   "train.augment.flip_prob": 0.5, "train.epochs": 60, "train.ensemble": {}}),
    "canonical": ("+ dominant hand mirrored to the right (no mirror augmentation); with the conformer row, "
                  "one pose conformer, 60 epochs",
                  {**_CONFORMER, **_CANONICAL, "train.epochs": 60, "train.ensemble": {}}),
    "regularized": ("+ gap interpolation, hand dropout, mixup",
                    {**_CONFORMER, **_CANONICAL, **_REGULARIZE, "train.epochs": 60, "train.ensemble": {}}),
    "longer": ("+ 120 epochs (no gap interpolation, hand dropout or mixup)",
               {**_CONFORMER, **_CANONICAL, "train.epochs": 120, "train.ensemble": {}}),
    "three": ("an ensemble of three conformers, 80 epochs each: two canonical, one on mirrored clips with flip TTA "
              "(committed before the fourth member)", {"train.ensemble": _THREE, "train.epochs": 80}),
    "committed": ("the committed params.yaml: + a fourth member, a second one on mirrored clips", {}),
    "four_regularized": ("+ gap interpolation, hand dropout, mixup in each of the four",
                         {"train.ensemble": _FOUR, "train.epochs": 80, **_REGULARIZE}),
}


def set_dotted(params: dict[str, Any], key: str, value: Any) -> None:
    """``params["a"]["b"]["c"] = value`` for ``key`` ``"a.b.c"`` (every level but the last must exist)."""
    *path, last = key.split(".")
    node = params
    for part in path:
        if part not in node:
            raise KeyError(f"params has no {key!r} ({part!r} missing)")
        node = node[part]
    if last not in node:
        raise KeyError(f"params has no {key!r}")
    node[last] = copy.deepcopy(value)


def row_params(base: dict[str, Any], row: str, seed: int) -> dict[str, Any]:
    """``base`` with the row's overrides and ``seed`` (ensemble members get ``seed * 100 + their own seed``)."""
    params = copy.deepcopy(base)
    for key, value in ROWS[row][1].items():
        set_dotted(params, key, value)
    params["train"]["seed"] = seed
    for member in params["train"].get("ensemble", {}).values():
        member["seed"] = seed * 100 + int(member["seed"])
    params["train"]["threads"] = 1
    params["train"]["processes"] = 1
    params["train"]["loader_workers"] = 0  # the runs go side by side, one core each (same results, tested)
    params["train"]["ensemble_jobs"] = 1  # members one after the other, in the run's own process (tested)
    return params


def run_key(params: dict[str, Any]) -> str:
    """Digest of what a run trains (the sections train reads)."""
    blob = json.dumps({k: params[k] for k in ("features", "train", "models")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_one(params_path: Path, packed: str, label_map: str, out: Path) -> None:
    """Train with the params in ``params_path``; write the metrics and CPU seconds to ``out``."""
    from sltrain.train import FeatureConfig, TrainConfig, train

    params = json.loads(params_path.read_text())
    cfg = TrainConfig.from_params(params["train"], params["models"])
    features = FeatureConfig(**params["features"])
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(packed, label_map, Path(tmp) / "out", Path(tmp) / "work", cfg, features, progress=False)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    write_json(out, {"metrics": metrics, "cpu_s": usage.ru_utime + usage.ru_stime,
                     "wall_s": time.perf_counter() - wall})


RUNTIME_KEYS = ("threads", "processes", "loader_workers", "device", "ensemble_jobs")
"""``train`` keys that change how fast a run goes, not what it learns (``loader_workers``: tested in
tests/test_recognizer.py)."""


def import_pipeline_run(train_dir: Path, benchmark_tsv: Path, base: dict[str, Any]) -> dict[str, Any]:
    """The ``committed`` seed-0 result from ``make all``'s own train stage, instead of training it again.

    The stage's checkpoint records the params it ran with, as the train stage reads them (its keys
    in :mod:`sldata.stages`: ``features``, ``train`` and the pose models' settings); they must equal
    :func:`row_params` of ``committed`` with seed 0, seen the same way, except for
    :data:`RUNTIME_KEYS` (else ``SystemExit``). CPU and wall time come from the rule's Snakemake
    benchmark file.
    """
    import csv

    import torch

    from sldata.stages import stage_params

    ckpt = torch.load(train_dir / "model.pt", map_location="cpu", weights_only=False)
    ran = ckpt.get("params") or {}
    want = row_params(base, "committed", 0)
    seen = stage_params(want, "train")
    for section in ("features", "train", "models"):
        a, b = dict(ran.get(section, {})), dict(seen[section])
        if section == "train":
            for key in RUNTIME_KEYS:
                a.pop(key, None)
                b.pop(key, None)
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            raise SystemExit(f"{train_dir}/model.pt was trained with other {section!r} settings than the committed "
                             "row; rerun make all with this params.yaml first")
    with benchmark_tsv.open(encoding="utf-8") as fh:
        bench = next(csv.DictReader(fh, delimiter="\t"))
    metrics = json.loads((train_dir / "metrics.json").read_text(encoding="utf-8"))
    return {"row": "committed", "seed": 0, "key": run_key(want), "metrics": metrics,
            "cpu_s": float(bench["cpu_time"]), "wall_s": float(bench["s"]), "source": str(train_dir)}


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def table(results: dict[str, Any], rows: list[str], seeds: list[int], base: dict[str, Any]) -> str:
    lines = ["| row | what changed | val top-1 (mean +/- sd) | val top-5 | runs | CPU min / run | wall min / run |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        got = [results[f"{row}/{seed}"] for seed in seeds if f"{row}/{seed}" in results
               and results[f"{row}/{seed}"].get("key") == run_key(row_params(base, row, seed))]
        if not got:
            lines.append(f"| {row} | {ROWS[row][0]} | - | - | 0 | - | - |")
            continue
        top1 = [100 * g["metrics"]["val_per_instance_top1"] for g in got]
        top5 = [100 * g["metrics"]["val_per_instance_top5"] for g in got]
        mean = sum(top1) / len(top1)
        sd = math.sqrt(sum((v - mean) ** 2 for v in top1) / (len(top1) - 1)) if len(top1) > 1 else float("nan")
        cpu = sum(g["cpu_s"] for g in got) / len(got) / 60
        wall = sum(g["wall_s"] for g in got) / len(got) / 60
        lines.append(f"| {row} | {ROWS[row][0]} | {mean:.1f} +/- {sd:.1f} | {sum(top5) / len(top5):.1f} | "
                     f"{len(got)} | {cpu:.1f} | {wall:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packed", default=str(REPO / "data/features/pose"), help="pack-pose output folder")
    parser.add_argument("--label-map", default=str(REPO / "data/subset/label_map.json"))
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="training processes at once (default %(default)s)")
    parser.add_argument("--results", default=str(REPO / "bench/results/recognizer.json"),
                        help="JSON of finished runs, read and extended (default %(default)s)")
    parser.add_argument("--table-only", action="store_true", help="print the table of --results and exit")
    parser.add_argument("--import-pipeline", action="store_true",
                        help="take committed seed 0 from make all's data/train (checked to be the same settings) "
                             "and its benchmarks/train.tsv instead of training it again")
    parser.add_argument("--one", nargs=2, metavar=("PARAMS_JSON", "OUT_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        train_one(Path(args.one[0]), args.packed, args.label_map, Path(args.one[1]))
        return 0

    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {unknown}; rows: {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    base = yaml.safe_load(Path(args.params).read_text())
    results_path = Path(args.results)
    results = load_results(results_path)
    if args.table_only:
        print(table(results, rows, seeds, base))
        return 0
    if args.import_pipeline:
        results["committed/0"] = import_pipeline_run(REPO / "data/train", REPO / "benchmarks/train.tsv", base)
        results_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(results_path, results)
        print(f"committed seed 0 taken from data/train: val top-1 "
              f"{results['committed/0']['metrics']['val_per_instance_top1']:.4f}", flush=True)
    todo = []
    for row in rows:
        for seed in seeds:
            params = row_params(base, row, seed)
            done = results.get(f"{row}/{seed}")
            if done and done.get("key") == run_key(params):
                continue
            todo.append((row, seed, params))
    print(f"{len(todo)} run(s) to train, {args.jobs} at a time; results in {results_path}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        running: list[tuple[str, int, dict[str, Any], Path, subprocess.Popen[bytes]]] = []
        while todo or running:
            while todo and len(running) < args.jobs:
                row, seed, params = todo.pop(0)
                ppath, opath = Path(tmp) / f"{row}-{seed}.params.json", Path(tmp) / f"{row}-{seed}.out.json"
                ppath.write_text(json.dumps(params))
                env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
                proc = subprocess.Popen([sys.executable, __file__, "--packed", args.packed, "--label-map",
                                         args.label_map, "--one", str(ppath), str(opath)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                running.append((row, seed, params, opath, proc))
                print(f"  started {row} seed {seed}", flush=True)
            time.sleep(2)
            for item in list(running):
                row, seed, params, opath, proc = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                if proc.returncode != 0 or not opath.is_file():
                    print(f"  FAILED {row} seed {seed} (exit {proc.returncode})", flush=True)
                    continue
                done = json.loads(opath.read_text())
                results = load_results(results_path)
                results[f"{row}/{seed}"] = {"row": row, "seed": seed, "key": run_key(params), **done}
                results_path.parent.mkdir(parents=True, exist_ok=True)
                write_json(results_path, results)
                m = done["metrics"]
                print(f"  {row} seed {seed}: val top-1 {m['val_per_instance_top1']:.4f}, top-5 "
                      f"{m['val_per_instance_top5']:.4f}, {done['cpu_s'] / 60:.1f} CPU min", flush=True)
    print(table(load_results(results_path), rows, seeds, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
