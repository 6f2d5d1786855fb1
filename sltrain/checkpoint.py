"""Checkpoints that are enough to predict on their own, and load without running code.

A checkpoint is a plain dict saved with :func:`torch.save` and read with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only, so a
tampered file can never execute code). Keys:

``format``         ``"sltrain-checkpoint-v1"``
``model``          ``{"name", "config", "heads"}`` for :func:`sltrain.models.factory.build_model`
``model_state``    the model's ``state_dict``
``input_spec``     :meth:`sltrain.inputs.InputSpec.to_dict` (how keypoints become input), or for
                   the RGB and hand-crop models :meth:`sltrain.clip_inputs.ClipInputSpec.to_dict`
                   (with ``kind``: ``rgb`` or ``hands``)
``label_map``      ``{"classes": [gloss of label 0, 1, ...], ...}`` from the subset stage
``params``         the params.yaml sections that made it (``train``, ``subset``, ``pose``)
``epoch``          epochs completed
``state``          resume-only: optimizer, scheduler, RNG states, history, best score
``integrity``      ``{"sha256": ...}`` of every other key except ``state`` (:func:`payload_digest`),
                   written by :func:`save_checkpoint` and checked by :func:`load_checkpoint`, so a
                   flipped byte in the weights or the metadata is refused rather than loaded
                   (``torch.load`` does not check its records; files without the key load unchecked)
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sldata.atomic import atomic_path
from sltrain.inputs import InputSpec

FORMAT = "sltrain-checkpoint-v1"
REQUIRED = ("format", "model", "model_state", "input_spec", "label_map", "params", "epoch")
INTEGRITY = "integrity"
UNCHECKED = (INTEGRITY, "state")
"""Keys outside the digest: the digest itself, and the resume state (it records wall-clock time)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason."""


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` (nested dicts, lists, tuples, tensors and plain values) canonically."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, Mapping):
        h.update(b"{")
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(obj, (bytes, bytearray)):
        h.update(b"B%d:" % len(obj) + bytes(obj))
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def payload_digest(payload: Mapping[str, Any]) -> str:
    """sha256 of a checkpoint's contents, all keys but :data:`UNCHECKED` (tensors by dtype, shape and bytes)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k not in UNCHECKED})
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` atomically (a killed run leaves the previous checkpoint intact), with its digest."""
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint payload lacks {missing}")
    data = {k: v for k, v in payload.items() if k != INTEGRITY}
    data[INTEGRITY] = {"sha256": payload_digest(data)}
    buffer = io.BytesIO()  # a file object: torch names the archive inside after a path, and temp names vary
    torch.save(data, buffer)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())


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
    if INTEGRITY in ckpt:
        stored = ckpt[INTEGRITY].get("sha256") if isinstance(ckpt[INTEGRITY], Mapping) else None
        if stored != payload_digest(ckpt):
            raise CheckpointError(f"{p}: refused: its contents do not match the sha256 stored when it was saved "
                                  "(tampered or corrupted)")
    return ckpt


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> tuple[torch.nn.Module, InputSpec, list[str]]:
    """Rebuild the model (eval mode), its input spec and class names from a loaded checkpoint.

    Raises
    ------
    CheckpointError
        When the stored weights do not fit the stored model description.
    """
    from sltrain.clip_inputs import is_clip_spec
    from sltrain.models.factory import build_pose_model

    if is_clip_spec(ckpt["input_spec"]):
        kind = ckpt["input_spec"]["kind"]
        what = "RGB frames" if kind == "rgb" else "hand crops and keypoints"
        raise CheckpointError(
            f"refused: model {ckpt['model']['name']!r} reads {what}; evaluate, export, predict, stream and serve "
            "support pose models only (its val top-1/top-5 are in the metrics.json its training wrote; rebuild it in "
            "Python with sltrain.checkpoint.clip_model_from_checkpoint)")
    try:
        spec = InputSpec.from_dict(ckpt["input_spec"])
        m = ckpt["model"]
        model = build_pose_model(m["name"], dict(m["config"]), spec, m["heads"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a tampered or foreign description
        raise CheckpointError(f"refused: unusable model description or input spec ({type(exc).__name__}: "
                              f"{exc})") from None
    _load_weights(model, ckpt)
    return model, spec, _classes(ckpt)


def clip_model_from_checkpoint(ckpt: Mapping[str, Any]) -> tuple[torch.nn.Module, Any, list[str]]:
    """Rebuild an RGB or hand-crop model (eval mode), its :class:`~sltrain.clip_inputs.ClipInputSpec`
    and class names from a loaded checkpoint.

    Raises
    ------
    CheckpointError
        A pose checkpoint (use :func:`model_from_checkpoint`), or weights that do not fit.
    """
    from sltrain.clip_inputs import ClipInputSpec, is_clip_spec
    from sltrain.models.factory import build_clip_model

    if not is_clip_spec(ckpt["input_spec"]):
        raise CheckpointError("refused: a pose model's checkpoint; use model_from_checkpoint")
    spec = ClipInputSpec.from_dict(ckpt["input_spec"])
    m = ckpt["model"]
    model = build_clip_model(m["name"], dict(m["config"]), spec, m["heads"])
    _load_weights(model, ckpt)
    return model, spec, _classes(ckpt)


def _load_weights(model: torch.nn.Module, ckpt: Mapping[str, Any]) -> None:
    try:
        model.load_state_dict(ckpt["model_state"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"refused: weights do not match the model they claim ({str(exc).splitlines()[0]})") from None
    model.eval()


def _classes(ckpt: Mapping[str, Any]) -> list[str]:
    try:
        classes = list(ckpt["label_map"]["classes"])
        gloss = ckpt["model"]["heads"]["gloss"]["num_classes"]
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"refused: no usable label map or gloss head ({type(exc).__name__}: {exc})") from None
    if len(classes) != gloss:
        raise CheckpointError(f"refused: label map has {len(classes)} classes, the gloss head {gloss}")
    return classes

