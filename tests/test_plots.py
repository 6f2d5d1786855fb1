"""Figures: decodable PNGs of the expected size, identical bytes for identical input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.image import imread

from sltrain.plots import _select_classes, plot_confusion, plot_training_curves

CM = np.array([[3, 1, 0], [0, 2, 0], [1, 0, 0]])
NAMES = ["BOOK", "DRINK", "$PRICE"]  # '$' must not start mathtext


def test_confusion_png_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_confusion(CM, NAMES, a)
    plot_confusion(CM, NAMES, b)
    assert a.read_bytes() == b.read_bytes()
    assert b"Software" not in a.read_bytes()
    img = imread(a)
    assert img.shape[:2] == (400, 500)  # 4 x 5 inches at 100 dpi


def test_confusion_many_classes_subset(tmp_path: Path) -> None:
    cm = np.diag([5, 1, 4, 2, 3])
    assert _select_classes(cm, 3).tolist() == [0, 2, 4]
    out = tmp_path / "cm.png"
    plot_confusion(cm, list("ABCDE"), out, normalize=False, max_classes=3)
    assert imread(out).ndim == 3
    plot_confusion(np.zeros((2, 2)), ["A", "B"], out)  # no clips: still a figure


def test_training_curves(tmp_path: Path) -> None:
    history = [
        {"epoch": 1, "train_loss": 2.0, "val_loss": 2.2, "val_top1": 0.1, "lr": 1e-3},
        {"epoch": 2, "train_loss": 1.5, "val_loss": None, "val_top1": 0.3, "lr": 5e-4},
    ]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_training_curves(history, a)
    plot_training_curves(history, b)
    assert a.read_bytes() == b.read_bytes()
    assert imread(a).shape[:2] == (380, 1350)  # 3 panels of 4.5 x 3.8 inches at 100 dpi
    plot_training_curves([], tmp_path / "empty.png")
    assert imread(tmp_path / "empty.png").shape[:2] == (380, 900)
