"""Command-line interface: ``python -m sldata <command> --help``.

Every pipeline stage is a command here. A stage command takes paths as flags and reads its
settings from the params file (``--params``, default ``params.yaml`` in the working directory),
validated once against the schema; ``--set key.sub=value`` overrides a value for one run.
Snakemake rules and DVC stages call the same commands, so a stage can also be run by hand.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sldata import __version__
from sldata.progress import LOG_DATEFMT, LOG_FORMAT
from sldata.params import add_params_arguments, params_from_args

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("sldata")

Handler = Callable[[argparse.Namespace], int]


def _cmd_check_params(args: argparse.Namespace) -> int:
    from sldata.params import load_params

    load_params(args.params, args.overrides)
    print(f"{args.params}: valid")
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    from sldata.manifest import build_manifest, format_report, write_manifest

    sources = params_from_args(args)["sources"]
    result = build_manifest(sources, args.raw_dir)
    report = write_manifest(result, args.out_dir)
    print(format_report(report))
    for reject in result.rejects.rejects[: args.show_rejects]:
        print(f"  rejected: {reject}")
    return 0


def _cmd_subset(args: argparse.Namespace) -> int:
    import pandas as pd

    from sldata.manifest import read_manifest
    from sldata.subsets import build_subset, write_subset

    subset = params_from_args(args)["subset"]
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


def shard_name(shard: int) -> str:
    """Folder/file stem of a shard: ``shard-003``."""
    return f"shard-{shard:03d}"


def parse_shards(text: str, count: int) -> list[int]:
    """``--shard`` value: one 0-based number, or ``all`` (DVC runs every shard in one stage), of ``count`` shards."""
    if count < 1:
        raise ValueError(f"shards.count must be >= 1, got {count}")
    if text == "all":
        return list(range(count))
    try:
        shard = int(text)
    except ValueError:
        raise ValueError(f"--shard must be a number or 'all', got {text!r}") from None
    if not 0 <= shard < count:
        raise ValueError(f"--shard {shard} is outside 0..{count - 1} (shards.count is {count})")
    return [shard]


def add_shard_arguments(p: argparse.ArgumentParser, clips_dir: bool = True) -> None:
    """``--params``/``--set``, ``--shard`` and ``--no-progress`` of a per-shard command (and ``--clips-dir``)."""
    add_params_arguments(p)
    if clips_dir:
        p.add_argument("--clips-dir", required=True, type=Path, help="acquire output root, e.g. data/clips")
    p.add_argument("--shard", required=True, help="shard number (0-based, of params shards.count) or 'all'")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def shard_clip_tables(args: argparse.Namespace, count: int) -> Iterator[tuple[str, pd.DataFrame]]:
    """``(shard name, its clips.parquet)`` for each shard ``--shard`` selects (of ``count``) under ``--clips-dir``."""
    import pandas as pd

    for shard in parse_shards(args.shard, count):
        name = shard_name(shard)
        yield name, pd.read_parquet(args.clips_dir / name / "clips.parquet")


def _cmd_acquire(args: argparse.Namespace) -> int:
    import pandas as pd

    from sldata.acquire.stage import AcquireSettings, acquire_shard

    params = params_from_args(args)
    count = params["shards"]["count"]
    settings = AcquireSettings.from_dict(params["acquire"])
    samples = pd.read_parquet(args.samples)
    for shard in parse_shards(args.shard, count):
        name = shard_name(shard)
        table = acquire_shard(samples, shard, count, args.out_dir / name, args.cache_dir / name, settings,
                              progress=not args.no_progress)
        usable = int((table["status"] == "usable").sum())
        print(f"{name} (of {count}): {usable}/{len(table)} clips usable")
        for (stage, reason), n in table[table["status"] != "usable"].groupby(["stage", "reason"]).size().items():
            print(f"  {n} failed at {stage}: {reason}")
    return 0


def _cmd_coverage(args: argparse.Namespace) -> int:
    from sldata.acquire.coverage import check_min_success_ratio
    from sldata.acquire.stage import coverage_from_clip_tables, coverage_metrics, read_clip_tables
    from sldata.atomic import atomic_open, write_json

    min_success_ratio = params_from_args(args)["acquire"]["min_success_ratio"]
    clips = read_clip_tables(args.clips)
    report = coverage_from_clip_tables(clips)
    text = report.to_string()
    print(text)
    write_json(args.metrics, {"min_success_ratio": min_success_ratio, "coverage": coverage_metrics(report)})
    with atomic_open(args.report) as fh:
        fh.write(text + "\n")
    check_min_success_ratio(report, min_success_ratio)
    return 0


def _cmd_pose(args: argparse.Namespace) -> int:
    from sldata.pose.extract import PoseSettings, extract_pose_shard

    params = params_from_args(args)
    settings = PoseSettings.from_dict(params["pose"])
    for name, clips in shard_clip_tables(args, params["shards"]["count"]):
        summary = extract_pose_shard(clips, args.out_dir / f"{name}.parquet", settings, progress=not args.no_progress,
                                     cache_dir=args.cache_dir)
        print(f"{name}: {summary['clips']} clips, {summary['frames']} frames "
              f"({summary['frames_per_s']:.1f} frames/s); by status: {summary['by_status']}")
        print(f"{name}: {summary['reused']} reused, {summary['processed']} extracted, {summary['resumed']} resumed")
    return 0


def _cmd_pack_pose(args: argparse.Namespace) -> int:
    import pandas as pd

    from sldata.pose.store import pack_pose_arrays

    count = params_from_args(args)["shards"]["count"]
    shards = [args.pose_dir / f"{shard_name(i)}.parquet" for i in range(count)]
    samples = pd.read_parquet(args.samples)
    summary = pack_pose_arrays(shards, samples, args.out_dir)
    print(f"packed {summary['clips']} clips, {summary['frames']} frames x {summary['points']} points into {args.out_dir}")
    for status, n in sorted(summary["not_ok"].items()):
        print(f"  not packed: {n} clip(s) with pose status {status}")
    if summary["missing"]:
        print(f"  not packed: {summary['missing']} sample(s) in no pose shard")
    return 0


def _cmd_frames(args: argparse.Namespace) -> int:
    from sldata.frames import FrameSettings, extract_frames_shard

    params = params_from_args(args)
    section = dict(params["frames"])
    workers = section.pop("workers")
    settings = FrameSettings.from_dict(section)
    for name, clips in shard_clip_tables(args, params["shards"]["count"]):
        summary = extract_frames_shard(clips, args.out_dir / name, settings, progress=not args.no_progress,
                                       workers=workers)
        print(f"{name}: {summary['n_ok']} clips with frames, {summary['n_failed']} failed, {summary['n_skipped']} "
              f"skipped; {summary['n_frames']} frames ({summary['frames_per_s']:.0f} frames/s, "
              f"{summary['bytes_per_frame']:.0f} bytes/frame, {settings.storage})")
    return 0


def _cmd_hand_crops(args: argparse.Namespace) -> int:
    from sldata.pose.handcrop_stage import HandCropStageSettings, hand_crops_shard

    params = params_from_args(args)
    settings = HandCropStageSettings.from_dict(params["hand_crops"])
    for name, clips in shard_clip_tables(args, params["shards"]["count"]):
        summary = hand_crops_shard(clips, args.pose_dir / f"{name}.parquet", args.out_dir / name, settings,
                                   progress=not args.no_progress)
        print(f"{name}: {summary['n_ok']} clips cropped, {summary['n_failed']} failed, {summary['n_skipped']} skipped; "
              f"{summary['n_frames']} frames x 2 hands (frame_step {summary['frame_step']}, "
              f"{summary['frames_per_s']:.1f} frames/s); left hand located in {summary['left_located']}, "
              f"right in {summary['right_located']} clips")
    return 0


def pose_summary_table(pose_paths: Sequence[Path], clips_paths: Sequence[Path]) -> pd.DataFrame:
    """One row per clip of the pose shards with its split (from the clip tables) and detection counts.

    The counts are the shards' own, plus ``frames_with_any_hand`` computed from the keypoints
    (so the summary's ``any_hand_rate`` is exact). Raises ``ValueError`` naming clips of a pose
    shard that no clip table lists.
    """
    import pandas as pd

    from sldata.pose.store import read_pose_shard
    from sldata.pose.summary import detection_counts

    splits = pd.concat([pd.read_parquet(p, columns=["sample_id", "split"]) for p in clips_paths], ignore_index=True)
    split_of = dict(zip(splits["sample_id"].astype(str), splits["split"].astype(str)))
    tables = []
    for path in pose_paths:
        clips, keypoints, skeleton = read_pose_shard(path)
        clips = clips[["sample_id", "status", "num_frames", "frames_with_body", "frames_with_left_hand",
                       "frames_with_right_hand"]].copy()
        clips["sample_id"] = clips["sample_id"].astype(str)
        clips["frames_with_any_hand"] = [detection_counts(keypoints[s], skeleton)["frames_with_any_hand"]
                                         if s in keypoints else 0 for s in clips["sample_id"]]
        missing = [s for s in clips["sample_id"] if s not in split_of]
        if missing:
            raise ValueError(f"{path}: {len(missing)} clip(s) are in no clip table, e.g. {missing[:5]}")
        clips.insert(1, "split", [split_of[s] for s in clips["sample_id"]])
        tables.append(clips)
    table = pd.concat(tables, ignore_index=True)
    for col in ("num_frames", "frames_with_body", "frames_with_left_hand", "frames_with_right_hand"):
        table[col] = table[col].astype("int64")
    return table


def _cmd_pose_summary(args: argparse.Namespace) -> int:
    from sldata.pose.summary import write_summary

    names = [shard_name(i) for i in range(params_from_args(args)["shards"]["count"])]
    table = pose_summary_table([args.pose_dir / f"{n}.parquet" for n in names],
                               [args.clips_dir / n / "clips.parquet" for n in names])
    summary = write_summary(table, args.out_dir)
    cols = ["split", "clips", "clips_ok", "clips_no_person", "clips_failed", "clips_skipped", "frames",
            "body_rate", "left_hand_rate", "right_hand_rate", "any_hand_rate"]
    print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.out_dir / 'summary.csv'}, summary.json and summary.png")
    return 0


def find_clip(clips_dir: Path, sample_id: str) -> Path:
    """The clip file of ``sample_id``, looked up in every ``clips_dir/shard-*/clips.parquet``.

    ``clip_path`` is stored relative to where the pipeline ran (the repository root); when it
    does not exist from here, the shard's ``videos/`` folder beside ``clips.parquet`` is tried.
    """
    import pandas as pd

    tables = sorted(clips_dir.glob("shard-*/clips.parquet"))
    if not tables:
        raise FileNotFoundError(f"no shard-*/clips.parquet under {clips_dir}")
    for table in tables:
        clips = pd.read_parquet(table, columns=["sample_id", "clip_path", "status"])
        rows = clips[clips["sample_id"].astype(str) == sample_id]
        if rows.empty:
            continue
        path = rows["clip_path"].iloc[0]
        if path is None or (isinstance(path, float) and path != path):
            raise ValueError(f"{sample_id} has no clip (status {rows['status'].iloc[0]!r} in {table})")
        for candidate in (Path(str(path)), table.parent / "videos" / Path(str(path)).name):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{sample_id}: clip {path} (listed in {table}) not found")
    raise ValueError(f"{sample_id} is in none of the {len(tables)} clip tables under {clips_dir}")


def _cmd_render_pose(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from sldata.pose.render import render_overlay
    from sldata.pose.store import read_pose_settings, read_skeleton, table_keypoints

    skeleton = read_skeleton(args.pose_shard)
    frame_step = int(read_pose_settings(args.pose_shard).get("frame_step", 1))
    table = pq.read_table(args.pose_shard, filters=[("sample_id", "=", args.sample_id)])
    if table.num_rows == 0:
        raise ValueError(f"{args.sample_id} is not in {args.pose_shard}")
    row = table.slice(0, 1).to_pylist()[0]
    (kp,) = table_keypoints(table, skeleton.num_points)
    if kp is None or not len(kp):
        raise ValueError(f"{args.sample_id} has no keypoints in {args.pose_shard} (status {row['status']!r}: "
                         f"{row['reason'] or row['detail'] or 'no detail'})")
    clip = find_clip(args.clips_dir, args.sample_id)
    n = render_overlay(clip, kp, skeleton, args.out, fps=args.fps, max_frames=args.max_frames,
                       min_confidence=args.min_confidence, frame_step=frame_step)
    print(f"{args.out}: drew {n} of {len(kp)} keypoint frames over {clip} (frame_step {frame_step}, "
          f"as the pose stage)")
    return 0


def _cmd_example_clip(args: argparse.Namespace) -> int:
    from sldata.example import main_example

    return main_example(args, params_from_args(args)["shards"]["count"])


def _cmd_convert_pose(args: argparse.Namespace) -> int:
    from sldata.pose.store import convert_pose_shard

    if args.src.is_dir():
        pairs = [(src, args.dst / src.name) for src in sorted(args.src.glob("*.parquet"))]
        if not pairs:
            raise ValueError(f"no *.parquet in {args.src}")
    else:
        pairs = [(args.src, args.dst / args.src.name if args.dst.is_dir() else args.dst)]
    for src, dst in pairs:
        r = convert_pose_shard(src, dst, args.storage)
        print(f"{src} ({r['from']}, {r['bytes_before']:,} bytes) -> {dst} ({r['to']}, {r['bytes_after']:,} bytes, "
              f"{r['bytes_before'] / r['bytes_after']:.2f}x smaller), {r['clips']} clips")
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

    p = sub.add_parser("check-params", help="validate params.yaml (with any --set) and explain any error by key")
    add_params_arguments(p)
    p.set_defaults(handler=_cmd_check_params)

    p = sub.add_parser(
        "manifest",
        help="read WLASL / MS-ASL annotations into manifest.parquet, rejects.parquet and report.json",
        description="Reads the enabled annotation sources (params: sources) and writes the canonical manifest.",
    )
    add_params_arguments(p)
    p.add_argument("--out-dir", required=True, type=Path, help="output folder, e.g. data/manifest")
    p.add_argument("--raw-dir", required=True, type=Path, help="where a fetched annotation is kept, e.g. data/raw")
    p.add_argument("--show-rejects", type=int, default=20, metavar="N", help="print the first N rejects (default 20)")
    p.set_defaults(handler=_cmd_manifest)

    p = sub.add_parser(
        "subset",
        help="select a top-k or explicit class subset (optionally signer-independent) with its label map",
        description="Builds a class subset from a manifest (params: subset).",
    )
    add_params_arguments(p)
    p.add_argument("--manifest", required=True, type=Path, help="manifest.parquet from the manifest stage")
    p.add_argument("--out-dir", required=True, type=Path, help="output folder, e.g. data/subset")
    p.set_defaults(handler=_cmd_subset)

    p = sub.add_parser(
        "acquire",
        help="one shard: download (or take from the local store), clean crops, trim, mask captions",
        description="Acquires the clips of one shard of the subset (params: shards.count, acquire.*) into "
        "OUT_DIR/videos, with OUT_DIR/clips.parquet saying for every clip whether it is usable and, if not, why. "
        "Downloads and the download ledger stay in CACHE_DIR between runs.",
    )
    p.add_argument("--samples", required=True, type=Path, help="samples.parquet from the subset stage")
    add_shard_arguments(p, clips_dir=False)
    p.add_argument("--out-dir", required=True, type=Path, help="output root, e.g. data/clips (shards go to OUT_DIR/shard-NNN)")
    p.add_argument("--cache-dir", required=True, type=Path, help="download cache root, e.g. data/cache/sources")
    p.set_defaults(handler=_cmd_acquire)

    p = sub.add_parser(
        "coverage",
        help="coverage report over all shards (usable clips per dataset/split, and why the rest are not)",
        description="Prints the coverage report, writes it as a DVC metric and fails when the overall usable "
        "fraction is below params acquire.min_success_ratio.",
    )
    add_params_arguments(p)
    p.add_argument("--clips", required=True, nargs="+", type=Path, help="clips.parquet of every shard")
    p.add_argument("--metrics", required=True, type=Path, help="JSON metrics output, e.g. data/clips/coverage.json")
    p.add_argument("--report", required=True, type=Path, help="text report output, e.g. data/clips/coverage.txt")
    p.set_defaults(handler=_cmd_coverage)

    p = sub.add_parser(
        "pose",
        help="one shard: Holistic keypoints (pose.estimator's engine) of every usable clip into a Parquet shard",
        description="Runs pose estimation (params: pose.*) over the usable clips of CLIPS_DIR/shard-NNN/clips.parquet "
        "and writes OUT_DIR/shard-NNN.parquet (one row per clip, skeleton in the file metadata). Resumable: a killed "
        "run continues from its last checkpoint.",
    )
    add_shard_arguments(p)
    p.add_argument("--out-dir", required=True, type=Path, help="output folder, e.g. data/pose")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="keep a copy of each finished shard here (e.g. data/cache/pose) and reuse the rows of "
                   "unchanged clips on a rerun, extracting only new or changed clips; default: no reuse")
    p.set_defaults(handler=_cmd_pose)

    p = sub.add_parser(
        "pack-pose",
        help="pack the pose shards' usable clips into one memory-mappable keypoints.npy + index for training",
        description="Concatenates the keypoints of every clip with pose status ok (all splits, all points) into "
        "OUT_DIR/keypoints.npy [frames, points, 4] with OUT_DIR/index.parquet (offset/length per clip) and "
        "OUT_DIR/skeleton.json.",
    )
    add_params_arguments(p)
    p.add_argument("--pose-dir", required=True, type=Path, help="pose shards folder (params shards.count of them)")
    p.add_argument("--samples", required=True, type=Path, help="samples.parquet from the subset stage")
    p.add_argument("--out-dir", required=True, type=Path, help="output folder, e.g. data/features/pose")
    p.set_defaults(handler=_cmd_pack_pose)

    p = sub.add_parser(
        "frames",
        help="one shard: decode, sample and resize the usable clips' RGB frames into one array (for RGB models)",
        description="Extracts the frames of the usable clips of CLIPS_DIR/shard-NNN/clips.parquet (params: frames.*) "
        "into OUT_DIR/shard-NNN/ (frames.npy or frames.parquet, with index.parquet giving each clip's offset and "
        "length; see sldata/frames.py).",
    )
    add_shard_arguments(p)
    p.add_argument("--out-dir", required=True, type=Path, help="output root, e.g. data/frames")
    p.set_defaults(handler=_cmd_frames)

    p = sub.add_parser(
        "hand-crops",
        help="one shard: crop both hands of every keypoint frame, located from the pose (ChaLearn 2021 geometry)",
        description="Decodes the usable clips of CLIPS_DIR/shard-NNN with the pose stage's frame_step (from "
        "POSE_DIR/shard-NNN.parquet), locates square hand boxes from wrist, elbow and shoulder width "
        "(params: hand_crops.*) and writes OUT_DIR/shard-NNN/ (crops.npy [frames, 2, S, S, 3] or crops.parquet, "
        "boxes.npy, index.parquet; see sldata/pose/handcrop_stage.py).",
    )
    add_shard_arguments(p)
    p.add_argument("--pose-dir", required=True, type=Path, help="pose shards folder, e.g. data/pose")
    p.add_argument("--out-dir", required=True, type=Path, help="output root, e.g. data/hand_crops")
    p.set_defaults(handler=_cmd_hand_crops)

    p = sub.add_parser(
        "pose-summary",
        help="per-split pose summary (clips by status, frames, body/hand detection rates) as CSV, JSON metric and PNG",
        description="Joins every pose shard's clip table with the split from the clip tables and writes "
        "OUT_DIR/summary.csv, OUT_DIR/summary.json ({split: {metric: value}}, a DVC metric) and OUT_DIR/summary.png "
        "(frames per clip, detection rates; see sldata/pose/summary.py).",
    )
    add_params_arguments(p)
    p.add_argument("--pose-dir", required=True, type=Path, help="pose shards folder, e.g. data/pose")
    p.add_argument("--clips-dir", required=True, type=Path, help="acquire output root, e.g. data/clips")
    p.add_argument("--out-dir", required=True, type=Path, help="output folder, e.g. data/pose_summary")
    p.set_defaults(handler=_cmd_pose_summary)

    p = sub.add_parser(
        "render-pose",
        help="draw one clip's keypoints over its video (MP4 or GIF) to look at them",
        description="Finds SAMPLE_ID in the pose shard and its clip through the clip tables under CLIPS_DIR, and "
        "writes the clip with the skeleton drawn on it. Only the frames that have keypoints are drawn (the pose "
        "stage's frame_step, read from the shard), at the clip's speed.",
    )
    p.add_argument("--pose-shard", required=True, type=Path, help="a pose shard, e.g. data/pose/shard-000.parquet")
    p.add_argument("--sample-id", required=True, help="the clip, e.g. wlasl-00632")
    p.add_argument("--clips-dir", type=Path, default=Path("data/clips"),
                   help="acquire output root holding shard-*/clips.parquet (default data/clips)")
    p.add_argument("--out", required=True, type=Path,
                   help="output file: .mp4 (H.264), .gif, or .png (a still of four frames side by side)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the clip's / frame_step)")
    p.add_argument("--max-frames", type=int, default=None, help="render at most this many frames")
    p.add_argument("--min-confidence", type=float, default=0.0, help="hide points below this confidence (default 0)")
    p.set_defaults(handler=_cmd_render_pose)

    p = sub.add_parser(
        "example-clip",
        help="pick a held-out (val) clip with keypoints: copy it, draw its pose overlay (PNG), say what it shows",
        description="Picks the first usable val clip (by sample_id) that has keypoints (test, then train, when val has "
        "none) and writes OUT_DIR/clip.mp4, overlay.png, example.json and example.txt (see sldata/example.py). "
        "The pipeline's predict_example rule then recognizes clip.mp4 with the exported model.",
    )
    add_params_arguments(p)
    p.add_argument("--clips-dir", required=True, type=Path, help="acquire output root, e.g. data/clips")
    p.add_argument("--pose-dir", required=True, type=Path, help="pose shards folder, e.g. data/pose")
    p.add_argument("--out-dir", required=True, type=Path, help="output folder, e.g. data/example")
    p.set_defaults(handler=_cmd_example_clip)

    p = sub.add_parser(
        "convert-pose",
        help="rewrite pose shards in another keypoint storage (float32 | compact) without rerunning pose",
        description="Rewrites a pose shard (or every *.parquet of a folder) with its keypoints stored as STORAGE: "
        "float32 (lossless) or compact (int32 fixed point at 2^-14 of the frame, see sldata/pose/store.py). Other "
        "columns and the skeleton metadata are kept; writes are atomic, so DST may be SRC. compact -> float32 keeps "
        "the rounding.",
    )
    p.add_argument("--storage", required=True, choices=["float32", "compact"], help="keypoint storage to write")
    p.add_argument("src", type=Path, help="a pose shard, or a folder of them (e.g. data/pose)")
    p.add_argument("dst", type=Path, help="output shard, or folder (created) when SRC is a folder")
    p.set_defaults(handler=_cmd_convert_pose)

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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT, datefmt=LOG_DATEFMT)
    try:
        return int(args.handler(args))
    except (ValueError, RuntimeError, OSError) as exc:
        # Known failure modes (bad params, bad annotation files, fetch errors) carry a message
        # that names the key/file at fault; print it without a traceback.
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
