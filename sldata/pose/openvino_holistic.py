"""MediaPipe Holistic's graph, rebuilt in our code on MediaPipe's own models, run by OpenVINO.

:class:`OpenVinoHolisticEstimator` gives the keypoints of :class:`sldata.pose.estimator.HolisticEstimator`
(same skeleton, same coordinate convention) from the ``.tflite`` models inside the installed
mediapipe wheel, loaded by ``openvino.Core().read_model`` and compiled in f32 (or, with
``precision="mixed"``, the hand and face models in bf16). The graph
(``holistic_landmark_cpu`` of mediapipe 0.10.21 with ``model_complexity=1``,
``smooth_landmarks=True``, no segmentation, no face refinement) is followed step by step:

Body (``PoseLandmarkCpu``)
    When the previous frame gave no body, the pose detector runs on the whole frame (224 px,
    letterboxed, SSD anchors, weighted non-maximum suppression); the first detection's hip
    centre and scale keypoints give a rotated ROI (x1.25, squared). Otherwise the ROI comes from
    the previous frame's two auxiliary landmarks. The landmark model (256 px crop) gives 39
    landmarks, refined on its 64x64 heatmap (7x7 window), projected back to the frame, and its
    presence score gates them (``min_tracking_confidence``). The 33 body landmarks and the two
    auxiliary ones are smoothed like Holistic's ``PoseLandmarkFiltering``: a one-euro filter on
    pixel coordinates scaled by the body's size, a low-pass filter on visibility; both restart
    when the body is lost.
Hands (``HandLandmarksFromPoseCpu``, each side)
    Skipped when the pose wrist's visibility is <= 0.1. The pose's wrist, index and pinky give a
    hand ROI (x2.7), the recrop model refines it to a second ROI; when the previous frame had
    the hand and its landmarks' ROI still agrees with the recrop ROI (rotation, translation,
    scale, landmarks inside), that tracking ROI is kept. The hand landmark model (224 px) gives
    21 points when its presence score is > 0.5.
Hand second chance (``hand_second_chance=True``; off by default, and not part of Holistic)
    A side the tracker lost gets palm detection (``PalmDetectionCpu``: 192 px, 2016 SSD boxes,
    weighted NMS) on a square around the pose wrist; the best palm near that wrist becomes a hand
    ROI as ``PalmDetectionDetectionToRoi`` makes it, or else the previous frame's hand ROI is
    tried; the landmarks are kept only when they pass plausibility gates (near the pose wrist,
    not the other hand, on the picture). The tracker never sees these hands.
Face (``FaceLandmarksFromPoseCpu``, skipped when ``face="none"``)
    The pose's 11 face points give an ROI (x3) where the short-range face detector runs; its
    first detection gives the face ROI, tracked the same way from the previous landmarks; the
    face landmark model (192 px) gives 468 points when its score is > 0.5.

Crops are made as MediaPipe's CPU ``ImageToTensorCalculator`` makes them (the rotated rectangle
warped onto the tensor, bilinear, replicated or zero border; MediaPipe's perspective warp is an
affine map here, so OpenCV's cheaper affine warp is used: ~2.6% of pixels differ by a grey level or
a few, and the parity in docs/benchmarks.md is unchanged), so the models see nearly the same pixels. Timestamps follow ``mp.solutions``: 33,333 us per frame.

Speed, without changing a number (tested): crops are warped straight into each model's input
buffer, both hands' landmark models run as one batch of two (the same numbers as one at a time),
and compiled models are kept in :func:`compiled_model_cache`, so a process starts in about 0.3
CPU-s instead of 1.4.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sldata.pose.estimator import check_frame, validate_holistic_settings
from sldata.pose.skeleton import COMPONENTS, Skeleton, face_indices

log = logging.getLogger(__name__)

ESTIMATOR_NAME = "openvino-holistic"
FRAME_US = 33333
"""Microseconds between frames, as ``mp.solutions`` stamps them (a simulated 30 fps)."""

_LEFT_HAND_FROM_POSE = (15, 17, 19)  # wrist, pinky, index of the signer's left side
_RIGHT_HAND_FROM_POSE = (16, 18, 20)


def _modules_dir() -> Path:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or spec.origin is None:
        raise RuntimeError("the openvino pose estimator needs the mediapipe wheel's models: mediapipe is not installed")
    return Path(spec.origin).parent / "modules"


MODEL_FILES = {
    "pose_detection": "pose_detection/pose_detection.tflite",
    "pose_landmark": "pose_landmark/pose_landmark_full.tflite",
    "hand_recrop": "holistic_landmark/hand_recrop.tflite",
    "hand_landmark": "hand_landmark/hand_landmark_full.tflite",
    "face_detection": "face_detection/face_detection_short_range.tflite",
    "face_landmark": "face_landmark/face_landmark.tflite",
}
"""The models, relative to the mediapipe wheel's ``modules`` folder."""
PALM_MODEL = "palm_detection/palm_detection_full.tflite"
"""The palm detector (192 px, 2016 SSD boxes, 7 keypoints), loaded only for the hand second chance."""
PRECISIONS = ("f32", "bf16", "mixed")
SIGNED_INPUT = ("pose_detection", "face_detection")
"""Models whose input pixels are in -1..1 (the others take 0..1)."""


def validate_options(precision: str, hand_second_chance: bool, label: str = "") -> None:
    """Raise ``ValueError`` (its message starting with ``label``) unless both engine options are valid.

    The one check of the engine's options, for :class:`OpenVinoHolisticEstimator` and for
    params.yaml's ``pose.openvino`` (:class:`sldata.pose.extract.OpenVinoOptions`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"{label}precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not isinstance(hand_second_chance, bool):
        raise ValueError(f"{label}hand_second_chance must be true or false, got {hand_second_chance!r}")


def openvino_skeleton(face: str = "subset", model_complexity: int = 1) -> Skeleton:
    """The :class:`Skeleton` :class:`OpenVinoHolisticEstimator` produces, without importing openvino."""
    mp_version = importlib.metadata.version("mediapipe")
    ov_version = importlib.metadata.version("openvino")
    return Skeleton(face=face, estimator=ESTIMATOR_NAME,
                    estimator_version=f"{mp_version} model_complexity={model_complexity} openvino={ov_version}")


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Rect:
    """A rotated rectangle in normalized frame coordinates (MediaPipe's ``NormalizedRect``).

    Attributes
    ----------
    x, y
        Centre, 0..1 of the frame width and height.
    w, h
        Size, fractions of the frame width and height.
    r
        Rotation in radians (clockwise in image coordinates, y down).
    """

    x: float
    y: float
    w: float
    h: float
    r: float = 0.0


def normalize_radians(angle: float) -> float:
    """``angle`` wrapped to [-pi, pi)."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def _rotation(x0: float, y0: float, x1: float, y1: float, target: float) -> float:
    """Rotation making the vector (x0, y0) -> (x1, y1), in pixels, point at ``target`` radians."""
    return normalize_radians(target - math.atan2(-(y1 - y0), x1 - x0))


def transform_rect(rect: Rect, width: int, height: int, scale: float, shift_y: float = 0.0) -> Rect:
    """Shift along the rect's own axes, square on the long side (in pixels), then scale.

    MediaPipe's ``RectTransformationCalculator`` with ``square_long: true`` and ``shift_x: 0``.
    """
    x, y = rect.x, rect.y
    if shift_y:
        if rect.r == 0.0:
            y += rect.h * shift_y
        else:
            x += (-height * rect.h * shift_y * math.sin(rect.r)) / width
            y += (height * rect.h * shift_y * math.cos(rect.r)) / height
    long_side = max(rect.w * width, rect.h * height)
    return Rect(x, y, long_side / width * scale, long_side / height * scale, rect.r)


def alignment_rect(p0: np.ndarray, p1: np.ndarray, width: int, height: int, target: float) -> Rect:
    """Rect centred on ``p0`` whose side is twice the distance to ``p1`` (pixels), rotated to ``target``.

    MediaPipe's ``AlignmentPointsRectsCalculator``; ``p0``, ``p1`` are normalized (x, y).
    """
    x0, y0 = float(p0[0]) * width, float(p0[1]) * height
    x1, y1 = float(p1[0]) * width, float(p1[1]) * height
    size = math.hypot(x1 - x0, y1 - y0) * 2.0
    return Rect(x0 / width, y0 / height, size / width, size / height, _rotation(x0, y0, x1, y1, target))


def box_rect(points: np.ndarray, width: int, height: int, start: int, end: int, target: float) -> Rect:
    """Axis-aligned bounds of ``points`` (normalized [n, >=2]), rotated by the vector ``start`` -> ``end``.

    MediaPipe's ``LandmarksToDetectionCalculator`` then ``DetectionsToRectsCalculator``.
    """
    xmin, ymin = points[:, :2].min(axis=0)
    xmax, ymax = points[:, :2].max(axis=0)
    p0, p1 = points[start], points[end]
    r = _rotation(float(p0[0]) * width, float(p0[1]) * height, float(p1[0]) * width, float(p1[1]) * height, target)
    return Rect(float(xmin + xmax) / 2, float(ymin + ymax) / 2, float(xmax - xmin), float(ymax - ymin), r)


def hand_rect_from_pose(wrist: np.ndarray, pinky: np.ndarray, index: np.ndarray, width: int, height: int) -> Rect:
    """Hand rect from the pose's wrist, pinky and index (``HandDetectionsFromPoseToRectsCalculator``)."""
    xw, yw = float(wrist[0]) * width, float(wrist[1]) * height
    xm = (2.0 * float(index[0]) + float(pinky[0])) / 3.0 * width
    ym = (2.0 * float(index[1]) + float(pinky[1])) / 3.0 * height
    size = math.hypot(xm - xw, ym - yw) * 2.0
    return Rect(xm / width, ym / height, size / width, size / height, _rotation(xw, yw, xm, ym, math.pi / 2))


def hand_rect_from_landmarks(lms: np.ndarray, width: int, height: int) -> Rect:
    """Rect around 21 hand landmarks, rotated wrist -> fingers (``HandLandmarksToRectCalculator``).

    Holistic feeds all 21 landmarks, so the calculator's "PIP" indices 4, 6, 8 (meant for its
    palm subset) pick the thumb tip, index PIP and index tip; kept as is for parity.
    """
    x0, y0 = lms[0, 0] * width, lms[0, 1] * height
    x1 = ((lms[4, 0] + lms[8, 0]) / 2 + lms[6, 0]) / 2 * width
    y1 = ((lms[4, 1] + lms[8, 1]) / 2 + lms[6, 1]) / 2 * height
    rot = _rotation(float(x0), float(y0), float(x1), float(y1), math.pi / 2)
    rev = normalize_radians(-rot)
    cx, cy = (lms[:, 0].max() + lms[:, 0].min()) / 2, (lms[:, 1].max() + lms[:, 1].min()) / 2
    ox, oy = (lms[:, 0] - cx) * width, (lms[:, 1] - cy) * height
    px = ox * math.cos(rev) - oy * math.sin(rev)
    py = ox * math.sin(rev) + oy * math.cos(rev)
    pcx, pcy = (px.max() + px.min()) / 2, (py.max() + py.min()) / 2
    centre_x = pcx * math.cos(rot) - pcy * math.sin(rot) + width * cx
    centre_y = pcx * math.sin(rot) + pcy * math.cos(rot) + height * cy
    return Rect(float(centre_x / width), float(centre_y / height), float((px.max() - px.min()) / width),
                float((py.max() - py.min()) / height), rot)


def _rotate_frame(x: float, y: float, cosa: float, sina: float) -> tuple[float, float]:
    return x * cosa - y * sina, x * sina + y * cosa


def keep_tracking(prev_lms: np.ndarray, prev_rect: Rect, recrop: Rect, width: int, height: int,
                  rotation_degrees: float, translation: float, scale: float, margin: float) -> bool:
    """Whether the previous landmarks' rect still agrees with the recrop rect (``RoiTrackingCalculator``)."""
    cosa, sina = math.cos(-recrop.r), math.sin(-recrop.r)
    px, py = _rotate_frame(prev_rect.x * width, prev_rect.y * height, cosa, sina)
    rx, ry = _rotate_frame(recrop.x * width, recrop.y * height, cosa, sina)
    rw, rh = recrop.w * width, recrop.h * height
    diff = math.degrees(prev_rect.r) - math.degrees(recrop.r)
    if diff > 180:
        diff -= 360
    if diff < -180:
        diff += 360
    ok = abs(diff) <= rotation_degrees
    ok &= abs(px - rx) <= rw * translation and abs(py - ry) <= rh * translation
    ok &= abs(prev_rect.w * width - rw) <= rw * scale and abs(prev_rect.h * height - rh) <= rh * scale
    if not ok:
        return False
    mw, mh = rw * (1 + margin), rh * (1 + margin)
    lx = prev_lms[:, 0] * width * cosa - prev_lms[:, 1] * height * sina
    ly = prev_lms[:, 0] * width * sina + prev_lms[:, 1] * height * cosa
    return bool(np.all((rx - mw / 2 < lx) & (lx < rx + mw / 2) & (ry - mh / 2 < ly) & (ly < ry + mh / 2)))


# --------------------------------------------------------------------------- crops and projection


@dataclass(frozen=True)
class Crop:
    """A model input cut from a frame, and how to map the model's coordinates back.

    Attributes
    ----------
    tensor
        ``[1, H, W, 3]`` uint8 RGB.
    padding
        Letterbox (left, top, right, bottom) as fractions of the tensor.
    padded
        The padded rect in pixels ``(cx, cy, w, h, rotation)`` (what the tensor covers).
    """

    tensor: np.ndarray
    padding: tuple[float, float, float, float]
    padded: tuple[float, float, float, float, float]


def crop(frame: np.ndarray, rect: Rect | None, out_w: int, out_h: int, *, keep_aspect: bool,
         zero_border: bool, out: np.ndarray | None = None) -> Crop:
    """Cut ``rect`` (``None``: the whole frame) out of ``frame`` into a uint8 model tensor.

    MediaPipe's CPU ``ImageToTensorCalculator``: the rect is letterboxed to the tensor's aspect
    ratio when ``keep_aspect``, its corners are warped onto the tensor (an OpenCV affine warp,
    bilinear: a rotated rectangle maps affinely, where MediaPipe calls a perspective warp). The
    models map 0..255 to their value range themselves (see :class:`_Models`). ``out`` (a
    C-contiguous uint8 ``[out_h, out_w, 3]`` array, such as a model's input buffer) receives the
    pixels in place; the crop's ``tensor`` is then a view of it.
    """
    import cv2

    height, width = frame.shape[:2]
    if rect is None:
        cx, cy, w, h, r = width / 2, height / 2, float(width), float(height), 0.0
    else:
        cx, cy, w, h, r = rect.x * width, rect.y * height, rect.w * width, rect.h * height, rect.r
    padding = (0.0, 0.0, 0.0, 0.0)
    if keep_aspect:
        tensor_ar, roi_ar = out_h / out_w, h / w
        if tensor_ar > roi_ar:
            vertical = (1.0 - roi_ar / tensor_ar) / 2.0
            w, h = w, w * tensor_ar
            padding = (0.0, vertical, 0.0, vertical)
        else:
            horizontal = (1.0 - tensor_ar / roi_ar) / 2.0
            w, h = h / tensor_ar, h
            padding = (horizontal, 0.0, horizontal, 0.0)
    src = cv2.boxPoints(((cx, cy), (w, h), r * 180.0 / math.pi)).astype(np.float32)
    dst = np.array([[0, out_h], [0, 0], [out_w, 0], [out_w, out_h]], dtype=np.float32)
    matrix = cv2.getAffineTransform(src[:3], dst[:3])
    warped = cv2.warpAffine(frame, matrix, (out_w, out_h), dst=out, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT if zero_border else cv2.BORDER_REPLICATE)
    if out is not None and warped is not out:  # OpenCV reallocates a destination of the wrong shape or type
        raise ValueError(f"crop destination must be uint8 [{out_h}, {out_w}, 3] and C-contiguous, got {out.shape}")
    return Crop(warped[None], padding, (cx, cy, w, h, r))


def project(points: np.ndarray, padding: tuple[float, float, float, float], rect: Rect) -> np.ndarray:
    """Normalized crop coordinates ``[n, 3]`` to frame coordinates (letterbox removal, then rect projection).

    MediaPipe's ``LandmarkLetterboxRemovalCalculator`` and ``LandmarkProjectionCalculator``
    (NORM_RECT form: rotation in normalized coordinates, z scaled like x).
    """
    left, top, right, bottom = padding
    x = (points[:, 0] - left) / (1.0 - left - right) - 0.5
    y = (points[:, 1] - top) / (1.0 - top - bottom) - 0.5
    z = points[:, 2] / (1.0 - left - right)
    c, s = math.cos(rect.r), math.sin(rect.r)
    out = np.empty((points.shape[0], 3), dtype=np.float64)
    out[:, 0] = (c * x - s * y) * rect.w + rect.x
    out[:, 1] = (s * x + c * y) * rect.h + rect.y
    out[:, 2] = z * rect.w
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


# --------------------------------------------------------------------------- detection


def ssd_anchors(input_size: int, strides: tuple[int, ...], per_layer: int = 2) -> np.ndarray:
    """Anchor centres ``[n, 2]`` (x, y) of MediaPipe's ``SsdAnchorsCalculator`` with fixed-size anchors.

    Consecutive layers of one stride share a grid; each layer adds ``per_layer`` anchors per cell
    (aspect ratio 1 plus the interpolated scale); centres are offset by half a cell.
    """
    centres: list[np.ndarray] = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        side = math.ceil(input_size / strides[i])
        ys, xs = np.meshgrid((np.arange(side) + 0.5) / side, (np.arange(side) + 0.5) / side, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_layer * (j - i), axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class Detection:
    """One detection in normalized coordinates: score, box ``(xmin, ymin, xmax, ymax)``, keypoints ``[k, 2]``."""

    score: float
    box: np.ndarray
    keypoints: np.ndarray


def decode_ssd(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, scale: float,
               num_keypoints: int, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores ``[n]``, boxes ``[n, 4]`` and keypoints ``[n, k, 2]`` of the SSD outputs scoring >= ``min_score``.

    MediaPipe's ``TensorsToDetectionsCalculator`` with fixed-size anchors: boxes in (x, y, w, h)
    order, coordinates divided by ``scale`` and offset by the anchor centre, scores the sigmoid
    of the clipped logit; boxes of negative size are dropped. Boxes are ``(xmin, ymin, xmax, ymax)``.
    """
    scores = _sigmoid(np.clip(raw_scores.reshape(-1), -100.0, 100.0))
    keep = np.flatnonzero(scores >= min_score)
    raw = raw_boxes.reshape(raw_boxes.shape[-2], raw_boxes.shape[-1])[keep]
    anc = anchors[keep]
    cx = raw[:, 0] / scale + anc[:, 0]
    cy = raw[:, 1] / scale + anc[:, 1]
    w, h = raw[:, 2] / scale, raw[:, 3] / scale
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = raw[:, 4:4 + 2 * num_keypoints].reshape(-1, num_keypoints, 2) / scale + anc[:, None, :]
    valid = (w >= 0) & (h >= 0)
    return scores[keep][valid], boxes[valid], kps[valid]


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Intersection over union of each of ``boxes`` ``[n, 4]`` with ``box`` ``[4]`` (xmin, ymin, xmax, ymax)."""
    ix0 = np.maximum(boxes[:, 0], box[0])
    iy0 = np.maximum(boxes[:, 1], box[1])
    ix1 = np.minimum(boxes[:, 2], box[2])
    iy1 = np.minimum(boxes[:, 3], box[3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _merged(boxes: np.ndarray, kps: np.ndarray, sc: np.ndarray, top: int, cand: np.ndarray) -> Detection:
    """The score-weighted average of the candidates ``cand`` (a mask), scored as ``top``."""
    wts = sc[cand][:, None]
    box = (boxes[cand] * wts).sum(axis=0) / wts.sum()
    kp = (kps[cand] * wts[:, :, None]).sum(axis=0) / wts.sum()
    return Detection(float(sc[top]), box, kp)


def first_detection(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, scale: float,
                    num_keypoints: int, min_score: float, iou_threshold: float = 0.3) -> Detection | None:
    """The best detection after MediaPipe's weighted non-maximum suppression (or ``None``).

    Decodes the SSD outputs (:func:`decode_ssd`) and averages, weighted by score, every box
    overlapping the best one by IoU > ``iou_threshold`` (``WEIGHTED`` NMS's first output).
    """
    sc, boxes, kps = decode_ssd(raw_boxes, raw_scores, anchors, scale, num_keypoints, min_score)
    if sc.size == 0:
        return None
    top = int(np.argsort(-sc, kind="stable")[0])
    cand = box_iou(boxes, boxes[top]) > iou_threshold
    cand[top] = True
    return _merged(boxes, kps, sc, top, cand)


def all_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, scale: float,
                   num_keypoints: int, min_score: float, iou_threshold: float = 0.3) -> list[Detection]:
    """Every detection of MediaPipe's weighted non-maximum suppression, best first.

    Like :func:`first_detection`, repeated: the best remaining box and every remaining box
    overlapping it by IoU > ``iou_threshold`` are averaged into one detection and removed.
    """
    sc, boxes, kps = decode_ssd(raw_boxes, raw_scores, anchors, scale, num_keypoints, min_score)
    out: list[Detection] = []
    remaining = np.ones(sc.size, dtype=bool)
    for top in np.argsort(-sc, kind="stable"):
        if not remaining[top]:
            continue
        cand = remaining & (box_iou(boxes, boxes[top]) > iou_threshold)
        cand[top] = True
        out.append(_merged(boxes, kps, sc, int(top), cand))
        remaining &= ~cand
    return out


# --------------------------------------------------------------------------- smoothing


class OneEuroFilter:
    """Vectorized one-euro filter of MediaPipe's ``LandmarksSmoothingCalculator`` (raw derivative)."""

    def __init__(self, min_cutoff: float, beta: float, derivate_cutoff: float, frequency: float = 30.0) -> None:
        self.min_cutoff, self.beta, self.derivate_cutoff = min_cutoff, beta, derivate_cutoff
        self.initial_frequency = frequency
        self.reset()

    def reset(self) -> None:
        self.frequency = self.initial_frequency
        self.last_time = 0
        self.x: np.ndarray | None = None
        self.raw: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        te = 1.0 / self.frequency
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    def apply(self, time_us: int, value: np.ndarray, value_scale: float) -> np.ndarray:
        if self.last_time >= time_us:
            return value
        if self.last_time != 0:
            self.frequency = 1.0 / ((time_us - self.last_time) * 1e-6)
        self.last_time = time_us
        if self.x is None:
            self.x, self.raw, self.dx = value.copy(), value.copy(), np.zeros_like(value)
            return value.copy()
        dvalue = (value - self.raw) * value_scale * self.frequency
        self.dx = self._alpha(self.derivate_cutoff) * dvalue + (1 - self._alpha(self.derivate_cutoff)) * self.dx
        alpha = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx))
        self.x = alpha * value + (1 - alpha) * self.x
        self.raw = value.copy()
        return self.x.copy()


class LowPass:
    """First-order low-pass filter (``VisibilitySmoothingCalculator``'s ``low_pass_filter``)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.value: np.ndarray | None = None

    def reset(self) -> None:
        self.value = None

    def apply(self, value: np.ndarray) -> np.ndarray:
        self.value = value.copy() if self.value is None else self.alpha * value + (1 - self.alpha) * self.value
        return self.value.copy()


class PoseFilter:
    """Holistic's ``PoseLandmarkFiltering`` for the body (33) and auxiliary (2) landmarks."""

    def __init__(self) -> None:
        self.body = OneEuroFilter(0.05, 80.0, 1.0)
        self.aux = OneEuroFilter(0.01, 10.0, 1.0)
        self.body_vis = LowPass(0.1)
        self.aux_vis = LowPass(0.1)

    def reset(self) -> None:
        for f in (self.body, self.aux, self.body_vis, self.aux_vis):
            f.reset()

    def apply(self, time_us: int, body: np.ndarray, aux: np.ndarray, width: int,
              height: int) -> tuple[np.ndarray, np.ndarray]:
        """Filtered copies of ``body`` ``[33, 4]`` and ``aux`` ``[2, 4]`` (x, y, z, visibility, normalized)."""
        scale_rect = alignment_rect(aux[0], aux[1], width, height, math.pi / 2)
        object_scale = (scale_rect.w * width + scale_rect.h * height) / 2.0
        px = np.array([width, height, width], dtype=np.float64)
        out = []
        for pts, euro, vis in ((body, self.body, self.body_vis), (aux, self.aux, self.aux_vis)):
            res = pts.copy()
            res[:, 3] = vis.apply(pts[:, 3])
            if object_scale >= 1e-6:
                res[:, :3] = euro.apply(time_us, pts[:, :3] * px, 1.0 / object_scale) / px
            out.append(res)
        return out[0], out[1]


# --------------------------------------------------------------------------- hand second chance

SEARCH_SIDE = 1.5
"""Side of the square searched for a palm around a pose wrist, in shoulder widths."""
PALM_GATE = 0.6
"""A palm is kept only when its wrist keypoint is this close to the pose wrist (shoulder widths)."""
WRIST_GATE = 0.5
"""A recovered hand is kept only when its wrist landmark is this close to the pose wrist (shoulder widths)."""
MAX_HAND_IOU = 0.3
"""A recovered hand whose box overlaps the other hand's by more IoU than this is rejected."""
MAX_OFF_PICTURE = 0.25
"""A recovered hand is rejected when more than this share of its landmarks lie off the picture:
outside the frame or on black pixels (letterbox bars: WLASL's clips are letterboxed to 256x256)."""
BLACK_LEVEL = 12
"""A landmark is on black when no pixel of the 5x5 patch around it is brighter than this (any channel)."""
PALM_MIN_SCORE = 0.5
"""Score threshold of the palm detector (``PalmDetectionCpu``'s)."""
MIN_BODY_SCALE = 0.1
"""Floor of the body scale (shoulder width), as a fraction of the frame's short side."""


def body_scale(body: np.ndarray, width: int, height: int) -> float:
    """Shoulder width in pixels (pose points 11 and 12), at least :data:`MIN_BODY_SCALE` of the short side.

    Parameters
    ----------
    body
        The 33 pose landmarks ``[33, >=2]``, normalized.
    width, height
        Frame size in pixels.

    Returns
    -------
    float
        The length the second chance's regions and gates are measured in.
    """
    dx = (float(body[11, 0]) - float(body[12, 0])) * width
    dy = (float(body[11, 1]) - float(body[12, 1])) * height
    return max(math.hypot(dx, dy), MIN_BODY_SCALE * min(width, height))


def search_rect(centre: np.ndarray, side_px: float, width: int, height: int) -> Rect:
    """An upright square of ``side_px`` pixels centred on the normalized ``centre``."""
    return Rect(float(centre[0]), float(centre[1]), side_px / width, side_px / height, 0.0)


def tensor_to_frame(uv: np.ndarray, padded: tuple[float, float, float, float, float], width: int,
                    height: int) -> np.ndarray:
    """Points ``[n, 2]`` from a crop tensor's 0..1 coordinates to the frame's, normalized.

    ``padded`` is the rect the tensor covers (:attr:`Crop.padded`: centre and size in pixels,
    rotation).
    """
    cx, cy, w, h, r = padded
    cos_r, sin_r = math.cos(r), math.sin(r)
    u, v = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    return np.stack([(w * cos_r * u - h * sin_r * v + cx) / width,
                     (w * sin_r * u + h * cos_r * v + cy) / height], axis=1)


def detection_to_frame(det: Detection, padded: tuple[float, float, float, float, float], width: int,
                       height: int) -> Detection:
    """``det`` from a crop tensor's 0..1 coordinates to the frame's (``padded``: :attr:`Crop.padded`).

    Keypoints are mapped exactly (:func:`tensor_to_frame`); the box is the axis-aligned bounds of
    its mapped corners.
    """
    x0, y0, x1, y1 = (float(v) for v in det.box)
    corners = tensor_to_frame(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), padded, width, height)
    box = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
    keypoints = tensor_to_frame(np.asarray(det.keypoints, dtype=np.float64), padded, width, height)
    return Detection(det.score, box, keypoints)


def hand_tracking_rect(hand: np.ndarray, width: int, height: int) -> Rect:
    """The ROI Holistic's hand tracker builds from a frame's hand landmarks for the next frame."""
    return transform_rect(hand_rect_from_landmarks(hand, width, height), width, height, 2.0, -0.1)


def palm_rect(det: Detection, width: int, height: int) -> Rect:
    """The hand ROI of a palm detection (MediaPipe's ``PalmDetectionDetectionToRoi``).

    The palm box, rotated so that the vector from palm keypoint 0 (wrist centre) to keypoint 2
    (middle finger base) points up (90 degrees), shifted by half its height towards the
    fingers, squared on its long side and scaled by 2.6.

    Parameters
    ----------
    det
        A palm detection in normalized frame coordinates (7 keypoints).
    width, height
        Frame size in pixels.

    Returns
    -------
    Rect
        The rect the hand landmark model is run on.
    """
    x0, y0, x1, y1 = (float(v) for v in det.box)
    k0, k2 = det.keypoints[0], det.keypoints[2]
    rot = _rotation(float(k0[0]) * width, float(k0[1]) * height, float(k2[0]) * width, float(k2[1]) * height,
                    math.pi / 2)
    return transform_rect(Rect((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, rot), width, height, 2.6, -0.5)


def _pixels(point: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.array([float(point[0]) * width, float(point[1]) * height])


def hand_box(hand: np.ndarray) -> np.ndarray:
    """Axis-aligned bounds ``(xmin, ymin, xmax, ymax)`` of hand landmarks ``[21, >=2]`` (normalized)."""
    return np.concatenate([hand[:, :2].min(axis=0), hand[:, :2].max(axis=0)])


def pick_palm(palms: list[Detection], wrist: np.ndarray, other_wrist: np.ndarray, other_hand: np.ndarray | None,
              scale: float, width: int, height: int) -> Detection | None:
    """The best-scoring palm that can be this side's hand, or ``None``.

    A palm qualifies when its wrist keypoint is within :data:`PALM_GATE` shoulder widths of
    ``wrist`` and nearer to it than to ``other_wrist`` (the other side's pose wrist), and its
    centre is not inside ``other_hand``'s box (the other hand, already found this frame).

    Parameters
    ----------
    palms
        Detections in normalized frame coordinates, best first.
    wrist, other_wrist
        This side's and the other side's pose wrists (normalized x, y).
    other_hand
        The other side's hand landmarks ``[21, 3]`` found this frame, or ``None``.
    scale
        Body scale in pixels (:func:`body_scale`).
    width, height
        Frame size in pixels.
    """
    wrist_px, other_px = _pixels(wrist, width, height), _pixels(other_wrist, width, height)
    taken = hand_box(other_hand) if other_hand is not None else None
    for det in palms:
        k0 = _pixels(det.keypoints[0], width, height)
        near, other = np.hypot(*(k0 - wrist_px)), np.hypot(*(k0 - other_px))
        if near > PALM_GATE * scale or near > other:
            continue
        cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
        if taken is not None and taken[0] <= cx <= taken[2] and taken[1] <= cy <= taken[3]:
            continue
        return det
    return None


def off_picture(points: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Which of the normalized ``points`` ``[n, >=2]`` lie outside ``frame`` or on black (:data:`BLACK_LEVEL`).

    Parameters
    ----------
    points
        Landmarks, x and y normalized to the frame.
    frame
        The RGB uint8 frame ``[H, W, 3]``.

    Returns
    -------
    numpy.ndarray
        ``[n]`` bool.
    """
    height, width = frame.shape[:2]
    x, y = points[:, 0] * width, points[:, 1] * height
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    col = np.clip(np.nan_to_num(x).astype(np.int64), 0, width - 1)
    row = np.clip(np.nan_to_num(y).astype(np.int64), 0, height - 1)
    offsets = np.arange(-2, 3)
    rows = np.clip(row[:, None, None] + offsets[None, :, None], 0, height - 1)
    cols = np.clip(col[:, None, None] + offsets[None, None, :], 0, width - 1)
    black = frame[rows, cols].max(axis=(1, 2, 3)) <= BLACK_LEVEL
    return ~inside | black


def wrist_in_view(wrist: np.ndarray, frame: np.ndarray) -> bool:
    """Whether a lost hand can be in view: its pose ``wrist`` is on the picture (:func:`off_picture`).

    A wrist outside the frame or on black (a letterbox bar) has its hand out of the picture:
    hands found there were false in every overlay looked at (bench/README.md), and skipping them
    spares the palm detector most frames where the hand is out of view.
    """
    return not bool(off_picture(np.asarray(wrist, dtype=np.float64)[None, :2], frame)[0])


def plausible_hand(hand: np.ndarray, wrist: np.ndarray, other_wrist: np.ndarray, other_hand: np.ndarray | None,
                   scale: float, width: int, height: int, frame: np.ndarray | None = None) -> bool:
    """Whether recovered landmarks can be this side's hand (the gates that keep false hands out).

    The hand's wrist landmark must lie within :data:`WRIST_GATE` shoulder widths of the pose
    ``wrist`` and nearer to it than to ``other_wrist``; its box must not overlap ``other_hand``'s
    by more than :data:`MAX_HAND_IOU`; and, given the ``frame``, at most :data:`MAX_OFF_PICTURE`
    of its landmarks may lie off the picture (:func:`off_picture`).

    Parameters
    ----------
    hand
        The 21 recovered landmarks ``[21, 3]``, normalized.
    wrist, other_wrist, other_hand, scale, width, height
        As for :func:`pick_palm`.
    frame
        The RGB frame the hand was found in (``None``: no picture check).
    """
    lm_wrist = _pixels(hand[0], width, height)
    near = np.hypot(*(lm_wrist - _pixels(wrist, width, height)))
    if near > WRIST_GATE * scale or near > np.hypot(*(lm_wrist - _pixels(other_wrist, width, height))):
        return False
    if other_hand is not None and float(box_iou(hand_box(other_hand)[None], hand_box(hand))[0]) > MAX_HAND_IOU:
        return False
    return frame is None or float(off_picture(hand, frame).mean()) <= MAX_OFF_PICTURE


def _hand_points(lm: np.ndarray, flag: np.ndarray, padding: tuple[float, float, float, float],
                 roi: Rect) -> np.ndarray | None:
    """The hand landmark model's output for one crop: 21 frame points ``[21, 3]``, or ``None`` (presence <= 0.5)."""
    if not float(flag.reshape(-1)[0]) > 0.5:
        return None
    pts = lm.reshape(21, 3).astype(np.float64) / 224.0
    pts[:, 2] /= 0.4
    return project(pts, padding, roi)


# --------------------------------------------------------------------------- the engine


CACHE_ENV = "SLDATA_OPENVINO_CACHE"
"""Environment variable naming the folder of compiled models (``off`` or empty: no cache)."""
BATCHED = {"hand_landmark": 2}
"""Models also compiled for a batch (both hands of a frame in one call: the same numbers, less CPU)."""


def compiled_model_cache() -> Path | None:
    """The folder where compiled models are kept between processes, or ``None`` (caching off).

    ``$SLDATA_OPENVINO_CACHE`` when set (``off`` or an empty value turns the cache off), else
    ``$XDG_CACHE_HOME/sldata/openvino`` (``~/.cache/sldata/openvino``). Compiling the seven
    models takes a process about 1.4 CPU-s; loading them from the cache about 0.3.
    """
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip() in ("", "off") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sldata" / "openvino"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Models:
    """The compiled models of one estimator (shared by its sessions), each with its input buffer.

    A model is run by writing its input in place (:attr:`inputs`, e.g. with :func:`crop`'s
    ``out``) and calling :meth:`infer`. Compiled models are exported to
    :func:`compiled_model_cache` and imported from it by later processes; the key covers the
    model file, this module's source, the batch, the precision, the CPU (its name and OpenVINO's
    capabilities for it: a home folder shared by a cluster's machines) and OpenVINO's version, so any change
    compiles afresh. An unreadable cache entry is compiled again and replaced.
    """

    def __init__(self, threads: int, face: bool, precision: str = "f32", palm: bool = False) -> None:
        import openvino as ov

        self._ov = ov
        self._core = ov.Core()
        # No pinning: OpenVINO would pin each process's inference thread to the same first core, so
        # two pose workers (or a worker beside anything else) would share one core and leave the other idle.
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        root = _modules_dir()
        self._cache = compiled_model_cache()
        self._cache_key: dict[str, str] = {}  # what every entry's key shares: this module, the CPU, OpenVINO
        if self._cache is not None:
            device = [self._core.get_property("CPU", "FULL_DEVICE_NAME"),  # a shared home may serve other machines
                      *self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
            self._cache_key = {"engine": _sha256(Path(__file__)), "device": " ".join(map(str, device)),
                               "openvino": ov.get_version()}
        self.requests: dict[str, Any] = {}
        self.inputs: dict[str, np.ndarray] = {}
        """Per model (``hand_landmark_x2`` for the batch of two), its input tensor ``[N, H, W, 3]`` uint8."""
        files = {**MODEL_FILES, **({"palm_detection": PALM_MODEL} if palm else {})}
        for name, rel in files.items():
            if not face and name.startswith("face"):
                continue
            path = root / rel
            if not path.is_file():
                raise FileNotFoundError(f"MediaPipe model {path} is missing (mediapipe's wheel should ship it)")
            hint = precision if precision != "mixed" else ("f32" if name.startswith("pose") else "bf16")
            digest = _sha256(path) if self._cache is not None else ""
            for batch in (1, BATCHED[name]) if name in BATCHED else (1,):
                key = name if batch == 1 else f"{name}_x{batch}"
                compiled = self._compiled(key, name, path, digest, batch, {**config, "INFERENCE_PRECISION_HINT": hint})
                self.requests[key] = compiled.create_infer_request()
                self.inputs[key] = self.requests[key].get_input_tensor().data

    def _model(self, name: str, path: Path, batch: int) -> Any:
        """The model of ``path`` with only the outputs the engine reads, uint8 pixels in, for ``batch`` images."""
        ov = self._ov
        keep_outputs = {"pose_landmark": (0, 1, 3), "hand_landmark": (0, 1)}  # no segmentation / world / handedness
        model = self._core.read_model(str(path))
        if name in keep_outputs:
            model = ov.Model([model.outputs[i] for i in keep_outputs[name]], model.get_parameters(), name)
        if batch != 1:
            shape = model.inputs[0].get_partial_shape()
            shape[0] = batch
            model.reshape({model.inputs[0]: shape})
        ppp = ov.preprocess.PrePostProcessor(model)  # uint8 in; 0..255 -> the model's range inside
        ppp.input().tensor().set_element_type(ov.Type.u8)
        steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
        if name in SIGNED_INPUT:
            steps.mean(127.5).scale(127.5)
        else:
            steps.scale(255.0)
        return ppp.build()

    def _compiled(self, label: str, name: str, path: Path, digest: str, batch: int, config: dict[str, Any]) -> Any:
        """The compiled model ``label`` (``name`` for ``batch``): imported from the cache when it holds it,
        else compiled (and cached). ``digest`` is the model file's SHA-256."""
        if self._cache is None:
            return self._core.compile_model(self._model(name, path, batch), "CPU", config)
        key = hashlib.sha256(json.dumps({**self._cache_key, "model": digest, "name": name, "batch": batch,
                                         "config": {k: str(v) for k, v in config.items()}},
                                        sort_keys=True).encode()).hexdigest()
        blob = self._cache / f"{label}-{key[:24]}.blob"
        if blob.is_file():
            try:
                return self._core.import_model(io.BytesIO(blob.read_bytes()), "CPU", config)
            except Exception as exc:  # a torn or foreign file: compile again and replace it
                log.warning("compiled model cache %s unreadable (%s: %s); compiling again", blob, type(exc).__name__, exc)
        compiled = self._core.compile_model(self._model(name, path, batch), "CPU", config)
        try:
            self._cache.mkdir(parents=True, exist_ok=True)
            tmp = blob.with_name(f".{blob.name}.{os.getpid()}.tmp")
            tmp.write_bytes(compiled.export_model().getvalue())
            os.replace(tmp, blob)
        except OSError as exc:  # a read-only or full disk only costs the next process a compilation
            log.warning("cannot write compiled model cache %s (%s); set %s=off to stop trying", blob, exc, CACHE_ENV)
        return compiled

    def infer(self, name: str) -> list[np.ndarray]:
        """Run ``name`` on what :attr:`inputs` holds; its outputs (views, valid until its next run)."""
        req = self.requests[name]
        req.infer(share_outputs=True)
        return [req.get_output_tensor(i).data for i in range(len(req.model_outputs))]


class OpenVinoHolisticEstimator:
    """Holistic's graph on OpenVINO (body 33, hands 2 x 21, optional face points); see the module docs.

    Parameters
    ----------
    face
        ``none``, ``subset`` (93 points) or ``full`` (468 mesh points); ``none`` skips the face models.
    model_complexity
        Must be 1 (the pose model the mediapipe wheel ships).
    min_detection_confidence
        Score threshold of the pose detector.
    min_tracking_confidence
        Presence threshold of the pose landmark model (below it the body is lost and detected again).
    threads
        OpenVINO inference threads per model (0: OpenVINO's choice). 1 gives the least CPU per frame.
    precision
        OpenVINO's inference precision: ``f32`` (the default: MediaPipe's numbers), ``mixed``
        (the pose detector and pose landmarks in f32, the hand and face models in bf16: the body
        is f32's exactly, hands and face move by hundredths of a pixel, about 20% less CPU per
        frame) or ``bf16`` (every model; faster on CPUs with AMX/AVX-512 BF16, less exact: the
        body's heatmap refinement shifts). Measured in docs/benchmarks.md "Pose engines".
    hand_second_chance
        Off (the default), the hands are Holistic's: found from the pose only. On, a hand side
        the tracker lost gets a second chance (:meth:`OpenVinoHolisticSession._second_chance`):
        palm detection around the pose wrist, then the hand landmark model, kept only when it
        passes the plausibility gates. The tracker's own results and state are unchanged, so
        the output with it on is the output with it off plus the recovered hands (each
        session's ``recovered`` says which, and how they were found).

    Raises
    ------
    ValueError
        An invalid setting.
    FileNotFoundError
        A model missing from the mediapipe wheel.
    """

    def __init__(self, face: str = "subset", model_complexity: int = 1, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, threads: int = 1, precision: str = "f32",
                 hand_second_chance: bool = False) -> None:
        validate_holistic_settings(face, model_complexity, min_detection_confidence, min_tracking_confidence)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {threads!r}")
        validate_options(precision, hand_second_chance)
        self.hand_second_chance = hand_second_chance
        self.precision = precision
        self.model_complexity = model_complexity
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.skeleton = openvino_skeleton(face, model_complexity)
        self._face_idx = np.asarray(face_indices(face), dtype=np.int64)
        self._slices = {part: self.skeleton.part_slice(part) for part in self.skeleton.parts}
        self.models = _Models(threads, face=bool(self._face_idx.size), precision=precision, palm=hand_second_chance)
        self.pose_anchors = ssd_anchors(224, (8, 16, 32, 32, 32))
        self.face_anchors = ssd_anchors(128, (8, 16, 16, 16))
        self.palm_anchors = ssd_anchors(192, (8, 16, 16, 16))

    def session(self, record_recovered: bool = False) -> OpenVinoHolisticSession:
        """Fresh tracking state for one clip or stream (see :class:`sldata.pose.estimator.PoseSession`).

        ``record_recovered`` keeps the session's per-frame ``recovered`` record (one entry per
        frame: off by default, so an endless stream does not grow it).
        """
        return OpenVinoHolisticSession(self, record_recovered=record_recovered)

    def estimate(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """Keypoints ``[T, P, 4]`` float32 of one clip's RGB uint8 ``[H, W, 3]`` frames (in order)."""
        return self.estimate_with_recovered(frames)[0]

    def estimate_with_recovered(self, frames: Iterable[np.ndarray]) -> tuple[np.ndarray, list[dict[str, str]]]:
        """:meth:`estimate`, and its session's ``recovered``: per frame, the hands the second chance added."""
        with self.session(record_recovered=True) as session:
            rows = [session.process(frame, where=f"frame {i}") for i, frame in enumerate(frames)]
        recovered = session.recovered if session.recovered is not None else []
        if not rows:
            return np.zeros((0, self.skeleton.num_points, len(COMPONENTS)), dtype=np.float32), recovered
        return np.stack(rows), recovered

    def without_recovered(self, keypoints: np.ndarray, recovered: list[dict[str, str]]) -> np.ndarray:
        """``keypoints`` ``[T, P, 4]`` with the hands in ``recovered`` taken out (NaN, confidence 0).

        With :meth:`estimate_with_recovered`'s output, this is what the engine gives with
        ``hand_second_chance`` off (tested).
        """
        out = keypoints.copy()
        for t, sides in enumerate(recovered):
            for side in sides:
                out[t, self._slices[side], :3] = np.nan
                out[t, self._slices[side], 3] = 0.0
        return out


class OpenVinoHolisticSession:
    """Tracking state of one clip for :class:`OpenVinoHolisticEstimator` (a context manager)."""

    def __init__(self, estimator: OpenVinoHolisticEstimator, record_recovered: bool = False) -> None:
        self.est = estimator
        self.time_us = 0
        self.prev_pose_roi: Rect | None = None
        self.filter = PoseFilter()
        self.prev_hands: dict[str, np.ndarray | None] = {"left_hand": None, "right_hand": None}
        self.prev_face: np.ndarray | None = None
        self.last_hands: dict[str, np.ndarray | None] = {"left_hand": None, "right_hand": None}
        """The hands output on the previous frame (the tracker's or recovered): the second chance's memory."""
        self.recovered: list[dict[str, str]] | None = [] if record_recovered else None
        """Per processed frame, the hand sides the second chance found, each with how: ``palm`` or
        ``previous``; ``None`` unless the session was made with ``record_recovered``."""
        self.closed = False

    # ---- body

    def _detect_pose(self, frame: np.ndarray) -> Rect | None:
        height, width = frame.shape[:2]
        models = self.est.models
        c = crop(frame, None, 224, 224, keep_aspect=True, zero_border=True, out=models.inputs["pose_detection"][0])
        boxes, scores = models.infer("pose_detection")
        det = first_detection(boxes, scores, self.est.pose_anchors, 224.0, 4, self.est.min_detection_confidence)
        if det is None:
            return None
        left, top, right, bottom = c.padding
        kps = (det.keypoints - [left, top]) / [1.0 - left - right, 1.0 - top - bottom]
        raw = alignment_rect(kps[0], kps[1], width, height, math.pi / 2)
        return transform_rect(raw, width, height, 1.25)

    def _pose_landmarks(self, frame: np.ndarray, roi: Rect) -> tuple[np.ndarray, np.ndarray] | None:
        models = self.est.models
        c = crop(frame, roi, 256, 256, keep_aspect=True, zero_border=False, out=models.inputs["pose_landmark"][0])
        lm, flag, heatmap = models.infer("pose_landmark")
        if not float(flag.reshape(-1)[0]) > self.est.min_tracking_confidence:
            return None
        raw = lm.reshape(39, 5).astype(np.float64)
        pts = raw[:, :3] / 256.0
        refine_from_heatmap(pts, heatmap.reshape(64, 64, 39), kernel=7)
        out = np.empty((39, 4), dtype=np.float64)
        out[:, :3] = project(pts, c.padding, roi)
        out[:, 3] = _sigmoid(raw[:, 3])
        return out[:33], out[33:35]

    # ---- hands

    def _hand_roi(self, frame: np.ndarray, pose: np.ndarray, side: str, idx: tuple[int, int, int]) -> Rect | None:
        """The ROI the hand landmark model gets for ``side`` (recrop or tracking), or ``None`` (wrist unseen)."""
        height, width = frame.shape[:2]
        wrist, pinky, index = pose[idx[0]], pose[idx[1]], pose[idx[2]]
        if not wrist[3] > 0.1:
            return None
        models = self.est.models
        from_pose = transform_rect(hand_rect_from_pose(wrist, pinky, index, width, height), width, height, 2.7, -0.1)
        c = crop(frame, from_pose, 256, 256, keep_aspect=True, zero_border=False, out=models.inputs["hand_recrop"][0])
        (out,) = models.infer("hand_recrop")
        pts = np.zeros((2, 3))
        pts[:, :2] = out.reshape(2, 2) / 256.0
        align = project(pts, c.padding, from_pose)
        recrop = transform_rect(alignment_rect(align[0], align[1], width, height, -math.pi / 2), width, height,
                                1.0, -0.1)
        prev = self.prev_hands[side]
        if prev is not None:
            prev_rect = hand_tracking_rect(prev, width, height)
            if keep_tracking(prev, prev_rect, recrop, width, height, 40.0, 0.2, 0.4, -0.1):
                return prev_rect
        return recrop

    def _hands(self, frame: np.ndarray, rois: dict[str, Rect]) -> dict[str, np.ndarray | None]:
        """The hand landmark model on each side's ROI, both sides in one batch of two when both have one."""
        if len(rois) != 2:
            return {side: self._hand_landmarks(frame, roi) for side, roi in rois.items()}
        models = self.est.models
        buffer = models.inputs["hand_landmark_x2"]
        crops = {side: crop(frame, roi, 224, 224, keep_aspect=True, zero_border=False, out=buffer[i])
                 for i, (side, roi) in enumerate(rois.items())}
        lm, flag = models.infer("hand_landmark_x2")
        return {side: _hand_points(lm[i], flag[i], crops[side].padding, rois[side]) for i, side in enumerate(rois)}

    def _hand_landmarks(self, frame: np.ndarray, roi: Rect) -> np.ndarray | None:
        """The hand landmark model on ``roi``: 21 points ``[21, 3]`` when its presence is > 0.5, else ``None``."""
        models = self.est.models
        c = crop(frame, roi, 224, 224, keep_aspect=True, zero_border=False, out=models.inputs["hand_landmark"][0])
        lm, flag = models.infer("hand_landmark")
        return _hand_points(lm, flag, c.padding, roi)

    def _palms(self, frame: np.ndarray, region: Rect) -> list[Detection]:
        """Palm detections in ``region`` (MediaPipe's ``PalmDetectionCpu`` on a crop), frame coordinates, best first."""
        height, width = frame.shape[:2]
        models = self.est.models
        c = crop(frame, region, 192, 192, keep_aspect=True, zero_border=True, out=models.inputs["palm_detection"][0])
        boxes, scores = models.infer("palm_detection")
        dets = all_detections(boxes, scores, self.est.palm_anchors, 192.0, 7, PALM_MIN_SCORE)
        return [detection_to_frame(d, c.padded, width, height) for d in dets]  # the tensor covers c.padded

    def _second_chance(self, frame: np.ndarray, body: np.ndarray, side: str,
                       other_hand: np.ndarray | None) -> tuple[np.ndarray, str] | None:
        """A hand the tracker lost on ``side``, found again near the pose wrist, and how; or ``None``.

        Runs when the pose wrist may be in view (:func:`wrist_in_view`). First ``palm``: palm
        detection on a square of :data:`SEARCH_SIDE` shoulder widths around the wrist, the best
        palm that can be this side's (:func:`pick_palm`) turned into a hand ROI
        (:func:`palm_rect`) and the hand landmark model run on it. Failing that, ``previous``:
        when the previous frame output this hand, the landmark model on that hand's tracking ROI
        (as Holistic's tracker builds it). A hand must have presence > 0.5 and pass
        :func:`plausible_hand`.

        Parameters
        ----------
        frame
            The RGB frame.
        body
            The smoothed pose landmarks ``[33, 4]`` of this frame.
        side
            ``left_hand`` or ``right_hand``.
        other_hand
            The other side's landmarks found this frame, or ``None``.

        Returns
        -------
        tuple or None
            The 21 landmarks ``[21, 3]`` and ``"palm"`` or ``"previous"``.
        """
        height, width = frame.shape[:2]
        this, other = (_LEFT_HAND_FROM_POSE, _RIGHT_HAND_FROM_POSE)[::1 if side == "left_hand" else -1]
        wrist, other_wrist = body[this[0]], body[other[0]]
        if not wrist_in_view(wrist, frame):
            return None
        scale = body_scale(body, width, height)
        rois = []
        palms = self._palms(frame, search_rect(wrist, SEARCH_SIDE * scale, width, height))
        palm = pick_palm(palms, wrist, other_wrist, other_hand, scale, width, height)
        if palm is not None:
            rois.append((palm_rect(palm, width, height), "palm"))
        last = self.last_hands[side]
        if last is not None:
            rois.append((hand_tracking_rect(last, width, height), "previous"))
        for roi, how in rois:
            hand = self._hand_landmarks(frame, roi)
            if hand is not None and plausible_hand(hand, wrist, other_wrist, other_hand, scale, width, height, frame):
                return hand, how
        return None

    def _second_chances(self, frame: np.ndarray, body: np.ndarray,
                        hands: dict[str, np.ndarray | None]) -> dict[str, str]:
        """Fill the lost sides of ``hands`` in place by :meth:`_second_chance`; the sides filled, and how."""
        found: dict[str, str] = {}
        for side, other in (("left_hand", "right_hand"), ("right_hand", "left_hand")):
            if hands[side] is None:
                got = self._second_chance(frame, body, side, hands[other])
                if got is not None:
                    hands[side], found[side] = got
        return found

    # ---- face

    def _face(self, frame: np.ndarray, pose: np.ndarray) -> np.ndarray | None:
        height, width = frame.shape[:2]
        from_pose = transform_rect(box_rect(pose[:11], width, height, 5, 2, 0.0), width, height, 3.0)
        models = self.est.models
        c = crop(frame, from_pose, 128, 128, keep_aspect=True, zero_border=True, out=models.inputs["face_detection"][0])
        boxes, scores = models.infer("face_detection")
        det = first_detection(boxes, scores, self.est.face_anchors, 128.0, 6, 0.5)
        if det is None:
            return None
        kps = tensor_to_frame(det.keypoints, c.padded, width, height)
        xmin, ymin = kps.min(axis=0)
        xmax, ymax = kps.max(axis=0)
        rot = _rotation(kps[0, 0] * width, kps[0, 1] * height, kps[1, 0] * width, kps[1, 1] * height, 0.0)
        recrop = transform_rect(Rect(float(xmin + xmax) / 2, float(ymin + ymax) / 2, float(xmax - xmin),
                                     float(ymax - ymin), rot), width, height, 2.0, -0.1)
        roi = recrop
        if self.prev_face is not None:
            prev_rect = transform_rect(box_rect(self.prev_face, width, height, 33, 263, 0.0), width, height, 1.5)
            if keep_tracking(self.prev_face, prev_rect, recrop, width, height, 15.0, 0.1, 0.3, -0.2):
                roi = prev_rect
        c = crop(frame, roi, 192, 192, keep_aspect=False, zero_border=False, out=models.inputs["face_landmark"][0])
        lm, flag = models.infer("face_landmark")
        if not float(_sigmoid(flag.reshape(-1)[:1])[0]) > 0.5:
            return None
        pts = lm.reshape(468, 3).astype(np.float64) / 192.0
        return project(pts, c.padding, roi)

    # ---- one frame

    def process(self, frame: np.ndarray, where: str = "frame") -> np.ndarray:
        """Keypoints ``[P, 4]`` float32 of one RGB uint8 ``[H, W, 3]`` frame."""
        if self.closed:
            raise RuntimeError("pose session used after close()")
        frame = check_frame(frame, where)
        height, width = frame.shape[:2]
        self.time_us += FRAME_US
        est = self.est
        out = np.full((est.skeleton.num_points, len(COMPONENTS)), np.nan, dtype=np.float32)
        out[:, 3] = 0.0

        roi = self.prev_pose_roi if self.prev_pose_roi is not None else self._detect_pose(frame)
        found = self._pose_landmarks(frame, roi) if roi is not None else None
        if found is None:
            self.prev_pose_roi = None
            self.filter.reset()
            self.prev_hands = {"left_hand": None, "right_hand": None}
            self.prev_face = None
            self.last_hands = {"left_hand": None, "right_hand": None}
            if self.recovered is not None:
                self.recovered.append({})
            return out
        body, aux = self.filter.apply(self.time_us, found[0], found[1], width, height)
        self.prev_pose_roi = transform_rect(alignment_rect(aux[0], aux[1], width, height, math.pi / 2),
                                            width, height, 1.25)
        out[est._slices["body"]] = body
        rois = {side: self._hand_roi(frame, body, side, idx)
                for side, idx in (("left_hand", _LEFT_HAND_FROM_POSE), ("right_hand", _RIGHT_HAND_FROM_POSE))}
        hands: dict[str, np.ndarray | None] = {side: None for side in rois}
        hands.update(self._hands(frame, {side: roi for side, roi in rois.items() if roi is not None}))
        self.prev_hands = dict(hands)  # the tracker follows its own hands only
        found = self._second_chances(frame, body, hands) if est.hand_second_chance else {}
        if self.recovered is not None:
            self.recovered.append(found)
        self.last_hands = hands
        for side, hand in hands.items():
            if hand is not None:
                out[est._slices[side], :3] = hand
                out[est._slices[side], 3] = 1.0
        if est._face_idx.size:
            face = self._face(frame, body)
            self.prev_face = face
            if face is not None:
                out[est._slices["face"], :3] = face[est._face_idx]
                out[est._slices["face"], 3] = 1.0
        return out

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> OpenVinoHolisticSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def refine_from_heatmap(points: np.ndarray, heatmap: np.ndarray, kernel: int = 7, min_confidence: float = 0.5) -> None:
    """Move each landmark to the confidence-weighted centre of its heatmap window, in place.

    MediaPipe's ``RefineLandmarksFromHeatmapCalculator``: ``points`` ``[n, >=2]`` normalized to
    the crop, ``heatmap`` ``[H, W, n]`` logits; a landmark moves only when the window's peak
    confidence is >= ``min_confidence``; windows are clipped at the heatmap's edges.
    """
    hm_h, hm_w, n = heatmap.shape
    half = (kernel - 1) // 2
    cols = np.trunc(points[:, 0] * hm_w).astype(np.int64)  # truncation toward zero, as in C++
    rows = np.trunc(points[:, 1] * hm_h).astype(np.int64)
    inside = (cols >= 0) & (cols < hm_w) & (rows >= 0) & (rows < hm_h)
    offsets = np.arange(-half, half + 1)
    r = rows[:, None] + offsets  # [n, k]
    c = cols[:, None] + offsets
    valid = ((r >= 0) & (r < hm_h))[:, :, None] & ((c >= 0) & (c < hm_w))[:, None, :]
    conf = _sigmoid(heatmap[np.clip(r, 0, hm_h - 1)[:, :, None], np.clip(c, 0, hm_w - 1)[:, None, :],
                            np.arange(n)[:, None, None]].astype(np.float64)) * valid
    total = conf.sum(axis=(1, 2))
    move = inside & (conf.max(axis=(1, 2)) >= min_confidence) & (total > 0)
    safe = np.where(total > 0, total, 1.0)
    x = (conf * c[:, None, :]).sum(axis=(1, 2)) / hm_w / safe
    y = (conf * r[:, :, None]).sum(axis=(1, 2)) / hm_h / safe
    points[move, 0] = x[move]
    points[move, 1] = y[move]
