"""Inference with an exported model: keypoints and real videos to top-5 glosses, no torch, streaming windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import REPO_ROOT, shared_data_dir
from sltrain.export import export_model, write_untrained_checkpoint
from sltrain.predict import ModelDirError, PredictError, PredictReason, Recognizer, main_predict, softmax
from sltrain.stream import WindowResult, classify_windows, detections, main_stream, open_source

CLASSES = ["book", "drink", "computer", "before", "chair", "go", "clothes", "who"]
CLIPS = ("32146", "00618")  # two of the shortest WLASL100 clips (24 frames each, 256x256, 25 fps)


def real_clip(video_id: str) -> Path:
    return shared_data_dir() / "wlasl100_clips" / "videos" / f"{video_id}.mp4"


def real_keypoints(face: str) -> tuple[np.ndarray, int, int]:
    from sldata.pose.poseformat import read_pose_file

    kp, _, _, width, height = read_pose_file(shared_data_dir() / "autsl_sample" / "signer0_sample1000.holistic.pose",
                                             face=face)
    return kp, width, height


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """Encode RGB frames as H.264 MP4."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("predict")
    write_untrained_checkpoint(tmp / "model.pt", CLASSES, model_config={"d_model": 32, "num_layers": 1, "num_heads": 2},
                               num_frames=32)
    export_model(tmp / "model.pt", tmp / "repo")
    return tmp / "repo" / "sign-recognizer"


@pytest.fixture(scope="module")
def recognizer(model_dir: Path) -> Recognizer:
    return Recognizer.from_model_dir(model_dir)


def test_model_folder_forms(model_dir: Path, recognizer: Recognizer, tmp_path: Path) -> None:
    assert recognizer.path == model_dir / "1" / "model.xml"  # highest (only) version of the model folder
    assert recognizer.classes == CLASSES and recognizer.spec.num_frames == 32 and recognizer.version == 1
    xml = model_dir / "1" / "model.xml"
    assert Recognizer.from_model_dir(model_dir / "1").path == Recognizer.from_model_dir(xml).path == xml
    with pytest.raises(ModelDirError, match="no model.xml"):
        Recognizer.from_model_dir(tmp_path)
    (tmp_path / "model.xml").write_text("<not a model/>")
    with pytest.raises(ModelDirError, match=str(tmp_path / "model.xml")):
        Recognizer.from_model_dir(tmp_path)


def test_recognize_keypoints(recognizer: Recognizer) -> None:
    kp, width, height = real_keypoints(recognizer.spec.skeleton_obj.face)
    top = recognizer.recognize_keypoints(kp, width, height)
    assert len(top) == 5 and all(g in CLASSES for g, _ in top)
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-9
    from sltrain.inputs import clip_features

    probs = softmax(recognizer.logits(clip_features(kp, width, height, recognizer.spec)))
    assert top[0] == (CLASSES[int(np.argmax(probs))], float(probs.max()))


def test_another_pose_engine_for_the_same_model(recognizer: Recognizer) -> None:
    """``use_estimator``: the same model's predictions from another engine's keypoints, and back."""
    from sldata.pose.estimator import make_estimator

    settings = recognizer.spec.estimator_settings()
    recorded = recognizer.estimator()
    assert recorded.skeleton.estimator == {"openvino": "openvino-holistic", "mediapipe": "mediapipe-holistic"}[
        settings["estimator"]]
    other = make_estimator("mediapipe" if settings["estimator"] == "openvino" else "openvino", face=settings["face"])
    recognizer.use_estimator(other)
    try:
        assert recognizer.estimator() is other
        clip = recognizer.video_keypoints(real_clip(CLIPS[0]))
        assert clip.keypoints.shape[1] == recognizer.spec.skeleton_obj.num_points
        wrong = make_estimator("openvino", face="full" if settings["face"] != "full" else "none")
        with pytest.raises(ValueError, match="not the model's"):
            recognizer.use_estimator(wrong)
        assert recognizer.estimator() is other  # a refused estimator changes nothing
    finally:
        recognizer.use_estimator(None)
    rebuilt = recognizer.estimator()
    assert rebuilt is not other and type(rebuilt) is type(recorded)


def test_predict_without_torch(model_dir: Path, recognizer: Recognizer, tmp_path: Path) -> None:
    kp, width, height = real_keypoints(recognizer.spec.skeleton_obj.face)
    np.save(tmp_path / "kp.npy", kp)
    code = (
        "import json, sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now fails\n"
        "import numpy as np\n"
        "from sltrain.predict import Recognizer\n"
        "import sltrain.stream, sltrain.serve\n"
        f"r = Recognizer.from_model_dir({str(model_dir)!r})\n"
        f"top = r.recognize_keypoints(np.load({str(tmp_path / 'kp.npy')!r}), {width}, {height})\n"
        "assert sys.modules['torch'] is None\n"
        "print(json.dumps(top))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    top = json.loads(done.stdout.strip().splitlines()[-1])
    expected = recognizer.recognize_keypoints(kp, width, height)
    assert [g for g, _ in top] == [g for g, _ in expected]
    assert [s for _, s in top] == pytest.approx([s for _, s in expected])


def test_cli_real_video_and_bad_files(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from sltrain.predict import add_predict_arguments

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    parser = argparse.ArgumentParser()
    add_predict_arguments(parser)
    args = parser.parse_args([str(corrupt), str(real_clip(CLIPS[0])), str(tmp_path / "absent.mp4"),
                              "--model", str(model_dir), "--json"])
    assert main_predict(args) == 1  # one file failed, the others were still processed
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line.get("error") for line in lines] == [PredictReason.UNDECODABLE, None, PredictReason.MISSING]
    good = lines[1]
    assert len(good["top"]) == 5 and {t["gloss"] for t in good["top"]} <= set(CLASSES)
    assert good["num_frames"] == 24 and good["width"] == 256 and good["fps"] == 25.0
    assert set(good["timings"]) == {"decode", "pose", "features", "classify", "total"}
    assert "corrupt.mp4: error: undecodable" in captured.err


def test_no_person_and_too_long(recognizer: Recognizer, tmp_path: Path) -> None:
    empty = write_video(tmp_path / "empty.mp4", [np.full((96, 96, 3), 128, np.uint8)] * 8)
    with pytest.raises(PredictError) as info:
        recognizer.recognize_video(empty)
    assert info.value.reason == PredictReason.NO_PERSON and "8 frames" in info.value.detail
    with pytest.raises(PredictError) as info:  # refused from the container's duration, before decoding
        recognizer.recognize_video(real_clip(CLIPS[0]), max_seconds=0.5)
    assert info.value.reason == PredictReason.TOO_LONG


# --------------------------------------------------------------------------- streaming


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """Two real clips one after the other, re-encoded into one video."""
    frames = [f for video_id in CLIPS for f in decode(real_clip(video_id))]
    return write_video(tmp_path_factory.mktemp("stream") / "two_signs.mp4", frames), len(frames)


@pytest.fixture(scope="module")
def windows(recognizer: Recognizer, long_video: tuple[Path, int]) -> tuple[list[WindowResult], dict[str, float]]:
    stats: dict[str, float] = {}
    path, _ = long_video
    return list(classify_windows(recognizer, open_source(str(path)), window=16, stride=8, stats=stats)), stats


def test_stream_windows(windows: tuple[list[WindowResult], dict[str, float]], long_video: tuple[Path, int]) -> None:
    results, stats = windows
    _, n = long_video
    assert n == 48 and stats["frames"] == n
    assert len(results) == 1 + (n - 16) // 8
    assert [r.frame_index for r in results] == list(range(15, n, 8))
    assert [r.time_s for r in results] == pytest.approx([(i) / 25 for i in range(15, n, 8)])
    assert all(r.num_frames == 16 for r in results)
    classified = [r for r in results if r.top]
    assert classified, [r.error for r in results]
    assert all(len(r.top) == 5 for r in classified)


def test_stream_detections(windows: tuple[list[WindowResult], dict[str, float]]) -> None:
    results, _ = windows
    everything = list(detections(results, threshold=0.0))
    assert everything
    times = [d.time_s for d in everything]
    assert times == sorted(set(times))
    assert all(a.gloss != b.gloss for a, b in zip(everything, everything[1:])
               or b.time_s - a.time_s >= 1.0)  # a gloss repeats only after a pause
    assert list(detections(results, threshold=1.01)) == []


def test_detection_rules() -> None:
    def w(t: float, gloss: str, score: float) -> WindowResult:
        return WindowResult(index=0, frame_index=int(t * 25), time_s=t, num_frames=16, top=[(gloss, score)])

    seq = [w(0.3, "book", 0.9), w(0.6, "book", 0.95), w(0.9, "go", 0.4), w(1.2, "go", 0.8), w(1.5, "book", 0.7),
           w(1.8, "book", 0.2), w(2.1, "book", 0.3), w(2.7, "book", 0.9),
           WindowResult(index=0, frame_index=0, time_s=3.0, num_frames=16, top=[], error="no person")]
    got = [(d.time_s, d.gloss) for d in detections(seq, threshold=0.5, gap_s=1.0, min_windows=1)]
    # book (at its best window); go (new gloss); book (new again); book once more after a 1.2 s pause
    assert got == [(0.6, "book"), (1.2, "go"), (1.5, "book"), (2.7, "book")]
    # two agreeing windows make a sign: only the first book run is long enough
    assert [(d.time_s, d.gloss) for d in detections(seq, threshold=0.5, min_windows=2)] == [(0.6, "book")]
    # a doubtful window inside one sign does not split it; a rest (no motion) ends it
    one = [w(0.3, "book", 0.9), w(0.6, "book", 0.3), w(0.9, "book", 0.8), w(1.2, "book", 0.95)]
    assert [(d.time_s, d.gloss, d.score) for d in detections(one, min_windows=1)] == [(1.2, "book", 0.95)]
    resting = [WindowResult(index=0, frame_index=0, time_s=t, num_frames=16, top=[("book", 0.9)], motion=m)
               for t, m in ((0.3, 2.0), (0.6, 2.0), (0.9, 0.1), (1.2, 0.1))]
    assert [d.time_s for d in detections(resting, min_windows=1, min_motion=0.5)] == [0.3]


def test_stream_cli_bad_source(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from sltrain.stream import add_stream_arguments

    parser = argparse.ArgumentParser()
    add_stream_arguments(parser)
    assert main_stream(parser.parse_args([str(tmp_path / "absent.mp4"), "--model", str(model_dir)])) == 1
    assert "missing_file" in capsys.readouterr().err


@pytest.mark.parametrize(("relative", "size", "fps"), [
    ("pose_format/test_video.mp4", (540, 720), 29.9),        # portrait, ~30 fps
    ("wlasl_original_clips/videos/02712.mp4", (1920, 1080), 23.98),  # full HD, 23.98 fps
])
def test_videos_of_other_sizes_and_frame_rates(recognizer: Recognizer, relative: str, size: tuple[int, int],
                                               fps: float) -> None:
    result = recognizer.recognize_video(shared_data_dir() / relative)
    assert (result.width, result.height) == size and result.fps == pytest.approx(fps, abs=0.05)
    assert len(result.top) == 5 and sum(p for _, p in result.top) <= 1.0 + 1e-6
    assert all(a[1] >= b[1] for a, b in zip(result.top, result.top[1:]))
