"""Pose estimators: RGB frames in, keypoints in the :mod:`sldata.pose.skeleton` layout out.

:class:`PoseEstimator` is the interface the extraction needs; :class:`HolisticEstimator`
implements it with MediaPipe Holistic (the legacy ``mp.solutions`` API). Each call to
``estimate`` is one clip and builds its own Holistic graph, closed afterwards, so tracking
state never leaks from one clip into the next and results do not depend on clip order.

Only ``model_complexity=1`` is accepted: mediapipe 0.10.21 ships the ``pose_landmark_full``
model inside its wheel, while complexities 0 (lite) and 2 (heavy) download their model on
first use, which fails offline and would make results depend on a file fetched at run time.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sldata.pose.skeleton import COMPONENTS, FACE_MODES, Skeleton, face_indices

ESTIMATOR_NAME = "mediapipe-holistic"
SUPPORTED_MODEL_COMPLEXITY = 1
DEFAULT_ESTIMATOR = "mediapipe"


@dataclass(frozen=True)
class EstimatorEntry:
    """One pose estimator of :data:`ESTIMATORS`, as ``"module:attribute"`` (imported when used).

    Attributes
    ----------
    make
        A class or function taking ``face``, ``model_complexity``, ``min_detection_confidence``,
        ``min_tracking_confidence`` (and the engine's ``options``) and returning a :class:`PoseEstimator`.
    skeleton
        A function ``(face, model_complexity) -> Skeleton``: the layout ``make`` produces, without
        loading the engine.
    options
        Whether the engine takes extra keyword options (e.g. OpenVINO's ``threads``).
    """

    make: str
    skeleton: str
    options: bool = False

    def load(self, attribute: str) -> Any:
        module, _, name = getattr(self, attribute).partition(":")
        return getattr(importlib.import_module(module), name)


ESTIMATORS: dict[str, EstimatorEntry] = {
    "mediapipe": EstimatorEntry("sldata.pose.estimator:HolisticEstimator", "sldata.pose.estimator:holistic_skeleton"),
    "openvino": EstimatorEntry("sldata.pose.openvino_holistic:OpenVinoHolisticEstimator",
                               "sldata.pose.openvino_holistic:openvino_skeleton", options=True),
}
"""Values of ``pose.estimator`` (the schema's enum lists the same names): MediaPipe's own Holistic
graph, or its rebuild on OpenVINO (:mod:`sldata.pose.openvino_holistic`), same models, same
skeleton. A new estimator is a module with a :class:`PoseEstimator` and its skeleton function,
one line here and its name in ``pose.estimator``'s enum."""


@runtime_checkable
class PoseEstimator(Protocol):
    """Turns the frames of one clip into keypoints.

    Attributes
    ----------
    skeleton
        Layout of the arrays ``estimate`` returns (and the estimator's name and version).
    """

    skeleton: Skeleton

    def estimate(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """Keypoints ``[T, skeleton.num_points, 4]`` float32 of the ``T`` RGB uint8 frames of one clip."""
        ...

    def session(self) -> PoseSession:
        """A tracking session for one clip or stream, fed frame by frame (a context manager)."""
        ...


class PoseSession(Protocol):
    """Per-frame keypoints of one clip or stream; tracking state carries from frame to frame.

    ``estimate(frames)`` of an estimator equals ``[session.process(f) for f in frames]`` in one
    fresh session. Use as a context manager; ``close`` frees the graph.
    """

    def process(self, frame: np.ndarray) -> np.ndarray:
        """Keypoints ``[skeleton.num_points, 4]`` float32 of one RGB uint8 ``[H, W, 3]`` frame."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> PoseSession: ...

    def __exit__(self, *exc: object) -> None: ...


def check_frame(frame: np.ndarray, where: str = "frame") -> np.ndarray:
    """``frame`` as a C-contiguous RGB uint8 ``[H, W, 3]`` array, else ``ValueError`` naming ``where``."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{where}: expected RGB uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)


def validate_holistic_settings(face: str, model_complexity: int, min_detection_confidence: float,
                               min_tracking_confidence: float) -> None:
    """Raise ``ValueError`` naming the first invalid Holistic setting."""
    if face not in FACE_MODES:
        raise ValueError(f"pose face must be one of {FACE_MODES}, got {face!r}")
    if model_complexity != SUPPORTED_MODEL_COMPLEXITY:
        raise ValueError(
            f"pose model_complexity must be {SUPPORTED_MODEL_COMPLEXITY}, got {model_complexity!r}: mediapipe ships "
            "only the model_complexity=1 pose model (pose_landmark_full); 0 and 2 download their model at run time, "
            "which fails offline and makes results depend on a fetched file")
    for name, value in (("min_detection_confidence", min_detection_confidence),
                        ("min_tracking_confidence", min_tracking_confidence)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"pose {name} must be a number in [0, 1], got {value!r}")


def validate_estimator(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is one of :data:`ESTIMATORS`."""
    if name not in ESTIMATORS:
        raise ValueError(f"pose estimator must be one of {tuple(ESTIMATORS)}, got {name!r}")


def estimator_skeleton(estimator: str = DEFAULT_ESTIMATOR, face: str = "subset",
                       model_complexity: int = SUPPORTED_MODEL_COMPLEXITY) -> Skeleton:
    """The :class:`Skeleton` estimator ``estimator`` produces (same points for both; the name and version differ)."""
    validate_estimator(estimator)
    return ESTIMATORS[estimator].load("skeleton")(face, model_complexity)


def make_estimator(estimator: str = DEFAULT_ESTIMATOR, face: str = "subset",
                   model_complexity: int = SUPPORTED_MODEL_COMPLEXITY, min_detection_confidence: float = 0.5,
                   min_tracking_confidence: float = 0.5, **options: Any) -> PoseEstimator:
    """A new :class:`PoseEstimator` by name (a key of :data:`ESTIMATORS`), with Holistic's settings.

    ``options`` go to engines that take them (OpenVINO's ``threads``); the mediapipe engine takes none.

    Raises
    ------
    ValueError
        An unknown estimator, an invalid setting, or options given to the mediapipe engine.
    """
    validate_estimator(estimator)
    settings = dict(face=face, model_complexity=model_complexity, min_detection_confidence=min_detection_confidence,
                    min_tracking_confidence=min_tracking_confidence)
    entry = ESTIMATORS[estimator]
    if options and not entry.options:
        raise ValueError(f"the {estimator} pose estimator takes no options, got {sorted(options)}")
    return entry.load("make")(**settings, **options)


def holistic_skeleton(face: str = "subset", model_complexity: int = SUPPORTED_MODEL_COMPLEXITY) -> Skeleton:
    """The :class:`Skeleton` :class:`HolisticEstimator` produces, without importing mediapipe.

    The version string is ``"<mediapipe version> model_complexity=<n>"``.
    """
    return Skeleton(face=face, estimator=ESTIMATOR_NAME,
                    estimator_version=f"{importlib.metadata.version('mediapipe')} model_complexity={model_complexity}")


def _landmarks(lms: Any, out: np.ndarray, visibility: bool) -> None:
    """Fill ``out`` ``[n, 4]`` from a MediaPipe landmark list (confidence: visibility or 1)."""
    if visibility:
        out[:] = [(p.x, p.y, p.z, p.visibility) for p in lms.landmark]
    else:
        out[:, :3] = [(p.x, p.y, p.z) for p in lms.landmark]
        out[:, 3] = 1.0


class HolisticEstimator:
    """MediaPipe Holistic (body 33, hands 2 x 21, optional face points), one graph per clip.

    Parameters
    ----------
    face
        ``none``, ``subset`` (93 points) or ``full`` (468 mesh points).
    model_complexity
        Must be 1 (see the module docs).
    min_detection_confidence, min_tracking_confidence
        Passed to Holistic.

    Raises
    ------
    ValueError
        An invalid setting.
    """

    def __init__(self, face: str = "subset", model_complexity: int = 1, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5) -> None:
        validate_holistic_settings(face, model_complexity, min_detection_confidence, min_tracking_confidence)
        import mediapipe as mp  # heavy: imported once per process, when an estimator is made

        self._holistic_cls = mp.solutions.holistic.Holistic
        self.model_complexity = model_complexity
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.skeleton = Skeleton(face=face, estimator=ESTIMATOR_NAME,
                                 estimator_version=f"{mp.__version__} model_complexity={model_complexity}")
        if self.skeleton != holistic_skeleton(face, model_complexity):  # pragma: no cover - broken install
            raise RuntimeError(f"mediapipe.__version__ {mp.__version__!r} differs from its installed package metadata")
        self._face_idx = np.asarray(face_indices(face), dtype=np.int64)
        self._slices = {part: self.skeleton.part_slice(part) for part in self.skeleton.parts}

    def _frame_keypoints(self, results: Any) -> np.ndarray:
        out = np.full((self.skeleton.num_points, len(COMPONENTS)), np.nan, dtype=np.float32)
        out[:, 3] = 0.0
        if results.pose_landmarks is not None:
            _landmarks(results.pose_landmarks, out[self._slices["body"]], visibility=True)
        if results.left_hand_landmarks is not None:
            _landmarks(results.left_hand_landmarks, out[self._slices["left_hand"]], visibility=False)
        if results.right_hand_landmarks is not None:
            _landmarks(results.right_hand_landmarks, out[self._slices["right_hand"]], visibility=False)
        if self._face_idx.size and results.face_landmarks is not None:
            mesh = np.empty((len(results.face_landmarks.landmark), len(COMPONENTS)), dtype=np.float32)
            _landmarks(results.face_landmarks, mesh, visibility=False)
            out[self._slices["face"]] = mesh[self._face_idx]
        return out

    def session(self) -> HolisticSession:
        """A new Holistic graph for one clip or stream (see :class:`PoseSession`)."""
        return HolisticSession(self)

    def estimate(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """Keypoints ``[T, P, 4]`` float32 of one clip's RGB uint8 ``[H, W, 3]`` frames (in order)."""
        with self.session() as session:
            rows = [session.process(frame, where=f"frame {i}") for i, frame in enumerate(frames)]
        if not rows:
            return np.zeros((0, self.skeleton.num_points, len(COMPONENTS)), dtype=np.float32)
        return np.stack(rows)


class HolisticSession:
    """One MediaPipe Holistic graph (tracking on) of a :class:`HolisticEstimator`; see :class:`PoseSession`."""

    def __init__(self, estimator: HolisticEstimator) -> None:
        self.estimator = estimator
        self._graph: Any = estimator._holistic_cls(
            static_image_mode=False, model_complexity=estimator.model_complexity, smooth_landmarks=True,
            refine_face_landmarks=False, min_detection_confidence=estimator.min_detection_confidence,
            min_tracking_confidence=estimator.min_tracking_confidence)

    def process(self, frame: np.ndarray, where: str = "frame") -> np.ndarray:
        if self._graph is None:
            raise RuntimeError("pose session used after close()")
        return self.estimator._frame_keypoints(self._graph.process(check_frame(frame, where)))

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def __enter__(self) -> HolisticSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
