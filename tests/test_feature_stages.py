"""Feature stages wired into the pipeline: frames, hand crops, pose summary and render-pose.

The hand-crop stage runs on real WLASL100 clips with a pose shard extracted here (MediaPipe,
one process, frame_step 2), so crops are checked against the very frames the keypoints came from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO_ROOT, default_params, hand_crop_settings, params_flags, pose_settings, shared_data_dir
from sldata.cli import main
from sldata.frames import FrameStore
from sldata.params import ParamsError, validate_params, validate_section
from sldata.pose.extract import extract_pose_shard
from sldata.pose.handcrop_stage import HandCropStageSettings, HandCropStore, hand_crops_shard
from sldata.pose.handcrops import HandCropSettings, crop_hands, hand_crop_boxes
from sldata.pose.skeleton import Skeleton
from sldata.pose.store import read_pose_settings, read_pose_shard, write_pose_shard

N_CLIPS = 3
FRAME_STEP = 2
NEW_COMMANDS = ("frames", "hand-crops", "pose-summary", "render-pose")


def rgb_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a clip as RGB, by a plain PyAV loop (independent of sldata)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """data-like layout in a temp folder: clips/shard-000/clips.parquet (3 real clips + a failed row)
    and pose/shard-000.parquet extracted from them with frame_step 2."""
    root = tmp_path_factory.mktemp("stages")
    videos = sorted((shared_data_dir() / "wlasl100_clips" / "videos").glob("*.mp4"))[:N_CLIPS]
    assert len(videos) == N_CLIPS
    clips = pd.DataFrame({
        "sample_id": [f"wlasl-{p.stem}" for p in videos] + ["wlasl-gone"],
        "split": ["train", "val", "test", "train"],
        "status": ["usable"] * N_CLIPS + ["failed"],
        "clip_path": [str(p) for p in videos] + [None],
    })
    (root / "clips" / "shard-000").mkdir(parents=True)
    clips.to_parquet(root / "clips" / "shard-000" / "clips.parquet", index=False)
    pose = root / "pose" / "shard-000.parquet"
    pose.parent.mkdir()
    extract_pose_shard(clips, pose, pose_settings(workers=1, frame_step=FRAME_STEP, checkpoint_every=100),
                       progress=False)
    return {"root": root, "clips": clips, "pose": pose, "videos": videos}


# --------------------------------------------------------------------------- CLI and params


@pytest.mark.parametrize("command", NEW_COMMANDS)
def test_cli_help(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "sldata", command, "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"python -m sldata {command}" in result.stdout
    listing = subprocess.run([sys.executable, "-m", "sldata", "--help"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=120).stdout
    assert command in listing


@pytest.mark.parametrize("section", ["frames", "hand_crops"])
def test_new_sections_validate_and_unknown_keys_are_named(section: str) -> None:
    params = default_params()
    validate_params(params)
    params[section]["sizee"] = 3
    with pytest.raises(ParamsError, match=rf"{section}: unknown key 'sizee'"):
        validate_params(params)
    params = default_params()
    del params[section]
    with pytest.raises(ParamsError, match=rf"'{section}' is a required property"):
        validate_params(params)
    params = default_params()
    params[section]["storage"] = "tiff"
    with pytest.raises(ParamsError, match=rf"{section}.storage: 'tiff' is not one of"):
        validate_params(params)
    with pytest.raises(ParamsError, match=rf"{section}: unknown key 'extra'"):
        validate_section(section, {**default_params()[section], "extra": 1})


def test_hand_crop_settings_from_the_section() -> None:
    section = default_params()["hand_crops"]
    settings = HandCropStageSettings.from_dict(section)
    assert settings.crops == HandCropSettings(size=section["size"], side_scale=section["side_scale"],
                                              forward_shift=section["forward_shift"],
                                              min_confidence=section["min_confidence"],
                                              require_wrist_in_frame=section["require_wrist_in_frame"])
    with pytest.raises(ValueError, match="unknown hand_crops setting.*colour"):
        HandCropStageSettings.from_dict({**section, "colour": "red"})
    with pytest.raises(ValueError, match="storage"):
        HandCropStageSettings.from_dict({**section, "storage": "png"})


def test_snakemake_dry_run_knows_the_new_targets() -> None:
    # --forceall: every job of the targets is listed whatever data/ holds.
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "frames_all", "hand_crops_all",
                             "all"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    shards = default_params()["shards"]["count"]
    for rule, jobs in (("frames", shards), ("hand_crops", shards), ("pose_summary", 1), ("frames_all", 1)):
        assert out.count(f"rule {rule}:") == jobs, rule
    assert "--clips-dir data/clips --shard 000" in subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "frames_all"], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=300).stdout


def test_dvc_stages_read_their_keys_from_params() -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for stage, section in (("frames", "frames"), ("hand_crops", "hand_crops")):
        assert "--params params.yaml" in stages[stage]["cmd"]
        assert f"{section}.size" in stages[stage]["params"] and f"{section}.workers" not in stages[stage]["params"]
    metrics = [m if isinstance(m, str) else next(iter(m)) for m in stages["pose_summary"]["metrics"]]
    assert "${data_dir}/pose_summary/summary.json" in metrics


# --------------------------------------------------------------------------- frames


def test_frames_cli_takes_usable_rows(shard: dict, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    assert main(["frames", *params_flags("frames.size=32", "shards.count=1"), "--clips-dir",
                 str(shard["root"] / "clips"), "--shard", "all", "--out-dir", str(out), "--no-progress"]) == 0
    store = FrameStore(out / "shard-000")
    index = store.index.set_index("sample_id")
    assert index.loc["wlasl-gone", "status"] == "skipped"
    for path in shard["videos"]:
        frames = store.clip(f"wlasl-{path.stem}")
        assert frames.shape == (len(rgb_frames(path)), 32, 32, 3)  # target_fps 0: every frame
        assert store.fps(f"wlasl-{path.stem}") == 25.0


# --------------------------------------------------------------------------- hand crops


def test_hand_crops_align_with_the_keypoint_frames(shard: dict, tmp_path: Path) -> None:
    settings = hand_crop_settings(size=48, workers=2)
    summary = hand_crops_shard(shard["clips"], shard["pose"], tmp_path / "npy", settings, progress=False)
    assert (summary["n_ok"], summary["n_failed"], summary["n_skipped"]) == (N_CLIPS, 0, 1)
    assert summary["frame_step"] == FRAME_STEP == read_pose_settings(shard["pose"])["frame_step"]
    store = HandCropStore(tmp_path / "npy")
    pose_clips, keypoints, skeleton = read_pose_shard(shard["pose"])
    index = store.index.set_index("sample_id")
    assert index.loc["wlasl-gone", "status"] == "skipped" and "failed" in index.loc["wlasl-gone", "reason"]
    crops_mm = np.load(tmp_path / "npy" / "crops.npy", mmap_mode="r")
    assert crops_mm.shape == (summary["n_frames"], 2, 48, 48, 3) and crops_mm.dtype == np.uint8
    for path in shard["videos"]:
        sid = f"wlasl-{path.stem}"
        kp = keypoints[sid]
        kept = np.stack(rgb_frames(path)[::FRAME_STEP])  # the frames the pose stage estimated
        assert len(kept) == len(kp) == index.loc[sid, "length"]
        boxes = hand_crop_boxes(kp, kept.shape[2], kept.shape[1], skeleton, **settings.crops.box_options())
        np.testing.assert_array_equal(store.boxes(sid), boxes.boxes)
        np.testing.assert_array_equal(store.clip(sid), crop_hands(kept, boxes.boxes, 48))
        assert index.loc[sid, "fps"] == pytest.approx(12.5)
        assert (index.loc[sid, "left_located"], index.loc[sid, "right_located"]) == tuple(boxes.located)
    # A signer signs with at least one hand in every clip: something was located and cropped.
    assert summary["left_located"] + summary["right_located"] >= N_CLIPS
    assert store.clip(store.sample_ids[0]).any()
    npy_crops = {sid: np.array(store.clip(sid)) for sid in store.sample_ids}

    # JPEG storage: the same crops up to JPEG loss; switching storage removes the other file.
    jpeg = hand_crop_settings(size=48, storage="jpeg_parquet", jpeg_quality=95)
    hand_crops_shard(shard["clips"], shard["pose"], tmp_path / "npy", jpeg, progress=False)
    assert not (tmp_path / "npy" / "crops.npy").exists()
    jstore = HandCropStore(tmp_path / "npy")
    assert jstore.storage == "jpeg_parquet"
    assert jstore.sample_ids == list(npy_crops)
    for sid, expected in npy_crops.items():
        got = jstore.clip(sid)
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 3


def test_hand_crops_cli_and_changed_clip(shard: dict, tmp_path: Path) -> None:
    out = tmp_path / "hand_crops"
    assert main(["hand-crops", *params_flags("hand_crops.size=24", "shards.count=1"), "--clips-dir",
                 str(shard["root"] / "clips"), "--pose-dir", str(shard["root"] / "pose"), "--shard", "0",
                 "--out-dir", str(out), "--no-progress"]) == 0
    store = HandCropStore(out / "shard-000")
    assert len(store) == N_CLIPS and store.clip(store.sample_ids[0]).shape[1:] == (2, 24, 24, 3)

    # A clip that no longer matches its keypoints (another clip in its place) fails alone, named.
    swapped = shard["clips"].copy()
    swapped.loc[0, "clip_path"] = str(shared_data_dir() / "autsl_sample" / "signer0_sample1000_color.mp4")
    summary = hand_crops_shard(swapped, shard["pose"], tmp_path / "swapped", hand_crop_settings(), progress=False)
    index = HandCropStore(tmp_path / "swapped").index.set_index("sample_id")
    assert summary["n_failed"] == 1 and "rerun" in index.loc[swapped.loc[0, "sample_id"], "reason"]


# --------------------------------------------------------------------------- pose summary


def test_pose_summary_cli_on_a_tiny_shard(tmp_path: Path) -> None:
    sk = Skeleton(face="none")
    lh, rh = sk.part_slice("left_hand"), sk.part_slice("right_hand")
    kp = np.full((4, sk.num_points, 4), np.nan, dtype=np.float32)
    kp[..., 3] = 0
    kp[:, sk.part_slice("body")] = [0.5, 0.5, 0.0, 1.0]  # body in all 4 frames
    kp[0:2, lh] = [0.4, 0.6, 0.0, 1.0]  # left hand in frames 0, 1
    kp[1:3, rh] = [0.6, 0.6, 0.0, 1.0]  # right hand in frames 1, 2 -> any hand in 0, 1, 2
    common = dict(fps=25.0, width=256, height=256)
    records = [
        dict(sample_id="a", status="ok", num_frames=4, keypoints=kp, frames_with_body=4, frames_with_left_hand=2,
             frames_with_right_hand=2, **common),
        dict(sample_id="b", status="failed", reason="undecodable", detail="x"),
        dict(sample_id="c", status="skipped_unusable_clip", reason="unusable_clip"),
    ]
    (tmp_path / "pose").mkdir()
    write_pose_shard(records, tmp_path / "pose" / "shard-000.parquet", sk, {"frame_step": 1})
    (tmp_path / "clips" / "shard-000").mkdir(parents=True)
    pd.DataFrame({"sample_id": ["a", "b", "c"], "split": ["train", "train", "val"]}).to_parquet(
        tmp_path / "clips" / "shard-000" / "clips.parquet", index=False)
    out = tmp_path / "pose_summary"
    assert main(["pose-summary", *params_flags("shards.count=1"), "--pose-dir", str(tmp_path / "pose"),
                 "--clips-dir", str(tmp_path / "clips"), "--out-dir", str(out)]) == 0
    metrics = json.loads((out / "summary.json").read_text())
    assert metrics["train"]["clips"] == 2 and metrics["train"]["clips_ok"] == 1 and metrics["train"]["clips_failed"] == 1
    assert metrics["val"]["clips_skipped"] == 1 and metrics["val"]["frames"] == 0 and metrics["val"]["body_rate"] is None
    assert metrics["ALL"]["frames"] == 4 and metrics["ALL"]["body_rate"] == 1.0
    assert metrics["ALL"]["left_hand_rate"] == 0.5 and metrics["ALL"]["any_hand_rate"] == 0.75  # exact: from keypoints
    assert list(pd.read_csv(out / "summary.csv")["split"]) == ["train", "val", "ALL"]
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A pose clip in no clip table is an error that names it.
    pd.DataFrame({"sample_id": ["a", "b"], "split": ["train", "train"]}).to_parquet(
        tmp_path / "clips" / "shard-000" / "clips.parquet", index=False)
    assert main(["pose-summary", *params_flags("shards.count=1"), "--pose-dir", str(tmp_path / "pose"),
                 "--clips-dir", str(tmp_path / "clips"), "--out-dir", str(out)]) == 2


# --------------------------------------------------------------------------- render-pose


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_render_pose_draws_only_the_keypoint_frames(shard: dict, tmp_path: Path, suffix: str) -> None:
    path = shard["videos"][0]
    sid = f"wlasl-{path.stem}"
    out = tmp_path / f"overlay{suffix}"
    assert main(["render-pose", "--pose-shard", str(shard["pose"]), "--sample-id", sid,
                 "--clips-dir", str(shard["root"] / "clips"), "--out", str(out)]) == 0
    _, keypoints, _ = read_pose_shard(shard["pose"])
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        rate = stream.average_rate
    assert n == len(keypoints[sid]) == len(rgb_frames(path)[::FRAME_STEP])
    if suffix == ".mp4":
        assert rate == Fraction(25, FRAME_STEP)  # plays at the clip's speed
    # Unknown sample and a clip without keypoints: errors that name them.
    assert main(["render-pose", "--pose-shard", str(shard["pose"]), "--sample-id", "nope",
                 "--clips-dir", str(shard["root"] / "clips"), "--out", str(out)]) == 2
    assert main(["render-pose", "--pose-shard", str(shard["pose"]), "--sample-id", "wlasl-gone",
                 "--clips-dir", str(shard["root"] / "clips"), "--out", str(out)]) == 2
