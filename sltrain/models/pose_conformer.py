"""Pose conformer: per-part embeddings, temporal convolutions and self-attention over keypoint frames.

A stronger pose classifier than :class:`sltrain.models.pose_transformer.PoseTransformer` for
small sign datasets, built from what helps on isolated signs:

* **Per-part embeddings** (as in Siformer, or SPOTER's separate hands): each body part's points
  (``body``, ``left_hand``, ``right_hand``, ``face``; the groups come from the input spec's point
  names) are flattened and embedded by their own small MLP, so a hand's shape is modelled by
  weights that see only that hand; the part embeddings are concatenated and projected to
  ``d_model``.
* **Temporal convolutions before attention** (a conformer-style stack, as in the winning
  solutions of the Kaggle ASL Signs competition): each :class:`ConvBlock` is a gated pointwise
  layer, a depthwise convolution over time, batch norm over real frames and a projection, with a
  residual; :class:`AttentionBlock` is pre-norm masked self-attention plus a feed-forward layer.
  ``blocks`` gives the order, e.g. ``"conv,attn,conv,attn"``.
* **Stochastic depth** (``drop_path``) on every residual branch, dropout, and a head dropout.
* **Mean pooling** over the real frames.

Padding frames are masked out of attention, zeroed before every convolution and left out of the
batch-norm statistics and the pooling, so appending padding to a clip changes nothing.

Like every :class:`~sltrain.models.heads.SignClassifier` it can average its input and the
input's mirror image in eval mode (``flip_tta``; the mirror in feature space comes from
:func:`mirror_in_feature_space`), inside the model, so ``evaluate``, ``export`` and ``predict``
score exactly the same function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sltrain.models.heads import HeadsConfig, SignClassifier, frame_mask, masked_mean
from sltrain.models.pose_transformer import check_pose_batch

BLOCK_KINDS: tuple[str, ...] = ("conv", "attn")


def parse_blocks(blocks: str | Sequence[str]) -> tuple[str, ...]:
    """``"conv,attn,conv,attn"`` (or a sequence) as a tuple of block kinds; ``ValueError`` on others."""
    kinds = tuple(b.strip() for b in (blocks.split(",") if isinstance(blocks, str) else blocks) if b.strip())
    bad = [b for b in kinds if b not in BLOCK_KINDS]
    if not kinds or bad:
        raise ValueError(f"blocks must be a non-empty list of {BLOCK_KINDS}, got {blocks!r}")
    return kinds


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample with probability ``p`` while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over channels of ``[B, D, T]`` whose statistics use the real frames only."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        if not self.training:
            return super().forward(x) * mask[:, None, :].to(x.dtype)
        m = mask[:, None, :].to(x.dtype)
        count = m.sum().clamp(min=1.0)
        mean = (x * m).sum(dim=(0, 2)) / count
        var = (((x - mean[None, :, None]) * m) ** 2).sum(dim=(0, 2)) / count
        with torch.no_grad():
            momentum = self.momentum if self.momentum is not None else 0.1
            unbiased = var * count / (count - 1).clamp(min=1.0)
            self.running_mean.mul_(1 - momentum).add_(momentum * mean)
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
            self.num_batches_tracked.add_(1)
        out = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)
        out = out * self.weight[None, :, None] + self.bias[None, :, None]
        return out * m


class ConvBlock(nn.Module):
    """Pre-norm gated pointwise layer, depthwise temporal convolution, masked batch norm, projection; residual."""

    def __init__(self, d_model: int, kernel_size: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        self.norm = nn.LayerNorm(d_model)
        self.expand = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.batch_norm = MaskedBatchNorm1d(d_model)
        self.project = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = F.glu(self.expand(self.norm(x)), dim=-1) * mask[..., None].to(x.dtype)
        h = self.batch_norm(self.depthwise(h.transpose(1, 2)), mask).transpose(1, 2)
        h = self.dropout(self.project(F.silu(h)))
        return x + self.drop_path(h)


class AttentionBlock(nn.Module):
    """Pre-norm masked multi-head self-attention and a feed-forward layer, each with a residual."""

    def __init__(self, d_model: int, num_heads: int, ff_dim: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout),
                                          nn.Linear(ff_dim, d_model))
        self.dropout = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        padding = ~mask & mask.any(dim=1, keepdim=True)  # a sample without real frames attends everywhere
        h = self.norm1(x)
        h, _ = self.attention(h, h, h, key_padding_mask=padding, need_weights=False)
        x = x + self.drop_path(self.dropout(h))
        return x + self.drop_path(self.feed_forward(self.norm2(x)))


class PartEmbedding(nn.Module):
    """One small MLP per group of points, concatenated and projected: ``[B, T, P, C] -> [B, T, d_model]``."""

    def __init__(self, parts: Sequence[Sequence[int]], in_channels: int, part_dim: int, d_model: int) -> None:
        super().__init__()
        if not parts or any(len(p) == 0 for p in parts):
            raise ValueError(f"parts must be non-empty groups of point indices, got {parts!r}")
        for i, part in enumerate(parts):
            self.register_buffer(f"part_{i}", torch.as_tensor(list(part), dtype=torch.long), persistent=False)
        self.num_parts = len(parts)
        self.embed = nn.ModuleList(
            nn.Sequential(nn.Linear(len(p) * in_channels, part_dim), nn.LayerNorm(part_dim), nn.GELU())
            for p in parts)
        self.project = nn.Linear(part_dim * len(parts), d_model)

    def forward(self, pose: Tensor) -> Tensor:
        embedded = [layer(pose.index_select(2, getattr(self, f"part_{i}")).flatten(2))
                    for i, layer in enumerate(self.embed)]
        return self.project(torch.cat(embedded, dim=-1))


class PoseConformerBackbone(nn.Module):
    """Part embedding, learned positions, the block stack, a final norm and mean pooling -> ``[B, d_model]``."""

    def __init__(self, num_points: int, in_channels: int, parts: Sequence[Sequence[int]], d_model: int,
                 part_dim: int, blocks: tuple[str, ...], num_heads: int, ff_dim: int, kernel_size: int,
                 dropout: float, drop_path: float, max_len: int) -> None:
        super().__init__()
        self.num_points = num_points
        self.in_channels = in_channels
        self.embed = PartEmbedding(parts, in_channels, part_dim, d_model)
        self.position = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        rates = [drop_path * i / max(1, len(blocks) - 1) for i in range(len(blocks))]  # deeper: more drop
        self.blocks = nn.ModuleList(
            ConvBlock(d_model, kernel_size, dropout, rate) if kind == "conv"
            else AttentionBlock(d_model, num_heads, ff_dim, dropout, rate)
            for kind, rate in zip(blocks, rates))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        pose = batch["pose"]
        check_pose_batch(pose, self.num_points, self.in_channels)
        if pose.shape[1] > self.max_len:
            raise ValueError(f"clip of {pose.shape[1]} frames exceeds max_len={self.max_len}")
        mask = frame_mask(batch, pose.shape[0], pose.shape[1], pose.device)
        x = self.dropout(self.embed(pose) + self.position[:, : pose.shape[1]])
        for block in self.blocks:
            x = block(x, mask)
        return masked_mean(self.norm(x), mask)


class PoseConformer(SignClassifier):
    """Sign classifier on keypoint sequences (see the module docs).

    Parameters
    ----------
    num_points, in_channels
        ``P`` and ``C`` of the ``pose`` input ``[B, T, P, C]``.
    heads
        Heads configuration (see :func:`sltrain.models.heads.parse_heads`).
    parts
        Groups of point indices embedded separately (from the input spec; ``None``: one group of
        all points).
    d_model, part_dim
        Width of the block stack and of each part's embedding.
    blocks
        Block kinds in order, ``"conv"`` or ``"attn"`` (a comma-separated string or a sequence).
    num_heads, ff_dim
        Attention heads and feed-forward width (``None``: ``2 * d_model``).
    kernel_size
        Temporal kernel of the depthwise convolutions (odd).
    dropout, drop_path, head_dropout
        Dropout inside the blocks, the largest stochastic-depth rate (the last block's; earlier
        blocks get linearly less) and dropout before the heads.
    max_len
        Longest clip in frames.

    Forward: ``{"pose": [B, T, P, C], "mask": bool [B, T]}`` -> ``{head: logits [B, classes]}``.
    """

    def __init__(self, num_points: int, in_channels: int, heads: HeadsConfig, *,
                 parts: Sequence[Sequence[int]] | None = None, d_model: int = 128, part_dim: int = 64,
                 blocks: str | Sequence[str] = "conv,attn,attn", num_heads: int = 4, ff_dim: int | None = None,
                 kernel_size: int = 5, dropout: float = 0.1, drop_path: float = 0.1, head_dropout: float = 0.2,
                 max_len: int = 256) -> None:
        groups = [list(p) for p in parts] if parts is not None else [list(range(num_points))]
        used = sorted(i for p in groups for i in p)
        if used != list(range(num_points)):
            raise ValueError(f"parts must cover each of the {num_points} input points exactly once")
        backbone = PoseConformerBackbone(num_points, in_channels, groups, d_model, part_dim, parse_blocks(blocks),
                                         num_heads, ff_dim or 2 * d_model, kernel_size, dropout, drop_path, max_len)
        super().__init__(backbone, d_model, heads, head_dropout=head_dropout)


def input_parts(points: Sequence[str]) -> list[list[int]]:
    """Indices of ``points`` (qualified names ``<part>.<point>``) grouped by part, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(points):
        groups.setdefault(name.split(".", 1)[0], []).append(i)
    return list(groups.values())


def mirror_in_feature_space(point_names: Sequence[str], channels: Sequence[str],
                            flip_index: Sequence[int]) -> tuple[list[int], list[float]]:
    """The mirror image of model input as ``(point permutation, per-channel sign)``.

    ``flip_index`` is :func:`sltrain.augment.flip_permutation` restricted to the input points.
    Channels whose name is ``x`` or ends in ``_x`` (positions, velocities, hand-local ``x``)
    change sign: the input is centred on the shoulders, so a mirror about the body's midline is
    ``x -> -x`` together with swapping left and right. Other channels (``y``, ``z``, presence,
    angles) keep their sign.

    Raises
    ------
    ValueError
        For channels a mirror cannot map this way (pose-flow angles).
    """
    if any(c.startswith("flow_") for c in channels):
        raise ValueError("mirror test-time augmentation does not support pose-flow channels")
    if len(flip_index) != len(point_names):
        raise ValueError(f"flip_index has {len(flip_index)} entries for {len(point_names)} points")
    signs = [-1.0 if (c == "x" or c.endswith("_x")) else 1.0 for c in channels]
    return [int(i) for i in flip_index], signs
