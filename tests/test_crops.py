"""Crop arithmetic and MS-ASL-style cleaning: worked examples, real annotations, properties."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_data_dir
from sldata.acquire.crops import (
    Clamped,
    CropReason,
    CropSettings,
    clamp_crop,
    clean_crops,
    enhance_limits,
    enhance_temporal_limits,
    frames_to_seconds,
    length_stats,
    seconds_to_frame_index,
    to_video_timeline,
    trim_interval_overlaps,
    trim_overlaps,
    wlasl_frames_to_seconds,
)

SHARED = shared_data_dir()

FPS = st.sampled_from([24000 / 1001, 24.0, 25.0, 30000 / 1001, 29.97, 30.0, 30.35, 50.0, 60000 / 1001])


def frame(**kw: object) -> pd.DataFrame:
    base = {"sample_id": "s0", "source_key": "v0", "start_s": 0.0, "end_s": 1.0, "start_frame": 0,
            "end_frame": 25, "annotated_fps": 25.0, "duration_s": 10.0, "video_fps": 30.0}
    base.update(kw)
    return pd.DataFrame([base])


# ----------------------------------------------------------------------------- conversion


def test_wlasl_frames_to_seconds() -> None:
    assert wlasl_frames_to_seconds(1, 20) == (0.0, 0.8)
    assert wlasl_frames_to_seconds(26, -1) == (1.0, None)


def test_timeline_end_null_becomes_duration_and_frames_at_real_fps() -> None:
    kept, rej = to_video_timeline(frame(end_s=None, end_frame=None, start_s=0.5, duration_s=2.64, video_fps=30.35))
    assert rej.empty
    row = kept.iloc[0]
    assert (row.clip_start_s, row.clip_end_s, bool(row.clip_clamped)) == (0.5, 2.64, False)
    assert row.clip_start_frame == math.ceil(0.5 * 30.35) and row.clip_end_frame == math.ceil(2.64 * 30.35)


def test_timeline_wlasl_frames_at_25fps_clamped_to_real_duration() -> None:
    # WLASL 02238: frames 1..68 at 25 fps = [0, 2.72) s, but the 30.35 fps video lasts 2.64 s.
    df = frame(start_frame=0, end_frame=68, start_s=None, end_s=None, duration_s=2.64)
    kept, rej = to_video_timeline(df, CropSettings(time_source="frames"))
    assert rej.empty and kept.iloc[0].clip_end_s == 2.64 and bool(kept.iloc[0].clip_clamped)


@pytest.mark.parametrize("kw,reason", [
    ({"duration_s": None}, "video_unavailable"),
    ({"start_s": 12.0, "end_s": 13.0}, "crop_outside_video"),
    ({"start_s": 10.0, "end_s": None}, "crop_outside_video"),
    ({"start_s": 2.0, "end_s": 2.0}, "empty_crop"),
    ({"start_s": 3.0, "end_s": 2.0}, "invalid_crop"),
    ({"start_s": -1.0}, "invalid_crop"),
    ({"start_s": float("nan")}, "invalid_crop"),
])
def test_timeline_rejects_with_reason(kw: dict, reason: str) -> None:
    kept, rej = to_video_timeline(frame(**kw))
    assert kept.empty and list(rej.reason) == [reason] and list(rej.sample_id) == ["s0"]


def test_timeline_min_length() -> None:
    kept, rej = to_video_timeline(frame(start_s=9.9, end_s=12.0), CropSettings(min_length_s=0.2))
    assert kept.empty and list(rej.reason) == [CropReason.CROP_TOO_SHORT.value]


def test_settings_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown CropSettings setting.*speedfactor"):
        CropSettings.from_dict({"speedfactor": 1.2})
    assert CropSettings.from_dict({"speed_factor": 1.2}).speed_factor == 1.2
    with pytest.raises(ValueError, match="overlap_policy"):
        CropSettings(overlap_policy="split")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- enhancement


def test_enhance_rule_worked_examples() -> None:
    e = 1.1 * 0.8  # 0.88 s expected sign, 0.8 s preparation
    assert enhance_limits(1.0, 1.5) == (1.0, 1.5)  # shorter than a sign: unchanged
    s, t = enhance_limits(1.0, 2.2)  # 0.88 < 1.2 <= 1.68: centred window of 0.88
    assert (s, t) == pytest.approx((1.6 - e / 2, 1.6 + e / 2))
    # 3.0 s: (3.0 - 0.8) / 0.88 = 2.5 -> 3 repeats -> 4 segments of 0.75 s; sign centred at start + 0.75
    s, t = enhance_limits(10.0, 13.0)
    assert (s, t) == pytest.approx((10.75 - e / 2, 10.75 + e / 2))
    # 1.7 s: (1.7 - 0.8) / 0.88 = 1.02 -> 1 repeat -> 2 segments; centre at start + 0.85
    assert enhance_limits(0.0, 1.7) == pytest.approx((0.85 - e / 2, 0.85 + e / 2))


def test_enhance_dataframe_matches_scalar() -> None:
    starts = np.array([0.0, 1.0, 10.0, 0.0, 5.0])
    ends = np.array([0.5, 2.2, 13.0, 1.7, 12.0])
    df = pd.DataFrame({"clip_start_s": starts, "clip_end_s": ends})
    out = enhance_temporal_limits(df)
    for i in range(len(df)):
        assert (out.clip_start_s[i], out.clip_end_s[i]) == pytest.approx(enhance_limits(starts[i], ends[i]))
    assert list(out.clip_enhanced) == [False, True, True, True, True]


# ----------------------------------------------------------------------------- overlaps


def test_overlap_policies_worked_examples() -> None:
    iv = [(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]
    assert trim_interval_overlaps(iv, "midpoint") == [(0.0, 1.5), (1.5, 3.0), (5.0, 6.0)]
    assert trim_interval_overlaps(iv, "truncate_earlier") == [(0.0, 1.0), (1.0, 3.0), (5.0, 6.0)]
    assert trim_interval_overlaps(iv, "keep") == iv
    # nested: the inner one keeps its second half, the outer loses what follows the cut
    assert trim_interval_overlaps([(0.0, 10.0), (2.0, 4.0)]) == [(0.0, 3.0), (3.0, 4.0)]
    # identical: split in two; input order preserved in the output
    assert trim_interval_overlaps([(1.0, 2.0), (0.0, 0.5), (1.0, 2.0)]) == [(1.0, 1.5), (0.0, 0.5), (1.5, 2.0)]


def test_trim_overlaps_groups_by_source_and_rejects_emptied() -> None:
    df = pd.DataFrame({"sample_id": ["a", "b", "c", "d"], "source_key": ["v", "v", "w", "v"],
                       "clip_start_s": [0.0, 1.0, 0.5, 1.0], "clip_end_s": [2.0, 3.0, 2.5, 1.0 + 1e-9]})
    kept, rej = trim_overlaps(df, CropSettings(overlap_policy="truncate_earlier"))
    got = kept.set_index("sample_id")[["clip_start_s", "clip_end_s"]].to_dict("index")
    assert got["a"] == {"clip_start_s": 0.0, "clip_end_s": 1.0}
    assert got["c"] == {"clip_start_s": 0.5, "clip_end_s": 2.5}  # other video: untouched
    assert list(rej.sample_id) == ["d"] and list(rej.reason) == ["overlap_emptied"]


# ----------------------------------------------------------------------------- whole stage + real data


def test_clean_crops_stats_and_rejects() -> None:
    df = pd.DataFrame({
        "sample_id": list("abcdef"), "source_key": ["v", "v", "v", "w", "x", "y"],
        "start_s": [0.0, 1.0, 1.5, 0.0, 5.0, 0.0], "end_s": [2.0, 3.0, None, 1.0, 6.0, 0.04],
        "start_frame": [0, 25, 37, 0, 125, 0], "end_frame": [50, 75, None, 25, 150, 1],
        "annotated_fps": 25.0, "duration_s": [4.0, 4.0, 4.0, None, 4.5, 3.0], "video_fps": 30.0})
    res = clean_crops(df)
    assert sorted(res.kept.sample_id) == ["a", "b", "c"]
    assert dict(zip(res.rejects.sample_id, res.rejects.reason)) == {
        "d": "video_unavailable", "e": "crop_outside_video", "f": "invalid_crop"}
    # "before" = after timeline conversion (f is refused later, for spanning 1 annotated frame)
    assert res.stats["before"]["count"] == 4 and res.stats["before"]["max"] == pytest.approx(2.5)
    assert res.stats["after"]["max"] <= 0.88 + 1e-9
    assert set(res.stats["before"]) == {"count", "mean", "median", "p5", "p95", "min", "max"}
    assert res.stats["rejects"] == {"video_unavailable": 1, "crop_outside_video": 1, "invalid_crop": 1}
    assert {"clip_start_frame", "clip_end_frame"} <= set(res.kept.columns)


def test_length_stats() -> None:
    s = length_stats([1.0, 2.0, 3.0, float("nan")])
    assert s == {"count": 3, "mean": 2.0, "median": 2.0, "p5": pytest.approx(1.1), "p95": pytest.approx(2.9),
                 "min": 1.0, "max": 3.0}
    assert length_stats([])["count"] == 0


def test_clean_real_msasl_val_annotations() -> None:
    """MS-ASL val: all crops cleaned; per source video no overlaps remain, nothing lengthened."""
    records = json.loads((SHARED / "msasl" / "MSASL_val.json").read_text(encoding="utf-8"))
    df = pd.DataFrame({
        "sample_id": [f"val-{i}" for i in range(len(records))],
        "source_key": [r["url"] for r in records],
        "start_s": [float(r["start_time"]) for r in records], "end_s": [float(r["end_time"]) for r in records],
        "start_frame": [int(r["start"]) for r in records], "end_frame": [int(r["end"]) for r in records],
        "annotated_fps": [float(r["fps"]) for r in records], "video_fps": [float(r["fps"]) for r in records],
    })
    # Probed durations are not available offline: say each video lasts until its last crop ends + 1 s.
    df["duration_s"] = df.groupby("source_key")["end_s"].transform("max") + 1.0
    res = clean_crops(df)
    assert len(res.kept) + len(res.rejects) == len(df) == 5287
    assert res.stats["before"]["count"] > 5000 and res.stats["after"]["max"] <= 0.88 + 1e-9
    assert res.stats["after"]["median"] < res.stats["before"]["median"]
    merged = res.kept.merge(df[["sample_id", "start_s", "end_s"]], on="sample_id", suffixes=("", "_orig"))
    assert (merged.clip_start_s >= merged.start_s_orig - 1e-9).all()
    assert (merged.clip_end_s <= merged.end_s_orig + 1e-9).all()
    for _, g in res.kept.groupby("source_key"):
        iv = sorted(zip(g.clip_start_s, g.clip_end_s))
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(iv, iv[1:]))


# ----------------------------------------------------------------------------- properties


@given(k=st.integers(0, 10**6), fps=FPS)
def test_frame_seconds_round_trip(k: int, fps: float) -> None:
    assert seconds_to_frame_index(frames_to_seconds(k, fps), fps) == k


@given(start=st.integers(1, 10**5), end=st.integers(1, 10**5))
def test_wlasl_25fps_round_trip(start: int, end: int) -> None:
    s, e = wlasl_frames_to_seconds(start, end)
    assert seconds_to_frame_index(s, 25.0) == start - 1
    assert seconds_to_frame_index(e, 25.0) == end


@given(t=st.floats(0, 1e4, allow_nan=False), fps=FPS)
def test_seconds_to_frame_index_is_first_frame_at_or_after(t: float, fps: float) -> None:
    k = seconds_to_frame_index(t, fps)
    assert k / fps >= t - 1e-6 and (k == 0 or (k - 1) / fps < t - 1e-6 + 1e-9)


times = st.floats(-5, 200, allow_nan=False, allow_infinity=False)


@given(start=times, end=st.one_of(st.none(), times), duration=st.floats(0.01, 150),
       min_len=st.sampled_from([0.0, 0.1, 1.0]))
def test_clamping_stays_in_video_and_agrees_with_vectorized(start: float, end: float | None, duration: float,
                                                            min_len: float) -> None:
    got = clamp_crop(start, end, duration, min_len)
    kept, rej = to_video_timeline(frame(start_s=start, end_s=end, duration_s=duration),
                                  CropSettings(min_length_s=min_len))
    if isinstance(got, Clamped):
        assert 0.0 <= got.start_s < got.end_s <= duration
        assert got.end_s - got.start_s >= min_len - 1e-6
        assert got.start_s >= start and (end is None or got.end_s <= end)
        assert rej.empty and (kept.iloc[0].clip_start_s, kept.iloc[0].clip_end_s) == (got.start_s, got.end_s)
    else:
        assert kept.empty and list(rej.reason) == [got[0].value]


intervals = st.lists(st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0, 20, allow_nan=False))
                     .map(lambda p: (p[0], p[0] + p[1])), max_size=12)


@settings(max_examples=300)
@given(iv=intervals, policy=st.sampled_from(["midpoint", "truncate_earlier"]))
def test_overlap_trimming_leaves_no_overlap_and_never_lengthens(iv: list[tuple[float, float]], policy: str) -> None:
    out = trim_interval_overlaps(iv, policy)  # type: ignore[arg-type]
    assert len(out) == len(iv)
    for (s0, e0), (s1, e1) in zip(iv, out):
        assert s0 <= s1 and e1 <= e0 and (e1 > s1 or e1 == s1)  # inside the original
    live = sorted((s, e) for s, e in out if e > s)
    assert all(a[1] <= b[0] for a, b in zip(live, live[1:]))


@given(s=st.floats(0, 1000), length=st.floats(0.001, 60), sign=st.floats(0.2, 2), speed=st.floats(0.5, 2),
       prep=st.floats(0, 2))
def test_enhancement_never_lengthens_and_stays_inside(s: float, length: float, sign: float, speed: float,
                                                      prep: float) -> None:
    a, b = enhance_limits(s, s + length, sign, speed, prep)
    assert s <= a < b <= s + length
    assert b - a <= min(length, speed * sign) + 1e-9
