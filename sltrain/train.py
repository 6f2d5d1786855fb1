"""One readable training loop, :func:`fit`, for every model, configured by params.yaml.

* **Entry points.** :func:`train`: a pose model (``features``, ``train``, ``models``) on the
  packed keypoints (:class:`sltrain.data.PoseClips`); :func:`train_rgb`: the RGB clip model
  (``train_rgb``) on the frames stage's output (:class:`sltrain.clip_data.RGBClips`);
  :func:`train_hands`: the VTN (``train_hands``) on hand crops and the keypoints of the same
  frames (:class:`sltrain.clip_data.HandClips`). Each builds its data source, input spec and
  model builder and hands them to :func:`fit`.
* **Data.** Splits ``train`` and ``val`` only: the test split is read by the evaluation stage
  alone.
* **Heads.** ``heads`` (HearAI style): the loss is
  :func:`sltrain.models.heads.multi_head_loss`, the weighted sum of each head's cross entropy;
  ``gloss`` reads the label, other heads a column of the clip table or of the sample table
  (:class:`sltrain.data.HeadTargets`). Model selection uses the gloss head only.
* **Freezing.** ``freeze``: ``{prefix: epochs}`` (:class:`sltrain.models.heads.FreezeSchedule`),
  applied at the start of every epoch, for every model (all have ``backbone`` and ``heads``).
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
  ``history.csv`` and ``metrics.json`` are also rewritten after every epoch, and each epoch is
  logged to DVCLive in ``out_dir/dvclive`` (:class:`sltrain.live.TrainingLog`), so a run can be
  followed live.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sldata.annotations.jsonfile import sha256_of
from sldata.atomic import atomic_path, write_json
from sldata.pose.store import load_packed
from sldata.settings import settings_from_dict
from sltrain.augment import PoseAugment
from sltrain.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from sltrain.clip_inputs import ClipAugment, ClipInputSpec
from sltrain.data import ClipSource, HeadTargets, PoseClips, read_samples
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
    processes: int = 1
    device: str = "auto"
    freeze: dict[str, int] = field(default_factory=dict)
    load_weights: str = ""
    augment: dict[str, Any] = field(default_factory=dict)
    heads: dict[str, dict[str, Any]] = field(default_factory=lambda: {"gloss": {"column": "label", "weight": 1.0}})

    @classmethod
    def from_params(cls, train: Mapping[str, Any], models: Mapping[str, Any], section: str = "train") -> TrainConfig:
        """From a training section (``train``, or ``train_rgb``/``train_hands`` without ``input``) and
        ``models``; the chosen model's config comes from ``models``."""
        from sltrain.models.factory import model_config_from_params

        data = dict(train)
        name = data.get("model", cls.model)
        if name not in models:
            raise ValueError(f"{section}.model is {name!r} but params has no models.{name} section "
                             f"(models: {sorted(models)})")
        data["model_config"] = model_config_from_params(name, models[name])
        data["freeze"] = {k: int(v) for k, v in dict(data.get("freeze", {})).items() if int(v) > 0}
        if "heads" in data:
            data["heads"] = {str(k): dict(v) for k, v in dict(data["heads"]).items()}
            gloss = data["heads"].get("gloss")
            if gloss is None or gloss.get("column") != "label":
                raise ValueError(f"{section}.heads needs a 'gloss' head with column 'label', got {data['heads']}")
        return settings_from_dict(cls, data, section)


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


def to_device(inputs: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's input arrays as tensors on ``device``."""
    return {name: torch.from_numpy(value).to(device) for name, value in inputs.items()}


def predict_rows(model: torch.nn.Module, clips: ClipSource, rows: np.ndarray, batch_size: int,
                 device: torch.device) -> tuple[dict[str, np.ndarray], float]:
    """Logits ``{head: [N, K]}`` over ``rows`` (eval mode, deterministic) and the gloss head's mean loss."""
    model.eval()
    out: dict[str, list[np.ndarray]] = {}
    losses = []
    with torch.no_grad():
        for b in clips.iter_batches(rows, batch_size):
            logits = model(to_device(b.inputs, device))
            losses.append(torch.nn.functional.cross_entropy(logits["gloss"], torch.from_numpy(b.labels).to(device),
                                                            reduction="sum").item())
            for name, value in logits.items():
                out.setdefault(name, []).append(value.float().cpu().numpy())
    logits = {name: np.concatenate(parts) for name, parts in out.items()}
    return logits, (sum(losses) / max(1, len(rows)))


def evaluate_rows(model: torch.nn.Module, clips: ClipSource, rows: np.ndarray, batch_size: int,
                  device: torch.device) -> tuple[np.ndarray, float]:
    """Logits ``[N, K]`` of the gloss head over ``rows`` (eval mode, deterministic) and the mean loss."""
    logits, loss = predict_rows(model, clips, rows, batch_size, device)
    return logits.get("gloss", np.zeros((0, 0), np.float32)), loss


def top_k(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest logits (rows labelled -1 are left out)."""
    keep = labels >= 0
    if not keep.any():
        return float("nan")
    ranked = np.argsort(-logits[keep], axis=1, kind="stable")[:, :k]
    return float((ranked == labels[keep][:, None]).any(1).mean())


def _params_payload(params: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(params)))


def train(packed_dir: str | os.PathLike[str], label_map_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
          work_dir: str | os.PathLike[str], cfg: TrainConfig, features: FeatureConfig,
          params: Mapping[str, Any] | None = None, progress: bool = True,
          max_epochs_this_run: int | None = None,
          samples_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
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
    samples_path
        The subset's ``samples.parquet``: columns for heads that the pack's index lacks.
    """
    from sltrain.models.factory import build_pose_model

    torch.set_num_threads(cfg.threads)
    _, _, meta = load_packed(packed_dir)
    spec = features.input_spec(meta["skeleton"])
    clips = PoseClips(packed_dir, ("train", "val"), spec)
    return fit(clips, _augmenter(cfg, spec),
               lambda heads: build_pose_model(cfg.model, dict(cfg.model_config), spec, heads),
               spec.to_dict(), f"input {spec.num_frames} frames x {spec.num_points} points x {spec.num_channels} channels",
               {"train": dataclasses.asdict(cfg), "features": dataclasses.asdict(features)}, label_map_path, out_dir,
               work_dir, cfg, params, progress, max_epochs_this_run, samples_path, source=packed_dir)


@dataclass(frozen=True)
class ClipInputConfig:
    """``input`` of ``train_rgb`` (``num_frames``, ``size``) or ``train_hands`` (also the keypoint features,
    keys as in ``features``)."""

    num_frames: int = 16
    size: int = 64
    points: str = "upper_body_hands"
    normalize: bool = True
    velocity: bool = False
    acceleration: bool = False
    pose_flow: bool = True
    fill_missing: bool = True
    hand_local: bool = False

    @classmethod
    def from_params(cls, data: Mapping[str, Any], section: str) -> ClipInputConfig:
        return settings_from_dict(cls, data, f"{section}.input")

    def pose_features(self) -> FeatureConfig:
        return FeatureConfig(points=self.points, num_frames=self.num_frames, normalize=self.normalize,
                             velocity=self.velocity, acceleration=self.acceleration, pose_flow=self.pose_flow,
                             fill_missing=self.fill_missing, hand_local=self.hand_local)


def clip_section(section: Mapping[str, Any], models: Mapping[str, Any],
                 name: str) -> tuple[TrainConfig, ClipInputConfig]:
    """A ``train_rgb`` or ``train_hands`` params section as a :class:`TrainConfig` and its ``input``."""
    data = dict(section)
    clip_input = ClipInputConfig.from_params(dict(data.pop("input", {})), name)
    return TrainConfig.from_params(data, models, section=name), clip_input


def train_rgb(frames_dir: str | os.PathLike[str], samples_path: str | os.PathLike[str],
              label_map_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], work_dir: str | os.PathLike[str],
              cfg: TrainConfig, clip_input: ClipInputConfig, params: Mapping[str, Any] | None = None,
              progress: bool = True, max_epochs_this_run: int | None = None,
              source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train the RGB clip model on the frames stage's output; returns the metrics (as :func:`train`).

    Parameters
    ----------
    frames_dir
        Output of the frames stage (``shard-NNN`` folders).
    samples_path
        The subset's ``samples.parquet`` (labels and splits; only train and val rows are read).
    cfg, clip_input
        The ``train_rgb`` section (see :func:`clip_section`).
    source
        What the frames are (the ``frames`` params), recorded in the input spec.
    """
    from sltrain.clip_data import RGBClips
    from sltrain.models.factory import build_clip_model

    torch.set_num_threads(cfg.threads)
    spec = ClipInputSpec(kind="rgb", num_frames=clip_input.num_frames, size=clip_input.size,
                         source={"frames": dict(source or {})})
    samples = read_samples(samples_path)
    clips = RGBClips(frames_dir, samples, ("train", "val"), spec)
    return fit(clips, ClipAugment.from_dict(cfg.augment),
               lambda heads: build_clip_model(cfg.model, dict(cfg.model_config), spec, heads),
               spec.to_dict(), spec.describe(), {"train": dataclasses.asdict(cfg), "input": spec.to_dict()},
               label_map_path, out_dir, work_dir, cfg, params, progress, max_epochs_this_run, samples_path,
               source=frames_dir)


def train_hands(hand_crops_dir: str | os.PathLike[str], packed_dir: str | os.PathLike[str],
                label_map_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                work_dir: str | os.PathLike[str], cfg: TrainConfig, clip_input: ClipInputConfig,
                params: Mapping[str, Any] | None = None, progress: bool = True,
                max_epochs_this_run: int | None = None, samples_path: str | os.PathLike[str] | None = None,
                source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train the VTN on hand crops and the pose features of the same frames; returns the metrics.

    Parameters
    ----------
    hand_crops_dir
        Output of the hand-crop stage (``shard-NNN`` folders).
    packed_dir
        Output of the pack stage (labels, splits and keypoints of the same clips).
    cfg, clip_input
        The ``train_hands`` section (see :func:`clip_section`).
    samples_path
        The subset's ``samples.parquet``: columns for heads that the pack's index lacks.
    source
        What the crops are (the ``hand_crops`` params), recorded in the input spec.
    """
    from sltrain.clip_data import HandClips
    from sltrain.models.factory import build_clip_model

    torch.set_num_threads(cfg.threads)
    _, index, meta = load_packed(packed_dir)
    pose = clip_input.pose_features().input_spec(meta["skeleton"])
    fps = float(np.median(index["fps"].to_numpy(dtype=np.float64))) if len(index) else float("nan")
    spec = ClipInputSpec(kind="hands", num_frames=clip_input.num_frames, size=clip_input.size, pose=pose.to_dict(),
                         source={"hand_crops": dict(source or {}), "keypoint_fps": fps})
    clips = HandClips(hand_crops_dir, packed_dir, ("train", "val"), spec)
    return fit(clips, ClipAugment.from_dict(cfg.augment),
               lambda heads: build_clip_model(cfg.model, dict(cfg.model_config), spec, heads),
               spec.to_dict(), spec.describe(), {"train": dataclasses.asdict(cfg), "input": spec.to_dict()},
               label_map_path, out_dir, work_dir, cfg, params, progress, max_epochs_this_run, samples_path,
               source=hand_crops_dir)


def fit(clips: ClipSource, augment: Any, build_model: Callable[[dict[str, Any]], torch.nn.Module],
        input_spec: dict[str, Any], input_description: str, config_record: dict[str, Any],
        label_map_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], work_dir: str | os.PathLike[str],
        cfg: TrainConfig, params: Mapping[str, Any] | None, progress: bool, max_epochs_this_run: int | None,
        samples_path: str | os.PathLike[str] | None, source: str | os.PathLike[str] = "") -> dict[str, Any]:
    """The training loop (see the module docs); returns the metrics written to ``out_dir/metrics.json``.

    Parameters
    ----------
    clips
        Train and val clips (:class:`sltrain.data.ClipSource`).
    augment
        Passed to ``clips.batch`` with one seeded generator per clip.
    build_model
        ``heads config -> model``.
    input_spec
        The input spec's dict, stored in checkpoints.
    input_description
        One line for the log.
    config_record
        Everything that shapes the run; a ``last.pt`` made with another record is not resumed.
    """
    from sldata.progress import Progress
    from sltrain import distributed as dist
    from sltrain.live import TrainingLog
    from sltrain.models.factory import count_parameters
    from sltrain.models.heads import FreezeSchedule, multi_head_loss

    out, work = Path(out_dir), Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    ctx = dist.init_distributed(device)  # one process unless started by torchrun (sltrain.distributed)
    device = dist.device_for(ctx, device)
    progress = progress and ctx.is_main
    label_map = json.loads(Path(label_map_path).read_text(encoding="utf-8"))
    classes = [str(g) for g in label_map["glosses"]]
    train_rows, val_rows = clips.rows_of("train"), clips.rows_of("val")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(f"{source}: need train and val clips, found {len(train_rows)} / {len(val_rows)}")
    needs_samples = any(h["column"] not in clips.index.columns for h in cfg.heads.values())
    targets = HeadTargets(cfg.heads, clips.index, train_rows, classes,
                          read_samples(samples_path) if needs_samples else None)
    heads = targets.model_heads()

    torch.manual_seed(cfg.seed)
    model = build_model(heads).to(device)
    if cfg.load_weights:
        from sltrain.models.rgb_s3d import load_pretrained

        log.info("%s", load_pretrained(model, cfg.load_weights).summary())
    net = dist.wrap_model(model, ctx, device, find_unused=bool(cfg.freeze))  # the model itself in one process
    steps_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.warmup_epochs * steps_per_epoch, total_steps))
    freeze = FreezeSchedule(cfg.freeze) if cfg.freeze else None

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
        elif ckpt is not None and ckpt["state"].get("best_sha256") != sha256_of(best_path):
            # e.g. a run with another config wrote best.pt and was killed before its last.pt
            log.warning("%s is not the best checkpoint %s recorded; starting afresh", best_path, last)
            ckpt = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state"])
        opt.load_state_dict(ckpt["state"]["optimizer"])
        sched.load_state_dict(ckpt["state"]["scheduler"])
        torch.set_rng_state(ckpt["state"]["torch_rng"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt["state"]["history"])
        best, stale, elapsed = dict(ckpt["state"]["best"]), int(ckpt["state"]["stale"]), float(ckpt["state"]["elapsed_s"])
        log.info("resuming from %s after epoch %d", last, start_epoch)

    log.info("model %s: %d parameters; %d train / %d val clips; %s; heads %s", cfg.model, count_parameters(model),
             len(train_rows), len(val_rows), input_description,
             ", ".join(f"{k} ({v['num_classes']} classes, weight {v['weight']})" for k, v in heads.items()))

    def payload(epoch: int, with_state: bool) -> dict[str, Any]:
        description: dict[str, Any] = {"name": cfg.model, "config": dict(cfg.model_config), "heads": heads}
        if targets.extra:
            description["head_targets"] = targets.record()
        p: dict[str, Any] = {
            "format": FORMAT,
            "model": description,
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "input_spec": input_spec,
            "label_map": {**label_map, "classes": classes},
            "params": _params_payload(params or config_record),
            "epoch": epoch,
        }
        if with_state:
            p["state"] = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "torch_rng": torch.get_rng_state(), "history": history, "best": best, "stale": stale,
                          "elapsed_s": elapsed, "config": config_record,
                          "best_sha256": sha256_of(work / "best.pt")}
        return p

    epochs_run = 0
    epoch = start_epoch
    live = TrainingLog(out, cfg.epochs, history, enabled=ctx.is_main)  # history.csv, metrics.json, dvclive per epoch
    for epoch in range(start_epoch, cfg.epochs):
        if stale >= cfg.patience or (max_epochs_this_run is not None and epochs_run >= max_epochs_this_run):
            break
        t0 = time.perf_counter()
        if freeze is not None:
            freeze.apply(model, epoch)
        net.train()
        order = train_rows[np.random.default_rng([cfg.seed, epoch]).permutation(len(train_rows))]
        total_loss, seen = 0.0, 0
        bar = Progress(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       bar=progress, log_edges=False, quiet=not ctx.is_main)
        for start in bar:  # one optimizer step per batch
            batch_rows = order[start:start + cfg.batch_size]
            rows, share = dist.local_rows(batch_rows, ctx)  # all of them in one process
            rngs = [np.random.default_rng([cfg.seed, epoch, int(r)]) for r in rows]
            b = clips.batch(rows, augment, rngs)
            logits = net(to_device(b.inputs, device))
            batch_targets = {name: torch.from_numpy(t).to(device) for name, t in targets.targets(rows).items()}
            loss, _ = multi_head_loss(logits, batch_targets, heads, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            (loss * share).backward()  # share: this process's part of the global batch mean (1 in one process)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total_loss += loss.item() * len(rows) if share else 0.0
            seen += len(rows) if share else 0
            bar.set_postfix(loss=f"{total_loss / max(1, seen):.3f}")
        total_loss, seen = dist.all_reduce_sum(total_loss, ctx), int(dist.all_reduce_sum(seen, ctx))
        val_logits, val_loss = predict_rows(model, clips, val_rows, 2 * cfg.batch_size, device)
        val_targets = targets.targets(val_rows)
        top1 = top_k(val_logits["gloss"], val_targets["gloss"], 1)
        top5 = top_k(val_logits["gloss"], val_targets["gloss"], 5)
        elapsed += time.perf_counter() - t0
        epochs_run += 1
        row = {"epoch": epoch + 1, "train_loss": total_loss / seen, "val_loss": val_loss, "val_top1": top1,
               "val_top5": top5, "lr": opt.param_groups[0]["lr"], "elapsed_s": round(elapsed, 1)}
        for name in targets.extra:  # other heads: their val top-1 (never used for model selection)
            row[f"val_{name}_top1"] = top_k(val_logits[name], val_targets[name], 1)
        history.append(row)
        log.info("epoch %d: train loss %.3f, val loss %.3f, val top-1 %.3f, top-5 %.3f (%.0f s)", epoch + 1,
                 total_loss / seen, val_loss, top1, top5, elapsed)
        # Files: the best checkpoint, then the resumable state (every epoch).
        if top1 > best["val_top1"]:
            best, stale = {"val_top1": top1, "val_top5": top5, "val_loss": val_loss, "epoch": epoch + 1}, 0
            if ctx.is_main:
                save_checkpoint(best_path, payload(epoch + 1, with_state=False))
        else:
            stale += 1
        if ctx.is_main:
            save_checkpoint(last, payload(epoch + 1, with_state=True))
        live.epoch(history, best)

    metrics = {"best_epoch": best["epoch"], "val_per_instance_top1": best["val_top1"],
               "val_per_instance_top5": best.get("val_top5"), "val_loss": best.get("val_loss"),
               "epochs_run": len(history), "train_time_s": round(elapsed, 1), "train_clips": int(len(train_rows)),
               "val_clips": int(len(val_rows)), "model": cfg.model, "device": str(device),
               "finished": bool(stale >= cfg.patience or len(history) >= cfg.epochs)}
    if ctx.enabled:
        metrics["processes"] = ctx.world_size
    # Files: the stage's outputs.
    if ctx.is_main:
        with atomic_path(out / "model.pt") as tmp:
            shutil.copyfile(best_path, tmp)
        _write_history(out, history)
        write_json(out / "metrics.json", metrics)
    live.close()
    dist.barrier(ctx)
    dist.shutdown(ctx)
    return metrics


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    from sltrain.plots import plot_training_curves

    frame = pd.DataFrame(history)
    with atomic_path(out / "history.csv") as tmp:
        frame.to_csv(tmp, index=False)
    plot_training_curves(history, out / "curves.png")
