"""Pose flow: per-point motion between consecutive frames, as in ChaLearn LAP 2021 ("VTN-PF").

ChaLearn LAP 2021 pose flow (De Coster et al., *Isolated Sign Recognition from RGB Video using
Pose Flow and Self-Attention*, CVPRW 2021) works in three steps, all reproduced here:

1. **Fill missing points** (:func:`fill_missing`): each point missing in a frame takes its value
   from the temporally nearest frame where it was detected.
2. **Scale normalization** by a body length, so the flow does not depend on how large the signer
   appears: ChaLearn divides by OpenPose's *upper-neck to head-top* length.
3. **Flow** (:func:`pose_flow`): for each point and each pair of consecutive frames ``t, t+1``,
   the displacement ``d = (p[t+1] - p[t]) / scale`` gives ``angle = atan2(dy, dx) / pi`` (in
   ``[-1, 1]``; image axes, y down) and ``magnitude = |d|`` (>= 0).

Body length for MediaPipe
-------------------------
MediaPipe has neither a neck nor a head-top point. :func:`body_length` uses the distance from the
**shoulder midpoint** to the **midpoint of the two eyes** (``body.left_eye``/``body.right_eye``):

* the shoulder midpoint is exactly how OpenPose defines its own "neck" point (BODY_25 index 1);
* the eye midpoint is the most stable head point MediaPipe gives: unlike the mouth it does not
  move while signing, unlike the nose it is symmetric, and unlike the ears it is almost always
  visible in a frontal view;
* extrapolating a "head top" (``nose + k * (nose - neck)``) would only multiply the length by
  an arbitrary constant; the neck-to-eyes length is, in adults, roughly the same physical size
  as ChaLearn's upper-neck to head-top length (about 20-25 cm), so magnitudes stay on a
  comparable scale.

The length is measured in **pixels** (``x * width``, ``y * height``: MediaPipe normalizes x and
y separately, so normalized units are not isotropic), in every frame where both shoulders and
both eyes were detected, and the clip's scale is the **median** of those lengths. ChaLearn
divides each frame by its own length; a per-clip median is robust to estimator jitter and keeps
the flow a pure function of motion (a per-frame scale turns scale noise into spurious flow).

Conventions
-----------
* :func:`pose_flow` returns ``[T-1, P, 2]`` (pairs ``(t, t+1)``, as ChaLearn writes them);
  :func:`sldata.pose.features.build_features` pads a zero first frame to align it with frames.
* Points missing in either frame of a pair (after filling: points never detected in the clip)
  give NaN angle and magnitude; ChaLearn writes 0 there (``np.nan_to_num`` gives its output).
* Only ``x`` and ``y`` are used (ChaLearn's flow is 2-D).
"""

from __future__ import annotations

import numpy as np

from sldata.pose.skeleton import PointSubset, Skeleton, present


def check_keypoints(keypoints: np.ndarray, skeleton: Skeleton | PointSubset | None = None) -> None:
    """Raise ``ValueError`` unless ``keypoints`` is ``[T, P, 4]`` (and ``P`` fits ``skeleton``)."""
    if keypoints.ndim != 3 or keypoints.shape[2] != 4:
        raise ValueError(f"keypoints must have shape [frames, points, 4], got {keypoints.shape}")
    if skeleton is not None and keypoints.shape[1] != skeleton.num_points:
        raise ValueError(f"keypoints have {keypoints.shape[1]} points but the skeleton (face={skeleton.face!r}) "
                         f"has {skeleton.num_points}")


def check_frame_size(width: float, height: float) -> None:
    """Raise ``ValueError`` unless ``width`` and ``height`` are positive pixel sizes."""
    if not (width > 0 and height > 0):
        raise ValueError(f"frame width and height must be > 0 pixels, got {width}x{height}")


def pixel_xy(keypoints: np.ndarray, width: float, height: float) -> np.ndarray:
    """``x``, ``y`` in pixels (float64 ``[T, P, 2]``), so that distances are aspect-correct."""
    check_frame_size(width, height)
    return keypoints[..., :2].astype(np.float64) * np.array([width, height], dtype=np.float64)


def nearest_valid_index(valid: np.ndarray) -> np.ndarray:
    """For each ``[t, k]``, the frame index of the temporally nearest ``t'`` with ``valid[t', k]``.

    Ties go to the earlier frame; ``t`` itself when it is valid; ``-1`` for columns ``k`` that are
    never valid. Vectorized: the last valid frame at or before ``t`` comes from a running
    ``np.maximum.accumulate`` of indices, the first at or after ``t`` from a reversed running
    minimum.

    Parameters
    ----------
    valid : bool array ``[T, ...]``
        Which entries hold a usable value; the first axis is time.

    Returns
    -------
    int64 array of the same shape as ``valid``.
    """
    valid = np.asarray(valid, dtype=bool)
    n = valid.shape[0]
    t = np.arange(n).reshape((n,) + (1,) * (valid.ndim - 1))
    before = np.maximum.accumulate(np.where(valid, t, -1), axis=0)
    after = np.flip(np.minimum.accumulate(np.flip(np.where(valid, t, n), axis=0), axis=0), axis=0)
    gap_before = np.where(before >= 0, t - before, n + 1)
    gap_after = np.where(after < n, after - t, n + 1)
    nearest = np.where(gap_before <= gap_after, before, after)
    return np.where((before < 0) & (after >= n), -1, nearest).astype(np.int64)


def fill_missing(keypoints: np.ndarray) -> np.ndarray:
    """Fill each missing point from the temporally nearest frame where that point was detected.

    All four components (x, y, z, confidence) are copied from that frame; ties go to the earlier
    frame. Detected points are never changed. Points never detected in the clip stay missing
    (NaN, confidence 0); :func:`sldata.pose.skeleton.present` on the result tells which.

    Parameters
    ----------
    keypoints : float array ``[T, P, 4]``

    Returns
    -------
    A new float32 array ``[T, P, 4]``.
    """
    check_keypoints(keypoints)
    kp = np.asarray(keypoints, dtype=np.float32)
    source = nearest_valid_index(present(kp))  # [T, P]
    filled = np.take_along_axis(kp, np.maximum(source, 0)[..., None], axis=0)
    never = source < 0
    filled[never, :3] = np.nan
    filled[never, 3] = 0.0
    return filled


def interpolate_gaps(keypoints: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill each short gap of a point linearly between the detections on either side of it.

    A gap is a run of frames where a point is missing with a detection of that point both before
    and after it; gaps of at most ``max_gap`` frames get ``x, y, z`` interpolated linearly in time
    and the smaller of the two confidences. Longer gaps, and missing frames at the start or end
    of the clip, are left missing (a hand that is down or out of view for a while is absence,
    not jitter); :func:`fill_missing` can fill them afterwards.

    Parameters
    ----------
    keypoints : float array ``[T, P, 4]``
    max_gap
        Longest gap (in frames) that is interpolated; 0 changes nothing.

    Returns
    -------
    A new float32 array ``[T, P, 4]``; detected points are never changed.
    """
    check_keypoints(keypoints)
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    n = kp.shape[0]
    if max_gap == 0 or n < 3:
        return kp
    valid = present(kp)
    t = np.arange(n)[:, None]
    before = np.maximum.accumulate(np.where(valid, t, -1), axis=0)
    after = np.flip(np.minimum.accumulate(np.flip(np.where(valid, t, n), axis=0), axis=0), axis=0)
    gap = ~valid & (before >= 0) & (after < n) & (after - before - 1 <= max_gap)
    frames, points = np.nonzero(gap)
    if frames.size:
        b, a = before[frames, points], after[frames, points]
        w = ((frames - b) / (a - b)).astype(np.float32)[:, None]
        kp[frames, points, :3] = kp[b, points, :3] * (1.0 - w) + kp[a, points, :3] * w
        kp[frames, points, 3] = np.minimum(kp[b, points, 3], kp[a, points, 3])
    return kp


def body_length(keypoints: np.ndarray, width: float, height: float, skeleton: Skeleton | PointSubset) -> float:
    """Clip's body length in pixels: median over frames of |shoulder midpoint - eye midpoint|.

    Frames lacking either shoulder or either eye are skipped. Returns NaN when no frame has all
    four (see the module docstring for why this length).
    """
    check_keypoints(keypoints, skeleton)
    idx = [skeleton.index(f"body.{name}") for name in ("left_shoulder", "right_shoulder", "left_eye", "right_eye")]
    xy = pixel_xy(keypoints[:, idx], width, height)  # [T, 4, 2]
    neck = (xy[:, 0] + xy[:, 1]) / 2
    eyes = (xy[:, 2] + xy[:, 3]) / 2
    lengths = np.linalg.norm(eyes - neck, axis=-1)
    lengths = lengths[np.isfinite(lengths)]
    return float(np.median(lengths)) if lengths.size else float("nan")


def pose_flow(keypoints: np.ndarray, width: float, height: float, skeleton: Skeleton | PointSubset, *,
              fill: bool = True) -> np.ndarray:
    """Pose flow (angle, magnitude) of every point between consecutive frames.

    Parameters
    ----------
    keypoints : float array ``[T, P, 4]``
        One clip in the :mod:`sldata.pose.skeleton` layout.
    width, height
        Frame size in pixels (distances are measured in pixels, aspect-correct).
    skeleton
        Layout of ``keypoints``.
    fill
        Apply :func:`fill_missing` first, as ChaLearn does (pass ``False`` when already filled);
        the body length is then measured on the filled points too.

    Returns
    -------
    float32 ``[T-1, P, 2]``: ``[..., 0]`` = ``atan2(dy, dx) / pi`` in ``[-1, 1]`` (image axes,
    y down; 0 for no motion), ``[..., 1]`` = displacement in body lengths (>= 0). NaN where the
    point is missing in either frame. A clip with fewer than 2 frames gives ``[0, P, 2]``.

    Raises
    ------
    ValueError
        If the clip has detected points but the body length (shoulders and eyes) cannot be
        measured in any frame, or shapes or the frame size are invalid. A clip with no detected
        point at all gives all-NaN flow.
    """
    check_keypoints(keypoints, skeleton)
    check_frame_size(width, height)
    kp = fill_missing(keypoints) if fill else np.asarray(keypoints, dtype=np.float32)
    n_frames, n_points = kp.shape[:2]
    if n_frames < 2:
        return np.zeros((0, n_points, 2), dtype=np.float32)
    scale = body_length(kp, width, height, skeleton)
    if not np.isfinite(scale) or scale <= 0:
        if present(kp).any():
            raise ValueError("cannot measure the body length for pose flow: no frame has both shoulders and both eyes "
                             f"detected (got scale {scale})")
        return np.full((n_frames - 1, n_points, 2), np.nan, dtype=np.float32)
    d = np.diff(pixel_xy(kp, width, height), axis=0) / scale  # [T-1, P, 2]
    out = np.empty(d.shape, dtype=np.float32)
    out[..., 0] = np.arctan2(d[..., 1], d[..., 0]) / np.pi
    out[..., 1] = np.hypot(d[..., 0], d[..., 1])
    return out
