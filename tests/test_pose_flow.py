"""Pose flow, missing-point filling and the body length (sldata.pose.flow).

Also home of :func:`real_holistic_clip`: MediaPipe Holistic run once on the real test video,
shared with the feature and hand-crop tests.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sldata.pose.flow import body_length, fill_missing, nearest_valid_index, pose_flow
from sldata.pose.skeleton import FACE_SUBSET, Skeleton, present
from conftest import shared_data_dir

SMALL = Skeleton(face="none")
FAST = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------- real data


@functools.lru_cache(maxsize=1)
def real_holistic_clip() -> tuple[np.ndarray, np.ndarray, Skeleton]:
    """``(frames uint8 [T, H, W, 3], keypoints float32 [T, P, 4], skeleton)`` of the real test video.

    MediaPipe Holistic (model_complexity=1) on ``pose_format/test_video.mp4`` (58 frames of a real
    signer), arranged in the :mod:`sldata.pose.skeleton` layout with the face subset. Cached so it
    runs once per test session; both arrays are read-only.
    """
    import av
    import mediapipe as mp

    path = shared_data_dir() / "pose_format" / "test_video.mp4"
    assert path.is_file(), f"real test video not found at {path}; set SLDATA_SHARED"
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    skeleton = Skeleton(face="subset", estimator_version="0.10.21 model_complexity=1")
    kp = np.full((len(frames), skeleton.num_points, 4), np.nan, dtype=np.float32)
    kp[..., 3] = 0.0
    with mp.solutions.holistic.Holistic(static_image_mode=False, model_complexity=1) as holistic:
        for t, frame in enumerate(frames):
            result = holistic.process(frame)
            parts = (("body", result.pose_landmarks), ("left_hand", result.left_hand_landmarks),
                     ("right_hand", result.right_hand_landmarks), ("face", result.face_landmarks))
            for part, landmarks in parts:
                if landmarks is None:
                    continue
                pts = np.array([[p.x, p.y, p.z, p.visibility if part == "body" else 1.0]
                                for p in landmarks.landmark], dtype=np.float32)
                kp[t, skeleton.part_slice(part)] = pts[list(FACE_SUBSET)] if part == "face" else pts
    frames.setflags(write=False)
    kp.setflags(write=False)
    return frames, kp, skeleton


@pytest.fixture(scope="session")
def real_clip() -> tuple[np.ndarray, np.ndarray, Skeleton]:
    return real_holistic_clip()


# --------------------------------------------------------------------------- helpers


def random_clip(seed: int, n_frames: int, missing: float, skeleton: Skeleton = SMALL) -> np.ndarray:
    """Random keypoints, a fraction ``missing`` of them missing.

    Shoulders and eyes are plausible (neck to eyes about a fifth of the frame) and all present in frame 0.
    """
    rng = np.random.default_rng(seed)
    kp = np.empty((n_frames, skeleton.num_points, 4), dtype=np.float32)
    kp[..., :3] = rng.uniform(0.0, 1.0, (n_frames, skeleton.num_points, 3))
    kp[..., 3] = rng.uniform(0.1, 1.0, (n_frames, skeleton.num_points))
    keep = [skeleton.index(f"body.{n}") for n in ("left_shoulder", "right_shoulder", "left_eye", "right_eye")]
    head_and_shoulders = np.array([[0.65, 0.6], [0.35, 0.6], [0.55, 0.4], [0.45, 0.4]])
    kp[:, keep, :2] = head_and_shoulders + rng.normal(0, 0.01, (n_frames, 4, 2))
    drop = rng.random((n_frames, skeleton.num_points)) < missing
    drop[0, keep] = False
    kp[drop, :3] = np.nan
    kp[drop, 3] = 0.0
    return kp


def loop_fill(kp: np.ndarray) -> np.ndarray:
    """Direct per-point loop: copy from the nearest frame with a detection (ties: earlier)."""
    out = kp.astype(np.float64).copy()
    for t in range(kp.shape[0]):
        for p in range(kp.shape[1]):
            if not math.isnan(kp[t, p, 0]):
                continue
            for gap in range(1, kp.shape[0]):
                candidates = [s for s in (t - gap, t + gap) if 0 <= s < kp.shape[0] and not math.isnan(kp[s, p, 0])]
                if candidates:
                    out[t, p] = kp[candidates[0], p]
                    break
    return out


def loop_pose_flow(kp: np.ndarray, width: float, height: float, skeleton: Skeleton) -> np.ndarray:
    """Direct per-frame, per-point double loop of the documented pose flow."""
    filled = loop_fill(kp)
    names = ("left_shoulder", "right_shoulder", "left_eye", "right_eye")
    ls, rs, le, re = (skeleton.index(f"body.{n}") for n in names)
    lengths = []
    for t in range(filled.shape[0]):
        f = filled[t]
        neck_x, neck_y = (f[ls, 0] + f[rs, 0]) / 2 * width, (f[ls, 1] + f[rs, 1]) / 2 * height
        eyes_x, eyes_y = (f[le, 0] + f[re, 0]) / 2 * width, (f[le, 1] + f[re, 1]) / 2 * height
        length = math.hypot(eyes_x - neck_x, eyes_y - neck_y)
        if not math.isnan(length):
            lengths.append(length)
    scale = float(np.median(lengths))
    out = np.full((filled.shape[0] - 1, filled.shape[1], 2), np.nan)
    for t in range(filled.shape[0] - 1):
        for p in range(filled.shape[1]):
            dx = (filled[t + 1, p, 0] - filled[t, p, 0]) * width / scale
            dy = (filled[t + 1, p, 1] - filled[t, p, 1]) * height / scale
            if math.isnan(dx) or math.isnan(dy):
                continue
            out[t, p] = (math.atan2(dy, dx) / math.pi, math.hypot(dx, dy))
    return out


def flow_vectors(flow: np.ndarray) -> np.ndarray:
    """(dx, dy) back from (angle, magnitude): compares flows without the angle's +-1 wrap-around."""
    angle, mag = flow[..., 0].astype(np.float64), flow[..., 1].astype(np.float64)
    return np.stack([mag * np.cos(np.pi * angle), mag * np.sin(np.pi * angle)], axis=-1)


def assert_flow_equal(got: np.ndarray, want: np.ndarray, atol: float = 1e-5) -> None:
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[..., 1], want[..., 1], rtol=1e-5, atol=atol)
    np.testing.assert_allclose(flow_vectors(got), flow_vectors(want), rtol=1e-5, atol=atol)


# --------------------------------------------------------------------------- nearest / fill


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(0, 12), st.integers(1, 4), st.floats(0.0, 1.0))
def test_nearest_valid_index_matches_brute_force(seed: int, n: int, k: int, density: float) -> None:
    valid = np.random.default_rng(seed).random((n, k)) < density
    got = nearest_valid_index(valid)
    for t in range(n):
        for j in range(k):
            frames = np.flatnonzero(valid[:, j])
            want = -1 if frames.size == 0 else int(frames[np.argmin(np.abs(frames - t))])  # argmin: first = earlier
            assert got[t, j] == want


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 10), st.floats(0.0, 0.9))
def test_fill_missing_keeps_detections_and_fills_from_nearest(seed: int, n_frames: int, missing: float) -> None:
    kp = random_clip(seed, n_frames, missing)
    filled = fill_missing(kp)
    detected = present(kp)
    np.testing.assert_array_equal(filled[detected], kp[detected])  # detected points untouched
    np.testing.assert_allclose(filled, loop_fill(kp).astype(np.float32), equal_nan=True)
    never = ~detected.any(axis=0)
    assert np.isnan(filled[:, never, :3]).all() and (filled[:, never, 3] == 0).all()
    assert present(filled)[:, ~never].all()


def test_fill_missing_tie_goes_to_earlier_frame() -> None:
    kp = np.full((3, SMALL.num_points, 4), np.nan, dtype=np.float32)
    kp[..., 3] = 0
    kp[0, 5] = (0.1, 0.2, 0.3, 0.9)
    kp[2, 5] = (0.7, 0.8, 0.9, 0.4)
    np.testing.assert_array_equal(fill_missing(kp)[1, 5], kp[0, 5])


def test_fill_missing_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"\[frames, points, 4\]"):
        fill_missing(np.zeros((3, 5, 3), dtype=np.float32))


# --------------------------------------------------------------------------- pose flow


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(2, 8), st.floats(0.0, 0.5),
       st.sampled_from([(640, 480), (540, 720), (256, 256)]))
def test_pose_flow_equals_direct_loop_on_random_data(seed: int, n_frames: int, missing: float,
                                                     size: tuple[int, int]) -> None:
    kp = random_clip(seed, n_frames, missing)
    got = pose_flow(kp, *size, SMALL)
    assert got.dtype == np.float32 and got.shape == (n_frames - 1, SMALL.num_points, 2)
    assert_flow_equal(got, loop_pose_flow(kp, *size, SMALL))


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(2, 8), st.floats(0.0, 0.5))
def test_pose_flow_ranges(seed: int, n_frames: int, missing: float) -> None:
    flow = pose_flow(random_clip(seed, n_frames, missing), 640, 480, SMALL)
    finite = ~np.isnan(flow[..., 0])
    assert (np.abs(flow[..., 0][finite]) <= 1.0).all()
    assert (flow[..., 1][finite] >= 0.0).all()


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.floats(-0.5, 0.5), st.floats(-0.5, 0.5))
def test_pose_flow_is_translation_invariant(seed: int, n_frames: int, dx: float, dy: float) -> None:
    kp = random_clip(seed, n_frames, 0.2)
    moved = kp.copy()
    moved[..., 0] += dx
    moved[..., 1] += dy
    assert_flow_equal(pose_flow(moved, 640, 480, SMALL), pose_flow(kp, 640, 480, SMALL), atol=2e-5)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.floats(0.2, 4.0),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_pose_flow_is_scale_invariant(seed: int, n_frames: int, factor: float, cx: float, cy: float) -> None:
    kp = random_clip(seed, n_frames, 0.2)
    scaled = kp.copy()
    scaled[..., 0] = cx + factor * (kp[..., 0] - cx)
    scaled[..., 1] = cy + factor * (kp[..., 1] - cy)
    assert_flow_equal(pose_flow(scaled, 540, 720, SMALL), pose_flow(kp, 540, 720, SMALL), atol=2e-5)


def test_pose_flow_known_motion_is_aspect_correct() -> None:
    kp = random_clip(0, 2, 0.0)
    ls, rs, le, re = (SMALL.index(f"body.{n}") for n in ("left_shoulder", "right_shoulder", "left_eye", "right_eye"))
    kp[:, [ls, rs, le, re], :2] = [[0.4, 0.6], [0.6, 0.6], [0.45, 0.4], [0.55, 0.4]]  # neck-eyes: 0.2 * height
    kp[1, 30, :2] = kp[0, 30, :2] + [0.1, 0.0]  # 0.1 * width to the right
    width, height = 400, 200
    assert body_length(kp, width, height, SMALL) == pytest.approx(40.0)
    flow = pose_flow(kp, width, height, SMALL)
    np.testing.assert_allclose(flow[0, 30], [0.0, 1.0], atol=1e-6)  # 40 px right = one body length
    kp[1, 30, :2] = kp[0, 30, :2] + [0.0, -0.1]  # 20 px up (y down)
    np.testing.assert_allclose(pose_flow(kp, width, height, SMALL)[0, 30], [-0.5, 0.5], atol=1e-6)


def test_pose_flow_short_and_empty_clips() -> None:
    assert pose_flow(random_clip(1, 1, 0.0), 640, 480, SMALL).shape == (0, SMALL.num_points, 2)
    empty = np.full((4, SMALL.num_points, 4), np.nan, dtype=np.float32)
    empty[..., 3] = 0
    flow = pose_flow(empty, 640, 480, SMALL)
    assert flow.shape == (3, SMALL.num_points, 2) and np.isnan(flow).all()


def test_pose_flow_without_body_length_names_the_problem() -> None:
    kp = random_clip(2, 4, 0.0)
    kp[:, SMALL.index("body.left_eye"), :3] = np.nan
    kp[:, SMALL.index("body.left_eye"), 3] = 0
    with pytest.raises(ValueError, match="body length.*shoulders.*eyes"):
        pose_flow(kp, 640, 480, SMALL)
    with pytest.raises(ValueError, match="points but the skeleton"):
        pose_flow(kp, 640, 480, Skeleton(face="subset"))
    with pytest.raises(ValueError, match="width and height"):
        pose_flow(random_clip(2, 4, 0.0), 0, 480, SMALL)


def test_pose_flow_equals_direct_loop_on_real_keypoints(real_clip: tuple[np.ndarray, np.ndarray, Skeleton]) -> None:
    frames, kp, skeleton = real_clip
    height, width = frames.shape[1:3]
    assert kp.shape == (58, skeleton.num_points, 4)
    assert present(kp)[:, skeleton.part_slice("body")].all()  # a real signer in every frame
    got = pose_flow(kp, width, height, skeleton)
    assert_flow_equal(got, loop_pose_flow(kp, width, height, skeleton))
    # The signer's left hand is never detected in this clip: its flow stays NaN, everything else is finite.
    hand = skeleton.part_slice("left_hand")
    assert np.isnan(got[:, hand]).all()
    assert np.isfinite(np.delete(got, np.arange(hand.start, hand.stop), axis=1)).all()
    length = body_length(kp, width, height, skeleton)
    assert 50 < length < 400  # pixels, for a 540x720 close-up
