"""A training run can be followed live: history.csv, metrics.json and DVCLive after every epoch."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sltrain import live as live_module
from sltrain.live import TrainingLog
from sltrain.train import train
from test_train import FEATURES, config, packed  # noqa: F401 - the fixture of real MediaPipe keypoints


@pytest.fixture()
def dvc_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work inside a fresh DVC repository (no git), as a stage run by `dvc repro` does."""
    from dvc.repo import Repo

    root = tmp_path / "repo"
    root.mkdir()
    Repo.init(str(root), no_scm=True)
    monkeypatch.chdir(root)
    return root


def tsv_steps(folder: Path, metric: str) -> list[int]:
    return pd.read_csv(folder / "dvclive" / "plots" / "metrics" / f"{metric}.tsv", sep="\t")["step"].tolist()


def test_every_epoch_is_written_while_training(packed: tuple[Path, Path], dvc_repo: Path,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    pack, labels = packed
    out = dvc_repo / "data" / "train"
    seen: list[tuple[int, dict, list[int], dict]] = []
    original = TrainingLog.epoch

    def spy(self: TrainingLog, history: list, best: dict) -> None:  # what a reader sees after each epoch
        original(self, history, best)
        seen.append((len(pd.read_csv(out / "history.csv")), json.loads((out / "metrics.json").read_text()),
                     tsv_steps(out, "val_top1"), json.loads((out / "dvclive" / "metrics.json").read_text())))

    monkeypatch.setattr(TrainingLog, "epoch", spy)
    caplog.set_level(logging.INFO, logger="sltrain.live")
    final = train(pack, labels, out, dvc_repo / "work", config(epochs=3), FEATURES, progress=False)

    assert [s[0] for s in seen] == [1, 2, 3]
    assert [s[1]["epochs_run"] for s in seen] == [1, 2, 3] and not any(s[1]["finished"] for s in seen)
    assert all(0.0 <= s[1]["val_per_instance_top1"] <= 1.0 for s in seen)
    assert [s[2] for s in seen] == [[1], [1, 2], [1, 2, 3]]
    assert [s[3]["step"] for s in seen] == [1, 2, 3]
    history = pd.read_csv(out / "history.csv")
    assert seen[-1][3]["val_top1"] == pytest.approx(history["val_top1"].iloc[-1])
    # the end: fit's final metrics replace the running ones
    assert json.loads((out / "metrics.json").read_text()) == final and final["finished"]
    lines = [r.getMessage() for r in caplog.records if r.name == "sltrain.live"]
    assert lines[0].startswith("epoch 1/3 (33.3%), ") and "ETA" in lines[0] and lines[-1].endswith("ETA 0s")


def test_a_resumed_run_replays_its_epochs_into_dvclive(packed: tuple[Path, Path], dvc_repo: Path) -> None:  # noqa: F811
    pack, labels = packed
    out, work = dvc_repo / "data" / "train", dvc_repo / "work"
    train(pack, labels, out, work, config(epochs=4), FEATURES, progress=False, max_epochs_this_run=2)
    assert tsv_steps(out, "train_loss") == [1, 2]
    shutil.rmtree(out)  # Snakemake and DVC delete a stage's outputs before rerunning it
    train(pack, labels, out, work, config(epochs=4), FEATURES, progress=False)
    assert tsv_steps(out, "train_loss") == [1, 2, 3, 4]
    assert len(pd.read_csv(out / "history.csv")) == 4


def test_outside_a_dvc_repository_only_the_csv_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # dvclive would `dvc init` an enclosing git repository: not used here
    log = TrainingLog(tmp_path / "out", epochs=10)
    rows = [{"epoch": 1, "train_loss": 2.0, "val_loss": 2.1, "val_top1": 0.25, "val_top5": 0.5, "lr": 1e-3,
             "elapsed_s": 12.0}]
    log.epoch(rows, {"epoch": 1, "val_top1": 0.25, "val_top5": 0.5, "val_loss": 2.1})
    log.close()
    assert not (tmp_path / "out" / "dvclive").exists()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["best_epoch"] == 1
    assert log.progress_line(rows) == ("epoch 1/10 (10.0%), 12.0 s/epoch, training time 12s, ETA 1m48s "
                                       "(early stopping may end it sooner)")
    assert not live_module.in_dvc_repo(tmp_path)
