"""One registry each for pose estimators, annotation readers and models: a plugin is one module plus
one registry line (and its schema section). The plugins here live in ``tests/plugins/``; each test
adds its registry line (``monkeypatch.setitem``) and runs the plugin through the real stage code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import default_params, pose_settings
from sldata.manifest import READERS, build_manifest, manifest_table
from sldata.params import ParamsError, validate_params
from sldata.pose.estimator import ESTIMATORS, EstimatorEntry, make_estimator
from sldata.pose.extract import extract_pose_shard
from sldata.pose.store import read_pose_shard
from sldata.subsets import build_subset
from sltrain.models.factory import MODELS, ModelEntry, build_pose_model, config_keys
from sltrain.train import TrainConfig, train
from test_train import FEATURES, config, packed  # noqa: F401  (packed is a fixture)


def test_a_pose_estimator_is_one_module_and_one_registry_line(shared: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ESTIMATORS, "toy", EstimatorEntry("plugins.toy_estimator:ToyEstimator",
                                                          "plugins.toy_estimator:toy_skeleton"))
    assert make_estimator("toy", face="none", model_complexity=1).skeleton.estimator == "toy"
    with pytest.raises(ValueError, match="the toy pose estimator takes no options"):
        make_estimator("toy", threads=1)
    # The pose stage runs it like any other engine.
    clip = tmp_path / "05736.mp4"
    shutil.copy(shared / "wlasl100_clips" / "videos" / "05736.mp4", clip)
    table = pd.DataFrame([("wlasl-05736", str(clip), "usable")], columns=["sample_id", "clip_path", "status"])
    out = tmp_path / "pose" / "shard-000.parquet"
    summary = extract_pose_shard(table, out, pose_settings(estimator="toy", workers=1), progress=False)
    assert summary["by_status"] == {"ok": 1}
    clips, keypoints, skeleton = read_pose_shard(out)
    assert skeleton.estimator == "toy" and np.all(keypoints["wlasl-05736"][..., 3] == 1.0)
    # params name it only once the schema's enum does (the registry's third line).
    params = default_params()
    params["pose"]["estimator"] = "toy"
    with pytest.raises(ParamsError, match="pose.estimator: 'toy' is not one of"):
        validate_params(params)


def test_an_annotation_reader_is_one_module_and_one_registry_line(shared: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(READERS, "toy", "plugins.toy_reader:read_source")
    entries = json.loads((shared / "wlasl" / "asl100.json").read_text())[:2]
    (tmp_path / "toy.json").write_text(json.dumps(entries))
    sources = default_params()["sources"]
    sources["wlasl"]["enabled"] = False
    sources["toy"] = {"enabled": True, "file": str(tmp_path / "toy.json")}
    result = build_manifest(sources, tmp_path / "raw")
    assert list(result.classes) == ["toy"] and result.classes["toy"] == [e["gloss"] for e in entries]
    manifest = manifest_table(result).to_pandas(types_mapper=pd.ArrowDtype)
    assert set(manifest["dataset"]) == {"toy"} and manifest["sample_id"].str.startswith("toy-").all()
    subset = {**default_params()["subset"], "dataset": "toy", "k": 1}
    samples, label_map, _ = build_subset(manifest, result.classes, subset)
    assert label_map.glosses == [entries[0]["gloss"]] and len(samples) > 0


def test_a_model_is_one_module_and_one_registry_line(packed: tuple[Path, Path], tmp_path: Path,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from plugins.toy_model import ToyMean

    monkeypatch.setitem(MODELS, "toy_mean", ModelEntry(ToyMean, "pose"))
    assert config_keys("toy_mean") == ("width",)
    pack, labels = packed
    cfg = config(model="toy_mean", model_config={"width": 4}, epochs=1, augment={})
    # the trainer builds it by name, as train.model: toy_mean would (with a models.toy_mean section)
    built = TrainConfig.from_params({**default_params()["train"], "model": "toy_mean", "ensemble": {}},
                                    {"toy_mean": {"width": 4}})
    assert built.model == "toy_mean" and built.model_config == {"width": 4}
    metrics = train(pack, labels, tmp_path / "out", tmp_path / "work", cfg, FEATURES, progress=False)
    assert metrics["epochs_run"] == 1
    model = build_pose_model("toy_mean", {"width": 4}, _spec(pack), {"gloss": {"num_classes": 3, "weight": 1.0}})
    assert isinstance(model, ToyMean)


def _spec(pack: Path):  # noqa: ANN202
    from sldata.pose.store import load_packed

    _, _, meta = load_packed(pack)
    return FEATURES.input_spec(meta["skeleton"], meta.get("recording"))
