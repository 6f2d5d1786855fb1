"""Hand-crop boxes from the pose and the crops themselves (sldata.pose.handcrops)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sldata.pose.handcrops import HandCropSettings, crop_hands, hand_crop_boxes
from test_pose_flow import SMALL, real_holistic_clip

IDX = {name: SMALL.index(f"body.{name}") for name in
       ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist")}
WIDTH, HEIGHT = 400, 300


def arm_clip(n_frames: int = 5) -> np.ndarray:
    """Only shoulders, elbows and wrists, in pixels: shoulders 100 px apart, forearms pointing up."""
    kp = np.full((n_frames, SMALL.num_points, 4), np.nan, dtype=np.float32)
    kp[..., 3] = 0.0
    px = {"left_shoulder": (250, 150), "right_shoulder": (150, 150), "left_elbow": (260, 200),
          "right_elbow": (140, 200), "left_wrist": (260, 120), "right_wrist": (140, 120)}
    for name, (x, y) in px.items():
        kp[:, IDX[name]] = (x / WIDTH, y / HEIGHT, 0.0, 1.0)
    return kp


def drop(kp: np.ndarray, frame: int, name: str) -> None:
    kp[frame, IDX[name], :3] = np.nan
    kp[frame, IDX[name], 3] = 0.0


# --------------------------------------------------------------------------- geometry


def test_box_is_a_square_beyond_the_wrist() -> None:
    result = hand_crop_boxes(arm_clip(1), WIDTH, HEIGHT, SMALL, side_scale=1.2, forward_shift=0.25)
    # centre = wrist + 0.25 * (wrist - elbow) = (260, 120) + 0.25 * (0, -80) = (260, 100); side 120
    np.testing.assert_allclose(result.boxes[0, 0], [200, 40, 320, 160], atol=1e-3)
    np.testing.assert_allclose(result.boxes[0, 1], [80, 40, 200, 160], atol=1e-3)
    assert not result.borrowed.any() and result.located.all()


def test_box_is_shifted_into_the_frame_keeping_its_size() -> None:
    kp = arm_clip(1)
    kp[0, IDX["right_wrist"], :2] = (5 / WIDTH, 10 / HEIGHT)  # near the top-left corner
    kp[0, IDX["right_elbow"], :2] = (5 / WIDTH, 80 / HEIGHT)
    box = hand_crop_boxes(kp, WIDTH, HEIGHT, SMALL).boxes[0, 1]
    np.testing.assert_allclose(box, [0, 0, 120, 120], atol=1e-3)
    big = hand_crop_boxes(kp, WIDTH, HEIGHT, SMALL, side_scale=3.5).boxes[0, 1]  # 350 px > 300 px height
    np.testing.assert_allclose(big, [0, 0, 350, 300], atol=1e-3)


def test_missing_wrist_borrows_the_nearest_box_ties_to_earlier() -> None:
    kp = arm_clip(5)
    kp[0, IDX["left_wrist"], 0] += 0.02
    kp[4, IDX["left_wrist"], 0] -= 0.02
    for t in (1, 2, 3):
        drop(kp, t, "left_wrist")
    result = hand_crop_boxes(kp, WIDTH, HEIGHT, SMALL)
    assert result.borrowed[:, 0].tolist() == [False, True, True, True, False]
    assert not result.borrowed[:, 1].any()
    np.testing.assert_array_equal(result.boxes[[1, 2], 0], result.boxes[[0, 0], 0])  # frame 2: tie -> frame 0
    np.testing.assert_array_equal(result.boxes[3, 0], result.boxes[4, 0])
    assert result.boxes[0, 0, 0] != result.boxes[4, 0, 0]


@pytest.mark.parametrize("case", ["elbow", "confidence", "outside"])
def test_frames_without_a_usable_arm_borrow(case: str) -> None:
    kp = arm_clip(3)
    if case == "elbow":
        drop(kp, 1, "right_elbow")
    elif case == "confidence":
        kp[1, IDX["right_wrist"], 3] = 0.3
    else:
        kp[1, IDX["right_wrist"], :2] = (140 / WIDTH, 1.02)  # wrist just below the frame
    result = hand_crop_boxes(kp, WIDTH, HEIGHT, SMALL)
    assert result.borrowed[:, 1].tolist() == [False, True, False]
    np.testing.assert_array_equal(result.boxes[1, 1], result.boxes[0, 1])
    if case == "outside":  # allowed when the wrist need not be inside the image
        assert not hand_crop_boxes(kp, WIDTH, HEIGHT, SMALL, require_wrist_in_frame=False).borrowed.any()


def test_never_located_hand_gets_nan_boxes_and_black_crops() -> None:
    kp = arm_clip(3)
    for t in range(3):
        drop(kp, t, "left_wrist")
    result = hand_crop_boxes(kp, WIDTH, HEIGHT, SMALL)
    assert result.located.tolist() == [False, True]
    assert np.isnan(result.boxes[:, 0]).all() and np.isfinite(result.boxes[:, 1]).all()
    frames = np.full((3, HEIGHT, WIDTH, 3), 200, dtype=np.uint8)
    crops = crop_hands(frames, result.boxes, size=32)
    assert (crops[:, 0] == 0).all() and (crops[:, 1] == 200).all()
    no_shoulders = kp.copy()
    drop(no_shoulders, slice(None), "left_shoulder")  # no shoulder width: nothing can be located
    empty = hand_crop_boxes(no_shoulders, WIDTH, HEIGHT, SMALL)
    assert np.isnan(empty.boxes).all() and empty.borrowed.all() and not empty.located.any()


def test_crop_hands_resizes_the_box_content() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, HEIGHT, WIDTH, 3), dtype=np.uint8)
    boxes = np.array([[[10, 20, 74, 84], [0.5, 0.5, 20.2, 30]]] * 2, dtype=np.float32)
    crops = crop_hands(frames, boxes, size=64)
    assert crops.shape == (2, 2, 64, 64, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[1, 0], frames[1, 20:84, 10:74])  # same size: exact copy
    want = cv2.resize(frames[0, 0:30, 0:21], (64, 64), interpolation=cv2.INTER_LINEAR)  # outward rounding
    np.testing.assert_array_equal(crops[0, 1], want)
    with pytest.raises(ValueError, match="uint8"):
        crop_hands(frames.astype(np.float32), boxes)
    with pytest.raises(ValueError, match="T = 2 frames"):
        crop_hands(frames, boxes[:1])


def test_hand_crop_settings_from_dict() -> None:
    s = HandCropSettings.from_dict({"size": 96, "side_scale": 1.5})
    assert (s.size, s.side_scale, s.forward_shift) == (96, 1.5, 0.15)
    with pytest.raises(ValueError, match="unknown hand-crop setting.*margin"):
        HandCropSettings.from_dict({"margin": 3})
    with pytest.raises(ValueError, match="min_confidence"):
        HandCropSettings(min_confidence=2.0)


# --------------------------------------------------------------------------- real clip


def test_real_clip_boxes_crops_and_borrowing() -> None:
    frames, kp, skeleton = real_holistic_clip()
    n_frames, height, width = frames.shape[:3]
    s = HandCropSettings()
    result = hand_crop_boxes(kp, width, height, skeleton, **s.box_options())
    assert result.boxes.shape == (n_frames, 2, 4) and result.boxes.dtype == np.float32
    # In this close-up the signer's left wrist is always below the image: that hand is never located.
    assert result.located.tolist() == [False, True]
    assert np.isnan(result.boxes[:, 0]).all()
    right = result.boxes[:, 1].astype(np.float64)
    assert (right[:, :2] >= 0).all() and (right[:, 2] <= width).all() and (right[:, 3] <= height).all()
    assert ((right[:, 2:] - right[:, :2]) > 0).all()
    own = ~result.borrowed[:, 1]
    assert 0 < own.sum() < n_frames

    # Own boxes: the centre lies beyond the wrist along the forearm (exactly so where no shift was needed).
    wrist = kp[:, skeleton.index("body.right_wrist"), :2] * [width, height]
    elbow = kp[:, skeleton.index("body.right_elbow"), :2] * [width, height]
    centre = (right[:, :2] + right[:, 2:]) / 2
    expected = wrist + s.forward_shift * (wrist - elbow)
    inner = own & (right[:, 0] > 0) & (right[:, 1] > 0) & (right[:, 2] < width) & (right[:, 3] < height)
    assert inner.any()
    np.testing.assert_allclose(centre[inner], expected[inner], atol=1e-2)
    assert (np.einsum("ij,ij->i", centre[inner] - wrist[inner], wrist[inner] - elbow[inner]) > 0).all()

    # Mask the wrist out in one frame with its own box: it borrows from the temporally nearest own box.
    t = int(np.flatnonzero(own)[len(np.flatnonzero(own)) // 2])
    masked = kp.copy()
    masked[t, skeleton.index("body.right_wrist"), :3] = np.nan
    masked[t, skeleton.index("body.right_wrist"), 3] = 0.0
    again = hand_crop_boxes(masked, width, height, skeleton)
    assert again.borrowed[t, 1]
    others = np.flatnonzero(own & (np.arange(n_frames) != t))
    nearest = others[np.argmin(np.abs(others - t))]
    np.testing.assert_array_equal(again.boxes[t, 1], result.boxes[nearest, 1])

    crops = crop_hands(frames, result.boxes, size=s.size)
    assert crops.shape == (n_frames, 2, 112, 112, 3) and crops.dtype == np.uint8
    assert (crops[:, 0] == 0).all() and crops[:, 1].std() > 10  # real image content in the right-hand crops
