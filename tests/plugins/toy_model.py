"""A pose model: the mean over time of a linear embedding of each frame's keypoints.

Plugged in by ``MODELS["toy_mean"] = ModelEntry(ToyMean, "pose")`` (plus a ``models.toy_mean``
schema section).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from sltrain.models.heads import HeadsConfig, SignClassifier, masked_mean


class _Backbone(nn.Module):
    def __init__(self, num_points: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Linear(num_points * in_channels, width)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        pose = batch["pose"]
        x = torch.relu(self.embed(pose.flatten(2)))
        mask = batch.get("mask")
        if mask is None:
            mask = torch.ones(pose.shape[:2], dtype=torch.bool, device=pose.device)
        return masked_mean(x, mask)


class ToyMean(SignClassifier):
    """``{"pose": [B, T, P, C], "mask": [B, T]}`` -> ``{head: logits}``; config key: ``width``."""

    def __init__(self, num_points: int, in_channels: int, heads: HeadsConfig, *, width: int = 8) -> None:
        super().__init__(_Backbone(num_points, in_channels, width), width, heads)
