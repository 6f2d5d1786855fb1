"""Pose clips for training and evaluation, read from the packed keypoint memmap; head targets.

The pack stage (``python -m sldata pack-pose``) writes ``keypoints.npy`` (all clips' frames,
float32 ``[frames, points, 4]``), ``index.parquet`` (a clip's frames are
``keypoints[offset:offset + length]``) and ``skeleton.json``. :class:`PoseClips` opens the
array as a memmap and reads only the rows of the splits it was asked for, so the trainer,
built with ``splits=("train", "val")``, never touches a test clip.

Every clip source the trainer uses (:class:`PoseClips` here, :class:`sltrain.clip_data.RGBClips`
and :class:`sltrain.clip_data.HandClips`) has the same small interface, :class:`ClipSource`:
``index`` (one row per clip: ``sample_id``, ``label``, ``split``, ...), ``labels``,
``rows_of(split)``, ``batch(rows, augment, rngs)`` and ``iter_batches(rows, batch_size)``, whose
:class:`Batch` holds the model's input dict. :class:`HeadTargets` turns ``train.heads`` into the
targets of each head.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from sldata.pose.store import load_packed
from sltrain.augment import PoseAugment
from sltrain.inputs import InputSpec, canonical_points, input_features, pad_batch, select_input_points


@dataclass(frozen=True)
class Batch:
    """A batch: the model's ``inputs`` (e.g. ``pose [B, T, P, C]`` and ``mask [B, T]``), ``labels [B]``
    (gloss) and the rows' indices in the source."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    rows: np.ndarray

    @property
    def pose(self) -> np.ndarray:
        return self.inputs["pose"]

    @property
    def mask(self) -> np.ndarray:
        return self.inputs["mask"]


class ClipSource(Protocol):
    """What the training loop needs of a data source (see the module docs)."""

    index: pd.DataFrame

    @property
    def labels(self) -> np.ndarray: ...

    def rows_of(self, split: str) -> np.ndarray: ...

    def batch(self, rows: np.ndarray, augment: Any = None,
              rngs: Sequence[np.random.Generator] | None = None) -> Batch: ...

    def iter_batches(self, rows: np.ndarray, batch_size: int) -> Iterator[Batch]: ...


class SplitTable:
    """A clip table (``index``) restricted to some ``splits``: its size, labels and the rows of a split."""

    index: pd.DataFrame
    splits: tuple[str, ...]

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


class PoseClips(SplitTable):
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


    def raw(self, row: int) -> np.ndarray:
        """Raw keypoints ``[T, P_all, 4]`` of one row (a copy)."""
        start = int(self._offset[row])
        return np.array(self._keypoints[start:start + int(self._length[row])])

    def features(self, row: int, augment: PoseAugment | None = None, rng: np.random.Generator | None = None,
                 cache: bool = False) -> np.ndarray:
        """Model input ``[T', P, C]`` of one row; augmented and randomly sampled when ``rng`` is given.

        ``augment`` works on the points of the spec's layout (:attr:`InputSpec.layout`; see
        :func:`sltrain.train.augmenter_for`), which are cut from the clip and made canonical
        (:func:`sltrain.inputs.canonical_points`) first, so an augmenting mirror stays mirrored.
        """
        if cache and rng is None and row in self._cache:
            return self._cache[row]
        width, height = self._size[row]
        kp = canonical_points(select_input_points(self.raw(row), self.spec), width, height, self.spec)
        if augment is not None and rng is not None:
            kp = augment(kp, rng, aspect_ratio=width / height)
        feats = input_features(kp, width, height, self.spec, rng)
        if cache and rng is None:
            self._cache[row] = feats
        return feats

    def batch(self, rows: np.ndarray, augment: PoseAugment | None = None,
              rngs: Sequence[np.random.Generator] | None = None, cache: bool = False) -> Batch:
        clips = [self.features(int(r), augment, rngs[i] if rngs is not None else None, cache=cache)
                 for i, r in enumerate(rows)]
        pose, mask = pad_batch(clips, self.spec.num_frames)
        return Batch(inputs={"pose": pose, "mask": mask}, labels=self.labels[np.asarray(rows)], rows=np.asarray(rows))

    def iter_batches(self, rows: np.ndarray, batch_size: int, cache: bool = True) -> Iterator[Batch]:
        """Deterministic batches (no augmentation, centre sampling) over ``rows``."""
        for start in range(0, len(rows), batch_size):
            yield self.batch(rows[start:start + batch_size], cache=cache)


def frame_table(index: pd.DataFrame) -> pd.DataFrame:
    """Per split: clips and frames (for logs)."""
    return index.groupby("split").agg(clips=("sample_id", "size"), frames=("length", "sum"))


@dataclass(frozen=True)
class HeadTarget:
    """One head's targets: the ``column`` they come from, its ``classes`` (values as strings, in class
    order) and the loss ``weight``."""

    column: str
    classes: tuple[str, ...]
    weight: float


class HeadTargets:
    """The heads of ``train.heads`` and each clip's target for each head.

    ``gloss`` reads ``label`` (classes: the label map). Another head reads its ``column`` from the
    clip table (``index`` of the source) or, when the table lacks it, from ``samples`` (the
    subset's ``samples.parquet``, joined on ``sample_id``); its classes are the column's distinct
    non-null values in the train rows, so the number of classes comes from the data. A null
    value, or a value seen only outside train, is no target (:data:`IGNORE_INDEX`, -1).

    Parameters
    ----------
    heads
        ``{name: {"column": str, "weight": float}}``; must contain ``gloss`` with column ``label``.
    index
        The source's clip table (``sample_id``, ``label``, ...), one row per clip row.
    train_rows
        Rows of ``index`` in the train split (the classes come from them).
    gloss_classes
        Class names of the label map.
    samples
        Optional extra columns per ``sample_id`` (train and val rows only).

    Raises
    ------
    ValueError
        ``gloss`` missing or not on ``label``; a column found nowhere (the message lists the
        columns there are); a head without any labelled train clip.
    """

    IGNORE_INDEX = -1

    def __init__(self, heads: Mapping[str, Mapping[str, Any]], index: pd.DataFrame, train_rows: np.ndarray,
                 gloss_classes: Sequence[str], samples: pd.DataFrame | None = None) -> None:
        if "gloss" not in heads:
            raise ValueError(f"heads need a 'gloss' head; got {sorted(heads)}")
        if heads["gloss"].get("column", "label") != "label":
            raise ValueError(f"the gloss head reads column 'label', not {heads['gloss']['column']!r}")
        self.heads: dict[str, HeadTarget] = {}
        self._targets: dict[str, np.ndarray] = {}
        for name, head in heads.items():
            weight = float(head.get("weight", 1.0))
            if name == "gloss":
                self.heads[name] = HeadTarget("label", tuple(str(g) for g in gloss_classes), weight)
                self._targets[name] = index["label"].to_numpy(dtype=np.int64)
                continue
            column = str(head["column"])
            values = self._column(column, index, samples)
            labelled = ~pd.isna(values)
            train_values = pd.unique(values[train_rows][labelled[train_rows]])
            if len(train_values) == 0:
                raise ValueError(f"head {name!r}: column {column!r} has no value in the train split")
            classes = tuple(str(v) for v in sorted(train_values, key=_natural_key))
            lookup = {c: i for i, c in enumerate(classes)}
            self._targets[name] = np.array([lookup.get(str(v), self.IGNORE_INDEX) if ok else self.IGNORE_INDEX
                                            for v, ok in zip(values, labelled)], dtype=np.int64)
            self.heads[name] = HeadTarget(column, classes, weight)

    @staticmethod
    def _column(column: str, index: pd.DataFrame, samples: pd.DataFrame | None) -> np.ndarray:
        if column in index.columns:
            return index[column].to_numpy(dtype=object)
        if samples is not None and column in samples.columns:
            by_id = samples.drop_duplicates("sample_id").set_index("sample_id")[column]
            return index["sample_id"].map(by_id).to_numpy(dtype=object)
        where = sorted(index.columns) + (sorted(set(samples.columns) - set(index.columns)) if samples is not None else [])
        hint = "" if samples is not None else " (pass --samples to read the subset's samples.parquet too)"
        raise ValueError(f"no column {column!r} for a head; columns: {', '.join(where)}{hint}")

    @property
    def extra(self) -> list[str]:
        """Heads other than gloss."""
        return [name for name in self.heads if name != "gloss"]

    def model_heads(self) -> dict[str, dict[str, Any]]:
        """``{name: {"num_classes", "weight"}}`` for the model and :func:`multi_head_loss`."""
        return {name: {"num_classes": len(h.classes), "weight": h.weight} for name, h in self.heads.items()}

    def targets(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``{name: int64 [len(rows)]}`` (-1: no target)."""
        return {name: t[np.asarray(rows)] for name, t in self._targets.items()}

    def record(self) -> dict[str, dict[str, Any]]:
        """What a checkpoint keeps of the heads other than gloss: their column and class values."""
        return {name: {"column": self.heads[name].column, "classes": list(self.heads[name].classes)}
                for name in self.extra}


def _natural_key(value: Any) -> tuple[int, Any]:
    """Numbers before strings, numbers by value (signer 2 before signer 10)."""
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


def read_samples(path: str | os.PathLike[str] | None, splits: Sequence[str] = ("train", "val")) -> pd.DataFrame | None:
    """The rows of ``splits`` of a subset's ``samples.parquet`` (other rows are filtered while reading)."""
    if path is None:
        return None
    return pd.read_parquet(path, filters=[("split", "in", list(splits))])
