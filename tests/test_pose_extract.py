"""MediaPipe Holistic extraction on real clips: statuses, conventions, workers and resuming."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

import sldata.pose.extract as extract_mod
from sldata.acquire.trim import write_frames
from sldata.pose.estimator import HolisticEstimator, PoseEstimator
from sldata.pose.extract import ClipReader, PoseSettings, extract_pose_shard, parts_dir, process_clip
from sldata.pose.skeleton import present
from sldata.pose.store import read_pose_shard
from conftest import REPO_ROOT, params_section, pose_settings, shared_data_dir

# Three of the shortest WLASL100 clips (12, 13 and 18 frames); 22956 never shows the left hand.
REAL = ("05736", "32162", "22956")


def real_clip(video_id: str) -> Path:
    return shared_data_dir() / "wlasl100_clips" / "videos" / f"{video_id}.mp4"


@pytest.fixture(scope="module")
def clip_table(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Real clips plus a random-bytes file, an empty file, a video without a person and an unusable row."""
    folder = tmp_path_factory.mktemp("pose_clips")
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "empty.mp4").write_bytes(b"")
    grey = np.full((96, 128, 3), 128, dtype=np.uint8)
    write_frames(folder / "nobody.mp4", [grey] * 8, 25.0)
    rows = [(f"wlasl-{v}", str(real_clip(v)), "ok") for v in REAL]
    rows += [("bad-noise", str(folder / "noise.mp4"), "ok"), ("bad-empty", str(folder / "empty.mp4"), "ok"),
             ("nobody", str(folder / "nobody.mp4"), "ok"), ("unusable", None, "failed")]
    return pd.DataFrame(rows, columns=["sample_id", "clip_path", "status"])


FACE = "subset"
"""The reference runs extract the face too (params.yaml's default is none), so the face points are checked as well."""


@pytest.fixture(scope="module")
def reference(clip_table: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An uninterrupted in-process run over the whole table."""
    out = tmp_path_factory.mktemp("pose_ref") / "shard.parquet"
    summary = extract_pose_shard(clip_table, out, pose_settings(workers=1, checkpoint_every=100, frame_step=1, face=FACE),
                                 progress=False)
    return out, summary


def test_statuses_and_summary(reference: tuple[Path, dict]) -> None:
    out, summary = reference
    assert summary["by_status"] == {"failed": 2, "no_person": 1, "ok": 3, "skipped_unusable_clip": 1}
    assert summary["processed"] == 6 and summary["resumed"] == 0 and summary["clips"] == 7
    clips, kps, skeleton = read_pose_shard(out)
    assert list(clips["sample_id"]) == sorted(clips["sample_id"])
    by_id = clips.set_index("sample_id")
    for sid, name in (("bad-noise", "noise.mp4"), ("bad-empty", "empty.mp4")):
        row = by_id.loc[sid]
        assert row["status"] == "failed" and row["reason"] == "undecodable" and row["num_frames"] == 0
        assert name in row["detail"] and sid not in kps
    assert "empty (0 bytes)" in by_id.loc["bad-empty", "detail"]
    assert by_id.loc["unusable", "reason"] == "unusable_clip" and "failed" in by_id.loc["unusable", "detail"]
    assert not parts_dir(out).exists()
    assert skeleton.estimator == "openvino-holistic"  # params.yaml's engine
    assert " model_complexity=1" in skeleton.estimator_version and skeleton.face == "subset"


def test_real_clips_plausible_detection(reference: tuple[Path, dict]) -> None:
    clips, kps, skeleton = read_pose_shard(reference[0])
    by_id = clips.set_index("sample_id")
    for video_id in REAL:
        sid = f"wlasl-{video_id}"
        row, kp = by_id.loc[sid], kps[sid]
        assert row["status"] == "ok" and pd.isna(row["reason"])
        assert (row["width"], row["height"], row["fps"]) == (256, 256, 25.0)
        assert kp.dtype == np.float32 and kp.shape == (row["num_frames"], 33 + 21 + 21 + 93, 4)
        found = present(kp)
        body = found[:, skeleton.part_slice("body")]
        left = found[:, skeleton.part_slice("left_hand")].any(axis=1)
        right = found[:, skeleton.part_slice("right_hand")].any(axis=1)
        assert body.all(), f"{sid}: body missing in some frame"
        assert row["frames_with_body"] == row["num_frames"]
        assert (row["frames_with_left_hand"], row["frames_with_right_hand"]) == (left.sum(), right.sum())
        assert (left | right).mean() >= 0.8, f"{sid}: a hand in only {(left | right).mean():.0%} of frames"
        assert found[:, skeleton.part_slice("face")].any(axis=1).mean() >= 0.8
        # Missing points: x, y, z NaN and confidence 0; parts are all-or-nothing per frame.
        assert np.isnan(kp[~found][:, :3]).all() and (kp[~found][:, 3] == 0).all()
        assert not np.isnan(kp[found]).any()
        for part in ("left_hand", "right_hand", "face"):
            sl = skeleton.part_slice(part)
            assert (found[:, sl].all(axis=1) | ~found[:, sl].any(axis=1)).all()
            assert (kp[:, sl, 3][found[:, sl]] == 1.0).all()  # detected hand/face points: confidence 1
        vis = kp[:, skeleton.part_slice("body"), 3]
        assert ((vis >= 0) & (vis <= 1)).all() and vis[:, 11:13].min() > 0.5  # shoulders clearly visible
        xy = kp[found][:, :2]
        assert np.median(xy, axis=0).tolist() == pytest.approx([0.5, 0.5], abs=0.25)
    assert by_id.loc["wlasl-22956", "frames_with_left_hand"] == 0  # this signer's left hand stays out of view


def test_no_person_clip(reference: tuple[Path, dict]) -> None:
    clips, kps, _ = read_pose_shard(reference[0])
    row = clips.set_index("sample_id").loc["nobody"]
    assert row["status"] == "no_person" and row["num_frames"] == 8 and row["frames_with_body"] == 0
    assert (row["width"], row["height"]) == (128, 96)
    assert "no body detected in any of 8 frames" in row["detail"]
    kp = kps["nobody"]
    assert kp.shape[0] == 8 and np.isnan(kp[..., :3]).all() and (kp[..., 3] == 0).all()


def test_plain_pandas_read(reference: tuple[Path, dict]) -> None:
    """No project code: the layout comes from the schema metadata."""
    import pyarrow.parquet as pq

    out = reference[0]
    parts = json.loads(pq.read_schema(out).metadata[b"sldata.skeleton"])["parts"]
    points = sum(len(v) for v in parts.values())
    df = pd.read_parquet(out)
    row = df[df["sample_id"] == "wlasl-05736"].iloc[0]
    kp = np.stack(row["keypoints"]).reshape(row["num_frames"], points, 4)
    np.testing.assert_array_equal(kp, read_pose_shard(out)[1]["wlasl-05736"])


class _Interrupt(BaseException):
    """Stands for a kill: not an ``Exception``, so the per-clip guard does not catch it."""


def test_resume_after_interruption(clip_table: pd.DataFrame, reference: tuple[Path, dict], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "shard.parquet"
    settings = pose_settings(workers=1, checkpoint_every=1, frame_step=1, face=FACE)
    real = extract_mod.process_clip
    calls: list[str] = []

    def dies_after_two(estimator: PoseEstimator, sample_id: str, clip_path: str | None,  # noqa: ANN202
                       frame_step: int = 1):
        if len(calls) == 2:
            raise _Interrupt
        calls.append(sample_id)
        return real(estimator, sample_id, clip_path, frame_step=frame_step)

    monkeypatch.setattr(extract_mod, "process_clip", dies_after_two)
    with pytest.raises(_Interrupt):
        extract_pose_shard(clip_table, out, settings, progress=False)
    assert not out.exists()
    assert sorted(p.name for p in parts_dir(out).iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    first = list(calls)

    calls.clear()
    monkeypatch.setattr(extract_mod, "process_clip",
                        lambda e, s, p, frame_step=1: (calls.append(s), real(e, s, p, frame_step=frame_step))[1])
    summary = extract_pose_shard(clip_table, out, settings, progress=False)
    todo = [s for s, st in zip(clip_table["sample_id"], clip_table["status"]) if st == "ok"]
    assert calls == [s for s in todo if s not in first]  # only the missing clips were processed
    assert summary["resumed"] == 2 and summary["processed"] == 4
    assert out.read_bytes() == reference[0].read_bytes()
    assert not parts_dir(out).exists()


KILL_SCRIPT = """
import json, sys, pandas as pd
from sldata.pose.extract import PoseSettings, extract_pose_shard
clips = pd.read_json(sys.argv[1], orient="records", dtype=False)
extract_pose_shard(clips, sys.argv[2], PoseSettings.from_dict(json.loads(sys.argv[3])), progress=False)
"""


def test_kill_9_then_resume(clip_table: pd.DataFrame, reference: tuple[Path, dict], tmp_path: Path) -> None:
    out = tmp_path / "shard.parquet"
    table = tmp_path / "clips.json"
    clip_table.to_json(table, orient="records")
    settings = json.dumps(params_section("pose", workers=1, checkpoint_every=1, frame_step=1, face=FACE))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(table), str(out), settings], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_part = parts_dir(out) / "part-00000.parquet"
    try:
        deadline = time.monotonic() + 120
        while not first_part.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first_part.exists(), "the extraction wrote no checkpoint"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    summary = extract_pose_shard(clip_table, out, pose_settings(workers=1, checkpoint_every=1, frame_step=1, face=FACE),
                                 progress=False)
    assert 1 <= summary["resumed"] < 6 and summary["resumed"] + summary["processed"] == 6
    assert out.read_bytes() == reference[0].read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


ORPHAN_SCRIPT = """
import json, multiprocessing, sys, time
from sldata.pose.extract import PoseSettings, _init_worker

def busy_worker(settings):  # a pool worker in the middle of a very long clip
    _init_worker(settings)
    print("ready", flush=True)
    time.sleep(600)

if __name__ == "__main__":
    worker = multiprocessing.get_context("spawn").Process(
        target=busy_worker, args=(PoseSettings.from_dict(json.loads(sys.argv[1])),))
    worker.start()
    print(worker.pid, flush=True)
    worker.join()
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_job_takes_its_worker_processes_with_it(tmp_path: Path, sig: signal.Signals) -> None:
    """A pose worker leaves within seconds of its job being killed, even in the middle of a clip."""
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    settings = json.dumps(params_section("pose", workers=2, frame_step=1))
    proc = subprocess.Popen([sys.executable, str(script), settings], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    worker = 0
    try:
        worker = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived its killed job"
    finally:
        proc.kill()
        proc.wait()
        if worker and _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_two_worker_processes_match_in_process(clip_table: pd.DataFrame, reference: tuple[Path, dict],
                                               tmp_path: Path) -> None:
    out = tmp_path / "shard.parquet"
    summary = extract_pose_shard(clip_table, out, pose_settings(workers=2, checkpoint_every=2, frame_step=1, face=FACE),
                                 progress=False)
    assert summary["processed"] == 6
    assert out.read_bytes() == reference[0].read_bytes()


def test_garbled_packets_are_skipped_and_counted(shared: Path, tmp_path: Path) -> None:
    data = bytearray(real_clip("32162").read_bytes())
    mid = slice(len(data) // 3, 2 * len(data) // 3)
    data[mid] = np.random.default_rng(1).bytes(mid.stop - mid.start)
    path = tmp_path / "garbled.mp4"
    path.write_bytes(bytes(data))
    rec = process_clip(HolisticEstimator(face="none"), "garbled", path)
    assert rec.status in ("ok", "no_person") and rec.num_frames > 0
    assert rec.decode_errors > 0 and "undecodable packet(s) skipped" in rec.detail
    missing = process_clip(HolisticEstimator(face="none"), "gone", tmp_path / "gone.mp4")
    assert (missing.status, missing.reason) == ("failed", "missing_clip") and "gone.mp4" in missing.detail


def test_full_face_on_a_real_signer(shared: Path) -> None:
    est = HolisticEstimator(face="full")
    reader = ClipReader(shared / "pose_format" / "test_video.mp4")
    assert (reader.width, reader.height) == (540, 720)
    kp = est.estimate(itertools.islice(reader, 6))
    reader.close()
    assert kp.shape == (6, 33 + 21 + 21 + 468, 4)
    found = present(kp)
    assert found[:, est.skeleton.part_slice("body")].all()
    face = est.skeleton.part_slice("face")
    assert found[:, face].all(axis=1).sum() >= 5 and (kp[:, face, 3][found[:, face]] == 1).all()
    assert isinstance(est, PoseEstimator)


def test_settings_validation() -> None:
    assert PoseSettings.from_dict({**params_section("pose"), "face": "full", "workers": 1}).face == "full"
    with pytest.raises(ValueError, match="missing pose setting.*: frame_step"):  # no defaults of its own
        PoseSettings.from_dict({k: v for k, v in params_section("pose").items() if k != "frame_step"})
    for complexity in (0, 2):
        with pytest.raises(ValueError, match="model_complexity must be 1.*offline"):
            pose_settings(model_complexity=complexity, frame_step=1)
        with pytest.raises(ValueError, match="model_complexity must be 1"):
            HolisticEstimator(model_complexity=complexity)
    with pytest.raises(ValueError, match="unknown pose setting\\(s\\): frames"):
        PoseSettings.from_dict({"frames": 3})
    with pytest.raises(ValueError, match="face must be one of"):
        pose_settings(face="mesh", frame_step=1)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        pose_settings(workers=0, frame_step=1)
    with pytest.raises(ValueError, match="min_tracking_confidence must be a number in \\[0, 1\\]"):
        pose_settings(min_tracking_confidence=1.5, frame_step=1)
    assert pose_settings(workers=4, checkpoint_every=3, frame_step=1).output_dict() == pose_settings(frame_step=1).output_dict()


def test_bad_clip_tables(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="clip_path"):
        extract_pose_shard(pd.DataFrame({"sample_id": ["a"], "status": ["ok"]}), tmp_path / "x.parquet",
                           pose_settings(frame_step=1))
    dup = pd.DataFrame({"sample_id": ["a", "a"], "clip_path": ["x", "y"], "status": ["ok", "ok"]})
    with pytest.raises(ValueError, match="duplicate sample_id 'a'"):
        extract_pose_shard(dup, tmp_path / "x.parquet", pose_settings(frame_step=1))


def test_stale_checkpoints_are_discarded(tmp_path: Path) -> None:
    """Parts from other settings are dropped, parts of clips no longer asked for are ignored."""
    from sldata.pose.store import ClipPose, write_pose_shard

    out = tmp_path / "shard.parquet"
    settings = pose_settings(workers=1, frame_step=1)
    folder = parts_dir(out)
    other = pose_settings(face="subset", frame_step=1)
    write_pose_shard([ClipPose("b", "failed", "missing_clip", "old")], folder / "part-00000.parquet",
                     other.skeleton(), other.output_dict())
    write_pose_shard([ClipPose("gone", "failed", "missing_clip", "old")], folder / "part-00001.parquet",
                     settings.skeleton(), settings.output_dict())
    (folder / ".part-00002.parquet.abc.tmp").write_bytes(b"half")
    (tmp_path / ".shard.parquet.abc.tmp").write_bytes(b"half")
    clips = pd.DataFrame({"sample_id": ["a", "b"], "clip_path": [None, str(tmp_path / "nowhere.mp4")],
                          "status": ["trim_failed", "ok"], "reason": ["box_outside_frame", None]})
    summary = extract_pose_shard(clips, out, settings, progress=False)
    assert summary["processed"] == 1 and summary["resumed"] == 0
    table, _, _ = read_pose_shard(out)
    assert list(table["sample_id"]) == ["a", "b"]
    assert table["detail"].tolist() == ["clip status 'trim_failed' (box_outside_frame)",
                                        f"{tmp_path / 'nowhere.mp4'} does not exist"]
    assert not folder.exists() and not list(tmp_path.glob(".*.tmp"))


def test_frame_step_keeps_every_other_frame_and_halves_the_rate(shared: Path) -> None:
    clip = shared / "wlasl100_clips" / "videos" / "05736.mp4"
    with av.open(str(clip)) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    settings = pose_settings(workers=1, frame_step=2)
    rec = process_clip(settings.make_estimator(), "wlasl-05736", clip, frame_step=2)
    assert rec.status == "ok" and rec.num_frames == (decoded + 1) // 2
    assert rec.fps == pytest.approx(12.5) and rec.keypoints.shape[0] == rec.num_frames
    with pytest.raises(ValueError, match="frame_step"):
        pose_settings(frame_step=0)
