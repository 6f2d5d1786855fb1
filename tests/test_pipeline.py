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

# Issue 16 moved every setting from generated flags into params files read by the commands. These
# are the artifacts of `make_pipeline_repo`'s params made by the code before that change (commit
# 407bc2c, Snakemake run on this project's machines): the data stages must still write the very
# same bytes. (Not here: the ledgers, which record times; manifest.parquet and samples.parquet,
# which record the shared data's absolute path; and the trained models, whose checkpoints now
# record only the params their stage reads: weights and eval metrics were identical.) A deliberate
# change to a data stage's code or params must record these again: the pose-derived ones (pose
# shards, pose summary, packed keypoints, hand crops) were recorded again when the OpenVINO pose
# engine became the default (e944caa), and the pose shards and packed keypoints once more when
# pose.face became none (no face points; the summary and hand crops kept their bytes, as the body
# and hands did); the others are still 407bc2c's bytes.
BEFORE_ISSUE_16 = {
    "data/clips/shard-000/clips.parquet": "f3670760f463d15a724931e40256031b4f9affd61cda0ecfffdf998e6b63aa91",
    "data/clips/shard-000/report.json": "016834a21f9ea68df6fb21d42f708b9c5b594592578bc0199ccb37c42683a73a",
    "data/clips/shard-001/clips.parquet": "3a4edf7c505ff2d45f7e7f549e81c6657d05da61c0bee3fe4cd97106af151ce2",
    "data/clips/shard-001/report.json": "98e678cd5b55a26a747e38baebd8872e2b93fb8faa74e7a8ff9c8c5dfdf92d14",
    "data/coverage/coverage.json": "d0f94ce2b272a240d03179dea6fac77847296e149aac01c4393df13eb72a81d3",
    "data/coverage/coverage.txt": "d68605916aea981af824a2452e75d9502f2e3177979116c61e7cacdeb5a3edd4",
    "data/example/clip.mp4": "a8219631de73fafeca407367fc41383b8315af9832e88ae4ce74eaf9adcbf707",
    "data/example/example.json": "a0cf3c05cf1bc52ac24591499e6a7bbfcfcc2c66d11cc632ec8789cb3f6b4a8f",
    "data/features/pose/index.parquet": "77ecdc36b86b6ae47cc82287c0c2412612daa2d1700f2b2612dd1279eef1d3ff",
    "data/features/pose/keypoints.npy": "11a32d0d81f7808eadbd235b7db5de2e51cef391ea8667edbb081943cba05fe6",
    "data/features/pose/skeleton.json": "41bf8ba681f9fe155737d25e8d38240482daac2c34d579a91702af0fb0f3816d",
    "data/frames/shard-000/frames.npy": "f2a19842120ae135794a22a6d4ef563078a7bebff1366554bcb5f727ee9a46eb",
    "data/frames/shard-000/index.parquet": "580c8a11ae2e00db023378c7180e7de244ee68d5912e965e38b56e002497c301",
    "data/frames/shard-001/frames.npy": "43f6d4b8234b103b3695dfaeae9919c219d5697699c60a53686a7e9f98f9c216",
    "data/frames/shard-001/index.parquet": "ec1515b435ccbfe66a6e81a37752c1c0792f3c98922f5834c67ec21e52f31015",
    "data/hand_crops/shard-000/boxes.npy": "6c15f4684c11ffb4eb1656dbfcfd3aafd60472892e36e723da4ee8925348a1b0",
    "data/hand_crops/shard-000/crops.npy": "d7280eaa1f60b46aa7583475a0add6271e92ccdff08c7d3e4438a60db5906aa2",
    "data/hand_crops/shard-000/index.parquet": "6abc4168c2f87f42b7e45cffd8f4f1e4b37f40fc29bb157d6cd8ce7ecf0a5bea",
    "data/hand_crops/shard-001/boxes.npy": "b0a3fe0b95a7b8aae878e8bd1092496bb958f852bf5d159ec52199665f470dfd",
    "data/hand_crops/shard-001/crops.npy": "2633118513f88cb342f79f4603de304306aa44b1b0876e1fddb0be0c7326cc38",
    "data/hand_crops/shard-001/index.parquet": "2693509518c7642a2deeb363cf70cb773bd77fe108bb69750ba1bf37af22a6db",
    "data/manifest/rejects.parquet": "8831c9ca3e316673dde0dc14d36b189fb69314ff6baa00b46b7062e2d6c18edf",
    "data/manifest/report.json": "a1e3a6c44aece8f710a217d415177ac5d67f7d28626aee5ee9336c50e5dcc9df",
    "data/pose/shard-000.parquet": "c03796083802e0e9eb1e01e3d8266dd9e80ba32877c7c5481dc67ccf85b22d5a",
    "data/pose/shard-001.parquet": "2473b8c3a9ee49f8066faff5a10acd5349bfcade897c5f466d2f6f60dd487879",
    "data/pose_summary/summary.csv": "f945d26f8a0012d22941453502c67827acd8bb7e73f38364fbfaa4de67361264",
    "data/pose_summary/summary.json": "ce55c88861c77f048227c70292be7a0519644d7ae65845e697cd242ec35978ab",
    "data/subset/label_map.json": "bcc0fd9e522383e984f64f351387f07736112180723532ec7025c0088900b4f4",
    "data/subset/report.json": "564a4d2fadbff98a4f761f9f5cb11e6fdaeab26fdfcbd425f48b6a2f42482ca2",
}


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
    assert repo_digests(workdir, BEFORE_ISSUE_16) == BEFORE_ISSUE_16
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


def test_snakemake_lint_has_only_the_documented_lints() -> None:
    # --lint exits 1 whenever it prints a lint, so read its output rather than its exit code.
    # PARAMS_FILE: every rule reads its settings from the config snapshot, whose path (named by the
    # whole config's hash) must not be a params: entry, or any value would rerun every job; what a
    # job depends on is its params: (the stage's keys, sldata/stages.py), not the file.
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO_ROOT, capture_output=True, text=True)
    out = result.stdout + result.stderr
    titles = [line.strip() for line in out.splitlines() if line.strip().startswith("* ")]
    assert titles and set(titles) == {"* Specify a conda environment or container for each rule.:",
                                      "* Shell command directly uses variable PARAMS_FILE from outside of the rule:"}


@pytest.mark.parametrize("package", ["sldata", "sltrain"])
def test_cli_help_lists_commands(package: str) -> None:
    out = run([sys.executable, "-m", package, "--help"], REPO_ROOT)
    expected = {"sldata": ["manifest", "subset", "acquire", "coverage", "check-params", "fetch", "describe-manifest"],
                "sltrain": ["env"]}
    assert all(cmd in out for cmd in expected[package])
