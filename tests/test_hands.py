"""The OpenVINO engine's hand second chance (``hand_second_chance``): off changes nothing, on adds hands.

Real clips from ../shared/data: ``22956`` (9 keypoint frames at frame_step 2) is one where the
tracker loses the right hand at the forehead and the second chance finds it again (looked at in
an overlay; bench/README.md, "Hand second chance"); ``00618`` (12 frames) is one where it adds nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sldata.pose.extract import ClipReader
from sldata.pose.openvino_holistic import (WRIST_GATE, Detection, OpenVinoHolisticEstimator, all_detections,
                                           body_scale, detection_to_frame, first_detection, off_picture, palm_rect,
                                           pick_palm, plausible_hand, ssd_anchors, wrist_in_view)

LOST = "22956"
PLAIN = "00618"
WRISTS = {"left_hand": 15, "right_hand": 16}


@pytest.fixture(scope="module")
def frames(shared: Path) -> dict[str, list[np.ndarray]]:
    videos = shared / "wlasl100_clips" / "videos"
    return {vid: list(ClipReader(videos / f"{vid}.mp4", 2)) for vid in (LOST, PLAIN)}


@pytest.fixture(scope="module")
def engines() -> dict[str, OpenVinoHolisticEstimator]:
    return {"off": OpenVinoHolisticEstimator(face="none"),
            "on": OpenVinoHolisticEstimator(face="none", hand_second_chance=True)}


def test_off_by_default_and_unchanged(frames, engines) -> None:
    off = engines["off"]
    assert off.hand_second_chance is False and "palm_detection" not in off.models.requests
    assert "palm_detection" in engines["on"].models.requests
    explicit = OpenVinoHolisticEstimator(face="none", hand_second_chance=False)
    for clip in frames.values():
        ref, recovered = off.estimate_with_recovered(clip)
        assert recovered == [{}] * len(clip)
        np.testing.assert_array_equal(ref, explicit.estimate(clip))
        on, added = engines["on"].estimate_with_recovered(clip)
        # on = off plus the recovered hands: the tracker's hands and state are untouched
        np.testing.assert_array_equal(engines["on"].without_recovered(on, added), ref)
    with pytest.raises(ValueError, match="hand_second_chance"):
        OpenVinoHolisticEstimator(face="none", hand_second_chance="yes")


def test_second_chance_recovers_a_lost_hand_near_the_wrist(frames, engines) -> None:
    est = engines["on"]
    clip = frames[LOST]
    kp, recovered = est.estimate_with_recovered(clip)
    added = [(t, side, how) for t, sides in enumerate(recovered) for side, how in sides.items()]
    assert added, "the tracker loses the right hand of 22956 and the second chance should find it"
    height, width = clip[0].shape[:2]
    for t, side, how in added:
        assert how in ("palm", "previous")
        hand = kp[t, est._slices[side]]
        assert np.isfinite(hand[:, :3]).all() and (hand[:, 3] == 1.0).all()
        body = kp[t, est._slices["body"]]
        wrist = body[WRISTS[side]]
        gap = math.hypot((hand[0, 0] - wrist[0]) * width, (hand[0, 1] - wrist[1]) * height)
        assert gap <= WRIST_GATE * body_scale(body, width, height)
    _, none_added = est.estimate_with_recovered(frames[PLAIN])
    assert not any(none_added)  # where the tracker keeps its hands, nothing is added
    # a plain session (stream's) keeps no per-frame record, so an endless stream does not grow it
    with est.session() as session:
        rows = np.stack([session.process(frame) for frame in clip])
    assert session.recovered is None
    np.testing.assert_array_equal(rows, kp)


def test_palm_rect_follows_palm_detection_to_roi() -> None:
    # an upright palm (wrist keypoint below the middle finger base) in a 200 x 100 frame
    kps = np.zeros((7, 2))
    kps[0], kps[2] = (0.5, 0.6), (0.5, 0.4)
    det = Detection(0.9, np.array([0.45, 0.4, 0.55, 0.6]), kps)  # 20 x 20 px
    r = palm_rect(det, 200, 100)
    assert r.r == pytest.approx(0.0)
    assert (r.x, r.y) == pytest.approx((0.5, 0.4))  # half the box height towards the fingers
    assert (r.w * 200, r.h * 100) == pytest.approx((52.0, 52.0))  # square long side x 2.6
    # the same palm with its fingers pointing right: rotated 90 degrees, shifted right
    kps[0], kps[2] = (0.45, 0.5), (0.55, 0.5)
    r = palm_rect(Detection(0.9, np.array([0.45, 0.4, 0.55, 0.6]), kps), 200, 100)
    assert r.r == pytest.approx(math.pi / 2)
    assert (r.x * 200, r.y * 100) == pytest.approx((110.0, 50.0))


def test_detections_from_a_crop_and_weighted_nms() -> None:
    anchors = ssd_anchors(192, (8, 16, 16, 16))
    assert len(anchors) == 2016  # the palm detector's boxes
    raw = np.zeros((1, 2016, 18), dtype=np.float32)
    raw[0, :, 2:4] = 19.2  # 0.1 x 0.1 boxes on their anchors
    scores = np.full((1, 2016, 1), -10.0, dtype=np.float32)
    far = int(np.argmin(np.hypot(*(anchors - [0.8, 0.8]).T)))
    near = np.flatnonzero((anchors == anchors[2 * (5 * 24 + 5)]).all(axis=1))  # the 2 anchors of one cell
    assert len(near) == 2
    scores[0, near, 0] = (3.0, 2.0)
    scores[0, far, 0] = 1.0
    dets = all_detections(raw, scores, anchors, 192.0, 7, 0.5)
    assert len(dets) == 2 and dets[0].score > dets[1].score  # the two near boxes merged
    first = first_detection(raw, scores, anchors, 192.0, 7, 0.5)
    np.testing.assert_array_equal(first.box, dets[0].box)
    assert np.allclose(dets[1].keypoints, anchors[far])
    # a crop covering pixels 50..150 x 0..100 of a 200 x 100 frame: its centre is the frame's (100, 50)
    mapped = detection_to_frame(Detection(1.0, np.array([0.4, 0.4, 0.6, 0.6]), np.array([[0.5, 0.5]])),
                                (100.0, 50.0, 100.0, 100.0, 0.0), 200, 100)
    np.testing.assert_allclose(mapped.keypoints, [[0.5, 0.5]])
    np.testing.assert_allclose(mapped.box, [0.45, 0.4, 0.55, 0.6])


def test_gates_keep_false_hands_out() -> None:
    width = height = 100
    hand = np.zeros((21, 3))
    hand[:, 0] = 0.3 + np.linspace(0, 0.05, 21)
    hand[:, 1] = np.linspace(0.5, 0.4, 21)
    wrist, other_wrist = np.array([0.3, 0.5]), np.array([0.7, 0.5])
    assert plausible_hand(hand, wrist, other_wrist, None, 40.0, width, height)
    assert not plausible_hand(hand, np.array([0.3, 0.8]), other_wrist, None, 40.0, width, height)  # far wrist
    assert not plausible_hand(hand, np.array([0.3, 0.6]), wrist, None, 40.0, width, height)  # nearer the other wrist
    assert not plausible_hand(hand, wrist, other_wrist, hand + 0.005, 40.0, width, height)  # on the other hand
    frame = np.full((height, width, 3), 120, dtype=np.uint8)
    assert plausible_hand(hand, wrist, other_wrist, None, 40.0, width, height, frame)
    frame[45:] = 0  # a letterbox bar under the hand's lower half
    assert off_picture(hand, frame).mean() > 0.25
    assert not plausible_hand(hand, wrist, other_wrist, None, 40.0, width, height, frame)
    # no second chance for a wrist in a letterbox bar or outside the frame
    assert wrist_in_view(np.array([0.3, 0.4]), frame) and not wrist_in_view(np.array([0.3, 0.6]), frame)
    assert not wrist_in_view(np.array([-0.01, 0.3]), frame) and not wrist_in_view(np.array([0.5, 1.02]), frame)
    other_wrist = np.array([0.5, 0.5])
    palm = Detection(0.9, np.array([0.42, 0.47, 0.48, 0.53]), np.tile([0.45, 0.5], (7, 1)))
    assert pick_palm([palm], wrist, other_wrist, None, 40.0, width, height) is None  # nearer the other wrist
    far = Detection(0.9, np.array([0.27, 0.77, 0.33, 0.83]), np.tile([0.3, 0.8], (7, 1)))
    assert pick_palm([far], wrist, other_wrist, None, 40.0, width, height) is None  # too far from the wrist
    mine = Detection(0.8, np.array([0.28, 0.42, 0.36, 0.5]), np.tile([0.3, 0.52], (7, 1)))
    assert pick_palm([palm, far, mine], wrist, other_wrist, None, 40.0, width, height) is mine
    assert pick_palm([mine], wrist, other_wrist, hand, 40.0, width, height) is None  # inside the other hand
