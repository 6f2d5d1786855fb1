"""The OpenVINO rebuild of Holistic against MediaPipe's own Holistic, on the same real WLASL frames.

Thresholds are from ``bench/bench_pose_engines.py`` (docs/benchmarks.md, "Pose engines") with
room for the clip choice: body median error well under a pixel at 256 px, the face a hundredth of
a pixel, hands present on the same frames almost always.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sldata.pose.estimator import HolisticEstimator, make_estimator
from sldata.pose.extract import ClipReader
from sldata.pose.openvino_holistic import (CACHE_ENV, OpenVinoHolisticEstimator, Rect, compiled_model_cache, crop,
                                           hand_rect_from_landmarks, normalize_radians, ssd_anchors, transform_rect)
from sldata.pose.parity import compare
from sldata.pose.skeleton import present
from sltrain.inputs import InputSpec
from conftest import pose_settings

CLIPS = ("00618", "22119", "56838")  # 12, 26 and 41 keypoint frames at frame_step 2


@pytest.fixture(scope="module")
def frames(shared: Path) -> dict[str, list[np.ndarray]]:
    videos = shared / "wlasl100_clips" / "videos"
    return {vid: list(ClipReader(videos / f"{vid}.mp4", 2)) for vid in CLIPS}


@pytest.fixture(scope="module")
def keypoints(frames: dict[str, list[np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    mediapipe = HolisticEstimator(face="subset")
    openvino = OpenVinoHolisticEstimator(face="subset", threads=1)
    return {vid: (mediapipe.estimate(clip), openvino.estimate(clip)) for vid, clip in frames.items()}


@pytest.fixture(scope="module")
def mixed(frames: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """The same frames through the engine with ``precision="mixed"`` (params.yaml's choice)."""
    openvino = OpenVinoHolisticEstimator(face="subset", threads=1, precision="mixed")
    return {vid: openvino.estimate(clip) for vid, clip in frames.items()}


@pytest.mark.parametrize("precision", ["f32", "mixed"])
def test_openvino_matches_mediapipe_holistic(frames, keypoints, mixed, precision) -> None:
    skeleton = HolisticEstimator(face="subset").skeleton
    parts = {}
    for vid, (ref, test) in keypoints.items():
        if precision == "mixed":
            test = mixed[vid]
        assert test.shape == ref.shape and test.dtype == np.float32
        height, width = frames[vid][0].shape[:2]
        compare(ref, test, skeleton, width, height, into=parts)
    s = {part: acc.summary() for part, acc in parts.items()}
    assert s["body"]["present_agreement"] == 1.0 and s["body"]["present_test"] == 1.0
    assert s["body"]["median_px"] < 1.0 and s["body"]["p95_px"] < 8.0, s["body"]
    assert s["face"]["median_px"] < 0.1 and s["face"]["present_agreement"] >= 0.95, s["face"]
    for hand in ("left_hand", "right_hand"):
        assert s[hand]["present_agreement"] >= 0.9, (hand, s[hand])
        assert s[hand]["median_px"] < 1.5, (hand, s[hand])
    assert s["left_hand"]["points"] + s["right_hand"]["points"] > 0  # the clips do show hands


def test_mixed_precision_keeps_the_body_in_f32(keypoints, mixed) -> None:
    """``mixed`` runs the pose models in f32: the body equals f32's exactly, only hands and face move."""
    import openvino

    bf16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")  # else all f32: equal
    for vid, (_, f32) in keypoints.items():
        np.testing.assert_array_equal(mixed[vid][:, :33], f32[:, :33])
        assert np.array_equal(mixed[vid][:, 33:], f32[:, 33:], equal_nan=True) != bf16  # bf16 hands/face move a little


def test_missing_points_follow_the_skeleton_convention(keypoints) -> None:
    for ref, test in keypoints.values():
        found = present(test)
        assert np.all(test[~found, 3] == 0.0) and np.all(np.isnan(test[~found, :3]).all(axis=-1))
        hands = test[:, 33:75]
        assert np.all((hands[..., 3] == 1.0) == present(hands))  # detected hand points: confidence 1
        body = test[:, :33]
        assert np.all((body[..., 3] >= 0) & (body[..., 3] <= 1))  # visibility
        assert np.abs(body[..., 3] - ref[:, :33, 3]).max() < 0.05


def test_session_equals_estimate(frames, keypoints) -> None:
    est = OpenVinoHolisticEstimator(face="subset")
    clip = frames[CLIPS[0]]
    with est.session() as session:
        rows = np.stack([session.process(f) for f in clip])
    np.testing.assert_array_equal(rows, keypoints[CLIPS[0]][1])
    with pytest.raises(RuntimeError, match="after close"):
        session.process(clip[0])
    with pytest.raises(ValueError, match="RGB uint8"):
        est.session().process(clip[0].astype(np.float32))


def test_settings_select_the_engine() -> None:
    assert pose_settings(frame_step=1).estimator == "openvino"  # params.yaml's default
    # shards made with mediapipe, the engine before there was a choice, keep their metadata
    assert "estimator" not in pose_settings(estimator="mediapipe", frame_step=1).output_dict()
    ov = pose_settings(estimator="openvino", face="none", frame_step=1)
    assert ov.output_dict()["estimator"] == "openvino"
    sk = ov.skeleton()
    assert sk.estimator == "openvino-holistic" and sk.point_names == pose_settings(face="none", frame_step=1).skeleton().point_names
    est = ov.make_estimator()
    assert isinstance(est, OpenVinoHolisticEstimator) and est.skeleton == sk
    assert "face_detection" not in est.models.requests  # face: none skips the face models
    with pytest.raises(ValueError, match="estimator must be one of"):
        pose_settings(estimator="tflite", frame_step=1)


def test_openvino_options_reach_the_engine_and_the_shards() -> None:
    options = {"precision": "mixed", "hand_second_chance": True}
    ov = pose_settings(estimator="openvino", face="none", frame_step=1, openvino=options)
    assert ov.output_dict()["openvino"] == options  # recorded: predict rebuilds the same engine
    est = ov.make_estimator()
    assert (est.precision, est.hand_second_chance) == ("mixed", True) and "palm_detection" in est.models.requests
    import openvino

    bf16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")  # else OpenVINO runs f32
    for name, request in est.models.requests.items():  # mixed: the pose models f32, the others bf16; no pinning
        compiled = request.get_compiled_model()
        low = name.startswith(("hand", "face", "palm")) and bf16
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == (openvino.Type.bf16 if low else openvino.Type.f32), name
        assert compiled.get_property("ENABLE_CPU_PINNING") is False, name
    assert "openvino" not in pose_settings(estimator="mediapipe", frame_step=1, openvino=options).output_dict()
    spec_settings = InputSpec(skeleton=ov.skeleton().to_dict(), points=("body.nose",),
                              recording={"pose_settings": ov.output_dict()}).estimator_settings()
    assert spec_settings == {"estimator": "openvino", "face": "none", "model_complexity": 1,
                             "min_detection_confidence": 0.5, "min_tracking_confidence": 0.5, **options}
    with pytest.raises(ValueError, match="openvino precision must be one of"):
        pose_settings(estimator="openvino", frame_step=1, openvino={"precision": "int4", "hand_second_chance": False})
    with pytest.raises(ValueError, match="unknown pose openvino setting"):
        pose_settings(estimator="openvino", frame_step=1, openvino={**options, "threads": 2})
    with pytest.raises(ValueError, match="takes no options"):
        make_estimator("mediapipe", threads=1)


def test_geometry_helpers() -> None:
    assert normalize_radians(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert len(ssd_anchors(224, (8, 16, 32, 32, 32))) == 2254  # pose detector's boxes
    assert len(ssd_anchors(128, (8, 16, 16, 16))) == 896  # face detector's boxes
    r = transform_rect(Rect(0.5, 0.5, 0.1, 0.2, 0.0), 200, 100, 2.0, -0.1)
    assert (r.x, r.y) == pytest.approx((0.5, 0.48)) and r.w * 200 == pytest.approx(r.h * 100) == pytest.approx(40)
    # an upright hand (fingers up in the image) needs no rotation
    lms = np.zeros((21, 3))
    lms[:, 0] = 0.5 + np.linspace(-0.02, 0.02, 21)
    lms[:, 1] = np.linspace(0.6, 0.4, 21)
    assert hand_rect_from_landmarks(lms, 100, 100).r == pytest.approx(0.0, abs=0.2)


def test_the_pose_cache_key_depends_on_the_engine_modules_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Editing the openvino engine keeps mediapipe shards' reuse key (their pose is not re-extracted)."""
    import json
    import shutil

    import pyarrow as pa

    from sldata.pose import extract as extract_mod
    from sldata.pose.store import SETTINGS_KEY, SKELETON_KEY

    for source in Path(extract_mod.__file__).parent.glob("*.py"):
        shutil.copy(source, tmp_path / source.name)
    monkeypatch.setattr(extract_mod, "__file__", str(tmp_path / "extract.py"))

    def key(estimator: str) -> str:
        settings = pose_settings(estimator=estimator, frame_step=2)
        return extract_mod.reuse_key(pa.schema([], metadata={
            SKELETON_KEY: settings.skeleton().to_json().encode(),
            SETTINGS_KEY: json.dumps(settings.output_dict()).encode()}))

    before = {engine: key(engine) for engine in ("mediapipe", "openvino")}
    assert before["mediapipe"] != before["openvino"]
    with (tmp_path / "openvino_holistic.py").open("a") as f:
        f.write("\n# an edit\n")
    assert key("mediapipe") == before["mediapipe"] and key("openvino") != before["openvino"]
    with (tmp_path / "store.py").open("a") as f:
        f.write("\n# an edit\n")
    assert key("mediapipe") != before["mediapipe"]


def test_crops_warp_into_the_model_input_in_place(frames) -> None:
    frame = frames[CLIPS[0]][0]
    rect = Rect(0.45, 0.5, 0.3, 0.4, 0.3)
    buffer = np.zeros((1, 224, 224, 3), dtype=np.uint8)
    got = crop(frame, rect, 224, 224, keep_aspect=True, zero_border=False, out=buffer[0])
    fresh = crop(frame, rect, 224, 224, keep_aspect=True, zero_border=False)
    assert np.shares_memory(got.tensor, buffer) and buffer.any()
    np.testing.assert_array_equal(got.tensor, fresh.tensor)
    assert (got.padding, got.padded) == (fresh.padding, fresh.padded)
    with pytest.raises(ValueError, match="crop destination"):
        crop(frame, rect, 224, 224, keep_aspect=True, zero_border=False, out=np.zeros((192, 192, 3), np.uint8))


def test_both_hands_in_one_batch_equal_one_hand_at_a_time(frames) -> None:
    """The batch-of-two hand landmark model gives each hand exactly what the single model gives it."""
    est = OpenVinoHolisticEstimator(face="none", precision="mixed")
    pairs = hands = 0
    with est.session() as session:
        for frame in frames[CLIPS[2]]:
            body = session.process(frame)[:33].astype(np.float64)  # ROIs from this frame's body, as process makes them
            rois = {side: session._hand_roi(frame, body, side, idx)
                    for side, idx in (("left_hand", (15, 17, 19)), ("right_hand", (16, 18, 20)))}
            rois = {side: roi for side, roi in rois.items() if roi is not None}
            if len(rois) < 2:
                continue
            pairs += 1
            batched = session._hands(frame, rois)
            for side, roi in rois.items():
                one = session._hand_landmarks(frame, roi)
                assert (one is None) == (batched[side] is None)
                if one is not None:
                    np.testing.assert_array_equal(batched[side], one)
                    hands += 1
    assert pairs >= 10 and hands >= 10


def test_compiled_models_are_cached_between_processes(frames, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    clip = frames[CLIPS[0]]
    monkeypatch.setenv(CACHE_ENV, "off")
    assert compiled_model_cache() is None
    uncached = OpenVinoHolisticEstimator(face="subset", precision="mixed", hand_second_chance=True).estimate(clip)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "ov"))
    cold = OpenVinoHolisticEstimator(face="subset", precision="mixed", hand_second_chance=True)
    blobs = sorted((tmp_path / "ov").glob("*.blob"))
    assert {b.name.split("-")[0] for b in blobs} == {"pose_detection", "pose_landmark", "hand_recrop", "hand_landmark",
                                                      "hand_landmark_x2", "face_detection", "face_landmark",
                                                      "palm_detection"}
    warm = OpenVinoHolisticEstimator(face="subset", precision="mixed", hand_second_chance=True)
    np.testing.assert_array_equal(cold.estimate(clip), uncached)
    np.testing.assert_array_equal(warm.estimate(clip), uncached)  # imported models: the same numbers
    assert sorted((tmp_path / "ov").glob("*.blob")) == blobs and not list((tmp_path / "ov").glob(".*tmp"))
    torn = next(b for b in blobs if b.name.startswith("pose_landmark"))
    torn.write_bytes(torn.read_bytes()[:1000])  # a torn file is compiled again and replaced
    with caplog.at_level("WARNING"):
        again = OpenVinoHolisticEstimator(face="subset", precision="mixed", hand_second_chance=True)
    assert "unreadable" in caplog.text and torn.stat().st_size > 1000
    np.testing.assert_array_equal(again.estimate(clip), uncached)
    f32 = OpenVinoHolisticEstimator(face="none", precision="f32")  # another precision: other entries
    assert len(list((tmp_path / "ov").glob("hand_landmark-*.blob"))) == 2 and f32.models.requests


def test_no_face_leaves_body_and_hands_unchanged(frames, mixed) -> None:
    """``face: none`` (params.yaml's default) only drops the face: body and hands are the same numbers."""
    est = OpenVinoHolisticEstimator(face="none", precision="mixed")
    assert not any(name.startswith("face") for name in est.models.requests)
    for vid, clip in frames.items():
        without = est.estimate(clip)
        assert without.shape[1] == 75
        np.testing.assert_array_equal(without, mixed[vid][:, :75])
