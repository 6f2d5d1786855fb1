"""The hand-crop stage: both hands of every keypoint frame of a shard, cropped from the clip.

For one shard, :func:`hand_crops_shard` reads the acquire stage's clip table and the pose shard,
decodes each clip with the pose stage's own reader and ``frame_step`` (read from the shard
metadata ``sldata.pose_settings``), so crop ``t`` is cut from exactly the frame that produced
``keypoints[t]``; locates the boxes with :func:`sldata.pose.handcrops.hand_crop_boxes` and cuts
them with :func:`sldata.pose.handcrops.crop_hands` (see that module for the geometry, the
validity rules and box borrowing). Hand order on axis 1 is the signer's left, then right.

A shard is a folder, written like a frame shard (:mod:`sldata.frames`), never a file per crop:

``npy`` storage (default)
    ``crops.npy``: ``uint8 [total_frames, 2, size, size, 3]`` RGB, every clip's crops one after
    the other (``np.load(mmap_mode="r")`` and slice ``[offset:offset + length]``).
``jpeg_parquet`` storage
    ``crops.parquet``: one row per clip (``sample_id``, ``fps``, ``frames``: ``list<binary>`` of
    ``2 * length`` JPEGs, frame-major: frame 0 left, frame 0 right, frame 1 left, ...), zstd, in
    row groups of :data:`sldata.frames.JPEG_ROW_GROUP_CLIPS` clips.
Both storages
    ``boxes.npy``: ``float32 [total_frames, 2, 4]`` the crop boxes ``(xmin, ymin, xmax, ymax)``
    in source pixels (NaN for a hand never located in its clip; its crops are black);
    ``index.parquet`` (written last: its presence marks a complete shard): one row per input
    clip, :data:`INDEX_SCHEMA`. ``status`` is ``ok`` (crops stored), ``failed`` (``reason``
    names the file and the error) or ``skipped`` (the clip was not usable, or its pose status
    was not ``ok``: ``reason`` says which). ``left_located``/``right_located`` say whether the
    hand had a box of its own in at least one frame, ``left_borrowed``/``right_borrowed`` count
    the frames that borrowed the nearest frame's box.

Every file is written to a temporary name and renamed into place (atomic); the shard is not
resumable (a rerun starts over). Clips are processed on threads (PyAV and OpenCV release the
GIL), results are written in input order, so the shard does not depend on ``workers``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sldata.atomic import atomic_path
from sldata.frames import STORAGES, USABLE_STATUSES, _JpegParquet, _NpyAppender, _ordered_map, encode_jpegs
from sldata.pose.extract import ClipReader, PoseClipError
from sldata.pose.handcrops import HandCropSettings, crop_hands, hand_crop_boxes
from sldata.pose.skeleton import Skeleton
from sldata.pose.store import read_pose_settings, read_pose_shard
from sldata.progress import Progress

CROPS_NPY = "crops.npy"
CROPS_PARQUET = "crops.parquet"
BOXES_NPY = "boxes.npy"
INDEX_PARQUET = "index.parquet"
HANDS = 2

INDEX_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("offset", pa.int64()),
    ("length", pa.int64()),
    ("fps", pa.float64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("left_located", pa.bool_()),
    ("right_located", pa.bool_()),
    ("left_borrowed", pa.int64()),
    ("right_borrowed", pa.int64()),
    ("clip_path", pa.string()),
])
"""Columns of ``index.parquet`` (see the module docs)."""


@dataclass(frozen=True)
class HandCropStageSettings:
    """The ``hand_crops`` params section.

    Attributes
    ----------
    crops
        Geometry and output size (:class:`sldata.pose.handcrops.HandCropSettings`).
    storage
        ``"npy"`` or ``"jpeg_parquet"`` (as frame shards).
    jpeg_quality
        JPEG quality 1-100 of ``jpeg_parquet``.
    workers
        Clips decoded and cropped at once (threads); the output does not depend on it.
    """

    crops: HandCropSettings
    storage: str
    jpeg_quality: int
    workers: int

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f"hand_crops storage must be one of {', '.join(STORAGES)}, got {self.storage!r}")
        if isinstance(self.jpeg_quality, bool) or not isinstance(self.jpeg_quality, int) \
                or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"hand_crops jpeg_quality must be an integer in 1..100, got {self.jpeg_quality!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"hand_crops workers must be an integer >= 1, got {self.workers!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HandCropStageSettings:
        """From the flat ``hand_crops`` section; unknown keys raise ``ValueError`` naming them."""
        stage_keys = {"storage", "jpeg_quality", "workers"}
        crop_keys = {f.name for f in fields(HandCropSettings)}
        unknown = sorted(set(data) - stage_keys - crop_keys)
        if unknown:
            raise ValueError(f"unknown hand_crops setting(s): {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(stage_keys | crop_keys))}")
        crops = HandCropSettings.from_dict({k: v for k, v in data.items() if k in crop_keys})
        return cls(crops=crops, **{k: v for k, v in data.items() if k in stage_keys})


@dataclass
class _ClipCrops:
    crops: np.ndarray  # uint8 [T, 2, S, S, 3]
    boxes: np.ndarray  # float32 [T, 2, 4]
    borrowed: np.ndarray  # bool [T, 2]
    located: np.ndarray  # bool [2]
    width: int
    height: int
    fps: float


def _clean_path(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return str(value)


def crop_clip(clip_path: str | os.PathLike[str], keypoints: np.ndarray, skeleton: Skeleton, frame_step: int,
              settings: HandCropSettings, fps: float | None = None) -> _ClipCrops:
    """Decode one clip as the pose stage did and crop both hands of every keypoint frame.

    Raises
    ------
    PoseClipError
        The clip cannot be opened or has no video stream.
    ValueError
        The clip's kept frames do not match the keypoint frames in number (the clip changed
        since the pose stage: rerun it).
    """
    reader = ClipReader(clip_path, frame_step)
    frames = list(reader)
    if len(frames) != len(keypoints):
        raise ValueError(f"{clip_path}: {len(frames)} frames at frame_step {frame_step} but the pose shard has "
                         f"{len(keypoints)} keypoint frames; the clip changed since the pose stage, rerun it")
    video = np.stack(frames)
    height, width = video.shape[1:3]
    boxes = hand_crop_boxes(np.asarray(keypoints, dtype=np.float32), width, height, skeleton,
                            **settings.box_options())
    crops = crop_hands(video, boxes.boxes, settings.size)
    rate = fps if fps is not None and math.isfinite(fps) and fps > 0 else (reader.fps or float("nan"))
    return _ClipCrops(crops, boxes.boxes, boxes.borrowed, boxes.located, int(width), int(height), float(rate))


def _index_row(sample_id: str, clip_path: str | None, status: str, reason: str, offset: int = 0,
               clip: _ClipCrops | None = None) -> dict[str, Any]:
    return {"sample_id": sample_id, "offset": offset, "length": len(clip.crops) if clip else 0,
            "fps": clip.fps if clip else float("nan"), "width": clip.width if clip else 0,
            "height": clip.height if clip else 0, "status": status, "reason": reason,
            "left_located": bool(clip.located[0]) if clip else False,
            "right_located": bool(clip.located[1]) if clip else False,
            "left_borrowed": int(clip.borrowed[:, 0].sum()) if clip else 0,
            "right_borrowed": int(clip.borrowed[:, 1].sum()) if clip else 0,
            "clip_path": clip_path or ""}


def hand_crops_shard(clips: pd.DataFrame, pose_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                     settings: HandCropStageSettings, progress: bool = True) -> dict[str, Any]:
    """Crop both hands of every keypoint frame of the usable clips of a shard into ``out_dir``.

    Parameters
    ----------
    clips
        The acquire stage's ``clips.parquet`` of the shard: ``sample_id`` (unique), ``clip_path``
        and ``status`` (``usable`` or ``ok`` rows are cropped when their pose status is ``ok``).
    pose_path
        The pose shard of the same clips (:mod:`sldata.pose.store`); its ``frame_step`` is used.
    out_dir
        Shard folder (created); see the module docs for the files.
    settings
        :class:`HandCropStageSettings`.
    progress
        A progress bar on a terminal; timestamped progress lines in the log otherwise or with
        False (:class:`sldata.progress.Progress`).

    Returns
    -------
    dict
        ``storage, n_clips, n_ok, n_failed, n_skipped, n_frames, frame_step, crop_bytes``,
        ``bytes_per_frame`` (both hands), ``left_located``/``right_located`` (ok clips with that
        hand located), ``seconds``, ``frames_per_s``.

    Raises
    ------
    KeyError
        A missing column in ``clips``.
    ValueError
        Duplicate ``sample_id``\\ s in ``clips``.
    """
    missing = [c for c in ("sample_id", "clip_path", "status") if c not in clips.columns]
    if missing:
        raise KeyError(f"clips lack the column(s) {missing}")
    ids = clips["sample_id"].astype(str)
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"duplicate sample_id(s) in clips: {dup[:10]}")
    pose_clips, keypoints, skeleton = read_pose_shard(pose_path)
    frame_step = int(read_pose_settings(pose_path).get("frame_step", 1))
    pose_rows = {str(r["sample_id"]): r for r in pose_clips.to_dict("records")}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    crops_path = out / (CROPS_NPY if settings.storage == "npy" else CROPS_PARQUET)
    stale = out / (CROPS_PARQUET if settings.storage == "npy" else CROPS_NPY)
    index_path = out / INDEX_PARQUET
    index_path.unlink(missing_ok=True)  # the shard is incomplete until the index is back
    size = settings.crops.size

    items: list[tuple[str, str | None, str | None]] = []  # (sample_id, clip_path, skip reason)
    for row in clips[["sample_id", "clip_path", "status"]].to_dict("records"):
        sid, path = str(row["sample_id"]), _clean_path(row["clip_path"])
        pose = pose_rows.get(sid)
        if row["status"] not in USABLE_STATUSES:
            why = f"clip status {row['status']!r}"
        elif pose is None:
            why = f"not in the pose shard {pose_path}"
        elif pose["status"] != "ok" or sid not in keypoints:
            why = f"pose status {pose['status']!r}"
        elif path is None:
            why = "the clip row has no clip_path"
        else:
            why = None
        items.append((sid, path, why))
    todo = [it for it in items if it[2] is None]

    def work(item: tuple[str, str | None, str | None]) -> tuple[_ClipCrops | None, str]:
        sid, path, _ = item
        assert path is not None
        try:
            fps = pose_rows[sid].get("fps")
            fps = None if fps is None or fps is pd.NA else float(fps)
            return crop_clip(path, keypoints[sid], skeleton, frame_step, settings.crops, fps), ""
        except PoseClipError as exc:
            return None, f"{exc.reason}: {exc.detail}"
        except Exception as exc:  # one bad clip must not stop the shard; keep the evidence
            return None, f"{path}: {type(exc).__name__}: {exc}"

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    boxes: list[np.ndarray] = []
    n_frames = 0
    results: Iterator[Any] = _ordered_map(work, todo, settings.workers)
    bar = Progress(total=len(items), desc=f"hand crops {out.name}", unit="clip", bar=progress)
    with atomic_path(crops_path) as tmp:
        writer: _NpyAppender | _JpegParquet = (_NpyAppender(tmp, (HANDS, size, size, 3)) if settings.storage == "npy"
                                               else _JpegParquet(tmp))
        try:
            for sid, path, why in items:
                if why is not None:
                    rows.append(_index_row(sid, path, "skipped", why))
                else:
                    clip, failure = next(results)  # type: ignore[call-overload]
                    if clip is None:
                        rows.append(_index_row(sid, path, "failed", failure))
                    else:
                        if isinstance(writer, _NpyAppender):
                            offset = writer.append(clip.crops)
                        else:
                            jpegs = encode_jpegs(clip.crops.reshape(-1, size, size, 3), settings.jpeg_quality)
                            offset = writer.append(sid, clip.fps, jpegs) // HANDS
                        boxes.append(clip.boxes)
                        n_frames += len(clip.crops)
                        rows.append(_index_row(sid, path, "ok", "", offset, clip))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(frames=n_frames, refresh=False)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stops the worker threads if the loop broke off
            writer.close()
            if bar is not None:
                bar.close()
    with atomic_path(out / BOXES_NPY) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.concatenate(boxes) if boxes else np.zeros((0, HANDS, 4), dtype=np.float32))
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA) if rows else INDEX_SCHEMA.empty_table()
    with atomic_path(index_path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    if stale.exists():  # a shard of the other storage left here would confuse the reader
        stale.unlink()
    seconds = time.perf_counter() - started
    statuses = [r["status"] for r in rows]
    crop_bytes = crops_path.stat().st_size
    ok = [r for r in rows if r["status"] == "ok"]
    return {
        "storage": settings.storage,
        "n_clips": len(rows),
        "n_ok": statuses.count("ok"),
        "n_failed": statuses.count("failed"),
        "n_skipped": statuses.count("skipped"),
        "n_frames": n_frames,
        "frame_step": frame_step,
        "crop_bytes": crop_bytes,
        "bytes_per_frame": crop_bytes / n_frames if n_frames else float("nan"),
        "left_located": sum(r["left_located"] for r in ok),
        "right_located": sum(r["right_located"] for r in ok),
        "seconds": round(seconds, 3),
        "frames_per_s": round(n_frames / seconds, 2) if seconds > 0 and n_frames else 0.0,
    }


class HandCropStore:
    """Read a shard written by :func:`hand_crops_shard`, whatever its storage.

    ``store.clip(sample_id)`` is ``uint8 [T, 2, S, S, 3]`` (left, right; a read-only memory-map
    view for ``npy``), ``store.boxes(sample_id)`` ``float32 [T, 2, 4]``; :attr:`index` has every
    row of ``index.parquet``; ``len(store)`` counts the clips with crops.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.path = Path(out_dir)
        index_path = self.path / INDEX_PARQUET
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path} not found: not a complete hand-crop shard")
        self.index: pd.DataFrame = pq.read_table(index_path).to_pandas()
        ok = self.index[self.index["status"] == "ok"]
        self._rows = {str(s): (int(o), int(n)) for s, o, n in zip(ok["sample_id"], ok["offset"], ok["length"])}
        self._boxes = np.load(self.path / BOXES_NPY, mmap_mode="r")
        npy, pqt = self.path / CROPS_NPY, self.path / CROPS_PARQUET
        self._mm: np.ndarray | None = None
        self._pf: pq.ParquetFile | None = None
        if npy.is_file():
            self.storage = "npy"
            self._mm = np.load(npy, mmap_mode="r")
        elif pqt.is_file():
            self.storage = "jpeg_parquet"
            self._pf = pq.ParquetFile(pqt)
            self._where: dict[str, tuple[int, int]] = {}
            for rg in range(self._pf.num_row_groups):
                for k, sid in enumerate(self._pf.read_row_group(rg, columns=["sample_id"]).column(0).to_pylist()):
                    self._where[str(sid)] = (rg, k)
        else:
            raise FileNotFoundError(f"{self.path}: neither {CROPS_NPY} nor {CROPS_PARQUET} found")

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._rows

    @property
    def sample_ids(self) -> list[str]:
        """Ids of the clips with crops, in shard order."""
        return list(self._rows)

    def _row(self, sample_id: str) -> tuple[int, int]:
        try:
            return self._rows[sample_id]
        except KeyError:
            raise KeyError(f"{sample_id!r} has no hand crops in {self.path}") from None

    def boxes(self, sample_id: str) -> np.ndarray:
        """The crop boxes of ``sample_id``: ``float32 [T, 2, 4]`` in source pixels."""
        offset, length = self._row(sample_id)
        return self._boxes[offset:offset + length]

    def clip(self, sample_id: str) -> np.ndarray:
        """The crops of ``sample_id``: ``uint8 [T, 2, S, S, 3]`` RGB (left hand, right hand)."""
        import cv2

        offset, length = self._row(sample_id)
        if self._mm is not None:
            return self._mm[offset:offset + length]
        assert self._pf is not None
        rg, k = self._where[sample_id]
        blobs = self._pf.read_row_group(rg, columns=["frames"]).column(0)[k].values.to_pylist()
        images = [cv2.imdecode(np.frombuffer(b, dtype=np.uint8), cv2.IMREAD_COLOR) for b in blobs]
        if any(im is None for im in images):
            raise ValueError(f"{sample_id}: a stored JPEG in {self.path / CROPS_PARQUET} does not decode")
        rgb = np.stack([cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in images])
        return rgb.reshape(length, HANDS, *rgb.shape[1:])


__all__ = ["BOXES_NPY", "CROPS_NPY", "CROPS_PARQUET", "INDEX_PARQUET", "INDEX_SCHEMA", "HandCropStageSettings",
           "HandCropStore", "crop_clip", "hand_crops_shard"]
