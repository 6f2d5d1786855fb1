"""Per-dataset pose summary: how many clips have keypoints and how often each part was detected.

Input is a clip table with one row per clip, the per-clip columns pose shards store
(:mod:`sldata.pose.store`) plus the clip's split:

``sample_id, split, status, num_frames, frames_with_body, frames_with_left_hand,
frames_with_right_hand`` and optionally ``frames_with_any_hand`` (frames where at least one hand
was detected; :func:`detection_counts` computes all four from a keypoint array).

Output (:func:`pose_summary`) has one row per split (``train``, ``val``, ``test``, then any
others alphabetically) and a last row ``ALL``:

* ``clips`` and, by status, ``clips_ok``, ``clips_no_person``, ``clips_failed``,
  ``clips_skipped`` (``skipped_unusable_clip``);
* over the clips that have keypoints (``ok`` and ``no_person``): ``frames`` (total),
  ``frames_per_clip_mean``/``_median``/``_min``/``_max``;
* frame-weighted detection rates over those frames: ``body_rate``, ``left_hand_rate``,
  ``right_hand_rate`` and ``any_hand_rate``. ``any_hand_rate`` needs ``frames_with_any_hand``
  (NaN without it); ``any_hand_rate_min``/``_max`` always bound it from the per-clip counts
  (``max(left, right)`` .. ``min(frames, left + right)``) and equal it when it is known.

Rates and frame statistics of a group without frames are NaN (``null`` in JSON).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sldata.atomic import atomic_open, atomic_path, write_json
from sldata.pose.skeleton import Skeleton, present

ALL = "ALL"
SPLIT_ORDER: tuple[str, ...] = ("train", "val", "test")
STATUS_COLUMNS: dict[str, str] = {
    "ok": "clips_ok",
    "no_person": "clips_no_person",
    "failed": "clips_failed",
    "skipped_unusable_clip": "clips_skipped",
}
"""Clip status -> summary column counting it."""
WITH_KEYPOINTS: tuple[str, ...] = ("ok", "no_person")
COUNT_COLUMNS: tuple[str, ...] = ("frames_with_body", "frames_with_left_hand", "frames_with_right_hand")
REQUIRED_COLUMNS: tuple[str, ...] = ("sample_id", "split", "status", "num_frames") + COUNT_COLUMNS
ANY_HAND = "frames_with_any_hand"
SUMMARY_COLUMNS: tuple[str, ...] = (
    "split", "clips", "clips_ok", "clips_no_person", "clips_failed", "clips_skipped", "frames",
    "frames_per_clip_mean", "frames_per_clip_median", "frames_per_clip_min", "frames_per_clip_max",
    "body_rate", "left_hand_rate", "right_hand_rate", "any_hand_rate", "any_hand_rate_min", "any_hand_rate_max",
)

INT_COLUMNS: frozenset[str] = frozenset({"clips", *STATUS_COLUMNS.values(), "frames", "frames_per_clip_min",
                                         "frames_per_clip_max"})
"""Summary columns holding counts (written as integers in JSON)."""


def detection_counts(keypoints: np.ndarray, skeleton: Skeleton) -> dict[str, int]:
    """Frames of one clip where the body, each hand and any hand have at least one detected point.

    Parameters
    ----------
    keypoints
        ``[T, P, 4]`` laid out as ``skeleton``.
    skeleton
        Layout of ``keypoints``.

    Returns
    -------
    dict
        ``num_frames``, ``frames_with_body``, ``frames_with_left_hand``, ``frames_with_right_hand``,
        ``frames_with_any_hand``.
    """
    if keypoints.ndim != 3 or keypoints.shape[1:] != (skeleton.num_points, 4):
        raise ValueError(f"keypoints must have shape [frames, {skeleton.num_points}, 4], got {keypoints.shape}")
    seen = present(keypoints)
    body, left, right = (seen[:, skeleton.part_slice(p)].any(1) for p in ("body", "left_hand", "right_hand"))
    return {"num_frames": int(len(keypoints)), "frames_with_body": int(body.sum()),
            "frames_with_left_hand": int(left.sum()), "frames_with_right_hand": int(right.sum()),
            "frames_with_any_hand": int((left | right).sum())}


def _check(clips: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in clips.columns]
    if missing:
        raise ValueError(f"clip table lacks column(s) {missing}; it has {list(clips.columns)}")
    unknown = sorted(set(clips["status"].astype(str)) - set(STATUS_COLUMNS))
    if unknown:
        raise ValueError(f"unknown clip status(es) {unknown}; expected {list(STATUS_COLUMNS)}")
    if clips["split"].isna().any():
        ids = clips.loc[clips["split"].isna(), "sample_id"].head(5).tolist()
        raise ValueError(f"{int(clips['split'].isna().sum())} clip(s) have no split, e.g. {ids}")
    counts = ["num_frames", *COUNT_COLUMNS, *([ANY_HAND] if ANY_HAND in clips.columns else [])]
    df = clips.copy()
    for c in counts:
        if df[c].isna().any():
            raise ValueError(f"column {c} has missing values, e.g. for {df.loc[df[c].isna(), 'sample_id'].head(5).tolist()}")
        df[c] = df[c].astype(np.int64)
        if (df[c] < 0).any():
            raise ValueError(f"column {c} has negative counts, e.g. for {df.loc[df[c] < 0, 'sample_id'].head(5).tolist()}")
        if c != "num_frames" and (df[c] > df["num_frames"]).any():
            bad = df.loc[df[c] > df["num_frames"], "sample_id"].head(5).tolist()
            raise ValueError(f"column {c} exceeds num_frames for clip(s) {bad}")
    if ANY_HAND in df.columns:
        lo = np.maximum(df["frames_with_left_hand"], df["frames_with_right_hand"])
        hi = np.minimum(df["num_frames"], df["frames_with_left_hand"] + df["frames_with_right_hand"])
        bad = df.loc[(df[ANY_HAND] < lo) | (df[ANY_HAND] > hi), "sample_id"].head(5).tolist()
        if bad:
            raise ValueError(f"{ANY_HAND} is inconsistent with the left/right hand counts for clip(s) {bad}")
    df["split"] = df["split"].astype(str)
    df["status"] = df["status"].astype(str)
    return df


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def _group_row(name: str, g: pd.DataFrame) -> dict[str, Any]:
    row: dict[str, Any] = {"split": name, "clips": int(len(g))}
    for status, col in STATUS_COLUMNS.items():
        row[col] = int((g["status"] == status).sum())
    k = g[g["status"].isin(WITH_KEYPOINTS)]
    nf = k["num_frames"]
    total = int(nf.sum())
    row["frames"] = total
    row["frames_per_clip_mean"] = float(nf.mean()) if len(k) else math.nan
    row["frames_per_clip_median"] = float(nf.median()) if len(k) else math.nan
    row["frames_per_clip_min"] = int(nf.min()) if len(k) else math.nan
    row["frames_per_clip_max"] = int(nf.max()) if len(k) else math.nan
    left, right = k["frames_with_left_hand"], k["frames_with_right_hand"]
    row["body_rate"] = _ratio(k["frames_with_body"].sum(), total)
    row["left_hand_rate"] = _ratio(left.sum(), total)
    row["right_hand_rate"] = _ratio(right.sum(), total)
    if ANY_HAND in k.columns:
        row["any_hand_rate"] = row["any_hand_rate_min"] = row["any_hand_rate_max"] = _ratio(k[ANY_HAND].sum(), total)
    else:
        row["any_hand_rate"] = math.nan
        row["any_hand_rate_min"] = _ratio(np.maximum(left, right).sum(), total)
        row["any_hand_rate_max"] = _ratio(np.minimum(nf, left + right).sum(), total)
    return row


def pose_summary(clips: pd.DataFrame) -> pd.DataFrame:
    """Summarize a clip table per split and overall.

    Parameters
    ----------
    clips
        One row per clip with :data:`REQUIRED_COLUMNS` (and optionally ``frames_with_any_hand``).

    Returns
    -------
    pandas.DataFrame
        :data:`SUMMARY_COLUMNS`, one row per split then ``ALL``; see the module docstring.

    Raises
    ------
    ValueError
        If a column is missing, a status is unknown, a clip has no split, or counts are
        negative or larger than ``num_frames``.
    """
    df = _check(clips)
    splits = list(df["split"].unique())
    order = [s for s in SPLIT_ORDER if s in splits] + sorted(s for s in splits if s not in SPLIT_ORDER)
    rows = [_group_row(s, df[df["split"] == s]) for s in order] + [_group_row(ALL, df)]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def summary_metrics(summary: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``{split: {column: value}}`` with NaN as ``None`` (valid JSON, e.g. for ``dvc metrics``)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in summary.to_dict("records"):
        split = str(rec.pop("split"))
        out[split] = {k: (None if math.isnan(float(v)) else int(v) if k in INT_COLUMNS else float(v))
                      for k, v in rec.items()}
    return out


def plot_pose_summary(summary_df: pd.DataFrame, clips_df: pd.DataFrame, out_png: str | os.PathLike[str]) -> Path:
    """Write a PNG: histogram of frames per clip by split, and detection rates by split.

    Parameters
    ----------
    summary_df
        Output of :func:`pose_summary`.
    clips_df
        The clip table it was computed from (for the histogram).
    out_png
        Output path (written atomically).
    """
    df = _check(clips_df)
    df = df[df["status"].isin(WITH_KEYPOINTS)]
    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_hist, ax_bar = fig.subplots(1, 2)

    groups = [s for s in summary_df["split"] if s != ALL]
    data = [df.loc[df["split"] == s, "num_frames"].to_numpy() for s in groups]
    if any(len(d) for d in data):
        hi = max(int(d.max()) for d in data if len(d))
        bins = np.linspace(0, max(hi, 1), min(40, max(hi, 1)) + 1)
        ax_hist.hist(data, bins=bins, stacked=True, label=groups)
        ax_hist.legend(title="split")
    else:
        ax_hist.text(0.5, 0.5, "no clip has keypoints", ha="center", va="center", transform=ax_hist.transAxes)
    ax_hist.set_xlabel("frames per clip")
    ax_hist.set_ylabel("clips")
    ax_hist.set_title("Frames per clip (clips with keypoints)")

    exact_any = summary_df["any_hand_rate"].notna().all()
    metrics = [("body_rate", "body"), ("left_hand_rate", "left hand"), ("right_hand_rate", "right hand"),
               ("any_hand_rate" if exact_any else "any_hand_rate_min", "any hand" if exact_any else "any hand (at least)")]
    x = np.arange(len(summary_df))
    width = 0.8 / len(metrics)
    for i, (col, label) in enumerate(metrics):
        vals = summary_df[col].astype(float).fillna(0.0).to_numpy()
        ax_bar.bar(x + (i - (len(metrics) - 1) / 2) * width, vals, width, label=label)
    ax_bar.set_xticks(x, [f"{s}\n({c} clips)" for s, c in zip(summary_df["split"], summary_df["clips"])])
    ax_bar.set_ylim(0, 1.25)
    ax_bar.set_yticks(np.linspace(0, 1, 6))
    ax_bar.set_ylabel("share of frames")
    ax_bar.set_title("Detection rate (frame-weighted)")
    ax_bar.legend(loc="upper center", ncol=len(metrics), fontsize="small")
    fig.tight_layout()

    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return Path(out_png)


def write_summary(clips_df: pd.DataFrame, out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Write ``summary.csv``, ``summary.json`` (``{split: {metric: value}}``) and ``summary.png``.

    Each file is written atomically; the PNG last.

    Returns
    -------
    pandas.DataFrame
        The summary (:func:`pose_summary`).
    """
    out = Path(out_dir)
    summary = pose_summary(clips_df)
    with atomic_open(out / "summary.csv", "w", encoding="utf-8", newline="") as fh:
        summary.to_csv(fh, index=False)
    write_json(out / "summary.json", summary_metrics(summary))
    plot_pose_summary(summary, clips_df, out / "summary.png")
    return summary
