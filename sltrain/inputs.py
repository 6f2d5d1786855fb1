"""The model input specification: from a clip's raw keypoints to the tensor a pose model reads.

One :class:`InputSpec` travels inside every checkpoint and exported model, so training,
evaluation, export and ``predict`` turn keypoints into model input the same way:

1. the raw keypoints ``[T, P_all, 4]`` in the skeleton the pose stage wrote (see
   :mod:`sldata.pose.skeleton`) become feature channels with
   :func:`sldata.pose.features.build_features` (``features``: normalized coordinates,
   velocities, pose flow, a presence channel; computed on the whole skeleton so the shoulder
   scale is always available);
2. the points named in ``points`` are kept, in that order;
3. with ``hand_local``, two channels are appended: each hand point's x, y relative to its own
   wrist, divided by that hand's size (wrist to middle-finger knuckle) in the same frame, so
   the model sees hand shape apart from where the hand is (0 for body points and missing hands);
4. the clip is brought to at most ``num_frames`` frames by uniform temporal sampling
   (:func:`temporal_indices`; random jitter within each segment while training, segment
   centres otherwise); shorter clips are padded and masked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from sldata.pose.features import FeatureSettings, build_features, feature_channels
from sldata.pose.skeleton import Skeleton

UPPER_BODY: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip",
)
"""Body points kept by the ``upper_body_hands`` preset: the legs, feet and finger stubs of the
body model carry nothing for signs (the hand models give the fingers)."""


def point_preset(name: str, skeleton: Skeleton) -> tuple[str, ...]:
    """Qualified point names of a preset: ``upper_body_hands``, ``upper_body_hands_face`` or ``all``."""
    hands = tuple(f"{part}.{p}" for part in ("left_hand", "right_hand") for p in skeleton.parts["left_hand"])
    upper = tuple(f"body.{p}" for p in UPPER_BODY)
    if name == "upper_body_hands":
        return upper + hands
    if name == "upper_body_hands_face":
        face = tuple(f"face.{p}" for p in skeleton.parts.get("face", ()))
        if not face:
            raise ValueError("point preset 'upper_body_hands_face' needs pose.face other than 'none'")
        return upper + hands + face
    if name == "all":
        return skeleton.point_names
    raise ValueError(f"unknown point preset {name!r}; use upper_body_hands, upper_body_hands_face or all")


@dataclass(frozen=True)
class InputSpec:
    """How keypoints become model input (stored in checkpoints and exported models).

    Attributes
    ----------
    skeleton
        :meth:`Skeleton.to_dict` of the keypoints the pose stage writes.
    points
        Qualified names of the points fed to the model, in order.
    features
        :class:`FeatureSettings` as a dict.
    num_frames
        Longest clip the model sees; longer clips are sampled uniformly down to it.
    """

    skeleton: dict[str, Any]
    points: tuple[str, ...]
    features: dict[str, bool] = field(default_factory=lambda: asdict(FeatureSettings()))
    num_frames: int = 64
    hand_local: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(self.points))
        names = self.skeleton_obj.point_names
        unknown = [p for p in self.points if p not in names]
        if unknown:
            raise ValueError(f"input spec names point(s) not in the skeleton: {unknown[:5]}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        FeatureSettings.from_dict(self.features)

    @cached_property
    def skeleton_obj(self) -> Skeleton:
        return Skeleton.from_dict(self.skeleton)

    @cached_property
    def feature_settings(self) -> FeatureSettings:
        return FeatureSettings.from_dict(self.features)

    @cached_property
    def point_indices(self) -> np.ndarray:
        names = self.skeleton_obj.point_names
        return np.array([names.index(p) for p in self.points], dtype=np.int64)

    @property
    def channels(self) -> list[str]:
        return feature_channels(self.feature_settings) + (["hand_local_x", "hand_local_y"] if self.hand_local else [])

    @property
    def num_points(self) -> int:
        return len(self.points)

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    def to_dict(self) -> dict[str, Any]:
        return {"skeleton": dict(self.skeleton), "points": list(self.points), "features": dict(self.features),
                "num_frames": self.num_frames, "hand_local": self.hand_local}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputSpec:
        return cls(skeleton=dict(d["skeleton"]), points=tuple(d["points"]), features=dict(d["features"]),
                   num_frames=int(d["num_frames"]), hand_local=bool(d.get("hand_local", False)))


def temporal_indices(length: int, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices bringing a clip of ``length`` frames to at most ``num_frames``.

    Clips no longer than ``num_frames`` keep every frame. Longer ones are cut into
    ``num_frames`` equal segments and one frame is taken from each: a random one when ``rng``
    is given (training), the segment's centre otherwise (evaluation, deterministic).
    """
    if length <= num_frames:
        return np.arange(length)
    edges = np.linspace(0, length, num_frames + 1)
    if rng is None:
        idx = (edges[:-1] + edges[1:]) / 2
    else:
        idx = edges[:-1] + rng.random(num_frames) * (edges[1:] - edges[:-1])
    return np.clip(np.floor(idx).astype(np.int64), 0, length - 1)


def clip_features(keypoints: np.ndarray, width: float, height: float, spec: InputSpec,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Model input ``[T', P, C]`` (``T' <= num_frames``) of one clip's raw keypoints ``[T, P_all, 4]``."""
    feats = build_features(np.asarray(keypoints, dtype=np.float32), width, height, spec.skeleton_obj,
                           spec.feature_settings)
    if spec.hand_local:
        feats = np.concatenate([feats, hand_local_coordinates(feats, spec.skeleton_obj)], axis=-1)
    feats = feats[:, spec.point_indices]
    return np.ascontiguousarray(feats[temporal_indices(len(feats), spec.num_frames, rng)])


def hand_local_coordinates(feats: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """``[T, P_all, 2]``: each hand point's x, y minus its wrist's, over the hand's size in that frame.

    ``feats`` is :func:`sldata.pose.features.build_features` output (x, y first, ``present``
    last). Body and face points, and frames where the hand or its size is missing, get 0.
    """
    out = np.zeros((*feats.shape[:2], 2), dtype=np.float32)
    present = feats[..., -1] > 0
    for part in ("left_hand", "right_hand"):
        sl = skeleton.part_slice(part)
        xy = feats[:, sl, :2]
        wrist = xy[:, :1]
        size = np.linalg.norm(xy[:, 9] - xy[:, 0], axis=-1)  # wrist to middle-finger knuckle
        ok = present[:, sl.start] & present[:, sl.start + 9] & (size > 1e-6)
        local = (xy - wrist) / np.where(ok, size, 1.0)[:, None, None]
        out[:, sl] = np.where((ok[:, None] & present[:, sl])[..., None], local, 0.0)
    return out


def pad_batch(clips: Sequence[np.ndarray], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack clips ``[T_i, P, C]`` into ``[B, num_frames, P, C]`` zero-padded, with a ``[B, num_frames]`` mask."""
    if not clips:
        raise ValueError("empty batch")
    p, c = clips[0].shape[1:]
    out = np.zeros((len(clips), num_frames, p, c), dtype=np.float32)
    mask = np.zeros((len(clips), num_frames), dtype=bool)
    for i, clip in enumerate(clips):
        t = min(len(clip), num_frames)
        out[i, :t] = clip[:t]
        mask[i, :t] = True
    return out, mask
