"""ST-GCN / SL-GCN family: spatial graph convolutions over the skeleton, temporal convolutions over time.

The graph (:class:`SkeletonGraph`) is a set of kept points with edges between them; its
normalized adjacency with self-loops ``D^-1/2 (A + I) D^-1/2`` mixes each point with its
neighbours. Each :class:`STGCNBlock` does spatial graph convolution (optionally with a learnable
adjacency residual, as in 2s-AGCN / SL-GCN), batch norm, ReLU, a temporal convolution (kernel 9,
stride 1 or 2), batch norm, dropout, a residual connection and ReLU. The network ends with a
mean over the real frames and all points.

Padding: features of padding frames are kept at zero after every batch norm and the batch
statistics are computed over real frames only (:class:`MaskedBatchNorm`), so padding frames look
exactly like the temporal convolutions' own zero padding and appending them changes nothing.
With stride 2 the output frame ``t`` is centred on input frame ``2 t``, so the mask is
downsampled as ``mask[:, ::2]``.

:func:`skeleton_graph` builds the graph for a subset of a :class:`~sldata.pose.skeleton.Skeleton`
(by default the upper body and both hands), with the hands' wrists linked to the body's wrists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sldata.pose.skeleton import Skeleton
from sltrain.models.heads import HeadsConfig, SignClassifier, frame_mask, masked_mean
from sltrain.models.pose_transformer import check_pose_batch

UPPER_BODY_POINTS: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist",
)
"""Body points kept by :func:`skeleton_graph` by default: head, arms and wrists (the body's own
finger points duplicate the hand parts; hips and legs carry no sign information)."""

WRIST_LINKS: tuple[tuple[str, str], ...] = (
    ("left_hand.wrist", "body.left_wrist"),
    ("right_hand.wrist", "body.right_wrist"),
)
"""Edges joining each hand part to the arm it belongs to."""

HEAD_LINKS: tuple[tuple[str, str], ...] = (
    ("body.nose", "body.left_shoulder"),
    ("body.nose", "body.right_shoulder"),
    ("body.mouth_left", "body.nose"),
    ("body.mouth_right", "body.nose"),
)
"""Edges joining the head (and the mouth) to the shoulders: MediaPipe's drawing edges have no
neck, which would leave the head a separate component of the graph."""


@dataclass(frozen=True)
class SkeletonGraph:
    """A graph on a subset of the input's points.

    Attributes
    ----------
    point_indices
        Indices, on the input's points axis, of the graph's nodes (node ``i`` is input point
        ``point_indices[i]``).
    edges
        Undirected edges as pairs of node indices (``0 .. len(point_indices) - 1``).
    """

    point_indices: tuple[int, ...]
    edges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if not self.point_indices:
            raise ValueError("a graph needs at least one point")
        if len(set(self.point_indices)) != len(self.point_indices):
            raise ValueError("point_indices must not repeat a point")
        for a, b in self.edges:
            if not (0 <= a < self.num_nodes and 0 <= b < self.num_nodes):
                raise ValueError(f"edge ({a}, {b}) is outside the graph's {self.num_nodes} nodes")

    @property
    def num_nodes(self) -> int:
        return len(self.point_indices)

    @classmethod
    def from_edges(cls, num_points: int, edges: Sequence[tuple[int, int]],
                   keep: Sequence[int] | None = None) -> SkeletonGraph:
        """Graph on the points ``keep`` (all ``num_points`` when None) of an input.

        ``edges`` use input point indices; edges touching a point that is not kept are dropped,
        the others are remapped to node indices.
        """
        keep = tuple(range(num_points)) if keep is None else tuple(int(i) for i in keep)
        for i in keep:
            if not 0 <= i < num_points:
                raise ValueError(f"point index {i} is outside the input's {num_points} points")
        node_of = {point: node for node, point in enumerate(keep)}
        for a, b in edges:
            if not (0 <= a < num_points and 0 <= b < num_points):
                raise ValueError(f"edge ({a}, {b}) is outside the input's {num_points} points")
        local = tuple((node_of[a], node_of[b]) for a, b in edges if a in node_of and b in node_of)
        return cls(keep, local)

    def input_edges(self) -> list[tuple[int, int]]:
        """The edges in input point indices (what :class:`STGCN` takes)."""
        return [(self.point_indices[a], self.point_indices[b]) for a, b in self.edges]

    def normalized_adjacency(self) -> Tensor:
        """``D^-1/2 (A + I) D^-1/2`` as float32 ``[V, V]`` (symmetric)."""
        adjacency = torch.eye(self.num_nodes)
        for a, b in self.edges:
            adjacency[a, b] = adjacency[b, a] = 1.0
        inv_sqrt_degree = adjacency.sum(dim=1).rsqrt()
        return inv_sqrt_degree[:, None] * adjacency * inv_sqrt_degree[None, :]


def skeleton_graph(skeleton: Skeleton, points: Sequence[int] | None = None, *, link_wrists: bool = True,
                   link_head: bool = True) -> SkeletonGraph:
    """Graph for a subset of ``skeleton``'s points from :meth:`Skeleton.edges`.

    Parameters
    ----------
    skeleton
        Layout of the input's points axis.
    points
        Input point indices to keep; None keeps :data:`UPPER_BODY_POINTS` of the body and both
        hands (59 points). Face points, if kept, have no edges (only self-loops).
    link_wrists
        Add :data:`WRIST_LINKS` (each hand's wrist to the body's wrist).
    link_head
        Add :data:`HEAD_LINKS` (head to shoulders).

    Links whose points are not kept are dropped like any other edge.
    """
    if points is None:
        points = [skeleton.index(f"body.{name}") for name in UPPER_BODY_POINTS]
        for part in ("left_hand", "right_hand"):
            points += list(range(skeleton.num_points)[skeleton.part_slice(part)])
    edges = list(skeleton.edges())
    links = (WRIST_LINKS if link_wrists else ()) + (HEAD_LINKS if link_head else ())
    edges += [(skeleton.index(a), skeleton.index(b)) for a, b in links]
    return SkeletonGraph.from_edges(skeleton.num_points, edges, points)


class MaskedBatchNorm(nn.BatchNorm2d):
    """Batch norm over ``[N, C, T, V]`` whose statistics use only the real frames; padding stays zero.

    ``forward(x, mask)`` with ``mask`` bool ``[N, T]``. Without a mask it is plain
    :class:`torch.nn.BatchNorm2d` (and the state dict is always the same). In eval mode it
    normalizes with the running statistics and zeroes the padding, without data-dependent
    branches (export-friendly).
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if mask is None:
            return super().forward(x)
        weights = mask[:, None, :, None].to(x.dtype)
        if not self.training and self.running_mean is not None:
            # Running statistics: no data-dependent branch, so tracing/export keeps the masking.
            out = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
            return out * weights
        if bool(mask.all()):
            return super().forward(x)
        count = (weights.sum() * x.shape[3]).clamp(min=1.0)
        mean = (x * weights).sum(dim=(0, 2, 3)) / count
        centred = x - mean[None, :, None, None]
        var = (centred.square() * weights).sum(dim=(0, 2, 3)) / count
        if self.training and self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp(min=1.0)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out * weights


class SpatialGraphConv(nn.Module):
    """``x -> W x A`` over the points axis, ``A`` the normalized adjacency (+ a learnable residual).

    Forward: ``[N, C_in, T, V]`` -> ``[N, C_out, T, V]``.
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: Tensor, adaptive: bool) -> None:
        super().__init__()
        self.register_buffer("adjacency", adjacency.clone(), persistent=False)
        self.adjacency_residual = nn.Parameter(torch.zeros_like(adjacency)) if adaptive else None
        self.project = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        adjacency = self.adjacency
        if self.adjacency_residual is not None:
            adjacency = adjacency + self.adjacency_residual
        return torch.einsum("nctv,vw->nctw", self.project(x), adjacency)


class STGCNBlock(nn.Module):
    """Spatial graph conv + BN + ReLU, temporal conv (kernel ``temporal_kernel``, ``stride``) + BN,
    dropout, residual, ReLU.

    Forward: ``x`` ``[N, C_in, T, V]`` (zero on padding frames), ``mask`` bool ``[N, T]`` ->
    ``([N, C_out, T', V], mask [N, T'])`` with ``T' = ceil(T / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: Tensor, *, stride: int = 1,
                 temporal_kernel: int = 9, dropout: float = 0.0, adaptive: bool = True, residual: bool = True) -> None:
        super().__init__()
        if temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd, got {temporal_kernel}")
        self.stride = stride
        self.spatial = SpatialGraphConv(in_channels, out_channels, adjacency, adaptive)
        self.spatial_norm = MaskedBatchNorm(out_channels)
        self.temporal = nn.Conv2d(out_channels, out_channels, kernel_size=(temporal_kernel, 1), stride=(stride, 1),
                                  padding=(temporal_kernel // 2, 0))
        self.temporal_norm = MaskedBatchNorm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.residual: nn.Module | None
        self.residual_norm: MaskedBatchNorm | None = None
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1))
            self.residual_norm = MaskedBatchNorm(out_channels)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out_mask = mask[:, :: self.stride]
        y = torch.relu(self.spatial_norm(self.spatial(x), mask))
        y = self.dropout(self.temporal_norm(self.temporal(y), out_mask))
        if self.residual is not None:
            shortcut = self.residual(x)
            if self.residual_norm is not None:
                shortcut = self.residual_norm(shortcut, out_mask)
            y = y + shortcut
        return torch.relu(y), out_mask


class STGCNBackbone(nn.Module):
    """Input batch norm, :class:`STGCNBlock` stack, mean over real frames and points.

    Forward: batch with ``pose`` ``[B, T, P, C]`` and optional ``mask`` ``[B, T]`` ->
    ``[B, channels[-1]]``.
    """

    def __init__(self, num_points: int, in_channels: int, graph: SkeletonGraph, channels: Sequence[int],
                 strides: Sequence[int], temporal_kernel: int, dropout: float, adaptive: bool) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"channels and strides must be non-empty and of equal length, got {list(channels)} "
                             f"and {list(strides)}")
        if any(s not in (1, 2) for s in strides):
            raise ValueError(f"strides must be 1 or 2, got {list(strides)}")
        self.num_points = num_points
        self.in_channels = in_channels
        self.graph = graph
        self.register_buffer("point_indices", torch.tensor(graph.point_indices, dtype=torch.long), persistent=False)
        self.input_norm = MaskedBatchNorm(graph.num_nodes * in_channels)
        adjacency = graph.normalized_adjacency()
        blocks = []
        previous = in_channels
        for index, (width, stride) in enumerate(zip(channels, strides)):
            blocks.append(STGCNBlock(previous, width, adjacency, stride=stride, temporal_kernel=temporal_kernel,
                                     dropout=dropout, adaptive=adaptive, residual=index > 0))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = previous

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        pose = batch["pose"]
        check_pose_batch(pose, self.num_points, self.in_channels)
        batch_size, frames = pose.shape[:2]
        mask = frame_mask(batch, batch_size, frames, pose.device)
        x = pose.index_select(2, self.point_indices)  # [B, T, V, C]
        nodes = x.shape[2]
        # Per (point, channel) input normalization, as ST-GCN's data_bn.
        x = x.permute(0, 2, 3, 1).reshape(batch_size, nodes * self.in_channels, frames, 1)
        x = self.input_norm(x, mask)
        x = x.reshape(batch_size, nodes, self.in_channels, frames).permute(0, 2, 3, 1)  # [B, C, T, V]
        for block in self.blocks:
            x, mask = block(x, mask)
        x = x.mean(dim=3).transpose(1, 2)  # [B, T', C]
        return masked_mean(x, mask)


class STGCN(SignClassifier):
    """ST-GCN-style classifier on keypoint sequences.

    Parameters
    ----------
    num_points, in_channels
        ``P`` and ``C`` of the ``pose`` input ``[B, T, P, C]``.
    heads
        Heads configuration (see :func:`sltrain.models.heads.parse_heads`).
    edges
        Graph edges as pairs of input point indices (e.g.
        ``skeleton_graph(skeleton).input_edges()``).
    point_indices
        Input points that form the graph (e.g. ``skeleton_graph(skeleton).point_indices``); None
        uses all ``num_points``. Edges touching other points are dropped.
    channels, strides
        Width and temporal stride (1 or 2) of each block.
    temporal_kernel
        Temporal convolution kernel (odd).
    dropout
        Dropout inside the blocks.
    adaptive
        Learn a residual added to the adjacency in every block (2s-AGCN / SL-GCN).
    head_dropout
        Dropout before the classification heads.

    Forward: ``{"pose": [B, T, P, C], "mask": bool [B, T]}`` -> ``{head: logits [B, classes]}``.
    """

    def __init__(self, num_points: int, in_channels: int, heads: HeadsConfig, edges: Sequence[tuple[int, int]], *,
                 point_indices: Sequence[int] | None = None, channels: Sequence[int] = (64, 64, 128, 128, 256, 256),
                 strides: Sequence[int] = (1, 1, 2, 1, 2, 1), temporal_kernel: int = 9, dropout: float = 0.1,
                 adaptive: bool = True, head_dropout: float = 0.0) -> None:
        graph = SkeletonGraph.from_edges(num_points, [tuple(e) for e in edges], point_indices)
        backbone = STGCNBackbone(num_points, in_channels, graph, tuple(channels), tuple(strides), temporal_kernel,
                                 dropout, adaptive)
        super().__init__(backbone, backbone.feature_dim, heads, head_dropout=head_dropout)
