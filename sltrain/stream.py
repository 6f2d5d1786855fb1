"""Continuous recognition over a long video, a webcam or a network stream (sliding window).

Like Open Model Zoo's gesture recognition demo: frames are decoded one by one (PyAV for files
and ``rtsp://``/``http(s)://`` URLs, OpenCV for an integer webcam index), MediaPipe Holistic
runs with one graph for the whole stream (tracking carries over from frame to frame) on the
frames that give the keypoint rate of the model's training data (every 2nd frame of a 25 fps
source for a model trained on 12.5 keypoints/s: :meth:`sltrain.inputs.InputSpec.frame_step_for`),
the keypoints of the last ``window`` keypoint frames are kept (by default the duration of a
median training clip), and every ``stride`` keypoint frames the window is classified by the
exported model (:class:`sltrain.predict.Recognizer`) exactly as ``predict`` classifies a clip.

Windows are classified once ``window`` keypoint frames have been seen and then every ``stride``
(``N >= window`` keypoint frames give ``1 + (N - window) // stride`` windows; a shorter stream
is classified once, at its end). A window's time is the timestamp of its last frame. A window
without a person (or never with both shoulders and eyes in view, which the keypoint
normalization needs) gets no glosses and an ``error``. Each window also measures how fast the
hands move (:func:`wrist_speed`).

:func:`detections` turns window results into signs: runs of confident, moving windows that agree
on a gloss, each sign reported once and in order (rules in its docs).

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
from sltrain.inputs import canonical_points, input_features, select_input_points
from sltrain.predict import DEFAULT_FPS, ModelDirError, PredictError, PredictReason, Recognizer, softmax

DEFAULT_STRIDE = 2
DEFAULT_THRESHOLD = 0.5
DEFAULT_GAP_S = 1.0
DEFAULT_MIN_WINDOWS = 2
DEFAULT_MIN_MOTION = 0.0
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
    motion
        :func:`wrist_speed` of the window (shoulder widths per second): near 0 while the signer rests.
    """

    index: int
    frame_index: int
    time_s: float
    num_frames: int
    top: list[tuple[str, float]]
    error: str | None = None
    motion: float = 0.0


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


class FrameSource:
    """Timestamped RGB frames ``(time_s, frame)`` of a source, with its frame rate (``fps``, ``None`` when unknown)."""

    def __init__(self, frames: Iterator[tuple[float, np.ndarray]], fps: float | None) -> None:
        self._frames = frames
        self.fps = fps

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        return self._frames


def pyav_frames(source: str, *, timeout_s: float = 10.0) -> FrameSource:
    """``(time_s, RGB uint8 frame)`` of a file or URL, decoded one by one; undecodable packets are skipped.

    Raises
    ------
    PredictError
        The source cannot be opened or has no video stream (raised here, before any frame).
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
    if not container.streams.video:
        container.close()
        raise PredictError(source, PredictReason.NO_VIDEO_STREAM, "no video stream")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None

    def frames() -> Iterator[tuple[float, np.ndarray]]:
        index = 0
        try:
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

    return FrameSource(frames(), fps)


def webcam_frames(index: int) -> FrameSource:
    """``(seconds since start, RGB uint8 frame)`` from an OpenCV camera index, until it stops delivering."""
    import cv2

    cap = cv2.VideoCapture(int(index))
    if not cap.isOpened():
        raise PredictError(f"webcam {index}", PredictReason.SOURCE, "cannot open the camera")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or None

    def frames() -> Iterator[tuple[float, np.ndarray]]:
        started = time.monotonic()
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield time.monotonic() - started, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    return FrameSource(frames(), fps)


def open_source(source: str | int, *, timeout_s: float = 10.0) -> FrameSource:
    """Frames of a webcam index (``0`` or ``"0"``), a video file, or a stream URL."""
    if _is_webcam(source):
        return webcam_frames(int(source))
    return pyav_frames(str(source), timeout_s=timeout_s)


# --------------------------------------------------------------------------- windows


def window_frames(spec: Any, keypoint_fps: float | None) -> int:
    """Default window length in keypoint frames: the median training clip's duration (``spec.clip_seconds``)
    at the stream's keypoint rate, else the model's ``num_frames``."""
    if spec.clip_seconds and keypoint_fps:
        return max(2, int(round(spec.clip_seconds * keypoint_fps)))
    return int(spec.num_frames)


def wrist_speed(keypoints: np.ndarray, width: float, height: float, layout: Any, keypoint_fps: float) -> float:
    """How fast the hands move in a window: the faster wrist's mean speed, in shoulder widths per second.

    Uses the body model's wrists (found in almost every frame) over pairs of consecutive frames
    where both were detected; 0 when there are none (a still or absent signer).
    """
    from sldata.pose.features import shoulder_width
    from sldata.pose.flow import pixel_xy

    if not all(f"body.{side}_wrist" in layout.names for side in ("left", "right")):
        return 0.0
    scale = shoulder_width(keypoints, width, height, layout)
    if not np.isfinite(scale) or scale <= 0:
        return 0.0
    speeds = []
    for side in ("left", "right"):
        xy = pixel_xy(keypoints[:, layout.index(f"body.{side}_wrist")][:, None], width, height)[:, 0]
        step = np.linalg.norm(np.diff(xy, axis=0), axis=-1)
        step = step[np.isfinite(step)]
        speeds.append(float(step.mean()) if step.size else 0.0)
    return max(speeds) / scale * keypoint_fps


def classify_windows(recognizer: Recognizer, frames: Iterable[tuple[float, np.ndarray]], *,
                     window: int | None = None, stride: int = DEFAULT_STRIDE, fps: float | None = None,
                     top_k: int | None = None, stats: dict[str, float] | None = None) -> Iterator[WindowResult]:
    """Classify sliding windows of a stream of ``(time_s, RGB frame)`` (rules in the module docs).

    Only every ``step``-th frame reaches Holistic, where ``step`` gives the keypoint rate of
    the model's training data (:meth:`sltrain.inputs.InputSpec.frame_step_for` of ``fps``);
    ``window`` and ``stride`` count those keypoint frames.

    Parameters
    ----------
    recognizer
        The exported model; its spec's skeleton chooses the Holistic face points.
    frames
        E.g. :func:`open_source`.
    window
        Keypoint frames per window (default :func:`window_frames`: the span of a median training
        clip); longer windows are sampled down to ``num_frames`` like any clip.
    stride
        Keypoint frames between two classifications.
    fps
        The source's frame rate (default: ``frames.fps`` when it has one).
    top_k
        Glosses kept per window.
    stats
        If given, filled with ``frames`` (decoded), ``keypoint_frames``, ``frame_step``,
        ``seconds`` (wall time) and ``pose_s``/``classify_s``.
    """
    spec = recognizer.spec
    fps = getattr(frames, "fps", None) if fps is None else fps
    step = spec.frame_step_for(fps)
    keypoint_fps = fps / step if fps else spec.keypoint_fps
    window = window_frames(spec, keypoint_fps) if window is None else int(window)
    if window < 2 or stride < 1:
        raise ValueError(f"window must be >= 2 and stride >= 1, got window={window}, stride={stride}")
    keypoints: collections.deque[np.ndarray] = collections.deque(maxlen=window)
    body = spec.skeleton_obj.part_slice("body")
    decoded = 0  # frames of the source
    n = 0  # keypoint frames
    count = 0
    last_time = 0.0
    width = height = 0
    started = time.perf_counter()
    if stats is not None:
        stats.update(frames=0, keypoint_frames=0, frame_step=step, seconds=0.0, pose_s=0.0, classify_s=0.0)

    def classify() -> WindowResult:
        nonlocal count
        t0 = time.perf_counter()
        common: dict[str, Any] = dict(index=count, frame_index=decoded - 1, time_s=last_time,
                                      num_frames=len(keypoints))
        kp = np.stack(keypoints)
        try:
            if not present(kp)[:, body].any():
                raise ValueError("no person in this window")
            points = select_input_points(kp, spec)
            motion = wrist_speed(points, width, height, spec.layout, keypoint_fps or DEFAULT_FPS)
            feats = input_features(canonical_points(points, width, height, spec), width, height, spec)
        except ValueError as exc:  # nobody (fully) in view in this window
            result = WindowResult(**common, top=[], error=str(exc))
        else:
            result = WindowResult(**common, top=recognizer.top(softmax(recognizer.logits(feats)), top_k),
                                  motion=motion)
        count += 1
        if stats is not None:
            stats["classify_s"] += time.perf_counter() - t0
        return result

    with recognizer.estimator().session() as est:
        for t, frame in frames:
            decoded += 1
            if stats is not None:
                stats["frames"] = decoded
            if (decoded - 1) % step:
                continue
            height, width = frame.shape[:2]
            t0 = time.perf_counter()
            keypoints.append(est.process(frame))
            n += 1
            last_time = t
            if stats is not None:
                stats["pose_s"] += time.perf_counter() - t0
                stats["keypoint_frames"] = n
                stats["seconds"] = time.perf_counter() - started
            if n >= window and (n - window) % stride == 0:
                yield classify()
        if count == 0 and n >= 2:  # a stream shorter than one window: classify what there is
            yield classify()
    if stats is not None:
        stats["seconds"] = time.perf_counter() - started


def detections(results: Iterable[WindowResult], *, threshold: float = DEFAULT_THRESHOLD,
               gap_s: float = DEFAULT_GAP_S, min_windows: int = DEFAULT_MIN_WINDOWS,
               min_motion: float = DEFAULT_MIN_MOTION) -> Iterator[Detection]:
    """Signs from window results: each sign once, in order, with transitions left out.

    1. A window *speaks* when its top probability is at least ``threshold`` and its hands move
       (:attr:`WindowResult.motion` at least ``min_motion``); other windows are transitions,
       rests or doubt, and end a run.
    2. Consecutive speaking windows with the same top gloss form a run; a run of fewer than
       ``min_windows`` windows is a passing guess (e.g. a window straddling two signs) and is dropped.
    3. A run whose gloss equals the previous run's and that starts less than ``gap_s`` seconds
       after it ended continues that sign (a doubtful window inside one sign); a longer pause
       makes it a new sign (the same sign signed twice).
    4. Each sign is reported once, when it is over, at its most confident window.
    """
    if min_windows < 1:
        raise ValueError(f"min_windows must be >= 1, got {min_windows}")
    pending: Detection | None = None  # the last sign, held back in case the next run continues it
    pending_end = -float("inf")
    run: list[WindowResult] = []

    def close_run() -> Iterator[Detection]:
        nonlocal pending, pending_end
        if len(run) >= min_windows:
            best = max(run, key=lambda r: r.top[0][1])
            gloss, score = best.top[0]
            if pending is not None and pending.gloss == gloss and run[0].time_s - pending_end < gap_s:
                if score > pending.score:
                    pending = Detection(time_s=best.time_s, frame_index=best.frame_index, gloss=gloss, score=score)
            else:
                if pending is not None:
                    yield pending
                pending = Detection(time_s=best.time_s, frame_index=best.frame_index, gloss=gloss, score=score)
            pending_end = run[-1].time_s
        run.clear()

    for r in results:
        speaks = bool(r.top) and r.top[0][1] >= threshold and r.motion >= min_motion
        if run and (not speaks or r.top[0][0] != run[-1].top[0][0]):
            yield from close_run()
        if speaks:
            run.append(r)
    yield from close_run()
    if pending is not None:
        yield pending


def recognize_stream(recognizer: Recognizer, source: str | int | Iterable[tuple[float, np.ndarray]], *,
                     window: int | None = None, stride: int = DEFAULT_STRIDE, threshold: float = DEFAULT_THRESHOLD,
                     gap_s: float = DEFAULT_GAP_S, min_windows: int = DEFAULT_MIN_WINDOWS,
                     min_motion: float = DEFAULT_MIN_MOTION) -> Iterator[Detection]:
    """Signs of a source (webcam index, file, URL) or an iterable of ``(time_s, frame)`` (:func:`detections`)."""
    frames = open_source(source) if isinstance(source, (str, int)) else source
    return detections(classify_windows(recognizer, frames, window=window, stride=stride),
                      threshold=threshold, gap_s=gap_s, min_windows=min_windows, min_motion=min_motion)


# --------------------------------------------------------------------------- CLI


def add_stream_arguments(parser: Any) -> None:
    """Arguments of ``python -m sltrain stream``."""
    parser.add_argument("source", help="video file, rtsp:// or http(s):// URL, or webcam index (0)")
    parser.add_argument("--model", required=True, metavar="DIR", help="exported model folder or model.xml")
    parser.add_argument("--window", type=int, default=None,
                        help="keypoint frames per window (default: the duration of a median training clip)")
    parser.add_argument("--stride", type=int, default=DEFAULT_STRIDE,
                        help="keypoint frames between classifications (default %(default)s)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="lowest probability of a window that counts as a sign (default %(default)s)")
    parser.add_argument("--min-windows", type=int, default=DEFAULT_MIN_WINDOWS,
                        help="consecutive windows agreeing on a gloss before it is a sign (default %(default)s)")
    parser.add_argument("--min-motion", type=float, default=DEFAULT_MIN_MOTION,
                        help="wrist speed (shoulder widths/s) below which a window is a rest (default %(default)s)")
    parser.add_argument("--gap", type=float, default=DEFAULT_GAP_S, dest="gap_s",
                        help="seconds between two runs of one gloss that make them two signs (default %(default)s)")
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
                                  threshold=args.threshold, gap_s=args.gap_s, min_windows=args.min_windows,
                                  min_motion=args.min_motion):
            print(f"{d.time_s:8.2f}s  {d.gloss:<24s} {d.score:.3f}", flush=True)
    except PredictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
