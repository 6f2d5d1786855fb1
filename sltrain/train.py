"""One readable training loop for the pose models, configured by params.yaml (``features``, ``train``).

* **Data.** :class:`sltrain.data.PoseClips` over the packed keypoints, splits ``train`` and
  ``val`` only: the test split is read by the evaluation stage alone.
* **Determinism.** Every random choice derives from ``train.seed``: the model's initial
  weights (``torch.manual_seed``), the epoch's clip order (``default_rng([seed, epoch])``) and
  each clip's augmentation (``default_rng([seed, epoch, row])``). Same seed, data and machine:
  same metrics.
* **Exact resume.** After every epoch ``work_dir/last.pt`` holds the model, optimizer,
  scheduler, torch RNG state, history and best score (written atomically). A killed run
  restarted with the same config continues from it and ends where an uninterrupted run would.
  ``work_dir`` is a cache outside the stage outputs (Snakemake and DVC delete outputs before
  rerunning a stage); a different config starts afresh.
* **Model selection** on val top-1 only: ``work_dir/best.pt`` is the best epoch; training
  stops early after ``patience`` epochs without improvement.
* **Outputs** in ``out_dir``: ``model.pt`` (the best checkpoint), ``history.csv`` (one row per
  epoch, for ``dvc plots``), ``curves.png`` and ``metrics.json`` (best val scores, epochs, time).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sldata.atomic import atomic_path, write_json
from sldata.pose.store import load_packed
from sldata.settings import settings_from_dict
from sltrain.augment import PoseAugment
from sltrain.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from sltrain.data import PoseClips
from sltrain.inputs import InputSpec, point_preset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureConfig:
    """``features`` in params.yaml: which points and channels the model sees, and the clip length."""

    points: str = "upper_body_hands"
    num_frames: int = 64
    normalize: bool = True
    velocity: bool = True
    acceleration: bool = False
    pose_flow: bool = False
    fill_missing: bool = True
    hand_local: bool = False

    def input_spec(self, skeleton: Mapping[str, Any]) -> InputSpec:
        from sldata.pose.skeleton import Skeleton

        sk = Skeleton.from_dict(dict(skeleton))
        feats = {k: getattr(self, k) for k in ("normalize", "velocity", "acceleration", "pose_flow", "fill_missing")}
        return InputSpec(skeleton=sk.to_dict(), points=point_preset(self.points, sk), features=feats,
                         num_frames=self.num_frames, hand_local=self.hand_local)


@dataclass(frozen=True)
class TrainConfig:
    """``train`` in params.yaml (see the schema for each key's meaning)."""

    seed: int = 0
    model: str = "pose_transformer"
    model_config: dict[str, Any] = field(default_factory=dict)
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    patience: int = 20
    threads: int = 2
    device: str = "auto"
    freeze: dict[str, int] = field(default_factory=dict)
    load_weights: str = ""
    augment: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, train: Mapping[str, Any], models: Mapping[str, Any]) -> TrainConfig:
        """From the ``train`` and ``models`` sections; the chosen model's config comes from ``models``."""
        data = dict(train)
        name = data.get("model", cls.model)
        if name not in models:
            raise ValueError(f"train.model is {name!r} but params has no models.{name} section "
                             f"(models: {sorted(models)})")
        data["model_config"] = dict(models[name])
        data["freeze"] = {k: int(v) for k, v in dict(data.get("freeze", {})).items() if int(v) > 0}
        return settings_from_dict(cls, data, "train")


def resolve_device(name: str) -> torch.device:
    """``auto``: a CUDA GPU when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _augmenter(cfg: TrainConfig, spec: InputSpec) -> PoseAugment:
    data = dict(cfg.augment)
    for key in ("scale", "speed"):  # params spell ranges as two numbers (DVC cannot template lists)
        if f"{key}_min" in data:
            data[f"{key}_range"] = (data.pop(f"{key}_min"), data.pop(f"{key}_max"))
    data["missing"] = "nan"  # raw keypoints: a missing point is NaN, its confidence 0
    return PoseAugment.from_dict(data, skeleton=spec.skeleton_obj)


def evaluate_rows(model: torch.nn.Module, clips: PoseClips, rows: np.ndarray, batch_size: int,
                  device: torch.device) -> tuple[np.ndarray, float]:
    """Logits ``[N, K]`` of the gloss head over ``rows`` (eval mode, deterministic) and the mean loss."""
    model.eval()
    out, losses = [], []
    with torch.no_grad():
        for b in clips.iter_batches(rows, batch_size):
            logits = model({"pose": torch.from_numpy(b.pose).to(device), "mask": torch.from_numpy(b.mask).to(device)})["gloss"]
            losses.append(torch.nn.functional.cross_entropy(logits, torch.from_numpy(b.labels).to(device),
                                                            reduction="sum").item())
            out.append(logits.float().cpu().numpy())
    logits = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    return logits, (sum(losses) / max(1, len(rows)))


def _params_payload(params: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(params)))


def train(packed_dir: str | os.PathLike[str], label_map_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
          work_dir: str | os.PathLike[str], cfg: TrainConfig, features: FeatureConfig,
          params: Mapping[str, Any] | None = None, progress: bool = True,
          max_epochs_this_run: int | None = None) -> dict[str, Any]:
    """Train a pose model; returns the metrics written to ``out_dir/metrics.json``.

    Parameters
    ----------
    packed_dir
        Output of the pack stage.
    label_map_path
        ``label_map.json`` of the subset stage (class names, in label order).
    out_dir
        Where the final model, history and metrics go.
    work_dir
        Resumable state (``last.pt``, ``best.pt``); an existing ``last.pt`` made with the same
        config is resumed, one made with another config is replaced.
    params
        The params sections recorded in the checkpoints.
    max_epochs_this_run
        Stop after this many epochs of this invocation (tests use it to simulate a kill).
    """
    from tqdm import tqdm

    from sltrain.models.factory import build_pose_model, count_parameters
    from sltrain.models.heads import FreezeSchedule

    out, work = Path(out_dir), Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    label_map = json.loads(Path(label_map_path).read_text(encoding="utf-8"))
    classes = [str(g) for g in label_map["glosses"]]
    _, _, meta = load_packed(packed_dir)
    spec = features.input_spec(meta["skeleton"])
    clips = PoseClips(packed_dir, ("train", "val"), spec)
    train_rows, val_rows = clips.rows_of("train"), clips.rows_of("val")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(f"{packed_dir}: need train and val clips, found {len(train_rows)} / {len(val_rows)}")
    heads = {"gloss": {"num_classes": len(classes), "weight": 1.0}}
    config_record = {"train": dataclasses.asdict(cfg), "features": dataclasses.asdict(features)}

    torch.manual_seed(cfg.seed)
    model = build_pose_model(cfg.model, dict(cfg.model_config), spec, heads).to(device)
    if cfg.load_weights:
        from sltrain.models.rgb_s3d import load_pretrained

        log.info("%s", load_pretrained(model, cfg.load_weights).summary())
    steps_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.warmup_epochs * steps_per_epoch, total_steps))
    freeze = FreezeSchedule(cfg.freeze) if cfg.freeze else None
    augment = _augmenter(cfg, spec)

    start_epoch, history, best, stale, elapsed = 0, [], {"val_top1": -1.0, "epoch": -1}, 0, 0.0
    last, best_path = work / "last.pt", work / "best.pt"
    ckpt = None
    if last.is_file():
        try:
            ckpt = load_checkpoint(last)
        except CheckpointError as exc:
            log.warning("%s; starting afresh", exc)
        if ckpt is not None and (ckpt.get("state", {}).get("config") != config_record
                                 or ckpt["label_map"]["classes"] != classes or not best_path.is_file()):
            log.warning("%s was made with another config or data; starting afresh", last)
            ckpt = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state"])
        opt.load_state_dict(ckpt["state"]["optimizer"])
        sched.load_state_dict(ckpt["state"]["scheduler"])
        torch.set_rng_state(ckpt["state"]["torch_rng"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt["state"]["history"])
        best, stale, elapsed = dict(ckpt["state"]["best"]), int(ckpt["state"]["stale"]), float(ckpt["state"]["elapsed_s"])
        log.info("resuming from %s after epoch %d", last, start_epoch)

    log.info("model %s: %d parameters; %d train / %d val clips; input %d frames x %d points x %d channels",
             cfg.model, count_parameters(model), len(train_rows), len(val_rows), spec.num_frames, spec.num_points,
             spec.num_channels)

    def payload(epoch: int, with_state: bool) -> dict[str, Any]:
        p: dict[str, Any] = {
            "format": FORMAT,
            "model": {"name": cfg.model, "config": dict(cfg.model_config), "heads": heads},
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "input_spec": spec.to_dict(),
            "label_map": {**label_map, "classes": classes},
            "params": _params_payload(params or config_record),
            "epoch": epoch,
        }
        if with_state:
            p["state"] = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "torch_rng": torch.get_rng_state(), "history": history, "best": best, "stale": stale,
                          "elapsed_s": elapsed, "config": config_record}
        return p

    epochs_run = 0
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if stale >= cfg.patience or (max_epochs_this_run is not None and epochs_run >= max_epochs_this_run):
            break
        t0 = time.perf_counter()
        if freeze is not None:
            freeze.apply(model, epoch)
        model.train()
        order = train_rows[np.random.default_rng([cfg.seed, epoch]).permutation(len(train_rows))]
        total_loss, seen = 0.0, 0
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not progress, leave=False)
        for start in bar:
            rows = order[start:start + cfg.batch_size]
            rngs = [np.random.default_rng([cfg.seed, epoch, int(r)]) for r in rows]
            b = clips.batch(rows, augment, rngs)
            logits = model({"pose": torch.from_numpy(b.pose).to(device), "mask": torch.from_numpy(b.mask).to(device)})["gloss"]
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(b.labels).to(device),
                                                     label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total_loss += loss.item() * len(rows)
            seen += len(rows)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")
        logits, val_loss = evaluate_rows(model, clips, val_rows, 2 * cfg.batch_size, device)
        labels = clips.labels[val_rows]
        top1 = float((logits.argmax(1) == labels).mean())
        top5 = float((np.argsort(-logits, axis=1, kind="stable")[:, :5] == labels[:, None]).any(1).mean())
        elapsed += time.perf_counter() - t0
        epochs_run += 1
        history.append({"epoch": epoch + 1, "train_loss": total_loss / seen, "val_loss": val_loss, "val_top1": top1,
                        "val_top5": top5, "lr": opt.param_groups[0]["lr"], "elapsed_s": round(elapsed, 1)})
        log.info("epoch %d: train loss %.3f, val loss %.3f, val top-1 %.3f, top-5 %.3f (%.0f s)", epoch + 1,
                 total_loss / seen, val_loss, top1, top5, elapsed)
        if top1 > best["val_top1"]:
            best, stale = {"val_top1": top1, "val_top5": top5, "val_loss": val_loss, "epoch": epoch + 1}, 0
            save_checkpoint(best_path, payload(epoch + 1, with_state=False))
        else:
            stale += 1
        save_checkpoint(last, payload(epoch + 1, with_state=True))

    metrics = {"best_epoch": best["epoch"], "val_per_instance_top1": best["val_top1"],
               "val_per_instance_top5": best.get("val_top5"), "val_loss": best.get("val_loss"),
               "epochs_run": len(history), "train_time_s": round(elapsed, 1), "train_clips": int(len(train_rows)),
               "val_clips": int(len(val_rows)), "model": cfg.model, "device": str(device),
               "finished": bool(stale >= cfg.patience or len(history) >= cfg.epochs)}
    with atomic_path(out / "model.pt") as tmp:
        shutil.copyfile(best_path, tmp)
    _write_history(out, history)
    write_json(out / "metrics.json", metrics)
    return metrics


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    from sltrain.plots import plot_training_curves

    frame = pd.DataFrame(history)
    with atomic_path(out / "history.csv") as tmp:
        frame.to_csv(tmp, index=False)
    plot_training_curves(history, out / "curves.png")
