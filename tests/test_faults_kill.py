"""kill -9 at random moments of download, trim, frames, pose and training: the rerun loses nothing.

Runs :func:`bench.faults.kill.run` (the same code ``python -m bench.faults`` runs with many
repeats) with a few kills per stage on real clips, plus checks that the checker itself catches
what it is meant to catch, and that a killed writer's temporaries do not pile up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from bench.faults import kill  # noqa: E402
from bench.faults.common import CATEGORIES, sha256_file  # noqa: E402

KILLS = {"download": 2, "trim": 2, "frames": 2, "pose": 1, "training": 1}
"""Kills per stage here (the README figures use many more); pose and training cost the most per run."""


@pytest.mark.parametrize("stage", kill.STAGES)
def test_kill_9_at_a_random_moment_then_rerun_loses_nothing(stage: str, shared: Path, tmp_path: Path) -> None:
    (outcome,) = kill.run(tmp_path, repeats=KILLS[stage], seed=0, stages=[stage])
    assert outcome.category == "kill" and outcome.category in CATEGORIES
    assert outcome.kind == f"kill -9 during {stage}"
    assert outcome.injected == KILLS[stage]
    assert outcome.all_survived and outcome.lost == 0, "\n".join(outcome.failures)
    timing = kill.TIMINGS[stage]
    assert 0 < timing.work_s <= timing.reference_s and len(timing.injections_s) == KILLS[stage]
    assert not (tmp_path / "kill" / stage / "reference").exists()  # cleaned up after success


def test_run_rejects_unknown_stages(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        kill.run(tmp_path, 1, 0, stages=["pose", "painting"])


class _FileStage(kill.KillStage):
    """A stage of one exact artifact and one row list, to test the checker without running anything."""

    name = "fake"

    def snapshot(self, run_dir: Path) -> kill.Snapshot:
        rows = (run_dir / "rows.txt").read_text().split()
        return kill.Snapshot(exact={"out/a.bin": sha256_file(run_dir / "out/a.bin")}, rows={"clip": sorted(rows)})


def test_checker_catches_half_written_artifacts_lost_rows_and_leftovers(tmp_path: Path) -> None:
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    for folder, payload, rows in ((ref_dir, b"complete", "a b c"), (run_dir, b"comp", "a c")):
        (folder / "out").mkdir(parents=True)
        (folder / "out/a.bin").write_bytes(payload)
        (folder / "rows.txt").write_text(rows)
    stage = _FileStage()
    ref = stage.snapshot(ref_dir)
    assert kill.after_kill_problems(stage, ref_dir, ref) == []
    assert "out/a.bin exists but differs" in kill.after_kill_problems(stage, run_dir, ref)[0]
    (run_dir / "out/.a.bin.x1y2z3.tmp").write_bytes(b"half")
    (run_dir / "out/shard.parquet.parts").mkdir()
    problems, lost = kill.rerun_problems(stage, run_dir, ref)
    assert lost == 2  # the different artifact and the missing row
    text = "\n".join(problems)
    assert "out/a.bin differs" in text and "1 clip row(s) lost, e.g. ['b']" in text
    assert "out/.a.bin.x1y2z3.tmp" in text and "out/shard.parquet.parts/" in text
    (run_dir / "out/a.bin").write_bytes(b"complete")
    (run_dir / "rows.txt").write_text("a b c")
    (run_dir / "out/.a.bin.x1y2z3.tmp").unlink()
    (run_dir / "out/shard.parquet.parts").rmdir()
    assert kill.rerun_problems(stage, run_dir, ref) == ([], 0)


WRITER = textwrap.dedent(
    """
    import sys, time
    from sldata.atomic import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"partial")
        print("writing", flush=True)
        time.sleep(60)
    """
)


def test_a_killed_writers_temporary_is_removed_by_the_next_write_but_a_live_one_is_kept(tmp_path: Path) -> None:
    from sldata.atomic import atomic_path, write_json

    final = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    live = subprocess.Popen([sys.executable, "-c", WRITER, str(final)], env=env, stdout=subprocess.PIPE, text=True)
    dead = subprocess.Popen([sys.executable, "-c", WRITER, str(final)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout is not None and dead.stdout is not None
        assert live.stdout.readline().strip() == "writing" and dead.stdout.readline().strip() == "writing"
        temporaries = sorted(tmp_path.glob(".report.json.*.tmp"))
        assert len(temporaries) == 2
        dead.kill()
        dead.wait()
        time.sleep(0.1)
        write_json(final, {"ok": True})
        left = sorted(tmp_path.glob(".report.json.*.tmp"))
        assert len(left) == 1 and left[0] in temporaries  # the dead writer's is gone, the live one's kept
        assert final.read_text() == '{\n  "ok": true\n}\n'
    finally:
        for proc in (live, dead):
            proc.kill()
            proc.wait()
    with atomic_path(final) as tmp:  # the live writer is gone now: its temporary goes too
        tmp.write_text("{}\n")
    assert not list(tmp_path.glob(".report.json.*.tmp"))
