"""Pose clips for training and evaluation, read from the packed keypoint memmap.

The pack stage (``python -m sldata pack-pose``) writes ``keypoints.npy`` (all clips' frames,
float32 ``[frames, points, 4]``), ``index.parquet`` (a clip's frames are
``keypoints[offset:offset + length]``) and ``skeleton.json``. :class:`PoseClips` opens the
array as a memmap and reads only the rows of the splits it was asked for, so the trainer,
built with ``splits=("train", "val")``, never touches a test clip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sldata.pose.store import load_packed
from sltrain.augment import PoseAugment
from sltrain.inputs import InputSpec, clip_features, pad_batch


@dataclass(frozen=True)
class Batch:
    """A padded batch: ``pose [B, T, P, C]``, ``mask [B, T]``, ``labels [B]`` and the rows' indices."""

    pose: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    rows: np.ndarray


class PoseClips:
    """The clips of some splits of a packed keypoint folder.

    Parameters
    ----------
    packed_dir
        Output folder of the pack stage.
    splits
        Splits to expose; rows of other splits are never read.
    spec
        How keypoints become model input.
    """

    def __init__(self, packed_dir: str | os.PathLike[str], splits: Sequence[str], spec: InputSpec) -> None:
        keypoints, index, meta = load_packed(packed_dir)
        stored = meta.get("skeleton") if isinstance(meta, dict) else None
        if stored is not None and stored.get("face") != spec.skeleton.get("face"):
            raise ValueError(f"{packed_dir}: packed keypoints have face={stored.get('face')!r}, the input spec "
                             f"expects {spec.skeleton.get('face')!r}")
        self._keypoints = keypoints
        self.spec = spec
        self.splits = tuple(splits)
        self.index = index[index["split"].isin(self.splits)].reset_index(drop=True)
        self._offset = self.index["offset"].to_numpy(dtype=np.int64)
        self._length = self.index["length"].to_numpy(dtype=np.int64)
        self._size = self.index[["width", "height"]].to_numpy(dtype=np.float64)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray:
        return self.index["label"].to_numpy(dtype=np.int64)

    def rows_of(self, split: str) -> np.ndarray:
        """Row numbers of one split."""
        if split not in self.splits:
            raise KeyError(f"split {split!r} is not loaded (loaded: {self.splits})")
        return np.flatnonzero(self.index["split"].to_numpy() == split)

    def raw(self, row: int) -> np.ndarray:
        """Raw keypoints ``[T, P_all, 4]`` of one row (a copy)."""
        start = int(self._offset[row])
        return np.array(self._keypoints[start:start + int(self._length[row])])

    def features(self, row: int, augment: PoseAugment | None = None, rng: np.random.Generator | None = None,
                 cache: bool = False) -> np.ndarray:
        """Model input ``[T', P, C]`` of one row; augmented and randomly sampled when ``rng`` is given."""
        if cache and rng is None and row in self._cache:
            return self._cache[row]
        kp = self.raw(row)
        width, height = self._size[row]
        if augment is not None and rng is not None:
            kp = augment(kp, rng, aspect_ratio=width / height)
        feats = clip_features(kp, width, height, self.spec, rng)
        if cache and rng is None:
            self._cache[row] = feats
        return feats

    def batch(self, rows: np.ndarray, augment: PoseAugment | None = None,
              rngs: Sequence[np.random.Generator] | None = None, cache: bool = False) -> Batch:
        clips = [self.features(int(r), augment, rngs[i] if rngs is not None else None, cache=cache)
                 for i, r in enumerate(rows)]
        pose, mask = pad_batch(clips, self.spec.num_frames)
        return Batch(pose=pose, mask=mask, labels=self.labels[np.asarray(rows)], rows=np.asarray(rows))

    def iter_batches(self, rows: np.ndarray, batch_size: int, cache: bool = True) -> Iterator[Batch]:
        """Deterministic batches (no augmentation, centre sampling) over ``rows``."""
        for start in range(0, len(rows), batch_size):
            yield self.batch(rows[start:start + batch_size], cache=cache)


def frame_table(index: pd.DataFrame) -> pd.DataFrame:
    """Per split: clips and frames (for logs)."""
    return index.groupby("split").agg(clips=("sample_id", "size"), frames=("length", "sum"))
