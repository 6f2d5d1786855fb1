"""The example stage: one held-out clip of the subset, to see the whole path end to end.

:func:`make_example` picks a clip the model was not trained on, the first (by ``sample_id``)
usable ``val`` clip whose pose row has keypoints (``test`` when val has none; a ``train`` clip,
said so, only when neither has one), and writes to ``out_dir``:

* ``clip.mp4``: a copy of the clip (what ``predict_example`` recognizes with the exported model);
* ``overlay.png``: its keypoints drawn over four of its frames (:mod:`sldata.pose.render`);
* ``example.json``: the clip's ``sample_id``, split, gloss and label, source and keypoint frames;
* ``example.txt``: the same in one line for people (``make demo`` prints it).

Every file is written atomically. Nothing here chooses by the model's answer: the clip is fixed
by the subset and the pose shards alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from sldata.atomic import atomic_open, atomic_path, write_json
from sldata.pose.render import render_contact_sheet
from sldata.pose.store import read_pose_settings, read_skeleton, table_keypoints

SPLIT_ORDER = ("val", "test", "train")
"""Splits searched for the example, held-out ones first."""
USABLE = "usable"


class ExampleError(ValueError):
    """No clip of the subset can serve as the example (the message says why)."""


def _shard(i: int) -> str:
    return f"shard-{i:03d}"


def _clip_file(table: Path, clip_path: Any) -> Path | None:
    """The clip file of a clip-table row: its recorded path, else the shard's ``videos/`` folder."""
    if clip_path is None or (isinstance(clip_path, float) and clip_path != clip_path):
        return None
    for candidate in (Path(str(clip_path)), table.parent / "videos" / Path(str(clip_path)).name):
        if candidate.is_file():
            return candidate
    return None


def candidates(clips_dir: str | os.PathLike[str], pose_dir: str | os.PathLike[str], shards: int) -> pd.DataFrame:
    """Usable clips that have keypoints: ``sample_id, split, gloss, label, shard, clip_file, frames``."""
    rows = []
    for i in range(shards):
        table = Path(clips_dir) / _shard(i) / "clips.parquet"
        pose = Path(pose_dir) / f"{_shard(i)}.parquet"
        clips = pd.read_parquet(table, columns=["sample_id", "split", "gloss", "label", "status", "clip_path"])
        status = pd.read_parquet(pose, columns=["sample_id", "status", "num_frames"]).set_index("sample_id")
        for rec in clips[clips["status"].astype(str) == USABLE].to_dict("records"):
            sid = str(rec["sample_id"])
            if sid not in status.index or status.at[sid, "status"] != "ok" or not status.at[sid, "num_frames"]:
                continue
            clip = _clip_file(table, rec["clip_path"])
            if clip is not None:
                rows.append({"sample_id": sid, "split": str(rec["split"]), "gloss": str(rec["gloss"]),
                             "label": int(rec["label"]), "shard": i, "clip_file": str(clip),
                             "frames": int(status.at[sid, "num_frames"])})
    return pd.DataFrame(rows, columns=["sample_id", "split", "gloss", "label", "shard", "clip_file", "frames"])


def pick(found: pd.DataFrame) -> dict[str, Any]:
    """The example among :func:`candidates`: the first clip by ``sample_id`` of the first split of
    :data:`SPLIT_ORDER` that has one."""
    for split in SPLIT_ORDER:
        rows = found[found["split"] == split].sort_values("sample_id")
        if len(rows):
            return dict(rows.iloc[0])
    raise ExampleError("no usable clip with keypoints in any split: nothing to show (see the coverage and "
                       "pose summary reports)")


def make_example(clips_dir: str | os.PathLike[str], pose_dir: str | os.PathLike[str], shards: int,
                 out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Pick the example clip and write ``out_dir``'s files (see the module docs); returns ``example.json``.

    Parameters
    ----------
    clips_dir
        The acquire stage's output (``shard-NNN/clips.parquet`` and ``videos/``).
    pose_dir
        The pose stage's output (``shard-NNN.parquet``).
    shards
        ``shards.count``.
    out_dir
        Where the example goes (created).
    """
    chosen = pick(candidates(clips_dir, pose_dir, shards))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shard_file = Path(pose_dir) / f"{_shard(int(chosen['shard']))}.parquet"
    skeleton = read_skeleton(shard_file)
    frame_step = int(read_pose_settings(shard_file).get("frame_step", 1))
    table = pq.read_table(shard_file, filters=[("sample_id", "=", chosen["sample_id"])])
    (keypoints,) = table_keypoints(table, skeleton.num_points)
    with atomic_path(out / "clip.mp4") as tmp:
        shutil.copyfile(chosen["clip_file"], tmp)
    drawn = render_contact_sheet(chosen["clip_file"], keypoints, skeleton, out / "overlay.png", frame_step=frame_step)
    held_out = chosen["split"] != "train"
    info = {"sample_id": str(chosen["sample_id"]), "split": str(chosen["split"]), "held_out": bool(held_out),
            "gloss": str(chosen["gloss"]), "label": int(chosen["label"]), "source": str(chosen["clip_file"]),
            "keypoint_frames": int(chosen["frames"]), "frame_step": frame_step, "overlay_frames": int(drawn)}
    write_json(out / "example.json", info)
    kind = f"held-out {chosen['split']} clip" if held_out else "train clip (no held-out clip has keypoints)"
    with atomic_open(out / "example.txt") as fh:
        fh.write(f"{kind} {chosen['sample_id']}, signed gloss: {chosen['gloss']}; "
                 f"pose overlay: {out / 'overlay.png'}\n")
    return info


def main_example(args: Any, shards: int) -> int:
    """CLI: ``python -m sldata example-clip`` over ``shards`` shards (params ``shards.count``)."""
    info = make_example(args.clips_dir, args.pose_dir, shards, args.out_dir)
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0
