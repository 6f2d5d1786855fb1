"""How close two pose engines' keypoints of the same frames are (used by the pose-engine bench and test).

Errors are Euclidean distances in pixels of the frame scaled so its long side is
:data:`REFERENCE_SIDE` (256 px), over the points both engines found; presence agreement is the
share of frames where both engines agree on whether a part (body, each hand, face) was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sldata.pose.skeleton import Skeleton, present

REFERENCE_SIDE = 256


@dataclass
class PartParity:
    """Accumulated comparison of one part (``body``, ``left_hand``, ``right_hand``, ``face``).

    Attributes
    ----------
    errors
        Per-point pixel errors (at :data:`REFERENCE_SIDE` px) on frames where both engines found the part.
    frames, agree, found_ref, found_test
        Frames compared, frames where presence agrees, frames where each engine found the part.
    """

    errors: list[np.ndarray] = field(default_factory=list)
    frames: int = 0
    agree: int = 0
    found_ref: int = 0
    found_test: int = 0

    def summary(self) -> dict[str, float | int | None]:
        """Median and p95 error, presence agreement and both engines' presence rates."""
        err = np.concatenate(self.errors) if self.errors else np.zeros(0)
        return {
            "median_px": float(np.median(err)) if err.size else None,
            "p95_px": float(np.percentile(err, 95)) if err.size else None,
            "points": int(err.size),
            "frames": self.frames,
            "present_agreement": self.agree / self.frames if self.frames else None,
            "present_ref": self.found_ref / self.frames if self.frames else None,
            "present_test": self.found_test / self.frames if self.frames else None,
        }


def compare(ref: np.ndarray, test: np.ndarray, skeleton: Skeleton, width: int, height: int,
            into: dict[str, PartParity] | None = None) -> dict[str, PartParity]:
    """Add one clip's comparison of keypoints ``test`` against ``ref`` (both ``[T, P, 4]``) to ``into``.

    Raises
    ------
    ValueError
        Arrays of different shapes, or not of ``skeleton``'s layout.
    """
    if ref.shape != test.shape or ref.ndim != 3 or ref.shape[1] != skeleton.num_points:
        raise ValueError(f"cannot compare keypoints {ref.shape} and {test.shape} of a {skeleton.num_points}-point skeleton")
    out = into if into is not None else {}
    scale = REFERENCE_SIDE / max(width, height)
    found_ref, found_test = present(ref), present(test)
    for part in skeleton.parts:
        sl = skeleton.part_slice(part)
        acc = out.setdefault(part, PartParity())
        a, b = found_ref[:, sl].any(axis=1), found_test[:, sl].any(axis=1)
        acc.frames += len(a)
        acc.agree += int((a == b).sum())
        acc.found_ref += int(a.sum())
        acc.found_test += int(b.sum())
        both = a & b
        if both.any():
            dx = (ref[both, sl, 0] - test[both, sl, 0]) * width * scale
            dy = (ref[both, sl, 1] - test[both, sl, 1]) * height * scale
            acc.errors.append(np.hypot(dx, dy).ravel())
    return out
