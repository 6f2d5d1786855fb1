"""Build a model by name from a configuration mapping (e.g. a ``model`` section of ``params.yaml``).

``config`` holds the model's keyword-only constructor arguments (``d_model``, ``channels``, ...);
the data-dependent arguments (``num_points``, ``in_channels``, ``heads``, ``edges``) are passed
separately. Unknown names and keys raise ``ValueError`` listing the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from sltrain.inputs import InputSpec
from sltrain.models.ensemble import EnsembleClassifier
from sltrain.models.heads import HeadsConfig
from sltrain.models.pose_conformer import PoseConformer, input_parts, mirror_in_feature_space
from sltrain.models.pose_transformer import PoseTransformer
from sltrain.models.rgb_s3d import RGBS3D
from sltrain.models.stgcn import STGCN, skeleton_graph
from sltrain.models.vtn import VTN

def _skeleton_edges(spec: InputSpec) -> list[tuple[int, int]]:
    """``stgcn``'s graph: skeleton edges on the spec's points, each hand's wrist linked to the body's."""
    return skeleton_graph(spec.skeleton_obj, list(spec.point_indices), link_head=False).edges


def _part_groups(spec: InputSpec) -> dict[str, Any]:
    """``pose_conformer``'s part groups: the spec's points grouped by part."""
    return {"parts": input_parts(spec.points)}


@dataclass(frozen=True)
class ModelEntry:
    """One model of :data:`MODELS`.

    Attributes
    ----------
    cls
        The model class; its keyword-only constructor arguments are its config keys.
    inputs
        What it reads: ``pose`` (an :class:`InputSpec`), ``hands`` or ``rgb`` (a clip input spec).
    args
        Its positional constructor arguments, in order, from ``num_points``, ``in_channels``,
        ``heads`` and ``edges``.
    edges
        For graph models: the edges from a pose input spec.
    derive
        Constructor arguments computed from a pose input spec (named in :data:`DERIVED_KEYS`).
    """

    cls: type[nn.Module]
    inputs: str
    args: tuple[str, ...] = ("num_points", "in_channels", "heads")
    edges: Callable[[InputSpec], Sequence[tuple[int, int]]] | None = None
    derive: Callable[[InputSpec], dict[str, Any]] | None = None


MODELS: dict[str, ModelEntry] = {
    "pose_transformer": ModelEntry(PoseTransformer, "pose"),
    "pose_conformer": ModelEntry(PoseConformer, "pose", derive=_part_groups),
    "stgcn": ModelEntry(STGCN, "pose", ("num_points", "in_channels", "heads", "edges"), edges=_skeleton_edges),
    "vtn": ModelEntry(VTN, "hands"),
    "rgb_s3d": ModelEntry(RGBS3D, "rgb", ("heads",)),
}
"""Every model by name. A new model is one module with its class, one line here and its
``models.<name>`` schema section (pose models may then be named by ``train.model``)."""
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


POSE_MODELS: tuple[str, ...] = tuple(name for name, entry in MODELS.items() if entry.inputs == "pose")
"""Models that read the pose input of an :class:`InputSpec`."""
DERIVED_KEYS: dict[str, dict[str, str]] = {
    "pose_conformer": {"parts": "point groups from the input spec"},
}
"""Constructor arguments computed from the input spec, never given in a config."""
EXTRA_KEYS: dict[str, tuple[str, ...]] = {name: ("flip_tta",) for name in POSE_MODELS}
"""Config keys that are not constructor arguments: ``flip_tta`` (average the input and its mirror in
eval mode, :meth:`sltrain.models.heads.SignClassifier.set_mirror`)."""


def config_keys(name: str) -> tuple[str, ...]:
    """The ``config`` keys model ``name`` accepts (its keyword-only constructor arguments and extras)."""
    cls = _model_class(name)
    derived = DERIVED_KEYS.get(name, {})
    return tuple(p.name for p in inspect.signature(cls.__init__).parameters.values()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in derived) + EXTRA_KEYS.get(name, ())


def _model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name].cls


def build_model(name: str, config: Mapping[str, Any] | None, *, num_points: int, in_channels: int,
                heads: HeadsConfig, edges: Sequence[tuple[int, int]] | None = None,
                derived: Mapping[str, Any] | None = None) -> nn.Module:
    """Instantiate model ``name``.

    Parameters
    ----------
    name
        One of :data:`MODEL_NAMES`.
    config
        Keyword arguments of the model's constructor (see :func:`config_keys`); None = defaults.
    num_points, in_channels
        Points ``P`` and channels ``C`` of the pose input (``pose`` for ``pose_transformer`` and
        ``stgcn``, ``pose_flow`` for ``vtn``); ignored by ``rgb_s3d``, whose image channels are
        its ``in_channels`` config key.
    heads
        Heads configuration ``{name: {"num_classes": int, "weight": float}}``.
    edges
        Graph edges in input point indices; required by ``stgcn`` (e.g.
        ``skeleton_graph(skeleton).input_edges()``, with ``point_indices`` in ``config``).
    derived
        Constructor arguments computed from the input spec (:data:`DERIVED_KEYS`, e.g. the
        ``pose_conformer``'s ``parts`` and ``mirror``; see :func:`build_pose_model`).

    Raises
    ------
    ValueError
        For an unknown name or config key, or ``stgcn`` without edges.
    """
    _model_class(name)
    config = dict(config or {})
    for key in EXTRA_KEYS.get(name, ()):
        config.pop(key, None)
    allowed = config_keys(name)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r}: unknown config key(s) {unknown}; valid keys: {', '.join(allowed)}")
    entry = MODELS[name]
    values = {"num_points": num_points, "in_channels": in_channels, "heads": heads}
    if "edges" in entry.args:
        values["edges"] = _require_edges(edges, name)
    extra = dict(derived or {}) if name in DERIVED_KEYS else {}
    return entry.cls(*(values[arg] for arg in entry.args), **config, **extra)


def build_pose_model(name: str, config: Mapping[str, Any] | None, spec: InputSpec, heads: HeadsConfig) -> nn.Module:
    """:func:`build_model` for inputs prepared by ``spec`` (``[B, T, spec.num_points, spec.num_channels]``).

    ``stgcn``'s graph is :func:`skeleton_graph` on the spec's points (skeleton edges and each
    hand's wrist linked to the body's wrist), in the spec's point order. ``pose_conformer``'s
    part groups are the spec's points grouped by part. With ``flip_tta: true`` in ``config``,
    the model averages each input with its mirror image in eval mode, the mirror computed from
    the spec's points and channels (:func:`mirror_in_feature_space`).
    """
    if name == ENSEMBLE:
        return build_ensemble(dict(config or {}), spec, heads)
    entry = MODELS.get(name)
    edges = entry.edges(spec) if entry is not None and entry.edges is not None else None
    derived = entry.derive(spec) if entry is not None and entry.derive is not None else {}
    model = build_model(name, config, num_points=spec.num_points, in_channels=spec.num_channels, heads=heads,
                        edges=edges, derived=derived)
    if (config or {}).get("flip_tta"):
        from sltrain.augment import subset_flip_permutation

        flip = subset_flip_permutation(spec.skeleton_obj, spec.points)
        model.set_mirror(*mirror_in_feature_space(spec.points, spec.channels, flip))
    return model


ENSEMBLE = "ensemble"
"""Model name of :class:`~sltrain.models.ensemble.EnsembleClassifier` checkpoints."""


def build_ensemble(config: Mapping[str, Any], spec: InputSpec, heads: HeadsConfig) -> nn.Module:
    """An :class:`EnsembleClassifier` from ``{"members": [{"name", "config"}, ...], "weights": [...]}``.

    Every member reads ``spec``'s input and has ``heads``; each is built by :func:`build_pose_model`.
    """
    unknown = sorted(set(config) - {"members", "weights"})
    members = config.get("members")
    if unknown or not isinstance(members, list) or not members:
        raise ValueError(f"an ensemble config is {{'members': [{{'name', 'config'}}, ...], 'weights': [...]}}; "
                         f"got keys {sorted(config)}")
    built = []
    for i, member in enumerate(members):
        if not isinstance(member, Mapping) or member.get("name") not in POSE_MODELS:
            raise ValueError(f"ensemble member {i} must name a pose model ({', '.join(POSE_MODELS)}), got {member!r}")
        built.append(build_pose_model(member["name"], dict(member.get("config") or {}), spec, heads))
    return EnsembleClassifier(built, config.get("weights"))


def model_config_from_params(name: str, section: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor keywords of model ``name`` from its ``models.<name>`` params section.

    YAML lists (``hand_widths: [16, 32, 64]``, ``blocks: [conv, attn]``) become tuples. Configs
    recorded before params took lists spell ``hand_widths`` as a comma-separated string; it is
    read the same way.
    """
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
    if isinstance(config.get("hand_widths"), str):
        config["hand_widths"] = tuple(int(w) for w in config["hand_widths"].split(",") if w.strip())
    return config


def build_clip_model(name: str, config: Mapping[str, Any] | None, spec: Any, heads: HeadsConfig) -> nn.Module:
    """:func:`build_model` for an RGB or hand-crop model whose inputs ``spec`` prepares.

    ``spec`` is a :class:`sltrain.clip_inputs.ClipInputSpec`: ``rgb_s3d`` needs an ``rgb`` spec,
    ``vtn`` a ``hands`` spec (its pose input has the spec's points and channels, and attention
    covers ``num_frames``).

    Raises
    ------
    ValueError
        A pose model, or a model that does not read this kind of input.
    """
    wanted = {n: entry.inputs for n, entry in MODELS.items() if entry.inputs != "pose"}
    if name not in wanted:
        raise ValueError(f"model {name!r} is not an RGB or hand-crop model (those are: {', '.join(wanted)})")
    if spec.kind != wanted[name]:
        raise ValueError(f"model {name!r} reads {wanted[name]!r} inputs, the input spec is {spec.kind!r}")
    config = model_config_from_params(name, config or {})
    if wanted[name] == "hands":  # hand crops with the keypoints of the same frames
        pose = spec.pose_spec
        config.setdefault("max_len", max(spec.num_frames, 2))
        return build_model(name, config, num_points=pose.num_points, in_channels=pose.num_channels, heads=heads)
    return build_model(name, config, num_points=0, in_channels=3, heads=heads)


def _require_edges(edges: Sequence[tuple[int, int]] | None, name: str = "stgcn") -> Sequence[tuple[int, int]]:
    if edges is None:
        raise ValueError(f"model {name!r} needs edges (e.g. sltrain.models.stgcn.skeleton_graph(skeleton).input_edges())")
    return edges


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
