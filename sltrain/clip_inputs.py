"""Inputs of the RGB and hand-crop models: from stored frames or hand crops to the tensors they read.

The pose models read keypoints through :class:`sltrain.inputs.InputSpec`; the two image models
read the frames stage's output (:class:`sldata.frames.FrameStore`) or the hand-crop stage's
(:class:`sldata.pose.handcrop_stage.HandCropStore`) through a :class:`ClipInputSpec`, its
sibling, which travels in their checkpoints (``input_spec``, with ``kind`` ``"rgb"`` or
``"hands"``):

``rgb`` (:class:`sltrain.models.rgb_s3d.RGBS3D`)
    A clip's frames ``uint8 [L, S, S, 3]`` become exactly ``num_frames`` frames
    (:func:`segment_indices`: one per equal segment, its centre; a short clip repeats frames),
    resized to ``size x size`` (the whole frame; area averaging), scaled to ``[0, 1]``,
    standardized with ``mean``/``std`` and laid out ``float32 [3, T, size, size]``.
``hands`` (:class:`sltrain.models.vtn.VTN`)
    A clip's crops ``uint8 [L, 2, S, S, 3]`` (signer's left hand, then right) and its keypoints
    ``[L, P, 4]`` share one timeline (crop ``t`` was cut from the frame of ``keypoints[t]``).
    The keypoints become features with :attr:`ClipInputSpec.pose` (an :class:`InputSpec`, as
    the pose models use: normalized positions, pose flow, presence, ...) over the whole clip;
    then at most ``num_frames`` frames are kept (:func:`sltrain.inputs.temporal_indices`) for
    both, the crops resized to ``size`` and laid out ``float32 [T, 2, 3, size, size]`` in
    ``[0, 1]`` (the VTN standardizes them itself). Shorter clips are padded and masked.

Training augmentations (:class:`ClipAugment`, drawn per clip from a seeded generator, so a
clip's augmentation depends only on the seed, the epoch and the clip): a random temporal crop
and a random frame within each segment, a random square crop of the frames (one box for the
whole clip) resized to ``size``, brightness and contrast jitter, and a horizontal mirror. A
mirror of a hand-crop clip also swaps the hands and mirrors the keypoints with their left and
right points swapped (:func:`sltrain.augment.horizontal_flip`), as mirroring the video would:
handedness matters in signing, so a mirrored left hand must land in the right hand's slot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import cv2
import numpy as np

from sldata.settings import settings_from_dict
from sltrain.augment import flip_permutation, horizontal_flip
from sltrain.inputs import InputSpec, hand_local_coordinates, temporal_indices
from sltrain.models.rgb_s3d import KINETICS_MEAN, KINETICS_STD

CLIP_KINDS: tuple[str, ...] = ("rgb", "hands")


def is_clip_spec(spec: Mapping[str, Any]) -> bool:
    """Whether an ``input_spec`` dict of a checkpoint is a :class:`ClipInputSpec` (else a pose spec)."""
    return isinstance(spec, Mapping) and spec.get("kind") in CLIP_KINDS


@dataclass(frozen=True)
class ClipInputSpec:
    """How stored RGB frames or hand crops become model input (stored in checkpoints).

    Attributes
    ----------
    kind
        ``"rgb"`` (frames stage, :class:`~sltrain.models.rgb_s3d.RGBS3D`) or ``"hands"``
        (hand-crop stage and packed keypoints, :class:`~sltrain.models.vtn.VTN`).
    num_frames
        ``rgb``: frames per clip, exactly; ``hands``: at most (padded and masked below).
    size
        Side of the square images given to the model.
    mean, std
        Per-channel standardization of ``rgb`` frames in ``[0, 1]`` (unused for ``hands``).
    pose
        ``hands``: :meth:`sltrain.inputs.InputSpec.to_dict` of the keypoint features; its
        ``num_frames`` is this spec's.
    source
        What the stored images are (the frames or hand_crops params that made them, the
        keypoint frame rate), to prepare a new clip the same way.
    """

    kind: str
    num_frames: int
    size: int
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    pose: dict[str, Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in CLIP_KINDS:
            raise ValueError(f"clip input kind must be one of {CLIP_KINDS}, got {self.kind!r}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.kind == "hands":
            if self.pose is None:
                raise ValueError("a 'hands' input spec needs the keypoint features ('pose')")
            if int(self.pose["num_frames"]) != self.num_frames:
                raise ValueError("the keypoint features must have the spec's num_frames")

    @cached_property
    def pose_spec(self) -> InputSpec:
        """The keypoint features of a ``hands`` spec."""
        if self.pose is None:
            raise ValueError(f"a {self.kind!r} input spec has no keypoint features")
        return InputSpec.from_dict(self.pose)

    def describe(self) -> str:
        """One line for logs."""
        if self.kind == "rgb":
            return f"RGB {self.num_frames} frames x {self.size}x{self.size}"
        pose = self.pose_spec
        return (f"hand crops {self.size}x{self.size} x 2 and {pose.num_points} points x {pose.num_channels} channels, "
                f"up to {self.num_frames} frames")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_frames": self.num_frames, "size": self.size, "mean": list(self.mean),
                "std": list(self.std), "pose": None if self.pose is None else dict(self.pose),
                "source": dict(self.source)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClipInputSpec:
        return cls(kind=str(d["kind"]), num_frames=int(d["num_frames"]), size=int(d["size"]),
                   mean=tuple(d.get("mean", KINETICS_MEAN)), std=tuple(d.get("std", KINETICS_STD)),
                   pose=None if d.get("pose") is None else dict(d["pose"]), source=dict(d.get("source", {})))


@dataclass(frozen=True)
class ClipAugment:
    """Training augmentation of an RGB or hand-crop clip (the ``augment`` of ``train_rgb``/``train_hands``).

    Attributes
    ----------
    flip_prob
        Probability of a horizontal mirror (hands: with the left/right swap, see the module docs).
    crop_scale_min, crop_scale_max
        Area range of the random square crop, as a fraction of the image (1, 1: no crop).
    time_crop_min
        Least fraction of the clip's frames kept by a random temporal crop (1: none).
    temporal_jitter
        Take a random frame of each temporal segment instead of its centre.
    color_jitter
        Brightness and contrast are multiplied by factors drawn from ``1 +- color_jitter``.
    """

    flip_prob: float = 0.0
    crop_scale_min: float = 1.0
    crop_scale_max: float = 1.0
    time_crop_min: float = 1.0
    temporal_jitter: bool = False
    color_jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if not 0.0 < self.crop_scale_min <= self.crop_scale_max <= 1.0:
            raise ValueError(f"need 0 < crop_scale_min <= crop_scale_max <= 1, got "
                             f"{self.crop_scale_min}, {self.crop_scale_max}")
        if not 0.0 < self.time_crop_min <= 1.0:
            raise ValueError(f"time_crop_min must be in (0, 1], got {self.time_crop_min}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClipAugment:
        return settings_from_dict(cls, data, "augment")

    def draw(self, rng: np.random.Generator, length: int) -> ClipDraw:
        """The random choices for one clip of ``length`` frames (always the same number of draws)."""
        u = rng.random(8)
        keep = max(1, min(length, math.ceil(length * (self.time_crop_min + u[0] * (1.0 - self.time_crop_min)))))
        start = min(length - keep, int(u[1] * (length - keep + 1)))
        side = math.sqrt(self.crop_scale_min + u[2] * (self.crop_scale_max - self.crop_scale_min))
        box = (u[3] * (1.0 - side), u[4] * (1.0 - side), side)
        brightness = 1.0 + self.color_jitter * (2.0 * u[5] - 1.0)
        contrast = 1.0 + self.color_jitter * (2.0 * u[6] - 1.0)
        return ClipDraw(start=start, stop=start + keep, box=box, flip=bool(u[7] < self.flip_prob),
                        brightness=brightness, contrast=contrast, jitter=self.temporal_jitter)


@dataclass(frozen=True)
class ClipDraw:
    """One clip's augmentation: temporal window ``[start, stop)``, crop box ``(x0, y0, side)`` as
    fractions of the image, mirror, brightness and contrast factors, per-segment jitter."""

    start: int
    stop: int
    box: tuple[float, float, float] = (0.0, 0.0, 1.0)
    flip: bool = False
    brightness: float = 1.0
    contrast: float = 1.0
    jitter: bool = False


def segment_indices(length: int, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Exactly ``num_frames`` indices into ``length`` frames: one per equal segment.

    The segment's centre, or a random frame of it with ``rng``. A clip shorter than
    ``num_frames`` repeats frames (segments narrower than a frame). Equals
    :func:`sltrain.inputs.temporal_indices` when ``length >= num_frames``.
    """
    if length < 1:
        raise ValueError("a clip needs at least one frame")
    edges = np.linspace(0, length, num_frames + 1)
    offset = 0.5 if rng is None else rng.random(num_frames)
    idx = edges[:-1] + offset * (edges[1:] - edges[:-1])
    return np.clip(np.floor(idx).astype(np.int64), 0, length - 1)


def _window_indices(length: int, num_frames: int, draw: ClipDraw | None, rng: np.random.Generator | None,
                    exact: bool) -> np.ndarray:
    start, stop = (0, length) if draw is None else (draw.start, draw.stop)
    jitter_rng = rng if draw is not None and draw.jitter else None
    pick = segment_indices if exact else temporal_indices
    return start + pick(stop - start, num_frames, jitter_rng)


def crop_resize(images: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """Cut the square ``box`` (fractions ``x0, y0, side`` of each image) from ``uint8 [N, H, W, 3]``
    images and resize to ``[N, size, size, 3]`` (area averaging when shrinking, else bilinear)."""
    n, height, width = images.shape[:3]
    x0, y0 = int(round(box[0] * width)), int(round(box[1] * height))
    w = max(1, min(width - x0, int(round(box[2] * width))))
    h = max(1, min(height - y0, int(round(box[2] * height))))
    interp = cv2.INTER_AREA if w * h > size * size else cv2.INTER_LINEAR
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        region = np.ascontiguousarray(images[i, y0:y0 + h, x0:x0 + w])
        out[i] = region if (h, w) == (size, size) else cv2.resize(region, (size, size), interpolation=interp)
    return out


def _photometric(images: np.ndarray, draw: ClipDraw | None) -> np.ndarray:
    """``uint8`` images as ``float32`` in ``[0, 1]``, with the draw's contrast and brightness."""
    x = images.astype(np.float32) * np.float32(1.0 / 255.0)
    if draw is not None and (draw.contrast != 1.0 or draw.brightness != 1.0):
        mean = np.float32(x.mean())
        x = np.clip(((x - mean) * np.float32(draw.contrast) + mean) * np.float32(draw.brightness), 0.0, 1.0)
    return x


def rgb_clip_input(frames: np.ndarray, spec: ClipInputSpec, augment: ClipAugment | None = None,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Model input ``float32 [3, num_frames, size, size]`` of one clip's frames ``uint8 [L, S, S, 3]``.

    Deterministic (whole frame, segment centres) unless both ``augment`` and ``rng`` are given.
    """
    draw = augment.draw(rng, len(frames)) if augment is not None and rng is not None else None
    idx = _window_indices(len(frames), spec.num_frames, draw, rng, exact=True)
    images = crop_resize(np.asarray(frames[idx]), draw.box if draw is not None else (0.0, 0.0, 1.0), spec.size)
    if draw is not None and draw.flip:
        images = images[:, :, ::-1]
    x = _photometric(images, draw)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


def pose_features(keypoints: np.ndarray, width: float, height: float, pose: InputSpec) -> np.ndarray:
    """Features ``[L, P, C]`` of every frame of a clip (as :func:`sltrain.inputs.clip_features`, unsampled)."""
    from sldata.pose.features import build_features

    feats = build_features(np.asarray(keypoints, dtype=np.float32), width, height, pose.skeleton_obj,
                           pose.feature_settings)
    if pose.hand_local:
        feats = np.concatenate([feats, hand_local_coordinates(feats, pose.skeleton_obj)], axis=-1)
    return feats[:, pose.point_indices]


def hand_clip_input(crops: np.ndarray, keypoints: np.ndarray, width: float, height: float, spec: ClipInputSpec,
                    augment: ClipAugment | None = None,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Model input of one clip: hands ``float32 [T, 2, 3, size, size]`` and pose ``float32 [T, P, C]``.

    ``crops`` ``uint8 [L, 2, S, S, 3]`` and ``keypoints`` ``[L, P_all, 4]`` share the timeline;
    ``T <= num_frames``. Deterministic unless both ``augment`` and ``rng`` are given.
    """
    if len(crops) != len(keypoints):
        raise ValueError(f"{len(crops)} hand-crop frames but {len(keypoints)} keypoint frames")
    pose = spec.pose_spec
    draw = augment.draw(rng, len(crops)) if augment is not None and rng is not None else None
    kp = np.asarray(keypoints, dtype=np.float32)
    if draw is not None and draw.flip:
        kp = horizontal_flip(kp, _flip_index(pose))
    feats = pose_features(kp, width, height, pose)
    idx = _window_indices(len(crops), spec.num_frames, draw, rng, exact=False)
    picked = np.asarray(crops[idx])  # [T, 2, S, S, 3]
    t = len(idx)
    images = crop_resize(picked.reshape(t * 2, *picked.shape[2:]), draw.box if draw is not None else (0.0, 0.0, 1.0),
                         spec.size).reshape(t, 2, spec.size, spec.size, 3)
    if draw is not None and draw.flip:
        images = images[:, ::-1, :, ::-1]  # swap the hands and mirror each crop
    hands = _photometric(images, draw).transpose(0, 1, 4, 2, 3)
    return np.ascontiguousarray(hands), np.ascontiguousarray(feats[idx])


_FLIP_CACHE: dict[str, np.ndarray] = {}


def _flip_index(pose: InputSpec) -> np.ndarray:
    key = pose.to_json()
    if key not in _FLIP_CACHE:
        _FLIP_CACHE[key] = flip_permutation(pose.skeleton_obj)
    return _FLIP_CACHE[key]
