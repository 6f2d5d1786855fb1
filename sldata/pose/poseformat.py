"""Export to and import from the ``.pose`` format of pose-format (sign-language-processing/pose).

A ``.pose`` file holds a header (frame size, components with point names, limbs and colours)
and a body (``[frames, people, points, dims]`` float32 data plus ``[frames, people, points]``
confidence; a point with confidence 0 is masked). pose-format's MediaPipe Holistic layout
(``pose_format.utils.holistic``) is what this module writes and reads:

* components ``POSE_LANDMARKS`` (33), ``FACE_LANDMARKS`` (mesh indices as names, ``"0"``...),
  ``LEFT_HAND_LANDMARKS`` (21), ``RIGHT_HAND_LANDMARKS`` (21), point format ``XYZC``; body and
  hand point names are MediaPipe's upper-case landmark names (``LEFT_WRIST``, ``THUMB_TIP``);
* ``X = x * width`` and ``Y = y * height`` in pixels; ``Z`` is MediaPipe's ``z`` unscaled
  (pose-format's holistic utility stores ``landmark.z`` as is, and so do the real files);
* a missing point is written as zeros with confidence 0.

Exported files contain one person and the four components in the order above (no face
component for ``face="none"``; the subset face keeps its mesh indices as point names).

Import maps components and points **by name** into our layout (:mod:`sldata.pose.skeleton`):
points of our layout absent from the file are missing; what our layout cannot hold is dropped
and logged at INFO level: ``POSE_WORLD_LANDMARKS``, extra dimensions such as the Kinect depth
``K`` of ``XYZKC`` files, iris points 468-477 of refined face meshes, face points outside the
chosen subset, and people after the first. Files whose components are not MediaPipe Holistic
ones (OpenPose's ``pose_keypoints_2d``...) are refused with a ``ValueError``.

Precision: ``.pose`` stores float32 pixels, so ``x -> x * width -> / width`` is exact when the
width (height) is a power of two and otherwise within one float32 ulp of ``x`` (there are more
float32 values in ``[0, 1)`` than float32 pixel positions in some ranges, so no mapping can be
exact). The conversion is idempotent after one pass: ``.pose -> ours -> .pose -> ours`` gives
identical arrays. ``z`` and confidence are copied exactly. A point present in our array with
confidence exactly 0 cannot be expressed (the format masks it) and reads back as missing.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pose_format import Pose
from pose_format.numpy import NumPyPoseBody
from pose_format.pose_header import PoseHeader, PoseHeaderComponent, PoseHeaderDimensions
from pose_format.utils.openpose import hand_colors

from sldata.atomic import atomic_path
from sldata.pose.skeleton import (BODY_EDGES, BODY_POINTS, FACE_MESH_SIZE, FACE_MODES, FACE_SUBSET, HAND_EDGES,
                                  HAND_POINTS, Skeleton, face_indices)

log = logging.getLogger(__name__)

POSE_FORMAT_VERSION = 0.2
"""Version written in exported headers (pose-format writes its own current version, 0.2)."""

COMPONENT_OF_PART: dict[str, str] = {
    "body": "POSE_LANDMARKS",
    "face": "FACE_LANDMARKS",
    "left_hand": "LEFT_HAND_LANDMARKS",
    "right_hand": "RIGHT_HAND_LANDMARKS",
}
"""Our part -> pose-format's MediaPipe Holistic component name."""
PART_OF_COMPONENT: dict[str, str] = {v: k for k, v in COMPONENT_OF_PART.items()}
EXPORT_ORDER: tuple[str, ...] = ("body", "face", "left_hand", "right_hand")
"""Component order of pose-format's holistic files (face before the hands)."""
DROPPED_COMPONENTS: frozenset[str] = frozenset({"POSE_WORLD_LANDMARKS"})
"""Holistic components our layout has no place for: dropped on import."""

_BODY_COLORS = [(255, 0, 0)]
_FACE_COLORS = [(128, 0, 0)]


@functools.cache
def _face_mesh_connections() -> dict[str, tuple[tuple[int, int], ...]]:
    """MediaPipe's face-mesh edge sets (``TESSELATION``, ``CONTOURS``), sorted; empty if unavailable.

    The constants live in a plain module of the mediapipe package; it is loaded from its file
    so that exporting does not pay for importing mediapipe itself.
    """
    try:
        spec = importlib.util.find_spec("mediapipe")
        if spec is None or spec.origin is None:
            raise ImportError("mediapipe is not installed")
        path = Path(spec.origin).parent / "python" / "solutions" / "face_mesh_connections.py"
        mod_spec = importlib.util.spec_from_file_location("_sldata_face_mesh_connections", path)
        if mod_spec is None or mod_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    except (ImportError, OSError) as exc:
        log.info("face-mesh edges unavailable (%s); face components are written without limbs", exc)
        return {"TESSELATION": (), "CONTOURS": ()}
    return {name: tuple(sorted((int(a), int(b)) for a, b in getattr(module, f"FACEMESH_{name}")))
            for name in ("TESSELATION", "CONTOURS")}


def _face_limbs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Face edges between kept mesh points, as indices into ``indices``.

    The full mesh gets MediaPipe's tessellation (as pose-format's holistic files do); a subset
    gets the contour edges (lips, eyes, eyebrows) among its points.
    """
    edges = _face_mesh_connections()["TESSELATION" if len(indices) == FACE_MESH_SIZE else "CONTOURS"]
    local = {m: i for i, m in enumerate(indices)}
    return [(local[a], local[b]) for a, b in edges if a in local and b in local]


def _components(skeleton: Skeleton) -> list[PoseHeaderComponent]:
    """pose-format header components for ``skeleton``, in holistic order."""
    comps: list[PoseHeaderComponent] = []
    for part in EXPORT_ORDER:
        if part not in skeleton.parts:
            continue
        name = COMPONENT_OF_PART[part]
        if part == "body":
            comp = PoseHeaderComponent(name, [p.upper() for p in BODY_POINTS], list(BODY_EDGES),
                                       list(_BODY_COLORS), "XYZC")
        elif part == "face":
            idx = face_indices(skeleton.face)
            comp = PoseHeaderComponent(name, [str(i) for i in idx], _face_limbs(idx), list(_FACE_COLORS), "XYZC")
        else:
            comp = PoseHeaderComponent(name, [p.upper() for p in HAND_POINTS], list(HAND_EDGES),
                                       [tuple(c) for c in hand_colors], "XYZC")
        comps.append(comp)
    return comps


def _check_frame_size(width: int, height: int) -> None:
    for name, v in (("width", width), ("height", height)):
        if int(v) != v or not 0 < v <= 0xFFFF:
            raise ValueError(f"{name} must be a whole number of pixels in 1..65535, got {v!r}")


def to_pose_format(keypoints: np.ndarray, skeleton: Skeleton, fps: float, width: int, height: int) -> Pose:
    """Our keypoints as a pose-format :class:`~pose_format.Pose` in the MediaPipe Holistic layout.

    Parameters
    ----------
    keypoints
        ``[T, P, 4]`` (x, y, z, confidence) laid out as ``skeleton``; missing points NaN.
    skeleton
        The layout of ``keypoints``.
    fps
        Frame rate of the clip (> 0).
    width, height
        Frame size in pixels the normalized coordinates refer to.

    Returns
    -------
    pose_format.Pose
        One person; data ``[T, 1, P', 3]`` float32 in pixels (``X = x * width``, ``Y = y * height``,
        ``Z = z``) with confidence ``[T, 1, P']``; missing points are zeros with confidence 0.
    """
    kp = np.asarray(keypoints)
    if kp.ndim != 3 or kp.shape[1:] != (skeleton.num_points, 4):
        raise ValueError(f"keypoints must have shape [frames, {skeleton.num_points}, 4] for a skeleton with "
                         f"face={skeleton.face!r}, got {kp.shape}")
    _check_frame_size(width, height)
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")

    # Array order of our parts (body, hands, face) -> holistic order (body, face, hands).
    order = np.concatenate([np.arange(skeleton.part_slice(p).start, skeleton.part_slice(p).stop)
                            for p in EXPORT_ORDER if p in skeleton.parts])
    kp = kp[:, order].astype(np.float64)
    missing = np.isnan(kp[..., :3]).any(-1) | ~(kp[..., 3] > 0)  # NaN confidence counts as missing
    scale = np.array([width, height, 1.0])
    data = np.where(missing[..., None], 0.0, kp[..., :3] * scale).astype(np.float32)
    conf = np.where(missing, 0.0, kp[..., 3]).astype(np.float32)

    header = PoseHeader(version=POSE_FORMAT_VERSION, dimensions=PoseHeaderDimensions(int(width), int(height), 0),
                        components=_components(skeleton))
    body = NumPyPoseBody(fps=float(fps), data=data[:, None], confidence=conf[:, None])
    return Pose(header, body)


def write_pose_file(path: str | os.PathLike[str], keypoints: np.ndarray, skeleton: Skeleton, fps: float,
                    width: int, height: int) -> Path:
    """Write our keypoints as a ``.pose`` file (atomically); see :func:`to_pose_format`.

    Returns
    -------
    Path
        ``path``.
    """
    pose = to_pose_format(keypoints, skeleton, fps, width, height)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pose.write(fh)
    return Path(path)


def _point_map(component: PoseHeaderComponent, skeleton: Skeleton) -> tuple[list[int], list[int], list[str]]:
    """(source index within component, destination index in our array, dropped point names)."""
    part = PART_OF_COMPONENT[component.name]
    dst_start = skeleton.part_slice(part).start if part in skeleton.parts else None
    if part == "face":
        kept = {m: i for i, m in enumerate(face_indices(skeleton.face))}
    else:
        kept = {name.upper(): i for i, name in enumerate(skeleton.parts[part])}
    src, dst, dropped = [], [], []
    for i, name in enumerate(component.points):
        if part == "face":
            if not name.isdigit():
                raise ValueError(f"component {component.name} has point {name!r}; face points must be "
                                 "MediaPipe face-mesh indices")
            key: int | str = int(name)
        else:
            key = name
            if name not in kept:
                raise ValueError(f"component {component.name} has point {name!r}, which is not a MediaPipe "
                                 f"{'Pose' if part == 'body' else 'hand'} landmark")
        if dst_start is None or key not in kept:
            dropped.append(name)
            continue
        src.append(i)
        dst.append(dst_start + kept[key])
    return src, dst, dropped


def _infer_face_mode(components: Sequence[PoseHeaderComponent]) -> str:
    face = [c for c in components if c.name == "FACE_LANDMARKS"]
    if not face:
        return "none"
    if list(face[0].points) == [str(i) for i in FACE_SUBSET]:
        return "subset"
    return "full"


def from_pose_format(pose: Pose, face: str | None = None,
                     estimator_version: str = "") -> tuple[np.ndarray, Skeleton, float, int, int]:
    """Read a MediaPipe Holistic :class:`~pose_format.Pose` into our keypoint layout.

    Parameters
    ----------
    pose
        A pose with a NumPy body whose components are MediaPipe Holistic ones (any subset of
        them, any subset of their points, in any order).
    face
        Face layout of the result: ``none``, ``subset``, ``full``, or ``None`` to follow the file
        (no face component -> ``none``; exactly :data:`FACE_SUBSET` -> ``subset``; otherwise
        ``full``, with mesh points the file lacks missing).
    estimator_version
        Stored in the returned skeleton (a ``.pose`` file does not record it).

    Returns
    -------
    keypoints, skeleton, fps, width, height
        ``[T, P, 4]`` float32 (x, y normalized by the header's width and height, z as stored,
        confidence), its :class:`Skeleton` (estimator ``mediapipe-holistic``), frame rate and
        frame size. Points masked or with confidence 0 in the file are missing (NaN, 0).

    Raises
    ------
    ValueError
        If the components are not MediaPipe Holistic ones (the message lists those found),
        a component lacks ``X``, ``Y``, ``Z`` or ``C``, a point name is unknown, or the header has
        no frame size.
    """
    comps = list(pose.header.components)
    found = [c.name for c in comps]
    unknown = [n for n in found if n not in PART_OF_COMPONENT and n not in DROPPED_COMPONENTS]
    if unknown or not any(n in PART_OF_COMPONENT for n in found):
        raise ValueError(f"not a MediaPipe Holistic pose: components are {found}; expected some of "
                         f"{list(PART_OF_COMPONENT)} (and optionally {sorted(DROPPED_COMPONENTS)})")
    if len(set(found)) != len(found):
        raise ValueError(f"pose header repeats a component: {found}")
    if face is not None and face not in FACE_MODES:
        raise ValueError(f"face must be one of {FACE_MODES} or None, got {face!r}")
    width, height = int(pose.header.dimensions.width), int(pose.header.dimensions.height)
    if width <= 0 or height <= 0:
        raise ValueError(f"pose header has frame size {width}x{height}; normalized coordinates need both > 0")

    skeleton = Skeleton(face=face or _infer_face_mode(comps), estimator="mediapipe-holistic",
                        estimator_version=estimator_version)
    data = np.ma.getdata(pose.body.data)
    data_mask = np.ma.getmaskarray(pose.body.data)
    conf = np.asarray(np.ma.getdata(pose.body.confidence))
    frames, people = data.shape[0], data.shape[1]
    out = np.full((frames, skeleton.num_points, 4), np.nan, dtype=np.float32)
    out[..., 3] = 0.0
    if people > 1:
        log.info("pose has %d people per frame; kept the first", people)

    start = 0
    for comp in comps:
        n = len(comp.points)
        sl = slice(start, start + n)
        start += n
        if comp.name in DROPPED_COMPONENTS:
            log.info("dropped component %s (no place in the sldata layout)", comp.name)
            continue
        fmt = comp.format
        if any(ch not in fmt for ch in "XYZ") or not fmt.endswith("C"):
            raise ValueError(f"component {comp.name} has point format {fmt!r}; MediaPipe Holistic components "
                             "carry X, Y, Z and a trailing C (confidence)")
        extra = [ch for ch in fmt[:-1] if ch not in "XYZ"]
        if extra:
            log.info("component %s: dropped dimension(s) %s of format %s", comp.name, extra, fmt)
        src, dst, dropped = _point_map(comp, skeleton)
        if dropped:
            log.info("component %s: dropped %d point(s) outside the %r layout: %s", comp.name, len(dropped),
                     skeleton.face, dropped[:10] + (["..."] if len(dropped) > 10 else []))
        if people == 0 or not src:
            continue
        src_idx = np.arange(sl.start, sl.stop)[src]
        xyz = data[:, 0][:, src_idx][..., [fmt.index("X"), fmt.index("Y"), fmt.index("Z")]].astype(np.float64)
        c = conf[:, 0][:, src_idx].astype(np.float32)
        missing = (c <= 0) | data_mask[:, 0][:, src_idx].any(-1) | ~np.isfinite(xyz).all(-1) | ~np.isfinite(c)
        xyz = xyz / np.array([width, height, 1.0])
        block = np.concatenate([xyz.astype(np.float32), c[..., None]], axis=-1)
        block[missing] = np.array([np.nan, np.nan, np.nan, 0.0], dtype=np.float32)
        out[:, dst] = block
    return out, skeleton, float(pose.body.fps), width, height


def read_pose_file(path: str | os.PathLike[str], face: str | None = None,
                   estimator_version: str = "") -> tuple[np.ndarray, Skeleton, float, int, int]:
    """Read a ``.pose`` file into our layout; see :func:`from_pose_format`."""
    p = Path(path)
    try:
        pose = Pose.read(p.read_bytes())
    except (struct.error, ValueError, IndexError, EOFError) as exc:  # truncated or not a .pose file
        raise ValueError(f"{p} is not a readable .pose file: {exc}") from exc
    try:
        return from_pose_format(pose, face=face, estimator_version=estimator_version)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from exc
