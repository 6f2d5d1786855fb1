"""What reruns when: a pose setting reruns pose and later stages only; added videos extract only new clips.

The first tests check the pose stage's reuse cache (``extract_pose_shard(cache_dir=...)``) in-process
on three short real clips. The pipeline tests (marked ``pipeline``) run Snakemake and DVC in a
throw-away repository (one gloss, two shards):

* changing ``models.vtn`` values and runtime knobs (``pose.workers``, ``train.threads``) reruns
  nothing that ``all`` builds (Snakemake and DVC);
* changing ``pose.min_detection_confidence`` plans and reruns pose, pack_pose, pose_summary, train,
  evaluate and export and leaves manifest, subset, acquire, coverage and the download cache alone
  (``snakemake -n`` jobs and reasons, ``--list-changes params``, ``dvc status``, file mtimes and
  hashes after the real rerun);
* adding a gloss to the subset re-acquires from the download cache (nothing is fetched again) and
  pose takes the rows of the clips it had, extracting only the new ones; the shard is
  byte-identical to a from-scratch extraction.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import sldata.pose.extract as extract_mod
from conftest import pose_settings, shared_data_dir
from pipeline_repo import job_stats, make_pipeline_repo, run
from sldata.pose.extract import CACHE_VERSIONS, extract_pose_shard

# --------------------------------------------------------------------------- the cache, in-process

# Three of the shortest WLASL100 clips (12, 13 and 18 frames), as in test_pose_extract.py.
SHORT = ("05736", "32162", "22956")
SETTINGS = pose_settings(workers=1, frame_step=2)


@pytest.fixture
def clip_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    for video_id in SHORT:
        shutil.copy(shared_data_dir() / "wlasl100_clips" / "videos" / f"{video_id}.mp4", folder / f"{video_id}.mp4")
    return folder


def clip_table(folder: Path, ids: tuple[str, ...]) -> pd.DataFrame:
    """Usable clips ``ids`` of ``folder`` plus one unusable row (it is carried, never extracted)."""
    rows = [(f"wlasl-{v}", str(folder / f"{v}.mp4"), "usable") for v in ids] + [("wlasl-unusable", None, "failed")]
    return pd.DataFrame(rows, columns=["sample_id", "clip_path", "status"])


@pytest.fixture
def extracted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sample ids the estimator is run on (workers=1 runs in this process)."""
    seen: list[str] = []
    real = extract_mod.process_clip

    def recording(estimator: Any, sample_id: str, clip_path: Any, frame_step: int = 1) -> Any:
        seen.append(sample_id)
        return real(estimator, sample_id, clip_path, frame_step=frame_step)

    monkeypatch.setattr(extract_mod, "process_clip", recording)
    return seen


def test_a_rerun_extracts_only_new_clips_and_matches_from_scratch(clip_dir: Path, tmp_path: Path,
                                                                  extracted: list[str]) -> None:
    out, cache = tmp_path / "pose" / "shard-000.parquet", tmp_path / "cache"
    first = extract_pose_shard(clip_table(clip_dir, SHORT[:2]), out, SETTINGS, progress=False, cache_dir=cache)
    assert (first["reused"], first["processed"]) == (0, 2)
    assert [p.name.split(".")[0] for p in cache.iterdir()] == ["shard-000"]

    extracted.clear()
    second = extract_pose_shard(clip_table(clip_dir, SHORT), out, SETTINGS, progress=False, cache_dir=cache)
    assert (second["reused"], second["processed"], second["clips"]) == (2, 1, 4)
    assert extracted == [f"wlasl-{SHORT[2]}"]

    scratch = tmp_path / "scratch" / "shard-000.parquet"
    extract_pose_shard(clip_table(clip_dir, SHORT), scratch, SETTINGS, progress=False)
    assert out.read_bytes() == scratch.read_bytes()


def test_changed_clips_and_settings_are_extracted_again(clip_dir: Path, tmp_path: Path,
                                                        extracted: list[str]) -> None:
    out, cache = tmp_path / "pose" / "shard-000.parquet", tmp_path / "cache"
    ids = SHORT[:2]
    extract_pose_shard(clip_table(clip_dir, ids), out, SETTINGS, progress=False, cache_dir=cache)

    # Other bytes under the same name: that clip is extracted again, the other one reused.
    shutil.copy(clip_dir / f"{SHORT[2]}.mp4", clip_dir / f"{ids[1]}.mp4")
    extracted.clear()
    summary = extract_pose_shard(clip_table(clip_dir, ids), out, SETTINGS, progress=False, cache_dir=cache)
    assert (summary["reused"], summary["processed"], extracted) == (1, 1, [f"wlasl-{ids[1]}"])

    # A keypoint setting changes the key: nothing is reused. Worker count is not such a setting.
    other = pose_settings(workers=1, frame_step=2, min_detection_confidence=0.6)
    summary = extract_pose_shard(clip_table(clip_dir, ids), out, other, progress=False, cache_dir=cache)
    assert (summary["reused"], summary["processed"]) == (0, 2)
    assert len(list(cache.iterdir())) == 2
    # Switching back reuses the earlier copy (the most recent CACHE_VERSIONS keys are kept).
    extracted.clear()
    summary = extract_pose_shard(clip_table(clip_dir, ids), out, SETTINGS, progress=False, cache_dir=cache)
    assert (summary["reused"], summary["processed"], extracted) == (2, 0, [])


def test_the_cache_keeps_the_latest_versions_per_shard(clip_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    table = clip_table(clip_dir, SHORT[:1])
    for confidence in (0.5, 0.6, 0.7, 0.8):
        settings = pose_settings(workers=1, frame_step=2, min_detection_confidence=confidence)
        extract_pose_shard(table, tmp_path / "pose" / "shard-000.parquet", settings, progress=False, cache_dir=cache)
    extract_pose_shard(table, tmp_path / "pose" / "shard-001.parquet", SETTINGS, progress=False, cache_dir=cache)
    names = Counter(p.name.split(".")[0] for p in cache.iterdir())
    assert names == {"shard-000": CACHE_VERSIONS, "shard-001": 1}


# --------------------------------------------------------------------------- the pipeline


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """``relative path -> (mtime_ns, sha256)`` of every file under ``root``."""
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def set_param(root: Path, dotted: str, value: Any) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    *path, last = dotted.split(".")
    section = params
    for key in path:
        section = section[key]
    section[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def usable_ids(root: Path, shard: str) -> set[str]:
    clips = pd.read_parquet(root / "data" / "clips" / f"shard-{shard}" / "clips.parquet")
    return set(clips.loc[clips["status"] == "usable", "sample_id"])


def ledger_rows(root: Path) -> dict[str, tuple[Any, ...]]:
    """``source_key -> (status, attempts, bytes, sha256, updated_at)`` of the live download ledgers."""
    rows: dict[str, tuple[Any, ...]] = {}
    for path in sorted((root / "data" / "cache" / "sources").glob("shard-*/ledger.parquet")):
        for r in pd.read_parquet(path).to_dict("records"):
            rows[r["source_key"]] = (r["status"], r["attempts"], r["bytes"], r["sha256"], str(r["updated_at"]))
    return rows


STAGES_BEFORE_POSE = ("manifest", "subset", "acquire", "coverage")
SHARDS = ("000", "001")


def every_4th_frame(params: dict[str, Any]) -> None:
    """Pose on every 4th frame: half the pose stage's time (the slowest stage) of the default 2."""
    params["pose"]["frame_step"] = 4


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """A finished pipeline (`all`) whose state DVC has recorded (dvc.lock), so `dvc status` can compare."""
    root = make_pipeline_repo(tmp_path_factory.mktemp("reruns"), shared, every_4th_frame)
    run([sys.executable, "-m", "snakemake", "--cores", "2", "all"], root)
    stages = [*STAGES_BEFORE_POSE, "pose", "pack_pose", "pose_summary", "train", "evaluate", "export"]
    run([sys.executable, "-m", "dvc", "commit", "--force", *stages], root)
    # `dvc commit` may relink an output (data/train/model.pt) with a new mtime, which makes the jobs
    # after it look older than their input to Snakemake: touch the outputs again, in DAG order.
    run([sys.executable, "-m", "snakemake", "--cores", "1", "--touch", "all"], root)
    assert "up to date" in run([sys.executable, "-m", "dvc", "status", "--with-deps", "export", "pose_summary"], root)
    assert "Nothing to be done" in run([sys.executable, "-m", "snakemake", "-n", "all"], root)
    return root


@pytest.mark.pipeline
def test_vtn_settings_and_runtime_knobs_rerun_nothing_of_the_pose_model(repo: Path) -> None:
    """A `models.vtn` value is read by train_hands alone; worker and thread counts by no stage."""
    params = (repo / "params.yaml").read_text()
    set_param(repo, "models.vtn.d_model", 32)
    set_param(repo, "models.vtn.num_layers", 3)
    set_param(repo, "pose.workers", 1)
    set_param(repo, "train.threads", 2)
    set_param(repo, "frames.workers", 1)
    try:
        dry = run([sys.executable, "-m", "snakemake", "-n", "all"], repo)
        assert "Nothing to be done" in dry, sorted(job_stats(dry).items())
        status = run([sys.executable, "-m", "dvc", "status", "--with-deps", "export", "pose_summary"], repo)
        assert "up to date" in status, status  # (train_hands depends on models.vtn: tests/test_stages.py)
    finally:
        (repo / "params.yaml").write_text(params)


@pytest.mark.pipeline
def test_a_pose_setting_reruns_pose_and_later_stages_only(repo: Path) -> None:
    before_clips = snapshot(repo / "data" / "clips")
    before_sources = snapshot(repo / "data" / "cache" / "sources")
    before_early = snapshot(repo / "data" / "manifest") | snapshot(repo / "data" / "subset")
    set_param(repo, "pose.min_detection_confidence", 0.6)

    dry = run([sys.executable, "-m", "snakemake", "-n", "all"], repo)
    later = {"pose": 2, "pack_pose": 1, "pose_summary": 1, "train": 1, "evaluate": 1, "export": 1, "example_clip": 1,
             "predict_example": 1, "all": 1}
    assert job_stats(dry) == later
    # Why: the pose jobs' params changed; every later job only follows its updated inputs. (Not
    # `--list-changes params`: Snakemake 9.27 lists one output of every job there, changed or not.)
    assert "params have changed since last execution:\n        pose\n" in dry.lower()
    reasons = dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    reason: (.*)$", dry, flags=re.M))
    assert reasons.keys() == later.keys()
    assert reasons["pose"].startswith("Params have changed since last execution")
    assert all(r.startswith("Input files updated by another job") for k, r in reasons.items() if k != "pose")
    status = run([sys.executable, "-m", "dvc", "status", "--with-deps", "export", "pose_summary"], repo)
    # dvc.yaml declares the pose keys the stage reads (sldata/stages.py), the changed one among them.
    assert re.findall(r"^(\w+):", status, flags=re.M) == ["pose"]
    assert re.search(r"params\.yaml:\n\s+modified:\s+pose\.min_detection_confidence\n", status), status

    out = run([sys.executable, "-m", "snakemake", "--cores", "2", "all"], repo)
    assert job_stats(out) == later
    assert snapshot(repo / "data" / "clips") == before_clips
    assert snapshot(repo / "data" / "cache" / "sources") == before_sources
    assert snapshot(repo / "data" / "manifest") | snapshot(repo / "data" / "subset") == before_early
    for shard in SHARDS:  # the cached rows were made with 0.5: every clip is extracted again
        log = (repo / "logs" / "pose" / f"shard-{shard}.log").read_text()
        assert f"shard-{shard}: 0 reused, {len(usable_ids(repo, shard))} extracted" in log
    assert "Nothing to be done" in run([sys.executable, "-m", "snakemake", "-n", "all"], repo)


@pytest.mark.pipeline
def test_added_videos_extract_only_the_new_clips(repo: Path, tmp_path: Path) -> None:
    old = {shard: usable_ids(repo, shard) for shard in SHARDS}
    old_videos = snapshot(repo / "data" / "cache" / "sources")
    old_videos = {k: v for k, v in old_videos.items() if "/videos/" in k}
    old_ledger = ledger_rows(repo)
    before_manifest = snapshot(repo / "data" / "manifest")
    # The one gloss of k=1 plus a small one: its videos land in both existing shards.
    assert '"book"' in (repo / "data" / "subset" / "label_map.json").read_text()
    set_param(repo, "subset.classes", ["book", "how"])

    targets = [f"data/pose/shard-{s}.parquet" for s in SHARDS]
    dry = run([sys.executable, "-m", "snakemake", "-n", *targets], repo)
    assert job_stats(dry) == {"subset": 1, "acquire": 2, "coverage": 1, "pose": 2}
    status = run([sys.executable, "-m", "dvc", "status", "--with-deps", "export", "pose_summary"], repo)
    assert "subset" in re.findall(r"^(\w+):", status, flags=re.M) and "manifest:" not in status
    run([sys.executable, "-m", "snakemake", "--cores", "2", *targets], repo)

    assert snapshot(repo / "data" / "manifest") == before_manifest
    # Acquisition found every earlier video in its cache: not fetched or copied into the cache again.
    sources = snapshot(repo / "data" / "cache" / "sources")
    assert {k: sources[k] for k in old_videos} == old_videos
    ledger = ledger_rows(repo)
    assert {k: ledger[k] for k in old_ledger} == old_ledger and len(ledger) > len(old_ledger)
    # Pose: the clips a shard had are taken from the cache, only the new ones extracted.
    added_total = 0
    for shard in SHARDS:
        new = usable_ids(repo, shard)
        assert old[shard] <= new
        added = len(new - old[shard])
        added_total += added
        log = (repo / "logs" / "pose" / f"shard-{shard}.log").read_text()
        assert f"shard-{shard}: {len(old[shard])} reused, {added} extracted" in log, log
    assert added_total > 0

    # Byte-identical to extracting the same clips from scratch (the smaller shard, to save time).
    shard = min(SHARDS, key=lambda s: len(usable_ids(repo, s)))
    run([sys.executable, "-m", "sldata", "pose", "--params", "params.yaml", "--clips-dir", "data/clips",
         "--shard", str(int(shard)), "--out-dir", str(tmp_path), "--no-progress"], repo)
    assert (tmp_path / f"shard-{shard}.parquet").read_bytes() == (repo / "data" / "pose" / f"shard-{shard}.parquet").read_bytes()
