"""Build a model by name from a configuration mapping (e.g. a ``model`` section of ``params.yaml``).

``config`` holds the model's keyword-only constructor arguments (``d_model``, ``channels``, ...);
the data-dependent arguments (``num_points``, ``in_channels``, ``heads``, ``edges``) are passed
separately. Unknown names and keys raise ``ValueError`` listing the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from sltrain.inputs import InputSpec
from sltrain.models.heads import HeadsConfig
from sltrain.models.pose_transformer import PoseTransformer
from sltrain.models.rgb_s3d import RGBS3D
from sltrain.models.stgcn import STGCN, skeleton_graph
from sltrain.models.vtn import VTN

MODELS: dict[str, type[nn.Module]] = {
    "pose_transformer": PoseTransformer,
    "stgcn": STGCN,
    "vtn": VTN,
    "rgb_s3d": RGBS3D,
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def config_keys(name: str) -> tuple[str, ...]:
    """The ``config`` keys model ``name`` accepts (its keyword-only constructor arguments)."""
    cls = _model_class(name)
    return tuple(p.name for p in inspect.signature(cls.__init__).parameters.values()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    return MODELS[name]


def build_model(name: str, config: Mapping[str, Any] | None, *, num_points: int, in_channels: int,
                heads: HeadsConfig, edges: Sequence[tuple[int, int]] | None = None) -> nn.Module:
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

    Raises
    ------
    ValueError
        For an unknown name or config key, or ``stgcn`` without edges.
    """
    _model_class(name)
    config = dict(config or {})
    allowed = config_keys(name)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r}: unknown config key(s) {unknown}; valid keys: {', '.join(allowed)}")
    if name == "stgcn":
        return STGCN(num_points, in_channels, heads, _require_edges(edges), **config)
    if name == "rgb_s3d":
        return RGBS3D(heads, **config)
    if name == "vtn":
        return VTN(num_points, in_channels, heads, **config)
    return PoseTransformer(num_points, in_channels, heads, **config)


def build_pose_model(name: str, config: Mapping[str, Any] | None, spec: InputSpec, heads: HeadsConfig) -> nn.Module:
    """:func:`build_model` for inputs prepared by ``spec`` (``[B, T, spec.num_points, spec.num_channels]``).

    ``stgcn``'s graph is :func:`skeleton_graph` on the spec's points (skeleton edges and each
    hand's wrist linked to the body's wrist), in the spec's point order.
    """
    edges = None
    if name == "stgcn":
        edges = skeleton_graph(spec.skeleton_obj, list(spec.point_indices), link_head=False).edges
    return build_model(name, config, num_points=spec.num_points, in_channels=spec.num_channels, heads=heads,
                       edges=edges)


def model_config_from_params(name: str, section: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor keywords of model ``name`` from its ``models.<name>`` params section.

    Params cannot template lists, so list-valued settings are comma-separated strings there
    (``hand_widths: "16,32,64,128"``); they become tuples of ints here.
    """
    config = dict(section)
    if name == "vtn" and isinstance(config.get("hand_widths"), str):
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
    wanted = {"rgb_s3d": "rgb", "vtn": "hands"}
    if name not in wanted:
        raise ValueError(f"model {name!r} is not an RGB or hand-crop model (those are: {', '.join(wanted)})")
    if spec.kind != wanted[name]:
        raise ValueError(f"model {name!r} reads {wanted[name]!r} inputs, the input spec is {spec.kind!r}")
    config = model_config_from_params(name, config or {})
    if name == "vtn":
        pose = spec.pose_spec
        config.setdefault("max_len", max(spec.num_frames, 2))
        return build_model(name, config, num_points=pose.num_points, in_channels=pose.num_channels, heads=heads)
    return build_model(name, config, num_points=0, in_channels=3, heads=heads)


def _require_edges(edges: Sequence[tuple[int, int]] | None) -> Sequence[tuple[int, int]]:
    if edges is None:
        raise ValueError("model 'stgcn' needs edges (e.g. sltrain.models.stgcn.skeleton_graph(skeleton).input_edges())")
    return edges


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
