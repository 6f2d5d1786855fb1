"""Look-at-it outputs: overlays on a real clip (render.py) and the per-dataset summary (summary.py).

Overlay rendering: known points land on known pixels of a real clip, in MP4 and GIF.
Summary: exact numbers on a small synthetic clip table.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sldata.pose.render import PART_COLORS, draw_skeleton, render_overlay
from sldata.pose.skeleton import Skeleton
from sldata.pose.summary import detection_counts, pose_summary, write_summary
from conftest import shared_data_dir

CLIP = shared_data_dir() / "autsl_sample" / "signer0_sample1000_color.mp4"  # 512x512, 30 fps, 43 frames
SK = Skeleton(face="subset")
WRIST_PX = (128, 384)  # (x, y) where we put the signer's left-hand wrist


def _decode(path: Path) -> tuple[list[np.ndarray], Fraction, str]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return frames, s.average_rate, s.codec_context.name


def _known_keypoints(frames: int, width: int = 512, height: int = 512) -> np.ndarray:
    """All missing except the left-hand wrist at WRIST_PX."""
    kp = np.full((frames, SK.num_points, 4), np.nan, dtype=np.float32)
    kp[..., 3] = 0
    kp[:, SK.index("left_hand.wrist")] = [WRIST_PX[0] / width, WRIST_PX[1] / height, 0.0, 1.0]
    return kp


def _is_magenta(rgb: np.ndarray) -> bool:
    r, g, b = (int(v) for v in rgb)
    return r > 180 and b > 180 and g < 100


def test_draw_skeleton_exact_pixels() -> None:
    black = np.zeros((100, 200, 3), dtype=np.uint8)
    kp = np.full((SK.num_points, 4), np.nan, dtype=np.float32)
    kp[:, 3] = 0
    assert np.array_equal(draw_skeleton(black, kp, SK), black)  # nothing detected: nothing drawn

    kp[SK.index("left_hand.wrist")] = [0.25, 0.5, 0.0, 1.0]  # pixel (50, 50)
    img = draw_skeleton(black, kp, SK)
    assert tuple(img[50, 50]) == PART_COLORS["left_hand"]
    assert not img[:, 100:].any()  # nothing elsewhere
    assert not black.any()  # the input is left alone

    # An edge is drawn only when both ends are present.
    ls, le = SK.index("body.left_shoulder"), SK.index("body.left_elbow")
    kp[ls] = [0.6, 0.2, 0.0, 0.9]  # (120, 20)
    kp[le] = [0.9, 0.8, 0.0, 0.9]  # (180, 80)
    img = draw_skeleton(black, kp, SK)
    assert tuple(img[50, 150]) == PART_COLORS["body"]  # midpoint of the edge
    kp[le] = [np.nan, np.nan, np.nan, 0.0]
    img = draw_skeleton(black, kp, SK)
    assert not img[50, 150].any() and tuple(img[20, 120]) == PART_COLORS["body"]
    # Points below min_confidence count as missing.
    assert not draw_skeleton(black, kp, SK, min_confidence=0.95)[20, 120].any()
    with pytest.raises(ValueError, match="points must have shape"):
        draw_skeleton(black, kp[:10], SK)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_render_real_clip_puts_wrist_on_known_pixel(suffix: str, tmp_path: Path) -> None:
    src, src_rate, _ = _decode(CLIP)
    out = tmp_path / f"overlay{suffix}"
    n = render_overlay(CLIP, _known_keypoints(len(src)), SK, out)
    assert n == len(src) == 43
    frames, rate, codec = _decode(out)
    assert codec == ("gif" if suffix == ".gif" else "h264")
    assert len(frames) == 43 and frames[0].shape == (512, 512, 3)
    if suffix == ".mp4":
        assert rate == src_rate == 30
    else:  # GIF delays are whole centiseconds: 30 fps is stored as 3 cs per frame
        assert rate == Fraction(100, 3)
    x, y = WRIST_PX
    for t in (0, 21, 42):
        assert _is_magenta(frames[t][y, x]), frames[t][y, x]
        assert not _is_magenta(src[t][y, x])
        # Away from the dot the picture is the clip's.
        far = np.abs(frames[t][:200, :200].astype(int) - src[t][:200, :200].astype(int)).mean()
        assert far < 8
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # atomic: no temporary left


def test_render_limits_rate_and_short_keypoints(tmp_path: Path) -> None:
    n = render_overlay(CLIP, _known_keypoints(43), SK, tmp_path / "a.gif", fps=10, max_frames=12)
    frames, rate, _ = _decode(tmp_path / "a.gif")
    assert n == len(frames) == 12 and rate == 10
    n = render_overlay(CLIP, _known_keypoints(20), SK, tmp_path / "b.mp4")  # fewer keypoint frames than video
    frames, rate, _ = _decode(tmp_path / "b.mp4")
    assert n == len(frames) == 20


def test_odd_sized_clip_is_padded_for_mp4(tmp_path: Path) -> None:
    # An odd-sized clip: the real clip cropped to 511x509 (4:4:4, which allows odd sizes).
    src, _, _ = _decode(CLIP)
    odd = tmp_path / "odd_src.mp4"
    with av.open(str(odd), mode="w") as c:
        s = c.add_stream("libx264rgb", rate=30)
        s.width, s.height, s.pix_fmt = 511, 509, "rgb24"
        for img in src[:4]:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:509, :511]), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    out = tmp_path / "odd_overlay.mp4"
    assert render_overlay(odd, _known_keypoints(4, 511, 509), SK, out) == 4
    frames, _, _ = _decode(out)
    assert len(frames) == 4 and frames[0].shape == (510, 512, 3)  # yuv420p needs even sizes: padded
    assert _is_magenta(frames[1][WRIST_PX[1], WRIST_PX[0]])
    assert frames[1][509:].mean() < 20 and frames[1][:, 511:].mean() < 20  # the padding is black (up to codec blur)
    gif = tmp_path / "odd.gif"  # GIFs keep the odd size
    assert render_overlay(odd, _known_keypoints(4, 511, 509), SK, gif) == 4
    assert _decode(gif)[0][0].shape == (509, 511, 3)


def test_bad_keypoints_leave_no_output(tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    with pytest.raises(ValueError, match="keypoints must have shape"):
        render_overlay(CLIP, np.zeros((5, 10, 4), dtype=np.float32), SK, out)
    with pytest.raises(ValueError, match="no frame to render"):
        render_overlay(CLIP, _known_keypoints(0), SK, out)
    with pytest.raises(ValueError, match="max_frames"):
        render_overlay(CLIP, _known_keypoints(3), SK, out, max_frames=0)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- pose summary (summary.py)

def _clip_table(with_any: bool = False) -> pd.DataFrame:
    rows = [  # sample_id, split, status, num_frames, body, left, right, any
        ("a", "train", "ok", 10, 10, 4, 6, 8),
        ("b", "train", "ok", 20, 18, 0, 20, 20),
        ("c", "train", "failed", 0, 0, 0, 0, 0),
        ("d", "val", "ok", 5, 5, 5, 5, 5),
        ("e", "val", "no_person", 7, 0, 0, 0, 0),
        ("f", "test", "skipped_unusable_clip", 0, 0, 0, 0, 0),
    ]
    cols = ["sample_id", "split", "status", "num_frames", "frames_with_body", "frames_with_left_hand",
            "frames_with_right_hand", "frames_with_any_hand"]
    df = pd.DataFrame(rows, columns=cols)
    return df if with_any else df.drop(columns="frames_with_any_hand")


def test_pose_summary_exact_numbers() -> None:
    s = pose_summary(_clip_table()).set_index("split")
    assert list(s.index) == ["train", "val", "test", "ALL"]
    counts = ["clips", "clips_ok", "clips_no_person", "clips_failed", "clips_skipped", "frames"]
    assert s.loc["train", counts].tolist() == [3, 2, 0, 1, 0, 30]
    assert s.loc["val", counts].tolist() == [2, 1, 1, 0, 0, 12]
    assert s.loc["test", counts].tolist() == [1, 0, 0, 0, 1, 0]
    assert s.loc["ALL", counts].tolist() == [6, 3, 1, 1, 1, 42]
    stats = ["frames_per_clip_mean", "frames_per_clip_median", "frames_per_clip_min", "frames_per_clip_max"]
    assert s.loc["train", stats].tolist() == [15, 15, 10, 20]
    assert s.loc["val", stats].tolist() == [6, 6, 5, 7]  # no_person clips have frames too
    assert s.loc["ALL", stats].tolist() == [10.5, 8.5, 5, 20]
    assert s.loc["test", stats + ["body_rate"]].isna().all()  # no frames: NaN, not 0
    rates = ["body_rate", "left_hand_rate", "right_hand_rate", "any_hand_rate_min", "any_hand_rate_max"]
    assert s.loc["train", rates].tolist() == pytest.approx([28 / 30, 4 / 30, 26 / 30, 26 / 30, 30 / 30])
    assert s.loc["val", rates].tolist() == pytest.approx([5 / 12, 5 / 12, 5 / 12, 5 / 12, 5 / 12])
    assert s.loc["ALL", rates].tolist() == pytest.approx([33 / 42, 9 / 42, 31 / 42, 31 / 42, 35 / 42])
    assert s["any_hand_rate"].isna().all()  # unknown without frames_with_any_hand

    s = pose_summary(_clip_table(with_any=True)).set_index("split")
    assert s.loc[["train", "val", "ALL"], "any_hand_rate"].tolist() == pytest.approx([28 / 30, 5 / 12, 33 / 42])
    assert s.loc["ALL", "any_hand_rate_min"] == s.loc["ALL", "any_hand_rate_max"] == s.loc["ALL", "any_hand_rate"]


def test_detection_counts_match_summary_inputs() -> None:
    kp = np.full((4, SK.num_points, 4), np.nan, dtype=np.float32)
    kp[..., 3] = 0
    kp[0, SK.index("body.nose")] = [0.5, 0.5, 0, 1]
    kp[1, SK.index("left_hand.wrist")] = [0.5, 0.5, 0, 1]
    kp[2, SK.index("right_hand.pinky_tip")] = [0.5, 0.5, 0, 1]
    kp[2, SK.index("left_hand.wrist")] = [0.5, 0.5, 0, 1]
    assert detection_counts(kp, SK) == {"num_frames": 4, "frames_with_body": 1, "frames_with_left_hand": 2,
                                        "frames_with_right_hand": 1, "frames_with_any_hand": 2}


def test_pose_summary_rejects_bad_tables() -> None:
    df = _clip_table()
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['split'\]"):
        pose_summary(df.drop(columns="split"))
    with pytest.raises(ValueError, match="unknown clip status"):
        pose_summary(df.assign(status=["ok", "ok", "ok", "ok", "ok", "weird"]))
    with pytest.raises(ValueError, match=r"frames_with_body exceeds num_frames for clip\(s\) \['a'\]"):
        pose_summary(df.assign(frames_with_body=[11, 18, 0, 5, 0, 0]))
    with pytest.raises(ValueError, match="inconsistent"):
        pose_summary(_clip_table(with_any=True).assign(frames_with_any_hand=[3, 20, 0, 5, 0, 0]))
    with pytest.raises(ValueError, match="have no split"):
        pose_summary(df.assign(split=["train", None, "val", "val", "val", "test"]))


def test_write_summary_files(tmp_path: Path) -> None:
    clips = _clip_table(with_any=True)
    summary = write_summary(clips, tmp_path / "pose")
    assert sorted(p.name for p in (tmp_path / "pose").iterdir()) == ["summary.csv", "summary.json", "summary.png"]
    back = pd.read_csv(tmp_path / "pose" / "summary.csv")
    pd.testing.assert_frame_equal(back, summary, check_dtype=False)
    metrics = json.loads((tmp_path / "pose" / "summary.json").read_text())
    assert metrics["ALL"]["clips"] == 6 and metrics["ALL"]["frames"] == 42
    assert metrics["train"]["body_rate"] == pytest.approx(28 / 30)
    assert metrics["test"]["body_rate"] is None  # NaN -> null, valid JSON for dvc metrics
    with Image.open(tmp_path / "pose" / "summary.png") as im:
        assert im.format == "PNG" and im.size == (1100, 400)
    first = (tmp_path / "pose" / "summary.png").read_bytes()
    write_summary(clips, tmp_path / "pose")
    assert (tmp_path / "pose" / "summary.png").read_bytes() == first  # reproducible for dvc
