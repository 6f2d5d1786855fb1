"""Export a checkpoint to ONNX and OpenVINO IR, laid out as a model repository, with a parity check.

Layout (served as-is by OpenVINO Model Server with ``--model_path OUT_DIR/NAME``, or by
:class:`sltrain.predict.Recognizer`)::

    OUT_DIR/NAME/VERSION/model.xml     OpenVINO IR (graph + runtime info, see below)
                         model.bin     its weights (FP32, or FP16 with ``fp16=True``)
                         model.onnx    the same graph as ONNX (opset 17, FP32); Model Server
                                       loads the IR when both are present
                         sltrain.json  everything needed to predict (same as the runtime info)
                         parity.json   the parity check of this export
                         MODEL_CARD.md what the model is for, its data and licence, metrics with
                                       coverage (sltrain.model_card)

Model inputs (fixed shapes, batch 1): ``pose`` float32 ``[1, T, P, C]`` (the output of
:func:`sltrain.inputs.clip_features` zero-padded to ``T = input_spec.num_frames``, see
:func:`sltrain.inputs.pad_batch`) and ``mask`` float32 ``[1, T]`` (1.0 for a real frame, 0.0 for
padding). Outputs: one logits tensor ``[1, K_head]`` per head, named after the head (``gloss``
first).

Runtime info: every top-level key of ``sltrain.json`` is stored as a JSON string in the IR's
runtime info under ``["sltrain", key]`` (``label_map``, ``input_spec``, ``params``,
``checkpoint_sha256``, ...), so ``model.xml`` + ``model.bin`` alone are enough to predict.

Parity check (every export): the PyTorch model, the saved IR (compiled with
``INFERENCE_PRECISION_HINT=f32``: some CPUs silently default to bf16) and the ONNX file
(onnxruntime when installed, else OpenVINO reading the ``.onnx``) run on the same inputs: the
``parity_clips`` given (real feature arrays ``[T, P, C]``), else deterministic synthetic clips
built from random keypoints through :func:`sltrain.inputs.clip_features`. Per backend,
``parity.json`` records the largest absolute logit difference and top-1 agreement. An export
fails (:class:`ExportParityError`, nothing left in ``OUT_DIR``) when a backend's largest
difference exceeds its tolerance, or its top-1 class differs from PyTorch's on a clip whose
PyTorch top-2 logits are more than ``2 * tolerance`` apart (closer ones are counted as
``near_ties``: a difference within tolerance may legitimately flip them). Default tolerances:
``1e-4`` for FP32 (IR and ONNX), ``1e-2`` for the FP16 IR (weights rounded to FP16 move logits
by about 1e-3); an INT8 IR (``quantize=True``, needs ``nncf``) must agree on top-1 for at least
90 % of the parity clips, its logit difference is reported only.

The version folder is built in a temporary folder beside it and renamed into place, so a
failed or killed export never leaves a half-written model folder.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sldata.annotations.jsonfile import sha256_of
from sldata.atomic import write_json
from sldata.pose.skeleton import Skeleton
from sltrain import __version__
from sltrain.checkpoint import FORMAT, CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from sltrain.inputs import InputSpec, clip_features, pad_batch, point_preset
from sltrain.model_card import write_model_card
from sltrain.models.factory import ENSEMBLE
from sltrain.models.factory import POSE_MODELS as FACTORY_POSE_MODELS
from sltrain.predict import EXPORT_FORMAT, F32_CONFIG, RT_INFO_SECTION

ONNX_OPSET = 17
INPUT_NAMES: tuple[str, str] = ("pose", "mask")
POSE_MODELS: tuple[str, ...] = (*FACTORY_POSE_MODELS, ENSEMBLE)
"""Models whose only input is ``pose`` (+ ``mask``); the others read RGB or pose-flow inputs."""
DEFAULT_TOLERANCE: dict[str, float] = {"f32": 1e-4, "f16": 1e-2}
INT8_MIN_TOP1_AGREEMENT = 0.9
PARITY_CLIPS = 8

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(pose [1, T, P, C], mask [1, T]) -> gloss logits [1, K]``."""


class ExportError(RuntimeError):
    """An export that cannot be done, with the reason."""


class ExportParityError(ExportError):
    """A backend's outputs differ from PyTorch's beyond tolerance; ``report`` is the parity report."""

    def __init__(self, message: str, report: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.report = dict(report)


class _ExportWrapper(nn.Module):
    """Positional ``(pose, mask float)`` -> tuple of head logits, the form ONNX export needs."""

    def __init__(self, model: nn.Module, heads: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.heads = tuple(heads)

    def forward(self, pose: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model({"pose": pose, "mask": mask > 0.5})
        return tuple(out[h] for h in self.heads)


# --------------------------------------------------------------------------- helpers


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def synthetic_parity_clips(spec: InputSpec, count: int = PARITY_CLIPS, seed: int = 0) -> list[np.ndarray]:
    """Deterministic model inputs shaped and scaled like real ones.

    Random-walk keypoints (hands sometimes missing, as in real clips) of varied lengths, some
    shorter than ``spec.num_frames`` so padding and masking are exercised, turned into features
    with :func:`sltrain.inputs.clip_features` at 640x480.
    """
    rng = np.random.default_rng(seed)
    sk = spec.skeleton_obj
    clips = []
    lengths = np.linspace(max(2, spec.num_frames // 4), spec.num_frames * 1.5, count).astype(int)
    for length in lengths:
        base = rng.uniform(0.3, 0.7, size=(1, sk.num_points, 3))
        walk = np.cumsum(rng.normal(0.0, 0.01, size=(length, sk.num_points, 3)), axis=0)
        kp = np.concatenate([base + walk, rng.uniform(0.5, 1.0, size=(length, sk.num_points, 1))], axis=-1)
        kp = kp.astype(np.float32)
        for part in ("left_hand", "right_hand"):
            gone = rng.random(length) < 0.3
            kp[np.ix_(gone, np.arange(sk.num_points)[sk.part_slice(part)], [0, 1, 2])] = np.nan
            kp[np.ix_(gone, np.arange(sk.num_points)[sk.part_slice(part)], [3])] = 0.0
        clips.append(clip_features(kp, 640, 480, spec))
    return clips


def write_untrained_checkpoint(path: str | os.PathLike[str], classes: Sequence[str], *,
                               model_config: Mapping[str, Any] | None = None, num_frames: int = 64,
                               face: str = "subset", points: str = "upper_body_hands", seed: int = 0) -> InputSpec:
    """Write a checkpoint of an untrained ``pose_transformer`` (for smoke tests and benchmarks).

    It has the shapes of a real model (``model_config`` ``None`` = the factory defaults) and
    random weights; its predictions mean nothing.

    Returns
    -------
    InputSpec
        The checkpoint's input spec.
    """
    from sltrain.models.factory import build_pose_model

    sk = Skeleton(face=face)
    spec = InputSpec(skeleton=sk.to_dict(), points=point_preset(points, sk), num_frames=num_frames)
    heads = {"gloss": {"num_classes": len(classes), "weight": 1.0}}
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG state
        torch.manual_seed(seed)
        model = build_pose_model("pose_transformer", dict(model_config or {}), spec, heads)
    save_checkpoint(path, {
        "format": FORMAT,
        "model": {"name": "pose_transformer", "config": dict(model_config or {}), "heads": heads},
        "model_state": model.state_dict(),
        "input_spec": spec.to_dict(),
        "label_map": {"classes": list(classes)},
        "params": {},
        "epoch": 0,
    })
    return spec


def _check_name_version(name: str, version: int) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ExportError(f"model name {name!r} must be letters, digits, '.', '_' or '-' (it is a folder name)")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"version must be a positive integer (Model Server's version folder), got {version!r}")


@contextlib.contextmanager
def _no_mha_fastpath() -> Any:
    """Disable PyTorch's fused transformer fast path (an op ONNX export cannot translate)."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def export_onnx(model: nn.Module, heads: Sequence[str], spec: InputSpec, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as ONNX with inputs ``pose [1, T, P, C]``, ``mask [1, T]`` (float) and one output per head."""
    if importlib.util.find_spec("onnx") is None:
        raise ExportError("ONNX export needs the 'onnx' package (pinned in requirements.lock); install it")
    wrapper = _ExportWrapper(model, heads).eval()
    pose = torch.zeros(1, spec.num_frames, spec.num_points, spec.num_channels)
    mask = torch.ones(1, spec.num_frames)
    with _no_mha_fastpath(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(wrapper, (pose, mask), str(path), dynamo=False, input_names=list(INPUT_NAMES),
                          output_names=list(heads), opset_version=ONNX_OPSET, do_constant_folding=True)


# --------------------------------------------------------------------------- runners


def torch_runner(model: nn.Module) -> Runner:
    """Gloss logits of the PyTorch model in eval mode (the reference of the parity check)."""
    model.eval()

    def run(pose: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model({"pose": torch.from_numpy(pose), "mask": torch.from_numpy(mask > 0.5)})
        return out["gloss"].float().numpy()

    return run


def openvino_runner(model: Any, device: str = "CPU") -> Runner:
    """Gloss logits of an OpenVINO model (a path or ``ov.Model``), compiled with f32 inference precision."""
    import openvino as ov

    compiled = ov.Core().compile_model(model, device, F32_CONFIG)
    request = compiled.create_infer_request()
    output = compiled.output("gloss")

    def run(pose: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.array(request.infer({"pose": pose, "mask": mask.astype(np.float32)})[output])

    return run


def onnx_runner(path: str | os.PathLike[str]) -> tuple[str, Runner]:
    """``(runtime description, runner)`` of an ONNX file: onnxruntime if installed, else OpenVINO."""
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(pose: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(["gloss"], {"pose": pose, "mask": mask.astype(np.float32)})[0])

        return f"onnxruntime {_package_version('onnxruntime')} CPU", run
    return f"openvino {_package_version('openvino')} CPU f32 (onnxruntime not installed)", openvino_runner(str(path))


# --------------------------------------------------------------------------- parity


def compare_backend(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray], *, tolerance: float | None,
                    min_top1_agreement: float = 1.0) -> dict[str, Any]:
    """Parity of one backend's logits with the reference's, clip by clip (rules in the module docs).

    Parameters
    ----------
    reference, outputs
        Logits ``[1, K]`` per clip.
    tolerance
        Largest allowed absolute difference; ``None``: not enforced (INT8).
    min_top1_agreement
        Smallest allowed fraction of clips with the same top-1 class (with ``tolerance``
        ``None``; otherwise top-1 must agree on every clip that is not a near tie).
    """
    diffs, agree, ties, hard = [], 0, 0, 0
    for ref, out in zip(reference, outputs, strict=True):
        ref, out = np.asarray(ref, dtype=np.float64).ravel(), np.asarray(out, dtype=np.float64).ravel()
        diffs.append(float(np.max(np.abs(ref - out))) if np.all(np.isfinite(out)) else float("inf"))
        if int(np.argmax(ref)) == int(np.argmax(out)):
            agree += 1
            continue
        top2 = np.sort(ref)[-2:] if ref.size > 1 else np.array([0.0, np.inf])
        if tolerance is not None and top2[1] - top2[0] <= 2 * tolerance:
            ties += 1
        else:
            hard += 1
    n = len(diffs)
    max_diff = max(diffs) if diffs else 0.0
    if tolerance is None:
        passed = n == 0 or agree / n >= min_top1_agreement
    else:
        passed = max_diff <= tolerance and hard == 0
    return {"max_abs_diff": max_diff, "mean_max_abs_diff": float(np.mean(diffs)) if diffs else 0.0,
            "top1_agreement": agree / n if n else 1.0, "top1_disagreements": n - agree, "near_ties": ties,
            "tolerance": tolerance, "min_top1_agreement": min_top1_agreement if tolerance is None else None,
            "passed": bool(passed)}


def check_parity_clips(clips: Sequence[np.ndarray], spec: InputSpec) -> list[np.ndarray]:
    """``clips`` as float32 arrays; ``ExportError`` unless each is ``[T >= 1, P, C]`` of ``spec``."""
    out = []
    for i, clip in enumerate(clips):
        clip = np.asarray(clip, dtype=np.float32)
        if clip.ndim != 3 or clip.shape[1:] != (spec.num_points, spec.num_channels) or len(clip) < 1:
            raise ExportError(f"parity clip {i}: expected [T, {spec.num_points}, {spec.num_channels}], "
                              f"got {list(clip.shape)}")
        out.append(clip)
    if not out:
        raise ExportError("parity_clips is empty; give at least one clip, or None for synthetic ones")
    return out


def parity_report(reference: Runner, backends: Mapping[str, tuple[str, Runner, float | None]],
                  clips: Sequence[np.ndarray], spec: InputSpec, *, source: str) -> dict[str, Any]:
    """Run every backend on ``clips`` (``[T, P, C]`` features) and compare with ``reference``.

    ``backends`` maps a name to ``(runtime description, runner, tolerance)``.
    """
    inputs = [pad_batch([clip[: spec.num_frames]], spec.num_frames) for clip in check_parity_clips(clips, spec)]
    ref = [reference(pose, mask.astype(np.float32)) for pose, mask in inputs]
    report: dict[str, Any] = {"inputs": source, "num_clips": len(inputs),
                              "reference": f"torch {torch.__version__} eager", "backends": {}}
    for name, (runtime, runner, tolerance) in backends.items():
        outs = [runner(pose, mask.astype(np.float32)) for pose, mask in inputs]
        result = compare_backend(ref, outs, tolerance=tolerance, min_top1_agreement=INT8_MIN_TOP1_AGREEMENT)
        report["backends"][name] = {"runtime": runtime, **result}
    report["passed"] = all(b["passed"] for b in report["backends"].values())
    return report


# --------------------------------------------------------------------------- export


def _quantize_int8(ov_model: Any, clips: Sequence[np.ndarray], spec: InputSpec) -> Any:
    import nncf  # checked by the caller

    items = []
    for clip in clips:
        pose, mask = pad_batch([np.asarray(clip, dtype=np.float32)[: spec.num_frames]], spec.num_frames)
        items.append({"pose": pose, "mask": mask.astype(np.float32)})
    return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=len(items))


def top1_of(runner: Runner, clips: Sequence[np.ndarray], labels: np.ndarray, spec: InputSpec) -> float:
    """Per-instance top-1 of ``runner`` over model-input clips with their labels."""
    hits = 0
    for clip, label in zip(clips, labels):
        pose, mask = pad_batch([np.asarray(clip, dtype=np.float32)[: spec.num_frames]], spec.num_frames)
        hits += int(np.argmax(runner(pose, mask.astype(np.float32))[0]) == int(label))
    return hits / max(1, len(clips))


def export_model(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 name: str = "sign-recognizer", version: int = 1, fp16: bool = False, quantize: bool = False,
                 parity_clips: Sequence[np.ndarray] | None = None, tolerance: float | None = None,
                 overwrite: bool = False, calibration_clips: Sequence[np.ndarray] | None = None,
                 accuracy_clips: tuple[Sequence[np.ndarray], np.ndarray] | None = None,
                 evaluation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out_dir/name/version/`` (layout and checks in the module docs).

    Parameters
    ----------
    checkpoint
        An ``sltrain-checkpoint-v1`` file of a pose model (``pose_transformer`` or ``stgcn``).
    out_dir
        Model repository root.
    name, version
        Model folder name and positive integer version folder.
    fp16
        Store the IR weights as FP16 (half the size; the parity tolerance becomes ``1e-2``).
    quantize
        INT8 post-training quantization of the IR with NNCF on the parity clips (needs ``nncf``).
    parity_clips
        Real model inputs ``[T, P, C]`` (:func:`sltrain.inputs.clip_features`) for the parity
        check; ``None``: :func:`synthetic_parity_clips`.
    tolerance
        Largest allowed absolute logit difference of the IR; ``None``: the default for its
        precision (:data:`DEFAULT_TOLERANCE`). The FP32 ONNX file is always held to ``1e-4``
        (or ``tolerance``, if smaller).
    overwrite
        Replace an existing version folder (otherwise an error).
    evaluation
        The evaluation stage's ``metrics.json``, for the model card (:mod:`sltrain.model_card`).

    Returns
    -------
    dict
        ``{"path": version folder, "metadata": sltrain.json content, "parity": parity report}``.

    Raises
    ------
    ExportError
        Unusable checkpoint or model, bad name or version, an existing version folder,
        ``quantize`` without ``nncf``.
    ExportParityError
        A backend disagrees with PyTorch; nothing is written.
    """
    import openvino as ov

    _check_name_version(name, version)
    if fp16 and quantize:
        raise ExportError("choose fp16 or quantize (INT8), not both")
    if quantize and importlib.util.find_spec("nncf") is None:
        raise ExportError("INT8 quantization needs the 'nncf' package, which is not installed "
                          "(pip install nncf), or export without quantize")
    if tolerance is not None and not (tolerance >= 0 and np.isfinite(tolerance)):
        raise ExportError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    ckpt_path = Path(checkpoint)
    try:
        ckpt = load_checkpoint(ckpt_path)
        model, spec, classes = model_from_checkpoint(ckpt)
    except CheckpointError as exc:
        raise ExportError(f"{ckpt_path}: {exc}") from None
    model_name = ckpt["model"]["name"]
    if model_name not in POSE_MODELS:
        raise ExportError(f"{ckpt_path}: export supports pose models {POSE_MODELS}, not {model_name!r}")
    heads = list(ckpt["model"]["heads"])
    if "gloss" not in heads:
        raise ExportError(f"{ckpt_path}: the model has no 'gloss' head (heads: {heads})")
    heads = ["gloss"] + [h for h in heads if h != "gloss"]
    precision = "int8" if quantize else "f16" if fp16 else "f32"
    ir_tolerance = None if quantize else tolerance if tolerance is not None else DEFAULT_TOLERANCE[precision]
    onnx_tolerance = min(DEFAULT_TOLERANCE["f32"], tolerance) if tolerance is not None else DEFAULT_TOLERANCE["f32"]

    root = Path(out_dir)
    final = root / name / str(version)
    if final.exists() and not overwrite:
        raise ExportError(f"{final} already exists; choose another version or pass overwrite")
    metadata: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "name": name,
        "version": version,
        "precision": precision,
        "model": {"name": model_name, "config": dict(ckpt["model"]["config"]), "heads": dict(ckpt["model"]["heads"])},
        "input_spec": spec.to_dict(),
        "label_map": dict(ckpt["label_map"]),
        "params": dict(ckpt["params"]),
        "epoch": int(ckpt["epoch"]),
        "checkpoint_sha256": sha256_of(ckpt_path),
        "inputs": {"pose": {"shape": [1, spec.num_frames, spec.num_points, spec.num_channels], "dtype": "float32",
                            "channels": spec.channels},
                   "mask": {"shape": [1, spec.num_frames], "dtype": "float32",
                            "meaning": "1.0 for a real frame, 0.0 for padding"}},
        "outputs": heads,
        "onnx_opset": ONNX_OPSET,
        "versions": {"sltrain": __version__, "torch": torch.__version__, "openvino": _package_version("openvino"),
                     "onnx": _package_version("onnx")},
    }
    clips = check_parity_clips(parity_clips if parity_clips is not None else synthetic_parity_clips(spec), spec)

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.export-", dir=final.parent))  # hidden: Model Server ignores it
    try:
        onnx_path = tmp / "model.onnx"
        export_onnx(model, heads, spec, onnx_path)
        ov_model = ov.convert_model(str(onnx_path))
        if quantize:
            calibration = check_parity_clips(calibration_clips, spec) if calibration_clips is not None else clips
            ov_model = _quantize_int8(ov_model, calibration, spec)
        for key, value in metadata.items():
            ov_model.set_rt_info(json.dumps(value, sort_keys=True), [RT_INFO_SECTION, key])
        ov.save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=fp16)
        onnx_runtime, run_onnx = onnx_runner(onnx_path)
        backends = {
            "openvino_ir": (f"openvino {_package_version('openvino')} CPU f32, {precision} weights",
                            openvino_runner(str(tmp / "model.xml")), ir_tolerance),
            "onnx": (onnx_runtime, run_onnx, onnx_tolerance),
        }
        report = parity_report(torch_runner(model), backends, clips, spec,
                               source="given" if parity_clips is not None else "synthetic")
        if not report["passed"]:
            failed = {k: {m: v[m] for m in ("max_abs_diff", "tolerance", "top1_agreement", "near_ties")}
                      for k, v in report["backends"].items() if not v["passed"]}
            raise ExportParityError(f"{ckpt_path}: export parity check failed: {failed}", report)
        if quantize and accuracy_clips is not None:
            acc_clips, acc_labels = accuracy_clips
            report["int8_accuracy"] = {
                "clips": len(acc_clips),
                "calibration_clips": len(calibration),
                "top1_fp32_torch": top1_of(torch_runner(model), acc_clips, np.asarray(acc_labels), spec),
                "top1_int8_openvino": top1_of(openvino_runner(str(tmp / "model.xml")), acc_clips,
                                              np.asarray(acc_labels), spec),
            }
        write_json(tmp / "sltrain.json", metadata)
        write_json(tmp / "parity.json", report)
        write_model_card(tmp, metadata, report, evaluation)
        os.chmod(tmp, 0o755)
        if final.exists():  # overwrite: move the old version aside, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{version}.old-", dir=final.parent))
            os.replace(final, old / "v")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"path": str(final), "metadata": metadata, "parity": report}


def real_parity_clips(checkpoint: str | os.PathLike[str], packed_dir: str | os.PathLike[str],
                      count: int = 16, split: str = "val") -> list[np.ndarray]:
    """Model inputs ``[T, P, C]`` of the first ``count`` clips of ``split`` in a pack, prepared by
    the checkpoint's own input spec (real keypoints, so parity is checked on real data)."""
    clips, _ = labelled_clips(checkpoint, packed_dir, split, count)
    return clips


def labelled_clips(checkpoint: str | os.PathLike[str], packed_dir: str | os.PathLike[str], split: str,
                   count: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Model inputs and labels of (the first ``count``) clips of ``split`` in a pack."""
    from sltrain.checkpoint import load_checkpoint
    from sltrain.data import PoseClips
    from sltrain.inputs import InputSpec

    spec = InputSpec.from_dict(load_checkpoint(checkpoint)["input_spec"])
    clips = PoseClips(packed_dir, (split,), spec)
    rows = clips.rows_of(split)[:count]
    if len(rows) == 0:
        raise ExportError(f"{packed_dir}: no {split} clips")
    return [clips.features(int(r)) for r in rows], clips.labels[rows]


def main_export(args: Any, settings: Mapping[str, Any]) -> int:
    """CLI: ``python -m sltrain export CHECKPOINT --out DIR [--name N] [--version V]`` with the ``export``
    params ``settings`` (``fp16``, ``int8``, ``parity_clips``, ``calibration_clips``)."""
    import sys

    parity_clips = calibration = accuracy = evaluation = None
    if getattr(args, "eval_metrics", None):
        evaluation = json.loads(Path(args.eval_metrics).read_text(encoding="utf-8"))
    if getattr(args, "parity_packed", None):
        parity_clips = real_parity_clips(args.checkpoint, args.parity_packed, settings["parity_clips"])
        if settings["int8"]:  # calibrate on train clips; report val top-1 of FP32 and INT8 side by side
            calibration = real_parity_clips(args.checkpoint, args.parity_packed, settings["calibration_clips"],
                                            split="train")
            accuracy = labelled_clips(args.checkpoint, args.parity_packed, "val")
    try:
        result = export_model(args.checkpoint, args.out, name=args.name, version=args.version, fp16=settings["fp16"],
                              quantize=settings["int8"], tolerance=args.tolerance, overwrite=args.overwrite,
                              parity_clips=parity_clips, calibration_clips=calibration, accuracy_clips=accuracy,
                              evaluation=evaluation)
    except ExportParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(json.dumps(exc.report, indent=2, sort_keys=True), file=sys.stderr)
        return 1
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if "int8_accuracy" in result["parity"]:
        acc = result["parity"]["int8_accuracy"]
        print(f"  val top-1 on {acc['clips']} clips: FP32 {acc['top1_fp32_torch']:.4f}, INT8 {acc['top1_int8_openvino']:.4f} "
              f"(calibrated on {acc['calibration_clips']} train clips)")
    parity = result["parity"]["backends"]
    print(f"exported {args.checkpoint} -> {result['path']}")
    for backend, r in parity.items():
        print(f"  parity {backend:12s} max|diff|={r['max_abs_diff']:.3g} top1={r['top1_agreement']:.0%} "
              f"({r['runtime']})")
    return 0
