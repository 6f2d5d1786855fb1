"""Honest evaluation metrics for isolated sign recognition.

Two accuracies are reported under names that cannot be confused:

``per_instance_topk``
    the fraction of clips whose true gloss is among the ``k`` best-scored classes (what the
    WLASL papers report);
``mean_per_class_topk``
    the per-class top-k accuracy averaged over the classes *present in the labels* (what the
    MS-ASL papers report); classes without an evaluated clip are left out of the average, never
    counted as 0 or 1.

Ranking rule (ties)
-------------------
Classes are ranked by ``np.argsort(-scores, kind="stable")``: the higher score first and, among
equal scores, the lower class index first. A clip is top-k correct when its true label is in the
first ``k`` of that order, so a tie is broken the same way every run (and a model that outputs
constant scores is only "right" for class 0). NaN scores rank last.

Everything accepts an empty evaluation (``N == 0``, e.g. a split whose videos are all missing):
accuracies are then ``None`` (``null`` in JSON), never a crash or a misleading 0.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sldata.atomic import atomic_open, write_json

PREDICTION_COLUMNS: tuple[str, ...] = (
    "sample_id", "label", "gloss", "pred", "pred_gloss", "correct", "rank", "score", "top5", "signer",
)
"""Columns of the per-clip predictions frame (and ``predictions.csv``), in order. ``rank`` is the
1-based rank of the true label; ``score`` is the raw score of the predicted class; ``top5`` is the
five best glosses joined with ``"|"``."""

CONFUSION_COLUMNS: tuple[str, ...] = ("actual", "predicted")
"""Columns of ``confusion.csv``: one row per clip, the long format DVC's confusion template reads."""

UNKNOWN_SIGNER = "unknown"
_METRIC_RE = re.compile(r"^(per_instance|mean_per_class)_top(\d+)$")
_BOOT_CHUNK = 2_000_000  # resampled indices held in memory at once by bootstrap_ci


# --------------------------------------------------------------------------------------------- checks
def _as_scores_labels(scores: Any, labels: Any, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to ``float64 [N, K]`` scores and ``int64 [N]`` labels."""
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {lab.shape}")
    sc = np.asarray(scores, dtype=np.float64)
    if sc.size == 0 and lab.size == 0:
        k = num_classes if num_classes is not None else (sc.shape[1] if sc.ndim == 2 else 0)
        return np.zeros((0, k), dtype=np.float64), np.zeros(0, dtype=np.int64)
    if sc.ndim != 2:
        raise ValueError(f"scores must be 2-D [N, K], got shape {sc.shape}")
    if sc.shape[0] != lab.shape[0]:
        raise ValueError(f"scores have {sc.shape[0]} rows but there are {lab.shape[0]} labels")
    if num_classes is not None and sc.shape[1] != num_classes:
        raise ValueError(f"scores have {sc.shape[1]} columns but there are {num_classes} classes")
    if lab.dtype.kind not in "iu":
        as_int = lab.astype(np.int64)
        if not np.array_equal(as_int, lab):
            raise ValueError("labels must be integers")
        lab = as_int
    lab = lab.astype(np.int64, copy=False)
    if lab.size and (lab.min() < 0 or lab.max() >= sc.shape[1]):
        raise ValueError(f"labels must lie in [0, {sc.shape[1]}), got [{lab.min()}, {lab.max()}]")
    return sc, lab


def _ranking(scores: np.ndarray) -> np.ndarray:
    """Class indices of each row, best first (stable: ties go to the lower index; NaN last)."""
    return np.argsort(-scores, axis=1, kind="stable")


def _true_rank(scores: np.ndarray, labels: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """0-based rank of each clip's true label under :func:`_ranking`."""
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = _ranking(scores) if order is None else order
    return np.argmax(order == labels[:, None], axis=1).astype(np.int64)


def _mean_per_class(hits: np.ndarray, labels: np.ndarray) -> float | None:
    """Average over the classes present in ``labels`` of the mean of ``hits`` within the class."""
    if labels.size == 0:
        return None
    present, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse, minlength=present.size)
    correct = np.bincount(inverse, weights=hits.astype(np.float64), minlength=present.size)
    return float(np.mean(correct / counts))


# -------------------------------------------------------------------------------------------- metrics
def topk_accuracy(scores: Any, labels: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float | None]:
    """Per-instance top-k accuracy.

    Parameters
    ----------
    scores
        ``[N, K]`` logits or probabilities (only the order within a row matters).
    labels
        ``[N]`` true class indices.
    ks
        The ``k`` values; a ``k >= K`` is trivially 1.0.

    Returns
    -------
    dict
        ``{"per_instance_top{k}": fraction of clips}`` (``None`` for every ``k`` when ``N == 0``).
        Ties follow the module's ranking rule.
    """
    sc, lab = _as_scores_labels(scores, labels)
    rank = _true_rank(sc, lab)
    return {f"per_instance_top{k}": (float(np.mean(rank < k)) if lab.size else None) for k in ks}


def mean_per_class_accuracy(scores: Any, labels: Any, ks: Sequence[int] = (1, 5)) -> dict[str, float | None]:
    """Top-k accuracy of each class present in ``labels``, averaged over those classes.

    Returns
    -------
    dict
        ``{"mean_per_class_top{k}": value}``; ``None`` when ``N == 0``.
    """
    sc, lab = _as_scores_labels(scores, labels)
    rank = _true_rank(sc, lab)
    return {f"mean_per_class_top{k}": _mean_per_class(rank < k, lab) for k in ks}


def _signer_key(value: Any) -> str:
    """A JSON-safe signer key: ``str`` of the value, ``"unknown"`` for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN_SIGNER
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # signer ids read from a float column with gaps
    return str(value)


def per_signer_accuracy(scores: Any, labels: Any, signers: Any) -> dict[str, dict[str, Any]]:
    """Top-1 accuracy of each signer's clips.

    Parameters
    ----------
    signers
        ``[N]`` signer ids (strings or ints); ``None``/NaN is grouped as ``"unknown"``.

    Returns
    -------
    dict
        ``{str(signer): {"clips": n, "top1": fraction}}`` sorted by key (keys are strings so the
        result is valid JSON as it stands).
    """
    sc, lab = _as_scores_labels(scores, labels)
    sig = list(signers) if signers is not None else []
    if len(sig) != lab.size:
        raise ValueError(f"{len(sig)} signers for {lab.size} clips")
    hits = _true_rank(sc, lab) == 0
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sig):
        groups.setdefault(_signer_key(s), []).append(i)
    return {
        key: {"clips": len(idx), "top1": float(np.mean(hits[idx]))}
        for key, idx in sorted(groups.items())
    }


def bootstrap_ci(
    scores: Any,
    labels: Any,
    metric: str = "per_instance_top1",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap confidence interval of an accuracy, resampling clips.

    Parameters
    ----------
    metric
        ``"per_instance_top{k}"`` or ``"mean_per_class_top{k}"`` (for the latter each resample
        averages over the classes present in that resample).
    n_boot
        Number of resamples.
    seed
        Seed of :func:`numpy.random.default_rng`; the same inputs and seed give the same interval.
    alpha
        ``1 - alpha`` is the coverage (``0.05`` gives a 95% interval).

    Returns
    -------
    tuple
        ``(low, high)``, the ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled metric;
        ``(None, None)`` when ``N == 0``.

    Notes
    -----
    Per-clip correctness is computed once; each resample only draws indices, in chunks that keep
    memory bounded (the chunking depends only on ``N``, so results are deterministic).
    """
    m = _METRIC_RE.match(metric)
    if m is None:
        raise ValueError(f"unknown metric {metric!r}; use per_instance_top<k> or mean_per_class_top<k>")
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie in (0, 1)")
    sc, lab = _as_scores_labels(scores, labels)
    n = lab.size
    if n == 0:
        return None, None
    hits = (_true_rank(sc, lab) < int(m.group(2))).astype(np.float64)
    per_class = m.group(1) == "mean_per_class"
    present, cls = np.unique(lab, return_inverse=True)
    n_cls = present.size

    rng = np.random.default_rng(seed)
    rows = max(1, _BOOT_CHUNK // n)
    stats = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        b = min(rows, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        if not per_class:
            stats[start:start + b] = hits[idx].mean(axis=1)
            continue
        flat = (cls[idx] + n_cls * np.arange(b)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_cls).reshape(b, n_cls)
        correct = np.bincount(flat, weights=hits[idx].ravel(), minlength=b * n_cls).reshape(b, n_cls)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats[start:start + b] = np.nanmean(np.where(counts > 0, correct / counts, np.nan), axis=1)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def confusion_matrix(labels: Any, preds: Any, num_classes: int) -> np.ndarray:
    """Count matrix ``[K, K]`` (``int64``): row = true class, column = predicted class."""
    lab = np.asarray(labels, dtype=np.int64).ravel()
    prd = np.asarray(preds, dtype=np.int64).ravel()
    if lab.shape != prd.shape:
        raise ValueError(f"{lab.size} labels but {prd.size} predictions")
    for name, arr in (("labels", lab), ("preds", prd)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes})")
    flat = np.bincount(lab * num_classes + prd, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


# ----------------------------------------------------------------------------------------- evaluation
def _empty_predictions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in PREDICTION_COLUMNS})


def evaluate_predictions(
    scores: Any,
    labels: Any,
    class_names: Sequence[str],
    signers: Any = None,
    sample_ids: Any = None,
    *,
    clips_annotated: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """All metrics of one evaluation, and one prediction row per clip.

    Parameters
    ----------
    scores, labels
        ``[N, K]`` scores and ``[N]`` true labels, ``K == len(class_names)``.
    class_names
        Gloss of each class index.
    signers
        Optional ``[N]`` signer ids, for ``per_signer``.
    sample_ids
        Optional ``[N]`` clip ids; default ``0 .. N-1``.
    clips_annotated
        Clips the split annotates (evaluated or not, e.g. including clips whose video is
        missing), for ``coverage``.
    n_boot, seed
        Bootstrap of ``top1_ci95``.

    Returns
    -------
    metrics : dict
        ``per_instance_top{1,5,10}``, ``mean_per_class_top{1,5}``, ``top1_ci95`` (95% percentile
        bootstrap of ``per_instance_top1``, ``[low, high]``), ``per_signer`` (``{}`` without
        signers), ``clips_evaluated``, ``clips_annotated``, ``coverage`` (evaluated / annotated;
        0.0 when nothing was evaluated; ``None`` when unknown), ``classes_evaluated`` (classes
        present in ``labels``, over which ``mean_per_class_*`` averages) and ``num_classes``.
        With ``N == 0`` every accuracy is ``None``.
    predictions : pandas.DataFrame
        Columns :data:`PREDICTION_COLUMNS`; empty (same columns) when ``N == 0``.
    """
    names = [str(c) for c in class_names]
    k = len(names)
    sc, lab = _as_scores_labels(scores, labels, num_classes=k)
    n = lab.size
    if clips_annotated is not None and clips_annotated < n:
        raise ValueError(f"clips_annotated={clips_annotated} is below the {n} clips evaluated")
    if sample_ids is not None and len(sample_ids) != n:
        raise ValueError(f"{len(sample_ids)} sample ids for {n} clips")
    if signers is not None and len(signers) != n:
        raise ValueError(f"{len(signers)} signers for {n} clips")

    if n == 0:
        coverage: float | None = 0.0
    elif clips_annotated:
        coverage = n / clips_annotated
    else:
        coverage = None
    low, high = bootstrap_ci(sc, lab, "per_instance_top1", n_boot=n_boot, seed=seed)
    metrics: dict[str, Any] = {
        **topk_accuracy(sc, lab, (1, 5, 10)),
        **mean_per_class_accuracy(sc, lab, (1, 5)),
        "top1_ci95": [low, high],
        "per_signer": per_signer_accuracy(sc, lab, signers) if signers is not None else {},
        "clips_evaluated": int(n),
        "clips_annotated": None if clips_annotated is None else int(clips_annotated),
        "coverage": coverage,
        "classes_evaluated": int(np.unique(lab).size),
        "num_classes": k,
    }
    if n == 0:
        return metrics, _empty_predictions()

    order = _ranking(sc)
    rank = _true_rank(sc, lab, order)
    pred = order[:, 0]
    glosses = np.asarray(names, dtype=object)
    top5 = ["|".join(glosses[row]) for row in order[:, : min(5, k)]]
    predictions = pd.DataFrame({
        "sample_id": list(sample_ids) if sample_ids is not None else np.arange(n),
        "label": lab,
        "gloss": glosses[lab],
        "pred": pred,
        "pred_gloss": glosses[pred],
        "correct": pred == lab,
        "rank": rank + 1,
        "score": sc[np.arange(n), pred],
        "top5": top5,
        "signer": list(signers) if signers is not None else [None] * n,
    }, columns=list(PREDICTION_COLUMNS))
    return metrics, predictions


# -------------------------------------------------------------------------------------------- writing
def _json_safe(obj: Any) -> Any:
    """Plain JSON data: numpy scalars/arrays to Python, NaN/inf to ``None``, tuples to lists."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_evaluation(
    out_dir: str | os.PathLike[str],
    metrics: Mapping[str, Any],
    predictions: pd.DataFrame,
    confusion: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Path]:
    """Write an evaluation folder, each file atomically.

    Files
    -----
    ``metrics.json``
        ``metrics`` as plain JSON (NaN becomes ``null``), for ``dvc metrics diff``.
    ``predictions.csv``
        ``predictions`` as it stands.
    ``confusion.csv``
        Long format, one row per clip, columns ``actual`` and ``predicted`` (glosses): the
        input of DVC's ``confusion`` plot template (``x: actual, y: predicted``).
    ``confusion.png``
        Row-normalized heatmap from :func:`sltrain.plots.plot_confusion`.

    Returns
    -------
    dict
        ``{"metrics": path, "predictions": path, "confusion_csv": path, "confusion_png": path}``.
    """
    from sltrain.plots import plot_confusion  # matplotlib only when something is written

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "predictions": out / "predictions.csv",
        "confusion_csv": out / "confusion.csv",
        "confusion_png": out / "confusion.png",
    }
    write_json(paths["metrics"], _json_safe(dict(metrics)))
    with atomic_open(paths["predictions"], "w", encoding="utf-8", newline="") as fh:
        predictions.to_csv(fh, index=False)
    if len(predictions):
        long = pd.DataFrame({"actual": predictions["gloss"].astype(str).to_numpy(),
                             "predicted": predictions["pred_gloss"].astype(str).to_numpy()})
    else:
        long = pd.DataFrame({c: pd.Series(dtype=object) for c in CONFUSION_COLUMNS})
    with atomic_open(paths["confusion_csv"], "w", encoding="utf-8", newline="") as fh:
        long.to_csv(fh, index=False, columns=list(CONFUSION_COLUMNS))
    plot_confusion(confusion, class_names, paths["confusion_png"])
    return paths
