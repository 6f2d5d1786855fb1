"""Shared fixtures: the real data in ../shared/data (or $SLDATA_SHARED) and builders of small inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real-data folder: $SLDATA_SHARED, else ../shared/data beside the checkout."""
    return Path(os.environ.get("SLDATA_SHARED", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_data_dir()
    # CI always has the shared data: a missing folder is a broken setup, never a skip.
    assert (path / "README.md").is_file(), f"real data not found at {path}; set SLDATA_SHARED"
    return path


@pytest.fixture(scope="session")
def msasl_dir(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MS-ASL folder of links to the real files; ASL100_train.json stands in for the absent MSASL_train.json."""
    folder = tmp_path_factory.mktemp("msasl")
    src = shared / "msasl"
    for name in ("MSASL_classes.json", "MSASL_synonym.json", "MSASL_val.json", "MSASL_test.json"):
        (folder / name).symlink_to(src / name)
    (folder / "MSASL_train.json").symlink_to(src / "asl100_full_fields" / "ASL100_train.json")
    return folder


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def wlasl_instance(video_id: str = "00001", **overrides: object) -> dict[str, object]:
    """A valid WLASL v0.3 instance; override fields to make it bad."""
    inst: dict[str, object] = {
        "bbox": [10, 20, 200, 240],
        "fps": 25,
        "frame_end": 60,
        "frame_start": 11,
        "instance_id": 0,
        "signer_id": 7,
        "source": "aslu",
        "split": "train",
        "url": "https://www.youtube.com/watch?v=abcdefghijk",
        "variation_id": 0,
        "video_id": video_id,
    }
    inst.update(overrides)
    return inst


def default_params() -> dict:
    import yaml

    with open(REPO_ROOT / "params.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


# Settings objects have no defaults of their own: tests build them from the committed params,
# overriding what they are about (and saying every value that differs from params.yaml).


def params_section(name: str, **overrides: object) -> dict:
    """Params section ``name`` of the committed params.yaml with ``overrides`` (top-level keys) applied."""
    return {**default_params()[name], **overrides}


def pose_settings(**overrides: object):  # noqa: ANN201 (imports stay lazy: collection stays fast)
    from sldata.pose.extract import PoseSettings

    return PoseSettings.from_dict(params_section("pose", **overrides))


def frame_settings(**overrides: object):  # noqa: ANN201
    from sldata.frames import FrameSettings

    section = params_section("frames", **overrides)
    section.pop("workers")
    return FrameSettings.from_dict(section)


def hand_crop_settings(**overrides: object):  # noqa: ANN201
    from sldata.pose.handcrop_stage import HandCropStageSettings

    return HandCropStageSettings.from_dict(params_section("hand_crops", **overrides))


def feature_config(**overrides: object):  # noqa: ANN201
    from sltrain.train import FeatureConfig

    return FeatureConfig.from_params(params_section("features", **overrides))


def params_flags(*overrides: str) -> list[str]:
    """``--params <committed params.yaml>`` plus ``--set`` for each ``key=value`` of ``overrides``."""
    flags = ["--params", str(REPO_ROOT / "params.yaml")]
    for item in overrides:
        flags += ["--set", item]
    return flags
