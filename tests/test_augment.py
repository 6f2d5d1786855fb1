"""sltrain.augment: flips swap sides, rigid transforms keep shape, missing stays missing, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest

from sldata.pose.skeleton import Skeleton
from sltrain.augment import (
    PoseAugment,
    affine_transform,
    drop_frames,
    drop_points,
    flip_permutation,
    horizontal_flip,
    missing_points,
    random_affine_matrix,
    resample_time,
)

SKELETON = Skeleton(face="subset")
ALL_ON = dict(flip_prob=1.0, rotation_prob=1.0, shear_prob=1.0, scale_prob=1.0, translate_prob=1.0)


def raw_clip(frames: int = 12, seed: int = 0) -> np.ndarray:
    """Raw keypoints ``[T, P, 4]``: the right hand is missing in a few frames, one face point always."""
    rng = np.random.default_rng(seed)
    clip = np.empty((frames, SKELETON.num_points, 4), dtype=np.float32)
    clip[..., :2] = rng.uniform(0.2, 0.8, size=(frames, SKELETON.num_points, 2))
    clip[..., 2] = rng.normal(size=(frames, SKELETON.num_points))
    clip[..., 3] = 1.0
    right = SKELETON.part_slice("right_hand")
    clip[2:5, right, :3] = np.nan
    clip[2:5, right, 3] = 0.0
    face = SKELETON.part_slice("face").start
    clip[:, face, :3] = np.nan
    clip[:, face, 3] = 0.0
    return clip


def pairwise_distances(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)


def test_flip_permutation_swaps_sides_and_is_an_involution() -> None:
    perm = flip_permutation(SKELETON)
    np.testing.assert_array_equal(perm[perm], np.arange(SKELETON.num_points))
    pairs = [("body.left_wrist", "body.right_wrist"), ("body.mouth_left", "body.mouth_right"),
             ("body.left_eye_inner", "body.right_eye_inner"), ("left_hand.wrist", "right_hand.wrist"),
             ("left_hand.pinky_tip", "right_hand.pinky_tip")]
    for left, right in pairs:
        assert perm[SKELETON.index(left)] == SKELETON.index(right)
    for fixed in ("body.nose", "face_1"):
        index = SKELETON.index(fixed if "." in fixed else f"face.{fixed}")
        assert perm[index] == index


def test_flip_twice_is_identity() -> None:
    clip = raw_clip()
    perm = flip_permutation(SKELETON)
    np.testing.assert_allclose(horizontal_flip(horizontal_flip(clip, perm), perm), clip, atol=1e-6)


def test_flip_moves_left_hand_to_the_mirrored_right_hand() -> None:
    clip = raw_clip()
    flipped = horizontal_flip(clip, flip_permutation(SKELETON))
    for left, right in (("left_hand.wrist", "right_hand.wrist"), ("body.left_wrist", "body.right_wrist")):
        source, target = SKELETON.index(right), SKELETON.index(left)
        np.testing.assert_allclose(flipped[:, target, 0], 1.0 - clip[:, source, 0], atol=1e-6)
        np.testing.assert_array_equal(flipped[:, target, 1:], clip[:, source, 1:])
    # The right hand's missing frames are now the left hand's.
    left = SKELETON.part_slice("left_hand")
    assert np.isnan(flipped[2:5, left, 0]).all() and (flipped[2:5, left, 3] == 0).all()


@pytest.mark.parametrize("aspect_ratio", [1.0, 16 / 9])
def test_rotation_preserves_distances(aspect_ratio: float) -> None:
    clip = raw_clip()
    matrix = random_affine_matrix(np.random.default_rng(1), rotation_deg=30.0)
    assert not np.allclose(matrix, np.eye(2))
    rotated = affine_transform(clip, matrix, np.array([0.5, 0.4]), aspect_ratio=aspect_ratio)
    present = ~missing_points(clip)
    stretch = np.array([aspect_ratio, 1.0])
    for t in range(clip.shape[0]):
        before = clip[t, present[t], :2].astype(np.float64) * stretch
        after = rotated[t, present[t], :2].astype(np.float64) * stretch
        np.testing.assert_allclose(pairwise_distances(after), pairwise_distances(before), atol=1e-5)
    np.testing.assert_array_equal(rotated[..., 2:], clip[..., 2:])


def test_random_rotation_only_augment_is_rigid() -> None:
    clip = raw_clip()
    augment = PoseAugment.for_skeleton(SKELETON, rotation_prob=1.0, max_rotation_deg=20.0, shear_prob=0.0,
                                       scale_prob=0.0, translate_prob=0.0, speed_prob=0.0)
    out = augment(clip, np.random.default_rng(5))
    assert not np.allclose(out[..., :2], clip[..., :2], equal_nan=True)
    present = ~missing_points(clip)
    np.testing.assert_allclose(pairwise_distances(out[0, present[0], :2]), pairwise_distances(clip[0, present[0], :2]),
                               atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_missing_stays_missing_through_spatial_transforms(seed: int) -> None:
    clip = raw_clip()
    perm = flip_permutation(SKELETON)
    out = PoseAugment.for_skeleton(SKELETON, **ALL_ON, speed_prob=0.0)(clip, np.random.default_rng(seed))
    np.testing.assert_array_equal(missing_points(out), missing_points(clip)[:, perm])
    assert np.isfinite(out[~missing_points(out)]).all()
    assert (out[missing_points(out)][:, 3] == 0).all()


def test_missing_stays_missing_with_zero_filled_features() -> None:
    clip = np.nan_to_num(raw_clip())  # zeros where missing; channel 3 (1/0) is the presence flag
    augment = PoseAugment.for_skeleton(SKELETON, **ALL_ON, speed_prob=1.0, interpolation="nearest", missing="zero",
                                       presence_channel=3, point_drop_rate=0.1)
    out = augment(clip, np.random.default_rng(0))
    gone = out[..., 3] == 0
    assert (out[gone] == 0).all()
    face = SKELETON.part_slice("face").start
    assert gone[:, face].all()
    assert gone.sum() > (clip[..., 3] == 0).sum()  # point drop added missing points


def test_speed_change_interpolates_present_points_and_keeps_gaps() -> None:
    clip = raw_clip(frames=5)
    slow = resample_time(clip, 9)  # source times 0, 0.5, 1, ..., 4
    assert slow.shape == (9, *clip.shape[1:])
    np.testing.assert_array_equal(slow[::2], clip)
    body = SKELETON.index("body.nose")
    np.testing.assert_allclose(slow[1, body, :3], (clip[0, body, :3] + clip[1, body, :3]) / 2, rtol=1e-6)
    face = SKELETON.part_slice("face").start
    assert np.isnan(slow[:, face, 0]).all()
    right = SKELETON.index("right_hand.wrist")
    # Missing in source frames 2..4: output time 1.5 lies between present and missing, ties go to the later frame.
    assert np.isnan(slow[3:9, right, 0]).all() and not np.isnan(slow[0:3, right, 0]).any()
    fast = PoseAugment(speed_prob=1.0, speed_range=(2.0, 2.0), rotation_prob=0, shear_prob=0, scale_prob=0,
                       translate_prob=0, min_frames=1)(raw_clip(frames=12), np.random.default_rng(0))
    assert fast.shape[0] == 6


def test_frame_and_point_drops() -> None:
    clip = raw_clip()
    rng = np.random.default_rng(0)
    assert drop_frames(clip, 1.0, rng, min_frames=3).shape[0] == 3
    kept = drop_frames(clip, 0.5, rng)
    assert 1 <= kept.shape[0] <= clip.shape[0]
    dropped = drop_points(clip, 0.3, rng)
    before, after = missing_points(clip), missing_points(dropped)
    assert (after | ~before).all() and after.sum() > before.sum()
    assert (dropped[after & ~before][:, 3] == 0).all() and np.isnan(dropped[after][:, :3]).all()


def test_same_seed_same_output() -> None:
    clip = raw_clip()
    augment = PoseAugment.for_skeleton(SKELETON, flip_prob=0.5, frame_drop_rate=0.1, point_drop_rate=0.05)
    first = augment(clip, np.random.default_rng(42))
    np.testing.assert_array_equal(augment(clip, np.random.default_rng(42)), first)
    outputs = [augment(clip, np.random.default_rng(seed)) for seed in range(5)]
    assert any(o.shape != first.shape or not np.array_equal(o, first, equal_nan=True) for o in outputs)
    assert not np.isnan(clip[0, 0, 0])  # the input is not modified
    np.testing.assert_array_equal(clip, raw_clip())


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="flip_index"):
        PoseAugment(flip_prob=0.5)
    with pytest.raises(ValueError, match="unknown augmentation setting"):
        PoseAugment.from_dict({"rotate_prob": 0.5})
    with pytest.raises(ValueError, match="speed_range"):
        PoseAugment(speed_range=(1.2, 0.8))
    settings = PoseAugment.from_dict({"flip_prob": 0.5, "scale_range": [0.8, 1.2]}, skeleton=SKELETON)
    assert settings.scale_range == (0.8, 1.2)
    assert settings.center_indices == (SKELETON.index("body.left_shoulder"), SKELETON.index("body.right_shoulder"))
