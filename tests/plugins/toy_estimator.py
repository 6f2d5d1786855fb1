"""A pose estimator that needs no model: every point at the frame's centre, confidence 1.

Plugged in by ``ESTIMATORS["toy"] = EstimatorEntry("plugins.toy_estimator:ToyEstimator",
"plugins.toy_estimator:toy_skeleton")`` (and ``toy`` in ``pose.estimator``'s schema enum).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sldata.pose.estimator import check_frame
from sldata.pose.skeleton import Skeleton


def toy_skeleton(face: str, model_complexity: int) -> Skeleton:
    """The skeleton :class:`ToyEstimator` produces (Holistic's points, another estimator name)."""
    return Skeleton(face=face, estimator="toy", estimator_version=f"1 model_complexity={model_complexity}")


class _Session:
    def __init__(self, skeleton: Skeleton) -> None:
        self.skeleton = skeleton

    def process(self, frame: np.ndarray) -> np.ndarray:
        check_frame(frame)
        out = np.zeros((self.skeleton.num_points, 4), np.float32)
        out[:, :2], out[:, 3] = 0.5, 1.0
        return out

    def close(self) -> None:
        pass

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ToyEstimator:
    """A :class:`sldata.pose.estimator.PoseEstimator` with Holistic's settings (ignored but the face)."""

    def __init__(self, face: str, model_complexity: int, min_detection_confidence: float,
                 min_tracking_confidence: float) -> None:
        self.skeleton = toy_skeleton(face, model_complexity)

    def session(self) -> _Session:
        return _Session(self.skeleton)

    def estimate(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        with self.session() as s:
            out = [s.process(f) for f in frames]
        return np.stack(out) if out else np.zeros((0, self.skeleton.num_points, 4), np.float32)
