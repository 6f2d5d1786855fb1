"""bench/bench_dag.py plans one job per shard per stage, however many videos, and a faked finished pipeline is a no-op."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import bench_dag  # noqa: E402


def test_plan_has_one_job_per_shard_per_stage(tmp_path: Path) -> None:
    root = bench_dag.build_repo(tmp_path / "repo", rows=500, shards=7)
    timing, counts = bench_dag.plan(root)
    assert counts["acquire"] == counts["pose"] == 7
    for rule in ("coverage", "pack_pose", "pose_summary", "train", "evaluate", "export", "example_clip",
                 "predict_example", "all"):
        assert counts[rule] == 1, rule
    # manifest and subset look finished, so the plan starts at acquire
    assert "manifest" not in counts and "subset" not in counts
    assert counts["total"] == 2 * 7 + 9
    assert timing.wall_s > 0 and timing.peak_rss_mb > 0


def test_naive_dag_has_one_job_per_video_per_stage(tmp_path: Path) -> None:
    root = bench_dag.build_repo(tmp_path / "repo", rows=60, shards=2)
    _, counts = bench_dag.plan_naive(root, limit=50)
    assert counts["acquire_video"] == counts["pose_video"] == 50 and counts["total"] == 102


def test_faked_finished_pipeline_is_a_noop(tmp_path: Path) -> None:
    root = bench_dag.build_repo(tmp_path / "repo", rows=40, shards=2)
    result = bench_dag.noop(root)
    assert "Nothing to be done" in result["snakemake -n all"].output
    assert "up to date" in result["dvc status"].output
