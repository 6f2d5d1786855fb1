"""The one table of pipeline stages: each stage's command, library code and the params it reads.

Both engines take their dependencies from here:

* Snakemake (``pipeline/rules/common.smk``) gives each rule ``params:`` =
  :func:`stage_params` (only the keys the stage reads, so its params rerun trigger reruns
  exactly the stages whose values changed) and ``input:`` += :func:`code_files` (the stage
  reruns when its library code is newer than its outputs).
* ``dvc.yaml`` lists the same :func:`param_keys` under ``params:`` and the same :attr:`Stage.code`
  under ``deps:``; ``tests/test_stages.py`` fails when the two differ, and when a module that a
  stage's command imports (followed recursively within ``sldata``/``sltrain``) is missing from
  its ``code``.

The commands read the values themselves, from ``--params`` (see :mod:`sldata.params`); the keys
here only say what a stage depends on. Runtime knobs (:data:`RUNTIME_KEYS`: worker and thread
counts, checkpoint spacing) change how fast a stage runs, never what it writes, so no stage
depends on them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sldata.params import REPO_ROOT, get_key, load_schema

RUNTIME_KEYS: frozenset[str] = frozenset({
    "acquire.download.workers",
    "pose.workers",
    "pose.checkpoint_every",
    "frames.workers",
    "hand_crops.workers",
    "train.threads",
    "train.loader_workers",
    "train.ensemble_jobs",
    "train_rgb.threads",
    "train_hands.threads",
})
"""Keys no stage depends on: they change how fast a stage runs, not what it writes."""


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    Attributes
    ----------
    command
        ``(package, subcommand)``: the stage runs ``python -m <package> <subcommand>``.
    code
        Library files and folders (repository-relative) the stage's outputs depend on.
    params
        Params keys the stage reads: a section (``"pose"``), a key (``"shards.count"``), or a key
        prefixed with ``-`` that is taken out of a section listed before it. :data:`RUNTIME_KEYS`
        are always taken out.
    """

    command: tuple[str, str]
    code: tuple[str, ...]
    params: tuple[str, ...] = ()


_POSE_CODE = (
    "sldata/annotations/__init__.py", "sldata/annotations/jsonfile.py", "sldata/annotations/rejects.py",
    "sldata/atomic.py", "sldata/pose/__init__.py", "sldata/pose/estimator.py", "sldata/pose/extract.py",
    "sldata/pose/openvino_holistic.py", "sldata/pose/skeleton.py", "sldata/pose/store.py", "sldata/settings.py",
)
"""The pose estimators and the pose shard format (what the pose stage and every reader of its shards import)."""
_TRAIN_CODE = (
    "sldata/annotations/__init__.py", "sldata/annotations/jsonfile.py", "sldata/annotations/rejects.py",
    "sldata/atomic.py", "sldata/frames.py", "sldata/pose/__init__.py", "sldata/pose/estimator.py",
    "sldata/pose/extract.py", "sldata/pose/features.py", "sldata/pose/flow.py", "sldata/pose/handcrop_stage.py",
    "sldata/pose/handcrops.py", "sldata/pose/openvino_holistic.py", "sldata/pose/skeleton.py",
    "sldata/pose/store.py", "sldata/settings.py", "sltrain/__init__.py", "sltrain/augment.py",
    "sltrain/checkpoint.py", "sltrain/clip_data.py", "sltrain/clip_inputs.py", "sltrain/data.py",
    "sltrain/distributed.py", "sltrain/inputs.py", "sltrain/live.py", "sltrain/models", "sltrain/plots.py",
    "sltrain/train.py",
)
"""The training loop, data and models of every trainer (the three share sltrain/train.py)."""

STAGES: dict[str, Stage] = {
    "manifest": Stage(
        ("sldata", "manifest"),
        ("sldata/__init__.py", "sldata/annotations", "sldata/atomic.py", "sldata/fetch.py", "sldata/manifest.py",
         "sldata/manifest_schema.py"),
        ("sources",),
    ),
    "subset": Stage(
        ("sldata", "subset"),
        ("sldata/__init__.py", "sldata/annotations", "sldata/atomic.py", "sldata/fetch.py", "sldata/manifest.py",
         "sldata/manifest_schema.py", "sldata/subsets.py"),
        ("subset",),
    ),
    "acquire": Stage(
        ("sldata", "acquire"),
        ("sldata/__init__.py", "sldata/acquire", "sldata/annotations", "sldata/atomic.py", "sldata/fetch.py",
         "sldata/manifest.py", "sldata/manifest_schema.py", "sldata/settings.py"),
        ("shards.count", "acquire", "-acquire.min_success_ratio"),
    ),
    "coverage": Stage(
        ("sldata", "coverage"),
        ("sldata/__init__.py", "sldata/acquire", "sldata/annotations", "sldata/atomic.py", "sldata/fetch.py",
         "sldata/manifest.py", "sldata/manifest_schema.py", "sldata/settings.py"),
        ("acquire.min_success_ratio",),
    ),
    "pose": Stage(
        ("sldata", "pose"),
        _POSE_CODE,
        ("shards.count", "pose"),
    ),
    "pack_pose": Stage(
        ("sldata", "pack-pose"),
        ("sldata/atomic.py", "sldata/pose/__init__.py", "sldata/pose/skeleton.py", "sldata/pose/store.py"),
        ("shards.count",),
    ),
    "pose_summary": Stage(
        ("sldata", "pose-summary"),
        ("sldata/atomic.py", "sldata/pose/__init__.py", "sldata/pose/skeleton.py", "sldata/pose/store.py",
         "sldata/pose/summary.py"),
        ("shards.count",),
    ),
    "example_clip": Stage(
        ("sldata", "example-clip"),
        ("sldata/atomic.py", "sldata/example.py", "sldata/pose/__init__.py", "sldata/pose/render.py",
         "sldata/pose/skeleton.py", "sldata/pose/store.py"),
        ("shards.count",),
    ),
    "frames": Stage(
        ("sldata", "frames"),
        ("sldata/atomic.py", "sldata/frames.py", "sldata/settings.py"),
        ("shards.count", "frames"),
    ),
    "hand_crops": Stage(
        ("sldata", "hand-crops"),
        (*_POSE_CODE,
         "sldata/frames.py", "sldata/pose/features.py", "sldata/pose/flow.py", "sldata/pose/handcrop_stage.py",
         "sldata/pose/handcrops.py"),
        ("shards.count", "hand_crops"),
    ),
    "train": Stage(
        ("sltrain", "train"),
        _TRAIN_CODE,
        ("features", "train", "models.pose_transformer", "models.pose_conformer", "models.stgcn"),
    ),
    "train_rgb": Stage(
        ("sltrain", "train-rgb"),
        _TRAIN_CODE,
        ("train_rgb", "models.rgb_s3d", "frames"),
    ),
    "train_hands": Stage(
        ("sltrain", "train-hands"),
        _TRAIN_CODE,
        ("train_hands", "models.vtn", "hand_crops"),
    ),
    "evaluate": Stage(
        ("sltrain", "evaluate"),
        (*_POSE_CODE,
         "sldata/frames.py", "sldata/pose/features.py", "sldata/pose/flow.py", "sldata/pose/handcrop_stage.py",
         "sldata/pose/handcrops.py", "sltrain/__init__.py", "sltrain/augment.py", "sltrain/checkpoint.py",
         "sltrain/clip_data.py", "sltrain/clip_inputs.py", "sltrain/data.py", "sltrain/distributed.py",
         "sltrain/evaluate.py", "sltrain/inputs.py", "sltrain/live.py", "sltrain/metrics.py", "sltrain/models",
         "sltrain/plots.py", "sltrain/train.py"),
        ("train.seed",),
    ),
    "export": Stage(
        ("sltrain", "export"),
        (*_POSE_CODE,
         "sldata/pose/features.py", "sldata/pose/flow.py", "sltrain/__init__.py", "sltrain/augment.py",
         "sltrain/checkpoint.py", "sltrain/clip_inputs.py", "sltrain/data.py", "sltrain/export.py",
         "sltrain/inputs.py", "sltrain/model_card.py", "sltrain/models", "sltrain/predict.py"),
        ("export",),
    ),
    "predict_example": Stage(
        ("sltrain", "predict"),
        (*_POSE_CODE,
         "sldata/pose/features.py", "sldata/pose/flow.py", "sltrain/augment.py", "sltrain/inputs.py",
         "sltrain/predict.py"),
        (),
    ),
}
"""Every stage of the Snakefile and dvc.yaml, by its DVC stage name (= the Snakemake rule's name)."""


def _children(dotted: str, schema: Mapping[str, Any]) -> list[str]:
    node = schema
    for part in dotted.split("."):
        node = node["properties"][part]
    return [f"{dotted}.{key}" for key in node.get("properties", {})]


def _expand(key: str, drop: set[str], schema: Mapping[str, Any]) -> Iterator[str]:
    """``key``, or its children (recursively) when a dropped key lies below it."""
    if key in drop:
        return
    if not any(d.startswith(key + ".") for d in drop):
        yield key
        return
    for child in _children(key, schema):
        yield from _expand(child, drop, schema)


def param_keys(stage: str) -> list[str]:
    """The params keys ``stage`` depends on, as ``dvc.yaml`` lists them (runtime knobs taken out).

    ``("shards.count", "pose")`` becomes ``["shards.count", "pose.estimator", "pose.face", ...]``
    without ``pose.workers`` and ``pose.checkpoint_every``.
    """
    schema = load_schema()
    entries = STAGES[stage].params
    drop = set(RUNTIME_KEYS) | {e[1:] for e in entries if e.startswith("-")}
    return [k for e in entries if not e.startswith("-") for k in _expand(e, drop, schema)]


def stage_params(params: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The values ``stage`` depends on, nested by section: ``{"shards": {"count": 2}, "pose": {...}}``.

    Snakemake gets one ``params:`` entry per section (so a changed ``pose`` value names ``pose`` in
    its rerun reason); training records the same values in its checkpoints.
    """
    out: dict[str, Any] = {}
    for key in param_keys(stage):
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = get_key(params, key)
    return out


def code_files(stage: str, root: Path = REPO_ROOT) -> list[str]:
    """:attr:`Stage.code` of ``stage`` with folders expanded to their ``*.py`` files (sorted, relative)."""
    files: set[str] = set()
    for entry in STAGES[stage].code:
        path = root / entry
        if path.is_dir():
            files.update(p.relative_to(root).as_posix() for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        else:
            files.add(entry)
    return sorted(files)
