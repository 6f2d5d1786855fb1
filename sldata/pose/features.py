"""Training inputs derived from keypoints: normalized coordinates, velocity, acceleration, pose flow.

:func:`build_features` turns one clip's keypoints ``[T, P, 4]`` into a dense ``[T, P, C]``
float32 array, with the channels chosen by :class:`FeatureSettings` in this order (names from
:func:`feature_channels`):

==========================  =======================================================  ==========
channels                    what                                                     when
==========================  =======================================================  ==========
``x, y, z``                 position: :func:`normalize_coordinates` or, with          always
                            ``normalize=False``, MediaPipe's normalized image coords
``velocity_x/y/z``          :func:`velocity` of the positions above                  ``velocity``
``acceleration_x/y/z``      :func:`acceleration` of the positions above              ``acceleration``
``flow_angle``,             :func:`sldata.pose.flow.pose_flow` with a zero first      ``pose_flow``
``flow_magnitude``          frame: row ``t`` is the motion from ``t-1`` to ``t``
``present``                 1 where the point has a position (detected, or filled     always
                            with ``fill_missing``), else 0
==========================  =======================================================  ==========

With ``interpolate_max_gap`` > 0, short gaps of a point are first interpolated linearly
(:func:`sldata.pose.flow.interpolate_gaps`); with ``fill_missing`` the keypoints then go through
:func:`sldata.pose.flow.fill_missing`.
Whatever is still NaN afterwards (points never detected, differences involving them) becomes 0,
and ``present`` tells the model which zeros mean "missing".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sldata.pose.flow import (check_frame_size, check_keypoints, fill_missing, interpolate_gaps, nearest_valid_index,
                              pixel_xy, pose_flow)
from sldata.pose.skeleton import PointSubset, Skeleton, present
from sldata.settings import settings_from_dict

_XYZ = ("x", "y", "z")


def _shoulders_px(keypoints: np.ndarray, width: float, height: float, skeleton: Skeleton | PointSubset) -> np.ndarray:
    """Left and right shoulders in pixels, float64 ``[T, 2, 2]``."""
    idx = [skeleton.index("body.left_shoulder"), skeleton.index("body.right_shoulder")]
    return pixel_xy(keypoints[:, idx], width, height)


def shoulder_width(keypoints: np.ndarray, width: float, height: float, skeleton: Skeleton | PointSubset) -> float:
    """Clip's shoulder width in pixels: median over frames with both shoulders detected; NaN if none."""
    check_keypoints(keypoints, skeleton)
    sh = _shoulders_px(keypoints, width, height, skeleton)
    widths = np.linalg.norm(sh[:, 0] - sh[:, 1], axis=-1)
    widths = widths[np.isfinite(widths)]
    return float(np.median(widths)) if widths.size else float("nan")


def normalize_coordinates(keypoints: np.ndarray, width: float, height: float,
                          skeleton: Skeleton | PointSubset) -> np.ndarray:
    """Keypoints centred on the shoulder midpoint and scaled by the clip's shoulder width.

    In pixel units (aspect-correct): ``x' = (x * width - cx) / s``, ``y' = (y * height - cy) / s``
    and ``z' = z * width / s`` (MediaPipe's z has the scale of x; it is not centred, its origin
    being MediaPipe's per part). ``(cx, cy)`` is the frame's shoulder midpoint, or the temporally
    nearest frame's when a shoulder is missing; ``s`` is :func:`shoulder_width` (per-clip median).
    Confidence is kept; missing points stay NaN.

    Parameters
    ----------
    keypoints : float array ``[T, P, 4]``
    width, height
        Frame size in pixels.
    skeleton
        Layout of ``keypoints``.

    Returns
    -------
    float32 ``[T, P, 4]`` (x', y', z', confidence).

    Raises
    ------
    ValueError
        If points were detected but no frame has both shoulders (no scale), or on bad shapes.
        A clip with no detected point gives all-NaN coordinates.
    """
    check_keypoints(keypoints, skeleton)
    check_frame_size(width, height)
    out = np.array(keypoints, dtype=np.float32, copy=True)
    scale = shoulder_width(keypoints, width, height, skeleton)
    if not np.isfinite(scale) or scale <= 0:
        if present(keypoints).any():
            raise ValueError("cannot normalize coordinates: no frame has both shoulders detected "
                             f"(shoulder width {scale})")
        return out
    mid = _shoulders_px(keypoints, width, height, skeleton).mean(axis=1)  # [T, 2]
    source = nearest_valid_index(np.isfinite(mid).all(axis=1))  # [T]; >= 0 since the scale exists
    mid = mid[source]
    out[..., :2] = (pixel_xy(keypoints, width, height) - mid[:, None, :]) / scale
    out[..., 2] = keypoints[..., 2].astype(np.float64) * width / scale
    return out


def velocity(x: np.ndarray) -> np.ndarray:
    """First temporal difference, same shape as ``x``: ``v[t] = x[t] - x[t-1]``, ``v[0] = 0``.

    Time is the first axis; NaN propagates (a point missing in either frame gives NaN).
    """
    x = np.asarray(x)
    out = np.zeros_like(x, dtype=np.result_type(x.dtype, np.float32))
    out[1:] = x[1:] - x[:-1]
    return out


def acceleration(x: np.ndarray) -> np.ndarray:
    """Second temporal difference, same shape as ``x``: ``a[t] = x[t] - 2 x[t-1] + x[t-2]``.

    The first two frames are 0 (no second difference there); time is the first axis; NaN
    propagates.
    """
    x = np.asarray(x)
    out = np.zeros_like(x, dtype=np.result_type(x.dtype, np.float32))
    out[2:] = x[2:] - 2 * x[1:-1] + x[:-2]
    return out


@dataclass(frozen=True)
class FeatureSettings:
    """Which channels :func:`build_features` produces (see the module docstring for the order).

    Attributes
    ----------
    normalize
        Positions from :func:`normalize_coordinates` instead of raw normalized image coords.
    velocity, acceleration
        Add first / second temporal differences of the positions.
    pose_flow
        Add ChaLearn pose flow (angle, magnitude).
    fill_missing
        Fill missing points from the temporally nearest detection first.
    interpolate_max_gap
        Before that, interpolate gaps of at most this many frames linearly between the
        detections on either side (0: none).
    """

    normalize: bool = True
    velocity: bool = True
    acceleration: bool = False
    pose_flow: bool = True
    fill_missing: bool = True
    interpolate_max_gap: int = 0

    def __post_init__(self) -> None:
        for name in ("normalize", "velocity", "acceleration", "pose_flow", "fill_missing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"feature setting {name} must be true or false, got {getattr(self, name)!r}")
        gap = self.interpolate_max_gap
        if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
            raise ValueError(f"feature setting interpolate_max_gap must be an integer >= 0, got {gap!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> FeatureSettings:
        """Settings from a mapping (e.g. ``params.yaml``); unknown keys raise ``ValueError`` naming them."""
        return settings_from_dict(cls, data or {}, label="feature")


def feature_channels(settings: FeatureSettings) -> list[str]:
    """Names of the channels :func:`build_features` produces with ``settings``, in order."""
    names = list(_XYZ)
    if settings.velocity:
        names += [f"velocity_{c}" for c in _XYZ]
    if settings.acceleration:
        names += [f"acceleration_{c}" for c in _XYZ]
    if settings.pose_flow:
        names += ["flow_angle", "flow_magnitude"]
    return names + ["present"]


def build_features(keypoints: np.ndarray, width: float, height: float, skeleton: Skeleton | PointSubset,
                   settings: FeatureSettings) -> np.ndarray:
    """Dense model input ``[T, P, C]`` float32 for one clip; channels as :func:`feature_channels`.

    Parameters
    ----------
    keypoints : float array ``[T, P, 4]``
    width, height
        Frame size in pixels.
    skeleton
        Layout of ``keypoints``: a whole skeleton or a :class:`PointSubset` of it (which must
        hold both shoulders to normalize, and both eyes too for pose flow).
    settings
        Which channels to build.

    Returns
    -------
    float32 ``[T, P, len(feature_channels(settings))]`` without NaN.

    Raises
    ------
    ValueError
        When a needed scale cannot be measured (see :func:`normalize_coordinates`,
        :func:`sldata.pose.flow.pose_flow`) or on bad shapes.
    """
    check_keypoints(keypoints, skeleton)
    kp = np.asarray(keypoints, dtype=np.float32)
    if settings.interpolate_max_gap:
        kp = interpolate_gaps(kp, settings.interpolate_max_gap)
    if settings.fill_missing:
        kp = fill_missing(kp)
    positions = normalize_coordinates(kp, width, height, skeleton) if settings.normalize else kp
    positions = positions[..., :3]
    channels = [positions]
    if settings.velocity:
        channels.append(velocity(positions))
    if settings.acceleration:
        channels.append(acceleration(positions))
    if settings.pose_flow:
        flow = np.zeros(kp.shape[:2] + (2,), dtype=np.float32)
        flow[1:] = pose_flow(kp, width, height, skeleton, fill=False)
        channels.append(flow)
    channels.append(present(kp)[..., None].astype(np.float32))
    out = np.concatenate(channels, axis=-1).astype(np.float32, copy=False)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
