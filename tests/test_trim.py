"""Frame-accurate trimming against real original-format WLASL clips and synthetic VFR video.

Expected frame counts and indices are computed here independently of ``sldata.acquire.trim``:
every frame timestamp is decoded with PyAV in the test and counted against the interval.
"""

from __future__ import annotations

import csv
import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from conftest import shared_data_dir
from sldata.acquire.trim import (
    Box,
    TrimError,
    TrimSettings,
    box_to_pixels,
    crop_window,
    resample_indices,
    trim_clip,
    trim_clips,
)

SHARED = shared_data_dir()
ORIG = SHARED / "wlasl_original_clips"
ORIG_VIDEOS = ORIG / "videos"
PRETRIMMED = SHARED / "wlasl100_clips" / "videos"

# Fast settings for count checks: tiny output, fastest preset.
FAST = TrimSettings(out_width=32, out_height=32, preset="ultrafast", use_box=False)
# Near-lossless full-frame settings for pixel comparisons.
EXACT = TrimSettings(out_width=None, out_height=None, use_box=False, crf=4, preset="ultrafast")


def decode_all(path: Path, images: bool = False) -> tuple[list[float], list[np.ndarray]]:
    """Every frame's time (pts - stream start) * time_base, and optionally its RGB image."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        origin = s.start_time or 0
        times, imgs = [], []
        for f in c.decode(s):
            times.append(float((f.pts - origin) * s.time_base))
            if images:
                imgs.append(f.to_ndarray(format="rgb24"))
    return times, imgs


def expected_indices(times: list[float], start: float, end: float | None) -> list[int]:
    eps = 1e-6
    return [i for i, t in enumerate(times) if t >= start - eps and (end is None or t < end - eps)]


def read_output(path: Path) -> tuple[int, int, float, list[np.ndarray]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        imgs = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return s.width, s.height, float(s.average_rate), imgs


def mad(a: np.ndarray, b: np.ndarray) -> float:
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return float(np.abs(a[:h, :w].astype(float) - b[:h, :w].astype(float)).mean())


def test_shared_data_present() -> None:
    assert ORIG_VIDEOS.is_dir(), f"shared data not found at {SHARED} (set SLDATA_SHARED)"
    assert len(list(ORIG_VIDEOS.glob("*.mp4"))) == 44


# Clips of several resolutions, codecs and frame rates; crops given as WLASL 1-based frames at 25 fps.
CASES = [
    ("01377", 3, 15),     # 288x192, 29.97 fps, header claims 25 frames but 22 decode
    ("02238", 10, 50),    # 720x400, 30.35 fps, irregular pts steps (999/1000)
    ("05792", 20, 120),   # 320x180, mpeg4, 24 fps
    ("10008", 5, 40),     # 640x480, 30 fps, stream start_time != 0
    ("19109", 11, 36),    # 320x240, 25 fps: boundaries fall exactly on frame times
    ("40313", 8, 60),     # 320x240, 50 fps
    ("65549", 2, 30),     # 656x370, 23.98 fps, irregular steps
    ("30257", 30, -1),    # 320x240, 29.97, start_time != 0, to the end
    ("16893", 4, 20),     # 1920x1080, 29.97
]


@pytest.mark.parametrize("video_id,frame_start,frame_end", CASES)
def test_exact_frame_selection_on_original_clips(tmp_path: Path, video_id: str, frame_start: int, frame_end: int) -> None:
    src = ORIG_VIDEOS / f"{video_id}.mp4"
    start = (frame_start - 1) / 25
    end = None if frame_end == -1 else frame_end / 25
    times, _ = decode_all(src)
    exp = expected_indices(times, start, end)
    assert exp, "test case must select frames"
    prov = trim_clip(src, tmp_path / "out.mp4", start_s=start, end_s=end, settings=FAST)
    assert prov.n_source_frames == len(exp) == prov.n_frames_written
    assert (prov.first_frame_index, prov.end_frame_index) == (exp[0], exp[-1] + 1)
    assert prov.first_frame_time_s == pytest.approx(times[exp[0]])
    w, h, _, imgs = read_output(tmp_path / "out.mp4")
    assert (w, h) == (32, 32) and len(imgs) == len(exp)


def test_frame_exactly_on_boundaries(tmp_path: Path) -> None:
    """A frame at exactly start is kept, a frame at exactly end is not (25 fps clip)."""
    src = ORIG_VIDEOS / "19109.mp4"
    times, _ = decode_all(src)
    assert times[10] == pytest.approx(0.4) and times[20] == pytest.approx(0.8)
    prov = trim_clip(src, tmp_path / "o.mp4", start_s=10 / 25, end_s=20 / 25, settings=FAST)
    assert (prov.first_frame_index, prov.end_frame_index, prov.n_frames_written) == (10, 20, 10)
    # 7/25 is not exactly representable in binary: still frame 7 exactly.
    prov = trim_clip(src, tmp_path / "p.mp4", start_s=7 / 25, end_s=9 / 25, settings=FAST)
    assert (prov.first_frame_index, prov.end_frame_index) == (7, 9)


def _manifest_rows() -> list[dict[str, str]]:
    with open(ORIG / "andreewaziz_manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_full_range_matches_manifest_decoded_frames(tmp_path: Path) -> None:
    """Every andreewaziz clip, crop to the end: exactly ``decoded_frames`` frames; the WLASL
    nslt range (1-based at 25 fps, clamped to the real video) selects the independently counted frames."""
    rows = _manifest_rows()
    assert len(rows) == 37
    settings = TrimSettings(out_width=16, out_height=16, preset="ultrafast", use_box=False)
    for row in rows:
        src = ORIG / row["file"]
        prov = trim_clip(src, tmp_path / f"{row['video_id']}.mp4", start_s=0.0, end_s=None, settings=settings)
        assert prov.n_frames_written == int(row["decoded_frames"]), row["video_id"]
        w, h = (int(v) for v in row["width_x_height"].split("x"))
        assert (prov.native_width, prov.native_height) == (w, h)
        assert prov.native_fps == pytest.approx(float(row["fps"]), abs=0.01)
    for vid in ("02238", "05792", "12613", "40313", "65549"):
        row = next(r for r in rows if r["video_id"] == vid)
        src = ORIG / row["file"]
        start, end = (int(row["nslt_frame_start"]) - 1) / 25, int(row["nslt_frame_end"]) / 25
        times, _ = decode_all(src)
        prov = trim_clip(src, tmp_path / f"n{vid}.mp4", start_s=start, end_s=end, settings=settings)
        assert prov.n_frames_written == len(expected_indices(times, start, end)), vid


def test_known_counts() -> None:
    """01377: container header says 25 frames, 22 decode; the trimmer counts decoded frames."""
    with av.open(str(ORIG_VIDEOS / "01377.mp4")) as c:
        assert c.streams.video[0].frames == 25
    times, _ = decode_all(ORIG_VIDEOS / "01377.mp4")
    assert len(times) == 22


@pytest.mark.parametrize("video_id,start,end", [("02238", 0.5, 1.7), ("10008", 0.3, 1.2), ("05792", 2.0, 3.0)])
def test_first_and_last_frames_are_the_right_ones(tmp_path: Path, video_id: str, start: float, end: float) -> None:
    src = ORIG_VIDEOS / f"{video_id}.mp4"
    times, imgs = decode_all(src, images=True)
    exp = expected_indices(times, start, end)
    trim_clip(src, tmp_path / "o.mp4", start_s=start, end_s=end, settings=EXACT)
    _, _, _, out = read_output(tmp_path / "o.mp4")
    assert len(out) == len(exp)
    for out_img, k in ((out[0], exp[0]), (out[-1], exp[-1])):
        d = mad(out_img, imgs[k])
        assert d < 4.0, f"frame {k}: mean abs diff {d}"
        for nb in (k - 1, k + 1):  # closer to the right frame than to its neighbours
            if 0 <= nb < len(imgs) and mad(imgs[nb], imgs[k]) > 0.5:
                assert d < mad(out_img, imgs[nb]), f"output looks like frame {nb}, expected {k}"


def test_box_geometry_rules() -> None:
    # pixel box, scale 1: the box itself, rounded
    assert crop_window((100, 50, 300, 250), 640, 480, 1.0, None) == (100, 50, 300, 250)
    # scale 1.5 about the centre (200, 150): 300 x 300
    assert crop_window((100, 50, 300, 250), 640, 480, 1.5, None) == (50, 0, 350, 300)
    # aspect 2 (w/h): grow width of 200x200 box to 400
    assert crop_window((100, 50, 300, 250), 640, 480, 1.0, 2.0) == (0, 50, 400, 250)
    # shift: a window past the right edge is moved inside
    assert crop_window((500, 100, 640, 200), 640, 480, 1.0, 1.0) == (500, 80, 640, 220)
    assert crop_window((560, 100, 640, 200), 640, 480, 1.0, 1.0, "shift") == (540, 100, 640, 200)
    # pad: it stays where it is and reaches outside
    assert crop_window((560, 100, 640, 200), 640, 480, 1.0, 1.0, "pad") == (550, 100, 650, 200)
    # larger than the frame: frame centred in the window
    assert crop_window((0, 0, 640, 480), 640, 480, 1.0, 1.0) == (0, -80, 640, 560)
    # normalized -> pixels; pixel with annotated size rescaled; clamped to the frame
    assert box_to_pixels(Box(0.25, 0.1, 0.75, 0.9, "normalized"), 640, 480) == pytest.approx((160, 48, 480, 432))
    assert box_to_pixels(Box(10, 10, 110, 60, "pixel", 320, 240), 640, 480) == pytest.approx((20, 20, 220, 120))
    assert box_to_pixels(Box(-20, 10, 700, 500, "pixel"), 640, 480) == pytest.approx((0, 10, 640, 480))
    with pytest.raises(TrimError) as err:
        box_to_pixels(Box(700, 10, 800, 100, "pixel"), 640, 480)
    assert err.value.reason == "box_outside_frame"
    with pytest.raises(TrimError) as err:
        box_to_pixels(Box(0.5, 0.5, 0.4, 0.9, "normalized"), 640, 480)
    assert err.value.reason == "invalid_box"


def test_box_crop_content_and_target_size(tmp_path: Path) -> None:
    src = ORIG_VIDEOS / "10008.mp4"  # 640x480; WLASL box 101 9 609 480
    times, imgs = decode_all(src, images=True)
    box = Box(120, 40, 420, 360, "pixel")
    settings = TrimSettings(box_scale=1.0, out_width=None, out_height=None, crf=4, preset="ultrafast")
    prov = trim_clip(src, tmp_path / "b.mp4", start_s=0.5, end_s=1.0, box=box, settings=settings)
    assert (prov.window_x0, prov.window_y0, prov.window_x1, prov.window_y1) == (120, 40, 420, 360)
    assert not prov.padded
    w, h, _, out = read_output(tmp_path / "b.mp4")
    assert (w, h) == (300, 320)
    k = expected_indices(times, 0.5, 1.0)[0]
    assert mad(out[0], imgs[k][40:360, 120:420]) < 4.0
    assert mad(out[0], imgs[k][40:360, 130:430]) > mad(out[0], imgs[k][40:360, 120:420])
    # target size 128x96 from the real WLASL box: window grown to 4:3 and resized
    settings = TrimSettings(box_scale=1.2, out_width=128, out_height=96, preset="ultrafast")
    prov = trim_clip(src, tmp_path / "c.mp4", start_s=0.5, end_s=1.0, box=Box(101, 9, 609, 480, "pixel"),
                     settings=settings)
    x0, y0, x1, y1 = prov.window_x0, prov.window_y0, prov.window_x1, prov.window_y1
    assert (x1 - x0) / (y1 - y0) == pytest.approx(4 / 3, abs=0.01)
    # 508x471 box * 1.2 = 609.6x565.2, narrower than 4:3 -> width grown to 565.2 * 4/3; taller than the frame
    assert (x1 - x0, y1 - y0) == (round(471 * 1.2 * 4 / 3), round(471 * 1.2)) and prov.padded
    assert (y0, y1) == (-((565 - 480) // 2), -((565 - 480) // 2) + 565)
    w, h, _, out = read_output(tmp_path / "c.mp4")
    assert (w, h) == (128, 96) and (prov.out_width, prov.out_height) == (128, 96)
    # normalized box on a real clip
    prov = trim_clip(src, tmp_path / "d.mp4", start_s=0.0, end_s=0.5, box=Box(0.25, 0.1, 0.75, 0.9, "normalized"),
                     settings=TrimSettings(box_scale=1.0, target_aspect=None, out_width=None, out_height=None))
    assert (prov.window_x0, prov.window_y0, prov.window_x1, prov.window_y1) == (160, 48, 480, 432)


def test_odd_output_size_refused_and_odd_window_made_even(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        TrimSettings(out_width=255, out_height=256)
    with pytest.raises(ValueError, match="unknown TrimSettings setting.*bogus"):
        TrimSettings.from_dict({"bogus": 1, "crf": 20})
    assert TrimSettings.from_dict({"crf": 20}).crf == 20
    src = ORIG_VIDEOS / "01377.mp4"
    prov = trim_clip(src, tmp_path / "e.mp4", start_s=0, end_s=0.3, box=Box(11, 11, 112, 90, "pixel"),
                     settings=TrimSettings(box_scale=1.0, out_width=None, out_height=None, preset="ultrafast"))
    assert (prov.out_width, prov.out_height) == (100, 78)


@pytest.mark.parametrize("video_id,target", [("40313", 25.0), ("12613", 15.0), ("02238", 10.0)])
def test_resampled_frame_count_and_choice(tmp_path: Path, video_id: str, target: float) -> None:
    src = ORIG_VIDEOS / f"{video_id}.mp4"
    start, end = 0.4, 1.6
    times, imgs = decode_all(src, images=True)
    kept = expected_indices(times, start, end)
    nxt = kept[-1] + 1
    t_end = min(end, times[nxt]) if nxt < len(times) else end
    kt = [times[i] for i in kept]
    n_expected = 0
    while kt[0] + n_expected / target < t_end - 1e-9:
        n_expected += 1
    chosen = [kept[min(range(len(kt)), key=lambda i: (abs(kt[i] - (kt[0] + j / target)), i))] for j in range(n_expected)]
    settings = TrimSettings(target_fps=target, out_width=None, out_height=None, use_box=False, crf=4, preset="ultrafast")
    prov = trim_clip(src, tmp_path / "r.mp4", start_s=start, end_s=end, settings=settings)
    assert prov.n_frames_written == n_expected and prov.out_fps == target
    _, _, fps, out = read_output(tmp_path / "r.mp4")
    assert len(out) == n_expected and fps == pytest.approx(target)
    for j in (0, n_expected // 2, n_expected - 1):
        assert mad(out[j], imgs[chosen[j]]) < 4.0


def _write_vfr(path: Path, pts_ms: list[int]) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        s.options = {"crf": "4", "bf": "0"}
        for i, p in enumerate(pts_ms):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 + 20 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = p, Fraction(1, 1000)
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)


def test_variable_frame_rate_exact_selection(tmp_path: Path) -> None:
    pts = [0, 40, 50, 130, 135, 300, 310, 500, 733, 800]
    src = tmp_path / "vfr.mp4"
    _write_vfr(src, pts)
    times, _ = decode_all(src)
    assert times == pytest.approx([p / 1000 for p in pts])
    settings = TrimSettings(out_width=None, out_height=None, use_box=False, crf=4, preset="ultrafast")
    prov = trim_clip(src, tmp_path / "o.mp4", start_s=0.05, end_s=0.31, settings=settings)
    assert (prov.first_frame_index, prov.end_frame_index, prov.n_frames_written) == (2, 6, 4)
    _, _, _, out = read_output(tmp_path / "o.mp4")
    assert [round(float(im.mean()) / 20) * 20 for im in out] == [60, 80, 100, 120]
    # resampling a VFR source to 10 fps over [0, 0.8): nearest frame to 0, 0.1, ..., 0.7
    prov = trim_clip(src, tmp_path / "r.mp4", start_s=0.0, end_s=0.8,
                     settings=TrimSettings(target_fps=10, out_width=None, out_height=None, use_box=False, crf=4))
    assert prov.n_frames_written == 8
    _, _, _, out = read_output(tmp_path / "r.mp4")
    grey = [round(float(im.mean()) / 20) * 20 for im in out]
    t = [p / 1000 for p in pts[:9]]
    expect = [20 + 20 * min(range(9), key=lambda i: (abs(t[i] - j / 10), i)) for j in range(8)]
    assert grey == expect == [20, 80, 100, 120, 140, 160, 160, 180]


def test_resample_indices_ties_go_earlier() -> None:
    assert list(resample_indices([0.0, 0.1, 0.2, 0.3], 5.0, 0.4)) == [0, 2]
    assert list(resample_indices([0.0, 0.2], 10.0, 0.4)) == [0, 0, 1, 1]  # 0.1 ties -> earlier


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pretrimmed_clips_are_not_trimmed_again(tmp_path: Path) -> None:
    ids = ["69241", "00623"]
    srcs = {f"wlasl-{v}": PRETRIMMED / f"{v}.mp4" for v in ids}
    # Rows carry an original crop and box that would cut the clip if applied.
    rows = pd.DataFrame({"sample_id": list(srcs), "clip_start_s": [0.5, 0.5], "clip_end_s": [0.6, 0.6],
                         "box_xmin": [10.0] * 2, "box_ymin": [10.0] * 2, "box_xmax": [50.0] * 2,
                         "box_ymax": [50.0] * 2, "box_units": ["pixel"] * 2})
    prov, rej = trim_clips(rows, {k: str(v) for k, v in srcs.items()}, tmp_path / "copy", TrimSettings(),
                           pretrimmed=True, key_column="sample_id", progress=False)
    assert rej.empty and list(prov["status"]) == ["copied", "copied"]
    for sid, src in srcs.items():
        assert _sha(tmp_path / "copy" / f"{sid}.mp4") == _sha(src)
    # Resize only: every frame kept, whole frame resized (not box-cropped).
    prov, rej = trim_clips(rows, srcs, tmp_path / "small", TrimSettings(out_width=128, out_height=128, crf=10),
                           pretrimmed=True, key_column="sample_id", progress=False)
    assert rej.empty
    for sid, src in srcs.items():
        times, imgs = decode_all(src, images=True)
        w, h, _, out = read_output(tmp_path / "small" / f"{sid}.mp4")
        assert (w, h) == (128, 128) and len(out) == len(times)
        small = imgs[0][::2, ::2]  # 256x256 source
        assert mad(out[0], small) < 6.0
    p = prov.set_index("sample_id")
    assert (p["window_x0"] == 0).all() and (p["window_x1"] == 256).all()


def test_batch_rejects_bad_inputs_and_resumes(tmp_path: Path) -> None:
    good = ORIG_VIDEOS / "00335.mp4"
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    sources = {"good": str(good), "good2": str(ORIG_VIDEOS / "19109.mp4"), "trunc": str(truncated),
               "zero": str(zero), "gone": str(tmp_path / "nope.mp4")}
    rows = pd.DataFrame({
        "sample_id": ["a", "b", "c", "d", "e", "f", "g"],
        "source_key": ["good", "trunc", "zero", "gone", "good", "good2", "unknown"],
        "clip_start_s": [0.0, 0.0, 0.0, 0.0, 50.0, 0.5, 0.0],
        "clip_end_s": [1.0, 1.0, 1.0, 1.0, 51.0, 1.5, 1.0],
        "box_xmin": [None] * 7, "box_ymin": [None] * 7, "box_xmax": [None] * 7, "box_ymax": [None] * 7,
        "box_units": [None] * 7,
    })
    out = tmp_path / "clips"
    prov, rej = trim_clips(rows, sources, out, FAST, progress=False)
    assert sorted(prov["sample_id"]) == ["a", "f"]
    assert dict(zip(rej["sample_id"], rej["reason"])) == {
        "b": "undecodable", "c": "undecodable", "d": "missing_source", "e": "crop_outside_video",
        "g": "missing_source"}
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.mp4", "f.json", "f.mp4"]  # no temp files left
    assert int(prov.set_index("sample_id").loc["a", "n_frames_written"]) == 25  # 25 fps, [0, 1)
    mtime = (out / "a.mp4").stat().st_mtime_ns
    prov2, rej2 = trim_clips(rows, sources, out, FAST, progress=False)
    assert set(prov2["status"]) == {"skipped_existing"} and len(rej2) == 5
    assert (out / "a.mp4").stat().st_mtime_ns == mtime
    pd.testing.assert_series_equal(prov2.set_index("sample_id")["n_frames_written"].sort_index(),
                                   prov.set_index("sample_id")["n_frames_written"].sort_index())
