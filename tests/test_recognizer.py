"""The stronger recognizer's pieces on real MediaPipe keypoints: the model-points feature path, the
dominant-hand mirror, gap interpolation, the pose conformer, mirror TTA inside the model, mixup, hand
dropout, and ensembles trained, reloaded and exported as one model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sldata.pose.features import build_features
from sldata.pose.flow import interpolate_gaps
from sldata.pose.poseformat import read_pose_file
from sldata.pose.skeleton import PointSubset, Skeleton
from sltrain.augment import drop_part_segments, flip_permutation, horizontal_flip, subset_flip_permutation
from sltrain.checkpoint import load_checkpoint, model_from_checkpoint
from sltrain.data import PoseClips
from sltrain.inputs import (InputSpec, clip_features, dominant_hand_mirror, hand_local_coordinates, point_preset,
                            temporal_indices)
from sltrain.models.ensemble import EnsembleClassifier, fit_weights, mixture_log_probs
from sltrain.models.factory import build_pose_model
from sltrain.train import evaluate_rows, mix_inputs, top_k, train
from conftest import feature_config
from test_train import config, packed  # noqa: F401  (packed is a fixture)

FEATURES = {"normalize": True, "velocity": True, "acceleration": False, "pose_flow": False, "fill_missing": True}


@pytest.fixture(scope="module")
def real_clips(shared: Path) -> list[tuple[np.ndarray, float, float]]:
    """Real MediaPipe Holistic keypoints (face subset) of three .pose files, with their frame sizes."""
    out = []
    for name in ("mediapipe_long.pose", "mediapipe.pose", "js_example/sample-data_example.pose"):
        kp, _, _, w, h = read_pose_file(shared / "pose_format" / name, face="subset")
        out.append((kp, float(w), float(h)))
    return out


def whole_skeleton_features(kp: np.ndarray, w: float, h: float, spec: InputSpec) -> np.ndarray:
    """The feature path as it was: every channel on the whole skeleton, then the model's points."""
    feats = build_features(np.asarray(kp, dtype=np.float32), w, h, spec.skeleton_obj, spec.feature_settings)
    if spec.hand_local:
        feats = np.concatenate([feats, hand_local_coordinates(feats, spec.skeleton_obj)], axis=-1)
    feats = feats[:, spec.point_indices]
    return feats[temporal_indices(len(feats), spec.num_frames)]


@pytest.mark.parametrize("preset", ["upper_body_hands", "upper_body_hands_face", "all"])
@pytest.mark.parametrize("extra", [{}, {"pose_flow": True, "acceleration": True}, {"fill_missing": False},
                                   {"normalize": False}])
def test_model_points_path_equals_the_whole_skeleton_path(real_clips: list, preset: str, extra: dict) -> None:
    sk = Skeleton(face="subset")
    spec = InputSpec(skeleton=sk.to_dict(), points=point_preset(preset, sk), features={**FEATURES, **extra},
                     num_frames=32, hand_local=True)
    for kp, w, h in real_clips:
        try:
            expected = whole_skeleton_features(kp, w, h, spec)
        except ValueError as exc:  # e.g. pose flow on a clip without both eyes: the same refusal
            with pytest.raises(ValueError, match=str(exc)[:40]):
                clip_features(kp, w, h, spec)
            continue
        assert np.array_equal(clip_features(kp, w, h, spec), expected)


def test_point_subset_answers_like_the_skeleton() -> None:
    sk = Skeleton(face="subset")
    names = point_preset("upper_body_hands", sk)
    sub = PointSubset(sk, names)
    assert sub.num_points == 57 and sub.index("right_hand.wrist") == 36
    assert sub.part_slice("left_hand") == slice(15, 36)
    with pytest.raises(KeyError, match="no part 'face'"):
        sub.part_slice("face")
    with pytest.raises(KeyError, match="only partly"):
        PointSubset(sk, names[:20]).part_slice("left_hand")
    flip = subset_flip_permutation(sk, names)
    full = flip_permutation(sk)
    assert [names[i] for i in flip] == [sk.point_names[full[sk.index(n)]] for n in names]
    with pytest.raises(ValueError, match="mirror"):
        subset_flip_permutation(sk, ("body.left_wrist",))


def test_canonical_hand_makes_a_clip_and_its_mirror_one_input(real_clips: list) -> None:
    sk = Skeleton(face="subset")
    spec = InputSpec(skeleton=sk.to_dict(), points=point_preset("upper_body_hands", sk), features=FEATURES,
                     num_frames=32, hand_local=True, canonical_hand=True)
    plain = InputSpec(skeleton=sk.to_dict(), points=spec.points, features=FEATURES, num_frames=32, hand_local=True)
    flip = flip_permutation(sk)
    for kp, w, h in real_clips:
        mirror = horizontal_flip(kp, flip)
        a, b = clip_features(kp, w, h, spec), clip_features(mirror, w, h, spec)
        assert_close_per_channel(a, b)  # one of the two was mirrored into the other
        mirrored = dominant_hand_mirror(kp, w, h, sk)
        assert mirrored != dominant_hand_mirror(mirror, w, h, sk)
        expected = clip_features(mirror if mirrored else kp, w, h, plain)
        assert_close_per_channel(a, expected)


def assert_close_per_channel(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float32 rounding at the clip's largest magnitude (a mirror is x -> 1 - x in float32,
    which moves the shoulder width, hence every normalized value, by ~1e-7 relative; these .pose
    files have z in the thousands, so z velocities of 0 become ~1e-4)."""
    assert a.shape == b.shape
    scale = max(1.0, float(np.abs(a).max()))
    for c in range(a.shape[-1]):
        np.testing.assert_allclose(a[..., c], b[..., c], rtol=1e-5, atol=1e-6 * scale, err_msg=f"channel {c}")


def test_interpolate_gaps_fills_only_short_inner_gaps() -> None:
    kp = np.full((9, 2, 4), np.nan, dtype=np.float32)
    kp[..., 3] = 0.0
    for t in (0, 4, 8):  # point 0: detected at 0, 4, 8 -> inner gaps of 3 frames
        kp[t, 0] = (t / 8.0, 1.0, 0.0, 1.0)
    kp[2, 1] = (0.5, 0.5, 0.0, 0.9)  # point 1: one detection -> nothing to interpolate
    out = interpolate_gaps(kp, 3)
    np.testing.assert_allclose(out[:, 0, 0], np.arange(9) / 8.0, atol=1e-6)
    assert np.isnan(out[:, 1, 0]).sum() == 8 and out[2, 1, 3] == np.float32(0.9)
    shorter = interpolate_gaps(kp, 2)
    assert np.isnan(shorter[1:4, 0, 0]).all()  # a 3-frame gap is longer than 2: left missing
    assert np.array_equal(interpolate_gaps(kp, 0), kp, equal_nan=True)


def test_interpolation_never_changes_a_detection(real_clips: list) -> None:
    for kp, _, _ in real_clips:
        out = interpolate_gaps(kp, 4)
        found = ~np.isnan(kp[..., 0])
        assert np.array_equal(out[found], kp[found])
        assert (~np.isnan(out[..., 0])).sum() >= found.sum()


def test_hand_dropout_removes_one_run_of_a_hand() -> None:
    clip = np.random.default_rng(0).random((20, 57, 4)).astype(np.float32)
    hands = (tuple(range(15, 36)), tuple(range(36, 57)))
    out = drop_part_segments(clip, hands, 1.0, 0.5, np.random.default_rng(1))
    for part in hands:
        gone = np.isnan(out[:, list(part), 0]).all(axis=1)
        run = np.flatnonzero(gone)
        assert 1 <= len(run) <= 10 and np.array_equal(run, np.arange(run[0], run[-1] + 1))
    assert not np.isnan(out[:, :15]).any() and (out[np.isnan(out[..., 0])][:, 3] == 0).all()


def test_mixup_blends_inputs_and_joins_masks() -> None:
    pose = np.arange(2 * 3, dtype=np.float32).reshape(2, 3, 1, 1)
    mask = np.array([[True, False, False], [True, True, True]])
    mixed = mix_inputs({"pose": pose, "mask": mask}, 0.25, np.array([1, 0]))
    np.testing.assert_allclose(mixed["pose"][0, :, 0, 0], 0.25 * np.arange(3) + 0.75 * np.arange(3, 6))
    assert mixed["mask"].all()


def spec_for(canonical: bool = False) -> InputSpec:
    sk = Skeleton(face="subset")
    return InputSpec(skeleton=sk.to_dict(), points=point_preset("upper_body_hands", sk), features=FEATURES,
                     num_frames=24, hand_local=True, canonical_hand=canonical)


@pytest.mark.parametrize("name", ["pose_conformer", "pose_transformer", "stgcn"])
def test_mirror_tta_is_mirror_invariant_and_a_distribution(name: str) -> None:
    spec = spec_for()
    torch.manual_seed(0)
    model = build_pose_model(name, {"flip_tta": True}, spec, {"gloss": {"num_classes": 7}}).eval()
    x = torch.randn(3, 24, spec.num_points, spec.num_channels)
    mask = torch.ones(3, 24, dtype=torch.bool)
    mask[1, 15:] = False
    x[1, 15:] = 0.0
    with torch.no_grad():
        out = model({"pose": x, "mask": mask})["gloss"]
        mirrored = model({"pose": x.index_select(2, model.mirror_permutation) * model.mirror_signs, "mask": mask})
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(3))
    torch.testing.assert_close(out, mirrored["gloss"], atol=1e-5, rtol=1e-5)
    model.train()  # training sees the plain model
    assert not torch.allclose(model({"pose": x, "mask": mask})["gloss"].log_softmax(-1), out, atol=1e-3)


def test_pose_conformer_ignores_padding_and_learns() -> None:
    spec = spec_for()
    torch.manual_seed(0)
    model = build_pose_model("pose_conformer", {"d_model": 32, "part_dim": 16, "blocks": "conv,attn"}, spec,
                             {"gloss": {"num_classes": 4}})
    x = torch.randn(2, 12, spec.num_points, spec.num_channels)
    padded = torch.cat([x, torch.zeros(2, 12, spec.num_points, spec.num_channels)], dim=1)
    mask = torch.cat([torch.ones(2, 12, dtype=torch.bool), torch.zeros(2, 12, dtype=torch.bool)], dim=1)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model({"pose": x})["gloss"], model({"pose": padded, "mask": mask})["gloss"],
                                   atol=1e-5, rtol=1e-5)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    y = torch.tensor([1, 3])
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model({"pose": padded, "mask": mask})["gloss"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_ensemble_mixture_and_fitted_weights() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    good = np.log(np.full((200, 5), 0.05))
    good[np.arange(200), labels] = np.log(0.8)
    noise = np.log(rng.dirichlet(np.ones(5), 200))
    weights = fit_weights([good, noise], labels)
    assert weights[0] > 0.9 and abs(sum(weights) - 1) < 1e-9
    mix = mixture_log_probs([good, noise], [0.5, 0.5])
    np.testing.assert_allclose(np.exp(mix).sum(-1), 1.0)
    spec = spec_for()
    members = [build_pose_model("pose_transformer", {"d_model": 16, "num_layers": 1, "num_heads": 2}, spec,
                                {"gloss": {"num_classes": 5}}) for _ in range(2)]
    ens = EnsembleClassifier(members, [1.0, 3.0]).eval()
    x = torch.randn(2, 24, spec.num_points, spec.num_channels)
    with torch.no_grad():
        out = ens({"pose": x})["gloss"]
        parts = [m({"pose": x})["gloss"].log_softmax(-1).exp() for m in members]
    torch.testing.assert_close(out.exp(), 0.25 * parts[0] + 0.75 * parts[1])
    with pytest.raises(ValueError, match="non-negative"):
        EnsembleClassifier(members, [1.0, -1.0])


def test_ensemble_trains_reloads_and_exports_as_one_model(packed: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    from sltrain.export import export_model

    pack, labels = packed
    tiny = {"d_model": 16, "part_dim": 8, "blocks": "conv,attn", "num_heads": 2}
    members = {"canonical": {"model": "pose_conformer", "seed": 0, "flip_prob": 0.0, "model_config": tiny},
               "mirrored": {"model": "pose_conformer", "seed": 1, "flip_prob": 0.5, "model_config": tiny}}
    cfg = config(model="pose_conformer", model_config=tiny, epochs=2, ensemble=members, ensemble_weights="val",
                 flip_tta=True, mixup_alpha=0.4, mixup_prob=0.5,
                 augment={**config().augment, "hand_drop_prob": 0.3, "hand_drop_max_fraction": 0.5})
    features = feature_config(num_frames=16, canonical_hand=True, interpolate_max_gap=3, hand_local=False)
    metrics = train(pack, labels, tmp_path / "out", tmp_path / "work", cfg, features, progress=False)
    assert metrics["model"] == "ensemble" and set(metrics["members"]) == set(members)
    assert abs(sum(metrics["weights"].values()) - 1) < 1e-6
    # The keys a single model's metrics have, so `dvc metrics diff` compares an ensemble with anything.
    assert metrics["epochs_run"] == max(m["epochs_run"] for m in metrics["members"].values()) == 2
    assert metrics["best_epoch"] == max(m["best_epoch"] for m in metrics["members"].values())
    ckpt = load_checkpoint(tmp_path / "out" / "model.pt")
    model, spec, _ = model_from_checkpoint(ckpt)
    assert isinstance(model, EnsembleClassifier) and spec.canonical_hand
    assert [m.mirrored for m in model.members] == [False, True]  # the mirrored member scores with flip TTA
    clips = PoseClips(pack, ("val",), spec)
    rows = clips.rows_of("val")
    logits, _ = evaluate_rows(model, clips, rows, 8, torch.device("cpu"))
    assert top_k(logits, clips.labels[rows], 1) == pytest.approx(metrics["val_per_instance_top1"])
    history = (tmp_path / "out" / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) == 3
    from sltrain.export import real_parity_clips

    result = export_model(tmp_path / "out" / "model.pt", tmp_path / "export",
                          parity_clips=real_parity_clips(tmp_path / "out" / "model.pt", pack, count=3))
    parity = json.loads((Path(result["path"]) / "parity.json").read_text())
    assert parity["passed"] and parity["num_clips"] == 3
    assert parity["backends"]["openvino_ir"]["max_abs_diff"] < 1e-4


def test_members_side_by_side_learn_what_they_learn_one_by_one(packed: tuple[Path, Path],  # noqa: F811
                                                                  tmp_path: Path) -> None:
    """``train.ensemble_jobs`` trains members in spawned processes at once: same weights, same metrics."""
    pack, labels = packed
    tiny = {"d_model": 16, "part_dim": 8, "blocks": "conv,attn", "num_heads": 2}
    members = {"canonical": {"model": "pose_conformer", "seed": 0, "flip_prob": 0.0, "model_config": tiny},
               "mirrored": {"model": "pose_conformer", "seed": 1, "flip_prob": 0.5, "model_config": tiny}}
    features = feature_config(num_frames=16, canonical_hand=True, hand_local=False)
    runs = {}
    for jobs in (1, 2):
        cfg = config(model="pose_conformer", model_config=tiny, epochs=2, ensemble=members, flip_tta=True,
                     ensemble_jobs=jobs)
        runs[jobs] = train(pack, labels, tmp_path / f"out{jobs}", tmp_path / f"work{jobs}", cfg, features,
                           progress=False)
    for key in ("val_per_instance_top1", "val_per_instance_top5", "best_epoch"):
        assert runs[1][key] == runs[2][key], key
    one, two = (load_checkpoint(tmp_path / f"out{jobs}" / "model.pt")["model_state"] for jobs in (1, 2))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    for name in members:  # each member trained in its own process and left its own resumable state
        assert (tmp_path / "work2" / name / "last.pt").is_file()


def test_a_loader_worker_changes_speed_not_results(packed: tuple[Path, Path], tmp_path: Path,  # noqa: F811
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Workers fork, which is only safe in a process without OpenVINO's or MediaPipe's threads (the train CLI's):
    the worker run goes in a fresh interpreter, as ``python -m sltrain train`` would."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    pack, labels = packed
    script = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
from pathlib import Path
from test_train import config
from sltrain.train import FORK_UNSAFE_MODULES, FeatureConfig, train
features = FeatureConfig(points="upper_body_hands", num_frames=16, normalize=True, velocity=True, acceleration=False,
                         pose_flow=False, fill_missing=True, hand_local=False, interpolate_max_gap=0,
                         canonical_hand=True)
for workers in (0, 1):
    cfg = config(model="pose_conformer", model_config={{"d_model": 16, "part_dim": 8, "blocks": "conv,attn",
                                                        "num_heads": 2}}, epochs=2, loader_workers=workers)
    out = Path({str(tmp_path)!r})
    train({str(pack)!r}, {str(labels)!r}, out / f"o{{workers}}", out / f"w{{workers}}", cfg,
          features, progress=False)
assert not [m for m in FORK_UNSAFE_MODULES if m in sys.modules]  # so the worker really forked
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO_ROOT, timeout=600)
    runs = [(tmp_path / f"o{workers}" / "history.csv").read_text().splitlines() for workers in (0, 1)]
    strip = [[",".join(line.split(",")[:-1]) for line in run] for run in runs]  # elapsed_s is last
    assert len(strip[0]) == 3 and strip[0] == strip[1]

    # In a process that loaded OpenVINO (this test session has), batches are made in-process, and it says so.
    import openvino  # noqa: F401

    cfg = config(model="pose_conformer", model_config={"d_model": 16, "part_dim": 8, "blocks": "conv,attn",
                                                        "num_heads": 2}, epochs=2, loader_workers=1)
    with caplog.at_level("WARNING", logger="sltrain.train"):
        train(pack, labels, tmp_path / "here", tmp_path / "where", cfg, feature_config(num_frames=16, canonical_hand=True, hand_local=False),
              progress=False)
    assert "loader workers off in this process: openvino" in caplog.text
    assert [",".join(x.split(",")[:-1]) for x in (tmp_path / "here" / "history.csv").read_text().splitlines()] == strip[1]


def test_final_fit_retrains_on_train_and_val_and_says_so(packed: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    from sldata.pose.store import load_packed
    from sltrain.evaluate import evaluate

    pack, labels = packed
    tiny = {"d_model": 16, "part_dim": 8, "blocks": "conv,attn", "num_heads": 2}
    cfg = config(model="pose_conformer", model_config=tiny, epochs=3, final_fit=True)
    metrics = train(pack, labels, tmp_path / "out", tmp_path / "work", cfg, feature_config(num_frames=16, hand_local=False, canonical_hand=False), progress=False)
    selected = load_checkpoint(tmp_path / "work" / "best.pt")
    final = load_checkpoint(tmp_path / "out" / "model.pt")
    assert selected["trained_on"] == ["train"] and final["trained_on"] == ["train", "val"]
    assert final["epoch"] == metrics["best_epoch"] == metrics["final_fit"]["epochs"]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["final_fit"]["trained_on"] == ["train", "val"]
    assert not all(torch.equal(selected["model_state"][k], final["model_state"][k]) for k in final["model_state"])
    _, index, _ = load_packed(pack)
    samples = tmp_path / "samples.parquet"
    index[["sample_id", "label", "split", "gloss", "signer_id"]].to_parquet(samples)
    result = evaluate(tmp_path / "out" / "model.pt", pack, samples, ["val", "test"], tmp_path / "eval", n_boot=10)
    assert result["trained_on"] == ["train", "val"]
    assert result["val"]["held_out"] is False and result["test"]["held_out"] is True


def test_ensemble_final_fit_mixes_the_retrained_members(packed: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    pack, labels = packed
    tiny = {"d_model": 16, "part_dim": 8, "blocks": "attn", "num_heads": 2}
    members = {name: {"model": "pose_conformer", "seed": i, "flip_prob": 0.0, "model_config": tiny}
               for i, name in enumerate(("a", "b"))}
    cfg = config(model="pose_conformer", model_config=tiny, epochs=2, ensemble=members, final_fit=True)
    metrics = train(pack, labels, tmp_path / "out", tmp_path / "work", cfg, feature_config(num_frames=16, hand_local=False, canonical_hand=False),
                    progress=False)
    ckpt = load_checkpoint(tmp_path / "out" / "model.pt")
    assert ckpt["trained_on"] == ["train", "val"] and set(metrics["final_fit"]["epochs"]) == {"a", "b"}
    for i, name in enumerate(("a", "b")):
        final = load_checkpoint(tmp_path / "work" / name / "final" / "out" / "model.pt")
        assert final["trained_on"] == ["train", "val"]
        prefix = f"members.{i}."
        assert all(torch.equal(ckpt["model_state"][prefix + k], v) for k, v in final["model_state"].items())
