"""Hand crops located from the body pose, as ChaLearn LAP 2021 ("VTN-PF") takes them.

Geometry (:func:`hand_crop_boxes`), per frame and per hand (axis 1: signer's left, then right,
the order of the skeleton's hand parts), in pixels (aspect-correct):

* centre = ``wrist + forward_shift * (wrist - elbow)``: a little beyond the wrist along the
  forearm, where the palm is (ChaLearn: 0.15);
* a square of side ``side_scale * shoulder width`` (ChaLearn: 1.2), the shoulder width being the
  clip's median (:func:`sldata.pose.features.shoulder_width`; ChaLearn uses each frame's, which
  makes the crop size jitter with the estimator);
* the square is **shifted** into the frame so it keeps its size and aspect (ChaLearn clips it);
  only a side longer than the frame itself is cut to the frame.

A frame's box is **valid** when the wrist and elbow are detected with confidence at least
``min_confidence`` (MediaPipe Pose always reports all 33 body points; off-screen ones carry a low
visibility), the unshifted square overlaps the frame (ChaLearn's "empty crop" test) and, with
``require_wrist_in_frame``, the wrist lies inside the frame. A frame without a valid box
**borrows** the box of the temporally nearest frame with one (ties: the earlier frame), as
ChaLearn borrows crops. A hand with no valid box in the whole clip gets NaN boxes and
``located = False``; :func:`crop_hands` turns NaN boxes into black crops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np

from sldata.pose.features import shoulder_width
from sldata.pose.flow import check_frame_size, check_keypoints, nearest_valid_index, pixel_xy
from sldata.pose.skeleton import Skeleton
from sldata.settings import settings_from_dict

HANDS: tuple[str, ...] = ("left", "right")


@dataclass(frozen=True)
class HandCropSettings:
    """Parameters of :func:`hand_crop_boxes` and :func:`crop_hands` (defaults: ChaLearn's).

    Attributes
    ----------
    size
        Side of the output crops in pixels.
    side_scale
        Box side as a multiple of the shoulder width.
    forward_shift
        Box centre beyond the wrist, as a fraction of the elbow-to-wrist vector.
    min_confidence
        Least confidence (MediaPipe visibility) of wrist and elbow for a frame's own box.
    require_wrist_in_frame
        A frame whose wrist lies outside the image has no box of its own.
    """

    size: int = 112
    side_scale: float = 1.2
    forward_shift: float = 0.15
    min_confidence: float = 0.5
    require_wrist_in_frame: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and self.size > 0):
            raise ValueError(f"hand crop size must be a positive integer, got {self.size!r}")
        if not self.side_scale > 0:
            raise ValueError(f"hand crop side_scale must be > 0, got {self.side_scale}")
        if not np.isfinite(self.forward_shift):
            raise ValueError(f"hand crop forward_shift must be finite, got {self.forward_shift}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"hand crop min_confidence must be in [0, 1], got {self.min_confidence}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> HandCropSettings:
        """Settings from a mapping (e.g. ``params.yaml``); unknown keys raise ``ValueError`` naming them."""
        return settings_from_dict(cls, data or {}, label="hand-crop")

    def box_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`hand_crop_boxes` from these settings."""
        return {"side_scale": self.side_scale, "forward_shift": self.forward_shift,
                "min_confidence": self.min_confidence, "require_wrist_in_frame": self.require_wrist_in_frame}


class HandBoxes(NamedTuple):
    """Result of :func:`hand_crop_boxes`.

    Attributes
    ----------
    boxes : float32 ``[T, 2, 4]``
        ``(xmin, ymin, xmax, ymax)`` in pixels per frame and hand (left, right); NaN for a hand
        that is never located.
    borrowed : bool ``[T, 2]``
        The frame had no valid box of its own (its box is the nearest frame's, or NaN).
    located : bool ``[2]``
        The hand had a valid box in at least one frame.
    """

    boxes: np.ndarray
    borrowed: np.ndarray
    located: np.ndarray


def hand_crop_boxes(keypoints: np.ndarray, width: int, height: int, skeleton: Skeleton, *,
                    side_scale: float = 1.2, forward_shift: float = 0.15, min_confidence: float = 0.5,
                    require_wrist_in_frame: bool = True) -> HandBoxes:
    """Square hand boxes per frame from wrist, elbow and shoulder width (see the module docstring).

    Parameters
    ----------
    keypoints : float array ``[T, P, 4]``
        One clip in the :mod:`sldata.pose.skeleton` layout.
    width, height
        Frame size in pixels.
    skeleton
        Layout of ``keypoints``.
    side_scale, forward_shift, min_confidence, require_wrist_in_frame
        As in :class:`HandCropSettings`.

    Returns
    -------
    :class:`HandBoxes` ``(boxes [T, 2, 4], borrowed [T, 2], located [2])``.
    """
    check_keypoints(keypoints, skeleton)
    check_frame_size(width, height)
    n_frames = keypoints.shape[0]
    wrists = [skeleton.index(f"body.{h}_wrist") for h in HANDS]
    elbows = [skeleton.index(f"body.{h}_elbow") for h in HANDS]
    wrist = pixel_xy(keypoints[:, wrists], width, height)  # [T, 2, 2]
    elbow = pixel_xy(keypoints[:, elbows], width, height)
    side = side_scale * shoulder_width(keypoints, width, height, skeleton)
    if not np.isfinite(side) or side <= 0:
        nan_boxes = np.full((n_frames, 2, 4), np.nan, dtype=np.float32)
        return HandBoxes(nan_boxes, np.ones((n_frames, 2), dtype=bool), np.zeros(2, dtype=bool))

    centre = wrist + forward_shift * (wrist - elbow)  # [T, 2, 2]
    frame = np.array([width, height], dtype=np.float64)
    valid = np.isfinite(centre).all(axis=-1)
    with np.errstate(invalid="ignore"):
        conf = np.minimum(keypoints[:, wrists, 3], keypoints[:, elbows, 3])
        valid &= conf >= min_confidence
        # ChaLearn: the box clipped to the frame must not be empty.
        valid &= ((centre + side / 2 > 0) & (centre - side / 2 < frame)).all(axis=-1)
        if require_wrist_in_frame:
            valid &= ((wrist >= 0) & (wrist < frame)).all(axis=-1)

    extent = np.minimum(side, frame)  # per axis: the side, or the frame when the side is larger
    low = np.clip(centre - extent / 2, 0.0, frame - extent)
    own = np.concatenate([low, low + extent], axis=-1)  # [T, 2, 4]

    source = nearest_valid_index(valid)  # [T, 2]
    boxes = np.take_along_axis(own, np.maximum(source, 0)[..., None], axis=0)
    boxes[source < 0] = np.nan
    return HandBoxes(boxes.astype(np.float32), ~valid, valid.any(axis=0))


def crop_hands(frames_rgb: np.ndarray, boxes: np.ndarray, size: int = 112) -> np.ndarray:
    """Cut each frame's hand boxes and resize them to ``size x size`` with OpenCV.

    Box edges are rounded outwards to whole pixels (``floor`` of the minimum, ``ceil`` of the
    maximum) and clipped to the frame; downscaling uses ``INTER_AREA``, upscaling
    ``INTER_LINEAR``. Boxes with NaN or nothing inside the frame give black crops.

    Parameters
    ----------
    frames_rgb : uint8 ``[T, H, W, 3]``
    boxes : float ``[T, K, 4]``
        ``(xmin, ymin, xmax, ymax)`` in pixels, e.g. :attr:`HandBoxes.boxes` (``K = 2``).
    size
        Output side in pixels.

    Returns
    -------
    uint8 ``[T, K, size, size, 3]``.
    """
    frames_rgb = np.asarray(frames_rgb)
    boxes = np.asarray(boxes, dtype=np.float64)
    if frames_rgb.dtype != np.uint8 or frames_rgb.ndim != 4 or frames_rgb.shape[3] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames_rgb.dtype} {frames_rgb.shape}")
    if boxes.ndim != 3 or boxes.shape[2] != 4 or boxes.shape[0] != frames_rgb.shape[0]:
        raise ValueError(f"boxes must be [T, K, 4] with T = {frames_rgb.shape[0]} frames, got {boxes.shape}")
    if not (isinstance(size, (int, np.integer)) and size > 0):
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    n_frames, height, width = frames_rgb.shape[:3]
    out = np.zeros((n_frames, boxes.shape[1], size, size, 3), dtype=np.uint8)
    finite = np.isfinite(boxes).all(axis=-1)
    safe = np.where(finite[..., None], boxes, 0.0)
    x0 = np.clip(np.floor(safe[..., 0]), 0, width).astype(int)
    y0 = np.clip(np.floor(safe[..., 1]), 0, height).astype(int)
    x1 = np.clip(np.ceil(safe[..., 2]), 0, width).astype(int)
    y1 = np.clip(np.ceil(safe[..., 3]), 0, height).astype(int)
    usable = finite & (x1 > x0) & (y1 > y0)
    for t, k in zip(*np.nonzero(usable)):  # one OpenCV call per crop
        patch = frames_rgb[t, y0[t, k]:y1[t, k], x0[t, k]:x1[t, k]]
        shrink = patch.shape[0] > size or patch.shape[1] > size
        out[t, k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out
