"""The training loop on real MediaPipe keypoints: determinism, exact resume, split hygiene, safe checkpoints."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sldata.pose.poseformat import read_pose_file
from sldata.pose.skeleton import Skeleton
from sldata.pose.store import ClipPose, pack_pose_arrays, write_pose_shard
from sltrain.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from sltrain.data import PoseClips
from sltrain.inputs import clip_features, pad_batch, temporal_indices
from sltrain.train import TrainConfig, lr_factor, train
from conftest import feature_config

TINY = {"d_model": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.1, "pooling": "cls"}
SPLITS = ["train"] * 8 + ["val"] * 3 + ["test"] * 3


@pytest.fixture(scope="module")
def packed(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """14 clips cut from real MediaPipe Holistic .pose files, 3 classes, packed like the pipeline does."""
    root = tmp_path_factory.mktemp("packed")
    sources = [shared / "pose_format" / "mediapipe_long.pose", shared / "pose_format" / "mediapipe.pose",
               shared / "pose_format" / "js_example" / "sample-data_example.pose"]
    records, samples = [], []
    skeleton = Skeleton(face="subset")
    n = 0
    for label, path in enumerate(sources):
        kp, sk, fps, w, h = read_pose_file(path, face="subset")
        assert sk.point_names == skeleton.point_names
        for start in range(0, len(kp) - 20, max(8, (len(kp) - 20) // 5))[:5]:
            if n == len(SPLITS):
                break
            sid = f"clip-{n:02d}"
            seg = np.ascontiguousarray(kp[start:start + 20 + 3 * label])
            found = ~np.isnan(seg[..., 0])
            records.append(ClipPose(sid, "ok", None, None, num_frames=len(seg), fps=fps, width=w, height=h,
                                    frames_with_body=int(found[:, :33].any(1).sum()),
                                    frames_with_left_hand=int(found[:, 33:54].any(1).sum()),
                                    frames_with_right_hand=int(found[:, 54:75].any(1).sum()), keypoints=seg))
            samples.append({"sample_id": sid, "label": label, "split": SPLITS[n], "gloss": f"g{label}",
                            "signer_id": str(n % 2)})
            n += 1
    write_pose_shard(records, root / "shard-000.parquet", skeleton, {"face": "subset"})
    pack_pose_arrays([root / "shard-000.parquet"], pd.DataFrame(samples), root / "packed")
    (root / "label_map.json").write_text(json.dumps({"dataset": "test", "glosses": ["g0", "g1", "g2"],
                                                     "num_classes": 3}))
    return root / "packed", root / "label_map.json"


def config(**overrides: object) -> TrainConfig:
    base = dict(seed=0, model="pose_transformer", model_config=TINY, epochs=4, batch_size=4, lr=3e-3,
                weight_decay=0.0, warmup_epochs=1, label_smoothing=0.1, grad_clip=1.0, patience=10, threads=1,
                device="cpu", freeze={}, load_weights="",
                augment={"flip_prob": 0.5, "rotation_prob": 0.5, "max_rotation_deg": 10.0, "shear_prob": 0.3,
                         "max_shear": 0.1, "scale_prob": 0.5, "scale_min": 0.9, "scale_max": 1.1,
                         "translate_prob": 0.3, "max_translate": 0.05, "speed_prob": 0.5, "speed_min": 0.8,
                         "speed_max": 1.25, "frame_drop_rate": 0.0, "point_drop_rate": 0.05},
                heads={"gloss": {"column": "label", "weight": 1.0}}, processes=1, loader_workers=0, mixup_alpha=0.0,
                mixup_prob=0.0, ensemble={}, ensemble_weights="equal", flip_tta=False, final_fit=False,
                ensemble_jobs=1)
    base.update(overrides)
    return TrainConfig(**base)


FEATURES = feature_config(num_frames=16, hand_local=False, canonical_hand=False)


def history(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "history.csv").drop(columns=["elapsed_s"])


def test_same_seed_same_metrics_and_a_different_seed_differs(packed: tuple[Path, Path], tmp_path: Path) -> None:
    pack, labels = packed
    m1 = train(pack, labels, tmp_path / "a", tmp_path / "wa", config(), FEATURES, progress=False)
    m2 = train(pack, labels, tmp_path / "b", tmp_path / "wb", config(), FEATURES, progress=False)
    pd.testing.assert_frame_equal(history(tmp_path / "a"), history(tmp_path / "b"))
    assert m1["val_per_instance_top1"] == m2["val_per_instance_top1"] and m1["epochs_run"] == 4
    train(pack, labels, tmp_path / "c", tmp_path / "wc", config(seed=1), FEATURES, progress=False)
    assert not history(tmp_path / "a")["train_loss"].equals(history(tmp_path / "c")["train_loss"])
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0


def test_killed_run_resumes_and_ends_where_an_uninterrupted_run_would(packed: tuple[Path, Path], tmp_path: Path) -> None:
    pack, labels = packed
    train(pack, labels, tmp_path / "full", tmp_path / "wfull", config(), FEATURES, progress=False)
    # "killed" after two epochs: only the work dir's last.pt survives
    train(pack, labels, tmp_path / "part", tmp_path / "wpart", config(), FEATURES, progress=False, max_epochs_this_run=2)
    assert len(history(tmp_path / "part")) == 2
    train(pack, labels, tmp_path / "part", tmp_path / "wpart", config(), FEATURES, progress=False)
    pd.testing.assert_frame_equal(history(tmp_path / "full"), history(tmp_path / "part"))
    a = load_checkpoint(tmp_path / "full" / "model.pt")["model_state"]
    b = load_checkpoint(tmp_path / "part" / "model.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a changed config does not resume from the old state
    train(pack, labels, tmp_path / "part", tmp_path / "wpart", config(lr=1e-3), FEATURES, progress=False)
    assert not history(tmp_path / "part")["train_loss"].equals(history(tmp_path / "full")["train_loss"])


def test_trainer_never_reads_the_test_split(packed: tuple[Path, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pack, labels = packed
    read: set[str] = set()
    original = PoseClips.raw

    def spy(self: PoseClips, row: int) -> np.ndarray:
        read.add(str(self.index.iloc[row]["split"]))
        return original(self, row)

    monkeypatch.setattr(PoseClips, "raw", spy)
    train(pack, labels, tmp_path / "o", tmp_path / "w", config(epochs=1), FEATURES, progress=False)
    assert read == {"train", "val"}


def test_checkpoint_alone_predicts_like_training_evaluated(packed: tuple[Path, Path], tmp_path: Path) -> None:
    pack, labels = packed
    train(pack, labels, tmp_path / "o", tmp_path / "w", config(epochs=2), FEATURES, progress=False)
    ckpt = load_checkpoint(tmp_path / "o" / "model.pt")
    model, spec, classes = model_from_checkpoint(ckpt)
    assert classes == ["g0", "g1", "g2"] and spec.num_frames == 16
    clips = PoseClips(pack, ("val",), spec)
    rows = clips.rows_of("val")
    feats = [clip_features(clips.raw(int(r)), float(clips.index.iloc[r]["width"]), float(clips.index.iloc[r]["height"]),
                           spec) for r in rows]
    pose, mask = pad_batch(feats, spec.num_frames)
    with torch.no_grad():
        logits = model({"pose": torch.from_numpy(pose), "mask": torch.from_numpy(mask)})["gloss"].numpy()
    top1 = float((logits.argmax(1) == clips.labels[rows]).mean())
    best = pd.read_csv(tmp_path / "o" / "history.csv")["val_top1"].max()
    assert top1 == pytest.approx(best)


class _Exploit:
    def __reduce__(self):  # noqa: ANN204 - a pickle that would run code when loaded unsafely
        return (print, ("pwned",))


def test_tampered_or_mismatched_checkpoints_are_refused(packed: tuple[Path, Path], tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"format": "sltrain-checkpoint-v1", "x": _Exploit()}, fh)
    with pytest.raises(CheckpointError, match="not a plain-data checkpoint"):
        load_checkpoint(evil)
    pack, labels = packed
    train(pack, labels, tmp_path / "o", tmp_path / "w", config(epochs=1), FEATURES, progress=False)
    ckpt = load_checkpoint(tmp_path / "o" / "model.pt")
    key = next(k for k in ckpt["model_state"] if k.endswith("weight"))
    ckpt["model_state"][key] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="weights do not match"):
        model_from_checkpoint(ckpt)
    ckpt = load_checkpoint(tmp_path / "o" / "model.pt")
    ckpt["label_map"]["classes"] = ["only-one"]
    with pytest.raises(CheckpointError, match="label map has 1 classes"):
        model_from_checkpoint(ckpt)


def test_temporal_indices_and_lr_schedule() -> None:
    assert list(temporal_indices(5, 8)) == [0, 1, 2, 3, 4]
    assert list(temporal_indices(16, 4)) == [2, 6, 10, 14]
    rng_idx = temporal_indices(100, 10, np.random.default_rng(0))
    assert all(10 * i <= v < 10 * (i + 1) for i, v in enumerate(rng_idx))
    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0)


def test_hand_local_coordinates_measure_hand_shape_in_hand_sizes() -> None:
    from sltrain.inputs import hand_local_coordinates

    sk = Skeleton(face="none")
    feats = np.zeros((2, sk.num_points, 4), np.float32)  # x, y, z, present
    left = sk.part_slice("left_hand")
    feats[:, left, 3] = 1.0
    feats[:, left.start, :2] = (5.0, 5.0)            # wrist
    feats[:, left.start + 9, :2] = (5.0, 7.0)        # middle-finger knuckle: hand size 2
    feats[:, left.start + 8, :2] = (6.0, 9.0)        # index tip
    feats[1, left.start + 9, 3] = 0.0                 # no knuckle in frame 1: size unknown
    local = hand_local_coordinates(feats, sk)
    assert local[0, left.start + 8].tolist() == [0.5, 2.0]
    assert local[0, left.start].tolist() == [0.0, 0.0]
    assert not local[1].any() and not local[:, sk.part_slice("right_hand")].any() and not local[:, :33].any()


def test_stgcn_trains_and_reloads_from_its_checkpoint(packed: tuple[Path, Path], tmp_path: Path) -> None:
    pack, labels = packed
    cfg = config(model="stgcn", model_config={"channels": (8, 8), "strides": (1, 2), "temporal_kernel": 3}, epochs=1)
    train(pack, labels, tmp_path / "o", tmp_path / "w", cfg, FEATURES, progress=False)
    model, spec, _ = model_from_checkpoint(load_checkpoint(tmp_path / "o" / "model.pt"))
    assert spec.num_points == 57 and type(model).__name__ == "STGCN"


def test_heads_loss_weights_are_honoured(packed: tuple[Path, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A head's weight scales its loss: weight 0 leaves its classifier untouched, the total is the weighted sum."""
    import sltrain.models.heads as heads_module

    pack, labels = packed
    seen: list[tuple[float, float]] = []
    original = heads_module.multi_head_loss

    def spy(logits, targets, heads_config, label_smoothing=0.0):  # noqa: ANN001, ANN202
        total, per_head = original(logits, targets, heads_config, label_smoothing=label_smoothing)
        weights = {name: spec["weight"] for name, spec in heads_config.items()}
        seen.append((total.item(), sum(weights[n] * per_head[n].item() for n in per_head)))
        return total, per_head

    monkeypatch.setattr(heads_module, "multi_head_loss", spy)
    heads = {"gloss": {"column": "label", "weight": 0.0}, "signer": {"column": "signer_id", "weight": 1.0}}
    cfg = config(epochs=1, weight_decay=0.0, heads=heads)
    train(pack, labels, tmp_path / "o", tmp_path / "w", cfg, FEATURES, progress=False)
    assert seen and all(t == pytest.approx(w, rel=1e-6) for t, w in seen)
    ckpt = load_checkpoint(tmp_path / "o" / "model.pt")
    assert ckpt["model"]["heads"] == {"gloss": {"num_classes": 3, "weight": 0.0}, "signer": {"num_classes": 2, "weight": 1.0}}
    assert ckpt["model"]["head_targets"] == {"signer": {"column": "signer_id", "classes": ["0", "1"]}}
    torch.manual_seed(0)
    from sltrain.models.factory import build_pose_model

    from sltrain.inputs import InputSpec

    initial = build_pose_model("pose_transformer", TINY, InputSpec.from_dict(ckpt["input_spec"]),
                               ckpt["model"]["heads"]).state_dict()
    state = ckpt["model_state"]
    assert torch.equal(state["heads.classifiers.gloss.weight"], initial["heads.classifiers.gloss.weight"])
    assert not torch.equal(state["heads.classifiers.signer.weight"], initial["heads.classifiers.signer.weight"])
    assert "val_signer_top1" in pd.read_csv(tmp_path / "o" / "history.csv").columns


def test_train_config_from_params_with_a_head_added_by_set() -> None:
    """``--set`` adds a map entry (a head) to the section the CLI builds its TrainConfig from."""
    from conftest import REPO_ROOT
    from sldata.params import load_params

    params = load_params(REPO_ROOT / "params.yaml", ["train.heads.signer={column: signer_id, weight: 0.3}"])
    assert params["train"]["heads"] == {"gloss": {"column": "label", "weight": 1.0},
                                        "signer": {"column": "signer_id", "weight": 0.3}}
    cfg = TrainConfig.from_params(params["train"], params["models"])
    assert cfg.heads["signer"] == {"column": "signer_id", "weight": 0.3} and cfg.epochs == params["train"]["epochs"]


def test_resume_refuses_a_best_checkpoint_written_by_another_run(packed: tuple[Path, Path], tmp_path: Path) -> None:
    pack, labels = packed
    work = tmp_path / "w"
    train(pack, labels, tmp_path / "a", work, config(), FEATURES, progress=False)
    finished_last = (work / "last.pt").read_bytes()
    # another config writes best.pt and is killed before its last.pt: put the old last.pt back
    train(pack, labels, tmp_path / "b", work, config(lr=1e-2), FEATURES, progress=False, max_epochs_this_run=1)
    (work / "last.pt").write_bytes(finished_last)
    train(pack, labels, tmp_path / "again", work, config(), FEATURES, progress=False)
    a = load_checkpoint(tmp_path / "a" / "model.pt")
    again = load_checkpoint(tmp_path / "again" / "model.pt")
    assert again["params"]["train"]["lr"] == 3e-3  # not the other run's model
    assert all(torch.equal(a["model_state"][k], again["model_state"][k]) for k in a["model_state"])


def test_the_same_checkpoint_is_the_same_bytes_wherever_it_is_written(tmp_path: Path) -> None:
    """Snakemake and DVC compare outputs by content: a checkpoint must not depend on its (temporary) file name."""
    from sltrain.checkpoint import save_checkpoint

    payload = {"format": "sltrain-checkpoint-v1", "model": {"name": "x"}, "model_state": {"w": torch.arange(6.0)},
               "input_spec": {}, "label_map": {"classes": ["a"]}, "params": {}, "epoch": 1}
    save_checkpoint(tmp_path / "a.pt", payload)
    (tmp_path / "sub").mkdir()
    save_checkpoint(tmp_path / "sub" / "model.pt", payload)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "model.pt").read_bytes()
