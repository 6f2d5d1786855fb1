"""Export to the training_extensions rawframes layout (sldata.otx_export)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from sldata.frames import FrameStore, extract_frames_shard
from sldata.otx_export import OtxRecord, check_safe_id, export_otx, parse_otx_line, sign_range
from conftest import frame_settings

N_REAL = 3


@pytest.fixture(scope="module")
def clips(shared: Path) -> pd.DataFrame:
    paths = sorted((shared / "wlasl100_clips" / "videos").glob("*.mp4"))[:N_REAL]
    return pd.DataFrame({"sample_id": [f"wlasl-{p.stem}" for p in paths], "clip_path": [str(p) for p in paths],
                         "status": "ok"})


@pytest.fixture(scope="module")
def store(clips: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> FrameStore:
    folder = tmp_path_factory.mktemp("shard")
    extract_frames_shard(clips, folder, frame_settings(target_fps=12.5), progress=False)
    return FrameStore(folder)


def samples_for(clips: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": clips["sample_id"], "label": [7, 3, 7][: len(clips)],
                         "split": ["train", "val", "train"][: len(clips)]})


def test_export_from_store_layout_and_lines(store: FrameStore, clips: pd.DataFrame, tmp_path: Path) -> None:
    samples = samples_for(clips)
    samples = pd.concat([samples, pd.DataFrame({"sample_id": ["wlasl-absent"], "label": [1], "split": ["val"]})],
                        ignore_index=True)
    report = export_otx(store, samples, tmp_path, progress=False)
    assert list(report["status"]) == ["written"] * N_REAL + ["missing"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rawframes", "train.txt", "val.txt"]
    lines = {split: (tmp_path / f"{split}.txt").read_text().splitlines() for split in ("train", "val")}
    assert len(lines["train"]) == 2 and len(lines["val"]) == 1
    for sample_id, split, label in zip(samples["sample_id"][:N_REAL], samples["split"], samples["label"]):
        n = len(store.clip(sample_id))
        expected = f"rawframes/{sample_id} {label} 0 {n} 0 {n} 12.5"
        assert expected in lines[split]
        record = parse_otx_line(expected)
        assert record == OtxRecord(f"rawframes/{sample_id}", label, 0, n, 0, n, 12.5)
        folder = tmp_path / record.rel_path
        names = sorted(p.name for p in folder.iterdir())
        assert names == [f"img_{i:05d}.jpg" for i in range(1, n + 1)]  # img_00001 is frame index 0
        first = cv2.cvtColor(cv2.imread(str(folder / "img_00001.jpg")), cv2.COLOR_BGR2RGB)
        assert first.shape == (112, 112, 3)
        assert np.abs(first.astype(int) - store.clip(sample_id)[0].astype(int)).mean() < 3.0
    assert not list((tmp_path / "rawframes").glob(".*"))  # no temporary folder left


def test_export_from_clips_with_sign_range_and_rerun(clips: pd.DataFrame, tmp_path: Path) -> None:
    samples = samples_for(clips).iloc[:1].assign(sign_start_s=[0.2], sign_end_s=[0.6])
    bad = pd.DataFrame({"sample_id": ["broken"], "clip_path": [str(tmp_path / "nope.mp4")], "status": ["ok"]})
    samples = pd.concat([samples, pd.DataFrame({"sample_id": ["broken"], "label": [2], "split": ["train"]})],
                        ignore_index=True)
    settings = frame_settings(size=64)
    for _ in range(2):  # a second export replaces the first cleanly
        report = export_otx(pd.concat([clips, bad]), samples, tmp_path, settings=settings, progress=False)
    assert list(report["status"]) == ["written", "failed"] and "nope.mp4" in report["reason"].iloc[1]
    line = (tmp_path / "train.txt").read_text().splitlines()
    assert len(line) == 1
    record = parse_otx_line(line[0])
    n = len(list((tmp_path / record.rel_path).iterdir()))
    assert (record.start, record.end, record.clip_start, record.clip_end, record.fps) == (5, 15, 0, n, 25.0)
    assert cv2.imread(str(tmp_path / record.rel_path / "img_00001.jpg")).shape == (64, 64, 3)


@pytest.mark.parametrize("hostile", ["../evil", "a/b", "..", "a..b", ".hidden", "", "/abs", "a b", "x\\y", "é", "a\n"])
def test_hostile_sample_id_rejected_before_writing(store: FrameStore, hostile: str, tmp_path: Path) -> None:
    samples = pd.DataFrame({"sample_id": [store.sample_ids[0], hostile], "label": [1, 2], "split": ["train", "train"]})
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unsafe sample_id"):
        export_otx(store, samples, out, progress=False)
    assert not out.exists()


def test_other_input_errors(store: FrameStore, tmp_path: Path) -> None:
    sid = store.sample_ids[0]
    with pytest.raises(ValueError, match="unsafe split"):
        export_otx(store, pd.DataFrame({"sample_id": [sid], "label": [1], "split": ["../x"]}), tmp_path, progress=False)
    with pytest.raises(ValueError, match="duplicate"):
        export_otx(store, pd.DataFrame({"sample_id": [sid, sid], "label": [1, 1], "split": ["a", "a"]}), tmp_path,
                   progress=False)
    with pytest.raises(ValueError, match="integer label"):
        export_otx(store, pd.DataFrame({"sample_id": [sid], "label": [None], "split": ["a"]}), tmp_path,
                   progress=False)
    with pytest.raises(KeyError, match="label"):
        export_otx(store, pd.DataFrame({"sample_id": [sid], "split": ["a"]}), tmp_path, progress=False)
    assert not list(tmp_path.iterdir())
    assert check_safe_id("wlasl-00618") == "wlasl-00618" and check_safe_id("msasl-0123abcd.v2") == "msasl-0123abcd.v2"
    with pytest.raises(ValueError):
        check_safe_id(12)  # type: ignore[arg-type]


def test_sign_range() -> None:
    assert sign_range(40, 25.0, None, None) == (0, 40)
    assert sign_range(40, 25.0, 0.2, 0.6) == (5, 15)
    assert sign_range(40, 25.0, -1.0, 99.0) == (0, 40)  # clamped to the exported frames
    with pytest.raises(ValueError, match="empty sign range"):
        sign_range(40, 25.0, 0.6, 0.6)
    with pytest.raises(ValueError, match="7 fields"):
        parse_otx_line("rawframes/a 1 0 4")
