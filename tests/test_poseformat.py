"""Export to and import from pose-format's .pose files, on the real files of ../shared/data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from pose_format import Pose
from pose_format.utils.generic import detect_known_pose_format, pose_normalization_info

from sldata.pose.poseformat import (from_pose_format, read_pose_file, to_pose_format, write_pose_file)
from sldata.pose.skeleton import FACE_SUBSET, Skeleton
from conftest import shared_data_dir

POSE_DIR = shared_data_dir() / "pose_format"
HOLISTIC_FILES = [
    POSE_DIR / "mediapipe.pose",
    POSE_DIR / "mediapipe_long.pose",
    POSE_DIR / "hand_estimation" / "6fb01565da31c5500d1ef2cd2906b06b.pose",  # 478-point face, world landmarks
    POSE_DIR / "hand_estimation" / "0ff215ef4f1f111e217e2cefee0adc77.pose",  # 3264x1836
    POSE_DIR / "js_example" / "sample-data_example.pose",
    shared_data_dir() / "autsl_sample" / "signer0_sample1000.holistic.pose",  # v0.1, XYZKC
]


def _header_essentials(pose: Pose) -> tuple:
    h = pose.header
    return (h.dimensions.width, h.dimensions.height, float(pose.body.fps),
            [(c.name, c.format, list(c.points), [tuple(map(int, limb)) for limb in c.limbs],
              [tuple(map(int, col)) for col in c.colors]) for c in h.components])


def _synthetic(skeleton: Skeleton, frames: int = 7, seed: int = 0) -> np.ndarray:
    """Random keypoints with some missing points and a frame without a person."""
    rng = np.random.default_rng(seed)
    kp = rng.random((frames, skeleton.num_points, 4), dtype=np.float32)
    kp[..., 2] -= 0.5
    kp[..., 3] = np.maximum(kp[..., 3], np.float32(1e-3))
    gone = rng.random((frames, skeleton.num_points)) < 0.2
    gone[min(2, frames - 1)] = True
    kp[gone] = [np.nan, np.nan, np.nan, 0.0]
    return kp


@pytest.mark.parametrize("path", HOLISTIC_FILES, ids=lambda p: p.name)
def test_real_file_import_export_import_is_identical(path: Path, tmp_path: Path) -> None:
    kp, sk, fps, w, h = read_pose_file(path)
    assert kp.dtype == np.float32 and kp.shape[1:] == (sk.num_points, 4)
    # Missing points follow our convention exactly.
    missing = np.isnan(kp[..., 0])
    assert np.array_equal(missing, np.isnan(kp[..., :3]).any(-1)) and np.array_equal(missing, np.isnan(kp[..., :3]).all(-1))
    assert np.all(kp[missing, 3] == 0) and np.all(kp[~missing, 3] > 0)

    # Against pose-format's own reading: same pixels / frame size for the points we keep.
    raw = Pose.read(path.read_bytes())
    idx = raw.header.get_point_index("RIGHT_HAND_LANDMARKS", "WRIST")
    ours = kp[:, sk.index("right_hand.wrist")]
    conf = np.asarray(raw.body.confidence)[:, 0, idx]
    np.testing.assert_array_equal(np.isnan(ours[:, 0]), conf == 0)
    np.testing.assert_allclose(ours[conf > 0, 0] * w, np.ma.getdata(raw.body.data)[conf > 0, 0, idx, 0], rtol=1e-6)

    out = write_pose_file(tmp_path / "x.pose", kp, sk, fps, w, h)
    kp2, sk2, fps2, w2, h2 = read_pose_file(out)
    np.testing.assert_array_equal(kp2, kp)  # NaN == NaN here
    assert (sk2, fps2, w2, h2) == (sk, fps, w, h)
    # The header written again from the re-import is the same header.
    again = to_pose_format(kp2, sk2, fps2, w2, h2)
    assert _header_essentials(again) == _header_essentials(Pose.read(out.read_bytes()))


def test_real_holistic_layouts_map_by_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sldata.pose.poseformat"):
        kp, sk, fps, w, h = read_pose_file(POSE_DIR / "hand_estimation" / "6fb01565da31c5500d1ef2cd2906b06b.pose")
    assert (sk.face, fps, w, h, kp.shape) == ("full", 25.0, 640, 360, (5, 33 + 21 + 21 + 468, 4))
    assert "POSE_WORLD_LANDMARKS" in caplog.text  # dropped, with a note
    assert "'468'" in caplog.text  # refined iris points dropped from the 468-point layout

    # An old file with 8 body points and 128 face-contour points: the rest is missing.
    kp, sk, fps, w, h = read_pose_file(POSE_DIR / "mediapipe.pose")
    assert (sk.face, fps, w, h) == ("full", 24.0, 1250, 1250)
    body = ~np.isnan(kp[:, sk.part_slice("body"), 0])
    assert body.any(0).sum() == 8 and body[:, sk.index("body.left_shoulder")].all() and not body[:, 0].any()
    assert (~np.isnan(kp[:, sk.part_slice("face"), 0])).any(0).sum() == 128
    assert np.isnan(kp[:, sk.part_slice("left_hand"), 0]).all()  # no left hand in that clip


def test_face_subset_chosen_on_import() -> None:
    path = shared_data_dir() / "autsl_sample" / "signer0_sample1000.holistic.pose"
    full, sk_full, *_ = read_pose_file(path)
    sub, sk_sub, fps, w, h = read_pose_file(path, face="subset")
    none, sk_none, *_ = read_pose_file(path, face="none")
    assert (sk_sub.face, sk_none.face) == ("subset", "none")
    assert (fps, w, h) == (30.0, 512, 512)
    # AUTSL sample is 512x512: power-of-two sizes make every conversion exact.
    np.testing.assert_array_equal(sub[:, :75], full[:, :75])
    np.testing.assert_array_equal(none, full[:, :75])
    np.testing.assert_array_equal(sub[:, sk_sub.part_slice("face")],
                                  full[:, [sk_full.index(f"face.face_{i}") for i in FACE_SUBSET]])


@pytest.mark.parametrize("face", ["none", "subset", "full"])
def test_our_array_round_trips(face: str, tmp_path: Path) -> None:
    sk = Skeleton(face=face, estimator_version="test")
    kp = _synthetic(sk)
    for width, height in ((512, 256), (540, 720)):
        path = write_pose_file(tmp_path / f"{face}.pose", kp, sk, 29.97, width, height)
        back, sk2, fps, w, h = read_pose_file(path, estimator_version="test")
        assert (sk2, w, h) == (sk, width, height)
        assert fps == pytest.approx(29.97)  # stored as float32
        assert np.array_equal(np.isnan(back), np.isnan(kp))
        np.testing.assert_array_equal(back[..., 2:], kp[..., 2:])  # z and confidence: exact
        ok = ~np.isnan(kp[..., 0])
        if width == 512:  # powers of two: exact
            np.testing.assert_array_equal(back, kp)
        else:  # otherwise within one float32 ulp (float32 pixels cannot hold every normalized value)
            np.testing.assert_array_max_ulp(back[ok][:, :2], kp[ok][:, :2], maxulp=1)
        # ... and stable from then on.
        back2, *_ = from_pose_format(to_pose_format(back, sk2, fps, w, h), estimator_version="test")
        np.testing.assert_array_equal(back2, back)


def test_export_is_holistic_for_pose_format() -> None:
    sk = Skeleton(face="subset")
    kp = _synthetic(sk, frames=3)
    kp[0, sk.index("body.left_wrist")] = [0.25, 0.5, -0.1, 0.9]
    pose = to_pose_format(kp, sk, 25, 640, 480)
    assert detect_known_pose_format(pose) == "holistic"
    assert [c.name for c in pose.header.components] == ["POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS",
                                                        "RIGHT_HAND_LANDMARKS"]
    assert pose.header.components[2].points[0] == "WRIST"
    assert pose.header.components[1].points == [str(i) for i in FACE_SUBSET]
    assert len(pose.header.components[1].limbs) > 0  # face contours among the subset points
    pose_normalization_info(pose.header)  # finds the shoulders by their holistic names
    i = pose.header.get_point_index("POSE_LANDMARKS", "LEFT_WRIST")
    np.testing.assert_allclose(pose.body.data[0, 0, i].tolist(), [160.0, 240.0, -0.1], rtol=1e-6)
    assert pose.body.confidence[0, 0, i] == pytest.approx(0.9)
    # Missing points: zeros, confidence 0, masked.
    j = pose.header.get_point_index("RIGHT_HAND_LANDMARKS", "WRIST")
    assert pose.body.confidence[2, 0, j] == 0 and bool(pose.body.data.mask[2, 0, j].all())
    assert np.all(np.ma.getdata(pose.body.data)[2] == 0)


def test_full_export_header_matches_a_real_holistic_file() -> None:
    real = Pose.read((POSE_DIR / "hand_estimation" / "0ff215ef4f1f111e217e2cefee0adc77.pose").read_bytes()).header
    sk = Skeleton(face="full")
    ours = to_pose_format(_synthetic(sk, frames=1), sk, 25, 3264, 1836).header
    real_comps = {c.name: c for c in real.components}
    for comp in ours.components:
        ref = real_comps[comp.name]
        assert (comp.points, comp.format) == (list(ref.points), ref.format)
        assert {tuple(sorted(map(int, limb))) for limb in comp.limbs} == {tuple(sorted(map(int, limb))) for limb in ref.limbs}


def test_openpose_file_is_refused_naming_components() -> None:
    with pytest.raises(ValueError, match=r"not a MediaPipe Holistic pose: components are \['pose_keypoints_2d'"):
        read_pose_file(POSE_DIR / "openpose.pose")


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    sk = Skeleton(face="none")
    kp = _synthetic(sk, frames=2)
    with pytest.raises(ValueError, match="shape"):
        to_pose_format(kp[:, :10], sk, 25, 100, 100)
    with pytest.raises(ValueError, match="width"):
        to_pose_format(kp, sk, 25, 0, 100)
    with pytest.raises(ValueError, match="fps"):
        to_pose_format(kp, sk, 0, 100, 100)
    bad = tmp_path / "bad.pose"
    bad.write_bytes(b"\x00\x01")
    with pytest.raises(ValueError, match="not a readable .pose file"):
        read_pose_file(bad)
    with pytest.raises(ValueError, match="face must be one of"):
        read_pose_file(POSE_DIR / "mediapipe.pose", face="half")


def test_write_is_atomic_and_deterministic(tmp_path: Path) -> None:
    sk = Skeleton(face="full")
    kp = _synthetic(sk, frames=4)
    a = write_pose_file(tmp_path / "a.pose", kp, sk, 25, 256, 256).read_bytes()
    b = write_pose_file(tmp_path / "b.pose", kp, sk, 25, 256, 256).read_bytes()
    assert a == b
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pose", "b.pose"]  # no temporary left behind
    with pytest.raises(ValueError):
        write_pose_file(tmp_path / "c.pose", kp[:, :3], sk, 25, 256, 256)
    assert not (tmp_path / "c.pose").exists()
