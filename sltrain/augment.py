"""Pose augmentations for sign language clips, on one clip ``[T, P, C]`` (numpy).

The first two channels are ``x`` and ``y``; only they are changed by the geometric transforms.
Apply augmentations to the keypoints *before* deriving features (velocities, pose flow), so the
derived channels stay consistent with the positions.

Missing points stay missing through every transform. Two conventions are supported
(:class:`PoseAugment` fields ``missing`` and ``presence_channel``):

* ``missing="nan"`` (the raw keypoints of :mod:`sldata.pose.skeleton`): a point is missing when
  its ``x`` or ``y`` is NaN; a point made missing (dropped) gets NaN in every channel except the
  presence channel (e.g. ``confidence``, index 3), which gets 0.
* ``missing="zero"`` (zero-filled features with a presence channel): a point is missing when its
  presence channel is 0; a dropped point gets 0 in every channel.

Transforms
----------
* :func:`horizontal_flip`: mirror ``x`` **and** swap left and right (hands and the body's
  ``left_*``/``right_*`` points, see :func:`flip_permutation`); handedness matters in signing, so
  a mirror without the swap would make a left hand look like a right hand in the left hand's
  slot.
* :func:`affine_transform` with :func:`random_affine_matrix`: rotation, shear, scale about a
  centre (the shoulder midpoint with :meth:`PoseAugment.for_skeleton`, else the centroid) and a
  translation. ``aspect_ratio`` (frame width / height) makes the transform act on
  aspect-correct coordinates, so a rotation is a true rotation of the image.
* :func:`resample_time`: speed change to a new length (linear or nearest interpolation).
* :func:`drop_frames`, :func:`drop_points`: remove frames, make points missing.

:class:`PoseAugment` combines them with probabilities and ranges; given a seeded
:class:`numpy.random.Generator` its output is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sldata.pose.skeleton import Skeleton
from sldata.settings import settings_from_dict

MissingConvention = Literal["nan", "zero"]
Interpolation = Literal["linear", "nearest"]

_SIDES = (("left_", "right_"), ("_left", "_right"))


def _mirror_name(name: str) -> str:
    """``left_eye`` <-> ``right_eye``, ``mouth_left`` <-> ``mouth_right``; other names unchanged."""
    for left, right in _SIDES:
        for a, b in ((left, right), (right, left)):
            if a.startswith("_") and name.endswith(a):
                return name[: -len(a)] + b
            if not a.startswith("_") and name.startswith(a):
                return b + name[len(a):]
    return name


def flip_permutation(skeleton: Skeleton) -> np.ndarray:
    """Index map of a horizontal flip: ``flipped[:, i] = clip[:, permutation[i]]``.

    Body points named ``left_*``/``*_left`` swap with their ``right`` counterparts, the
    ``left_hand`` and ``right_hand`` parts swap point for point, and points without a side (e.g.
    the nose) map to themselves.

    Face points map to themselves: the skeleton does not record which face-mesh points mirror
    each other, so after a flip a face point holds the mirrored position of the *same* mesh point
    (correct geometry, but e.g. the "left eye" points lie on the right side).

    Returns
    -------
    int64 ``[P]``, a permutation that is its own inverse.
    """
    names = skeleton.point_names
    index = {name: i for i, name in enumerate(names)}
    permutation = np.arange(len(names), dtype=np.int64)
    for i, qualified in enumerate(names):
        part, point = qualified.split(".", 1)
        if part in ("left_hand", "right_hand"):
            other = ("right_hand" if part == "left_hand" else "left_hand") + "." + point
        elif part == "body":
            other = "body." + _mirror_name(point)
        else:
            continue
        permutation[i] = index[other]
    return permutation


def missing_points(clip: np.ndarray, missing: MissingConvention = "nan",
                   presence_channel: int | None = 3) -> np.ndarray:
    """Bool ``[T, P]``: which points of ``clip`` are missing under the given convention."""
    if missing == "nan":
        return np.isnan(clip[..., 0]) | np.isnan(clip[..., 1])
    if presence_channel is None or presence_channel >= clip.shape[-1]:
        raise ValueError(f"missing='zero' needs a presence channel inside the clip's {clip.shape[-1]} channels, "
                         f"got presence_channel={presence_channel}")
    return clip[..., presence_channel] <= 0


def mark_missing(clip: np.ndarray, where: np.ndarray, missing: MissingConvention = "nan",
                 presence_channel: int | None = 3) -> np.ndarray:
    """Copy of ``clip`` with the points ``where`` (bool ``[T, P]``) made missing (see the module doc)."""
    out = clip.copy()
    if missing == "zero":
        out[where] = 0.0
        return out
    out[where] = np.nan
    if presence_channel is not None and presence_channel < clip.shape[-1]:
        out[..., presence_channel][where] = 0.0
    return out


def subset_flip_permutation(skeleton: Skeleton, names: Sequence[str]) -> np.ndarray:
    """:func:`flip_permutation` restricted to the points ``names`` (in that order).

    Raises
    ------
    ValueError
        When a point's mirror partner is not among ``names`` (the subset is not symmetric).
    """
    full = flip_permutation(skeleton)
    position = {n: i for i, n in enumerate(names)}
    out = []
    for name in names:
        partner = skeleton.point_names[full[skeleton.index(name)]]
        if partner not in position:
            raise ValueError(f"point {name!r} has its mirror {partner!r} outside the subset; a mirror needs both")
        out.append(position[partner])
    return np.asarray(out, dtype=np.int64)


def horizontal_flip(clip: np.ndarray, permutation: np.ndarray, *, axis_x: float = 0.5,
                    missing: MissingConvention = "nan", presence_channel: int | None = 3) -> np.ndarray:
    """Mirror ``x`` about ``axis_x`` (0.5: the image centre in normalized coordinates) and swap sides.

    ``permutation`` comes from :func:`flip_permutation`. Missing points are not mirrored (their
    values stay as they were) and move with their slot.
    """
    if permutation.shape != (clip.shape[1],):
        raise ValueError(f"flip permutation has {permutation.shape[0]} entries, clip has {clip.shape[1]} points")
    present = ~missing_points(clip, missing, presence_channel)
    out = clip.copy()
    out[..., 0] = np.where(present, 2.0 * axis_x - clip[..., 0], clip[..., 0])
    return out[:, permutation]


def clip_center(clip: np.ndarray, present: np.ndarray, center_indices: Sequence[int] = ()) -> np.ndarray | None:
    """Mean ``(x, y)`` of the present ``center_indices`` over the clip, else of all present points.

    Returns None when no point of the clip is present.
    """
    for indices in (list(center_indices), list(range(clip.shape[1]))):
        if not indices:
            continue
        selected = present[:, indices]
        if selected.any():
            return clip[:, indices, :2][selected].astype(np.float64).mean(axis=0)
    return None


def random_affine_matrix(rng: np.random.Generator, *, rotation_deg: float = 0.0, shear: float = 0.0,
                         scale_range: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """``2 x 2`` matrix ``rotation @ shear @ scale`` with a uniform angle in ``±rotation_deg``,
    shear factors in ``±shear`` and an isotropic scale in ``scale_range``."""
    angle = math.radians(rng.uniform(-rotation_deg, rotation_deg)) if rotation_deg else 0.0
    shear_x, shear_y = (rng.uniform(-shear, shear, size=2) if shear else (0.0, 0.0))
    factor = rng.uniform(*scale_range) if scale_range[0] != scale_range[1] else scale_range[0]
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    shearing = np.array([[1.0, shear_x], [shear_y, 1.0]])
    return rotation @ shearing @ (factor * np.eye(2))


def affine_transform(clip: np.ndarray, matrix: np.ndarray, center: np.ndarray, *,
                     translation: tuple[float, float] = (0.0, 0.0), aspect_ratio: float = 1.0,
                     missing: MissingConvention = "nan", presence_channel: int | None = 3) -> np.ndarray:
    """``xy' = matrix @ (xy - center) + center + translation`` on the present points.

    With ``aspect_ratio`` = frame width / height, ``x`` is multiplied by it before the transform
    and divided after, so ``matrix`` acts on aspect-correct coordinates. ``center`` and
    ``translation`` are in the clip's own coordinates.
    """
    present = ~missing_points(clip, missing, presence_channel)
    stretch = np.array([aspect_ratio, 1.0])
    xy = (clip[..., :2].astype(np.float64) - center) * stretch
    moved = xy @ np.asarray(matrix, dtype=np.float64).T / stretch + center + np.asarray(translation)
    out = clip.copy()
    out[..., :2] = np.where(present[..., None], moved, clip[..., :2])
    return out


def resample_time(clip: np.ndarray, length: int, *, interpolation: Interpolation = "linear",
                  missing: MissingConvention = "nan", presence_channel: int | None = 3) -> np.ndarray:
    """The clip played at another speed: ``length`` frames spanning the same first and last frame.

    With ``"linear"``, a point present in both neighbouring source frames is interpolated (all
    channels but the presence channel, which is taken from the nearer frame); otherwise, and with
    ``"nearest"``, the nearer source frame is copied as is (ties: the later frame), so missing points
    stay missing.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    frames = clip.shape[0]
    source = np.linspace(0.0, frames - 1, length) if length > 1 else np.zeros(1)
    before = np.floor(source).astype(np.int64)
    after = np.minimum(before + 1, frames - 1)
    weight = source - before
    nearest = np.where(weight < 0.5, before, after)
    out = clip[nearest].copy()
    if interpolation == "nearest":
        return out
    if interpolation != "linear":
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    absent = missing_points(clip, missing, presence_channel)
    both = ~absent[before] & ~absent[after]  # [length, P]
    w = weight[:, None, None]
    with np.errstate(invalid="ignore"):
        blended = clip[before] * (1.0 - w) + clip[after] * w
    channels = [c for c in range(clip.shape[-1]) if c != presence_channel]
    out[..., channels] = np.where(both[..., None], blended[..., channels], out[..., channels])
    return out.astype(clip.dtype, copy=False)


def drop_frames(clip: np.ndarray, rate: float, rng: np.random.Generator, *, min_frames: int = 1) -> np.ndarray:
    """Remove each frame with probability ``rate``, keeping at least ``min(min_frames, T)`` frames."""
    frames = clip.shape[0]
    keep = rng.random(frames) >= rate
    needed = min(min_frames, frames)
    if keep.sum() < needed:
        keep[rng.choice(np.flatnonzero(~keep), size=needed - int(keep.sum()), replace=False)] = True
    return clip[keep]


def drop_points(clip: np.ndarray, rate: float, rng: np.random.Generator, *, missing: MissingConvention = "nan",
                presence_channel: int | None = 3) -> np.ndarray:
    """Make each present point of each frame missing with probability ``rate``."""
    where = (rng.random(clip.shape[:2]) < rate) & ~missing_points(clip, missing, presence_channel)
    return mark_missing(clip, where, missing, presence_channel)


def drop_part_segments(clip: np.ndarray, parts: Sequence[Sequence[int]], prob: float, max_fraction: float,
                       rng: np.random.Generator, *, missing: MissingConvention = "nan",
                       presence_channel: int | None = 3) -> np.ndarray:
    """Make each part (e.g. a hand) missing over one random run of frames, with probability ``prob`` per part.

    The run starts at a uniform frame and lasts 1 to ``max_fraction`` of the clip (at least one
    frame): the model learns to recognise a sign while a hand is briefly lost, as the pose
    estimator often loses it.
    """
    out = clip
    frames = clip.shape[0]
    for part in parts:
        if rng.random() >= prob:
            continue
        length = int(rng.integers(1, max(1, int(round(max_fraction * frames))) + 1))
        start = int(rng.integers(0, max(1, frames - length + 1)))
        where = np.zeros(clip.shape[:2], dtype=bool)
        where[start:start + length, list(part)] = True
        out = mark_missing(out, where & ~missing_points(out, missing, presence_channel), missing, presence_channel)
    return out


def _skeleton_defaults(skeleton: Skeleton) -> dict[str, tuple[int, ...]]:
    """``flip_index`` and ``center_indices`` (the shoulders) for ``skeleton``."""
    return {
        "flip_index": tuple(int(i) for i in flip_permutation(skeleton)),
        "center_indices": (skeleton.index("body.left_shoulder"), skeleton.index("body.right_shoulder")),
    }


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_range(name: str, value: tuple[float, float], low: float) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1]:
        raise ValueError(f"{name} must be (min, max) with {low} <= min <= max, got {value}")


@dataclass(frozen=True)
class PoseAugment:
    """Random pose augmentation of one clip; ``__call__(clip, rng)`` is deterministic given ``rng``.

    Order: flip, affine (rotation, shear, scale, translation), speed change, frame drop, point
    drop, part drop. Each ``*_prob`` is the probability of applying that transform to a clip.

    Attributes
    ----------
    flip_prob
        Horizontal flip with left/right swap; needs ``flip_index``.
    flip_index
        Permutation from :func:`flip_permutation`.
    flip_axis_x
        Mirror axis in ``x`` (0.5 for normalized image coordinates, 0 for centred ones).
    rotation_prob, max_rotation_deg
        Rotation by a uniform angle in ``±max_rotation_deg`` about the centre.
    shear_prob, max_shear
        Shear factors (x by y and y by x) uniform in ``±max_shear``.
    scale_prob, scale_range
        Isotropic scale uniform in ``scale_range`` about the centre.
    translate_prob, max_translate
        Shift of ``x`` and ``y`` uniform in ``±max_translate`` (clip units).
    speed_prob, speed_range
        Speed factor uniform in ``speed_range``; the new length is ``round(T / factor)``.
    interpolation
        ``"linear"`` or ``"nearest"`` for the speed change.
    frame_drop_rate
        Probability of removing each frame (0: off).
    point_drop_rate
        Probability of making each present point of each frame missing (0: off).
    part_drop_prob, part_drop_max_fraction, drop_parts
        With probability ``part_drop_prob`` per group of ``drop_parts`` (e.g. each hand's point
        indices), make that group missing over a random run of up to ``part_drop_max_fraction``
        of the frames (:func:`drop_part_segments`; 0: off).
    min_frames
        Fewest frames a speed change or frame drop may leave (never more than the clip had).
    center_indices
        Points whose mean over the clip is the centre of rotation/shear/scale (e.g. the
        shoulders); empty or absent means the centroid of all present points.
    missing, presence_channel
        Missing-point convention (see the module docstring).
    """

    flip_prob: float = 0.0
    flip_index: tuple[int, ...] | None = None
    flip_axis_x: float = 0.5
    rotation_prob: float = 0.5
    max_rotation_deg: float = 15.0
    shear_prob: float = 0.3
    max_shear: float = 0.1
    scale_prob: float = 0.5
    scale_range: tuple[float, float] = (0.9, 1.1)
    translate_prob: float = 0.3
    max_translate: float = 0.05
    speed_prob: float = 0.5
    speed_range: tuple[float, float] = (0.8, 1.25)
    interpolation: Interpolation = "linear"
    frame_drop_rate: float = 0.0
    point_drop_rate: float = 0.0
    part_drop_prob: float = 0.0
    part_drop_max_fraction: float = 0.5
    drop_parts: tuple[tuple[int, ...], ...] = ()
    min_frames: int = 4
    center_indices: tuple[int, ...] = ()
    missing: MissingConvention = "nan"
    presence_channel: int | None = 3

    def __post_init__(self) -> None:
        for name in ("flip_prob", "rotation_prob", "shear_prob", "scale_prob", "translate_prob", "speed_prob",
                     "frame_drop_rate", "point_drop_rate", "part_drop_prob", "part_drop_max_fraction"):
            _check_probability(name, getattr(self, name))
        for name in ("max_rotation_deg", "max_shear", "max_translate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        object.__setattr__(self, "scale_range", tuple(self.scale_range))
        object.__setattr__(self, "speed_range", tuple(self.speed_range))
        object.__setattr__(self, "center_indices", tuple(int(i) for i in self.center_indices))
        object.__setattr__(self, "drop_parts", tuple(tuple(int(i) for i in p) for p in self.drop_parts))
        if self.part_drop_prob > 0 and not self.drop_parts:
            raise ValueError("part_drop_prob > 0 needs drop_parts (the point indices of each part, e.g. the hands)")
        _check_range("scale_range", self.scale_range, 0.0)
        _check_range("speed_range", self.speed_range, 1e-6)
        if self.scale_range[0] <= 0:
            raise ValueError(f"scale_range must be positive, got {self.scale_range}")
        if self.flip_index is not None:
            flip = tuple(int(i) for i in self.flip_index)
            if sorted(flip) != list(range(len(flip))):
                raise ValueError("flip_index must be a permutation of 0..P-1")
            object.__setattr__(self, "flip_index", flip)
        if self.flip_prob > 0 and self.flip_index is None:
            raise ValueError("flip_prob > 0 needs flip_index (see flip_permutation / PoseAugment.for_skeleton)")
        if self.interpolation not in ("linear", "nearest"):
            raise ValueError(f"interpolation must be 'linear' or 'nearest', got {self.interpolation!r}")
        if self.missing not in ("nan", "zero"):
            raise ValueError(f"missing must be 'nan' or 'zero', got {self.missing!r}")
        if self.missing == "zero" and self.presence_channel is None:
            raise ValueError("missing='zero' needs presence_channel")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")

    @classmethod
    def for_skeleton(cls, skeleton: Skeleton, **settings: Any) -> PoseAugment:
        """Settings with ``flip_index`` from :func:`flip_permutation` and the shoulders as centre."""
        return cls(**{**_skeleton_defaults(skeleton), **settings})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, skeleton: Skeleton | None = None) -> PoseAugment:
        """Settings from a mapping (e.g. ``params.yaml``); unknown keys raise ``ValueError`` naming them.

        With ``skeleton``, ``flip_index`` and ``center_indices`` default as in :meth:`for_skeleton`.
        """
        defaults = _skeleton_defaults(skeleton) if skeleton is not None else {}
        return settings_from_dict(cls, {**defaults, **(data or {})}, label="augmentation")

    def __call__(self, clip: np.ndarray, rng: np.random.Generator, *, aspect_ratio: float = 1.0) -> np.ndarray:
        """Augmented copy of ``clip`` ``[T, P, C >= 2]`` (the number of frames may change).

        Parameters
        ----------
        clip
            One clip, ``x`` and ``y`` in channels 0 and 1.
        rng
            Source of randomness (seed it for reproducibility).
        aspect_ratio
            Frame width / height when ``x`` and ``y`` are normalized separately (MediaPipe's
            image coordinates); 1 for aspect-correct coordinates.
        """
        clip = np.asarray(clip)
        if clip.ndim != 3 or clip.shape[-1] < 2 or clip.shape[0] < 1:
            raise ValueError(f"clip must have shape [T >= 1, P, C >= 2], got {clip.shape}")
        if not np.issubdtype(clip.dtype, np.floating):
            clip = clip.astype(np.float32)
        conv = {"missing": self.missing, "presence_channel": self.presence_channel}
        out = clip.copy()
        if self.flip_index is not None and rng.random() < self.flip_prob:
            out = horizontal_flip(out, np.asarray(self.flip_index), axis_x=self.flip_axis_x, **conv)
        out = self._random_affine(out, rng, aspect_ratio)
        if rng.random() < self.speed_prob:
            factor = rng.uniform(*self.speed_range)
            length = max(min(self.min_frames, out.shape[0]), round(out.shape[0] / factor))
            out = resample_time(out, length, interpolation=self.interpolation, **conv)
        if self.frame_drop_rate > 0:
            out = drop_frames(out, self.frame_drop_rate, rng, min_frames=self.min_frames)
        if self.point_drop_rate > 0:
            out = drop_points(out, self.point_drop_rate, rng, **conv)
        if self.part_drop_prob > 0:
            out = drop_part_segments(out, self.drop_parts, self.part_drop_prob, self.part_drop_max_fraction, rng, **conv)
        return out.astype(clip.dtype, copy=False)

    def _random_affine(self, clip: np.ndarray, rng: np.random.Generator, aspect_ratio: float) -> np.ndarray:
        rotate = rng.random() < self.rotation_prob
        shear = rng.random() < self.shear_prob
        scale = rng.random() < self.scale_prob
        translate = rng.random() < self.translate_prob
        if not (rotate or shear or scale or translate):
            return clip
        matrix = random_affine_matrix(rng, rotation_deg=self.max_rotation_deg if rotate else 0.0,
                                      shear=self.max_shear if shear else 0.0,
                                      scale_range=self.scale_range if scale else (1.0, 1.0))
        shift = tuple(rng.uniform(-self.max_translate, self.max_translate, size=2)) if translate else (0.0, 0.0)
        present = ~missing_points(clip, self.missing, self.presence_channel)
        center = clip_center(clip, present, self.center_indices)
        if center is None:
            return clip
        return affine_transform(clip, matrix, center, translation=shift, aspect_ratio=aspect_ratio,
                                missing=self.missing, presence_channel=self.presence_channel)
