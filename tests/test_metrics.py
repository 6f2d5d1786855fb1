"""Evaluation metrics on small hand-made examples whose answers are worked out by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sltrain.metrics import (
    CONFUSION_COLUMNS,
    PREDICTION_COLUMNS,
    bootstrap_ci,
    confusion_matrix,
    evaluate_predictions,
    mean_per_class_accuracy,
    per_signer_accuracy,
    topk_accuracy,
    write_evaluation,
)

CLASSES = ["BOOK", "DRINK", "COMPUTER"]

# 6 clips, 3 classes; class 0 has 4 clips (all right), class 1 one clip (wrong: predicted 0,
# true class second), class 2 one clip (right).
SCORES = np.array([
    [0.9, 0.05, 0.05],
    [0.8, 0.10, 0.10],
    [0.7, 0.20, 0.10],
    [0.6, 0.30, 0.10],
    [0.5, 0.40, 0.10],   # true 1: rank 2
    [0.1, 0.20, 0.70],
])
LABELS = np.array([0, 0, 0, 0, 1, 2])
SIGNERS = ["s1", "s1", "s2", "s2", "s2", 7]


def test_per_instance_and_mean_per_class_differ() -> None:
    acc = topk_accuracy(SCORES, LABELS, ks=(1, 2, 5))
    assert acc == {"per_instance_top1": pytest.approx(5 / 6), "per_instance_top2": 1.0, "per_instance_top5": 1.0}
    mpc = mean_per_class_accuracy(SCORES, LABELS, ks=(1, 2))
    # classes: 4/4, 0/1, 1/1 -> (1 + 0 + 1) / 3
    assert mpc == {"mean_per_class_top1": pytest.approx(2 / 3), "mean_per_class_top2": 1.0}


def test_mean_per_class_ignores_absent_classes() -> None:
    # 4 classes of scores, class 3 never a label: average over classes 0 and 1 only.
    scores = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0]])
    labels = np.array([0, 1, 1])
    assert mean_per_class_accuracy(scores, labels, ks=(1,))["mean_per_class_top1"] == pytest.approx(0.75)
    assert topk_accuracy(scores, labels, ks=(1,))["per_instance_top1"] == pytest.approx(2 / 3)


def test_ties_go_to_lower_class_index() -> None:
    scores = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.5, 0.5], [np.nan, 0.2, 0.1]])
    labels = np.array([0, 1, 2, 1])
    # row 0: 0 first (right); row 1: 0 before 1 (top-2 only); row 2: rank 3; row 3: NaN ranks last -> 1 first
    acc = topk_accuracy(scores, labels, ks=(1, 2, 3))
    assert acc == {"per_instance_top1": 0.5, "per_instance_top2": 0.75, "per_instance_top3": 1.0}
    _, pred = evaluate_predictions(scores, labels, CLASSES, n_boot=10)
    assert pred["pred"].tolist() == [0, 0, 0, 1]
    assert pred["rank"].tolist() == [1, 2, 3, 1]


def test_per_signer() -> None:
    out = per_signer_accuracy(SCORES, LABELS, SIGNERS)
    assert out == {
        "7": {"clips": 1, "top1": 1.0},
        "s1": {"clips": 2, "top1": 1.0},
        "s2": {"clips": 3, "top1": pytest.approx(2 / 3)},
    }
    assert list(per_signer_accuracy(SCORES[:2], LABELS[:2], [None, float("nan")])) == ["unknown"]


def test_bootstrap_deterministic_and_contains_estimate() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(40, 3))
    labels = rng.integers(0, 3, size=40)
    a = bootstrap_ci(scores, labels, n_boot=300, seed=3)
    assert a == bootstrap_ci(scores, labels, n_boot=300, seed=3)
    point = topk_accuracy(scores, labels, ks=(1,))["per_instance_top1"]
    assert a[0] <= point <= a[1] and a[0] < a[1]
    low, high = bootstrap_ci(scores, labels, "mean_per_class_top1", n_boot=300, seed=3)
    mpc = mean_per_class_accuracy(scores, labels, ks=(1,))["mean_per_class_top1"]
    assert low <= mpc <= high
    # all right -> degenerate interval; empty -> no interval
    assert bootstrap_ci(SCORES[:4], LABELS[:4], n_boot=50) == (1.0, 1.0)
    assert bootstrap_ci(np.zeros((0, 3)), np.zeros(0, dtype=int)) == (None, None)
    with pytest.raises(ValueError):
        bootstrap_ci(SCORES, LABELS, metric="accuracy")


def test_confusion_matrix() -> None:
    cm = confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 0, 2], 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 0], 3)


def test_evaluate_predictions() -> None:
    metrics, pred = evaluate_predictions(SCORES, LABELS, CLASSES, signers=SIGNERS,
                                         sample_ids=list("abcdef"), clips_annotated=8, n_boot=100)
    assert metrics["per_instance_top1"] == pytest.approx(5 / 6)
    assert metrics["mean_per_class_top1"] == pytest.approx(2 / 3)
    assert metrics["clips_evaluated"] == 6 and metrics["clips_annotated"] == 8
    assert metrics["coverage"] == pytest.approx(0.75)
    assert metrics["num_classes"] == 3 and metrics["classes_evaluated"] == 3
    low, high = metrics["top1_ci95"]
    assert low <= 5 / 6 <= high
    assert metrics["per_signer"]["s2"]["clips"] == 3
    assert list(pred.columns) == list(PREDICTION_COLUMNS)
    row = pred.iloc[4]
    assert (row["sample_id"], row["gloss"], row["pred_gloss"], bool(row["correct"])) == ("e", "DRINK", "BOOK", False)
    assert row["top5"] == "BOOK|DRINK|COMPUTER" and row["score"] == pytest.approx(0.5)
    assert row["signer"] == "s2"
    with pytest.raises(ValueError):
        evaluate_predictions(SCORES, LABELS, CLASSES[:2])


def test_empty_evaluation_does_not_crash(tmp_path: Path) -> None:
    metrics, pred = evaluate_predictions(np.zeros((0, 3)), np.zeros(0, dtype=int), CLASSES,
                                         signers=[], sample_ids=[], clips_annotated=12, n_boot=10)
    assert metrics["clips_evaluated"] == 0 and metrics["coverage"] == 0.0
    for key in ("per_instance_top1", "per_instance_top5", "mean_per_class_top1", "mean_per_class_top5"):
        assert metrics[key] is None
    assert metrics["top1_ci95"] == [None, None]
    assert len(pred) == 0 and list(pred.columns) == list(PREDICTION_COLUMNS)
    # a bare empty array (no K dimension) is accepted too
    assert evaluate_predictions(np.array([]), [], CLASSES, n_boot=10)[0]["coverage"] == 0.0

    write_evaluation(tmp_path, metrics, pred, confusion_matrix([], [], 3), CLASSES)
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert loaded["per_instance_top1"] is None and loaded["clips_evaluated"] == 0
    with open(tmp_path / "confusion.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [list(CONFUSION_COLUMNS)]
    assert (tmp_path / "predictions.csv").read_text().strip() == ",".join(PREDICTION_COLUMNS)
    assert (tmp_path / "confusion.png").stat().st_size > 0


def test_write_evaluation(tmp_path: Path) -> None:
    metrics, pred = evaluate_predictions(SCORES, LABELS, CLASSES, signers=SIGNERS, n_boot=50)
    metrics["odd"] = np.float32("nan")  # NaN and numpy scalars must become plain JSON
    cm = confusion_matrix(pred["label"], pred["pred"], 3)
    paths = write_evaluation(tmp_path / "eval", metrics, pred, cm, CLASSES)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "confusion.csv", "confusion.png", "metrics.json", "predictions.csv"]
    text = paths["metrics"].read_text()
    assert "NaN" not in text
    loaded = json.loads(text)
    assert loaded["odd"] is None and math.isclose(loaded["per_instance_top1"], 5 / 6)
    with open(paths["confusion_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["actual", "predicted"] and len(rows) == 6
    assert rows[4] == {"actual": "DRINK", "predicted": "BOOK"}
    with open(paths["predictions"], newline="") as fh:
        assert next(csv.reader(fh)) == list(PREDICTION_COLUMNS)
