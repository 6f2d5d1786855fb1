"""Pose engines side by side: MediaPipe Holistic vs its OpenVINO rebuild, on the same real frames.

On ``N`` real WLASL100 clips (``$SLDATA_SHARED/wlasl100_clips/videos``, default
``../shared/data``; clips spread evenly over the sorted file list), every clip is decoded once
with the pose stage's reader (:class:`sldata.pose.extract.ClipReader`, every ``--frame-step``-th
frame as in params.yaml) and the same frames go through both engines, one clip after the other:

* ``mediapipe``: :class:`sldata.pose.estimator.HolisticEstimator` (the plain Holistic loop: one
  ``mp.solutions.holistic.Holistic`` graph per clip, frame by frame);
* ``openvino``: :class:`sldata.pose.openvino_holistic.OpenVinoHolisticEstimator` with
  ``--threads`` OpenVINO inference threads (default 1) and ``--precision`` (default ``f32``;
  ``bf16`` to measure the faster, less exact variant).

It prints, for body, each hand and the face, the per-point error of ``openvino`` against
``mediapipe`` (median and p95, pixels at 256 px, on frames where both found the part), the
share of frames where both agree on the part's presence and each engine's presence rate; and
the speed of each engine as CPU-milliseconds per keypoint frame (``time.process_time`` of this
process, every thread included, around ``estimate`` only; decoding excluded) and wall frames/s,
with the ratio. Both engines are warmed on the first clip before timing. Usage::

    python bench/bench_pose_engines.py               # --clips 12
    python bench/bench_pose_engines.py --clips 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from sldata.pose.estimator import make_estimator  # noqa: E402
from sldata.pose.extract import ClipReader  # noqa: E402
from sldata.pose.openvino_holistic import PRECISIONS  # noqa: E402
from sldata.pose.parity import PartParity, compare  # noqa: E402


def shared_data_dir() -> Path:
    """The real-data folder: $SLDATA_SHARED, else ../shared/data beside the checkout."""
    return Path(os.environ.get("SLDATA_SHARED", REPO_ROOT.parent / "shared" / "data")).resolve()


def pick_clips(folder: Path, n: int) -> list[Path]:
    """``n`` clips spread evenly over the sorted ``*.mp4`` of ``folder``."""
    paths = sorted(folder.glob("*.mp4"))
    if not paths:
        raise SystemExit(f"no .mp4 clips in {folder} (set SLDATA_SHARED to the real-data folder)")
    idx = np.linspace(0, len(paths) - 1, num=min(n, len(paths))).round().astype(int)
    return [paths[i] for i in dict.fromkeys(idx.tolist())]


def timed(estimator: Any, frames: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
    """Keypoints, CPU seconds and wall seconds of ``estimator.estimate(frames)``."""
    cpu, wall = time.process_time(), time.perf_counter()
    kp = estimator.estimate(frames)
    return kp, time.process_time() - cpu, time.perf_counter() - wall


def run(paths: list[Path], frame_step: int, face: str, threads: int, precision: str = "f32") -> dict[str, Any]:
    """Compare both engines on ``paths``; the summary :func:`report` prints."""
    mediapipe = make_estimator("mediapipe", face=face)
    openvino = make_estimator("openvino", face=face, threads=threads, precision=precision)
    warm = list(ClipReader(paths[0], frame_step))
    mediapipe.estimate(warm)
    openvino.estimate(warm)
    parts: dict[str, PartParity] = {}
    cost = {"mediapipe": [0.0, 0.0], "openvino": [0.0, 0.0]}
    frames = 0
    for path in paths:
        reader = ClipReader(path, frame_step)
        clip = list(reader)
        if not clip:
            print(f"  {path.name}: no frame decoded, skipped")
            continue
        ref, cpu_ref, wall_ref = timed(mediapipe, clip)
        test, cpu_test, wall_test = timed(openvino, clip)
        cost["mediapipe"][0] += cpu_ref
        cost["mediapipe"][1] += wall_ref
        cost["openvino"][0] += cpu_test
        cost["openvino"][1] += wall_test
        frames += len(clip)
        height, width = clip[0].shape[:2]
        compare(ref, test, mediapipe.skeleton, width, height, into=parts)
        print(f"  {path.name}: {len(clip)} frames {width}x{height}, CPU-ms/frame mediapipe "
              f"{1000 * cpu_ref / len(clip):.1f}, openvino {1000 * cpu_test / len(clip):.1f}")
    speed = {name: {"cpu_ms_per_frame": 1000 * cpu / frames, "frames_per_s": frames / wall}
             for name, (cpu, wall) in cost.items()}
    return {"clips": len(paths), "frames": frames, "frame_step": frame_step, "face": face, "threads": threads,
            "precision": precision, "parity": {part: acc.summary() for part, acc in parts.items()}, "speed": speed,
            "cpu_ratio_openvino_over_mediapipe": speed["openvino"]["cpu_ms_per_frame"]
            / speed["mediapipe"]["cpu_ms_per_frame"],
            "load_avg_1min": os.getloadavg()[0]}


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def report(summary: dict[str, Any]) -> None:
    print(f"\n{summary['clips']} clips, {summary['frames']} keypoint frames (frame_step {summary['frame_step']}, "
          f"face {summary['face']}), openvino threads {summary['threads']} precision {summary['precision']}, load {summary['load_avg_1min']:.1f}")
    print("\nparity, openvino vs mediapipe (pixels at 256 px):")
    print(f"  {'part':<11} {'median':>7} {'p95':>7} {'present agree':>14} {'mediapipe':>10} {'openvino':>9}")
    for part, s in summary["parity"].items():
        print(f"  {part:<11} {_fmt(s['median_px'], '7.2f')} {_fmt(s['p95_px'], '7.2f')} "
              f"{_fmt(s['present_agreement'], '14.1%')} {_fmt(s['present_ref'], '10.1%')} "
              f"{_fmt(s['present_test'], '9.1%')}")
    print("\nspeed (estimate only, decoding excluded):")
    for name, s in summary["speed"].items():
        print(f"  {name:<10} {s['cpu_ms_per_frame']:6.1f} CPU-ms per keypoint frame, {s['frames_per_s']:6.1f} frames/s wall")
    print(f"  openvino / mediapipe CPU-ms per frame: {summary['cpu_ratio_openvino_over_mediapipe']:.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12, help="number of clips (default 12)")
    ap.add_argument("--videos", type=Path, default=None,
                    help="folder of .mp4 clips (default $SLDATA_SHARED/wlasl100_clips/videos)")
    ap.add_argument("--frame-step", type=int, default=2, help="keep every n-th frame (default 2, as params.yaml)")
    ap.add_argument("--face", default="subset", choices=("none", "subset", "full"))
    ap.add_argument("--threads", type=int, default=1, help="OpenVINO inference threads (default 1)")
    ap.add_argument("--precision", default="f32", choices=PRECISIONS, help="OpenVINO precision (default f32)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args(argv)
    folder = args.videos or shared_data_dir() / "wlasl100_clips" / "videos"
    paths = pick_clips(folder, args.clips)
    print(f"{len(paths)} clips from {folder}")
    summary = run(paths, args.frame_step, args.face, args.threads, args.precision)
    report(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
