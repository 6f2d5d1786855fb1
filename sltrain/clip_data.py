"""RGB frames and hand crops as training clips, train and val splits only.

* :class:`RGBClips`: the frames stage's shards (``data/frames/shard-NNN``, read with
  :class:`sldata.frames.FrameStore`), labelled by the subset's sample table.
* :class:`HandClips`: the hand-crop stage's shards (``data/hand_crops/shard-NNN``, read with
  :class:`sldata.pose.handcrop_stage.HandCropStore`) joined with the packed keypoints
  (``data/features/pose``) of the same clips, which label them and give the pose features.

Both expose only the clips of the splits they are built with (the trainer asks for ``train`` and
``val``): the clip table is filtered *before* any frame, crop or keypoint is read, and only
:meth:`raw` reads them, so a test clip is never touched. Clips of those splits that have no
frames or crops (failed in an earlier stage) are left out and counted in :attr:`missing`.

They follow :class:`sltrain.data.ClipSource`; model input is prepared by
:mod:`sltrain.clip_inputs`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sldata.frames import FrameStore
from sldata.pose.handcrop_stage import HandCropStore
from sldata.pose.store import load_packed
from sltrain.clip_inputs import ClipAugment, ClipInputSpec, hand_clip_input, rgb_clip_input
from sltrain.data import Batch, SplitTable
from sltrain.inputs import pad_batch

log = logging.getLogger(__name__)


def shard_folders(root: str | os.PathLike[str]) -> list[Path]:
    """The complete ``shard-NNN`` folders (with an ``index.parquet``) of a stage's output, in order.

    Raises
    ------
    FileNotFoundError
        When there is none (the message says which stage builds them).
    """
    folders = sorted(p for p in Path(root).glob("shard-*") if (p / "index.parquet").is_file())
    if not folders:
        raise FileNotFoundError(f"{root}: no complete shard-NNN folders; build them first "
                                "(snakemake --cores 2 frames_all / hand_crops_all, or dvc repro frames / hand_crops)")
    return folders


class _StoreClips(SplitTable):
    """Shared parts: the clip table of some splits (see :class:`SplitTable`) and batching."""

    missing: int

    def batch(self, rows: np.ndarray, augment: ClipAugment | None = None,
              rngs: Sequence[np.random.Generator] | None = None) -> Batch:
        raise NotImplementedError

    def iter_batches(self, rows: np.ndarray, batch_size: int) -> Iterator[Batch]:
        """Deterministic batches (no augmentation) over ``rows``."""
        for start in range(0, len(rows), batch_size):
            yield self.batch(rows[start:start + batch_size])


def _in_splits(table: pd.DataFrame, splits: Sequence[str]) -> pd.DataFrame:
    return table[table["split"].astype(str).isin(list(splits))].reset_index(drop=True)


class RGBClips(_StoreClips):
    """RGB clips of some splits: frames from the frames stage, labels from the sample table.

    Parameters
    ----------
    frames_dir
        Output of the frames stage (``shard-NNN`` folders).
    samples
        The subset's sample table (``sample_id``, ``label``, ``split``, ...); rows of other
        splits are dropped before anything is read.
    splits
        Splits to expose.
    spec
        An ``rgb`` :class:`ClipInputSpec`.
    """

    def __init__(self, frames_dir: str | os.PathLike[str], samples: pd.DataFrame, splits: Sequence[str],
                 spec: ClipInputSpec) -> None:
        if spec.kind != "rgb":
            raise ValueError(f"RGBClips needs an 'rgb' input spec, got {spec.kind!r}")
        self.spec = spec
        self.splits = tuple(splits)
        wanted = _in_splits(samples, self.splits)
        self._stores: dict[str, FrameStore] = {}
        for folder in shard_folders(frames_dir):
            store = FrameStore(folder)
            for sample_id in store.sample_ids:
                self._stores[sample_id] = store
        have = wanted["sample_id"].astype(str).isin(list(self._stores)).to_numpy()
        self.missing = int((~have).sum())
        if self.missing:
            log.warning("%d %s clip(s) have no frames in %s; left out", self.missing, "/".join(self.splits), frames_dir)
        self.index = wanted[have].reset_index(drop=True)
        self._ids = self.index["sample_id"].astype(str).tolist()

    def raw(self, row: int) -> np.ndarray:
        """The stored frames ``uint8 [L, S, S, 3]`` of one row (a read-only view)."""
        sample_id = self._ids[row]
        return self._stores[sample_id].clip(sample_id)

    def features(self, row: int, augment: ClipAugment | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
        """Model input ``[3, T, size, size]`` of one row (augmented when ``augment`` and ``rng`` are given)."""
        return rgb_clip_input(self.raw(row), self.spec, augment, rng)

    def batch(self, rows: np.ndarray, augment: ClipAugment | None = None,
              rngs: Sequence[np.random.Generator] | None = None) -> Batch:
        clips = [self.features(int(r), augment, rngs[i] if rngs is not None else None) for i, r in enumerate(rows)]
        return Batch(inputs={"rgb": np.stack(clips)}, labels=self.labels[np.asarray(rows)], rows=np.asarray(rows))


class HandClips(_StoreClips):
    """Hand-crop clips of some splits with the keypoints of the same frames.

    Parameters
    ----------
    hand_crops_dir
        Output of the hand-crop stage (``shard-NNN`` folders).
    packed_dir
        Output of the pack stage: its index (filtered to ``splits``) is the clip table, labels
        included, and its keypoints give the pose features.
    splits
        Splits to expose.
    spec
        A ``hands`` :class:`ClipInputSpec`.

    Raises
    ------
    ValueError
        The packed keypoints have another face layout than the spec.
    """

    def __init__(self, hand_crops_dir: str | os.PathLike[str], packed_dir: str | os.PathLike[str],
                 splits: Sequence[str], spec: ClipInputSpec) -> None:
        if spec.kind != "hands":
            raise ValueError(f"HandClips needs a 'hands' input spec, got {spec.kind!r}")
        keypoints, index, meta = load_packed(packed_dir)
        stored = meta.get("skeleton") if isinstance(meta, dict) else None
        if stored is not None and stored.get("face") != spec.pose_spec.skeleton.get("face"):
            raise ValueError(f"{packed_dir}: packed keypoints have face={stored.get('face')!r}, the input spec "
                             f"expects {spec.pose_spec.skeleton.get('face')!r}")
        self.spec = spec
        self.splits = tuple(splits)
        self._keypoints = keypoints
        wanted = _in_splits(index, self.splits)
        self._stores: dict[str, HandCropStore] = {}
        lengths: dict[str, int] = {}
        for folder in shard_folders(hand_crops_dir):
            store = HandCropStore(folder)
            ok = store.index[store.index["status"] == "ok"]
            for sample_id, length in zip(ok["sample_id"].astype(str), ok["length"].astype(int)):
                self._stores[sample_id] = store
                lengths[sample_id] = int(length)
        ids = wanted["sample_id"].astype(str)
        have = ids.isin(list(self._stores)).to_numpy()
        same = np.array([lengths.get(i, -1) == n for i, n in zip(ids, wanted["length"].astype(int))])
        mismatched = int((have & ~same).sum())
        if mismatched:
            log.warning("%d clip(s) have another number of hand-crop frames than keypoint frames (the pose stage "
                        "ran again after the hand crops?); left out", mismatched)
        keep = have & same
        self.missing = int((~keep).sum())
        if self.missing - mismatched:
            log.warning("%d %s clip(s) have no hand crops in %s; left out", self.missing - mismatched,
                        "/".join(self.splits), hand_crops_dir)
        self.index = wanted[keep].reset_index(drop=True)
        self._ids = self.index["sample_id"].astype(str).tolist()
        self._offset = self.index["offset"].to_numpy(dtype=np.int64)
        self._length = self.index["length"].to_numpy(dtype=np.int64)
        self._size = self.index[["width", "height"]].to_numpy(dtype=np.float64)

    def raw(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Crops ``uint8 [L, 2, S, S, 3]`` (a read-only view) and keypoints ``[L, P_all, 4]`` (a copy) of one row."""
        sample_id = self._ids[row]
        start = int(self._offset[row])
        keypoints = np.array(self._keypoints[start:start + int(self._length[row])])
        return self._stores[sample_id].clip(sample_id), keypoints

    def features(self, row: int, augment: ClipAugment | None = None,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Hands ``[T, 2, 3, size, size]`` and pose ``[T, P, C]`` of one row."""
        crops, keypoints = self.raw(row)
        width, height = self._size[row]
        return hand_clip_input(crops, keypoints, width, height, self.spec, augment, rng)

    def batch(self, rows: np.ndarray, augment: ClipAugment | None = None,
              rngs: Sequence[np.random.Generator] | None = None) -> Batch:
        clips = [self.features(int(r), augment, rngs[i] if rngs is not None else None) for i, r in enumerate(rows)]
        frames = self.spec.num_frames
        pose, mask = pad_batch([pose for _, pose in clips], frames)
        hands = np.zeros((len(clips), frames, *clips[0][0].shape[1:]), dtype=np.float32)
        for i, (h, _) in enumerate(clips):
            hands[i, :len(h)] = h[:frames]
        inputs: dict[str, Any] = {"hands": hands, "pose_flow": pose, "mask": mask}
        return Batch(inputs=inputs, labels=self.labels[np.asarray(rows)], rows=np.asarray(rows))
