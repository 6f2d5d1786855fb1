"""Video in, top-5 glosses out, with an exported model (:mod:`sltrain.export`) and no PyTorch.

:class:`Recognizer` reads an exported IR (``model.xml`` + ``model.bin``), whose runtime info
carries the input spec and the class names, and compiles it with OpenVINO (f32 inference
precision). A video is decoded with PyAV (:class:`sldata.pose.extract.ClipReader`: any
resolution or frame rate, undecodable packets skipped), the pose engine training's keypoints came
from (MediaPipe Holistic or its OpenVINO rebuild) gives the keypoints on the frames training would have used (the frame step that gives the keypoint rate of the
training data, with training's Holistic settings: :attr:`InputSpec.recording`),
:func:`sltrain.inputs.clip_features` turns them
into model input exactly as in training, and the softmax of the ``gloss`` logits ranks the
classes.

This module imports neither torch nor :mod:`sltrain.export`; inference needs only numpy,
OpenVINO, PyAV and MediaPipe (whose wheel holds the pose models).

Per-file failures raise :class:`PredictError` with a stable ``reason`` (:class:`PredictReason`):
the CLI (``python -m sltrain predict VIDEO... --model DIR``) reports them per file, carries on
with the other files, and exits non-zero if any failed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sldata.pose.skeleton import present
from sltrain.inputs import InputSpec, clip_features, pad_batch

log = logging.getLogger(__name__)

EXPORT_FORMAT = "sltrain-export-v1"
"""``format`` of an exported model's metadata (``sltrain.json`` and the IR's runtime info)."""
RT_INFO_SECTION = "sltrain"
"""Runtime-info section of the exported IR holding the metadata, one JSON string per key."""
METADATA_FILE = "sltrain.json"
REQUIRED_METADATA = ("format", "label_map", "input_spec")
F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
TOP_K = 5
DEFAULT_FPS = 30.0
"""Frame rate assumed when a video does not state one (for ``max_seconds``)."""


class PredictReason:
    """Reason codes of a video that could not be recognized (stable strings)."""

    MISSING = "missing_file"
    UNDECODABLE = "undecodable"
    NO_VIDEO_STREAM = "no_video_stream"
    NO_FRAMES = "no_frames"
    NO_PERSON = "no_person"
    TOO_LONG = "too_long"
    UNUSABLE_POSE = "unusable_pose"
    """A person was seen, but never well enough to normalize the keypoints (e.g. no frame with both
    shoulders and both eyes)."""
    SOURCE = "source_error"
    """A stream source (webcam, URL) could not be opened or broke off."""
    ERROR = "error"


class PredictError(Exception):
    """One input could not be recognized; ``reason`` is a :class:`PredictReason` code."""

    def __init__(self, path: str, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {reason}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail


class ModelDirError(ValueError):
    """An exported model folder that cannot be used, naming the file at fault."""


@dataclass
class Prediction:
    """Result of :meth:`Recognizer.recognize_video`.

    Attributes
    ----------
    path
        The video.
    top
        ``[(gloss, probability), ...]`` best first.
    num_frames, fps, width, height
        Of the keypoint frames: every ``frame_step``-th decoded frame (``fps`` ``None`` when unknown).
    frame_step
        Chosen so the keypoint rate matches training's (:meth:`InputSpec.frame_step_for`).
    decode_errors
        Undecodable packets skipped.
    timings
        Seconds spent in ``decode``, ``pose`` (the pose engine), ``features``, ``classify`` and ``total``.
    """

    path: str
    top: list[tuple[str, float]]
    num_frames: int
    fps: float | None
    width: int
    height: int
    decode_errors: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    frame_step: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top"] = [{"gloss": g, "score": s} for g, s in self.top]
        return d


@dataclass
class VideoKeypoints:
    """A video's keypoints ``[T, P_all, 4]`` on its keypoint frames (every ``frame_step``-th decoded frame)."""

    keypoints: np.ndarray
    width: int
    height: int
    fps: float | None
    frame_step: int
    decode_errors: int = 0
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- model folder


def resolve_model_xml(path: str | os.PathLike[str]) -> Path:
    """The ``model.xml`` of ``path``: the file itself, a version folder, or a model folder (highest version)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise ModelDirError(f"{p}: model folder not found")
    if (p / "model.xml").is_file():
        return p / "model.xml"
    versions = sorted((int(c.name) for c in p.iterdir() if c.is_dir() and c.name.isdigit()
                       and (c / "model.xml").is_file()), reverse=True)
    if versions:
        return p / str(versions[0]) / "model.xml"
    raise ModelDirError(f"{p}: no model.xml here nor in a numbered version folder")


def read_metadata(model: Any, xml_path: Path) -> dict[str, Any]:
    """The export metadata from the IR's runtime info, else from ``sltrain.json`` beside it."""
    meta: dict[str, Any] = {}
    if model.has_rt_info([RT_INFO_SECTION]):
        section = model.get_rt_info([RT_INFO_SECTION]).value
        for key in section:
            raw = model.get_rt_info([RT_INFO_SECTION, key]).astype(str)
            try:
                meta[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ModelDirError(f"{xml_path}: runtime info {RT_INFO_SECTION}/{key} is not JSON ({exc})") from None
    if not meta:
        side = xml_path.with_name(METADATA_FILE)
        if not side.is_file():
            raise ModelDirError(f"{xml_path}: no '{RT_INFO_SECTION}' runtime info and no {METADATA_FILE} beside it; "
                                "export the model with 'python -m sltrain export'")
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelDirError(f"{side}: unreadable ({exc})") from None
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ModelDirError(f"{xml_path}: export metadata lacks {missing}")
    if meta["format"] != EXPORT_FORMAT:
        raise ModelDirError(f"{xml_path}: metadata format {meta['format']!r}, expected {EXPORT_FORMAT!r}")
    return meta


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (stable for any logit range)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- recognizer


class Recognizer:
    """An exported sign classifier plus the pose estimation in front of it.

    Thread-safe: each call takes its own OpenVINO infer request, and each video its own
    MediaPipe graph.

    Parameters
    ----------
    model_xml
        Path of the exported ``model.xml``.
    device
        OpenVINO device (``CPU``).
    top_k
        Glosses returned per input.
    """

    def __init__(self, model_xml: str | os.PathLike[str], *, device: str = "CPU", top_k: int = TOP_K) -> None:
        import openvino as ov

        self.path = Path(model_xml)
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as exc:
            raise ModelDirError(f"{self.path}: OpenVINO cannot read it ({str(exc).splitlines()[0]})") from None
        self.metadata = read_metadata(model, self.path)
        try:
            self.spec = InputSpec.from_dict(self.metadata["input_spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(f"{self.path}: unusable input_spec ({exc})") from None
        self.classes: list[str] = [str(c) for c in self.metadata["label_map"]["classes"]]
        names = {n for o in model.outputs for n in o.get_names()}
        if "gloss" not in names:
            raise ModelDirError(f"{self.path}: the model has no 'gloss' output (outputs: {sorted(names)})")
        expected = {"pose": [1, self.spec.num_frames, self.spec.num_points, self.spec.num_channels],
                    "mask": [1, self.spec.num_frames]}
        for inp in model.inputs:
            name = inp.get_any_name()
            shape = inp.get_partial_shape()
            if name in expected and (not shape.is_static or list(shape.to_shape()) != expected[name]):
                raise ModelDirError(f"{self.path}: input {name} has shape {shape}, the input spec "
                                    f"says {expected[name]}")
        num_out = model.output("gloss").get_partial_shape()[-1].get_length()
        if num_out != len(self.classes):
            raise ModelDirError(f"{self.path}: gloss output has {num_out} classes, the label map {len(self.classes)}")
        self.device = device
        self.top_k = int(top_k)
        self._compiled = core.compile_model(model, device, F32_CONFIG)
        self._output = self._compiled.output("gloss")
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._estimator: Any = None
        self._estimator_lock = threading.Lock()

    @classmethod
    def from_model_dir(cls, path: str | os.PathLike[str], **kwargs: Any) -> Recognizer:
        """Open a version folder, a model folder (its highest version) or a ``model.xml``."""
        return cls(resolve_model_xml(path), **kwargs)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.path.parent.parent.name))

    @property
    def version(self) -> int | None:
        v = self.metadata.get("version")
        return int(v) if v is not None else None

    # ---- classifier

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Gloss logits ``[K]`` of one clip's model input ``[T, P, C]`` (longer clips are cut to ``num_frames``)."""
        feats = np.asarray(features, dtype=np.float32)
        if feats.ndim != 3 or feats.shape[1:] != (self.spec.num_points, self.spec.num_channels) or len(feats) < 1:
            raise ValueError(f"features must be [T>=1, {self.spec.num_points}, {self.spec.num_channels}], "
                             f"got {list(feats.shape)}")
        pose, mask = pad_batch([feats[: self.spec.num_frames]], self.spec.num_frames)
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            out = request.infer({"pose": pose, "mask": mask.astype(np.float32)})[self._output]
            return np.array(out[0], dtype=np.float32)
        finally:
            self._requests.put(request)

    def top(self, probabilities: np.ndarray, top_k: int | None = None) -> list[tuple[str, float]]:
        """``[(gloss, probability), ...]`` of the ``top_k`` most probable classes, best first."""
        k = min(self.top_k if top_k is None else int(top_k), len(self.classes))
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [(self.classes[i], float(probabilities[i])) for i in order]

    def recognize_features(self, features: np.ndarray, top_k: int | None = None) -> list[tuple[str, float]]:
        """Top glosses of one clip's model input ``[T, P, C]``."""
        return self.top(softmax(self.logits(features)), top_k)

    def recognize_keypoints(self, keypoints: np.ndarray, width: float, height: float,
                            top_k: int | None = None) -> list[tuple[str, float]]:
        """Top glosses of one clip's raw keypoints ``[T, P_all, 4]`` (the spec's skeleton) in a W x H video."""
        return self.recognize_features(clip_features(keypoints, width, height, self.spec), top_k)

    # ---- pose estimation

    def estimator(self) -> Any:
        """The pose estimator training's keypoints came from, with its settings (made on first use, then shared)."""
        with self._estimator_lock:
            if self._estimator is None:
                from sldata.pose.estimator import make_estimator

                wanted = self.spec.skeleton_obj
                est = make_estimator(**self.spec.estimator_settings())  # the engine training's keypoints came from
                mismatch = self._skeleton_mismatch(est)
                if mismatch:  # pragma: no cover - guarded by Skeleton
                    raise ModelDirError(mismatch)
                if wanted.estimator_version and est.skeleton.estimator_version != wanted.estimator_version:
                    log.warning("%s: trained on keypoints of %s %s, predicting with %s", self.path, wanted.estimator,
                                wanted.estimator_version, est.skeleton.estimator_version)
                self._estimator = est
            return self._estimator

    def _skeleton_mismatch(self, estimator: Any) -> str | None:
        """Why ``estimator``'s points are not the model's (the first difference), or ``None`` when they are."""
        want, got = self.spec.skeleton_obj.point_names, estimator.skeleton.point_names
        if got == want:
            return None
        first = next((a, b) for a, b in zip([*want, None], [*got, None]) if a != b)
        return (f"{self.path}: the estimator's skeleton ({len(got)} points) is not the model's ({len(want)} points; "
                f"first difference: {first})")

    def use_estimator(self, estimator: Any | None) -> None:
        """Estimate poses with ``estimator`` from now on (``None``: back to the one training's keypoints came from).

        For comparing pose engines on the same model (``bench/bench_inference.py`` does): its
        skeleton must have the model's points, or ``ValueError`` says which differ.
        """
        mismatch = self._skeleton_mismatch(estimator) if estimator is not None else None
        if mismatch:
            raise ValueError(mismatch)
        with self._estimator_lock:
            self._estimator = estimator

    def video_keypoints(self, path: str | os.PathLike[str], *, max_seconds: float | None = None) -> VideoKeypoints:
        """Decode a video and estimate its keypoints on the frames training would have used.

        The frame step is :meth:`InputSpec.frame_step_for` of the video's frame rate (every 2nd
        frame of a 25 fps clip for a model trained on 12.5 keypoints/s), and Holistic runs with
        training's settings (:meth:`InputSpec.estimator_settings`), one graph per video, as in
        the pose stage (:func:`sldata.pose.extract.process_clip`).

        Raises
        ------
        PredictError
            Missing or undecodable file, no video stream, no frame, too long, or no person in any frame.
        """
        from sldata.pose.extract import ClipReader, PoseClipError

        name = str(path)
        if max_seconds is not None:
            duration = probe_duration(path)
            if duration is not None and duration > max_seconds:
                raise PredictError(name, PredictReason.TOO_LONG,
                                   f"{duration:.1f} s of video, the limit is {max_seconds:g} s")
        try:
            reader = ClipReader(path)
        except PoseClipError as exc:
            raise PredictError(name, _clip_reason(exc.reason), exc.detail) from None
        reader.set_step(self.spec.frame_step_for(reader.source_fps))  # the keypoint rate training saw
        estimator = self.estimator()
        timings = {"decode": 0.0}
        limit = None
        if max_seconds is not None:
            limit = int(math.floor(max_seconds * (reader.fps or DEFAULT_FPS / reader.step))) + 1
        try:
            t0 = time.perf_counter()
            keypoints = estimator.estimate(_timed(reader, timings, limit, name, max_seconds))
            pose_and_decode = time.perf_counter() - t0
        except PredictError:
            raise
        except Exception as exc:  # decoder or MediaPipe failure on this file
            raise PredictError(name, PredictReason.ERROR, f"{type(exc).__name__}: {exc}") from None
        finally:
            reader.close()
        timings["pose"] = pose_and_decode - timings["decode"]
        if len(keypoints) == 0:
            extra = f" ({reader.decode_errors} decode error(s): {'; '.join(reader.notes)})" if reader.notes else ""
            raise PredictError(name, PredictReason.NO_FRAMES, f"no frame could be decoded{extra}")
        body = self.spec.skeleton_obj.part_slice("body")
        if not present(keypoints)[:, body].any():
            raise PredictError(name, PredictReason.NO_PERSON, f"no person detected in any of {len(keypoints)} frames")
        return VideoKeypoints(keypoints=keypoints, width=int(reader.width or 0), height=int(reader.height or 0),
                              fps=reader.fps, frame_step=reader.step, decode_errors=reader.decode_errors,
                              timings=timings)

    def video_features(self, video: VideoKeypoints, name: str = "") -> np.ndarray:
        """Model input ``[T, P, C]`` of a video's keypoints (:func:`sltrain.inputs.clip_features`)."""
        try:
            return clip_features(video.keypoints, video.width, video.height, self.spec)
        except ValueError as exc:
            raise PredictError(name, PredictReason.UNUSABLE_POSE, str(exc)) from None

    def recognize_video(self, path: str | os.PathLike[str], *, max_seconds: float | None = None,
                        top_k: int | None = None) -> Prediction:
        """Decode a video, estimate its keypoints (:meth:`video_keypoints`) and return its top glosses.

        Parameters
        ----------
        path
            Any video PyAV can read.
        max_seconds
            Refuse longer videos (checked on the container's stated duration before decoding and
            on the decoded frame count), e.g. in a service.
        top_k
            Glosses returned (default: the recognizer's).

        Raises
        ------
        PredictError
            Missing or undecodable file, no video stream, no frame, too long, no person in any
            frame, or never enough of one to normalize the keypoints.
        """
        started = time.perf_counter()
        video = self.video_keypoints(path, max_seconds=max_seconds)
        t0 = time.perf_counter()
        features = self.video_features(video, str(path))
        t1 = time.perf_counter()
        probs = softmax(self.logits(features))
        t2 = time.perf_counter()
        timings = dict(video.timings, features=t1 - t0, classify=t2 - t1, total=t2 - started)
        return Prediction(path=str(path), top=self.top(probs, top_k), num_frames=int(len(video.keypoints)),
                          fps=video.fps, width=video.width, height=video.height, decode_errors=video.decode_errors,
                          timings=timings, frame_step=video.frame_step)


def _clip_reason(reason: str) -> str:
    from sldata.pose.extract import PoseReason

    return {PoseReason.MISSING_CLIP: PredictReason.MISSING, PoseReason.UNDECODABLE: PredictReason.UNDECODABLE,
            PoseReason.NO_VIDEO_STREAM: PredictReason.NO_VIDEO_STREAM,
            PoseReason.NO_FRAMES: PredictReason.NO_FRAMES}.get(reason, PredictReason.ERROR)


def _timed(frames: Iterable[np.ndarray], timings: dict[str, float], limit: int | None, name: str,
           max_seconds: float | None) -> Iterator[np.ndarray]:
    """Yield ``frames``, adding the time spent decoding to ``timings["decode"]``; stop past ``limit`` frames."""
    it = iter(frames)
    count = 0
    while True:
        t0 = time.perf_counter()
        try:
            frame = next(it)
        except StopIteration:
            return
        finally:
            timings["decode"] += time.perf_counter() - t0
        count += 1
        if limit is not None and count > limit:
            raise PredictError(name, PredictReason.TOO_LONG, f"more than {limit - 1} frames, the limit is "
                                                             f"{max_seconds:g} s")
        yield frame


def probe_duration(path: str | os.PathLike[str]) -> float | None:
    """A video's duration in seconds as its container states it (``None`` when unknown or unreadable)."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration:
                return float(container.duration) / 1_000_000  # av.time_base
            if container.streams.video:
                s = container.streams.video[0]
                if s.duration and s.time_base:
                    return float(s.duration * s.time_base)
    except (av.FFmpegError, OSError, ValueError):
        return None
    return None


# --------------------------------------------------------------------------- CLI


def add_predict_arguments(parser: Any) -> None:
    """Arguments of ``python -m sltrain predict``."""
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files to recognize")
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="exported model: version folder, model folder (highest version) or model.xml")
    parser.add_argument("--top-k", type=int, default=TOP_K, help="glosses per video (default %(default)s)")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per video instead of text")


def main_predict(args: Any) -> int:
    """Recognize every video in ``args.videos``; 0 if all succeeded, 1 if any failed, 2 for a bad model."""
    try:
        recognizer = Recognizer.from_model_dir(args.model, device=args.device, top_k=args.top_k)
    except ModelDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for video in args.videos:
        try:
            result = recognizer.recognize_video(video)
        except PredictError as exc:
            failed += 1
            if args.json:
                print(json.dumps({"path": exc.path, "error": exc.reason, "detail": exc.detail}), flush=True)
            print(f"{video}: error: {exc.reason}: {exc.detail}", file=sys.stderr, flush=True)
            continue
        if args.json:
            print(json.dumps(result.to_dict(), sort_keys=True), flush=True)
        else:
            print(video)
            for rank, (gloss, score) in enumerate(result.top, 1):
                print(f"  {rank}. {gloss:<24s} {score:.4f}")
            sys.stdout.flush()
    return 1 if failed else 0

