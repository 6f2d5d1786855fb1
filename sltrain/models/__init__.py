"""Sign recognition models: pose transformer, ST-GCN, VTN (hands + pose flow), S3D-style RGB CNN.

Every model is a :class:`~sltrain.models.heads.SignClassifier` (``backbone`` -> pooled
``[B, D]`` -> ``heads``) taking a batch dict and returning ``{head name: logits}``; build one by
name with :func:`build_model`.
"""

from sltrain.models.factory import MODEL_NAMES, build_model, config_keys, count_parameters
from sltrain.models.heads import (
    IGNORE_INDEX,
    FreezeSchedule,
    HeadSpec,
    MultiHead,
    SignClassifier,
    masked_mean,
    multi_head_loss,
    parse_heads,
)
from sltrain.models.pose_transformer import PoseTransformer, TemporalTransformer
from sltrain.models.rgb_s3d import RGBS3D, LoadReport, load_pretrained
from sltrain.models.stgcn import STGCN, SkeletonGraph, skeleton_graph
from sltrain.models.vtn import VTN, HandCNN

__all__ = [
    "IGNORE_INDEX", "MODEL_NAMES", "RGBS3D", "STGCN", "VTN", "FreezeSchedule", "HandCNN", "HeadSpec", "LoadReport",
    "MultiHead", "PoseTransformer", "SignClassifier", "SkeletonGraph", "TemporalTransformer", "build_model",
    "config_keys", "count_parameters", "load_pretrained", "masked_mean", "multi_head_loss", "parse_heads",
    "skeleton_graph",
]
