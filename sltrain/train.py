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
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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
    """``features`` in params.yaml: which points and channels the model sees, and the clip length.

    No defaults: every value comes from params (:meth:`from_params`) or is given by the caller.
    """

    points: str
    num_frames: int
    normalize: bool
    velocity: bool
    acceleration: bool
    pose_flow: bool
    fill_missing: bool
    hand_local: bool
    interpolate_max_gap: int
    canonical_hand: bool

    @classmethod
    def from_params(cls, features: Mapping[str, Any]) -> FeatureConfig:
        """From the ``features`` params section; unknown or missing keys raise ``ValueError`` naming them."""
        return settings_from_dict(cls, features, "features")

    def input_spec(self, skeleton: Mapping[str, Any], recording: Mapping[str, Any] | None = None) -> InputSpec:
        """The input spec for keypoints of ``skeleton``, recorded as ``recording`` says (the pack's metadata)."""
        from sldata.pose.skeleton import Skeleton

        sk = Skeleton.from_dict(dict(skeleton))
        feats = {k: getattr(self, k) for k in ("normalize", "velocity", "acceleration", "pose_flow", "fill_missing",
                                               "interpolate_max_gap")}
        return InputSpec(skeleton=sk.to_dict(), points=point_preset(self.points, sk), features=feats,
                         num_frames=self.num_frames, hand_local=self.hand_local, canonical_hand=self.canonical_hand,
                         recording=dict(recording or {}))


@dataclass(frozen=True)
class TrainConfig:
    """``train`` in params.yaml (see the schema for each key's meaning), with the chosen model's
    ``model_config``. No defaults: :meth:`from_params` fills every field from params."""

    seed: int
    model: str
    model_config: dict[str, Any]
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    label_smoothing: float
    grad_clip: float
    patience: int
    threads: int
    processes: int
    device: str
    freeze: dict[str, int]
    load_weights: str
    augment: dict[str, Any]
    heads: dict[str, dict[str, Any]]
    mixup_alpha: float
    mixup_prob: float
    ensemble: dict[str, dict[str, Any]]
    ensemble_weights: str
    flip_tta: bool
    loader_workers: int
    final_fit: bool
    ensemble_jobs: int

    def __post_init__(self) -> None:
        if self.ensemble_weights not in ENSEMBLE_WEIGHTS:
            raise ValueError(f"ensemble_weights must be one of {ENSEMBLE_WEIGHTS}, got {self.ensemble_weights!r}")

    def member(self, name: str) -> TrainConfig:
        """The config of ensemble member ``name``: this one with the member's model, seed and mirror rate."""
        m = self.ensemble[name]
        return dataclasses.replace(self, model=m["model"], model_config=dict(m["model_config"]), seed=int(m["seed"]),
                                   augment={**self.augment, "flip_prob": float(m["flip_prob"])}, ensemble={},
                                   ensemble_jobs=1)

    @property
    def mirror_tta(self) -> bool:
        """Whether the model averages each clip with its mirror image when scoring: with ``flip_tta``, a
        model trained on mirrored clips (``augment.flip_prob`` > 0) does."""
        return self.flip_tta and float(self.augment.get("flip_prob", 0.0)) > 0.0

    def model_build_config(self) -> dict[str, Any]:
        """``model_config`` plus ``flip_tta`` (see :attr:`mirror_tta`) for :func:`build_pose_model`."""
        return {**self.model_config, "flip_tta": True} if self.mirror_tta else dict(self.model_config)

    @classmethod
    def from_params(cls, train: Mapping[str, Any], models: Mapping[str, Any], section: str = "train") -> TrainConfig:
        """From a training section (``train``, or ``train_rgb``/``train_hands`` without ``input``) and
        ``models``; the chosen model's config comes from ``models``."""
        from sltrain.models.factory import model_config_from_params

        data = dict(train)
        name = data["model"]
        if name not in models:
            raise ValueError(f"{section}.model is {name!r} but params has no models.{name} section "
                             f"(models: {sorted(models)})")
        data["model_config"] = model_config_from_params(name, models[name])
        data["freeze"] = {k: int(v) for k, v in dict(data["freeze"]).items() if int(v) > 0}
        data["heads"] = {str(k): dict(v) for k, v in dict(data["heads"]).items()}
        gloss = data["heads"].get("gloss")
        if gloss is None or gloss.get("column") != "label":
            raise ValueError(f"{section}.heads needs a 'gloss' head with column 'label', got {data['heads']}")
        data["augment"] = dict(data["augment"])
        if data["ensemble"]:
            members = {}
            for member, entry in dict(data["ensemble"]).items():
                entry = dict(entry)
                unknown = sorted(set(entry) - {"model", "seed", "flip_prob"})
                if unknown or {"model", "seed", "flip_prob"} - set(entry):
                    raise ValueError(f"{section}.ensemble.{member} needs exactly model, seed and flip_prob; got "
                                     f"{sorted(entry)}")
                if entry["model"] not in models:
                    raise ValueError(f"{section}.ensemble.{member}.model is {entry['model']!r} but params has no "
                                     f"models.{entry['model']} section (models: {sorted(models)})")
                members[str(member)] = {**entry, "model_config": model_config_from_params(entry["model"],
                                                                                          models[entry["model"]])}
            data["ensemble"] = members
        return settings_from_dict(cls, data, section)


ENSEMBLE_WEIGHTS: tuple[str, ...] = ("equal", "val")
"""``train.ensemble_weights``: equal mixture weights, or weights fitted on the val predictions."""


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
    return augmenter_for(cfg.augment, spec)


def augmenter_for(augment: Mapping[str, Any], spec: InputSpec) -> PoseAugment:
    """The ``augment`` params as a :class:`PoseAugment` on the points of ``spec.layout``.

    The mirror permutation and the centre (the shoulders) are those of the layout's points, which
    :class:`sltrain.data.PoseClips` cuts from each clip before augmenting it.
    """
    data = dict(augment)
    for key in ("scale", "speed"):  # params spell ranges as two numbers (DVC cannot template lists)
        if f"{key}_min" in data:
            data[f"{key}_range"] = (data.pop(f"{key}_min"), data.pop(f"{key}_max"))
    data["missing"] = "nan"  # raw keypoints: a missing point is NaN, its confidence 0
    layout = spec.layout
    if "hand_drop_prob" in data:  # params name the parts this drops: the hands
        data["part_drop_prob"] = data.pop("hand_drop_prob")
        data["part_drop_max_fraction"] = data.pop("hand_drop_max_fraction", 0.5)
        hands = []
        for part in ("left_hand", "right_hand"):
            try:
                sl = layout.part_slice(part)
            except KeyError:
                continue
            hands.append(tuple(range(sl.start, sl.stop)))
        data["drop_parts"] = tuple(hands)
    center = tuple(layout.index(p) for p in ("body.left_shoulder", "body.right_shoulder") if p in layout.names)
    flip = tuple(int(i) for i in spec.layout_flip) if data.get("flip_prob", 0.0) > 0 else None
    return PoseAugment.from_dict({"flip_index": flip, "center_indices": center, **data})


class _EpochBatches(torch.utils.data.Dataset):
    """The augmented batches of one epoch, batch ``i`` made from ``rows[i]`` (for a loader worker)."""

    def __init__(self, clips: ClipSource, rows: list[np.ndarray], augment: Any, seed: int, epoch: int) -> None:
        self.clips, self.rows, self.augment, self.seed, self.epoch = clips, rows, augment, seed, epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        rows = self.rows[i]
        rngs = [np.random.default_rng([self.seed, self.epoch, int(r)]) for r in rows]
        return self.clips.batch(rows, self.augment, rngs)


def _as_is(item: Any) -> Any:
    return item


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


FORK_UNSAFE_MODULES = ("openvino", "mediapipe", "jax", "tensorflow")
"""Libraries whose native thread pools make forking this process unsafe; training in a process that
loaded one (a notebook, a test session), or a data-parallel process (``train.processes`` > 1),
prepares batches in-process (the single-process ``train`` CLI loads none of them)."""


def epoch_batches(clips: ClipSource, rows: list[np.ndarray], augment: Any, seed: int, epoch: int,
                  workers: int) -> Iterator[Any]:
    """The epoch's batches in order; with ``workers`` > 0 they are prepared in that many worker processes
    while the model trains on the previous ones. Each clip's augmentation is seeded by ``(seed, epoch,
    row)``, so the batches are the same either way."""
    dataset = _EpochBatches(clips, rows, augment, seed, epoch)
    if workers > 0:
        unsafe = [m for m in FORK_UNSAFE_MODULES if m in sys.modules]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            unsafe.append("torch.distributed (its communication threads)")  # seen: a deadlock with gloo
        if unsafe:  # their native threads and fork handlers make a forked worker unsafe (seen: a segfault)
            if epoch == 0:
                log.warning("loader workers off in this process: %s is loaded (batches are the same, only slower)",
                            ", ".join(unsafe))
            workers = 0
    if workers <= 0:
        return (dataset[i] for i in range(len(dataset)))
    # Its own generator: a loader draws worker seeds from it, which would otherwise consume the global
    # torch RNG (dropout) and make a run depend on the number of workers.
    generator = torch.Generator().manual_seed(seed)
    return iter(torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                            collate_fn=_as_is, prefetch_factor=4, worker_init_fn=_one_thread,
                                            multiprocessing_context="fork", generator=generator))


def mixup_plan(cfg: TrainConfig, rng: np.random.Generator, size: int) -> tuple[float, np.ndarray] | None:
    """Whether this batch is mixed (``mixup_prob``) and how: ``(lambda ~ Beta(alpha, alpha), partner of each row)``."""
    if cfg.mixup_alpha <= 0 or cfg.mixup_prob <= 0 or size < 2 or rng.random() >= cfg.mixup_prob:
        return None
    return float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha)), rng.permutation(size)


def mix_inputs(inputs: Mapping[str, np.ndarray], lam: float, partner: np.ndarray) -> dict[str, np.ndarray]:
    """Mixup of a batch: float inputs blended ``lam * x + (1 - lam) * x[partner]``, masks joined (OR)."""
    out = {}
    for name, value in inputs.items():
        if value.dtype == bool:
            out[name] = value | value[partner]
        else:
            out[name] = (lam * value + (1.0 - lam) * value[partner]).astype(value.dtype, copy=False)
    return out


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
    torch.set_num_threads(cfg.threads)
    clips, spec, description = _pose_clips(packed_dir, features)

    def fit_one(one: TrainConfig, out: str | os.PathLike[str], work: str | os.PathLike[str],
                on_val: bool = False) -> dict[str, Any]:
        return fit_pose_model(clips, spec, description, one, features, params, label_map_path, out, work, progress,
                              max_epochs_this_run, samples_path, packed_dir, on_val)

    def final_fit(one: TrainConfig, selected: Mapping[str, Any], work: Path) -> Path:
        """Retrain on train + val for the epochs val chose (``train.final_fit``); returns its output folder."""
        epochs = max(1, int(selected["best_epoch"]))
        log.info("final fit on train + val: %d epochs (the best val epoch of the selection run)", epochs)
        final = dataclasses.replace(one, epochs=epochs, warmup_epochs=min(one.warmup_epochs, epochs))
        fit_one(final, work / "final" / "out", work / "final", on_val=True)
        return work / "final" / "out"

    work = Path(work_dir)
    if not cfg.ensemble:
        metrics = fit_one(cfg, out_dir, work)
        if cfg.final_fit and metrics.get("finished", True):
            publish_final_fit(final_fit(cfg, metrics, work), out_dir, metrics)
        return metrics
    jobs = min(cfg.ensemble_jobs, len(cfg.ensemble))
    if jobs > 1 and cfg.processes == 1 and max_epochs_this_run is None:
        member_metrics = _fit_members_side_by_side(jobs, packed_dir, label_map_path, work, cfg, features, params,
                                                   progress, samples_path)
    else:
        member_metrics = {}
        for name in cfg.ensemble:
            log.info("ensemble member %s (%d of %d)", name, len(member_metrics) + 1, len(cfg.ensemble))
            member_metrics[name] = fit_one(cfg.member(name), work / name / "out", work / name)
            if not member_metrics[name].get("finished", True) and max_epochs_this_run is not None:
                return member_metrics[name]  # a test's simulated kill: the next run resumes this member
    finals = None
    if cfg.final_fit:
        finals = {name: final_fit(cfg.member(name), member_metrics[name], work / name) for name in cfg.ensemble}
    return assemble_ensemble(clips, {name: work / name / "out" for name in cfg.ensemble}, member_metrics,
                             cfg, out_dir, params, final_dirs=finals)


def _pose_clips(packed_dir: str | os.PathLike[str], feature_cfg: FeatureConfig) -> tuple[PoseClips, InputSpec, str]:
    """The train and val clips of a pack, their input spec and a one-line description for the log."""
    _, _, meta = load_packed(packed_dir)
    spec = feature_cfg.input_spec(meta["skeleton"], meta.get("recording"))
    clips = PoseClips(packed_dir, ("train", "val"), spec)
    return clips, spec, f"input {spec.num_frames} frames x {spec.num_points} points x {spec.num_channels} channels"


def fit_pose_model(clips: PoseClips, spec: InputSpec, description: str, one: TrainConfig, feature_cfg: FeatureConfig,
                   params: Mapping[str, Any] | None, label_map_path: str | os.PathLike[str],
                   out: str | os.PathLike[str], work: str | os.PathLike[str], progress: bool,
                   max_epochs_this_run: int | None, samples_path: str | os.PathLike[str] | None,
                   packed_dir: str | os.PathLike[str], on_val: bool = False) -> dict[str, Any]:
    """:func:`fit` of one pose model (a single model, or one ensemble member) on ``clips``."""
    from sltrain.models.factory import build_pose_model

    return fit(clips, augmenter_for(one.augment, spec),
               lambda heads: build_pose_model(one.model, one.model_build_config(), spec, heads),
               spec.to_dict(), description,
               {"train": dataclasses.asdict(one), "features": dataclasses.asdict(feature_cfg), "final_fit": on_val},
               label_map_path, out, work, one, params, progress, max_epochs_this_run, samples_path,
               source=packed_dir, model_config=one.model_build_config(), fit_on_val=on_val)


def _fit_member_process(name: str, packed_dir: str, label_map_path: str, work: str, one: TrainConfig,
                        feature_cfg: FeatureConfig, params: Mapping[str, Any] | None, progress: bool,
                        samples_path: str | None) -> dict[str, Any]:
    """One ensemble member, in a process of its own (see :func:`_fit_members_side_by_side`)."""
    from sldata.progress import LOG_DATEFMT, LOG_FORMAT

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT.replace("%(message)s", f"[{name}] %(message)s"),
                        datefmt=LOG_DATEFMT, force=True)
    clips, spec, description = _pose_clips(packed_dir, feature_cfg)
    return fit_pose_model(clips, spec, description, one, feature_cfg, params, label_map_path, Path(work) / "out",
                          work, progress, None, samples_path, packed_dir)


def _fit_members_side_by_side(jobs: int, packed_dir: str | os.PathLike[str], label_map_path: str | os.PathLike[str],
                              work: Path, cfg: TrainConfig, feature_cfg: FeatureConfig,
                              params: Mapping[str, Any] | None, progress: bool,
                              samples_path: str | os.PathLike[str] | None) -> dict[str, dict[str, Any]]:
    """Train the ensemble's members ``jobs`` at a time (``train.ensemble_jobs``), each in a fresh process.

    A member is seeded by its own config and trains at ``train.threads`` threads, so it learns the
    same weights as in the one-after-the-other loop (tested); only the wall time changes. The
    processes are spawned, not forked: the parent may hold OpenMP or loader-worker state.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    log.info("ensemble: %d members, %d at a time in their own processes", len(cfg.ensemble), jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(_fit_member_process, name, str(packed_dir), str(label_map_path),
                                     str(work / name), cfg.member(name), feature_cfg, params, progress,
                                     None if samples_path is None else str(samples_path))
                   for name in cfg.ensemble}
        return {name: future.result() for name, future in futures.items()}


@dataclass(frozen=True)
class ClipInputConfig:
    """``input`` of ``train_rgb`` (``num_frames``, ``size``) or ``train_hands`` (also the keypoint features,
    keys as in ``features``). ``train_rgb`` has no keypoints: its sections give ``num_frames`` and ``size``
    only, the others stay None."""

    num_frames: int
    size: int
    points: str | None = None
    normalize: bool | None = None
    velocity: bool | None = None
    acceleration: bool | None = None
    pose_flow: bool | None = None
    fill_missing: bool | None = None
    hand_local: bool | None = None

    @classmethod
    def from_params(cls, data: Mapping[str, Any], section: str) -> ClipInputConfig:
        return settings_from_dict(cls, data, f"{section}.input")

    def pose_features(self) -> FeatureConfig:
        """The keypoint features of a ``train_hands`` input (no gap interpolation or canonical hand there)."""
        if self.points is None:
            raise ValueError("this clip input has no keypoint settings (train_rgb reads frames only)")
        return FeatureConfig(points=self.points, num_frames=self.num_frames, normalize=bool(self.normalize),
                             velocity=bool(self.velocity), acceleration=bool(self.acceleration),
                             pose_flow=bool(self.pose_flow), fill_missing=bool(self.fill_missing),
                             hand_local=bool(self.hand_local), interpolate_max_gap=0, canonical_hand=False)


CLIP_TRAINER_FIXED: dict[str, Any] = {
    "processes": 1, "loader_workers": 0, "mixup_alpha": 0.0, "mixup_prob": 0.0, "flip_tta": False,
    "ensemble": {}, "ensemble_weights": "equal", "final_fit": False, "ensemble_jobs": 1,
}
""":class:`TrainConfig` fields that ``train_rgb`` and ``train_hands`` have no params for: those trainers
run in one process with no mixup, mirror averaging, ensemble or final fit."""


def clip_section(section: Mapping[str, Any], models: Mapping[str, Any],
                 name: str) -> tuple[TrainConfig, ClipInputConfig]:
    """A ``train_rgb`` or ``train_hands`` params section as a :class:`TrainConfig` and its ``input``."""
    data = dict(section)
    clip_input = ClipInputConfig.from_params(dict(data.pop("input")), name)
    clash = sorted(set(data) & set(CLIP_TRAINER_FIXED))
    if clash:
        raise ValueError(f"{name}: {clash} are not settings of the clip trainers")
    return TrainConfig.from_params({**data, **CLIP_TRAINER_FIXED}, models, section=name), clip_input


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
    pose = clip_input.pose_features().input_spec(meta["skeleton"], meta.get("recording"))
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
        samples_path: str | os.PathLike[str] | None, source: str | os.PathLike[str] = "",
        model_config: Mapping[str, Any] | None = None, fit_on_val: bool = False) -> dict[str, Any]:
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
    model_config
        The model description's ``config`` stored in checkpoints (default ``cfg.model_config``;
        pose models add ``flip_tta``, see :meth:`TrainConfig.model_build_config`).
    fit_on_val
        A final fit: train on the train *and* val clips for ``cfg.epochs`` and keep the last epoch
        (no selection, no early stop); the val scores it logs are on training data. The
        checkpoints record ``trained_on: [train, val]``.
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
    trained_on = ["train", "val"] if fit_on_val else ["train"]
    if fit_on_val:
        train_rows = np.concatenate([train_rows, val_rows])
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
        description: dict[str, Any] = {"name": cfg.model, "heads": heads,
                                       "config": dict(cfg.model_config if model_config is None else model_config)}
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
            "trained_on": trained_on,
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
        starts = list(range(0, len(order), cfg.batch_size))
        local = [dist.local_rows(order[start:start + cfg.batch_size], ctx) for start in starts]  # all rows in one process
        batches = epoch_batches(clips, [rows for rows, _ in local], augment, cfg.seed, epoch, cfg.loader_workers)
        bar = Progress(zip(starts, local, batches), total=len(starts), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="batch", bar=progress, log_edges=False, quiet=not ctx.is_main)
        for start, (rows, share), b in bar:  # one optimizer step per batch
            batch_targets = {name: torch.from_numpy(t).to(device) for name, t in targets.targets(rows).items()}
            mix = mixup_plan(cfg, np.random.default_rng([cfg.seed, epoch, start, 1]), len(rows))
            if mix is None:
                logits = net(to_device(b.inputs, device))
                loss, _ = multi_head_loss(logits, batch_targets, heads, label_smoothing=cfg.label_smoothing)
            else:
                lam, partner = mix
                logits = net(to_device(mix_inputs(b.inputs, lam, partner), device))
                loss_a, _ = multi_head_loss(logits, batch_targets, heads, label_smoothing=cfg.label_smoothing)
                loss_b, _ = multi_head_loss(logits, {k: v[partner] for k, v in batch_targets.items()}, heads,
                                            label_smoothing=cfg.label_smoothing)
                loss = lam * loss_a + (1.0 - lam) * loss_b
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
        if top1 > best["val_top1"] or fit_on_val:  # a final fit keeps its last epoch
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


def assemble_ensemble(clips: PoseClips, member_dirs: Mapping[str, Path], member_metrics: Mapping[str, Mapping[str, Any]],
                      cfg: TrainConfig, out_dir: str | os.PathLike[str], params: Mapping[str, Any] | None,
                      final_dirs: Mapping[str, Path] | None = None) -> dict[str, Any]:
    """Mix trained members into one :class:`~sltrain.models.ensemble.EnsembleClassifier` checkpoint.

    Each member's ``model.pt`` (its best epoch on val) is scored on the val clips; the mixture
    weights are equal or fitted on those val predictions (``ensemble_weights``); the ensemble's
    ``model.pt``, ``metrics.json`` (the mixture's val scores, each member's metrics and the
    weights), ``history.csv`` and ``dvclive/`` (per epoch, the mean over the members that trained that epoch) and
    ``curves.png`` (every member's curves) go to ``out_dir``.

    With ``final_dirs`` (``train.final_fit``), the weights and val scores still come from the
    val-selected members, but the checkpoint mixes the members retrained on train + val.
    """
    from sltrain.checkpoint import model_from_checkpoint
    from sltrain.models.ensemble import EnsembleClassifier, fit_weights, log_softmax_np, mixture_log_probs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    val_rows = clips.rows_of("val")
    labels = clips.labels[val_rows]
    checkpoints, models, log_probs = {}, [], []
    for name, folder in member_dirs.items():
        ckpt = load_checkpoint(folder / "model.pt")
        model, _, _ = model_from_checkpoint(ckpt)
        checkpoints[name] = ckpt
        models.append(model.to(device))
        logits, _ = evaluate_rows(model, clips, val_rows, 2 * cfg.batch_size, device)
        log_probs.append(log_softmax_np(logits))
    weights = fit_weights(log_probs, labels) if cfg.ensemble_weights == "val" else [1.0 / len(models)] * len(models)
    mixture = mixture_log_probs(log_probs, weights)
    if final_dirs is not None:
        checkpoints = {name: load_checkpoint(final_dirs[name] / "model.pt") for name in member_dirs}
        models = [model_from_checkpoint(c)[0].to(device) for c in checkpoints.values()]
    ensemble = EnsembleClassifier(models, weights)
    first = next(iter(checkpoints.values()))
    heads = first["model"]["heads"]
    description = {"name": "ensemble", "heads": heads,
                   "config": {"members": [{"name": c["model"]["name"], "config": c["model"]["config"]}
                                          for c in checkpoints.values()], "weights": list(weights)}}
    save_checkpoint(out / "model.pt", {
        "format": FORMAT, "model": description,
        "model_state": {k: v.detach().cpu() for k, v in ensemble.state_dict().items()},
        "input_spec": first["input_spec"], "label_map": first["label_map"],
        "params": _params_payload(params or {"train": dataclasses.asdict(cfg)}),
        "epoch": max(int(c["epoch"]) for c in checkpoints.values()),
        "trained_on": ["train", "val"] if final_dirs is not None else ["train"],
        "members": {name: {"epoch": int(c["epoch"]), "val_top1": member_metrics[name]["val_per_instance_top1"]}
                    for name, c in checkpoints.items()},
    })
    histories = {name: pd.read_csv(folder / "history.csv") for name, folder in member_dirs.items()}
    mean_history = pd.concat(histories.values()).groupby("epoch", as_index=False).mean(numeric_only=True)
    with atomic_path(out / "history.csv") as tmp:
        mean_history.to_csv(tmp, index=False)
    from sltrain.live import write_dvclive

    write_dvclive(out, mean_history.to_dict("records"))  # each member logged its own run live in its work folder
    wide = []
    for epoch in sorted(mean_history["epoch"]):
        row: dict[str, Any] = {"epoch": int(epoch)}
        for name, h in histories.items():
            at = h[h["epoch"] == epoch]
            for key in ("train_loss", "val_loss", "val_top1"):
                row[f"{name} {key}"] = float(at[key].iloc[0]) if len(at) else None
        wide.append(row)
    from sltrain.plots import plot_training_curves

    plot_training_curves(wide, out / "curves.png")
    metrics = {"model": "ensemble", "val_per_instance_top1": top_k(mixture, labels, 1),
               "val_per_instance_top5": top_k(mixture, labels, 5),
               "val_loss": float(-mixture[np.arange(len(labels)), labels].mean()),
               # The keys a single model's metrics have, so `dvc metrics diff` compares any two runs:
               # the ensemble is as trained as its longest-trained member.
               "best_epoch": max(int(m["best_epoch"]) for m in member_metrics.values()),
               "epochs_run": max(int(m["epochs_run"]) for m in member_metrics.values()),
               "weights": {name: float(w) for name, w in zip(member_dirs, weights)},
               "ensemble_weights": cfg.ensemble_weights,
               "members": {name: dict(m) for name, m in member_metrics.items()},
               "train_time_s": round(sum(float(m.get("train_time_s", 0.0)) for m in member_metrics.values()), 1),
               "train_clips": int(len(clips.rows_of("train"))), "val_clips": int(len(val_rows)),
               "device": str(device),
               "finished": all(bool(m.get("finished", True)) for m in member_metrics.values())}
    if final_dirs is not None:
        metrics["final_fit"] = final_fit_record({name: m["best_epoch"] for name, m in member_metrics.items()})
    write_json(out / "metrics.json", metrics)
    log.info("ensemble of %d: val top-1 %.3f, top-5 %.3f (members: %s; weights %s)", len(models),
             metrics["val_per_instance_top1"], metrics["val_per_instance_top5"],
             ", ".join(f"{n} {m['val_per_instance_top1']:.3f}" for n, m in member_metrics.items()),
             ", ".join(f"{w:.2f}" for w in weights))
    return metrics


def final_fit_record(epochs: Any) -> dict[str, Any]:
    """What ``metrics.json`` says of a final fit (``train.final_fit``)."""
    return {"trained_on": ["train", "val"], "epochs": epochs,
            "note": "the published model was retrained on train + val for the epochs val chose; the val_* scores "
                    "are those of the val-selected run (held out), not of the published model"}


def publish_final_fit(final_out: Path, out_dir: str | os.PathLike[str], metrics: dict[str, Any]) -> None:
    """Replace ``out_dir/model.pt`` by the final fit's and record it in ``out_dir/metrics.json`` (and ``metrics``)."""
    out = Path(out_dir)
    with atomic_path(out / "model.pt") as tmp:
        shutil.copyfile(final_out / "model.pt", tmp)
    metrics["final_fit"] = final_fit_record(metrics["best_epoch"])
    write_json(out / "metrics.json", metrics)


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    from sltrain.plots import plot_training_curves

    frame = pd.DataFrame(history)
    with atomic_path(out / "history.csv") as tmp:
        frame.to_csv(tmp, index=False)
    plot_training_curves(history, out / "curves.png")
