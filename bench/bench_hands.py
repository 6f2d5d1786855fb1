"""The OpenVINO pose engine's hand second chance: hand-present rates before and after, on real clips.

On ``N`` real WLASL100 clips (``$SLDATA_SHARED/wlasl100_clips/videos``, default
``../shared/data``; clips spread evenly over the sorted file list, all 1,780 by default), every
clip is decoded once with the pose stage's reader (:class:`sldata.pose.extract.ClipReader`,
every ``--frame-step``-th frame as in params.yaml) and goes once through
:class:`sldata.pose.openvino_holistic.OpenVinoHolisticEstimator` with ``hand_second_chance=True``
(``--threads`` OpenVINO threads, default 1; ``--face``, default ``none``: the hands do not depend
on the face). The session records which hands the second chance added (and how: ``palm``,
palm detection around the pose wrist, or ``previous``, the previous frame's hand ROI); the
tracker's own hands are the rest, so one pass gives both numbers:

* hand-present rate per side and overall (hands / (2 x keypoint frames)), before (the tracker
  alone, what the engine gives with the option off) and after, and the hands added; and the
  share of keypoint frames with any hand, before and after;
* a false-hand proxy: of the added hands, the share on frames where the pose wrist is outside
  the frame (x or y outside [-0.02, 1.02]), outside the picture (the clip's non-black area:
  WLASL100 clips are letterboxed to 256x256; rows and columns whose brightest pixel over the
  clip is <= 12 are the bars; 0.02 margin) or has visibility < 0.5; the same shares of the
  tracker's hands for reference;
* a check that the "before" hands are the option-off output: on ``--verify-clips`` clips the
  engine runs again with the option off and the arrays must be equal;
* the extra CPU: on ``--timing-clips`` clips, CPU-ms per keypoint frame (``time.process_time``
  around ``estimate``, every thread, decoding excluded) with and without the option, both
  engines warmed on the first clip;
* optionally (``--mediapipe-pose DIR`` of ``shard-*.parquet`` from ``make all``'s pose stage),
  MediaPipe Holistic's hand-present rate on the same clips;
* optionally (``--list FILE``), a CSV of every added hand (clip, frame, side, how, pose wrist and
  the proxy flags) to pick overlays from (the frames are licensed data: keep overlays out of the
  repository).

Usage::

    python bench/bench_hands.py --clips 20                       # a quick look
    python bench/bench_hands.py --json bench/results/hands.json  # all 1,780 clips
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

from sldata.pose.extract import ClipReader  # noqa: E402
from sldata.pose.openvino_holistic import PRECISIONS, OpenVinoHolisticEstimator  # noqa: E402

SIDES = ("left_hand", "right_hand")
WRIST = {"left_hand": 15, "right_hand": 16}
"""Pose index of each side's wrist."""
FRAME_MARGIN = 0.02
LOW_VISIBILITY = 0.5
BLACK = 12
"""Rows and columns whose brightest pixel over a clip is at most this are letterbox bars."""


def shared_data_dir() -> Path:
    """The real-data folder: $SLDATA_SHARED, else ../shared/data beside the checkout."""
    return Path(os.environ.get("SLDATA_SHARED", REPO_ROOT.parent / "shared" / "data")).resolve()


def pick_clips(folder: Path, n: int | None) -> list[Path]:
    """``n`` clips spread evenly over the sorted ``*.mp4`` of ``folder`` (all when ``n`` is ``None``)."""
    paths = sorted(folder.glob("*.mp4"))
    if not paths:
        raise SystemExit(f"no .mp4 clips in {folder} (set SLDATA_SHARED to the real-data folder)")
    if n is None or n >= len(paths):
        return paths
    idx = np.linspace(0, len(paths) - 1, num=n).round().astype(int)
    return [paths[i] for i in dict.fromkeys(idx.tolist())]


def picture_rect(frames: list[np.ndarray]) -> tuple[float, float, float, float]:
    """The clip's non-black area ``(x0, y0, x1, y1)``, normalized: where the letterbox bars are not.

    Parameters
    ----------
    frames
        The clip's RGB uint8 frames.

    Returns
    -------
    tuple
        The bounds of the rows and columns whose brightest pixel over the clip is > :data:`BLACK`
        (the whole frame when none is).
    """
    stack = np.stack(frames)
    height, width = stack.shape[1:3]
    rows = np.flatnonzero(stack.max(axis=(0, 2, 3)) > BLACK)
    cols = np.flatnonzero(stack.max(axis=(0, 1, 3)) > BLACK)
    if rows.size == 0 or cols.size == 0:
        return 0.0, 0.0, 1.0, 1.0
    return cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height


def outside(point: np.ndarray, rect: tuple[float, float, float, float], margin: float = FRAME_MARGIN) -> bool:
    """Whether the normalized ``point`` lies outside ``rect`` widened by ``margin``."""
    x0, y0, x1, y1 = rect
    x, y = float(point[0]), float(point[1])
    return not (x0 - margin <= x <= x1 + margin and y0 - margin <= y <= y1 + margin)


def new_counts() -> dict[str, int]:
    """Zeroed counters of one side."""
    keys = ("before", "after", "added", "added_palm", "added_previous")
    proxies = ("outside_frame", "outside_picture", "low_visibility", "any")
    return {**dict.fromkeys(keys, 0), **{f"added_{p}": 0 for p in proxies}, **{f"tracker_{p}": 0 for p in proxies}}


def count_clip(kp: np.ndarray, recovered: list[dict[str, str]], picture: tuple[float, float, float, float],
               est: OpenVinoHolisticEstimator, into: dict[str, dict[str, int]],
               listed: list[dict[str, Any]] | None = None, clip_id: str = "") -> None:
    """Add one clip's hands to the per-side counters ``into``.

    Parameters
    ----------
    kp
        The clip's keypoints ``[T, P, 4]`` with the second chance on.
    recovered
        The session's ``recovered`` (one dict per frame: side -> how).
    picture
        :func:`picture_rect` of the clip.
    est
        The engine (for the part slices).
    into
        ``side -> counters`` (:func:`new_counts`), updated in place; its ``any_hand`` entry
        counts the frames with a hand before and after.
    listed
        When given, one row per added hand is appended (for ``--list``).
    clip_id
        The clip's name in those rows.
    """
    for t in range(len(kp)):
        found = [np.isfinite(kp[t, est._slices[side], 0]).any() for side in SIDES]
        into["any_hand"]["before"] += int(any(f and side not in recovered[t] for f, side in zip(found, SIDES)))
        into["any_hand"]["after"] += int(any(found))
        for side in SIDES:
            if not np.isfinite(kp[t, est._slices[side], 0]).any():
                continue
            c = into[side]
            c["after"] += 1
            how = recovered[t].get(side)
            who = "tracker" if how is None else "added"
            if how is None:
                c["before"] += 1
            else:
                c["added"] += 1
                c[f"added_{how}"] += 1
            wrist = kp[t, WRIST[side]]
            flags = {"outside_frame": outside(wrist, (0.0, 0.0, 1.0, 1.0)), "outside_picture": outside(wrist, picture),
                     "low_visibility": float(wrist[3]) < LOW_VISIBILITY}
            flags["any"] = any(flags.values())
            for name, flag in flags.items():
                c[f"{who}_{name}"] += int(flag)
            if listed is not None and how is not None:
                listed.append({"clip": clip_id, "frame": t, "side": side, "how": how, "wrist_x": float(wrist[0]),
                               "wrist_y": float(wrist[1]), "wrist_visibility": float(wrist[3]),
                               **{k: int(v) for k, v in flags.items()}})


def mediapipe_rates(folder: Path, video_ids: set[str]) -> dict[str, Any]:
    """MediaPipe Holistic's hand-present rates on ``video_ids`` from the pose shards in ``folder``.

    Clips are matched by ``sample_id`` (``wlasl-<video id>``); the counts are
    :func:`sldata.pose.summary.detection_counts` of the stored keypoints.
    """
    from sldata.pose.store import read_pose_shard
    from sldata.pose.summary import detection_counts

    shards = sorted(folder.glob("shard-*.parquet"))
    if not shards:
        raise SystemExit(f"no shard-*.parquet in {folder}")
    tot = {"clips": 0, "frames": 0, "left_hand": 0, "right_hand": 0, "any_hand": 0}
    for shard in shards:
        _, keypoints, skeleton = read_pose_shard(shard)
        for sample_id, kp in keypoints.items():
            if sample_id.removeprefix("wlasl-") not in video_ids:
                continue
            c = detection_counts(np.asarray(kp), skeleton)
            tot["clips"] += 1
            tot["frames"] += c["num_frames"]
            tot["left_hand"] += c["frames_with_left_hand"]
            tot["right_hand"] += c["frames_with_right_hand"]
            tot["any_hand"] += c["frames_with_any_hand"]
    frames = max(tot["frames"], 1)
    return {**tot, "shards": str(folder), "rate_left_hand": tot["left_hand"] / frames,
            "rate_right_hand": tot["right_hand"] / frames,
            "rate_overall": (tot["left_hand"] + tot["right_hand"]) / (2 * frames),
            "rate_any_hand": tot["any_hand"] / frames}


def timing(paths: list[Path], frame_step: int, face: str, threads: int, precision: str = "f32") -> dict[str, Any]:
    """CPU-ms per keypoint frame of ``estimate`` with and without the second chance, on ``paths``."""
    engines = {name: OpenVinoHolisticEstimator(face=face, threads=threads, precision=precision, hand_second_chance=on)
               for name, on in (("off", False), ("on", True))}
    clips = [list(ClipReader(p, frame_step)) for p in paths]
    clips = [c for c in clips if c]
    for est in engines.values():
        est.estimate(clips[0])  # warm
    cpu = dict.fromkeys(engines, 0.0)
    for clip in clips:
        for name, est in engines.items():
            start = time.process_time()
            est.estimate(clip)
            cpu[name] += time.process_time() - start
    frames = sum(len(c) for c in clips)
    ms = {name: 1000 * v / frames for name, v in cpu.items()}
    return {"clips": len(clips), "frames": frames, "cpu_ms_per_frame_off": ms["off"], "cpu_ms_per_frame_on": ms["on"],
            "extra_cpu_ms_per_frame": ms["on"] - ms["off"]}


def rates(counts: dict[str, dict[str, int]], frames: int) -> dict[str, Any]:
    """Per side and overall: present rates before / after, added hands and the false-hand proxies."""
    out: dict[str, Any] = {}
    total = {k: sum(c[k] for c in counts.values()) for k in counts[SIDES[0]]}
    for name, c, den in [*((s, counts[s], frames) for s in SIDES), ("overall", total, 2 * frames)]:
        row: dict[str, Any] = dict(c)
        row["rate_before"] = c["before"] / max(den, 1)
        row["rate_after"] = c["after"] / max(den, 1)
        for p in ("outside_frame", "outside_picture", "low_visibility", "any"):
            row[f"added_share_{p}"] = c[f"added_{p}"] / max(c["added"], 1)
            row[f"tracker_share_{p}"] = c[f"tracker_{p}"] / max(c["before"], 1)
        out[name] = row
    return out


def run(paths: list[Path], frame_step: int, face: str, threads: int, verify_clips: int,
        timing_clips: int, mediapipe_pose: Path | None = None,
        listed: list[dict[str, Any]] | None = None, precision: str = "f32") -> dict[str, Any]:
    """The whole bench on ``paths``; the summary :func:`report` prints (added hands go to ``listed``)."""
    compare = mediapipe_rates(mediapipe_pose, {p.stem for p in paths}) if mediapipe_pose is not None else None
    est = OpenVinoHolisticEstimator(face=face, threads=threads, precision=precision, hand_second_chance=True)
    off = OpenVinoHolisticEstimator(face=face, threads=threads, precision=precision) if verify_clips else None
    counts = {side: new_counts() for side in SIDES}
    counts["any_hand"] = {"before": 0, "after": 0}
    frames = body_frames = verified = 0
    mismatches: list[str] = []
    start = time.perf_counter()
    for i, path in enumerate(paths):
        clip = list(ClipReader(path, frame_step))
        if not clip:
            print(f"  {path.name}: no frame decoded, skipped")
            continue
        kp, recovered = est.estimate_with_recovered(clip)
        if off is not None and verified < verify_clips and i % max(1, len(paths) // verify_clips) == 0:
            same = np.array_equal(est.without_recovered(kp, recovered), off.estimate(clip), equal_nan=True)
            verified += 1
            if not same:
                mismatches.append(path.stem)
        count_clip(kp, recovered, picture_rect(clip), est, counts, listed, path.stem)
        frames += len(kp)
        body_frames += int(np.isfinite(kp[:, est._slices["body"], 0]).any(axis=1).sum())
        if (i + 1) % 50 == 0 or i + 1 == len(paths):
            added = sum(counts[side]["added"] for side in SIDES)
            print(f"  {i + 1}/{len(paths)} clips, {frames} frames, {added} hands added, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    summary: dict[str, Any] = {
        "clips": len(paths), "frames": frames, "frames_with_body": body_frames, "frame_step": frame_step,
        "face": face, "threads": threads, "precision": precision, "rates": rates({side: counts[side] for side in SIDES}, frames),
        "any_hand": {**counts["any_hand"], "rate_before": counts["any_hand"]["before"] / max(frames, 1),
                     "rate_after": counts["any_hand"]["after"] / max(frames, 1)},
        "verify": {"clips": verified, "equal": verified - len(mismatches), "mismatches": mismatches},
        "wall_s": time.perf_counter() - start}
    if timing_clips:
        summary["timing"] = timing(pick_clips(paths[0].parent, timing_clips), frame_step, face, threads, precision)
    if compare is not None:
        summary["mediapipe"] = compare
    summary["load_avg_1min"] = os.getloadavg()[0]
    return summary


def report(summary: dict[str, Any]) -> None:
    print(f"\n{summary['clips']} clips, {summary['frames']} keypoint frames (frame_step {summary['frame_step']}), "
          f"body on {summary['frames_with_body']}; face {summary['face']}, threads {summary['threads']}, "
          f"precision {summary.get('precision', 'f32')}")
    print(f"\n  {'hand':<11} {'before':>8} {'after':>8} {'added':>7} {'palm':>6} {'prev':>6} "
          f"{'out frame':>10} {'out pic':>8} {'low vis':>8}  (proxies: share of added | of tracker's)")
    for name, r in summary["rates"].items():
        proxies = " ".join(f"{r[f'added_share_{p}']:5.1%}|{r[f'tracker_share_{p}']:5.1%}"
                           for p in ("outside_frame", "outside_picture", "low_visibility"))
        print(f"  {name:<11} {r['rate_before']:8.1%} {r['rate_after']:8.1%} {r['added']:7d} {r['added_palm']:6d} "
              f"{r['added_previous']:6d}  {proxies}")
    a = summary["any_hand"]
    print(f"  frames with any hand: before {a['rate_before']:.1%}, after {a['rate_after']:.1%}")
    v = summary["verify"]
    print(f"\nbefore == option off: {v['equal']}/{v['clips']} clips equal"
          + (f" (differ: {', '.join(v['mismatches'])})" if v["mismatches"] else ""))
    if "timing" in summary:
        t = summary["timing"]
        print(f"CPU-ms per keypoint frame on {t['clips']} clips ({t['frames']} frames): off {t['cpu_ms_per_frame_off']:.1f}, "
              f"on {t['cpu_ms_per_frame_on']:.1f}, extra {t['extra_cpu_ms_per_frame']:.1f}")
    if "mediapipe" in summary:
        m = summary["mediapipe"]
        print(f"MediaPipe Holistic on the same {m['clips']} clips: left {m['rate_left_hand']:.1%}, "
              f"right {m['rate_right_hand']:.1%}, overall {m['rate_overall']:.1%}, any hand {m['rate_any_hand']:.1%}")
    print(f"wall {summary['wall_s']:.0f} s, load {summary['load_avg_1min']:.1f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=None, help="number of clips (default: all)")
    ap.add_argument("--videos", type=Path, default=None,
                    help="folder of .mp4 clips (default $SLDATA_SHARED/wlasl100_clips/videos)")
    ap.add_argument("--frame-step", type=int, default=2, help="keep every n-th frame (default 2, as params.yaml)")
    ap.add_argument("--face", default="none", choices=("none", "subset", "full"),
                    help="face points (default none: the hands do not depend on them)")
    ap.add_argument("--threads", type=int, default=1, help="OpenVINO inference threads (default 1)")
    ap.add_argument("--precision", default="mixed", choices=PRECISIONS,
                    help="the engine's precision (default mixed, as params.yaml's pose.openvino)")
    ap.add_argument("--verify-clips", type=int, default=5,
                    help="clips run again with the option off to check the 'before' hands (default 5)")
    ap.add_argument("--timing-clips", type=int, default=20,
                    help="clips timed with and without the option (default 20; 0 skips)")
    ap.add_argument("--mediapipe-pose", type=Path, default=None,
                    help="folder of make all's MediaPipe pose shards (shard-*.parquet) to compare with")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    ap.add_argument("--list", type=Path, default=None, help="write a CSV of every added hand here")
    args = ap.parse_args(argv)
    folder = args.videos or shared_data_dir() / "wlasl100_clips" / "videos"
    paths = pick_clips(folder, args.clips)
    print(f"{len(paths)} clips from {folder}")
    listed: list[dict[str, Any]] | None = [] if args.list else None
    summary = run(paths, args.frame_step, args.face, args.threads, args.verify_clips, args.timing_clips,
                  args.mediapipe_pose, listed, args.precision)
    report(summary)
    if args.list:
        import pandas as pd

        pd.DataFrame(listed).to_csv(args.list, index=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
