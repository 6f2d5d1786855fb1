"""The evaluation stage: the only code that reads the test split.

For each requested split the trained model (``model.pt``, a checkpoint that carries its input
spec and label map) scores every packed clip of the split; :mod:`sltrain.metrics` turns the
scores into per-instance top-1/5/10, mean per-class top-1/5, per-signer accuracy, a bootstrap
95% interval and the split's coverage (clips evaluated / clips annotated in the subset, so a
split whose videos could not be acquired says so instead of silently scoring fewer clips).
Each split gets ``out_dir/<split>/`` (``metrics.json``, ``predictions.csv``, ``confusion.csv``,
``confusion.png``); ``out_dir/metrics.json`` gathers all splits for ``dvc metrics diff``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sldata.atomic import write_json
from sltrain.checkpoint import load_checkpoint, model_from_checkpoint
from sltrain.data import PoseClips
from sltrain.metrics import confusion_matrix, evaluate_predictions, write_evaluation
from sltrain.train import evaluate_rows

log = logging.getLogger(__name__)


def score_split(model: torch.nn.Module, clips: PoseClips, split: str, batch_size: int = 64) -> np.ndarray:
    """Softmax scores ``[N, K]`` of the clips of ``split`` (deterministic, eval mode)."""
    logits, _ = evaluate_rows(model, clips, clips.rows_of(split), batch_size, torch.device("cpu"))
    if len(logits) == 0:
        return np.zeros((0, 0), np.float32)
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

def evaluate(model_path: str | os.PathLike[str], packed_dir: str | os.PathLike[str],
             samples_path: str | os.PathLike[str], splits: Sequence[str], out_dir: str | os.PathLike[str],
             seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """Evaluate ``model_path`` on ``splits``; returns the combined metrics (also written)."""
    ckpt = load_checkpoint(model_path)
    model, spec, classes = model_from_checkpoint(ckpt)
    samples = pd.read_parquet(samples_path)
    clips = PoseClips(packed_dir, tuple(splits), spec)
    out = Path(out_dir)
    trained_on = list(ckpt.get("trained_on", ["train"]))
    combined: dict[str, Any] = {"model": ckpt["model"]["name"], "trained_epochs": int(ckpt["epoch"]),
                                "trained_on": trained_on}
    for split in splits:
        rows = clips.rows_of(split)
        scores = score_split(model, clips, split)
        if len(rows) == 0:
            scores = np.zeros((0, len(classes)), np.float32)
        index = clips.index.iloc[rows]
        annotated = int((samples["split"].astype(str) == split).sum())
        metrics, predictions = evaluate_predictions(
            scores, index["label"].to_numpy(dtype=np.int64), classes, signers=index["signer_id"].astype(str).to_numpy(),
            sample_ids=index["sample_id"].astype(str).to_numpy(), clips_annotated=annotated, n_boot=n_boot, seed=seed)
        preds = scores.argmax(1) if len(scores) else np.zeros(0, np.int64)
        confusion = confusion_matrix(index["label"].to_numpy(dtype=np.int64), preds, len(classes))
        write_evaluation(out / split, metrics, predictions, confusion, classes)
        combined[split] = {k: v for k, v in metrics.items() if k != "per_signer"}
        combined[split]["held_out"] = split not in trained_on  # false: the model trained on this split
        if split in trained_on:
            log.warning("%s: the model was trained on this split (final fit); its scores here are not held out", split)
        log.info("%s: %s clips evaluated of %s annotated; per-instance top-1 %s", split, metrics.get("clips_evaluated"),
                 annotated, metrics.get("per_instance_top1"))
    write_json(out / "metrics.json", combined)
    return combined
