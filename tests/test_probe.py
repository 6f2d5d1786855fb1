"""probe_video decodes real clips and rejects pages, Flash files, empty and truncated files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sldata.acquire.probe import ProbeFailure, probe_video, sniff


@pytest.fixture(scope="module")
def originals(shared: Path) -> Path:
    return shared / "wlasl_original_clips" / "videos"


@pytest.fixture(scope="module")
def facts(shared: Path) -> dict[str, dict[str, str]]:
    with open(shared / "wlasl_original_clips" / "andreewaziz_manifest.csv", newline="") as fh:
        return {row["video_id"]: row for row in csv.DictReader(fh)}


@pytest.mark.parametrize("video_id", ["01377", "02712", "02873", "05792", "23705"])
def test_real_clips_match_the_published_facts(originals: Path, facts: dict, video_id: str) -> None:
    fact = facts[video_id]
    p = probe_video(originals / f"{video_id}.mp4", count_frames=True)
    assert p.ok, p.detail
    assert p.failure is None
    width, height = (int(v) for v in fact["width_x_height"].split("x"))
    assert (p.width, p.height) == (width, height)
    assert p.fps == pytest.approx(float(fact["fps"]), abs=0.01)
    assert p.n_frames == int(fact["decoded_frames"]) and p.n_frames_exact
    assert p.duration_s == pytest.approx(float(fact["duration_s"]), abs=0.05)
    assert p.codec and p.size_bytes == (originals / f"{video_id}.mp4").stat().st_size


def test_tail_mode_does_not_decode_everything_but_checks_the_end(originals: Path) -> None:
    # 69241: 1280x720, 29.97 fps, 75 frames, moov atom first.
    p = probe_video(originals / "69241.mp4", full_decode_below_s=0.0, tail_s=0.5)
    assert p.ok, p.detail
    assert not p.n_frames_exact and p.n_frames == 75  # the container's count
    assert p.duration_s == pytest.approx(2.5025, abs=0.01)


def test_pretrimmed_clip(shared: Path) -> None:
    p = probe_video(shared / "wlasl100_clips" / "videos" / "69241.mp4")
    assert p.ok and (p.width, p.height) == (256, 256) and p.fps == pytest.approx(25.0)


def test_html_page_is_not_a_video(tmp_path: Path) -> None:
    f = tmp_path / "page.mp4"
    f.write_bytes(b"\n  <!DOCTYPE html><html><body>gone</body></html>")
    p = probe_video(f)
    assert not p.ok and p.failure is ProbeFailure.NOT_A_VIDEO and "HTML" in p.detail


def test_swf_is_not_a_video(tmp_path: Path) -> None:
    f = tmp_path / "sign.swf"
    f.write_bytes(b"CWS\x0a" + b"\x00" * 200)
    p = probe_video(f)
    assert not p.ok and p.failure is ProbeFailure.NOT_A_VIDEO and ".swf" in p.detail


def test_random_bytes_are_not_a_video(tmp_path: Path) -> None:
    f = tmp_path / "noise.mp4"
    f.write_bytes(bytes(range(256)) * 40)
    p = probe_video(f)
    assert not p.ok and p.failure is ProbeFailure.NOT_A_VIDEO


def test_zero_byte_and_missing(tmp_path: Path) -> None:
    f = tmp_path / "empty.mp4"
    f.write_bytes(b"")
    assert probe_video(f).failure is ProbeFailure.EMPTY
    missing = probe_video(tmp_path / "nope.mp4")
    assert not missing.ok and missing.failure is ProbeFailure.MISSING and "nope.mp4" in missing.detail


def test_truncated_with_index_at_the_end(originals: Path, tmp_path: Path) -> None:
    # 00336 stores its moov atom after the media data: cutting the file loses the index.
    data = (originals / "00336.mp4").read_bytes()
    f = tmp_path / "cut.mp4"
    f.write_bytes(data[: len(data) // 2])
    p = probe_video(f)
    assert not p.ok and p.failure is ProbeFailure.TRUNCATED_OR_UNDECODABLE


@pytest.mark.parametrize("full_decode_below_s", [0.0, 10.0])
def test_truncated_with_index_first(originals: Path, tmp_path: Path, full_decode_below_s: float) -> None:
    # 69241 is "fast start": the index survives the cut but the frames near the end are gone.
    data = (originals / "69241.mp4").read_bytes()
    f = tmp_path / "cut.mp4"
    f.write_bytes(data[: int(len(data) * 0.4)])
    p = probe_video(f, full_decode_below_s=full_decode_below_s)
    assert not p.ok and p.failure is ProbeFailure.TRUNCATED_OR_UNDECODABLE, p
    assert p.width == 1280  # the header was readable


def test_sniff() -> None:
    assert sniff(b"\x00\x00\x00\x20ftypisom")[0] == "video"
    assert sniff(b"\x1a\x45\xdf\xa3rest")[0] == "video"
    assert sniff(b"FWS\x09")[0] == "swf"
    assert sniff(b"\xef\xbb\xbf<html>")[0] == "markup"
    assert sniff(b'{"error": 1}')[0] == "markup"
