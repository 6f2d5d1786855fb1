"""VTN with hand crops and pose flow (ChaLearn LAP 2021, De Coster et al., "VTN-PF"), in plain torch.

Per frame, a small CNN shared by both hands (:class:`HandCNN`, MobileNet-style depthwise
separable blocks, trained from scratch) embeds the left and the right hand crop; a linear layer
embeds the frame's pose flow ``[P, C]``; the three vectors are concatenated, projected to
``d_model`` and fed to :class:`~sltrain.models.pose_transformer.TemporalTransformer` (masked
self-attention over time, then pooling).

Padding frames get zero hand features; in training they do not even go through the CNN (so they
never reach its batch-norm statistics). Appending padding changes nothing.

Input layout: ``hands`` is ``[B, T, 2, 3, S, S]`` (hand axis: signer's left then right, as
:mod:`sldata.pose.handcrops` orders them; channels first, RGB). ``uint8`` crops are scaled by
1/255; float crops must already be in ``[0, 1]``. Both are then standardized with the ImageNet
mean and standard deviation. (:func:`sldata.pose.handcrops.crop_hands` returns ``[T, 2, S, S, 3]``:
move the channel axis before batching.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from sltrain.models.heads import HeadsConfig, SignClassifier, frame_mask
from sltrain.models.pose_transformer import PositionalEncoding, Pooling, TemporalTransformer, check_pose_batch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                groups: int = 1) -> nn.Sequential:
    """``Conv2d`` (no bias, "same" padding for odd kernels) + ``BatchNorm2d`` + ``Hardswish``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.Hardswish(),
    )


class DepthwiseSeparableBlock(nn.Module):
    """Depthwise 3x3 (``stride``) then pointwise 1x1, each with BN and hard-swish; residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = conv_bn_act(in_channels, in_channels, 3, stride=stride, groups=in_channels)
        self.pointwise = conv_bn_act(in_channels, out_channels, 1)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.pointwise(self.depthwise(x))
        return x + y if self.use_residual else y


class HandCNN(nn.Module):
    """Small MobileNet-style image encoder for hand crops.

    A stride-2 3x3 stem, then per width a stride-2 and a stride-1 :class:`DepthwiseSeparableBlock`,
    global average pooling and a linear layer.

    Forward: float ``[N, 3, S, S]`` (standardized) -> ``[N, feature_dim]``.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), feature_dim: int = 256,
                 stem_width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_act(3, stem_width, 3, stride=2)]
        previous = stem_width
        for width in widths:
            layers += [DepthwiseSeparableBlock(previous, width, stride=2), DepthwiseSeparableBlock(width, width)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(previous, feature_dim)
        self.feature_dim = feature_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.features(x).mean(dim=(2, 3)))


class VTNBackbone(nn.Module):
    """Hand CNN + pose-flow embedding per frame, :class:`TemporalTransformer` over frames.

    Forward: batch with ``hands`` ``[B, T, 2, 3, S, S]``, ``pose_flow`` ``[B, T, P, C]`` and
    optional ``mask`` ``[B, T]`` -> ``[B, d_model]``.
    """

    def __init__(self, num_points: int, in_channels: int, hand_cnn: HandCNN, pose_dim: int, d_model: int,
                 num_layers: int, num_heads: int, ff_dim: int, dropout: float, max_len: int, pooling: Pooling,
                 positional: PositionalEncoding, mirror_left_hand: bool) -> None:
        super().__init__()
        self.num_points = num_points
        self.in_channels = in_channels
        self.mirror_left_hand = mirror_left_hand
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.hand_cnn = hand_cnn
        self.pose_embed = nn.Sequential(nn.Linear(num_points * in_channels, pose_dim), nn.GELU())
        self.frame_project = nn.Linear(2 * hand_cnn.feature_dim + pose_dim, d_model)
        self.temporal = TemporalTransformer(d_model, num_layers, num_heads, ff_dim, dropout, max_len, pooling,
                                            positional)

    def _encode_crops(self, crops: Tensor) -> Tensor:
        """``[N, 2, 3, S, S]`` crops -> ``[N, 2 * hand feature]``."""
        crops = crops.float() / 255.0 if crops.dtype == torch.uint8 else crops.float()
        if self.mirror_left_hand:
            crops = torch.cat([crops[:, :1].flip(-1), crops[:, 1:]], dim=1)
        crops = (crops.flatten(0, 1) - self.pixel_mean) / self.pixel_std
        return self.hand_cnn(crops).reshape(-1, 2 * self.hand_cnn.feature_dim)

    def _hand_features(self, hands: Tensor, mask: Tensor) -> Tensor:
        """``[B, T, 2 * hand feature]``: CNN features of the real frames' crops, zeros on padding.

        In training only the real frames go through the CNN (padding never reaches batch-norm
        statistics); in eval mode every frame does and padding is zeroed afterwards, which gives
        the same result without data-dependent shapes (export-friendly).
        """
        batch_size, frames = hands.shape[:2]
        width = 2 * self.hand_cnn.feature_dim
        if not self.training:
            features = self._encode_crops(hands.flatten(0, 1)).reshape(batch_size, frames, width)
            return features * mask[:, :, None].to(features.dtype)
        out = hands.new_zeros((batch_size, frames, width), dtype=torch.float32)
        if bool(mask.any()):
            out[mask] = self._encode_crops(hands[mask])
        return out

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        hands, flow = batch["hands"], batch["pose_flow"]
        check_pose_batch(flow, self.num_points, self.in_channels)
        batch_size, frames = flow.shape[:2]
        if hands.dim() != 6 or tuple(hands.shape[:4]) != (batch_size, frames, 2, 3) or hands.shape[4] != hands.shape[5]:
            raise ValueError(f"hands must have shape [B={batch_size}, T={frames}, 2, 3, S, S], got {list(hands.shape)}")
        mask = frame_mask(batch, batch_size, frames, flow.device)
        frame_features = torch.cat([self._hand_features(hands, mask), self.pose_embed(flow.flatten(2))], dim=2)
        return self.temporal(self.frame_project(frame_features), mask)


class VTN(SignClassifier):
    """Video transformer on hand crops and pose flow.

    Parameters
    ----------
    num_points, in_channels
        ``P`` and ``C`` of the ``pose_flow`` input ``[B, T, P, C]`` (ChaLearn: ``C = 2``, angle
        and magnitude).
    heads
        Heads configuration (see :func:`sltrain.models.heads.parse_heads`).
    hand_widths, hand_dim
        :class:`HandCNN` stage widths and output size per hand.
    pose_dim
        Size of the pose-flow embedding.
    d_model, num_layers, num_heads, ff_dim, dropout, max_len, pooling, positional
        :class:`~sltrain.models.pose_transformer.TemporalTransformer` settings (``ff_dim`` None
        means ``2 * d_model``).
    mirror_left_hand
        Flip left-hand crops horizontally so the shared CNN sees both hands with the same
        chirality.
    head_dropout
        Dropout before the classification heads.

    Forward: ``{"hands": [B, T, 2, 3, S, S], "pose_flow": [B, T, P, C], "mask": bool [B, T]}`` ->
    ``{head: logits [B, classes]}``.
    """

    def __init__(self, num_points: int, in_channels: int, heads: HeadsConfig, *,
                 hand_widths: Sequence[int] = (32, 64, 128, 256), hand_dim: int = 256, pose_dim: int = 128,
                 d_model: int = 256, num_layers: int = 4, num_heads: int = 4, ff_dim: int | None = None,
                 dropout: float = 0.1, max_len: int = 256, pooling: Pooling = "mean",
                 positional: PositionalEncoding = "sinusoidal", mirror_left_hand: bool = False,
                 head_dropout: float = 0.0) -> None:
        backbone = VTNBackbone(num_points, in_channels, HandCNN(tuple(hand_widths), hand_dim), pose_dim, d_model,
                               num_layers, num_heads, ff_dim or 2 * d_model, dropout, max_len, pooling, positional,
                               mirror_left_hand)
        super().__init__(backbone, d_model, heads, head_dropout=head_dropout)
