"""Export to ONNX + OpenVINO IR: layout, embedded metadata, parity on real keypoints, failures leave nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import params_flags, shared_data_dir
from sltrain.export import (ExportError, ExportParityError, compare_backend, export_model, synthetic_parity_clips,
                            write_untrained_checkpoint)
from sltrain.inputs import InputSpec, clip_features

CLASSES = ["book", "drink", "computer", "before", "chair", "go", "clothes", "who"]
TINY = {"d_model": 32, "num_layers": 1, "num_heads": 2}


def real_feature_clips(spec: InputSpec) -> list[np.ndarray]:
    """Model inputs from real MediaPipe Holistic keypoints (an AUTSL clip's .pose file), several lengths."""
    from sldata.pose.poseformat import read_pose_file

    kp, _, _, width, height = read_pose_file(shared_data_dir() / "autsl_sample" / "signer0_sample1000.holistic.pose",
                                             face=spec.skeleton_obj.face)
    ranges = ((0, 43), (0, 12), (10, 40), (20, 43))
    return [clip_features(kp[start:stop], width, height, spec) for start, stop in ranges]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, InputSpec]:
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    spec = write_untrained_checkpoint(path, CLASSES, model_config=TINY, num_frames=32)
    return path, spec


@pytest.fixture(scope="module")
def exported(checkpoint: tuple[Path, InputSpec], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path, spec = checkpoint
    out = tmp_path_factory.mktemp("repo")
    result = export_model(path, out, parity_clips=real_feature_clips(spec))
    return out, result


def test_layout_and_metadata(checkpoint: tuple[Path, InputSpec], exported: tuple[Path, dict]) -> None:
    ckpt, spec = checkpoint
    out, result = exported
    version = out / "sign-recognizer" / "1"
    assert Path(result["path"]) == version
    assert sorted(p.name for p in version.iterdir()) == ["MODEL_CARD.md", "model.bin", "model.onnx", "model.xml",
                                                         "parity.json", "sltrain.json"]
    assert [p.name for p in (out / "sign-recognizer").iterdir()] == ["1"]  # no temporary folder left
    meta = json.loads((version / "sltrain.json").read_text())
    assert meta["label_map"]["classes"] == CLASSES
    assert InputSpec.from_dict(meta["input_spec"]) == spec
    assert meta["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert meta["inputs"]["pose"]["shape"] == [1, 32, spec.num_points, spec.num_channels]
    assert meta["outputs"] == ["gloss"] and meta["precision"] == "f32"

    import openvino as ov

    model = ov.Core().read_model(version / "model.xml")  # the IR alone carries everything
    for key, value in meta.items():
        assert json.loads(model.get_rt_info(["sltrain", key]).astype(str)) == value
    assert {i.get_any_name(): list(i.get_shape()) for i in model.inputs} == {
        "pose": [1, 32, spec.num_points, spec.num_channels], "mask": [1, 32]}


def test_parity_on_real_keypoints(exported: tuple[Path, dict]) -> None:
    out, result = exported
    report = json.loads((out / "sign-recognizer" / "1" / "parity.json").read_text())
    assert report == result["parity"]
    assert report["passed"] and report["inputs"] == "given" and report["num_clips"] == 4
    assert set(report["backends"]) == {"openvino_ir", "onnx"}
    for backend in report["backends"].values():
        assert backend["max_abs_diff"] <= 1e-4 and backend["top1_agreement"] == 1.0 and backend["passed"]


def test_onnx_file_is_valid(exported: tuple[Path, dict]) -> None:
    import onnx

    out, _ = exported
    model = onnx.load(str(out / "sign-recognizer" / "1" / "model.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["pose", "mask"]
    assert [o.name for o in model.graph.output] == ["gloss"]


def test_fp16_export_through_the_cli(checkpoint: tuple[Path, InputSpec], exported: tuple[Path, dict],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from sltrain.cli import main

    ckpt, _ = checkpoint
    out, _ = exported
    assert main(["export", str(ckpt), *params_flags("export.fp16=true"), "--out", str(out), "--version", "2"]) == 0
    assert "parity openvino_ir" in capsys.readouterr().out
    v1, v2 = out / "sign-recognizer" / "1", out / "sign-recognizer" / "2"
    meta = json.loads((v2 / "sltrain.json").read_text())
    parity = json.loads((v2 / "parity.json").read_text())
    assert meta["precision"] == "f16" and parity["inputs"] == "synthetic" and parity["passed"]
    assert parity["backends"]["openvino_ir"]["tolerance"] == 1e-2
    assert parity["backends"]["onnx"]["tolerance"] == 1e-4  # the ONNX file stays FP32
    assert (v2 / "model.bin").stat().st_size < 0.6 * (v1 / "model.bin").stat().st_size
    # an existing version is never replaced silently
    assert main(["export", str(ckpt), *params_flags(), "--out", str(out), "--version", "2"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_parity_failure_leaves_nothing(checkpoint: tuple[Path, InputSpec], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sltrain.export as export

    real_runner = export.openvino_runner

    def drifting_runner(model: object, device: str = "CPU"):  # noqa: ANN202 - a Runner
        run = real_runner(model, device)
        return lambda pose, mask: run(pose, mask) + np.linspace(0, 1e-3, len(CLASSES), dtype=np.float32)

    monkeypatch.setattr(export, "openvino_runner", drifting_runner)
    ckpt, _ = checkpoint
    with pytest.raises(ExportParityError, match="parity check failed") as info:
        export_model(ckpt, tmp_path, version=3)
    assert not info.value.report["passed"]
    assert info.value.report["backends"]["openvino_ir"]["max_abs_diff"] > 1e-4
    assert list((tmp_path / "sign-recognizer").iterdir()) == []  # no version folder, no temporary folder


def test_refusals(checkpoint: tuple[Path, InputSpec], tmp_path: Path) -> None:
    ckpt, _ = checkpoint
    with pytest.raises(ExportError, match="positive integer"):
        export_model(ckpt, tmp_path, version=0)
    with pytest.raises(ExportError, match="folder name"):
        export_model(ckpt, tmp_path, name="../escape")
    with pytest.raises(ExportError, match="checkpoint not found"):
        export_model(tmp_path / "absent.pt", tmp_path)
    with pytest.raises(ExportError, match="expected"):
        export_model(ckpt, tmp_path, parity_clips=[np.zeros((4, 3, 2), np.float32)])
    with pytest.raises(ExportError, match="fp16 or quantize"):
        export_model(ckpt, tmp_path, quantize=True, fp16=True)
    assert not (tmp_path / "sign-recognizer").exists() or not any((tmp_path / "sign-recognizer").iterdir())


def test_compare_backend_rules() -> None:
    ref = [np.array([[3.0, 1.0, 0.0]]), np.array([[1.0, 1.00001, 0.0]])]
    same = compare_backend(ref, ref, tolerance=1e-4)
    assert same["passed"] and same["max_abs_diff"] == 0 and same["top1_agreement"] == 1.0
    # a flip between logits closer than 2 x tolerance is a near tie, not a failure
    flipped = [ref[0], np.array([[1.00002, 1.00001, 0.0]])]
    r = compare_backend(ref, flipped, tolerance=1e-4)
    assert r["passed"] and r["near_ties"] == 1 and r["top1_agreement"] == 0.5
    # a clear top-1 change fails (its logits differ beyond tolerance too)
    bad = [np.array([[0.0, 3.0, 0.0]]), ref[1]]
    assert not compare_backend(ref, bad, tolerance=1e-4)["passed"]
    # INT8: logits not enforced, top-1 agreement must reach 90 %
    assert compare_backend(ref, [ref[0] + 0.5, ref[1] + 0.5], tolerance=None)["passed"]
    assert not compare_backend(ref, bad, tolerance=None)["passed"]


def test_synthetic_parity_clips_are_deterministic(checkpoint: tuple[Path, InputSpec]) -> None:
    _, spec = checkpoint
    a, b = synthetic_parity_clips(spec), synthetic_parity_clips(spec)
    assert len(a) == 8 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(c.shape[1:] == (spec.num_points, spec.num_channels) and np.isfinite(c).all() for c in a)
    assert min(len(c) for c in a) < spec.num_frames <= max(len(c) for c in a)


def test_int8_export_calibrates_on_given_clips_and_reports_val_accuracy_next_to_fp32(
        checkpoint: tuple[Path, InputSpec], tmp_path: Path) -> None:
    path, spec = checkpoint
    clips = real_feature_clips(spec)
    labels = np.array([0, 1, 0, 1])
    result = export_model(path, tmp_path, quantize=True, parity_clips=clips, calibration_clips=clips * 2,
                          accuracy_clips=(clips, labels))
    acc = result["parity"]["int8_accuracy"]
    assert acc["clips"] == 4 and acc["calibration_clips"] == 8
    assert result["metadata"]["precision"] == "int8"
    from sltrain.export import openvino_runner, top1_of, torch_runner
    from sltrain.checkpoint import load_checkpoint, model_from_checkpoint

    model, _, _ = model_from_checkpoint(load_checkpoint(path))
    assert acc["top1_fp32_torch"] == top1_of(torch_runner(model), clips, labels, spec)
    ir = Path(result["path"]) / "model.xml"
    assert acc["top1_int8_openvino"] == top1_of(openvino_runner(str(ir)), clips, labels, spec)
    assert json.loads((Path(result["path"]) / "parity.json").read_text())["int8_accuracy"] == acc
