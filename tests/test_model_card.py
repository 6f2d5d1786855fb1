"""export writes MODEL_CARD.md beside the model: data and its licence, metrics with coverage, intended use."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import params_flags
from sltrain.cli import main
from sltrain.export import export_model, write_untrained_checkpoint
from sltrain.model_card import CARD_FILE, model_card

CLASSES = ["book", "drink", "computer"]
EVALUATION = {  # the shape sltrain.evaluate writes (data/eval/metrics.json), numbers of a WLASL100 run
    "model": "pose_transformer", "trained_epochs": 46,
    "val": {"clips_evaluated": 338, "clips_annotated": 338, "coverage": 1.0, "per_instance_top1": 0.7308,
            "per_instance_top5": 0.8876, "mean_per_class_top1": 0.7302, "top1_ci95": [0.680, 0.775]},
    "test": {"clips_evaluated": 0, "clips_annotated": 258, "coverage": 0.0, "per_instance_top1": None,
             "per_instance_top5": None, "mean_per_class_top1": None, "top1_ci95": [None, None]},
}


def test_export_writes_the_card_with_coverage(tmp_path: Path) -> None:
    write_untrained_checkpoint(tmp_path / "model.pt", CLASSES,
                               model_config={"d_model": 16, "num_layers": 1, "num_heads": 2}, num_frames=16)
    (tmp_path / "eval.json").write_text(json.dumps(EVALUATION))
    assert main(["export", str(tmp_path / "model.pt"), *params_flags(), "--out", str(tmp_path / "repo"),
                 "--eval-metrics", str(tmp_path / "eval.json")]) == 0
    folder = tmp_path / "repo" / "sign-recognizer" / "1"
    card = (folder / CARD_FILE).read_text()
    assert card.startswith("# Model card: sign-recognizer version 1")
    assert "| val | 338 / 338 (100.0%) | 73.1% (68.0-77.5%) | 88.8% | 73.0% |" in card
    assert "| test | 0 / 258 (0.0%) | not measured | | |" in card and "no test number" in card
    assert "book, drink, computer" in card and "**isolated** sign" in card
    meta = json.loads((folder / "sltrain.json").read_text())
    assert meta["checkpoint_sha256"] in card
    parity = json.loads((folder / "parity.json").read_text())
    assert f"largest logit difference {parity['backends']['onnx']['max_abs_diff']:.3g}" in card


def test_card_without_evaluation_says_so_and_names_the_data_licence(tmp_path: Path) -> None:
    write_untrained_checkpoint(tmp_path / "model.pt", CLASSES,
                               model_config={"d_model": 16, "num_layers": 1, "num_heads": 2}, num_frames=16)
    result = export_model(tmp_path / "model.pt", tmp_path / "repo")
    card = (Path(result["path"]) / CARD_FILE).read_text()
    assert "No evaluation was supplied" in card and "| val |" not in card
    wlasl = model_card({**result["metadata"], "label_map": {**result["metadata"]["label_map"], "dataset": "wlasl"}})
    assert "C-UDA" in wlasl and "research and non-commercial use only" in wlasl
    unknown = model_card({**result["metadata"], "label_map": {"dataset": "mine", "classes": CLASSES}})
    assert "unknown: check the data's own terms" in unknown
