"""Derived training features (sldata.pose.features)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sldata.pose.features import (
    FeatureSettings,
    acceleration,
    build_features,
    feature_channels,
    normalize_coordinates,
    shoulder_width,
    velocity,
)
from sldata.pose.flow import fill_missing, pose_flow
from sldata.pose.skeleton import present
from test_pose_flow import SMALL, random_clip, real_holistic_clip

LS, RS = SMALL.index("body.left_shoulder"), SMALL.index("body.right_shoulder")


def missing(kp: np.ndarray, frames: object, points: object) -> None:
    """Mark points missing in place."""
    kp[frames, points, :3] = np.nan
    kp[frames, points, 3] = 0.0


# --------------------------------------------------------------------------- normalize


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8), st.sampled_from([(640, 480), (540, 720)]))
def test_normalize_maps_shoulder_midpoint_to_zero_and_width_to_one(seed: int, n_frames: int,
                                                                   size: tuple[int, int]) -> None:
    kp = random_clip(seed, n_frames, 0.3)
    out = normalize_coordinates(kp, *size, SMALL)
    assert out.dtype == np.float32 and out.shape == kp.shape
    both = present(kp)[:, [LS, RS]].all(axis=1)
    mid = (out[both, LS, :2] + out[both, RS, :2]) / 2
    np.testing.assert_allclose(mid, 0.0, atol=1e-5)
    widths = np.linalg.norm(out[both, LS, :2] - out[both, RS, :2], axis=-1)
    assert np.median(widths) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(present(out), present(kp))  # missing stay NaN
    np.testing.assert_array_equal(out[..., 3], kp[..., 3])


def test_normalize_is_aspect_correct_and_borrows_the_nearest_centre() -> None:
    kp = random_clip(3, 3, 0.0)
    kp[:, [LS, RS], :2] = [[0.6, 0.5], [0.4, 0.5]]  # 0.2 * 200 px = 40 px apart
    kp[:, 40, :3] = [0.5, 0.7, 0.1]
    kp[2, [LS, RS], :2] += [0.1, 0.0]  # frame 2: shoulders moved right by 20 px
    missing(kp, 1, LS)  # frame 1: a shoulder missing -> centre of frame 0 (tie -> earlier)
    out = normalize_coordinates(kp, 200, 100, SMALL)
    np.testing.assert_allclose(out[0, 40, :3], [0.0, 0.5, 0.5], atol=1e-6)  # 20 px below; z 0.1*200/40
    np.testing.assert_allclose(out[1, 40, :2], [0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(out[2, 40, :2], [-0.5, 0.5], atol=1e-6)
    assert shoulder_width(kp, 200, 100, SMALL) == pytest.approx(40.0)


def test_normalize_without_shoulders_names_the_problem() -> None:
    kp = random_clip(4, 3, 0.0)
    missing(kp, slice(None), LS)
    with pytest.raises(ValueError, match="shoulders"):
        normalize_coordinates(kp, 640, 480, SMALL)
    missing(kp, slice(None), slice(None))  # nothing detected at all: nothing to normalize
    assert np.isnan(normalize_coordinates(kp, 640, 480, SMALL)[..., :3]).all()


# --------------------------------------------------------------------------- differences


def test_velocity_and_acceleration() -> None:
    t = np.arange(6, dtype=np.float32)
    x = np.stack([t**2, 3 * t], axis=-1)[:, None, :]  # [T, 1, 2]
    v, a = velocity(x), acceleration(x)
    assert v.shape == a.shape == x.shape
    np.testing.assert_array_equal(v[0], 0)
    np.testing.assert_array_equal(v[1:], np.diff(x, axis=0))
    np.testing.assert_array_equal(a[:2], 0)
    np.testing.assert_array_equal(a[2:, 0], np.tile([2.0, 0.0], (4, 1)))
    x[3] = np.nan
    assert np.isnan(velocity(x)[[3, 4]]).all() and np.isfinite(velocity(x)[[1, 2, 5]]).all()
    assert velocity(x[:0]).shape == (0, 1, 2)
    np.testing.assert_array_equal(acceleration(x[:1]), np.zeros((1, 1, 2)))


# --------------------------------------------------------------------------- settings / build


def test_feature_settings_from_dict() -> None:
    s = FeatureSettings.from_dict({"acceleration": True, "pose_flow": False})
    assert s.acceleration and not s.pose_flow and s.normalize
    assert FeatureSettings.from_dict(None) == FeatureSettings()
    with pytest.raises(ValueError, match="unknown feature setting.*colour"):
        FeatureSettings.from_dict({"colour": True})
    with pytest.raises(ValueError, match="velocity must be true or false"):
        FeatureSettings.from_dict({"velocity": "yes"})


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=5)))
def test_build_features_channels_match_names(flags: tuple[bool, ...]) -> None:
    s = FeatureSettings(*flags)
    kp = random_clip(5, 6, 0.3)
    out = build_features(kp, 640, 480, SMALL, s)
    names = feature_channels(s)
    assert out.dtype == np.float32 and out.shape == (6, SMALL.num_points, len(names))
    assert np.isfinite(out).all()
    assert names[:3] == ["x", "y", "z"] and names[-1] == "present"
    assert len(set(names)) == len(names)


def test_build_features_contents() -> None:
    kp = random_clip(6, 7, 0.3)
    missing(kp, slice(None), 50)  # never detected
    s = FeatureSettings(normalize=True, velocity=True, acceleration=True, pose_flow=True, fill_missing=True)
    out = build_features(kp, 640, 480, SMALL, s)
    ch = {name: out[..., i] for i, name in enumerate(feature_channels(s))}
    filled = fill_missing(kp)
    norm = normalize_coordinates(filled, 640, 480, SMALL)
    np.testing.assert_array_equal(ch["present"], present(filled).astype(np.float32))
    assert (ch["present"][:, 50] == 0).all() and (out[:, 50] == 0).all()  # missing: zeros + present 0
    np.testing.assert_allclose(ch["x"], np.nan_to_num(norm[..., 0]))
    np.testing.assert_allclose(ch["velocity_y"], np.nan_to_num(velocity(norm[..., 1])))
    np.testing.assert_allclose(ch["acceleration_z"], np.nan_to_num(acceleration(norm[..., 2])))
    flow = np.nan_to_num(pose_flow(kp, 640, 480, SMALL))
    np.testing.assert_array_equal(ch["flow_angle"][0], 0)
    np.testing.assert_allclose(ch["flow_angle"][1:], flow[..., 0])
    np.testing.assert_allclose(ch["flow_magnitude"][1:], flow[..., 1])


def test_build_features_raw_positions_without_filling() -> None:
    kp = random_clip(7, 5, 0.3)
    s = FeatureSettings(normalize=False, velocity=False, acceleration=False, pose_flow=False, fill_missing=False)
    out = build_features(kp, 640, 480, SMALL, s)
    np.testing.assert_array_equal(out[..., :3], np.nan_to_num(kp[..., :3]))
    np.testing.assert_array_equal(out[..., 3], present(kp))


def test_build_features_empty_clip_is_all_missing() -> None:
    kp = random_clip(8, 4, 0.0)
    missing(kp, slice(None), slice(None))
    out = build_features(kp, 640, 480, SMALL, FeatureSettings(acceleration=True))
    assert out.shape[:2] == (4, SMALL.num_points) and (out == 0).all()


def test_build_features_on_real_keypoints() -> None:
    frames, kp, skeleton = real_holistic_clip()
    height, width = frames.shape[1:3]
    s = FeatureSettings(acceleration=True)
    out = build_features(kp, width, height, skeleton, s)
    assert out.shape == (58, skeleton.num_points, len(feature_channels(s))) and np.isfinite(out).all()
    norm = normalize_coordinates(kp, width, height, skeleton)
    ls, rs = skeleton.index("body.left_shoulder"), skeleton.index("body.right_shoulder")
    np.testing.assert_allclose((norm[:, ls, :2] + norm[:, rs, :2]) / 2, 0.0, atol=1e-5)
    assert np.median(np.linalg.norm(norm[:, ls, :2] - norm[:, rs, :2], axis=-1)) == pytest.approx(1.0, abs=1e-5)
    # The nose sits above the shoulder midpoint (y down), less than 1.5 shoulder widths up.
    nose = norm[:, skeleton.index("body.nose"), :2]
    assert (nose[:, 1] < 0).all() and (nose[:, 1] > -1.5).all()
