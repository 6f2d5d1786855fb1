"""Classification heads shared by every model, their loss, masked pooling and a freeze schedule.

Every model in :mod:`sltrain.models` is a :class:`SignClassifier`: a ``backbone`` that turns a
batch into one pooled feature vector per sample ``[B, D]``, followed by ``heads``, a
:class:`MultiHead` with one linear classifier per label type (HearAI style: ``gloss`` plus, for
example, handshape or location heads). The attribute names ``backbone`` and ``heads`` are the
prefixes :class:`FreezeSchedule` works with.

Heads are configured with a mapping ``{name: {"num_classes": int, "weight": float}}`` (``weight``
defaults to 1.0); :func:`multi_head_loss` sums the heads' cross entropies with those weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -1
"""Target value meaning "no label for this head" in :func:`multi_head_loss`."""


@dataclass(frozen=True)
class HeadSpec:
    """One classification head.

    Attributes
    ----------
    num_classes
        Number of classes (outputs of the head's linear layer).
    weight
        Weight of the head's loss in :func:`multi_head_loss`.
    """

    num_classes: int
    weight: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        is_number = isinstance(self.weight, (int, float)) and not isinstance(self.weight, bool)
        if not is_number or not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {self.weight!r}")


HeadsConfig = Mapping[str, HeadSpec | Mapping[str, Any]]
"""``{head name: HeadSpec or {"num_classes": int, "weight": float}}``."""

_HEAD_KEYS = ("num_classes", "weight")


def parse_heads(heads: HeadsConfig) -> dict[str, HeadSpec]:
    """Validate a heads configuration and return ``{name: HeadSpec}`` in the given order.

    Raises
    ------
    ValueError
        On an empty mapping, a name that cannot be a submodule name, unknown keys or bad values;
        the message names the head.
    """
    if not isinstance(heads, Mapping) or not heads:
        raise ValueError(f"heads must be a non-empty mapping {{name: {{'num_classes': int, 'weight': float}}}}, "
                         f"got {heads!r}")
    out: dict[str, HeadSpec] = {}
    for name, spec in heads.items():
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"head names must be non-empty strings without '.', got {name!r}")
        if isinstance(spec, HeadSpec):
            out[name] = spec
            continue
        if not isinstance(spec, Mapping):
            raise ValueError(f"head {name!r}: expected a mapping with keys {list(_HEAD_KEYS)}, got {spec!r}")
        unknown = sorted(set(spec) - set(_HEAD_KEYS))
        if unknown:
            raise ValueError(f"head {name!r}: unknown key(s) {unknown} (allowed: {', '.join(_HEAD_KEYS)})")
        if "num_classes" not in spec:
            raise ValueError(f"head {name!r}: missing 'num_classes'")
        try:
            out[name] = HeadSpec(**spec)
        except ValueError as err:
            raise ValueError(f"head {name!r}: {err}") from None
    return out


class MultiHead(nn.Module):
    """One linear classifier per head on a shared pooled feature.

    Parameters
    ----------
    in_features
        Size ``D`` of the pooled feature.
    heads
        Heads configuration (see :func:`parse_heads`).
    dropout
        Dropout applied to the feature before the linear layers.

    Forward: ``features`` float ``[B, D]`` -> ``{name: logits [B, num_classes]}``.
    """

    def __init__(self, in_features: int, heads: HeadsConfig, dropout: float = 0.0) -> None:
        super().__init__()
        self.specs = parse_heads(heads)
        self.dropout = nn.Dropout(dropout)
        self.classifiers = nn.ModuleDict({name: nn.Linear(in_features, spec.num_classes)
                                          for name, spec in self.specs.items()})

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        features = self.dropout(features)
        return {name: layer(features) for name, layer in self.classifiers.items()}


def multi_head_loss(logits: Mapping[str, Tensor], targets: Mapping[str, Tensor], heads_config: HeadsConfig,
                    label_smoothing: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the heads' cross entropies.

    Parameters
    ----------
    logits
        ``{name: [B, num_classes]}`` as returned by a model.
    targets
        ``{name: int [B]}`` class indices; :data:`IGNORE_INDEX` (-1) marks samples without a label
        for that head. A configured head absent from ``targets`` contributes nothing (a dataset
        that has no such labels); a target for a head that is not configured raises.
    heads_config
        Heads configuration (weights are read from it).
    label_smoothing
        Passed to :func:`torch.nn.functional.cross_entropy`.

    Returns
    -------
    total
        Scalar ``sum(weight * loss)`` over the heads with targets (a zero that still has a graph
        when no head has a labelled sample).
    per_head
        ``{name: scalar loss}`` (unweighted, mean over the labelled samples; 0 when a head has no
        labelled sample in the batch) for every head that has targets.
    """
    specs = parse_heads(heads_config)
    unknown = sorted(set(targets) - set(specs))
    if unknown:
        raise ValueError(f"targets for unknown head(s) {unknown}; configured heads: {list(specs)}")
    missing = sorted(set(specs) - set(logits))
    if missing:
        raise ValueError(f"logits lack configured head(s) {missing}; got {list(logits)}")
    anchor = next(iter(logits.values()))
    total = anchor.sum() * 0.0
    per_head: dict[str, Tensor] = {}
    for name, spec in specs.items():
        if name not in targets:
            continue
        head_logits = logits[name]
        target = targets[name].to(device=head_logits.device, dtype=torch.long)
        if (target != IGNORE_INDEX).any():
            loss = F.cross_entropy(head_logits, target, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
        else:
            loss = head_logits.sum() * 0.0
        per_head[name] = loss
        total = total + spec.weight * loss
    return total, per_head


def log_mixture(log_probs: Sequence[Tensor], log_weights: Sequence[float] | Tensor) -> Tensor:
    """``log(sum_i exp(log_weights[i]) * exp(log_probs[i]))``, stable, elementwise over same-shaped tensors.

    Written with max, exp and log only (no ``logsumexp``/``logaddexp``), which ONNX export and
    OpenVINO translate exactly.
    """
    terms = [lp + w for lp, w in zip(log_probs, log_weights)]
    top = terms[0]
    for t in terms[1:]:
        top = torch.maximum(top, t)
    total = torch.exp(terms[0] - top)
    for t in terms[1:]:
        total = total + torch.exp(t - top)
    return top + torch.log(total)


def frame_mask(batch: Mapping[str, Tensor], batch_size: int, num_frames: int, device: torch.device) -> Tensor:
    """The batch's ``mask`` (bool ``[B, T]``, True = real frame), or all True when it has none.

    Raises
    ------
    ValueError
        When the mask does not have shape ``[batch_size, num_frames]``.
    """
    mask = batch.get("mask")
    if mask is None:
        return torch.ones(batch_size, num_frames, dtype=torch.bool, device=device)
    if tuple(mask.shape) != (batch_size, num_frames):
        raise ValueError(f"mask must have shape [B, T] = [{batch_size}, {num_frames}], got {list(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` ``[B, T, ...]`` over the frames where ``mask`` ``[B, T]`` is True.

    Returns ``[B, ...]``; a sample without any real frame gives zeros.
    """
    weights = mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - 2)))
    count = weights.sum(dim=1).clamp(min=1.0)
    return (x * weights).sum(dim=1) / count


class SignClassifier(nn.Module):
    """A ``backbone`` producing a pooled feature ``[B, D]`` followed by :class:`MultiHead` ``heads``.

    Parameters
    ----------
    backbone
        Module mapping the batch dict to ``[B, feature_dim]``.
    feature_dim
        Size ``D`` of the backbone's output.
    heads
        Heads configuration (see :func:`parse_heads`).
    head_dropout
        Dropout before the heads.

    Forward: batch dict -> ``{head name: logits [B, num_classes]}``.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, heads: HeadsConfig, head_dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.heads = MultiHead(feature_dim, heads, dropout=head_dropout)
        self.mirrored = False

    def set_mirror(self, permutation: Sequence[int], signs: Sequence[float], input_name: str = "pose") -> None:
        """Average each input with its mirror image in eval mode (test-time augmentation).

        The mirror of ``batch[input_name]`` ``[B, T, P, C]`` is ``x[:, :, permutation] * signs``
        (see :func:`sltrain.models.pose_conformer.mirror_in_feature_space`). In eval mode each
        head's output becomes ``log((softmax(f(x)) + softmax(f(mirror(x)))) / 2)``, whose softmax
        is the mean of the two probability vectors; training is unchanged. The permutation and
        signs are buffers (not in the state dict: they follow from the input spec), so exported
        models compute the same average.
        """
        self.register_buffer("mirror_permutation", torch.as_tensor(list(permutation), dtype=torch.long),
                             persistent=False)
        self.register_buffer("mirror_signs", torch.as_tensor(list(signs), dtype=torch.float32), persistent=False)
        self.mirror_input = input_name
        self.mirrored = True

    @property
    def head_specs(self) -> dict[str, HeadSpec]:
        """The parsed heads configuration (pass it to :func:`multi_head_loss`)."""
        return dict(self.heads.specs)

    def features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Pooled feature ``[B, D]`` (e.g. for embeddings or retrieval)."""
        return self.backbone(batch)

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = self.heads(self.features(batch))
        if self.training or not self.mirrored:
            return out
        x = batch[self.mirror_input]
        flipped = self.heads(self.features({**batch, self.mirror_input: x.index_select(2, self.mirror_permutation)
                                            * self.mirror_signs}))
        return {name: log_mixture([F.log_softmax(out[name], -1), F.log_softmax(flipped[name], -1)],
                                  [math.log(0.5), math.log(0.5)]) for name in out}


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


class FreezeSchedule:
    """Freeze named submodules for the first epochs of training.

    Parameters
    ----------
    epochs_by_prefix
        ``{prefix: N}``: parameters whose qualified name is ``prefix`` or starts with
        ``prefix + "."`` (e.g. ``"backbone"``, ``"backbone.hand_cnn"``) have ``requires_grad``
        False during epochs ``0 .. N-1`` and True from epoch ``N`` on. With nested prefixes a
        parameter stays frozen while any of its prefixes is.

    Notes
    -----
    Build the optimizer over all parameters: frozen ones simply get no gradient. Batch-norm
    running statistics inside a frozen module still update in train mode.
    """

    def __init__(self, epochs_by_prefix: Mapping[str, int]) -> None:
        for prefix, epochs in epochs_by_prefix.items():
            if not isinstance(prefix, str) or not prefix:
                raise ValueError(f"freeze prefixes must be non-empty strings, got {prefix!r}")
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
                raise ValueError(f"freeze epochs for {prefix!r} must be an integer >= 0, got {epochs!r}")
        self.epochs_by_prefix = dict(epochs_by_prefix)

    def frozen_prefixes(self, epoch: int) -> list[str]:
        """Prefixes frozen during ``epoch`` (0-based)."""
        return [prefix for prefix, epochs in self.epochs_by_prefix.items() if epoch < epochs]

    def apply(self, model: nn.Module, epoch: int) -> list[str]:
        """Set ``requires_grad`` of the scheduled parameters for ``epoch``; return the frozen prefixes.

        Raises
        ------
        ValueError
            When a prefix matches no parameter of ``model`` (the message lists its top-level
            submodules).
        """
        names = [name for name, _ in model.named_parameters()]
        for prefix in self.epochs_by_prefix:
            if not any(_matches(name, prefix) for name in names):
                children = [name for name, _ in model.named_children()]
                raise ValueError(f"freeze prefix {prefix!r} matches no parameter; top-level submodules: {children}")
        frozen = self.frozen_prefixes(epoch)
        for name, param in model.named_parameters():
            if any(_matches(name, prefix) for prefix in self.epochs_by_prefix):
                param.requires_grad_(not any(_matches(name, prefix) for prefix in frozen))
        return frozen
