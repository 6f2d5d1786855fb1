"""Continuous recognition on videos of several signs in a row: the gloss error rate of ``stream``.

Real clips of one split (default ``val``: clips the model never trained on) of the model's glosses,
as the pipeline's acquire stage stored them (``data/clips``), are joined back to back with PyAV into ``--videos`` videos of ``--signs`` signs each (clips drawn
at random with ``--seed``; every WLASL100 clip is 256x256 at 25 fps, so frames are concatenated as
they are and re-encoded as H.264). Each video goes through :func:`sltrain.stream.classify_windows`
once (the exported model, Holistic on the frames of the training keypoint rate); the window results
are then turned into signs by :func:`sltrain.stream.detections` under each setting of a small grid
(threshold x min_windows x min_motion).

The gloss error rate of a video is the edit distance between the glosses emitted and the glosses
signed, over the number signed (substitutions + insertions + deletions, like a word error rate);
the table sums both over all videos. The setting is chosen on the first half of the videos and
its rate is reported on the second half (``held-out`` column), so the reported figure is not tuned
on the videos it is measured on. ``clip top-1`` is ``predict`` on each joined clip alone: the
best a stream of these clips could do sign by sign; each of those top-1 glosses is also compared
with the one ``evaluate`` wrote for the clip (``--evaluate-predictions``).

Usage (after ``make all``)::

    python bench/bench_stream.py --model data/export/sign-recognizer --samples data/subset/samples.parquet
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from sltrain.predict import Recognizer  # noqa: E402
from sltrain.stream import (DEFAULT_GAP_S, DEFAULT_MIN_MOTION, DEFAULT_MIN_WINDOWS, DEFAULT_STRIDE,  # noqa: E402
                            DEFAULT_THRESHOLD, WindowResult, classify_windows, detections, open_source)

GRID = {"threshold": (0.3, 0.4, 0.5, 0.6, 0.7), "min_windows": (1, 2, 3, 4), "min_motion": (0.0, 0.25, 0.5)}


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two gloss sequences."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def join_clips(paths: list[Path], out: Path, fps: int = 25) -> Path:
    """Concatenate clips of one frame size into one H.264 video."""
    with av.open(str(out), "w") as container:
        stream = None
        for path in paths:
            with av.open(str(path)) as src:
                for frame in src.decode(video=0):
                    image = frame.to_ndarray(format="rgb24")
                    if stream is None:
                        stream = container.add_stream("libx264", rate=fps)
                        stream.height, stream.width = image.shape[:2]
                        stream.pix_fmt = "yuv420p"
                    elif image.shape[:2] != (stream.height, stream.width):
                        raise ValueError(f"{path}: frame size {image.shape[:2]} differs from the first clip's")
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        if stream is not None:
            container.mux(stream.encode())
    return out


def error_rate(windows: list[list[WindowResult]], refs: list[list[str]], **setting: float) -> tuple[int, int, int]:
    """(edit distance, reference length, glosses emitted) summed over videos for one detection setting."""
    errors = length = emitted = 0
    for results, ref in zip(windows, refs):
        hyp = [d.gloss for d in detections(results, **setting)]
        errors += edit_distance(ref, hyp)
        length += len(ref)
        emitted += len(hyp)
    return errors, length, emitted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="data/export/sign-recognizer", help="exported model folder")
    parser.add_argument("--samples", default="data/subset/samples.parquet", help="the subset's samples.parquet")
    parser.add_argument("--clips", default="data/clips",
                        help="the acquire stage's folder: its shard-*/clips.parquet give each sample's clip")
    parser.add_argument("--evaluate-predictions", default="data/eval/val/predictions.csv",
                        help="evaluate's per-clip predictions: predict's top-1 on each clip is compared with it")
    parser.add_argument("--split", default="val", help="split the clips come from (default %(default)s)")
    parser.add_argument("--videos", type=int, default=12, help="joined videos (default %(default)s)")
    parser.add_argument("--signs", type=int, default=5, help="signs per video (default %(default)s)")
    parser.add_argument("--stride", type=int, default=DEFAULT_STRIDE, help="keypoint frames between windows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "stream.json")
    args = parser.parse_args(argv)

    recognizer = Recognizer.from_model_dir(args.model)
    samples = pd.read_parquet(args.samples)
    clips = pd.concat([pd.read_parquet(p, columns=["sample_id", "clip_path", "status"])
                       for p in sorted(Path(args.clips).glob("shard-*/clips.parquet"))])
    clip_of = dict(zip(clips["sample_id"].astype(str), clips["clip_path"]))
    pool = samples[(samples["split"].astype(str) == args.split) & samples["gloss"].isin(recognizer.classes)]
    pool = pool[[isinstance(clip_of.get(sid), str) and Path(clip_of[sid]).is_file()
                 for sid in pool["sample_id"].astype(str)]]
    need = args.videos * args.signs
    if len(pool) < need:
        raise SystemExit(f"{len(pool)} {args.split} clips of the model's glosses in {args.clips}, {need} needed")
    rng = np.random.default_rng(args.seed)
    chosen = pool.iloc[rng.permutation(len(pool))[:need]].reset_index(drop=True)

    evaluated: dict[str, str] = {}
    if Path(args.evaluate_predictions).is_file():
        table = pd.read_csv(args.evaluate_predictions)
        evaluated = dict(zip(table["sample_id"].astype(str), table["pred_gloss"].astype(str)))
    agree = 0
    windows: list[list[WindowResult]] = []
    refs: list[list[str]] = []
    clip_correct = 0
    pose_s = frames = 0.0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for v in range(args.videos):
            part = chosen.iloc[v * args.signs:(v + 1) * args.signs]
            paths = [Path(clip_of[sid]) for sid in part["sample_id"].astype(str)]
            video = join_clips(paths, Path(tmp) / f"joined-{v:02d}.mp4")
            stats: dict[str, float] = {}
            windows.append(list(classify_windows(recognizer, open_source(str(video)), stride=args.stride,
                                                 stats=stats)))
            refs.append(part["gloss"].astype(str).tolist())
            pose_s += stats["pose_s"]
            frames += stats["keypoint_frames"]
            for sid, path, gloss in zip(part["sample_id"].astype(str), paths, refs[-1]):
                top1 = recognizer.recognize_video(path).top[0][0]
                clip_correct += top1 == gloss
                if sid in evaluated:
                    agree += top1 == evaluated[sid]
            print(f"video {v + 1}/{args.videos}: {len(windows[-1])} windows, signed {' '.join(refs[-1])}", flush=True)

    half = args.videos // 2
    rows = []
    for threshold, min_windows, min_motion in itertools.product(*GRID.values()):
        setting = {"threshold": threshold, "min_windows": min_windows, "min_motion": min_motion, "gap_s": DEFAULT_GAP_S}
        tune = error_rate(windows[:half], refs[:half], **setting)
        held = error_rate(windows[half:], refs[half:], **setting)
        every = error_rate(windows, refs, **setting)
        rows.append({**setting, "tune_ger": tune[0] / tune[1], "held_out_ger": held[0] / held[1],
                     "all_ger": every[0] / every[1], "emitted": every[2], "signed": every[1]})
    default = next(r for r in rows if (r["threshold"], r["min_windows"], r["min_motion"])
                   == (DEFAULT_THRESHOLD, DEFAULT_MIN_WINDOWS, DEFAULT_MIN_MOTION))
    best = min(rows, key=lambda r: (r["tune_ger"], -r["threshold"], r["min_windows"]))
    naive = error_rate(windows, refs, threshold=0.0, min_windows=1, min_motion=0.0, gap_s=0.0)
    result = {
        "model": str(recognizer.path), "split": args.split, "videos": args.videos, "signs_per_video": args.signs,
        "seed": args.seed, "stride": args.stride, "clip_top1": clip_correct / need,
        "clips_compared_with_evaluate": sum(sid in evaluated for sid in chosen["sample_id"].astype(str)),
        "predict_equals_evaluate": agree,
        "keypoint_frames": int(frames), "pose_wall_ms_per_keypoint_frame": 1000 * pose_s / max(frames, 1),
        "seconds": time.perf_counter() - started, "every_window_change_ger": naive[0] / naive[1],
        "default": default, "chosen_on_first_half": best, "grid": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\n{args.videos} videos x {args.signs} {args.split} signs; clip top-1 alone {100 * result['clip_top1']:.1f}%; "
          f"predict's top-1 = evaluate's on {agree} of {result['clips_compared_with_evaluate']} clips")
    print("| detection | threshold | min windows | min motion | gloss error rate (all) | held-out half | emitted / signed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| every change of top-1 | 0 | 1 | 0 | {100 * naive[0] / naive[1]:.1f}% | | {naive[2]} / {naive[1]} |")
    for label, r in (("default", default), ("chosen on first half", best)):
        print(f"| {label} | {r['threshold']} | {r['min_windows']} | {r['min_motion']} | {100 * r['all_ger']:.1f}% | "
              f"{100 * r['held_out_ger']:.1f}% | {r['emitted']} / {r['signed']} |")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
