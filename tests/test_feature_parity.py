"""One feature path, proven on real clips: what ``predict`` and ``stream`` compute from a video equals what
the pipeline's pose stage, pack and ``evaluate`` computed for the same clip.

Real WLASL100 clips (25 fps) go through the pipeline's own library stages (pose shard with
``frame_step: 2`` as in params.yaml, pack, a small model trained with params.yaml's feature settings,
export); then the exported model reads the same videos as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import default_params
from sldata.pose.extract import PoseSettings, extract_pose_shard
from sldata.pose.store import load_packed, pack_pose_arrays
from sltrain.checkpoint import load_checkpoint, model_from_checkpoint
from sltrain.data import PoseClips
from sltrain.evaluate import score_split
from sltrain.export import export_model
from sltrain.inputs import clip_features
from sltrain.predict import Recognizer
from sltrain.stream import classify_windows, open_source, window_frames
from sltrain.train import FeatureConfig, train
from test_train import config

GLOSSES = ("book", "drink", "before", "chair", "go")
PER_SPLIT = {"train": 2, "val": 1}


def sample_clips(shared: Path) -> pd.DataFrame:
    """Two train clips and one val clip (the lowest video ids) of each of ``GLOSSES``: real WLASL100 videos."""
    rows = []
    videos = shared / "wlasl100_clips" / "videos"
    for entry in json.loads((shared / "wlasl" / "asl100.json").read_text(encoding="utf-8")):
        if entry["gloss"] not in GLOSSES:
            continue
        for split, count in PER_SPLIT.items():
            found = sorted((inst["video_id"], str(inst["signer_id"])) for inst in entry["instances"]
                           if inst["split"] == split and (videos / f"{inst['video_id']}.mp4").is_file())
            for vid, signer in found[:count]:
                rows.append({"sample_id": vid, "clip_path": str(videos / f"{vid}.mp4"), "status": "ok",
                             "label": GLOSSES.index(entry["gloss"]), "split": split, "gloss": entry["gloss"],
                             "signer_id": signer})
    samples = pd.DataFrame(rows)
    assert len(samples) >= 12 and set(samples["split"]) == {"train", "val"}
    return samples


@pytest.fixture(scope="module")
def pipeline(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The pipeline's stages on real clips with params.yaml's pose and feature settings, and the exported model."""
    root = tmp_path_factory.mktemp("parity")
    params = default_params()
    pose = PoseSettings.from_dict({**params["pose"], "workers": 1})
    assert pose.frame_step == 2  # the setting whose absence from predict this test guards against
    samples = sample_clips(shared)
    extract_pose_shard(samples[["sample_id", "clip_path", "status"]], root / "shard-000.parquet", pose,
                       progress=False)
    pack_pose_arrays([root / "shard-000.parquet"], samples, root / "packed")
    (root / "label_map.json").write_text(json.dumps({"dataset": "test", "glosses": list(GLOSSES),
                                                     "classes": list(GLOSSES)}), encoding="utf-8")
    features = FeatureConfig(**params["features"])
    train(root / "packed", root / "label_map.json", root / "model", root / "work",
          config(epochs=3, model_config={"d_model": 32, "num_layers": 1, "num_heads": 2, "ff_dim": 64}),
          features, progress=False)
    export_model(root / "model" / "model.pt", root / "export")
    return {"root": root, "samples": samples, "recognizer": Recognizer.from_model_dir(root / "export" / "sign-recognizer")}


@pytest.fixture(scope="module")
def predicted(pipeline: dict) -> dict:
    """``Recognizer.video_keypoints`` of every sample clip, as ``predict`` computes them (sample_id -> result)."""
    recognizer: Recognizer = pipeline["recognizer"]
    return {sid: recognizer.video_keypoints(path)
            for sid, path in zip(pipeline["samples"]["sample_id"], pipeline["samples"]["clip_path"])}


def test_the_exported_model_carries_the_keypoint_rate(pipeline: dict) -> None:
    spec = pipeline["recognizer"].spec
    _, index, meta = load_packed(pipeline["root"] / "packed")
    assert spec.frame_step == 2 and spec.keypoint_fps == pytest.approx(12.5)
    assert spec.estimator_settings() == {"estimator": "openvino", "face": "none", "model_complexity": 1,
                                         "min_detection_confidence": 0.5, "min_tracking_confidence": 0.5,
                                         "precision": "mixed", "hand_second_chance": True}
    assert spec.pose_settings == meta["recording"]["pose_settings"]
    assert spec.clip_seconds == pytest.approx(float(np.median(index["length"] / index["fps"])), rel=1e-5)
    assert spec.frame_step_for(25.0) == 2 and spec.frame_step_for(30.0) == 2 and spec.frame_step_for(60.0) == 5
    assert spec.frame_step_for(12.0) == 1 and spec.frame_step_for(None) == 2


def test_predict_builds_exactly_the_packed_training_features(pipeline: dict, predicted: dict) -> None:
    recognizer: Recognizer = pipeline["recognizer"]
    spec = recognizer.spec
    keypoints, index, meta = load_packed(pipeline["root"] / "packed")
    clips = PoseClips(pipeline["root"] / "packed", ("train", "val"), spec)
    assert len(clips.index) == len(predicted)
    for row, sid in enumerate(clips.index["sample_id"]):
        video = predicted[sid]
        packed = keypoints[index["offset"][row]: index["offset"][row] + index["length"][row]]
        assert video.frame_step == 2 and video.keypoints.shape[0] == packed.shape[0], sid  # the same frames
        np.testing.assert_allclose(video.keypoints[:, meta["point_indices"]], packed, atol=1e-6, equal_nan=True,
                                   err_msg=sid)
        np.testing.assert_allclose(recognizer.video_features(video), clips.features(row), atol=1e-5, err_msg=sid)


def test_every_frame_would_not_match(pipeline: dict) -> None:
    """The check above can fail: keypoints of every frame (what predict did before) give other features."""
    recognizer: Recognizer = pipeline["recognizer"]
    clips = PoseClips(pipeline["root"] / "packed", ("train", "val"), recognizer.spec)
    sid = clips.index["sample_id"][0]
    path = pipeline["samples"].set_index("sample_id").loc[sid, "clip_path"]
    from sldata.pose.extract import ClipReader

    every = recognizer.estimator().estimate(ClipReader(path, 1))
    assert len(every) > clips.index["length"][0]
    dense = clip_features(every, 256, 256, recognizer.spec)
    packed = clips.features(0)
    assert dense.shape != packed.shape or not np.allclose(dense, packed, atol=1e-3)


def test_predict_agrees_with_evaluate_on_every_clip(pipeline: dict, predicted: dict) -> None:
    recognizer: Recognizer = pipeline["recognizer"]
    ckpt = load_checkpoint(pipeline["root"] / "model" / "model.pt")
    model, spec, classes = model_from_checkpoint(ckpt)
    assert spec == recognizer.spec and classes == recognizer.classes
    samples = pipeline["samples"].set_index("sample_id")
    clips = PoseClips(pipeline["root"] / "packed", ("train", "val"), spec)
    compared = 0
    for split in ("train", "val"):
        scores = score_split(model, clips, split)  # what the evaluate stage computes
        for n, (row, probs) in enumerate(zip(clips.rows_of(split), scores)):
            sid = clips.index["sample_id"][row]
            if n == 0:  # the whole of predict, video in, once per split
                top = recognizer.recognize_video(samples.loc[sid, "clip_path"], top_k=len(classes)).top
            else:  # the same path from the keypoints predict estimated for this clip
                top = recognizer.recognize_features(recognizer.video_features(predicted[sid]), top_k=len(classes))
            got = dict(top)
            assert top[0][0] == classes[int(np.argmax(probs))], sid
            np.testing.assert_allclose([got[c] for c in classes], probs, atol=1e-4, err_msg=sid)
            compared += 1
    assert compared == len(samples)


def test_a_stream_of_one_clip_sees_what_predict_sees(pipeline: dict, predicted: dict) -> None:
    """Streaming a clip with a window of its whole length classifies exactly predict's input."""
    recognizer: Recognizer = pipeline["recognizer"]
    path = pipeline["samples"]["clip_path"].iloc[0]
    video = predicted[pipeline["samples"]["sample_id"].iloc[0]]
    stats: dict[str, float] = {}
    results = list(classify_windows(recognizer, open_source(path), window=len(video.keypoints), stride=1000,
                                    top_k=len(recognizer.classes), stats=stats))
    assert stats["frame_step"] == 2 and stats["keypoint_frames"] == len(video.keypoints) and len(results) == 1
    expected = recognizer.recognize_features(recognizer.video_features(video), top_k=len(recognizer.classes))
    assert [g for g, _ in results[0].top] == [g for g, _ in expected]
    np.testing.assert_allclose([p for _, p in results[0].top], [p for _, p in expected], atol=1e-6)
    # the default window spans a median training clip at the stream's keypoint rate
    assert window_frames(recognizer.spec, 12.5) == round(recognizer.spec.clip_seconds * 12.5)


def test_torch_scores_are_deterministic(pipeline: dict) -> None:
    """evaluate's scores do not depend on the batch (so the per-clip comparison above is fair)."""
    ckpt = load_checkpoint(pipeline["root"] / "model" / "model.pt")
    model, spec, _ = model_from_checkpoint(ckpt)
    clips = PoseClips(pipeline["root"] / "packed", ("val",), spec)
    a = score_split(model, clips, "val", batch_size=64)
    b = score_split(model, clips, "val", batch_size=1)
    np.testing.assert_allclose(a, b, atol=1e-5)
