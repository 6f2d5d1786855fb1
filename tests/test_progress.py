"""Progress without a terminal: timestamped lines with counts, rate and ETA, at least every interval."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO_ROOT
from sldata.acquire.trim import trim_clips
from sldata.progress import LOG_DATEFMT, LOG_FORMAT, Progress, format_duration


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sldata.progress"]


def test_start_heartbeat_and_end_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sldata.progress")
    with Progress(total=4, desc="pose shard-000", unit="clip", bar=False, interval_s=0.05) as bar:
        bar.update(1)
        bar.set_postfix(frames=30)
        time.sleep(0.3)  # one slow item: the heartbeat still reports
    got = lines(caplog)
    assert got[0] == "pose shard-000: started, 4 clips to do"
    beats = [g for g in got[1:-1]]
    assert len(beats) >= 2, got
    assert all(re.fullmatch(r"pose shard-000: 1/4 clips \(25\.0%\), [\d.]+ clips/s, elapsed \d+s, ETA \d+s "
                            r"\(frames=30\)", b) for b in beats), beats
    # closed before every item was done: says so
    assert got[-1].startswith("pose shard-000: stopped, 1/4 clips (25.0%)")


def test_eta_follows_the_average_rate() -> None:
    bar = Progress(total=10, desc="x", unit="clip", bar=False, interval_s=60)
    bar._started -= 20.0  # 20 s elapsed
    bar.update(4)  # 0.2 clips/s: 6 left take 30 s
    assert bar.line() == "x: 4/10 clips (40.0%), 0.20 clips/s, elapsed 20s, ETA 30s"
    bar.update(6)
    bar.close()
    assert bar.line(finished=True) == "x: done, 10/10 clips (100.0%), 0.50 clips/s, elapsed 20s"


def test_wrapping_an_iterable_counts_each_item_and_no_thread_outlives_it() -> None:
    before = threading.active_count()
    items = list(Progress(["a", "b", "c"], desc="trim", unit="clip", bar=False))
    assert items == ["a", "b", "c"]
    assert threading.active_count() == before


def test_batches_are_plural_too() -> None:
    bar = Progress(total=4, desc="epoch 3/40", unit="batch", bar=False, interval_s=60, log_edges=False)
    bar.update(1)
    bar.close()
    assert bar.line().startswith("epoch 3/40: 1/4 batches (25.0%), ")


def test_durations() -> None:
    assert [format_duration(s) for s in (7, 141, 3 * 3600 + 4 * 60, float("inf"))] == ["7s", "2m21s", "3h04m", "?"]


def test_real_clips_trimmed_log_their_progress(shared: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sldata.progress")
    videos = shared / "wlasl100_clips" / "videos"
    ids = ["wlasl-32146", "wlasl-00632"]
    rows = pd.DataFrame({"sample_id": ids})
    paths = {sid: videos / f"{sid.split('-')[1]}.mp4" for sid in ids}
    prov, rejects = trim_clips(rows, paths, tmp_path / "shard-000" / "videos", pretrimmed=True,
                               key_column="sample_id", progress=False)
    assert len(prov) == 2 and rejects.empty
    got = lines(caplog)
    assert got[0] == "trim shard-000: started, 2 clips to do"
    assert got[-1].startswith("trim shard-000: done, 2/2 clips (100.0%)")


def test_cli_log_lines_carry_a_timestamp(tmp_path: Path) -> None:
    """The CLIs' logging format puts the local time first on every line of a stage log."""
    code = ("import logging; from sldata.progress import *; "
            f"logging.basicConfig(level=logging.INFO, format={LOG_FORMAT!r}, datefmt={LOG_DATEFMT!r}); "
            "p = Progress(total=1, desc='d', bar=True); p.update(); p.close()")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    got = out.stderr.splitlines()  # stderr is a pipe, not a terminal: log lines, no bar
    assert len(got) == 2 and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO sldata.progress: d: ", g) for g in got)
