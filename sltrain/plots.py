"""Evaluation and training figures, drawn with matplotlib's Agg backend.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot global
state, safe in workers and without a display) and written atomically as PNG without the
``Software`` metadata, so the same input gives the same bytes with the same matplotlib.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sldata.atomic import atomic_path

PNG_METADATA: dict[str, Any] = {"Software": None}
"""PNG text chunks: none (matplotlib writes no timestamp into PNGs; the version is dropped)."""


def _text(label: Any) -> str:
    """A label shown literally (a ``$`` would otherwise start mathtext)."""
    return str(label).replace("$", r"\$")


def _save(fig: Figure, out_png: str | os.PathLike[str], dpi: int) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata=PNG_METADATA)


def _select_classes(confusion: np.ndarray, max_classes: int) -> np.ndarray:
    """Indices of the classes shown: all, or the ``max_classes`` with most clips (kept in index order)."""
    k = confusion.shape[0]
    if k <= max_classes:
        return np.arange(k)
    support = confusion.sum(axis=1)
    keep = np.argsort(-support, kind="stable")[:max_classes]
    return np.sort(keep)


def plot_confusion(
    confusion: Any,
    class_names: Sequence[str],
    out_png: str | os.PathLike[str],
    normalize: bool = True,
    max_classes: int = 100,
    title: str | None = None,
    dpi: int = 100,
) -> None:
    """Heatmap of a confusion matrix with gloss tick labels.

    Parameters
    ----------
    confusion
        ``[K, K]`` counts, rows true, columns predicted (:func:`sltrain.metrics.confusion_matrix`).
    class_names
        ``K`` glosses.
    out_png
        Output file, written atomically.
    normalize
        Show each row as fractions of its clips (recall per class); rows without clips stay 0.
    max_classes
        Above this many classes only the ``max_classes`` classes with most clips are shown (rows
        and columns); the title says so. Accuracy in the title is always over all clips.
    title
        Prefix of the title (default ``"Confusion"``).
    dpi
        Resolution; the figure grows with the number of classes shown (at most 20 inches).
    """
    cm = np.asarray(confusion, dtype=np.float64)
    k = cm.shape[0]
    if cm.ndim != 2 or cm.shape[1] != k:
        raise ValueError(f"confusion must be square [K, K], got {cm.shape}")
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k}x{k} confusion matrix")
    total = cm.sum()
    acc = float(np.trace(cm) / total) if total > 0 else math.nan
    keep = _select_classes(cm, max_classes)
    shown = cm[np.ix_(keep, keep)]
    if normalize:
        rows = shown.sum(axis=1, keepdims=True)
        shown = np.divide(shown, rows, out=np.zeros_like(shown), where=rows > 0)
    names = [_text(class_names[i]) for i in keep]
    m = len(keep)

    side = float(min(20.0, max(4.0, 2.5 + 0.14 * m)))
    fontsize = float(min(8.0, max(2.0, 360.0 / max(m, 1))))
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(shown, cmap="Blues", interpolation="nearest", aspect="equal",
                      vmin=0.0, vmax=1.0 if normalize else max(float(shown.max()), 1.0))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label="fraction of true class" if normalize else "clips")
    ax.set_xticks(np.arange(m))
    ax.set_yticks(np.arange(m))
    ax.set_xticklabels(names, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    acc_text = "n/a" if math.isnan(acc) else f"{acc:.1%}"
    head = f"{_text(title) if title else 'Confusion'}: top-1 {acc_text} over {int(total)} clips"
    if m < k:
        head += f"\n({m} of {k} classes with most clips shown)"
    ax.set_title(head, fontsize=10)
    fig.tight_layout()
    _save(fig, out_png, dpi)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """Values of ``key`` per epoch, NaN where absent or ``None``."""
    out = np.full(len(history), np.nan)
    for i, row in enumerate(history):
        v = row.get(key)
        if v is not None:
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                pass
    return out


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    out_png: str | os.PathLike[str],
    dpi: int = 100,
) -> None:
    """Loss and accuracy per epoch (and the learning rate when recorded).

    Parameters
    ----------
    history
        One dict per epoch, e.g. ``{"epoch", "train_loss", "val_loss", "val_top1", "lr"}``. Every
        key ending in ``loss`` goes to the loss panel, every key containing ``top`` or ``acc`` to
        the accuracy panel, ``lr`` to a third panel; missing/``None`` values are gaps. The x axis
        is ``epoch`` when present, else 1, 2, ...
    out_png
        Output file, written atomically.
    """
    rows = list(history)
    keys: list[str] = []
    for row in rows:
        keys += [key for key in row if key not in keys]
    x = _series(rows, "epoch") if "epoch" in keys else np.arange(1, len(rows) + 1, dtype=np.float64)
    panels = [
        ("loss", [k for k in keys if k.endswith("loss")]),
        ("accuracy", [k for k in keys if k != "epoch" and ("top" in k or "acc" in k)]),
    ]
    if "lr" in keys:
        panels.append(("learning rate", ["lr"]))

    fig = Figure(figsize=(4.5 * len(panels), 3.8))
    for i, (ylabel, series_keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key in series_keys:
            ax.plot(x, _series(rows, key), marker="o", markersize=2.5, linewidth=1.2, label=_text(key))
        if ylabel == "learning rate" and np.nanmax(np.r_[_series(rows, "lr"), 0.0]) > 0.0:
            ax.set_yscale("log")
        if ylabel == "accuracy":
            values = np.concatenate([_series(rows, k) for k in series_keys] + [np.zeros(1)])
            if np.nanmax(values) <= 1.0:  # fractions; percentages keep the automatic limits
                ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if series_keys:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        if not rows:
            ax.set_title("no epochs", fontsize=9)
    fig.tight_layout()
    _save(fig, out_png, dpi)
