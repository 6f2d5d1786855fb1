"""Continuous recognition over a long video, a webcam or a network stream (sliding window).

Like Open Model Zoo's gesture recognition demo: frames are decoded one by one (PyAV for files
and ``rtsp://``/``http(s)://`` URLs, OpenCV for an integer webcam index), MediaPipe Holistic
runs on every frame with one graph for the whole stream (tracking carries over from frame to
frame), the keypoints of the last ``window`` frames are kept, and every ``stride`` frames the
window is classified by the exported model (:class:`sltrain.predict.Recognizer`).

Windows are classified once ``window`` frames have been seen and then every ``stride`` frames
(a stream of ``N >= window`` frames gives ``1 + (N - window) // stride`` windows; a shorter
one is classified once, at its end). A window's time is the timestamp of its last frame. A
window without a person (or never with both shoulders and eyes in view, which the keypoint
normalization needs) gets no glosses and an ``error``.

:func:`detections` turns window results into events ``(time_s, gloss, score)``: a window whose
top score is at least ``threshold`` is emitted when its gloss differs from the last emitted one,
or when no window reached the threshold for at least ``gap_s`` seconds before it (the same sign
signed twice with a pause between).

Nothing here imports torch.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sldata.pose.skeleton import present
from sltrain.inputs import clip_features
from sltrain.predict import ModelDirError, PredictError, PredictReason, Recognizer, softmax

DEFAULT_STRIDE = 8
DEFAULT_THRESHOLD = 0.5
DEFAULT_GAP_S = 1.0
URL_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass(frozen=True)
class WindowResult:
    """One classified window.

    Attributes
    ----------
    index
        Window number (0-based).
    frame_index
        Index of the window's last frame in the stream (0-based).
    time_s
        Timestamp of that frame in seconds.
    num_frames
        Frames in the window (``window``, fewer only for a stream shorter than it).
    top
        ``[(gloss, probability), ...]`` best first; empty when the window could not be classified.
    error
        Why it could not (e.g. nobody with both shoulders and eyes in view), else ``None``.
    """

    index: int
    frame_index: int
    time_s: float
    num_frames: int
    top: list[tuple[str, float]]
    error: str | None = None


@dataclass(frozen=True)
class Detection:
    """A recognized sign: at ``time_s`` (end of its window), ``gloss`` with probability ``score``."""

    time_s: float
    frame_index: int
    gloss: str
    score: float


# --------------------------------------------------------------------------- sources


def _is_webcam(source: str | int) -> bool:
    return isinstance(source, int) or (isinstance(source, str) and source.isdigit())


def pyav_frames(source: str, *, timeout_s: float = 10.0) -> Iterator[tuple[float, np.ndarray]]:
    """``(time_s, RGB uint8 frame)`` of a file or URL, decoded one by one; undecodable packets are skipped.

    Raises
    ------
    PredictError
        The source cannot be opened or has no video stream.
    """
    import av

    is_url = source.startswith(URL_SCHEMES)
    if not is_url and not Path(source).is_file():
        raise PredictError(source, PredictReason.MISSING, f"{source} does not exist")
    options = {"rtsp_transport": "tcp"} if source.startswith("rtsp://") else {}
    try:
        container = av.open(source, options=options, timeout=timeout_s if is_url else None)
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = PredictReason.SOURCE if is_url else PredictReason.UNDECODABLE
        raise PredictError(source, reason, f"cannot open: {exc}") from None
    try:
        if not container.streams.video:
            raise PredictError(source, PredictReason.NO_VIDEO_STREAM, "no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        index = 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError:  # the stream broke off: end it here
                return
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                continue
            for frame in decoded:
                t = frame.time if frame.time is not None else index / (fps or 30.0)
                index += 1
                yield float(t), frame.to_ndarray(format="rgb24")
    finally:
        container.close()


def webcam_frames(index: int) -> Iterator[tuple[float, np.ndarray]]:
    """``(seconds since start, RGB uint8 frame)`` from an OpenCV camera index, until it stops delivering."""
    import cv2

    cap = cv2.VideoCapture(int(index))
    if not cap.isOpened():
        raise PredictError(f"webcam {index}", PredictReason.SOURCE, "cannot open the camera")
    started = time.monotonic()
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield time.monotonic() - started, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def open_source(source: str | int, *, timeout_s: float = 10.0) -> Iterator[tuple[float, np.ndarray]]:
    """Frames of a webcam index (``0`` or ``"0"``), a video file, or a stream URL."""
    if _is_webcam(source):
        return webcam_frames(int(source))
    return pyav_frames(str(source), timeout_s=timeout_s)


# --------------------------------------------------------------------------- windows


def classify_windows(recognizer: Recognizer, frames: Iterable[tuple[float, np.ndarray]], *,
                     window: int | None = None, stride: int = DEFAULT_STRIDE,
                     top_k: int | None = None, stats: dict[str, float] | None = None) -> Iterator[WindowResult]:
    """Classify sliding windows of a stream of ``(time_s, RGB frame)`` (rules in the module docs).

    Parameters
    ----------
    recognizer
        The exported model; its spec's skeleton chooses the Holistic face points.
    frames
        E.g. :func:`open_source`.
    window
        Frames per window (default: the model's ``num_frames``); longer windows are sampled
        down to ``num_frames`` like any clip.
    stride
        Frames between two classifications.
    top_k
        Glosses kept per window.
    stats
        If given, filled with ``frames``, ``seconds`` (wall time) and ``pose_s``/``classify_s``.
    """
    window = recognizer.spec.num_frames if window is None else int(window)
    if window < 2 or stride < 1:
        raise ValueError(f"window must be >= 2 and stride >= 1, got window={window}, stride={stride}")
    keypoints: collections.deque[np.ndarray] = collections.deque(maxlen=window)
    body = recognizer.spec.skeleton_obj.part_slice("body")
    n = 0
    count = 0
    last_time = 0.0
    width = height = 0
    started = time.perf_counter()
    if stats is not None:
        stats.update(frames=0, seconds=0.0, pose_s=0.0, classify_s=0.0)

    def classify() -> WindowResult:
        nonlocal count
        t0 = time.perf_counter()
        common: dict[str, Any] = dict(index=count, frame_index=n - 1, time_s=last_time, num_frames=len(keypoints))
        kp = np.stack(keypoints)
        try:
            if not present(kp)[:, body].any():
                raise ValueError("no person in this window")
            feats = clip_features(kp, width, height, recognizer.spec)
        except ValueError as exc:  # nobody (fully) in view in this window
            result = WindowResult(**common, top=[], error=str(exc))
        else:
            result = WindowResult(**common, top=recognizer.top(softmax(recognizer.logits(feats)), top_k))
        count += 1
        if stats is not None:
            stats["classify_s"] += time.perf_counter() - t0
        return result

    with recognizer.estimator().session() as est:
        for t, frame in frames:
            height, width = frame.shape[:2]
            t0 = time.perf_counter()
            keypoints.append(est.process(frame))
            n += 1
            last_time = t
            if stats is not None:
                stats["pose_s"] += time.perf_counter() - t0
                stats["frames"] = n
                stats["seconds"] = time.perf_counter() - started
            if n >= window and (n - window) % stride == 0:
                yield classify()
        if count == 0 and n >= 2:  # a stream shorter than one window: classify what there is
            yield classify()
    if stats is not None:
        stats["seconds"] = time.perf_counter() - started


def detections(results: Iterable[WindowResult], *, threshold: float = DEFAULT_THRESHOLD,
               gap_s: float = DEFAULT_GAP_S) -> Iterator[Detection]:
    """Events from window results: confident, and a new gloss or the same one after a pause of ``gap_s``."""
    last_gloss: str | None = None
    last_confident = -float("inf")
    for r in results:
        if not r.top:
            continue
        gloss, score = r.top[0]
        if score < threshold:
            continue
        if gloss != last_gloss or r.time_s - last_confident >= gap_s:
            yield Detection(time_s=r.time_s, frame_index=r.frame_index, gloss=gloss, score=score)
            last_gloss = gloss
        last_confident = r.time_s


def recognize_stream(recognizer: Recognizer, source: str | int | Iterable[tuple[float, np.ndarray]], *,
                     window: int | None = None, stride: int = DEFAULT_STRIDE, threshold: float = DEFAULT_THRESHOLD,
                     gap_s: float = DEFAULT_GAP_S) -> Iterator[Detection]:
    """Detections of a source (webcam index, file, URL) or an iterable of ``(time_s, frame)``."""
    frames = open_source(source) if isinstance(source, (str, int)) else source
    return detections(classify_windows(recognizer, frames, window=window, stride=stride),
                      threshold=threshold, gap_s=gap_s)


# --------------------------------------------------------------------------- CLI


def add_stream_arguments(parser: Any) -> None:
    """Arguments of ``python -m sltrain stream``."""
    parser.add_argument("source", help="video file, rtsp:// or http(s):// URL, or webcam index (0)")
    parser.add_argument("--model", required=True, metavar="DIR", help="exported model folder or model.xml")
    parser.add_argument("--window", type=int, default=None, help="frames per window (default: the model's num_frames)")
    parser.add_argument("--stride", type=int, default=DEFAULT_STRIDE, help="frames between classifications "
                                                                           "(default %(default)s)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="lowest probability reported (default %(default)s)")
    parser.add_argument("--gap", type=float, default=DEFAULT_GAP_S, dest="gap_s",
                        help="seconds without a confident window before the same gloss is reported again "
                             "(default %(default)s)")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (default %(default)s)")


def main_stream(args: Any) -> int:
    """Print ``time_s  gloss  score`` per detection; 1 if the source failed, 2 for a bad model."""
    try:
        recognizer = Recognizer.from_model_dir(args.model, device=args.device)
    except ModelDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        for d in recognize_stream(recognizer, args.source, window=args.window, stride=args.stride,
                                  threshold=args.threshold, gap_s=args.gap_s):
            print(f"{d.time_s:8.2f}s  {d.gloss:<24s} {d.score:.3f}", flush=True)
    except PredictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
