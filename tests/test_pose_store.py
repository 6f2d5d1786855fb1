"""Pose shard storage and packing (synthetic keypoints; no mediapipe)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import pose_settings
from sldata.pose.skeleton import Skeleton
from sldata.pose.store import (KEYPOINT_COLUMNS, ClipPose, convert_pose_shard, load_packed, pack_pose_arrays,
                               read_pose_settings, read_pose_shard, read_skeleton, shard_storage, table_keypoints,
                               write_pose_shard)

SKELETON = Skeleton(face="subset", estimator="mediapipe-holistic", estimator_version="test model_complexity=1")
SETTINGS = {"face": "subset", "model_complexity": 1}


def fake_keypoints(frames: int, seed: int, skeleton: Skeleton = SKELETON) -> np.ndarray:
    """Random keypoints with the missing-point convention: the left hand absent in odd frames."""
    rng = np.random.default_rng(seed)
    kp = rng.random((frames, skeleton.num_points, 4), dtype=np.float32)
    left = skeleton.part_slice("left_hand")
    kp[1::2, left, :3] = np.nan
    kp[1::2, left, 3] = 0.0
    return kp


def ok_record(sample_id: str, frames: int, seed: int, skeleton: Skeleton = SKELETON) -> ClipPose:
    kp = fake_keypoints(frames, seed, skeleton)
    return ClipPose(sample_id, "ok", num_frames=frames, fps=25.0, width=256, height=256, frames_with_body=frames,
                    frames_with_left_hand=(frames + 1) // 2, frames_with_right_hand=frames, keypoints=kp)


def records() -> list[ClipPose]:
    no_person = np.full((4, SKELETON.num_points, 4), np.nan, dtype=np.float32)
    no_person[..., 3] = 0.0
    return [
        ok_record("wlasl-00002", 5, 1),
        ok_record("wlasl-00001", 3, 2),
        ClipPose("wlasl-00003", "failed", "undecodable", "cannot open x.mp4"),
        ClipPose("wlasl-00004", "no_person", None, "no body detected in any of 4 frames", num_frames=4, fps=25.0,
                 width=64, height=64, keypoints=no_person),
        ClipPose("wlasl-00005", "skipped_unusable_clip", "unusable_clip", "clip status 'failed'"),
    ]


def test_shard_round_trip(tmp_path: Path) -> None:
    recs = records()
    path = write_pose_shard(recs, tmp_path / "shard.parquet", SKELETON, SETTINGS)
    clips, kps, skeleton = read_pose_shard(path)
    assert skeleton == SKELETON == read_skeleton(path)
    assert read_pose_settings(path) == SETTINGS
    assert list(clips["sample_id"]) == [r.sample_id for r in recs]
    assert "keypoints" not in clips.columns
    assert set(kps) == {"wlasl-00001", "wlasl-00002", "wlasl-00004"}  # failed/skipped have none
    for rec in recs:
        if rec.keypoints is not None:
            assert kps[rec.sample_id].dtype == np.float32
            np.testing.assert_array_equal(kps[rec.sample_id], rec.keypoints)  # NaNs compare equal here
    failed = clips.set_index("sample_id").loc["wlasl-00003"]
    assert failed["reason"] == "undecodable" and pd.isna(failed["width"]) and failed["num_frames"] == 0
    assert clips["num_frames"].dtype == "Int32"


def test_shard_schema_and_plain_pandas_read(tmp_path: Path) -> None:
    """A shard is readable with pyarrow/pandas alone: the layout is self-described."""
    path = write_pose_shard(records(), tmp_path / "shard.parquet", SKELETON, SETTINGS)
    meta = pq.ParquetFile(path).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    schema = pq.read_schema(path)
    kp_type = schema.field("keypoints").type
    assert pa.types.is_list(kp_type) and pa.types.is_fixed_size_list(kp_type.value_type)
    assert kp_type.value_type.list_size == SKELETON.num_points * 4 and kp_type.value_type.value_type == pa.float32()
    for name, typ in [("sample_id", "string"), ("num_frames", "int32"), ("fps", "float"), ("width", "int32"),
                      ("frames_with_body", "int32"), ("frames_with_left_hand", "int32"),
                      ("frames_with_right_hand", "int32"), ("reason", "string"), ("detail", "string")]:
        assert str(schema.field(name).type) == typ, name
    stored = json.loads(schema.metadata[b"sldata.skeleton"])
    points = sum(len(v) for v in stored["parts"].values())

    df = pd.read_parquet(path)
    row = df.set_index("sample_id").loc["wlasl-00002"]
    kp = np.stack(row["keypoints"]).reshape(row["num_frames"], points, 4)
    np.testing.assert_array_equal(kp, records()[0].keypoints)
    assert df.set_index("sample_id").loc["wlasl-00003", "keypoints"] is None


def test_shard_bytes_are_deterministic(tmp_path: Path) -> None:
    a = write_pose_shard(records(), tmp_path / "a.parquet", SKELETON, SETTINGS)
    b = write_pose_shard(records(), tmp_path / "b.parquet", SKELETON, SETTINGS)
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_shard_rejects_bad_records(tmp_path: Path) -> None:
    bad = ok_record("wlasl-00009", 3, 0)
    bad.keypoints = bad.keypoints[:, :10]
    with pytest.raises(ValueError, match="wlasl-00009.*shape"):
        write_pose_shard([bad], tmp_path / "x.parquet", SKELETON, SETTINGS)
    short = ok_record("wlasl-00008", 3, 0)
    short.num_frames = 4
    with pytest.raises(ValueError, match="wlasl-00008.*num_frames=4"):
        write_pose_shard([short], tmp_path / "x.parquet", SKELETON, SETTINGS)
    with pytest.raises(ValueError, match="duplicate sample_id 'wlasl-00001'"):
        write_pose_shard([ok_record("wlasl-00001", 2, 0), ok_record("wlasl-00001", 2, 1)], tmp_path / "x.parquet",
                         SKELETON, SETTINGS)
    assert not (tmp_path / "x.parquet").exists()
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="plain.parquet is not a pose shard"):
        read_skeleton(tmp_path / "plain.parquet")


def samples_table() -> pd.DataFrame:
    return pd.DataFrame({
        "sample_id": ["wlasl-00001", "wlasl-00002", "wlasl-00003", "wlasl-00004", "wlasl-00010", "wlasl-00011",
                      "wlasl-00099"],
        "label": [0, 1, 2, 3, 0, 1, 5],
        "split": ["val", "train", "train", "train", "train", "test", "val"],
        "gloss": ["a", "b", "c", "d", "a", "b", "f"],
        "signer_id": [1, 2, 3, 4, 5, 6, 7],
    })


def test_pack_pose_arrays(tmp_path: Path) -> None:
    first = write_pose_shard(records(), tmp_path / "s0.parquet", SKELETON, SETTINGS)
    extra = [ok_record("wlasl-00011", 2, 3), ok_record("wlasl-00010", 7, 4), ok_record("wlasl-00050", 6, 5)]
    second = write_pose_shard(extra, tmp_path / "s1.parquet", SKELETON, SETTINGS)
    every = {r.sample_id: r.keypoints for r in records() + extra if r.keypoints is not None}

    summary = pack_pose_arrays([first, second], samples_table(), tmp_path / "pack")
    # 00003 failed, 00004 no_person, 00099 in no shard, 00050 not in samples, 00005 not in samples.
    assert summary == {"clips": 4, "frames": 17, "points": SKELETON.num_points,
                       "not_ok": {"failed": 1, "no_person": 1}, "missing": 1}
    keypoints, index, meta = load_packed(tmp_path / "pack")
    assert keypoints.dtype == np.float32 and keypoints.shape == (17, SKELETON.num_points, 4)
    # Sorted by split then sample_id: test, train, train, val.
    assert list(index["sample_id"]) == ["wlasl-00011", "wlasl-00002", "wlasl-00010", "wlasl-00001"]
    assert list(index["length"]) == [2, 5, 7, 3]
    assert list(index["offset"]) == [0, 2, 7, 14]
    assert list(index.columns) == ["sample_id", "label", "split", "gloss", "signer_id", "width", "height", "fps",
                                   "offset", "length"]
    assert list(index["label"]) == [1, 1, 0, 0] and list(index["signer_id"]) == [6, 2, 5, 1]
    for sid, off, n in zip(index["sample_id"], index["offset"], index["length"]):
        np.testing.assert_array_equal(keypoints[off:off + n], every[sid])
    assert meta["parts"] == ["body", "left_hand", "right_hand", "face"]
    assert meta["point_names"] == list(SKELETON.point_names)
    assert Skeleton.from_dict(meta["skeleton"]) == SKELETON

    again = pack_pose_arrays([second, first], samples_table(), tmp_path / "pack2")
    assert again == summary
    for name in ("keypoints.npy", "index.parquet", "skeleton.json"):
        assert (tmp_path / "pack" / name).read_bytes() == (tmp_path / "pack2" / name).read_bytes(), name


def test_pack_selected_parts(tmp_path: Path) -> None:
    shard = write_pose_shard(records(), tmp_path / "s0.parquet", SKELETON, SETTINGS)
    pack_pose_arrays([shard], samples_table(), tmp_path / "pack", parts=("right_hand", "body"))
    keypoints, index, meta = load_packed(tmp_path / "pack")
    assert meta["parts"] == ["body", "right_hand"]  # skeleton order, whatever the order asked
    assert keypoints.shape == (8, 33 + 21, 4)
    assert meta["point_names"][33] == "right_hand.wrist"
    src = records()[0].keypoints  # wlasl-00002, train, comes first
    assert index["sample_id"].iloc[0] == "wlasl-00002"
    np.testing.assert_array_equal(keypoints[:5, :33], src[:, :33])
    np.testing.assert_array_equal(keypoints[:5, 33:], src[:, SKELETON.part_slice("right_hand")])


def test_pack_errors(tmp_path: Path) -> None:
    shard = write_pose_shard(records(), tmp_path / "s0.parquet", SKELETON, SETTINGS)
    with pytest.raises(ValueError, match="parts \\['hands'\\] are not in"):
        pack_pose_arrays([shard], samples_table(), tmp_path / "p", parts=("hands",))
    no_face = Skeleton(face="none", estimator_version="test model_complexity=1")
    other = write_pose_shard([ok_record("wlasl-00010", 2, 0, no_face)], tmp_path / "s1.parquet", no_face, SETTINGS)
    with pytest.raises(ValueError, match="s1.parquet has skeleton"):
        pack_pose_arrays([shard, other], samples_table(), tmp_path / "p")
    with pytest.raises(ValueError, match="two shards"):
        pack_pose_arrays([shard, shard], samples_table(), tmp_path / "p")
    with pytest.raises(ValueError, match="nothing to pack"):
        pack_pose_arrays([shard], samples_table().iloc[2:4], tmp_path / "p")
    with pytest.raises(ValueError, match="lacks column"):
        pack_pose_arrays([shard], samples_table().drop(columns="gloss"), tmp_path / "p")
    pack_pose_arrays([shard], samples_table(), tmp_path / "p")
    (tmp_path / "p" / "skeleton.json").unlink()  # as after a run killed before its last write
    with pytest.raises(FileNotFoundError, match="not a finished pose pack"):
        load_packed(tmp_path / "p")


# --------------------------------------------------------------------------- compact storage

STEP = 2.0 ** -14  # the compact layout's documented scale


def wide_records() -> list[ClipPose]:
    """records() with values outside the frame, as MediaPipe reports off-screen body points."""
    recs = records()
    kp = recs[0].keypoints
    kp[:, 25:33, 1] += 1.2  # knees, ankles, feet below the frame (y up to ~2.2)
    kp[:, :, 2] = kp[:, :, 2] * 4.0 - 2.3  # body z in [-2.3, 1.7]
    return recs


def test_compact_round_trip_precision_and_metadata(tmp_path: Path) -> None:
    recs = wide_records()
    path = write_pose_shard(recs, tmp_path / "c.parquet", SKELETON, SETTINGS, storage="compact")
    ref = write_pose_shard(recs, tmp_path / "f.parquet", SKELETON, SETTINGS)
    assert shard_storage(path) == "compact" and shard_storage(ref) == "float32"
    clips, kps, skeleton = read_pose_shard(path)
    ref_clips, _, _ = read_pose_shard(ref)
    assert skeleton == SKELETON == read_skeleton(path)
    assert read_pose_settings(path) == SETTINGS
    pd.testing.assert_frame_equal(clips, ref_clips)  # scalar columns unchanged, no keypoint column
    assert set(kps) == {"wlasl-00001", "wlasl-00002", "wlasl-00004"}
    for rec in recs:
        if rec.keypoints is None:
            continue
        got, want = kps[rec.sample_id], rec.keypoints
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))  # missing points stay missing
        assert np.nanmax(np.abs(got - want), initial=0.0) <= STEP / 2  # 3.05e-5 of the frame: 0.0078 px at 256 px
        np.testing.assert_array_equal(got[..., 3][np.isnan(want[..., 0])], 0.0)  # confidence 0 where missing
        finite = got[~np.isnan(got)].astype(np.float64)
        np.testing.assert_array_equal(finite / STEP, np.round(finite / STEP))  # exactly q * 2^-14
    assert path.stat().st_size < ref.stat().st_size


def test_compact_readable_with_plain_pyarrow_and_pandas(tmp_path: Path) -> None:
    """The documented recipe: value = q * scale, scale in the schema metadata; nulls are missing points."""
    recs = wide_records()
    path = write_pose_shard(recs, tmp_path / "c.parquet", SKELETON, SETTINGS, storage="compact")
    meta = pq.ParquetFile(path).metadata
    names = [meta.row_group(0).column(i).path_in_schema for i in range(meta.num_columns)]
    enc = {n: meta.row_group(0).column(i).encodings for i, n in enumerate(names)}
    assert "BYTE_STREAM_SPLIT" in enc["x_q.list.element.list.element"]
    assert all(meta.row_group(0).column(i).compression == "ZSTD" for i in range(meta.num_columns))

    t = pq.read_table(path)
    storage = json.loads(t.schema.metadata[b"sldata.keypoint_storage"])
    assert storage["storage"] == "compact" and storage["scale"] == STEP
    assert storage["columns"] == ["x_q", "y_q", "z_q", "confidence_q"]
    parts = json.loads(t.schema.metadata[b"sldata.skeleton"])["parts"]
    points = sum(len(v) for v in parts.values())
    assert "keypoints" not in t.column_names
    assert str(t.schema.field("x_q").type) == f"list<element: fixed_size_list<element: int32>[{points}]>"
    want = recs[0].keypoints  # wlasl-00002, first row
    for i, name in enumerate(storage["columns"]):
        q = t[name][0].values.flatten().to_numpy(zero_copy_only=False)  # float64, NaN where null
        got = (q * storage["scale"]).reshape(-1, points)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want[..., i]))
        assert np.nanmax(np.abs(got - want[..., i])) <= STEP / 2

    df = pd.read_parquet(path).set_index("sample_id")
    x = np.stack(df.loc["wlasl-00002", "x_q"]) * storage["scale"]  # [frames, points]
    assert x.shape == (5, points) and np.nanmax(np.abs(x - want[..., 0])) <= STEP / 2
    assert np.isnan(x[1::2, SKELETON.part_slice("left_hand")]).all()  # the absent hand
    assert df.loc["wlasl-00003", "x_q"] is None  # failed clip: no keypoints
    assert df.loc["wlasl-00004", "num_frames"] == 4 and np.isnan(np.stack(df.loc["wlasl-00004", "y_q"])).all()


def test_compact_bytes_deterministic_and_conversions(tmp_path: Path) -> None:
    recs = wide_records()
    a = write_pose_shard(recs, tmp_path / "a.parquet", SKELETON, SETTINGS, storage="compact")
    b = write_pose_shard(recs, tmp_path / "b.parquet", SKELETON, SETTINGS, storage="compact")
    assert a.read_bytes() == b.read_bytes()
    f32 = write_pose_shard(recs, tmp_path / "f.parquet", SKELETON, SETTINGS)
    info = convert_pose_shard(f32, tmp_path / "conv.parquet", "compact")
    assert info["from"] == "float32" and info["to"] == "compact" and info["clips"] == len(recs)
    assert (tmp_path / "conv.parquet").read_bytes() == a.read_bytes()  # converting = writing compact
    f32_copy = (tmp_path / "f_copy.parquet")
    f32_copy.write_bytes(f32.read_bytes())
    convert_pose_shard(f32_copy, f32_copy, "float32")  # same storage, in place: bytes kept
    assert f32_copy.read_bytes() == f32.read_bytes()

    back = convert_pose_shard(a, tmp_path / "back.parquet", "float32")
    assert back["from"] == "compact" and shard_storage(tmp_path / "back.parquet") == "float32"
    _, decoded, _ = read_pose_shard(a)
    rounded = [ClipPose(**{**r.__dict__, "keypoints": None if r.keypoints is None else decoded[r.sample_id]})
               for r in recs]
    again = write_pose_shard(rounded, tmp_path / "rounded.parquet", SKELETON, SETTINGS)
    assert (tmp_path / "back.parquet").read_bytes() == again.read_bytes()
    assert read_schema_metadata(tmp_path / "back.parquet") == read_schema_metadata(f32)


def read_schema_metadata(path: Path) -> dict[bytes, bytes]:
    return dict(pq.read_schema(path).metadata)


def test_compact_rejects_values_it_cannot_store(tmp_path: Path) -> None:
    for bad in (2048.0, np.inf):
        rec = ok_record("wlasl-00007", 3, 0)
        rec.keypoints[2, 5, 1] = bad
        with pytest.raises(ValueError, match="wlasl-00007.*cannot be stored compact"):
            write_pose_shard([ok_record("wlasl-00006", 2, 1), rec], tmp_path / "x.parquet", SKELETON, SETTINGS,
                             storage="compact")
    assert not (tmp_path / "x.parquet").exists()
    with pytest.raises(ValueError, match="keypoint storage must be one of"):
        write_pose_shard(records(), tmp_path / "x.parquet", SKELETON, SETTINGS, storage="float16")


def test_table_keypoints_on_partial_reads(tmp_path: Path) -> None:
    """render-pose and packing read some rows or columns only; both layouts decode from those."""
    for storage in ("float32", "compact"):
        path = write_pose_shard(records(), tmp_path / f"{storage}.parquet", SKELETON, SETTINGS, storage=storage)
        one = pq.read_table(path, filters=[("sample_id", "=", "wlasl-00001")])
        (kp,) = table_keypoints(one, SKELETON.num_points)
        assert kp.shape == (3, SKELETON.num_points, 4)
        assert np.nanmax(np.abs(kp - records()[1].keypoints)) <= (STEP / 2 if storage == "compact" else 0.0)
        cols = pq.read_table(path, columns=["sample_id", *KEYPOINT_COLUMNS[storage]])
        kps = table_keypoints(cols, SKELETON.num_points)
        assert [k is None for k in kps] == [False, False, True, False, True]


def test_pack_from_compact_and_mixed_shards(tmp_path: Path) -> None:
    first = write_pose_shard(records(), tmp_path / "s0.parquet", SKELETON, SETTINGS, storage="compact")
    extra = [ok_record("wlasl-00011", 2, 3), ok_record("wlasl-00010", 7, 4), ok_record("wlasl-00050", 6, 5)]
    second = write_pose_shard(extra, tmp_path / "s1.parquet", SKELETON, SETTINGS)  # float32
    summary = pack_pose_arrays([first, second], samples_table(), tmp_path / "pack")
    assert summary == {"clips": 4, "frames": 17, "points": SKELETON.num_points,
                       "not_ok": {"failed": 1, "no_person": 1}, "missing": 1}
    keypoints, index, meta = load_packed(tmp_path / "pack")
    assert keypoints.dtype == np.float32 and meta["dtype"] == "float32"
    _, decoded, _ = read_pose_shard(first)
    every = {**decoded, **{r.sample_id: r.keypoints for r in extra}}
    originals = {r.sample_id: r.keypoints for r in records() + extra if r.keypoints is not None}
    for sid, off, n in zip(index["sample_id"], index["offset"], index["length"]):
        np.testing.assert_array_equal(keypoints[off:off + n], every[sid])  # the decoded values, exactly
        assert np.nanmax(np.abs(keypoints[off:off + n] - originals[sid])) <= STEP / 2

    f32 = write_pose_shard(records(), tmp_path / "f0.parquet", SKELETON, SETTINGS)
    pack_pose_arrays([f32, second], samples_table(), tmp_path / "pack_f32")
    _, index_f32, meta_f32 = load_packed(tmp_path / "pack_f32")
    pd.testing.assert_frame_equal(index, index_f32)
    assert meta == meta_f32


def test_convert_pose_cli_and_settings(tmp_path: Path) -> None:
    from sldata.cli import main

    src = tmp_path / "pose"
    src.mkdir()
    write_pose_shard(records(), src / "shard-000.parquet", SKELETON, SETTINGS)
    write_pose_shard(records()[:2], src / "shard-001.parquet", SKELETON, SETTINGS)
    assert main(["convert-pose", "--storage", "compact", str(src), str(tmp_path / "out")]) == 0
    assert [shard_storage(p) for p in sorted((tmp_path / "out").glob("*.parquet"))] == ["compact", "compact"]
    assert main(["convert-pose", "--storage", "float32", str(tmp_path / "out" / "shard-001.parquet"),
                 str(tmp_path / "one.parquet")]) == 0
    assert shard_storage(tmp_path / "one.parquet") == "float32"

    assert pose_settings(storage="compact", frame_step=1).output_dict() == pose_settings(frame_step=1).output_dict()  # not keypoint metadata
    with pytest.raises(ValueError, match="keypoint storage"):
        pose_settings(storage="int8", frame_step=1)
