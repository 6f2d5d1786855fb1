"""Training the RGB model and the VTN (hand crops + pose flow) on a few real WLASL100 clips.

The fixture builds, from 8 real clips of two glosses (labels, signers and variations from the
real WLASL annotation), what the pipeline builds: a frame shard, a MediaPipe pose shard, its
pack and a hand-crop shard. Two clips are in the test split, with frames and crops present, so
that reading them would be noticed.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO_ROOT, default_params, feature_config, frame_settings, hand_crop_settings, pose_settings
from sldata.frames import FrameStore, extract_frames_shard
from sldata.pose.extract import extract_pose_shard
from sldata.pose.handcrop_stage import HandCropStore, hand_crops_shard
from sldata.pose.store import pack_pose_arrays
from sltrain.checkpoint import CheckpointError, clip_model_from_checkpoint, load_checkpoint, model_from_checkpoint
from sltrain.cli import main
from sltrain.clip_data import HandClips, RGBClips
from sltrain.clip_inputs import ClipAugment, ClipInputSpec, segment_indices
from sltrain.inputs import InputSpec
from sltrain.models.factory import build_clip_model, build_pose_model
from sltrain.train import ClipInputConfig, TrainConfig, clip_section, train, train_hands, train_rgb

SPLITS = ["train", "train", "val", "test"]  # per gloss, in annotation order
TINY_MODELS = {
    "rgb_s3d": {"width_multiplier": 0.25, "stem_width": 16, "feature_dim": 64, "head_dropout": 0.0},
    "vtn": {"hand_widths": [8, 16], "hand_dim": 8, "pose_dim": 8, "d_model": 16, "num_layers": 1, "num_heads": 2,
            "dropout": 0.1, "pooling": "mean", "mirror_left_hand": True, "head_dropout": 0.0},
    "pose_transformer": {"d_model": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.1, "pooling": "cls"},
}


@pytest.fixture(scope="module")
def data(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """frames/, pose/, packed/, hand_crops/, samples.parquet and label_map.json of 8 real clips."""
    root = tmp_path_factory.mktemp("clipdata")
    annotation = json.loads((shared / "wlasl" / "asl100.json").read_text())
    videos = shared / "wlasl100_clips" / "videos"
    rows = []
    for label, entry in enumerate(annotation[:2]):
        instances = [i for i in entry["instances"] if (videos / f"{i['video_id']}.mp4").is_file()][:len(SPLITS)]
        assert len(instances) == len(SPLITS)
        for inst, split in zip(instances, SPLITS):
            rows.append({"sample_id": f"wlasl-{inst['video_id']}", "label": label, "split": split,
                         "gloss": entry["gloss"], "signer_id": int(inst["signer_id"]),
                         "variation_id": int(inst["variation_id"]),
                         "clip_path": str(videos / f"{inst['video_id']}.mp4"), "status": "usable"})
    clips = pd.DataFrame(rows)
    samples = clips.drop(columns=["clip_path", "status"])
    samples.to_parquet(root / "samples.parquet", index=False)
    (root / "label_map.json").write_text(json.dumps({"dataset": "wlasl", "num_classes": 2,
                                                     "glosses": [e["gloss"] for e in annotation[:2]]}))
    extract_frames_shard(clips, root / "frames" / "shard-000", frame_settings(size=32), progress=False, workers=1)
    pose = root / "pose" / "shard-000.parquet"
    pose.parent.mkdir()
    extract_pose_shard(clips, pose, pose_settings(workers=1, frame_step=2, checkpoint_every=100), progress=False)
    pack_pose_arrays([pose], samples, root / "packed")
    hand_crops_shard(clips, pose, root / "hand_crops" / "shard-000",
                     hand_crop_settings(size=24, workers=1), progress=False)
    return {"root": root, "samples": root / "samples.parquet", "label_map": root / "label_map.json",
            "frames": root / "frames", "packed": root / "packed", "hand_crops": root / "hand_crops"}


def section(name: str, **overrides: object) -> dict:
    """A params section, small: one epoch, tiny inputs, one thread, CPU."""
    params = default_params()[name]
    params.update({"epochs": 1, "batch_size": 4, "threads": 1, "device": "cpu", "warmup_epochs": 0, "lr": 0.003})
    if name == "train_rgb":
        params["input"] = {"num_frames": 4, "size": 24}
    elif name == "train_hands":
        params["input"] = {**params["input"], "num_frames": 8, "size": 16}
    params.update(overrides)
    return params


def models_section() -> dict:
    return {**default_params()["models"], **TINY_MODELS}


def cli_train(kind: str, data: dict[str, Path], out: Path, extra: str = "", **overrides: object) -> int:
    """Run ``python -m sltrain train-rgb|train-hands`` in-process on a small params file (``extra``: more flags)."""
    name = "train_rgb" if kind == "rgb" else "train_hands"
    params = default_params()
    params[name] = section(name, **overrides)
    params["models"] = models_section()
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if kind == "rgb":
        argv = (f"train-rgb --params {out / 'params.yaml'} --frames {data['frames']} --samples {data['samples']}"
                f" --label-map {data['label_map']} --out-dir {out / 'o'} --work-dir {out / 'w'} --no-progress")
    else:
        argv = (f"train-hands --params {out / 'params.yaml'} --hand-crops {data['hand_crops']} --packed {data['packed']}"
                f" --samples {data['samples']} --label-map {data['label_map']} --out-dir {out / 'o'}"
                f" --work-dir {out / 'w'} --no-progress")
    return main([*shlex.split(argv), *shlex.split(extra)])


def configs(kind: str, **overrides: object) -> tuple[TrainConfig, ClipInputConfig]:
    name = "train_rgb" if kind == "rgb" else "train_hands"
    return clip_section(section(name, **overrides), models_section(), name)


def run(kind: str, data: dict[str, Path], out: Path, max_epochs: int | None = None, **overrides: object) -> dict:
    cfg, clip_input = configs(kind, **overrides)
    if kind == "rgb":
        return train_rgb(data["frames"], data["samples"], data["label_map"], out / "o", out / "w", cfg, clip_input,
                         progress=False, max_epochs_this_run=max_epochs)
    return train_hands(data["hand_crops"], data["packed"], data["label_map"], out / "o", out / "w", cfg, clip_input,
                       progress=False, max_epochs_this_run=max_epochs, samples_path=data["samples"])


def history(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "o" / "history.csv").drop(columns=["elapsed_s"])


# --------------------------------------------------------------------------- through the CLI


@pytest.mark.parametrize("kind", ["rgb", "hands"])
def test_model_trains_through_the_cli_and_reloads_from_its_checkpoint(kind: str, data: dict[str, Path],
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_train(kind, data, tmp_path) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["train_clips"] == 4 and metrics["val_clips"] == 2
    assert all((tmp_path / "o" / name).stat().st_size > 0 for name in ("model.pt", "history.csv", "curves.png"))

    ckpt = load_checkpoint(tmp_path / "o" / "model.pt")
    model, spec, classes = clip_model_from_checkpoint(ckpt)
    assert classes == json.loads(data["label_map"].read_text())["glosses"]
    assert spec.kind == kind and ckpt["model"]["name"] == ("rgb_s3d" if kind == "rgb" else "vtn")
    assert ckpt["params"]["train_" + kind]["input"] == section("train_" + kind)["input"]
    # The spec alone prepares the inputs: the reloaded model scores val as training did.
    samples = pd.read_parquet(data["samples"])
    clips = (RGBClips(data["frames"], samples, ("val",), spec) if kind == "rgb"
             else HandClips(data["hand_crops"], data["packed"], ("val",), spec))
    batch = clips.batch(clips.rows_of("val"))
    with torch.no_grad():
        logits = model({k: torch.from_numpy(v) for k, v in batch.inputs.items()})["gloss"].numpy()
    assert float((logits.argmax(1) == batch.labels).mean()) == pytest.approx(metrics["val_per_instance_top1"])

    # Pose-only tools refuse it, saying why.
    with pytest.raises(CheckpointError, match="support pose models only"):
        model_from_checkpoint(ckpt)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "o" / "model.pt"), "--packed", str(data["packed"]),
                 "--samples", str(data["samples"]), "--splits", "val", "--params", str(REPO_ROOT / "params.yaml"),
                 "--out-dir", str(tmp_path / "eval")]) == 2
    assert "support pose models only" in capsys.readouterr().err


def test_extra_heads_from_the_cli_take_their_classes_from_the_data(data: dict[str, Path], tmp_path: Path) -> None:
    # signer_id is in the pack's index; variation_id only in samples.parquet.
    extra = ("--set 'train_hands.heads.signer={column: signer_id, weight: 0.5}'"
             " --set train_hands.heads.variation.column=variation_id --set train_hands.heads.variation.weight=0.25")
    assert cli_train("hands", data, tmp_path, extra) == 0
    ckpt = load_checkpoint(tmp_path / "o" / "model.pt")
    samples = pd.read_parquet(data["samples"])
    train_rows = samples[samples["split"] == "train"]
    heads = ckpt["model"]["heads"]
    assert heads["gloss"] == {"num_classes": 2, "weight": 1.0}
    assert heads["signer"] == {"num_classes": train_rows["signer_id"].nunique(), "weight": 0.5}
    assert heads["variation"] == {"num_classes": train_rows["variation_id"].nunique(), "weight": 0.25}
    record = ckpt["model"]["head_targets"]
    assert record["signer"]["classes"] == [str(v) for v in sorted(train_rows["signer_id"].unique())]
    assert record["variation"]["column"] == "variation_id"
    assert {"val_signer_top1", "val_variation_top1"} <= set(pd.read_csv(tmp_path / "o" / "history.csv").columns)
    model, _, _ = clip_model_from_checkpoint(ckpt)
    assert set(model.heads.classifiers) == {"gloss", "signer", "variation"}


def test_bad_heads_are_refused_with_the_key(data: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_train("rgb", data, tmp_path, "--set train_rgb.heads.signer.colum=signer_id") == 2
    err = capsys.readouterr().err
    assert "train_rgb.heads.signer: unknown key 'colum'" in err and "Traceback" not in err
    assert cli_train("rgb", data, tmp_path, "--set 'train_rgb.heads.signer={column: handshape, weight: 1.0}'") == 2
    assert "no column 'handshape'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="gloss.*column 'label'"):
        configs("rgb", heads={"gloss": {"column": "signer_id", "weight": 1.0}})


# --------------------------------------------------------------------------- split hygiene


def test_loaders_never_read_test_clips(data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split_of = pd.read_parquet(data["samples"]).set_index("sample_id")["split"].to_dict()
    read: dict[str, set[str]] = {"frames": set(), "crops": set(), "keypoints": set()}
    frame_clip, crop_clip, hand_raw = FrameStore.clip, HandCropStore.clip, HandClips.raw

    def spy_frames(self: FrameStore, sample_id: str) -> np.ndarray:
        read["frames"].add(split_of[sample_id])
        return frame_clip(self, sample_id)

    def spy_crops(self: HandCropStore, sample_id: str) -> np.ndarray:
        read["crops"].add(split_of[sample_id])
        return crop_clip(self, sample_id)

    def spy_hands(self: HandClips, row: int) -> tuple[np.ndarray, np.ndarray]:
        read["keypoints"].add(str(self.index.iloc[row]["split"]))
        return hand_raw(self, row)

    monkeypatch.setattr(FrameStore, "clip", spy_frames)
    monkeypatch.setattr(HandCropStore, "clip", spy_crops)
    monkeypatch.setattr(HandClips, "raw", spy_hands)
    assert {"test"} <= set(split_of.values()) and (FrameStore(data["frames"] / "shard-000").index["status"] == "ok").all()
    run("rgb", data, tmp_path / "rgb")
    run("hands", data, tmp_path / "hands")
    assert read == {"frames": {"train", "val"}, "crops": {"train", "val"}, "keypoints": {"train", "val"}}


# --------------------------------------------------------------------------- determinism, freezing


def test_same_seed_same_metrics_for_the_vtn(data: dict[str, Path], tmp_path: Path) -> None:
    m1 = run("hands", data, tmp_path / "a", epochs=2)
    m2 = run("hands", data, tmp_path / "b", epochs=2)
    pd.testing.assert_frame_equal(history(tmp_path / "a"), history(tmp_path / "b"))
    assert m1["val_loss"] == m2["val_loss"] and m1["epochs_run"] == 2
    a = load_checkpoint(tmp_path / "a" / "o" / "model.pt")["model_state"]
    b = load_checkpoint(tmp_path / "b" / "o" / "model.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    run("hands", data, tmp_path / "c", epochs=2, seed=1)
    assert not history(tmp_path / "a")["train_loss"].equals(history(tmp_path / "c")["train_loss"])


def _initial_model(ckpt: dict, seed: int) -> torch.nn.Module:
    """The model as the trainer initialized it (same seed, same builder)."""
    torch.manual_seed(seed)
    m = ckpt["model"]
    if ckpt["input_spec"].get("kind"):
        return build_clip_model(m["name"], dict(m["config"]), ClipInputSpec.from_dict(ckpt["input_spec"]), m["heads"])
    return build_pose_model(m["name"], dict(m["config"]), InputSpec.from_dict(ckpt["input_spec"]), m["heads"])


@pytest.mark.parametrize("kind", ["rgb", "hands", "pose"])
def test_freeze_schedule_freezes_then_unfreezes_every_model(kind: str, data: dict[str, Path], tmp_path: Path) -> None:
    overrides = {"epochs": 2, "freeze": {"backbone": 1}, "weight_decay": 0.0}
    if kind == "pose":
        cfg = TrainConfig(seed=0, model="pose_transformer", model_config=TINY_MODELS["pose_transformer"], epochs=2,
                          batch_size=4, lr=0.003, weight_decay=0.0, warmup_epochs=0, threads=1, device="cpu",
                          freeze={"backbone": 1}, augment={}, label_smoothing=0.1, grad_clip=1.0, patience=20,
                          load_weights="", heads={"gloss": {"column": "label", "weight": 1.0}}, processes=1,
                          loader_workers=0, mixup_alpha=0.0, mixup_prob=0.0, ensemble={}, ensemble_weights="equal",
                          flip_tta=False, final_fit=False, ensemble_jobs=1)

        def go(max_epochs: int) -> None:
            train(data["packed"], data["label_map"], tmp_path / "o", tmp_path / "w", cfg, feature_config(num_frames=8, hand_local=False, canonical_hand=False),
                  progress=False, max_epochs_this_run=max_epochs)
    else:
        def go(max_epochs: int) -> None:
            run(kind, data, tmp_path, max_epochs=max_epochs, **overrides)

    go(1)  # epoch 1: backbone frozen
    after_one = load_checkpoint(tmp_path / "w" / "last.pt")
    initial = dict(_initial_model(after_one, 0).named_parameters())
    state = after_one["model_state"]
    backbone = [k for k in initial if k.startswith("backbone.")]
    assert backbone and all(torch.equal(state[k], initial[k].detach()) for k in backbone)
    assert not torch.equal(state["heads.classifiers.gloss.weight"], initial["heads.classifiers.gloss.weight"].detach())
    go(1)  # resumed, epoch 2: the backbone trains
    state = load_checkpoint(tmp_path / "w" / "last.pt")["model_state"]
    assert sum(not torch.equal(state[k], initial[k].detach()) for k in backbone) > len(backbone) // 2


# --------------------------------------------------------------------------- inputs


def test_clip_inputs_sample_crop_and_mirror_with_the_hand_swap(data: dict[str, Path]) -> None:
    assert list(segment_indices(3, 6)) == [0, 0, 1, 1, 2, 2]  # short clips repeat frames
    assert list(segment_indices(16, 4)) == [2, 6, 10, 14]
    samples = pd.read_parquet(data["samples"])
    rgb = RGBClips(data["frames"], samples, ("train",), ClipInputSpec(kind="rgb", num_frames=4, size=16))
    x = rgb.features(0)
    assert x.shape == (3, 4, 16, 16) and x.dtype == np.float32
    assert np.array_equal(x, rgb.features(0))  # deterministic without rng
    flip_only = ClipAugment(flip_prob=1.0)
    mirrored = rgb.features(0, flip_only, np.random.default_rng(0))
    np.testing.assert_allclose(mirrored, x[..., ::-1], atol=1e-6)

    _, _, meta = __import__("sldata.pose.store", fromlist=["load_packed"]).load_packed(data["packed"])
    pose = ClipInputConfig.from_params({**default_params()["train_hands"]["input"], "num_frames": 8, "size": 16,
                                        "velocity": False, "pose_flow": True}, "train_hands").pose_features().input_spec(
        meta["skeleton"])
    spec = ClipInputSpec(kind="hands", num_frames=8, size=16, pose=pose.to_dict())
    hands = HandClips(data["hand_crops"], data["packed"], ("train",), spec)
    crops, feats = hands.features(0)
    assert crops.shape[1:] == (2, 3, 16, 16) and feats.shape[1:] == (pose.num_points, pose.num_channels)
    assert len(crops) == len(feats) <= 8
    flipped_crops, flipped_feats = hands.features(0, flip_only, np.random.default_rng(0))
    # the mirrored right hand is now the left hand, and vice versa
    np.testing.assert_allclose(flipped_crops[:, 0], crops[:, 1, :, :, ::-1], atol=1e-6)
    np.testing.assert_allclose(flipped_crops[:, 1], crops[:, 0, :, :, ::-1], atol=1e-6)
    left = [i for i, p in enumerate(pose.points) if p.startswith("left_hand.")]
    right = [i for i, p in enumerate(pose.points) if p.startswith("right_hand.")]
    present = feats[:, right, -1] > 0  # right-hand points present before the flip are left-hand points after
    assert np.array_equal(flipped_feats[:, left, -1] > 0, present)
    # x positions are mirrored (normalized about the shoulder centre: the sign flips)
    np.testing.assert_allclose(flipped_feats[:, left, 0][present], -feats[:, right, 0][present], atol=1e-4)


# --------------------------------------------------------------------------- pipeline


def test_pipeline_has_separate_rgb_and_hand_stages_outside_all() -> None:
    """`all` (the pose path) plans neither; their own targets do, running the command DVC runs."""
    import subprocess
    import sys

    def dry(*targets: str) -> str:
        result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", *targets], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout
    default = dry("all")
    assert "rule train:" in default and "rule train_rgb:" not in default and "rule train_hands:" not in default
    out = dry("train_rgb", "train_hands")
    assert out.count("rule train_rgb:") == 1 and out.count("rule train_hands:") == 1
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for stage in ("train_rgb", "train_hands"):
        command = f"python -m sltrain {stage.replace('_', '-')} --params "
        assert stages[stage]["cmd"].startswith(command + "params.yaml ")
        assert f"models.{'rgb_s3d' if stage == 'train_rgb' else 'vtn'}" in stages[stage]["params"]
        shell = next(line for line in out.splitlines() if command in line)
        assert "--params .snakemake/params/params-" in shell and f"> logs/{stage}.log" in shell
