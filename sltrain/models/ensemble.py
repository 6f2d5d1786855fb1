"""An ensemble of pose models on one input, as one model: a weighted mixture of their class probabilities.

Members are trained one by one (``train.ensemble`` in params; :func:`sltrain.train.train`) on the
same input spec, so the ensemble reads one ``pose``/``mask`` input and exports as ONE OpenVINO
model: ``evaluate``, ``export``, ``predict``, ``stream`` and ``serve`` all score the very function
that was evaluated. Each head's output is ``log(sum_i w_i * softmax(member_i(x)))``: its softmax
is the mixture itself, so code that applies a softmax to the logits (``predict``) gets the
ensemble's probabilities.

:func:`fit_weights` chooses the weights on validation predictions only (minimum negative
log-likelihood of the mixture); equal weights are the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sltrain.models.heads import log_mixture


class EnsembleClassifier(nn.Module):
    """Weighted mixture of member classifiers' probabilities (see the module docs).

    Parameters
    ----------
    members
        Classifiers returning ``{head: logits}`` from the same batch.
    weights
        Non-negative mixture weights, one per member (normalized to sum to 1).

    Forward: batch dict -> ``{head: log-probabilities [B, classes]}`` for the heads every member has.
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        w = np.ones(len(members)) if weights is None else np.asarray(list(weights), dtype=np.float64)
        if w.shape != (len(members),) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {len(members)} non-negative numbers, not all 0; got {weights!r}")
        self.members = nn.ModuleList(members)
        self.register_buffer("log_weights", torch.as_tensor(np.log(np.maximum(w / w.sum(), 1e-12)),
                                                            dtype=torch.float32), persistent=False)
        self.weights = [float(v) for v in w / w.sum()]

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        outs = [member(batch) for member in self.members]
        heads = [h for h in outs[0] if all(h in o for o in outs)]
        return {h: log_mixture([F.log_softmax(o[h], -1) for o in outs], [w for w in self.log_weights]) for h in heads}


def fit_weights(log_probs: Sequence[np.ndarray], labels: np.ndarray, steps: int = 500, lr: float = 0.05) -> list[float]:
    """Mixture weights minimizing the negative log-likelihood of ``labels`` (validation data only).

    Parameters
    ----------
    log_probs
        One ``[N, K]`` array of log-probabilities per member, on the same clips.
    labels
        ``[N]`` class indices (``-1``: left out).
    steps, lr
        Adam steps on the softmax-parameterized weights (the problem is convex in the weights).

    Returns
    -------
    Weights summing to 1.
    """
    keep = np.asarray(labels) >= 0
    if not keep.any():
        return [1.0 / len(log_probs)] * len(log_probs)
    lp = torch.as_tensor(np.stack([np.asarray(p)[keep] for p in log_probs]), dtype=torch.float64)  # [M, N, K]
    y = torch.as_tensor(np.asarray(labels)[keep], dtype=torch.long)
    picked = lp[:, torch.arange(len(y)), y]  # [M, N]
    theta = torch.zeros(len(log_probs), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = -torch.logsumexp(picked + F.log_softmax(theta, 0)[:, None], dim=0).mean()
        loss.backward()
        opt.step()
    return [float(v) for v in F.softmax(theta.detach(), 0)]


def mixture_log_probs(log_probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``log(sum_i w_i exp(log_probs_i))`` ``[N, K]`` in numpy (float64)."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in log_probs])
    logw = np.log(np.maximum(np.asarray(weights, dtype=np.float64), 1e-300))[:, None, None]
    z = stacked + logw
    top = z.max(axis=0)
    return top + np.log(np.exp(z - top).sum(axis=0))


def log_softmax_np(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis in numpy (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


