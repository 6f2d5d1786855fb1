"""Data-parallel training across processes with ``torchrun`` (DistributedDataParallel).

``torchrun --nproc-per-node N -m sltrain train ...`` starts N copies of the trainer; each reads
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from the environment (set by torchrun) and
:func:`init_distributed` joins them into one process group: gloo on CPUs, nccl on GPUs (one
GPU per process, ``cuda:LOCAL_RANK``). Without those variables training is a single process and
nothing here does anything.

How the loop stays equal to a single-process run
------------------------------------------------
* Every process draws the same global batch of rows (same seed, same epoch order) and keeps
  every N-th row (:func:`local_rows`); augmentation randomness is per row, so a row is
  augmented the same way whichever process handles it.
* Each process's mean loss is weighted by its share of the global batch, times N
  (:func:`local_rows`); DDP averages gradients over the N processes, so the update is the
  gradient of the global batch mean, the same as one process over the whole batch.
* Every process evaluates the whole val split (identical results, so identical early-stopping
  decisions); only rank 0 writes checkpoints, history and metrics.

What differs: floating-point summation order (gradients are summed across processes), dropout
masks (each process draws masks for its own rows from its own generator) and BatchNorm
statistics (computed per process; ``SyncBatchNorm`` needs GPUs); with heads whose labels are missing for some clips the per-head
means are weighted by row counts, not label counts. With dropout 0 and a model
without BatchNorm (the pose transformer) two processes match one process to float rounding,
which Adam amplifies a little for parameters whose gradient is near zero;
``tests/test_distributed.py`` checks losses per epoch agree to a relative 1e-4, val accuracy
exactly, and every weight of the final model to within 1e-4.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly one-process) data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0


def context_from_env() -> DistContext:
    """The torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a no-op for one process."""
    ctx = context_from_env()
    if ctx.enabled and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)
    return ctx


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """One GPU per process (``cuda:LOCAL_RANK``) when training on CUDA; the CPU otherwise."""
    if device.type == "cuda" and ctx.enabled:
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap_model(model: torch.nn.Module, ctx: DistContext, device: torch.device,
               find_unused: bool = False) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` in a multi-process run, the model itself otherwise.

    ``find_unused``: some parameters get no gradient in some steps (a freeze schedule).
    """
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def local_rows(rows: np.ndarray, ctx: DistContext) -> tuple[np.ndarray, float]:
    """This process's share of a global batch and the factor for its mean loss.

    The rows are every ``world_size``-th row from ``rank``; the factor ``n_local * world_size /
    n_global`` turns the mean loss over them into this process's part of the global batch mean
    once DDP averages the gradients (see the module docs). A process left without rows (a last
    batch smaller than the number of processes) still runs one row, with factor 0, because every
    process must take part in each gradient exchange.
    """
    if not ctx.enabled:
        return rows, 1.0
    mine = rows[ctx.rank::ctx.world_size]
    if len(mine) == 0:
        return rows[:1], 0.0
    return mine, len(mine) * ctx.world_size / len(rows)


def all_reduce_sum(value: float, ctx: DistContext) -> float:
    """Sum a number over all processes (e.g. the epoch's training loss); the value itself for one process."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        torch.distributed.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
