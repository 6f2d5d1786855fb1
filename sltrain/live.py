"""Per-epoch files and progress of a training run, so a run can be followed while it trains.

:class:`TrainingLog` is called by :func:`sltrain.train.fit` after every epoch and

* rewrites ``out_dir/history.csv`` (one row per epoch so far) and ``out_dir/metrics.json`` (the
  best epoch so far, ``"finished": false``) atomically, so ``dvc exp show``, ``dvc metrics
  show`` and ``dvc plots show`` (which read these declared files of the ``train`` stage, also
  inside a queued experiment's folder) show the run as it goes; ``fit`` overwrites both with the
  final versions at the end;
* logs the epoch to `DVCLive <https://dvc.org/doc/dvclive>`_ in ``out_dir/dvclive/``
  (``metrics.json``, ``plots/metrics/<name>.tsv`` per metric, step = epoch), which also tells
  DVC's VS Code extension that a step finished;
* logs a progress line with the epoch count, the mean time per epoch and an ETA (the CLI's
  logging format adds the timestamp).

DVCLive is used only inside a DVC repository (it would otherwise ``dvc init`` the enclosing git
repository) and only when it is installed; the CSV and JSON files do not depend on it. A resumed
run replays its earlier epochs into a fresh DVCLive folder, because Snakemake and DVC delete a
stage's outputs before they rerun it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sldata.atomic import atomic_path, write_json
from sldata.progress import format_duration

log = logging.getLogger(__name__)

DVCLIVE_DIR = "dvclive"
LIVE_METRICS = ("train_loss", "val_loss", "val_top1", "val_top5", "lr")
"""Columns of a history row logged to DVCLive (with any ``val_<head>_top1`` of extra heads)."""


def in_dvc_repo(start: str | os.PathLike[str] | None = None) -> bool:
    """True when ``start`` (default: the working directory) is inside a DVC repository."""
    here = Path(start or os.getcwd()).resolve()
    return any((p / ".dvc").is_dir() for p in (here, *here.parents))


def running_summary(history: Sequence[Mapping[str, Any]], best: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """``metrics.json`` while training: the keys of the final metrics known so far, ``finished`` false."""
    last = history[-1] if history else {}
    return {"best_epoch": best.get("epoch"), "val_per_instance_top1": best.get("val_top1"),
            "val_per_instance_top5": best.get("val_top5"), "val_loss": best.get("val_loss"),
            "epochs_run": len(history), "epochs_planned": int(epochs), "train_time_s": last.get("elapsed_s"),
            "finished": False}


class TrainingLog:
    """What :func:`sltrain.train.fit` writes and logs after each epoch (see the module docs).

    Parameters
    ----------
    out_dir
        The training stage's output folder.
    epochs
        Epochs planned (``train.epochs``), for the ETA.
    history
        Rows of the epochs already run (a resumed run); they are replayed into DVCLive.
    enabled
        False in all but the main process of a distributed run: nothing is written or logged.
    use_dvclive
        Log to DVCLive when it is installed and the working directory is in a DVC repository.
    """

    def __init__(self, out_dir: str | os.PathLike[str], epochs: int, history: Sequence[Mapping[str, Any]] = (),
                 enabled: bool = True, use_dvclive: bool = True) -> None:
        self.out = Path(out_dir)
        self.epochs = int(epochs)
        self.enabled = enabled
        self._first_epoch = len(history)
        self._live: Any = None
        if enabled and use_dvclive and in_dvc_repo():
            self._live = self._open_dvclive(history)

    def _open_dvclive(self, history: Sequence[Mapping[str, Any]]) -> Any:
        try:
            from dvclive import Live
        except ImportError:
            log.info("dvclive is not installed: %s/history.csv and metrics.json only", self.out)
            return None
        live = Live(dir=str(self.out / DVCLIVE_DIR), resume=False, save_dvc_exp=False, dvcyaml=None)
        for row in history:
            self._log_row(live, row)
        return live

    @staticmethod
    def _log_row(live: Any, row: Mapping[str, Any]) -> None:
        live.step = int(row["epoch"])
        for name, value in row.items():
            if (name in LIVE_METRICS or (name.startswith("val_") and name.endswith("_top1"))) \
                    and isinstance(value, (int, float)):
                live.log_metric(name, float(value))
        live.make_summary()

    def epoch(self, history: Sequence[Mapping[str, Any]], best: Mapping[str, Any]) -> None:
        """After an epoch: history and running metrics written, DVCLive step logged, progress line."""
        if not self.enabled or not history:
            return
        with atomic_path(self.out / "history.csv") as tmp:
            pd.DataFrame(list(history)).to_csv(tmp, index=False)
        write_json(self.out / "metrics.json", running_summary(history, best, self.epochs))
        row = history[-1]
        if self._live is not None:
            self._log_row(self._live, row)
            try:
                from dvclive.vscode import mark_dvclive_step_completed

                mark_dvclive_step_completed(int(row["epoch"]))
            except (ImportError, OSError):  # the VS Code signal is a nicety
                pass
        log.info("%s", self.progress_line(history))

    def progress_line(self, history: Sequence[Mapping[str, Any]]) -> str:
        """``epoch 5/60 (8.3%), 6.2 s/epoch, elapsed 31s, ETA 5m41s`` (mean over this run's epochs)."""
        row = history[-1]
        done = int(row["epoch"])
        elapsed = float(row.get("elapsed_s") or 0.0)
        per_epoch = elapsed / done if done else math.nan  # elapsed_s counts resumed epochs too
        left = max(0, self.epochs - done)
        eta = left * per_epoch if left else 0.0
        text = (f"epoch {done}/{self.epochs} ({100.0 * done / max(1, self.epochs):.1f}%), {per_epoch:.1f} s/epoch, "
                f"training time {format_duration(elapsed)}, ETA {format_duration(eta)}")
        return text + (" (early stopping may end it sooner)" if left else "")

    def close(self) -> None:
        """End the DVCLive run (summary written; the VS Code signal removed)."""
        if self._live is not None:
            self._live.end()
            self._live = None


def write_dvclive(out_dir: str | os.PathLike[str], history: Sequence[Mapping[str, Any]]) -> None:
    """Log a finished history to ``out_dir/dvclive`` at once (an ensemble's mean curves, after its members trained)."""
    TrainingLog(out_dir, len(history), history).close()
