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

Only the points the model reads (plus the shoulders the normalization needs, the eyes pose flow
needs and the wrists ``canonical_hand`` needs: :attr:`InputSpec.layout`) are cut from the
skeleton before any of this (:func:`select_input_points`); every step is per point or uses only
those points, so the result is the same as computing on the whole skeleton, at a fraction of
the cost (the face mesh is most of the skeleton).

With ``canonical_hand``, a clip whose left wrist travels further than its right wrist is
mirrored (:func:`dominant_hand_mirror`) before step 1, so the dominant hand of left- and
right-handed signers lands in the same slot; mirroring is a left/right swap of the points and
``x -> 1 - x``, exactly what a mirrored video would give.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from sldata.pose.features import FeatureSettings, build_features, feature_channels
from sldata.pose.flow import pixel_xy
from sldata.pose.skeleton import PointSubset, Skeleton
from sltrain.augment import horizontal_flip, subset_flip_permutation

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
    hand_local
        Append each hand point's position relative to its wrist, in hand sizes.
    canonical_hand
        Mirror clips whose left wrist moves more than the right (:func:`dominant_hand_mirror`).
    recording
        How the training keypoints were recorded (``recording`` of the pack's ``skeleton.json``,
        :func:`sldata.pose.store.recording_record`): ``pose_settings`` (frame step, Holistic
        thresholds), ``keypoint_fps`` and ``clip_seconds``. Inference reproduces it
        (:meth:`frame_step_for`, :meth:`estimator_settings`); empty for models made before it
        was recorded (every frame, Holistic's default thresholds).
    """

    skeleton: dict[str, Any]
    points: tuple[str, ...]
    features: dict[str, bool] = field(default_factory=lambda: asdict(FeatureSettings()))
    num_frames: int = 64
    hand_local: bool = False
    canonical_hand: bool = False
    recording: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(self.points))
        names = self.skeleton_obj.point_names
        unknown = [p for p in self.points if p not in names]
        if unknown:
            raise ValueError(f"input spec names point(s) not in the skeleton: {unknown[:5]}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        FeatureSettings.from_dict(self.features)

    @property
    def pose_settings(self) -> dict[str, Any]:
        """The keypoint settings of the training data (empty when not recorded)."""
        return dict(self.recording.get("pose_settings") or {})

    @property
    def frame_step(self) -> int:
        """Every how many decoded frames training estimated keypoints (1 when not recorded)."""
        return int(self.pose_settings.get("frame_step", 1))

    @property
    def keypoint_fps(self) -> float | None:
        """Median keypoint rate of the training clips (frames per second), ``None`` when not recorded."""
        v = self.recording.get("keypoint_fps")
        return float(v) if v else None

    @property
    def clip_seconds(self) -> float | None:
        """Median duration of the training clips in seconds, ``None`` when not recorded."""
        v = self.recording.get("clip_seconds")
        return float(v) if v else None

    def frame_step_for(self, video_fps: float | None) -> int:
        """The frame step giving a ``video_fps`` video the keypoint rate training saw.

        ``round(video_fps / keypoint_fps)`` (at least 1): a 25 fps clip gets the step of the
        training pipeline (2 at 12.5 keypoints/s) and so exactly its frames; a 60 fps webcam gets 5.
        Without a known rate on either side, the training pipeline's own ``frame_step``.
        """
        if video_fps and self.keypoint_fps:
            return max(1, int(round(float(video_fps) / self.keypoint_fps)))
        return self.frame_step

    def estimator_settings(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sldata.pose.estimator.make_estimator` that training's keypoints used
        (the engine, ``mediapipe`` unless recorded otherwise, Holistic's settings and the openvino
        engine's options)."""
        settings = {"estimator": self.pose_settings.get("estimator", "mediapipe"), "face": self.skeleton_obj.face}
        for key in ("model_complexity", "min_detection_confidence", "min_tracking_confidence"):
            if key in self.pose_settings:
                settings[key] = self.pose_settings[key]
        if settings["estimator"] == "openvino":  # the engine's options (precision, second chance) when recorded
            settings.update(self.pose_settings.get("openvino") or {})
        return settings

    @cached_property
    def skeleton_obj(self) -> Skeleton:
        return Skeleton.from_dict(self.skeleton)

    @cached_property
    def feature_settings(self) -> FeatureSettings:
        return FeatureSettings.from_dict(self.features)

    @cached_property
    def layout(self) -> PointSubset:
        """The points cut from the skeleton: :attr:`points` first, then those only the computation needs."""
        needed = list(self.points)
        extra = []
        if self.feature_settings.normalize or self.feature_settings.pose_flow:
            extra += ["body.left_shoulder", "body.right_shoulder"]
        if self.feature_settings.pose_flow:
            extra += ["body.left_eye", "body.right_eye"]
        if self.canonical_hand:
            extra += ["body.left_wrist", "body.right_wrist"]
        needed += [p for p in dict.fromkeys(extra) if p not in needed]
        return PointSubset(self.skeleton_obj, tuple(needed))

    @cached_property
    def layout_flip(self) -> np.ndarray:
        """:func:`sltrain.augment.flip_permutation` on :attr:`layout` (its points must be left/right symmetric)."""
        return subset_flip_permutation(self.skeleton_obj, self.layout.names)

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
                "num_frames": self.num_frames, "hand_local": self.hand_local, "canonical_hand": self.canonical_hand,
                "recording": dict(self.recording)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputSpec:
        return cls(skeleton=dict(d["skeleton"]), points=tuple(d["points"]), features=dict(d["features"]),
                   num_frames=int(d["num_frames"]), hand_local=bool(d.get("hand_local", False)),
                   canonical_hand=bool(d.get("canonical_hand", False)), recording=dict(d.get("recording") or {}))


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
    points = canonical_points(select_input_points(keypoints, spec), width, height, spec)
    return input_features(points, width, height, spec, rng)


def select_input_points(keypoints: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The points of :attr:`InputSpec.layout` from raw keypoints ``[T, P_all, 4]``, float32 ``[T, P_layout, 4]``."""
    kp = np.asarray(keypoints)
    if kp.ndim != 3 or kp.shape[1] != spec.skeleton_obj.num_points or kp.shape[2] != 4:
        raise ValueError(f"keypoints must have shape [frames, {spec.skeleton_obj.num_points}, 4] for this skeleton "
                         f"(face={spec.skeleton_obj.face!r}), got {list(kp.shape)}")
    return np.ascontiguousarray(kp[:, spec.layout.source_indices], dtype=np.float32)


def canonical_points(points: np.ndarray, width: float, height: float, spec: InputSpec) -> np.ndarray:
    """``points`` (cut to :attr:`InputSpec.layout`) mirrored when ``canonical_hand`` and the left hand dominates."""
    if spec.canonical_hand and dominant_hand_mirror(points, width, height, spec.layout):
        return horizontal_flip(points, spec.layout_flip)
    return points


def input_features(points: np.ndarray, width: float, height: float, spec: InputSpec,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Model input ``[T', P, C]`` of keypoints cut to :attr:`InputSpec.layout` and made canonical
    (:func:`canonical_points`; training augments them in between)."""
    kp = np.asarray(points, dtype=np.float32)
    feats = build_features(kp, width, height, spec.layout, spec.feature_settings)
    if spec.hand_local:
        feats = np.concatenate([feats, hand_local_coordinates(feats, spec.layout)], axis=-1)
    feats = feats[:, : spec.num_points]
    return np.ascontiguousarray(feats[temporal_indices(len(feats), spec.num_frames, rng)])


def dominant_hand_mirror(keypoints: np.ndarray, width: float, height: float,
                         layout: Skeleton | PointSubset) -> bool:
    """Whether a clip should be mirrored to put its dominant hand on the right: True when the left wrist
    travels further than the right one.

    The distance is the sum of the wrist's frame-to-frame displacements in pixels over pairs of
    consecutive frames where it was detected (the body model's wrists: found in almost every
    frame, unlike the hands). The signing hand moves; the other one rests or mirrors it. A tie
    (e.g. no wrist detected) keeps the clip as it is.
    """
    travelled = []
    for side in ("left", "right"):
        xy = pixel_xy(keypoints[:, layout.index(f"body.{side}_wrist")][:, None], width, height)[:, 0]
        step = np.linalg.norm(np.diff(xy, axis=0), axis=-1)
        travelled.append(float(step[np.isfinite(step)].sum()))
    return travelled[0] > travelled[1]


def hand_local_coordinates(feats: np.ndarray, skeleton: Skeleton | PointSubset) -> np.ndarray:
    """``[T, P, 2]``: each hand point's x, y minus its wrist's, over the hand's size in that frame.

    ``feats`` is :func:`sldata.pose.features.build_features` output (x, y first, ``present``
    last) in the layout ``skeleton``. Body and face points, hands the layout lacks, and frames
    where the hand or its size is missing, get 0.
    """
    out = np.zeros((*feats.shape[:2], 2), dtype=np.float32)
    present = feats[..., -1] > 0
    for part in ("left_hand", "right_hand"):
        try:
            sl = skeleton.part_slice(part)
        except KeyError:
            continue
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
