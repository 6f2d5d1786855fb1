"""bench/bench_stream.py's pieces: the gloss error rate's edit distance and joining real clips into one video."""

from __future__ import annotations

import sys
from pathlib import Path

import av

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
from bench_stream import edit_distance, join_clips  # noqa: E402


def test_edit_distance_counts_substitutions_insertions_and_deletions() -> None:
    assert edit_distance(["a", "b", "c"], ["a", "b", "c"]) == 0
    assert edit_distance(["a", "b", "c"], ["a", "x", "c"]) == 1  # substitution
    assert edit_distance(["a", "b", "c"], ["a", "b", "b", "c"]) == 1  # insertion
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1  # deletion
    assert edit_distance(["a", "b"], []) == 2 and edit_distance([], ["a"]) == 1
    assert edit_distance(["a", "b", "c", "d"], ["b", "a", "d"]) == 2


def test_joined_clips_hold_every_frame_in_order(shared: Path, tmp_path: Path) -> None:
    clips = [shared / "wlasl100_clips" / "videos" / f"{vid}.mp4" for vid in ("32146", "00618")]
    counts = []
    for clip in clips:
        with av.open(str(clip)) as c:
            counts.append(sum(1 for _ in c.decode(video=0)))
    out = join_clips(clips, tmp_path / "joined.mp4")
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        frames = [f for f in c.decode(video=0)]
        assert float(stream.average_rate) == 25.0
    assert len(frames) == sum(counts) and (frames[0].width, frames[0].height) == (256, 256)
