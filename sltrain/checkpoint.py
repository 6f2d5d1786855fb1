"""Checkpoints that are enough to predict on their own, and load without running code.

A checkpoint is a plain dict saved with :func:`torch.save` and read with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only, so a
tampered file can never execute code). Keys:

``format``         ``"sltrain-checkpoint-v1"``
``model``          ``{"name", "config", "heads"}`` for :func:`sltrain.models.factory.build_model`
``model_state``    the model's ``state_dict``
``input_spec``     :meth:`sltrain.inputs.InputSpec.to_dict` (how keypoints become input)
``label_map``      ``{"classes": [gloss of label 0, 1, ...], ...}`` from the subset stage
``params``         the params.yaml sections that made it (``train``, ``subset``, ``pose``)
``epoch``          epochs completed
``state``          resume-only: optimizer, scheduler, RNG states, history, best score
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sldata.atomic import atomic_path
from sltrain.inputs import InputSpec

FORMAT = "sltrain-checkpoint-v1"
REQUIRED = ("format", "model", "model_state", "input_spec", "label_map", "params", "epoch")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason."""


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` atomically (a killed run leaves the previous checkpoint intact)."""
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint payload lacks {missing}")
    with atomic_path(path) as tmp:
        torch.save(dict(payload), tmp)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check its layout.

    Raises
    ------
    CheckpointError
        Not a file, not loadable as plain data (e.g. pickled code), or not our format.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code, RuntimeError for truncated zip, ...
        raise CheckpointError(f"{p}: refused: not a plain-data checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p}: refused: not an {FORMAT} checkpoint")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{p}: refused: missing {missing}")
    return ckpt


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> tuple[torch.nn.Module, InputSpec, list[str]]:
    """Rebuild the model (eval mode), its input spec and class names from a loaded checkpoint.

    Raises
    ------
    CheckpointError
        When the stored weights do not fit the stored model description.
    """
    from sltrain.models.factory import build_pose_model

    spec = InputSpec.from_dict(ckpt["input_spec"])
    m = ckpt["model"]
    model = build_pose_model(m["name"], dict(m["config"]), spec, m["heads"])
    try:
        model.load_state_dict(ckpt["model_state"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"refused: weights do not match the model they claim ({str(exc).splitlines()[0]})") from None
    model.eval()
    classes = list(ckpt["label_map"]["classes"])
    if len(classes) != m["heads"]["gloss"]["num_classes"]:
        raise CheckpointError(f"refused: label map has {len(classes)} classes, the gloss head "
                              f"{m['heads']['gloss']['num_classes']}")
    return model, spec, classes

