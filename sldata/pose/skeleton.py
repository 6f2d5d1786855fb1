"""The keypoint layout every pose artifact uses: which points, in which order, which components.

A clip's keypoints are one float32 array ``[frames, points, 4]`` whose last axis is
:data:`COMPONENTS` = ``(x, y, z, confidence)``:

* ``x``, ``y``: MediaPipe's normalized image coordinates (0..1 of the frame width and height,
  origin top-left, y down); ``z``: MediaPipe's relative depth (same scale as ``x``).
* ``confidence``: the body's ``visibility``; 1.0 for detected hand and face points, which have
  no per-point score.
* A point that was not detected (a hand out of view, no person) is **missing**: ``x``, ``y``,
  ``z`` are NaN and ``confidence`` is 0. Use :func:`present` rather than testing for zeros.

Points are the concatenation of parts, in this order: ``body`` (33 MediaPipe Pose landmarks),
``left_hand`` (21), ``right_hand`` (21), then ``face`` (none, a documented subset, or the full
468-point mesh; chosen by ``pose.face`` in params). "left" and "right" are the signer's, as
MediaPipe Holistic reports them.

The face subset (93 points) keeps what carries meaning in signing: the lips (40), both eyes
(2 x 16), both eyebrows (2 x 10) and the nose tip (mesh index 1); indices come from MediaPipe's
``FACEMESH_*`` connection sets and are listed in :data:`FACE_SUBSET`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

COMPONENTS: tuple[str, ...] = ("x", "y", "z", "confidence")

BODY_POINTS: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)
HAND_POINTS: tuple[str, ...] = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_finger_mcp",
    "index_finger_pip", "index_finger_dip", "index_finger_tip", "middle_finger_mcp",
    "middle_finger_pip", "middle_finger_dip", "middle_finger_tip", "ring_finger_mcp",
    "ring_finger_pip", "ring_finger_dip", "ring_finger_tip", "pinky_mcp", "pinky_pip",
    "pinky_dip", "pinky_tip",
)
FACE_MESH_SIZE = 468

_LIPS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185,
         191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
_LEFT_EYE = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
_RIGHT_EYE = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)
_LEFT_EYEBROW = (276, 282, 283, 285, 293, 295, 296, 300, 334, 336)
_RIGHT_EYEBROW = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107)
_NOSE_TIP = (1,)
FACE_SUBSET: tuple[int, ...] = tuple(sorted(set(_LIPS + _LEFT_EYE + _RIGHT_EYE + _LEFT_EYEBROW
                                                + _RIGHT_EYEBROW + _NOSE_TIP)))

FaceMode = Literal["none", "subset", "full"]
FACE_MODES: tuple[str, ...] = ("none", "subset", "full")

# Edges for drawing (indices within a part).
BODY_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13),
    (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20),
    (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
    (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
)
HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
    (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)


def face_indices(mode: str) -> tuple[int, ...]:
    """Face-mesh indices kept for ``mode`` (``none``, ``subset`` or ``full``)."""
    if mode == "none":
        return ()
    if mode == "subset":
        return FACE_SUBSET
    if mode == "full":
        return tuple(range(FACE_MESH_SIZE))
    raise ValueError(f"face mode must be one of {FACE_MODES}, got {mode!r}")


@dataclass(frozen=True)
class Skeleton:
    """Names and order of the points of a keypoint array, plus how they were made.

    Attributes
    ----------
    face
        Face mode (``none``, ``subset``, ``full``).
    estimator, estimator_version
        What produced the points (e.g. ``mediapipe-holistic``, ``0.10.21 model_complexity=1``).
    """

    face: str = "subset"
    estimator: str = "mediapipe-holistic"
    estimator_version: str = ""
    components: tuple[str, ...] = field(default=COMPONENTS)
    coordinates: str = ("x, y normalized to 0..1 of frame width/height, origin top-left, y down; "
                        "z MediaPipe relative depth; missing points are NaN with confidence 0")

    def __post_init__(self) -> None:
        face_indices(self.face)  # validates

    @cached_property
    def parts(self) -> dict[str, tuple[str, ...]]:
        """Part name -> point names, in array order."""
        face = tuple(f"face_{i}" for i in face_indices(self.face))
        parts = {"body": BODY_POINTS, "left_hand": HAND_POINTS, "right_hand": HAND_POINTS}
        if face:
            parts["face"] = face
        return parts

    @cached_property
    def point_names(self) -> tuple[str, ...]:
        """Qualified names ``<part>.<point>`` in array order."""
        return tuple(f"{part}.{name}" for part, names in self.parts.items() for name in names)

    @cached_property
    def num_points(self) -> int:
        return sum(len(v) for v in self.parts.values())

    def part_slice(self, part: str) -> slice:
        """Index range of ``part`` on the points axis."""
        start = 0
        for name, names in self.parts.items():
            if name == part:
                return slice(start, start + len(names))
            start += len(names)
        raise KeyError(f"skeleton has no part {part!r}; parts are {list(self.parts)}")

    def index(self, qualified: str) -> int:
        """Index of a point named ``<part>.<point>`` (e.g. ``body.left_wrist``)."""
        try:
            return self._positions[qualified]
        except KeyError:
            raise KeyError(f"skeleton has no point {qualified!r}") from None

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.point_names)}

    def edges(self) -> list[tuple[int, int]]:
        """Drawable edges as global point indices (body and hands)."""
        out = [(a, b) for a, b in BODY_EDGES]
        for part in ("left_hand", "right_hand"):
            s = self.part_slice(part).start
            out += [(s + a, s + b) for a, b in HAND_EDGES]
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in ("face", "estimator", "estimator_version", "components", "coordinates")}
        d["components"] = list(self.components)
        d["parts"] = {k: list(v) for k, v in self.parts.items()}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Skeleton:
        """Rebuild from :meth:`to_dict` output; the stored part lists must match the rebuilt ones."""
        sk = cls(face=d["face"], estimator=d["estimator"], estimator_version=d.get("estimator_version", ""),
                 components=tuple(d.get("components", COMPONENTS)), coordinates=d.get("coordinates", cls.coordinates))
        if "parts" in d and {k: list(v) for k, v in sk.parts.items()} != d["parts"]:
            raise ValueError("stored skeleton parts do not match the layout of this version of sldata")
        return sk


@dataclass(frozen=True)
class PointSubset:
    """Some points of a :class:`Skeleton` in a given order: the layout of ``keypoints[:, source_indices]``.

    It answers what feature code asks of a skeleton (``num_points``, ``index``,
    ``part_slice``), so features can be computed on the few points a model reads instead of
    the whole skeleton (the face mesh alone is most of it).

    Attributes
    ----------
    skeleton
        The full layout the points come from.
    names
        Qualified point names (``<part>.<point>``), in the subset's order; a part that is present
        must be contiguous for :meth:`part_slice`.
    """

    skeleton: Skeleton
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        if len(set(self.names)) != len(self.names):
            raise ValueError("point subset names must be unique")
        for name in self.names:
            self.skeleton.index(name)  # KeyError naming an unknown point

    @cached_property
    def source_indices(self) -> np.ndarray:
        """Indices of the subset's points in the full skeleton."""
        return np.array([self.skeleton.index(n) for n in self.names], dtype=np.int64)

    @property
    def num_points(self) -> int:
        return len(self.names)

    @property
    def point_names(self) -> tuple[str, ...]:
        return self.names

    def index(self, qualified: str) -> int:
        """Position of point ``<part>.<point>`` in the subset."""
        try:
            return self._positions[qualified]
        except KeyError:
            raise KeyError(f"point subset has no point {qualified!r}") from None

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def part_slice(self, part: str) -> slice:
        """Positions of ``part``'s points in the subset, which must hold all of them, contiguous and in order."""
        wanted = [f"{part}.{p}" for p in self.skeleton.parts.get(part, ())]
        if not wanted or wanted[0] not in self._positions:
            raise KeyError(f"point subset has no part {part!r}")
        start = self._positions[wanted[0]]
        if list(self.names[start:start + len(wanted)]) != wanted:
            raise KeyError(f"point subset holds part {part!r} only partly or out of order")
        return slice(start, start + len(wanted))


def present(keypoints: np.ndarray) -> np.ndarray:
    """Boolean ``[frames, points]``: which points were detected."""
    return ~np.isnan(keypoints[..., 0])
