"""sltrain.models: forward/backward of every model, padding invariance, heads, loss, freezing, weights loading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from sldata.pose.skeleton import Skeleton
from sltrain.models import (
    MODEL_NAMES,
    RGBS3D,
    STGCN,
    VTN,
    FreezeSchedule,
    PoseTransformer,
    SignClassifier,
    SkeletonGraph,
    TemporalTransformer,
    build_model,
    config_keys,
    count_parameters,
    load_pretrained,
    multi_head_loss,
    parse_heads,
    skeleton_graph,
)
from sltrain.models.stgcn import MaskedBatchNorm

HEADS = {"gloss": {"num_classes": 7}, "handshape": {"num_classes": 3, "weight": 0.5}}
POINTS, CHANNELS, CROP = 5, 3, 16
CHAIN = [(0, 1), (1, 2), (2, 3), (3, 4)]


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def tiny_pose_transformer(pooling: str = "cls") -> PoseTransformer:
    return PoseTransformer(POINTS, CHANNELS, HEADS, d_model=16, num_layers=2, num_heads=2, dropout=0.0, max_len=32,
                           pooling=pooling)  # type: ignore[arg-type]


def tiny_stgcn() -> STGCN:
    return STGCN(POINTS, CHANNELS, HEADS, CHAIN, channels=(8, 8, 16), strides=(1, 2, 2), dropout=0.0)


def tiny_vtn() -> VTN:
    return VTN(POINTS, 2, HEADS, hand_widths=(8, 16), hand_dim=8, pose_dim=8, d_model=16, num_layers=1, num_heads=2,
               dropout=0.0, max_len=32, mirror_left_hand=True)


def tiny_rgb() -> RGBS3D:
    return RGBS3D(HEADS, width_multiplier=0.25, feature_dim=64, head_dropout=0.0)


def pose_batch(lengths: list[int], frames: int, garbage: bool = False) -> dict[str, Tensor]:
    """Random pose batch; frames past each length are padding (zeros, or random garbage)."""
    generator = torch.Generator().manual_seed(1)
    pose = torch.randn(len(lengths), frames, POINTS, CHANNELS, generator=generator)
    mask = torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]
    pose = torch.where(mask[:, :, None, None], pose, torch.randn_like(pose) * 5 if garbage else torch.zeros_like(pose))
    return {"pose": pose, "mask": mask}


def vtn_batch(lengths: list[int], frames: int, garbage: bool = False) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(2)
    mask = torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]
    hands = torch.randint(0, 256, (len(lengths), frames, 2, 3, CROP, CROP), generator=generator, dtype=torch.uint8)
    flow = torch.randn(len(lengths), frames, POINTS, 2, generator=generator)
    if not garbage:
        hands = hands * mask[:, :, None, None, None, None]
        flow = flow * mask[:, :, None, None]
    return {"hands": hands, "pose_flow": flow, "mask": mask}


def pad_batch(batch: dict[str, Tensor], extra: int, garbage: bool) -> dict[str, Tensor]:
    """``batch`` with ``extra`` padding frames appended (zeros, or random garbage) to every time-major tensor."""
    out: dict[str, Tensor] = {}
    for key, value in batch.items():
        shape = (value.shape[0], extra, *value.shape[2:])
        if key == "mask":
            pad = torch.zeros(shape, dtype=torch.bool)
        elif value.dtype == torch.uint8:
            pad = torch.randint(0, 256, shape, dtype=torch.uint8) if garbage else torch.zeros(shape, dtype=torch.uint8)
        else:
            pad = torch.randn(shape) * 5 if garbage else torch.zeros(shape)
        out[key] = torch.cat([value, pad], dim=1)
    return out


MODEL_CASES: dict[str, tuple[Callable[[], SignClassifier], Callable[..., dict[str, Tensor]]]] = {
    "pose_transformer_cls": (lambda: tiny_pose_transformer("cls"), pose_batch),
    "pose_transformer_mean": (lambda: tiny_pose_transformer("mean"), pose_batch),
    "stgcn": (tiny_stgcn, pose_batch),
    "vtn": (tiny_vtn, vtn_batch),
}


@pytest.mark.parametrize("case", [*MODEL_CASES, "rgb_s3d"])
def test_forward_backward_reaches_every_parameter(case: str) -> None:
    if case == "rgb_s3d":
        model: SignClassifier = tiny_rgb()
        batch = {"rgb": torch.randn(2, 3, 8, 32, 32)}
    else:
        make_model, make_batch = MODEL_CASES[case]
        model = make_model()
        batch = make_batch([6, 4], 6)
    model.train()
    logits = model(batch)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {"gloss": (2, 7), "handshape": (2, 3)}
    total, per_head = multi_head_loss(logits, {"gloss": torch.tensor([1, 6]), "handshape": torch.tensor([0, 2])},
                                      HEADS)
    total.backward()
    assert set(per_head) == {"gloss", "handshape"}
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("lengths", [[6, 6], [6, 3]])
@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_appending_padding_changes_nothing(case: str, lengths: list[int], mode: str) -> None:
    """Train mode too: batch-norm statistics must come from real frames only."""
    make_model, make_batch = MODEL_CASES[case]
    model = make_model()
    model.train(mode == "train")
    batch = make_batch(lengths, 6)
    padded = pad_batch(batch, 5, garbage=True)
    with torch.no_grad():
        reference, out = model(batch), model(padded)
    for head in HEADS:
        torch.testing.assert_close(out[head], reference[head], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_content_of_masked_frames_is_ignored(case: str) -> None:
    make_model, make_batch = MODEL_CASES[case]
    model = make_model().eval()
    with torch.no_grad():
        clean, noisy = model(make_batch([5, 2], 7)), model(make_batch([5, 2], 7, garbage=True))
    torch.testing.assert_close(noisy["gloss"], clean["gloss"], atol=1e-5, rtol=1e-4)
    full = make_batch([7, 7], 7)
    with torch.no_grad():
        assert not torch.allclose(model(full)["gloss"], clean["gloss"])  # the mask does matter


def test_rgb_mask_pools_over_real_frames_only() -> None:
    model = tiny_rgb().train()  # batch statistics: untrained running statistics make features vanish
    rgb = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        unmasked = model({"rgb": rgb})["gloss"]
        all_real = model({"rgb": rgb, "mask": torch.ones(2, 8, dtype=torch.bool)})["gloss"]
        half = model({"rgb": rgb, "mask": torch.arange(8)[None].expand(2, 8) < 4})["gloss"]
    torch.testing.assert_close(all_real, unmasked)
    assert not torch.allclose(half, unmasked)


def test_sample_without_real_frames_gives_finite_output() -> None:
    temporal = TemporalTransformer(8, 1, 2, 16, 0.0, 10, pooling="mean").eval()
    out = temporal(torch.randn(2, 4, 8), torch.tensor([[True, True, False, False], [False] * 4]))
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros(8))


def test_masked_batch_norm_matches_batch_norm_on_real_frames() -> None:
    x = torch.randn(3, 4, 6, 5)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    masked, plain = MaskedBatchNorm(4), nn.BatchNorm2d(4)
    out = masked(x, mask)
    real = torch.cat([x[i, :, : int(mask[i].sum())] for i in range(3)], dim=1)[None]  # [1, C, sum T, V]
    expected = plain(real)
    torch.testing.assert_close(torch.cat([out[i, :, : int(mask[i].sum())] for i in range(3)], dim=1)[None], expected)
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)
    assert (out[1, :, 4:] == 0).all() and (out[2, :, 2:] == 0).all()


def test_skeleton_graph_keeps_upper_body_and_hands_with_wrist_links() -> None:
    skeleton = Skeleton(face="subset")
    graph = skeleton_graph(skeleton)
    assert graph.num_nodes == 17 + 21 + 21
    node = {point: i for i, point in enumerate(graph.point_indices)}
    edges = {frozenset(e) for e in graph.edges}
    for hand, body in (("left_hand.wrist", "body.left_wrist"), ("right_hand.wrist", "body.right_wrist")):
        assert frozenset((node[skeleton.index(hand)], node[skeleton.index(body)])) in edges
    assert skeleton.index("body.left_hip") not in node
    left_hand = skeleton.part_slice("left_hand").start
    assert frozenset((node[left_hand], node[left_hand + 1])) in edges  # hand edges remapped
    adjacency = graph.normalized_adjacency()
    torch.testing.assert_close(adjacency, adjacency.T)
    assert (adjacency.diagonal() > 0).all()
    # The model rebuilds the same graph from input edges and point indices.
    model = STGCN(skeleton.num_points, 2, HEADS, graph.input_edges(), point_indices=graph.point_indices,
                  channels=(8,), strides=(1,))
    assert model.backbone.graph == graph


def test_graph_drops_edges_of_points_not_kept() -> None:
    graph = SkeletonGraph.from_edges(5, CHAIN, keep=[4, 3, 1])
    assert graph.edges == ((1, 0),)  # only (3, 4) survives, as nodes 1 and 0
    with pytest.raises(ValueError, match="outside"):
        SkeletonGraph.from_edges(5, [(0, 9)])


def test_multi_head_loss_weights_heads_and_ignores_missing_labels() -> None:
    torch.manual_seed(3)
    logits = {"gloss": torch.randn(3, 7, requires_grad=True), "handshape": torch.randn(3, 3, requires_grad=True)}
    targets = {"gloss": torch.tensor([1, -1, 4]), "handshape": torch.tensor([-1, -1, -1])}
    total, per_head = multi_head_loss(logits, targets, HEADS)
    expected_gloss = nn.functional.cross_entropy(logits["gloss"][[0, 2]], torch.tensor([1, 4]))
    torch.testing.assert_close(per_head["gloss"], expected_gloss)
    assert per_head["handshape"].item() == 0.0
    torch.testing.assert_close(total, expected_gloss)
    total.backward()
    assert logits["gloss"].grad is not None and (logits["gloss"].grad[1] == 0).all()

    targets["handshape"] = torch.tensor([2, -1, 0])
    total, per_head = multi_head_loss(logits, targets, HEADS, label_smoothing=0.1)
    torch.testing.assert_close(total, per_head["gloss"] + 0.5 * per_head["handshape"])
    only_gloss, per_head = multi_head_loss(logits, {"gloss": targets["gloss"]}, HEADS)
    assert set(per_head) == {"gloss"}
    with pytest.raises(ValueError, match="unknown head"):
        multi_head_loss(logits, {"location": torch.tensor([0, 0, 0])}, HEADS)


def test_heads_config_is_validated() -> None:
    assert parse_heads({"gloss": {"num_classes": 5}})["gloss"].weight == 1.0
    with pytest.raises(ValueError, match="unknown key"):
        parse_heads({"gloss": {"num_classes": 5, "wieght": 1.0}})
    with pytest.raises(ValueError, match="num_classes"):
        parse_heads({"gloss": {"num_classes": 0}})
    with pytest.raises(ValueError, match="non-empty"):
        parse_heads({})


def test_freeze_schedule_freezes_then_unfreezes() -> None:
    model = tiny_pose_transformer()
    schedule = FreezeSchedule({"backbone": 2, "backbone.temporal.encoder": 3})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for epoch, expect_backbone, expect_encoder in ((0, False, False), (1, False, False), (2, True, False),
                                                    (3, True, True)):
        assert schedule.apply(model, epoch) == schedule.frozen_prefixes(epoch)
        params = dict(model.named_parameters())
        assert params["backbone.embed.weight"].requires_grad is expect_backbone
        assert params["backbone.temporal.encoder.layers.0.linear1.weight"].requires_grad is expect_encoder
        assert params["heads.classifiers.gloss.weight"].requires_grad
    schedule.apply(model, 0)
    optimizer.zero_grad(set_to_none=True)
    model(pose_batch([6, 4], 6))["gloss"].sum().backward()
    optimizer.step()
    after = model.state_dict()
    assert torch.equal(after["backbone.embed.weight"], before["backbone.embed.weight"])
    assert not torch.equal(after["heads.classifiers.gloss.weight"], before["heads.classifiers.gloss.weight"])
    with pytest.raises(ValueError, match="matches no parameter"):
        FreezeSchedule({"bakbone": 1}).apply(model, 0)


def test_load_pretrained_skips_mismatched_heads(tmp_path: Path) -> None:
    source = tiny_rgb()
    path = tmp_path / "pretrained.pt"
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, path)
    target = RGBS3D({"gloss": {"num_classes": 9}}, width_multiplier=0.25, feature_dim=64)
    head_before = target.heads.classifiers.gloss.weight.detach().clone()
    report = target.load_weights(path)
    mismatched = {key for key, _, _ in report.mismatched}
    assert mismatched == {"heads.classifiers.gloss.weight", "heads.classifiers.gloss.bias"}
    assert {k for k in report.unexpected if k.startswith("heads.")} == {"heads.classifiers.handshape.weight",
                                                                         "heads.classifiers.handshape.bias"}
    assert torch.equal(target.heads.classifiers.gloss.weight, head_before)
    for key, value in target.backbone.state_dict().items():
        assert torch.equal(value, source.backbone.state_dict()[key]), key
    with pytest.raises(RuntimeError, match="does not match"):
        load_pretrained(target, path, strict=True)
    torch.save(source.state_dict(), path)
    assert load_pretrained(tiny_rgb(), path, strict=True).skipped == []


def test_build_model_by_name_and_clear_errors() -> None:
    skeleton = Skeleton(face="none")
    graph = skeleton_graph(skeleton)
    assert MODEL_NAMES == ("pose_transformer", "pose_conformer", "stgcn", "vtn", "rgb_s3d")
    model = build_model("stgcn", {"point_indices": list(graph.point_indices), "channels": [8], "strides": [1]},
                        num_points=skeleton.num_points, in_channels=3, heads=HEADS, edges=graph.input_edges())
    assert isinstance(model, STGCN)
    with pytest.raises(ValueError, match="valid models: pose_transformer, pose_conformer, stgcn, vtn, rgb_s3d"):
        build_model("resnet", {}, num_points=5, in_channels=3, heads=HEADS)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['dmodel'\]; valid keys: d_model"):
        build_model("pose_transformer", {"dmodel": 8}, num_points=5, in_channels=3, heads=HEADS)
    with pytest.raises(ValueError, match="needs edges"):
        build_model("stgcn", None, num_points=5, in_channels=3, heads=HEADS)
    assert "point_indices" in config_keys("stgcn")


def test_default_sizes_are_cpu_friendly(capsys: pytest.CaptureFixture[str]) -> None:
    skeleton = Skeleton(face="subset")
    graph = skeleton_graph(skeleton)
    heads = {"gloss": {"num_classes": 100}}
    counts = {}
    for name in MODEL_NAMES:
        config = {"point_indices": list(graph.point_indices)} if name == "stgcn" else {}
        channels = 2 if name == "vtn" else 9
        model = build_model(name, config, num_points=skeleton.num_points, in_channels=channels, heads=heads,
                            edges=graph.input_edges())
        counts[name] = count_parameters(model)
        assert count_parameters(model, trainable_only=True) == counts[name]
    with capsys.disabled():
        print("\nparameters at defaults (168 points, 100 glosses):", counts)
    assert all(100_000 < n < 5_000_000 for n in counts.values()), counts
