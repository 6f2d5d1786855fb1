"""Snakemake and DVC run the same stages and produce byte-identical artifacts (in a temporary git repo)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from pipeline_repo import digests as repo_digests
from pipeline_repo import make_pipeline_repo, run

pytestmark = pytest.mark.pipeline

ARTIFACTS = [
    "data/manifest/manifest.parquet",
    "data/manifest/rejects.parquet",
    "data/manifest/report.json",
    "data/subset/samples.parquet",
    "data/subset/label_map.json",
    "data/subset/report.json",
    "data/clips/shard-000/clips.parquet",
    "data/clips/shard-001/clips.parquet",
    "data/clips/shard-001/report.json",
    "data/clips/shard-001/ledger.parquet",
    "data/coverage/coverage.json",
    "data/pose/shard-000.parquet",
    "data/pose/shard-001.parquet",
    "data/features/pose/keypoints.npy",
    "data/features/pose/index.parquet",
    "data/eval/metrics.json",
]
# The ledger records when each video was acquired: identical because the download cache is kept.


def digests(root: Path) -> dict[str, str]:
    return repo_digests(root, ARTIFACTS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """A fresh git + DVC repository holding the pipeline definition and code, params pointing at shared/."""
    return make_pipeline_repo(tmp_path_factory.mktemp("repo"), shared)


def test_dvc_and_snakemake_agree(workdir: Path) -> None:
    out = run([sys.executable, "-m", "dvc", "repro"], workdir)
    assert all(f"Running stage '{s}'" in out for s in ("manifest", "subset", "acquire", "coverage", "pose", "pack_pose", "train", "evaluate", "export",
                                                      "frames", "hand_crops", "train_rgb", "train_hands"))
    by_dvc = digests(workdir)
    assert "Data and pipelines are up to date" in run([sys.executable, "-m", "dvc", "repro"], workdir)
    assert "Data and pipelines are up to date" in run([sys.executable, "-m", "dvc", "status"], workdir)

    for path in (workdir / "data").iterdir():  # every artifact, but not the download cache
        if path.name != "cache":
            shutil.rmtree(path)
    shutil.rmtree(workdir / "data" / "cache" / "pose")  # so Snakemake extracts the keypoints again, independently
    # `all` builds what the pose model needs; frames and hand crops and the RGB and hand-crop models
    # are their own targets, while `dvc repro` runs every stage. (The models' work dirs in data/cache
    # survive, so their training resumes at its end and rewrites identical outputs.)
    run([sys.executable, "-m", "snakemake", "--cores", "2", "all", "frames_all", "hand_crops_all", "train_rgb",
         "train_hands"], workdir)
    assert digests(workdir) == by_dvc
    assert (workdir / "logs" / "manifest.log").read_text().startswith("kept 2038 rows")
    assert "Nothing to be done" in run([sys.executable, "-m", "snakemake", "-n", "all", "frames_all", "hand_crops_all",
                                        "train_rgb", "train_hands"], workdir)
    # Snakemake rewrote identical bytes, so DVC still sees nothing to do.
    assert "Data and pipelines are up to date" in run([sys.executable, "-m", "dvc", "status"], workdir)


def test_changed_k_shows_in_params_diff_and_reruns_only_the_subset(workdir: Path) -> None:
    run([sys.executable, "-m", "dvc", "repro"], workdir)
    params = (workdir / "params.yaml").read_text()
    (workdir / "params.yaml").write_text(params.replace("k: 1", "k: 2"))
    diff = run([sys.executable, "-m", "dvc", "params", "diff"], workdir)
    assert "subset.k" in diff and "2" in diff and "1" in diff
    status = run([sys.executable, "-m", "dvc", "status"], workdir)
    assert "subset" in status and "manifest:" not in status
    changes = run([sys.executable, "-m", "snakemake", "-n", "--list-changes", "params"], workdir)
    assert "data/subset/samples.parquet" in changes and "manifest.parquet" not in changes
    out = run([sys.executable, "-m", "dvc", "repro", "subset"], workdir)  # not the clip stages: quick
    assert "Stage 'manifest' didn't change" in out and "Running stage 'subset'" in out
    assert '"num_classes": 2' in (workdir / "data/subset/label_map.json").read_text()
    (workdir / "params.yaml").write_text(params)


def test_invalid_params_stop_snakemake_naming_the_key(workdir: Path) -> None:
    params = (workdir / "params.yaml").read_text()
    (workdir / "params.yaml").write_text(params.replace("k: 1", "k: lots"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all"], cwd=workdir, env=env,
                            capture_output=True, text=True)
    (workdir / "params.yaml").write_text(params)
    assert result.returncode != 0 and "subset.k: 'lots' is not of type 'integer'" in result.stderr + result.stdout


def test_snakemake_lint_has_only_the_documented_conda_lint() -> None:
    # --lint exits 1 whenever it prints a lint, so read its output rather than its exit code.
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO_ROOT, capture_output=True, text=True)
    out = result.stdout + result.stderr
    titles = [line.strip() for line in out.splitlines() if line.strip().startswith("* ")]
    assert titles and set(titles) == {"* Specify a conda environment or container for each rule.:"}


@pytest.mark.parametrize("package", ["sldata", "sltrain"])
def test_cli_help_lists_commands(package: str) -> None:
    out = run([sys.executable, "-m", package, "--help"], REPO_ROOT)
    expected = {"sldata": ["manifest", "subset", "acquire", "coverage", "check-params", "fetch", "describe-manifest"],
                "sltrain": ["env"]}
    assert all(cmd in out for cmd in expected[package])
