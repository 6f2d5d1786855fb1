"""SPOTER-like pose transformer: per-frame embedding of all keypoints, self-attention over time.

Each frame's ``[P, C]`` keypoint features are flattened and linearly embedded to ``d_model``; a
pre-norm :class:`torch.nn.TransformerEncoder` attends over the real frames only (padding frames
are masked out of attention), and the sequence is pooled either by a learnable ``[CLS]`` token or
by a mean over the real frames. :class:`TemporalTransformer` (the part after the embedding) is
shared with :class:`sltrain.models.vtn.VTN`.

Padding appended after a clip changes nothing: positions of real frames stay the same, padded
keys are masked, and pooling ignores padded frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from sltrain.models.heads import HeadsConfig, SignClassifier, frame_mask, masked_mean

Pooling = Literal["cls", "mean"]
PositionalEncoding = Literal["sinusoidal", "learned"]
POOLINGS: tuple[str, ...] = ("cls", "mean")
POSITIONAL_ENCODINGS: tuple[str, ...] = ("sinusoidal", "learned")


def check_pose_batch(pose: Tensor, num_points: int, in_channels: int) -> None:
    """Raise ``ValueError`` unless ``pose`` is ``[B, T, num_points, in_channels]`` with ``T >= 1``."""
    if pose.dim() != 4 or pose.shape[2] != num_points or pose.shape[3] != in_channels or pose.shape[1] < 1:
        raise ValueError(f"pose must have shape [B, T, P={num_points}, C={in_channels}] with T >= 1, "
                         f"got {list(pose.shape)}")


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sine/cosine encoding of Vaswani et al. to ``[B, T, D]`` (``T <= max_len``)."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.shape[1]]


class LearnedPositionalEncoding(nn.Module):
    """Adds a learned embedding per position to ``[B, T, D]`` (``T <= max_len``)."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.shape[1]]


class TemporalTransformer(nn.Module):
    """Masked self-attention over a sequence of frame embeddings, pooled to one vector.

    Parameters
    ----------
    d_model
        Embedding size.
    num_layers, num_heads, ff_dim
        Encoder depth, attention heads and feed-forward width.
    dropout
        Dropout on the embeddings and inside the encoder.
    max_len
        Longest sequence (in frames) the positional encoding covers.
    pooling
        ``"cls"``: output of a learnable token prepended to the frames (it has no positional
        encoding); ``"mean"``: mean of the outputs of the real frames.
    positional
        ``"sinusoidal"`` (fixed) or ``"learned"``.

    Forward: ``frames`` float ``[B, T, d_model]``, ``mask`` bool ``[B, T]`` (True = real frame)
    -> ``[B, d_model]``. A sample without any real frame gives a finite vector (attention is
    then left unmasked for it).
    """

    def __init__(self, d_model: int, num_layers: int, num_heads: int, ff_dim: int, dropout: float, max_len: int,
                 pooling: Pooling = "cls", positional: PositionalEncoding = "sinusoidal") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if positional not in POSITIONAL_ENCODINGS:
            raise ValueError(f"positional must be one of {POSITIONAL_ENCODINGS}, got {positional!r}")
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.max_len = max_len
        self.pooling = pooling
        encoding = SinusoidalPositionalEncoding if positional == "sinusoidal" else LearnedPositionalEncoding
        self.positional = encoding(d_model, max_len)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward=ff_dim, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model),
                                             enable_nested_tensor=False)

    def forward(self, frames: Tensor, mask: Tensor) -> Tensor:
        if frames.shape[1] > self.max_len:
            raise ValueError(f"sequence of {frames.shape[1]} frames exceeds max_len={self.max_len}")
        x = self.dropout(self.positional(frames))
        padding = ~mask
        padding = padding & mask.any(dim=1, keepdim=True)  # an all-padding sample attends everywhere (no NaN)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            padding = torch.cat([padding.new_zeros(x.shape[0], 1), padding], dim=1)
        x = self.encoder(x, src_key_padding_mask=padding)
        if self.cls_token is not None:
            return x[:, 0]
        return masked_mean(x, mask)


class PoseTransformerBackbone(nn.Module):
    """Per-frame linear embedding of ``[P * C]`` plus :class:`TemporalTransformer`.

    Forward: batch with ``pose`` float ``[B, T, P, C]`` and optional ``mask`` bool ``[B, T]``
    -> ``[B, d_model]``.
    """

    def __init__(self, num_points: int, in_channels: int, d_model: int, num_layers: int, num_heads: int,
                 ff_dim: int, dropout: float, max_len: int, pooling: Pooling, positional: PositionalEncoding) -> None:
        super().__init__()
        self.num_points = num_points
        self.in_channels = in_channels
        self.embed = nn.Linear(num_points * in_channels, d_model)
        self.temporal = TemporalTransformer(d_model, num_layers, num_heads, ff_dim, dropout, max_len, pooling,
                                            positional)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        pose = batch["pose"]
        check_pose_batch(pose, self.num_points, self.in_channels)
        mask = frame_mask(batch, pose.shape[0], pose.shape[1], pose.device)
        return self.temporal(self.embed(pose.flatten(2)), mask)


class PoseTransformer(SignClassifier):
    """SPOTER-like classifier on keypoint sequences.

    Parameters
    ----------
    num_points, in_channels
        ``P`` and ``C`` of the ``pose`` input ``[B, T, P, C]``.
    heads
        Heads configuration (see :func:`sltrain.models.heads.parse_heads`).
    d_model, num_layers, num_heads
        Transformer size (defaults are small enough to train on a laptop CPU).
    ff_dim
        Feed-forward width; ``None`` means ``2 * d_model``.
    dropout
        Dropout of the embeddings and the encoder.
    max_len
        Longest clip in frames.
    pooling
        ``"cls"`` or ``"mean"`` (see :class:`TemporalTransformer`).
    positional
        ``"sinusoidal"`` or ``"learned"``.
    head_dropout
        Dropout before the classification heads.

    Forward: ``{"pose": [B, T, P, C], "mask": bool [B, T]}`` -> ``{head: logits [B, classes]}``.
    """

    def __init__(self, num_points: int, in_channels: int, heads: HeadsConfig, *, d_model: int = 192,
                 num_layers: int = 4, num_heads: int = 4, ff_dim: int | None = None, dropout: float = 0.1,
                 max_len: int = 256, pooling: Pooling = "cls", positional: PositionalEncoding = "sinusoidal",
                 head_dropout: float = 0.0) -> None:
        backbone = PoseTransformerBackbone(num_points, in_channels, d_model, num_layers, num_heads,
                                           ff_dim or 2 * d_model, dropout, max_len, pooling, positional)
        super().__init__(backbone, d_model, heads, head_dropout=head_dropout)
