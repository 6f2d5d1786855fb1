"""`make demo` in a fresh repository: the whole path to a recognised held-out clip, in its own folders;
`snakemake --report` on it carries the curves, the confusion matrix, the pose summary and the overlay.

The CI smoke test of the whole path. It runs the Makefile's own `demo` recipe, shrunk (one more
config file in DEMO_CONFIG) to two glosses (about 30 clips), three epochs and the tiny model of
tests/pipeline_repo.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO_ROOT
from pipeline_repo import make_pipeline_repo, run

pytestmark = [pytest.mark.pipeline, pytest.mark.timeout(1800)]  # a loaded 2-core machine took 21 min

SHRINK = {"subset": {"classes": ["same", "give"]}, "train": {"epochs": 3}}
DEMO_CONFIG = "DEMO_CONFIG=pipeline/demo.yaml small.yaml"
TIMESTAMP = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO "


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> tuple[Path, str]:
    root = make_pipeline_repo(tmp_path_factory.mktemp("demo"), shared)
    shutil.copy(REPO_ROOT / "Makefile", root / "Makefile")
    (root / "small.yaml").write_text(yaml.safe_dump(SHRINK))
    # -o: the virtual environment counts as made (the tests' interpreter is first on PATH).
    out = run(["make", "-o", ".venv/.installed", "demo", DEMO_CONFIG], root)
    return root, out


def test_demo_ends_with_a_recognised_held_out_clip(demo: tuple[Path, str]) -> None:
    root, out = demo
    example = json.loads((root / "data/demo/example/example.json").read_text())
    assert example["split"] == "val" and example["held_out"] and example["gloss"] in ("same", "give")
    samples = pd.read_parquet(root / "data/demo/subset/samples.parquet")
    assert example["sample_id"] in set(samples.loc[samples["split"] == "val", "sample_id"])
    assert f"held-out val clip {example['sample_id']}, signed gloss: {example['gloss']}" in out
    top = re.findall(r"^\s+\d\. (\w+)\s+(\d\.\d{4})$", out, flags=re.M)
    assert sorted(g for g, _ in top) == ["give", "same"]
    assert abs(sum(float(s) for _, s in top) - 1.0) < 1e-3
    assert re.search(r"^make demo: \d+ s wall clock, CPU \d+ s user \+ \d+ s system$", out, flags=re.M), out
    overlay = (root / "data/demo/example/overlay.png").read_bytes()
    assert overlay.startswith(b"\x89PNG") and len(overlay) > 10_000
    card = (root / "data/demo/export/sign-recognizer/1/MODEL_CARD.md").read_text()
    val = json.loads((root / "data/demo/eval/metrics.json").read_text())["val"]
    assert f"| val | {val['clips_evaluated']} / {val['clips_annotated']} (100.0%) |" in card
    assert "| test | 0 / " in card and "C-UDA" in card and "same, give" in card


def test_demo_keeps_to_its_own_folders_and_logs_progress(demo: tuple[Path, str]) -> None:
    root, _ = demo
    assert sorted(p.name for p in (root / "data").iterdir()) == ["demo"]  # make all's data/ untouched
    assert not (root / "logs" / "manifest.log").exists() and (root / "logs/demo/manifest.log").is_file()
    assert (root / "benchmarks/demo/pose/shard-000.tsv").is_file()
    pose_log = (root / "logs/demo/pose/shard-000.log").read_text()
    assert re.search(TIMESTAMP + r"sldata.progress: pose shard-000: started, \d+ clips to do$", pose_log, re.M)
    assert re.search(TIMESTAMP + r"sldata.progress: pose shard-000: done, (\d+)/\1 clips", pose_log, re.M)
    train_log = (root / "logs/demo/train.log").read_text()
    # Ensemble members train side by side (train.ensemble_jobs): each line names its member.
    train = yaml.safe_load((root / "params.yaml").read_text())["train"]
    for member in (train["ensemble"] if train["ensemble_jobs"] > 1 else None) or [None]:
        tag = rf"\[{member}\] " if member else ""
        assert re.search(TIMESTAMP + rf"sltrain.live: {tag}epoch 3/3 \(100.0%\), [\d.]+ s/epoch, .*ETA 0s$", train_log,
                         re.M), member
    history = pd.read_csv(root / "data/demo/train/history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    live = pd.read_csv(root / "data/demo/train/dvclive/plots/metrics/val_top1.tsv", sep="\t")
    assert live["step"].tolist() == [1, 2, 3] and live["val_top1"].tolist() == pytest.approx(history["val_top1"])


def test_rerun_is_a_noop_and_the_report_carries_the_pictures(demo: tuple[Path, str]) -> None:
    root, _ = demo
    out = run(["make", "-o", ".venv/.installed", "demo", DEMO_CONFIG], root)
    assert "Nothing to be done" in out and "signed gloss" in out
    report = root / "report.html"
    snakemake = [sys.executable, "-m", "snakemake", "all", "--configfile", "pipeline/demo.yaml", "small.yaml",
                 "--report", str(report)]
    log = run(snakemake, root)
    added = set(re.findall(r"Adding (\S+) \(", log))
    assert {"curves.png", "confusion.png", "summary.png", "overlay.png", "prediction.txt"} <= added, log
    html = report.read_text()
    assert all(name in html for name in added) and "held-out" in html


def test_demo_params_change_only_sizes_and_folders() -> None:
    """The demo must follow params.yaml's model and training settings as they change: it may only override
    folders and sizes (the class subset, shards, epochs)."""
    demo = yaml.safe_load((REPO_ROOT / "pipeline" / "demo.yaml").read_text())
    allowed = {"data_dir", "logs_dir", "benchmarks_dir", "subset", "shards", "train"}
    assert set(demo) <= allowed and set(demo["subset"]) == {"classes"} and set(demo["train"]) == {"epochs"}
    assert set(demo["shards"]) == {"count"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all", "--configfile", "pipeline/demo.yaml"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr  # valid against the schema when merged


def test_mediapipe_pose_config_changes_only_the_engine_and_folders() -> None:
    """pipeline/mediapipe-pose.yaml: make all's pose path with MediaPipe's own Holistic, in data/mp only."""
    config = yaml.safe_load((REPO_ROOT / "pipeline" / "mediapipe-pose.yaml").read_text())
    assert config == {"data_dir": "data/mp", "logs_dir": "logs/mp", "benchmarks_dir": "benchmarks/mp",
                      "pose": {"estimator": "mediapipe"}}
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "pack_pose", "--forceall", "--configfile",
                             "pipeline/mediapipe-pose.yaml"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "data/mp/pose/shard-000.parquet" in result.stdout and "data/pose/shard-000.parquet" not in result.stdout
