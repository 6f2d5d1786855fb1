"""S3D-style separable 3D CNN with MobileNet-V3-like blocks, for RGB clips, plus checkpoint loading.

Every block (:class:`SeparableInvertedResidual3d`) expands channels with a 1x1x1 convolution,
applies a depthwise *spatial* 1x3x3 convolution and then a depthwise *temporal* 3x1x1
convolution (S3D's factorization), squeeze-excitation, and projects back with a 1x1x1
convolution; activations are ReLU early and hard-swish late, as in MobileNet-V3. At 112x112 and
16 frames the network downsamples space by 32 and time by 4; it has about a million parameters
and trains from scratch on a CPU.

Padding: RGB clips are meant to be sampled to a fixed length. An optional ``mask`` ``[B, T]`` is
honoured only by the final temporal pooling (output step ``t`` covers input frame ``4 t``);
convolutions near the end of a padded clip still see the zero frames, as in any 3D CNN.

:func:`load_pretrained` loads a user-supplied ``state_dict`` checkpoint into any model, skipping
and reporting the keys whose names or shapes do not match (typically the classifier heads).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn

from sltrain.models.heads import HeadsConfig, SignClassifier, masked_mean

logger = logging.getLogger(__name__)

Activation = Literal["relu", "hardswish"]

KINETICS_MEAN: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
KINETICS_STD: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class BlockSpec:
    """One :class:`SeparableInvertedResidual3d`: expansion width, output width, strides, SE, activation."""

    expand: int
    out: int
    spatial_stride: int = 1
    temporal_stride: int = 1
    squeeze_excite: bool = False
    activation: Activation = "relu"


DEFAULT_BLOCKS: tuple[BlockSpec, ...] = (
    BlockSpec(16, 16, spatial_stride=2, squeeze_excite=True),
    BlockSpec(72, 24, spatial_stride=2),
    BlockSpec(88, 24),
    BlockSpec(96, 40, spatial_stride=2, temporal_stride=2, squeeze_excite=True, activation="hardswish"),
    BlockSpec(240, 40, squeeze_excite=True, activation="hardswish"),
    BlockSpec(120, 48, squeeze_excite=True, activation="hardswish"),
    BlockSpec(144, 48, squeeze_excite=True, activation="hardswish"),
    BlockSpec(288, 96, spatial_stride=2, temporal_stride=2, squeeze_excite=True, activation="hardswish"),
    BlockSpec(576, 96, squeeze_excite=True, activation="hardswish"),
)
"""MobileNet-V3-Small's layout (after a stride-2 stem), with two stride-2 temporal stages."""


def _activation(name: Activation) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hardswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"activation must be 'relu' or 'hardswish', got {name!r}")


def conv3d_bn_act(in_channels: int, out_channels: int, kernel: tuple[int, int, int],
                  stride: tuple[int, int, int] = (1, 1, 1), groups: int = 1,
                  activation: Activation | None = "relu") -> nn.Sequential:
    """``Conv3d`` (no bias, "same" padding) + ``BatchNorm3d`` (+ activation)."""
    layers: list[nn.Module] = [
        nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=tuple(k // 2 for k in kernel),
                  groups=groups, bias=False),
        nn.BatchNorm3d(out_channels),
    ]
    if activation is not None:
        layers.append(_activation(activation))
    return nn.Sequential(*layers)


def _round_channels(value: float, divisor: int = 8) -> int:
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcitation3d(nn.Module):
    """Channel gating from the mean over ``(T, H, W)``: reduce, ReLU, expand, hard-sigmoid."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = _round_channels(channels / reduction)
        self.reduce = nn.Conv3d(channels, hidden, 1)
        self.expand = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = x.mean(dim=(2, 3, 4), keepdim=True)
        scale = nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(scale))))
        return x * scale


class SeparableInvertedResidual3d(nn.Module):
    """Expand 1x1x1, depthwise 1x3x3 (spatial stride), depthwise 3x1x1 (temporal stride), SE, project 1x1x1.

    Residual connection when strides are 1 and widths match. Forward: ``[N, C_in, T, H, W]`` ->
    ``[N, C_out, T', H', W']``.
    """

    def __init__(self, in_channels: int, spec: BlockSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if spec.expand != in_channels:
            layers.append(conv3d_bn_act(in_channels, spec.expand, (1, 1, 1), activation=spec.activation))
        layers += [
            conv3d_bn_act(spec.expand, spec.expand, (1, 3, 3), stride=(1, spec.spatial_stride, spec.spatial_stride),
                          groups=spec.expand, activation=spec.activation),
            conv3d_bn_act(spec.expand, spec.expand, (3, 1, 1), stride=(spec.temporal_stride, 1, 1),
                          groups=spec.expand, activation=spec.activation),
        ]
        if spec.squeeze_excite:
            layers.append(SqueezeExcitation3d(spec.expand))
        layers.append(conv3d_bn_act(spec.expand, spec.out, (1, 1, 1), activation=None))
        self.layers = nn.Sequential(*layers)
        self.use_residual = spec.spatial_stride == 1 and spec.temporal_stride == 1 and in_channels == spec.out

    def forward(self, x: Tensor) -> Tensor:
        y = self.layers(x)
        return x + y if self.use_residual else y


class RGBS3DBackbone(nn.Module):
    """Stem (1x3x3 stride 2, then 3x1x1), blocks, 1x1x1 expansion, mean over space then real frames.

    Forward: batch with ``rgb`` float ``[B, C, T, H, W]`` (standardized) and optional ``mask``
    ``[B, T]`` -> ``[B, feature_dim]``.
    """

    def __init__(self, in_channels: int, blocks: tuple[BlockSpec, ...], stem_width: int, feature_dim: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            conv3d_bn_act(in_channels, stem_width, (1, 3, 3), stride=(1, 2, 2), activation="hardswish"),
            conv3d_bn_act(stem_width, stem_width, (3, 1, 1), activation="hardswish"),
        )
        layers = []
        previous = stem_width
        for spec in blocks:
            layers.append(SeparableInvertedResidual3d(previous, spec))
            previous = spec.out
        self.blocks = nn.Sequential(*layers)
        self.head_conv = conv3d_bn_act(previous, feature_dim, (1, 1, 1), activation="hardswish")
        self.temporal_strides = tuple(spec.temporal_stride for spec in blocks if spec.temporal_stride > 1)
        self.feature_dim = feature_dim
        self._init_weights()

    def _init_weights(self) -> None:
        """MobileNet-V3's initialization: He (fan-out) for convolutions, identity batch norms."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        rgb = batch["rgb"]
        if rgb.dim() != 5 or rgb.shape[1] != self.in_channels:
            raise ValueError(f"rgb must have shape [B, {self.in_channels}, T, H, W], got {list(rgb.shape)}")
        x = self.head_conv(self.blocks(self.stem(rgb.float())))
        x = x.mean(dim=(3, 4)).transpose(1, 2)  # [B, T', D]
        mask = batch.get("mask")
        if mask is None:
            return x.mean(dim=1)
        if tuple(mask.shape) != (rgb.shape[0], rgb.shape[2]):
            raise ValueError(f"mask must have shape [B, T] = [{rgb.shape[0]}, {rgb.shape[2]}], got {list(mask.shape)}")
        mask = mask.to(device=x.device, dtype=torch.bool)
        for stride in self.temporal_strides:
            mask = mask[:, ::stride]
        return masked_mean(x, mask)


class RGBS3D(SignClassifier):
    """S3D-style separable 3D CNN classifier on RGB clips.

    Parameters
    ----------
    heads
        Heads configuration (see :func:`sltrain.models.heads.parse_heads`).
    in_channels
        Image channels of ``rgb`` (3).
    width_multiplier
        Scales every block's widths (rounded to multiples of 8).
    stem_width
        Width of the stem (before the multiplier).
    feature_dim
        Width of the final 1x1x1 convolution = size of the pooled feature.
    head_dropout
        Dropout before the classification heads.

    Forward: ``{"rgb": float [B, C, T, H, W], "mask": optional bool [B, T]}`` ->
    ``{head: logits [B, classes]}``. Standardize frames beforehand (e.g. with
    :data:`KINETICS_MEAN` / :data:`KINETICS_STD`).
    """

    def __init__(self, heads: HeadsConfig, *, in_channels: int = 3, width_multiplier: float = 1.0,
                 stem_width: int = 16, feature_dim: int = 576, head_dropout: float = 0.2) -> None:
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
        blocks = tuple(replace(spec, expand=_round_channels(spec.expand * width_multiplier),
                               out=_round_channels(spec.out * width_multiplier)) for spec in DEFAULT_BLOCKS)
        backbone = RGBS3DBackbone(in_channels, blocks, _round_channels(stem_width * width_multiplier),
                                  _round_channels(feature_dim * width_multiplier))
        super().__init__(backbone, backbone.feature_dim, heads, head_dropout=head_dropout)

    def load_weights(self, path: str | os.PathLike[str], strict: bool = False) -> LoadReport:
        """Load a checkpoint with :func:`load_pretrained`."""
        return load_pretrained(self, path, strict=strict)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes
    ----------
    loaded
        Model keys taken from the checkpoint.
    missing
        Model keys absent from the checkpoint (left as initialized).
    unexpected
        Checkpoint keys the model does not have (or that are not tensors).
    mismatched
        ``(key, checkpoint shape, model shape)`` for keys present in both with different shapes.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def skipped(self) -> list[str]:
        """Every key not loaded: mismatched, unexpected and missing."""
        return [key for key, _, _ in self.mismatched] + self.unexpected + self.missing

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.mismatched:
            parts.append("shape mismatch (skipped): " + ", ".join(
                f"{key} {list(src)} vs {list(dst)}" for key, src, dst in self.mismatched))
        if self.unexpected:
            parts.append(f"not in model (skipped): {', '.join(self.unexpected)}")
        if self.missing:
            parts.append(f"not in checkpoint (kept as initialized): {', '.join(self.missing)}")
        return "; ".join(parts)


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def _checkpoint_state_dict(checkpoint: object) -> Mapping[str, object]:
    """The state dict inside ``checkpoint`` (bare, or under a usual wrapper key), ``module.`` prefixes removed."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint must be a state_dict (a mapping), got {type(checkpoint).__name__}")
    for key in _WRAPPER_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
            checkpoint = inner
            break
    state = {str(k): v for k, v in checkpoint.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_pretrained(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = False) -> LoadReport:
    """Load the matching tensors of a ``state_dict`` checkpoint into ``model``.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)`` (no code is
    executed). A bare state dict or one under ``state_dict`` / ``model_state_dict`` / ``model``
    is accepted, and a ``module.`` prefix (DataParallel) is removed. Keys whose shapes differ
    (e.g. a classifier head trained on another vocabulary) and keys the model lacks are skipped;
    what was skipped is logged and returned.

    Parameters
    ----------
    model
        Any module (not only :class:`RGBS3D`).
    path
        Checkpoint file.
    strict
        Raise instead of skipping when anything does not match.

    Raises
    ------
    RuntimeError
        With ``strict`` and any missing, unexpected or mismatched key.
    """
    state = _checkpoint_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    own = model.state_dict()
    report = LoadReport()
    selected: dict[str, Tensor] = {}
    for key, value in state.items():
        if key not in own or not isinstance(value, Tensor):
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            selected[key] = value
            report.loaded.append(key)
    mismatched = {key for key, _, _ in report.mismatched}
    report.missing = [key for key in own if key not in selected and key not in mismatched]
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise RuntimeError(f"checkpoint {os.fspath(path)} does not match the model: {report.summary()}")
    model.load_state_dict(selected, strict=False)
    log = logger.warning if report.skipped else logger.info
    log("load_pretrained %s: %s", os.fspath(path), report.summary())
    return report
