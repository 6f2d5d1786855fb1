"""Frame extraction into shards (sldata.frames): real WLASL100 clips and synthetic videos made here."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import default_params, frame_settings
from sldata.acquire.trim import resample_indices
from sldata.frames import (
    ClipDecodeError,
    FrameSettings,
    FrameStore,
    _NpyAppender,
    decode_clip,
    extract_frames_shard,
    fit_square,
)

N_REAL = 4


# --------------------------------------------------------------------------- helpers


def make_video(path: Path, levels: list[int], *, times_ms: list[int] | None = None, size: tuple[int, int] = (64, 64),
               codec: str = "libx264", rate: int = 30) -> Path:
    """A video whose frame ``i`` is a flat grey of ``levels[i]`` (lossless x264), at ``times_ms`` or ``i / rate``."""
    if times_ms is None:  # exact times i / rate: time base 1 / rate
        tb, pts = Fraction(1, rate), list(range(len(levels)))
    else:
        tb, pts = Fraction(1, 1000), times_ms
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = tb
        stream.time_base = tb
        if codec == "libx264":
            stream.options = {"qp": "0"}
        for level, t in zip(levels, pts):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), level, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


LEVELS = [8 * i + 4 for i in range(30)]  # frame i is grey 8i+4: identifiable after YUV round trips


def frame_ids(frames: np.ndarray) -> list[int]:
    """Which synthetic frame each stored frame is (nearest grey level)."""
    means = frames.reshape(len(frames), -1).mean(axis=1)
    return [int(np.argmin([abs(m - lv) for lv in LEVELS])) for m in means]


def decoded_times(path: Path) -> tuple[list[float], float]:
    """Frame times and the last frame's duration, by a plain PyAV loop (independent of sldata)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        frames = list(container.decode(stream))
        times = [float((f.pts - origin) * stream.time_base) for f in frames]
        return times, float(frames[-1].duration * stream.time_base)


@pytest.fixture(scope="module")
def real_clips(shared: Path) -> pd.DataFrame:
    paths = sorted((shared / "wlasl100_clips" / "videos").glob("*.mp4"))[:N_REAL]
    assert len(paths) == N_REAL
    return pd.DataFrame({"sample_id": [f"wlasl-{p.stem}" for p in paths], "clip_path": [str(p) for p in paths],
                         "status": "ok"})


@pytest.fixture(scope="module")
def shards(real_clips: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """The real clips extracted once per storage."""
    out = {}
    for storage in ("npy", "jpeg_parquet"):
        folder = tmp_path_factory.mktemp(storage)
        out[storage] = (folder, extract_frames_shard(real_clips, folder, frame_settings(storage=storage), progress=False))
    return out


# --------------------------------------------------------------------------- settings


def test_settings_from_dict_and_validation() -> None:
    base = {k: v for k, v in default_params()["frames"].items() if k != "workers"}
    s = FrameSettings.from_dict({**base, "target_fps": 12.5, "size": 96, "storage": "jpeg_parquet", "jpeg_quality": 80})
    assert (s.target_fps, s.size, s.storage, s.jpeg_quality) == (12.5, 96, "jpeg_parquet", 80)
    with pytest.raises(ValueError, match="unknown frames setting"):
        FrameSettings.from_dict({**base, "sizes": 3})
    with pytest.raises(ValueError, match="missing frames setting.*: resize"):  # no defaults of its own
        FrameSettings.from_dict({k: v for k, v in base.items() if k != "resize"})
    for bad in ({"target_fps": 0}, {"target_fps": float("nan")}, {"target_fps": True}, {"target_fps": "25"}, {"size": 0}, {"size": 1.5},
                {"storage": "png"}, {"jpeg_quality": 101}, {"resize": "pil"}):
        with pytest.raises(ValueError):
            FrameSettings.from_dict({**base, **bad})


# --------------------------------------------------------------------------- real clips


def test_real_clip_counts_all_frames_and_half_rate(real_clips: pd.DataFrame) -> None:
    for path in real_clips["clip_path"]:
        times, last_duration = decoded_times(Path(path))
        full = decode_clip(path, frame_settings())
        assert full.frames.shape == (len(times), 112, 112, 3) and full.frames.dtype == np.uint8
        assert full.fps == 25.0 and full.n_decoded == len(times) and full.n_undecodable == 0
        half = decode_clip(path, frame_settings(target_fps=12.5))
        expected = resample_indices(times, 12.5, times[-1] + last_duration)
        assert len(half.frames) == len(expected) == math.ceil(len(times) / 2), path
        assert list(expected) == list(range(0, len(times), 2))
        np.testing.assert_array_equal(half.frames, full.frames[expected])
        assert half.fps == 12.5


def test_shard_index_and_npy_reader(shards: dict, real_clips: pd.DataFrame) -> None:
    folder, summary = shards["npy"]
    assert summary["n_ok"] == N_REAL and summary["n_failed"] == 0
    index = pq.read_table(folder / "index.parquet").to_pandas()
    assert list(index["sample_id"]) == list(real_clips["sample_id"])
    assert (index["status"] == "ok").all() and (index["src_width"] == 256).all()
    assert list(index["offset"]) == [0, *np.cumsum(index["length"])[:-1]]
    frames = np.load(folder / "frames.npy", mmap_mode="r")
    assert frames.shape == (index["length"].sum(), 112, 112, 3) and summary["n_frames"] == frames.shape[0]
    assert summary["bytes_per_frame"] == pytest.approx(112 * 112 * 3, rel=0.01)
    store = FrameStore(folder)
    assert len(store) == N_REAL and store.storage == "npy"
    for sample_id, path in zip(real_clips["sample_id"], real_clips["clip_path"]):
        np.testing.assert_array_equal(store.clip(sample_id), decode_clip(path, frame_settings()).frames)  # npy is exact
    with pytest.raises(KeyError, match="nope"):
        store.clip("nope")
    assert not list(folder.glob("*.tmp"))  # no temporary file left behind
    serial = extract_frames_shard(real_clips, folder / "serial", frame_settings(), progress=False, workers=1)
    np.testing.assert_array_equal(np.load(serial["frames_path"]), frames)  # threads change nothing


def test_jpeg_parquet_agrees_with_npy(shards: dict) -> None:
    npy, jpg = FrameStore(shards["npy"][0]), FrameStore(shards["jpeg_parquet"][0])
    assert jpg.storage == "jpeg_parquet" and len(jpg) == len(npy) == N_REAL
    table = pq.read_table(shards["jpeg_parquet"][0] / "frames.parquet")
    assert table.column_names == ["sample_id", "fps", "frames"] and table.num_rows == N_REAL
    for sample_id in reversed(npy.sample_ids):  # out of order: exercises the row-group lookup
        a, b = npy.clip(sample_id), jpg.clip(sample_id)
        assert a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3.0  # JPEG q90 is close, not exact
        assert jpg.fps(sample_id) == npy.fps(sample_id) == 25.0
    assert shards["jpeg_parquet"][1]["bytes_per_frame"] < shards["npy"][1]["bytes_per_frame"] / 4


# --------------------------------------------------------------------------- synthetic videos


def test_frame_order_and_sampling_pick_the_right_frames(tmp_path: Path) -> None:
    video = make_video(tmp_path / "cfr.mp4", LEVELS)  # 30 frames at 30 fps, frame i at i/30 s
    assert frame_ids(decode_clip(video, frame_settings(size=16)).frames) == list(range(30))
    # 12 fps grid j/12 s: nearest of i/30 is 2.5 j, ties (half frames) go to the earlier frame.
    assert frame_ids(decode_clip(video, frame_settings(size=16, target_fps=12)).frames) == \
        [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27]
    assert frame_ids(decode_clip(video, frame_settings(size=16, target_fps=10)).frames) == list(range(0, 30, 3))
    # Upsampling repeats frames: grid j/60 s, frame j/2 (ties to the earlier one).
    assert frame_ids(decode_clip(video, frame_settings(size=16, target_fps=60)).frames) == \
        [j // 2 for j in range(60)]


def test_variable_frame_rate_uses_timestamps(tmp_path: Path) -> None:
    video = make_video(tmp_path / "vfr.mp4", LEVELS[:7], times_ms=[0, 40, 50, 130, 200, 210, 300])
    clip = decode_clip(video, frame_settings(size=16, target_fps=10))
    assert clip.times == pytest.approx([0, 0.04, 0.05, 0.13, 0.2, 0.21, 0.3])
    # grid 0, .1, .2, .3 s -> frames at 0 (0), .13 (3; .05 is farther), .2 (4), .3 (6)
    assert frame_ids(clip.frames)[:4] == [0, 3, 4, 6]


def test_non_square_is_letterboxed(tmp_path: Path) -> None:
    video = make_video(tmp_path / "wide.mp4", [200] * 3, size=(64, 32))
    for resize in ("swscale", "opencv"):
        frames = decode_clip(video, frame_settings(size=16, resize=resize)).frames
        assert frames.shape == (3, 16, 16, 3)
        assert frames[:, :4].max() == 0 and frames[:, 12:].max() == 0  # black bars top and bottom
        assert abs(int(frames[:, 4:12].mean()) - 200) <= 3
    image = np.full((20, 10, 3), 100, np.uint8)  # tall: bars left and right
    boxed = fit_square(image, 10)
    assert boxed[:, :2].max() == 0 and boxed[:, 7:].max() == 0 and (boxed[:, 2:7] == 100).all()


def test_resizers_agree(real_clips: pd.DataFrame) -> None:
    path = real_clips["clip_path"].iloc[0]
    a = decode_clip(path, frame_settings(resize="swscale")).frames
    b = decode_clip(path, frame_settings(resize="opencv")).frames
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


def test_bad_clips_fail_alone_and_bad_packets_are_skipped(tmp_path: Path, real_clips: pd.DataFrame) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    # A video with three packets overwritten by noise: those are skipped and counted.
    damaged = make_video(tmp_path / "damaged.mp4", LEVELS[:20], codec="mpeg4", rate=25)
    with av.open(str(damaged)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(damaged.read_bytes())
    rng = np.random.default_rng(1)
    for pos, size in packets[5:8]:
        data[pos:pos + size] = rng.bytes(size)
    damaged.write_bytes(bytes(data))

    clips = pd.concat([real_clips.iloc[:1], pd.DataFrame({
        "sample_id": ["garbage", "missing", "empty", "damaged", "not-ok"],
        "clip_path": [str(garbage), str(tmp_path / "nope.mp4"), str(empty), str(damaged), str(garbage)],
        # "usable" is what the acquire stage writes; "ok" is accepted too; anything else is skipped.
        "status": ["ok", "ok", "usable", "usable", "failed"]})], ignore_index=True)
    for storage in ("npy", "jpeg_parquet"):
        out = tmp_path / storage
        summary = extract_frames_shard(clips, out, frame_settings(size=16, storage=storage), progress=False)
        assert (summary["n_ok"], summary["n_failed"], summary["n_skipped"]) == (2, 3, 1)
        index = pq.read_table(out / "index.parquet").to_pandas().set_index("sample_id")
        for sample_id, path in (("garbage", garbage), ("missing", tmp_path / "nope.mp4"), ("empty", empty)):
            assert index.loc[sample_id, "status"] == "failed" and index.loc[sample_id, "length"] == 0
            assert str(path) in index.loc[sample_id, "reason"]  # the reason names the file
        assert index.loc["not-ok", "status"] == "skipped"
        row = index.loc["damaged"]
        assert row["status"] == "ok" and row["n_undecodable"] >= 1 and "undecodable" in row["reason"]
        assert row["n_decoded"] + row["n_undecodable"] <= 20 and row["length"] == row["n_decoded"]
        store = FrameStore(out)
        assert len(store) == 2 and "garbage" not in store
        assert frame_ids(store.clip("damaged"))[:5] == [0, 1, 2, 3, 4]
    with pytest.raises(ClipDecodeError, match="garbage.mp4"):
        decode_clip(garbage, frame_settings())


def test_duplicate_ids_and_missing_columns_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate sample_id"):
        extract_frames_shard(pd.DataFrame({"sample_id": ["a", "a"], "clip_path": ["x", "y"], "status": "ok"}),
                             tmp_path, frame_settings(), progress=False)
    with pytest.raises(KeyError, match="status"):
        extract_frames_shard(pd.DataFrame({"sample_id": ["a"], "clip_path": ["x"]}), tmp_path, frame_settings(),
                             progress=False)


def test_npy_appender_fixes_the_header_at_close(tmp_path: Path) -> None:
    path = tmp_path / "g.npy"
    writer = _NpyAppender(path, (4, 4, 3))
    chunks = [np.full((k, 4, 4, 3), k, np.uint8) for k in (1, 3, 5)]
    offsets = [writer.append(c) for c in chunks]
    with pytest.raises(ValueError, match="shape"):
        writer.append(np.zeros((1, 5, 5, 3), np.uint8))
    writer.close()
    arr = np.load(path)
    assert offsets == [0, 1, 4] and arr.shape == (9, 4, 4, 3)
    np.testing.assert_array_equal(arr, np.concatenate(chunks))
    assert path.stat().st_size == writer.header_len + 9 * 48
    big = writer._header(10**15)  # the data offset never moves, however many frames
    assert len(big) == writer.header_len


def test_empty_input_and_storage_switch(tmp_path: Path) -> None:
    empty = pd.DataFrame({"sample_id": [], "clip_path": [], "status": []})
    summary = extract_frames_shard(empty, tmp_path, frame_settings(storage="npy"), progress=False)
    assert summary["n_frames"] == 0 and len(FrameStore(tmp_path)) == 0
    extract_frames_shard(empty, tmp_path, frame_settings(storage="jpeg_parquet"), progress=False)
    assert not (tmp_path / "frames.npy").exists()  # the other storage's file is removed
    assert FrameStore(tmp_path).storage == "jpeg_parquet"
    with pytest.raises(FileNotFoundError, match="index.parquet"):
        FrameStore(tmp_path / "nothing")
