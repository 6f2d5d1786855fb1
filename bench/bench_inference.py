"""Inference speed: OpenVINO vs PyTorch eager classifier, end-to-end ``predict``, sustained streaming rate.

In one run, with the same model and the same inputs:

(a) classifier only, batch 1, per clip: latency (median, p90) and sequential throughput of the
    PyTorch eager model and of its exported OpenVINO IR (f32 precision hint), both at 1 thread
    and at all CPUs (``--threads``), the ratio PyTorch / OpenVINO latency (target >= 2x), plus
    OpenVINO's throughput mode (async requests);
(b) end-to-end ``Recognizer.recognize_video`` on a real clip of about 2 seconds, split into
    decode (PyAV), pose, features and classifier, once per pose engine of ``--engines``
    (default: the model's own, then ``openvino`` with params.yaml's ``pose.openvino`` options when
    the model's is ``mediapipe``; the same frames and settings otherwise);
(c) the frame rate :func:`sltrain.stream.classify_windows` sustains over a few real clips
    played back to back (decode + Holistic per frame + a classification every ``stride``).

The model is the default ``pose_transformer`` of :mod:`sltrain.models.factory` (untrained,
100 classes, 64 frames x 57 points x 9 channels: the default input spec), or ``--checkpoint``.
Clips come from ``$SLDATA_SHARED/wlasl100_clips/videos`` (default ``../shared/data``). Nothing
is written outside a temporary folder. Usage::

    python bench/bench_inference.py --iterations 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import av
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from sltrain.inputs import pad_batch  # noqa: E402


def shared_data_dir() -> Path:
    """The real-data folder: $SLDATA_SHARED, else ../shared/data beside the checkout."""
    return Path(os.environ.get("SLDATA_SHARED", REPO_ROOT.parent / "shared" / "data")).resolve()


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return int(c.streams.video[0].frames or 0)


def pick_clips(video_dir: Path, frames: int, count: int) -> list[Path]:
    """``count`` clips whose frame count is closest to ``frames`` (scanning the first 300 by name)."""
    paths = sorted(video_dir.glob("*.mp4"))[:300]
    if not paths:
        raise SystemExit(f"no clips in {video_dir}; set SLDATA_SHARED")
    return sorted(paths, key=lambda p: (abs(frame_count(p) - frames), p.name))[:count]


def timed(fn, inputs: list[tuple[np.ndarray, np.ndarray]], iterations: int, warmup: int) -> list[float]:  # noqa: ANN001
    for i in range(warmup):
        fn(*inputs[i % len(inputs)])
    out = []
    for i in range(iterations):
        pose, mask = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        fn(pose, mask)
        out.append(time.perf_counter() - t0)
    return out


def ov_throughput(xml: Path, inputs: list[tuple[np.ndarray, np.ndarray]], seconds: float) -> tuple[float, int]:
    """Clips/s of OpenVINO in THROUGHPUT mode with an async queue; and the number of requests used."""
    import openvino as ov

    from sltrain.predict import F32_CONFIG

    compiled = ov.Core().compile_model(str(xml), "CPU", {**F32_CONFIG, "PERFORMANCE_HINT": "THROUGHPUT"})
    n_req = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    queue = ov.AsyncInferQueue(compiled, n_req)
    feeds = [{"pose": p, "mask": m.astype(np.float32)} for p, m in inputs]
    for i in range(n_req * 2):
        queue.start_async(feeds[i % len(feeds)])
    queue.wait_all()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        queue.start_async(feeds[done % len(feeds)])
        done += 1
    queue.wait_all()
    return done / (time.perf_counter() - t0), n_req


def openvino_runner(xml: Path, threads: int):  # noqa: ANN201
    """Gloss logits of the IR, f32, on ``threads`` CPU threads (latency mode)."""
    import openvino as ov

    from sltrain.predict import F32_CONFIG

    compiled = ov.Core().compile_model(str(xml), "CPU", {**F32_CONFIG, "INFERENCE_NUM_THREADS": threads,
                                                         "PERFORMANCE_HINT": "LATENCY"})
    request, output = compiled.create_infer_request(), compiled.output("gloss")
    return lambda pose, mask: request.infer({"pose": pose, "mask": mask})[output]


def summary(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {"median_ms": statistics.median(ms), "p90_ms": ms[int(0.9 * (len(ms) - 1))],
            "clips_per_s": len(ms) / (sum(ms) / 1000)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="sltrain checkpoint to benchmark (default: an untrained default pose_transformer)")
    parser.add_argument("--iterations", type=int, default=200, help="timed classifier runs per backend (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    parser.add_argument("--throughput-seconds", type=float, default=5.0,
                        help="duration of the OpenVINO throughput-mode run (default 5)")
    parser.add_argument("--e2e-runs", type=int, default=3, help="end-to-end predict runs on the 2 s clip (default 3)")
    parser.add_argument("--stream-clips", type=int, default=4,
                        help="real clips played back to back for (c) (default 4)")
    parser.add_argument("--stride", type=int, default=8, help="stream classification stride (default 8)")
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                        help="comma-separated thread counts for (a), both backends (default 1,<CPUs>)")
    parser.add_argument("--skip-video", action="store_true", help="only (a): no decoding or MediaPipe")
    parser.add_argument("--engines", default=None,
                        help="pose engines of (b), comma-separated: mediapipe, openvino (default: the model's, "
                             "and openvino beside mediapipe)")
    args = parser.parse_args(argv)

    import openvino as ov
    import torch

    from sltrain.checkpoint import load_checkpoint, model_from_checkpoint
    from sltrain.export import export_model, synthetic_parity_clips, torch_runner, write_untrained_checkpoint
    from sltrain.predict import Recognizer
    from sldata.params import load_params
    from sldata.pose.estimator import make_estimator
    from sldata.pose.extract import OpenVinoOptions
    from sltrain.stream import classify_windows, open_source

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), openvino {ov.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp_name:
        tmp = Path(tmp_name)
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = tmp / "model.pt"
            write_untrained_checkpoint(ckpt, [f"gloss{i:03d}" for i in range(100)])
        model, spec, classes = model_from_checkpoint(load_checkpoint(ckpt))
        params = sum(p.numel() for p in model.parameters())
        t0 = time.perf_counter()
        result = export_model(ckpt, tmp / "repo")
        xml = Path(result["path"]) / "model.xml"
        model_name = load_checkpoint(ckpt)["model"]["name"]
        print(f"model: {model_name} {params / 1e6:.2f} M parameters, {len(classes)} classes, "
              f"input [1, {spec.num_frames}, {spec.num_points}, {spec.num_channels}]; exported in "
              f"{time.perf_counter() - t0:.1f} s, parity max|diff| "
              f"{result['parity']['backends']['openvino_ir']['max_abs_diff']:.2g}")

        # (a) classifier only
        inputs = [pad_batch([c[: spec.num_frames]], spec.num_frames) for c in synthetic_parity_clips(spec, 16)]
        inputs = [(p, m.astype(np.float32)) for p, m in inputs]
        threads = sorted({int(t) for t in args.threads.split(",")})
        print(f"\n(a) classifier, batch 1, {args.iterations} clips each (same {len(inputs)} inputs cycled)")
        print(f"{'':24s}{'median ms':>10s}{'p90 ms':>9s}{'clips/s':>9s}")
        best: dict[str, float] = {}
        for t in threads:
            torch.set_num_threads(t)
            runners = {f"pytorch eager, {t} thr": ("pytorch", torch_runner(model)),
                       f"openvino IR, {t} thr": ("openvino", openvino_runner(str(xml), threads=t))}
            medians = {}
            for name, (backend, run) in runners.items():
                s = summary(timed(run, inputs, args.iterations, args.warmup))
                medians[backend] = s["median_ms"]
                best[backend] = min(best.get(backend, float("inf")), s["median_ms"])
                print(f"{name:24s}{s['median_ms']:10.2f}{s['p90_ms']:9.2f}{s['clips_per_s']:9.0f}")
            print(f"{'':24s}OpenVINO speed-up at {t} thread(s): {medians['pytorch'] / medians['openvino']:.2f}x")
        ratio = best["pytorch"] / best["openvino"]
        print(f"OpenVINO speed-up, best vs best median latency: {ratio:.3f}x (target >= 2x): "
              f"{'OK' if ratio >= 2 else 'BELOW TARGET'}")
        tput, n_req = ov_throughput(xml, inputs, args.throughput_seconds)
        print(f"OpenVINO throughput mode ({n_req} async requests): {tput:.0f} clips/s")
        if args.skip_video:
            return 0

        video_dir = shared_data_dir() / "wlasl100_clips" / "videos"
        recognizer = Recognizer.from_model_dir(xml)
        recognizer.estimator()  # MediaPipe import outside the timings

        # (b) end to end on a ~2 s clip, per pose engine
        clip = pick_clips(video_dir, 50, 1)[0]
        own = recognizer.spec.estimator_settings()
        engines = args.engines.split(",") if args.engines else list(dict.fromkeys([own["estimator"], "openvino"]))
        for engine in engines:
            if engine != own["estimator"]:  # the same keypoint settings from another engine
                options = load_params(REPO_ROOT / "params.yaml")["pose"]["openvino"] if engine == "openvino" else {}
                engine_only = {"estimator", *(f.name for f in fields(OpenVinoOptions))}
                common = {k: v for k, v in own.items() if k not in engine_only}
                recognizer.use_estimator(make_estimator(engine, **common, **options))
            else:
                recognizer.use_estimator(None)
            recognizer.estimator()  # models loaded outside the timings
            recognizer.recognize_video(clip)  # warm
            runs = [recognizer.recognize_video(clip) for _ in range(args.e2e_runs)]
            p = runs[0]
            print(f"\n(b) end-to-end predict, pose engine {engine}, {clip.name}: {p.num_frames} frames, "
                  f"{p.width}x{p.height}, {p.num_frames / (p.fps or 25):.2f} s of video; median of {len(runs)} runs")
            for key in ("decode", "pose", "features", "classify", "total"):
                med = statistics.median(r.timings[key] for r in runs)
                print(f"  {key:9s}{med * 1000:9.1f} ms" + (f"   ({med / p.num_frames * 1000:.1f} ms/frame)"
                                                             if key in ("decode", "pose") else ""))
            cpu = time.process_time()
            recognizer.recognize_video(clip)
            print(f"  CPU      {1000 * (time.process_time() - cpu):9.1f} ms (one more run, every thread of this process)")
        recognizer.use_estimator(None)

        # (c) streaming
        clips = pick_clips(video_dir, 60, args.stream_clips)

        def frames():  # noqa: ANN202
            t = 0.0
            for path in clips:
                for _, frame in open_source(str(path)):
                    yield t, frame
                    t += 1 / 25

        s: dict[str, float] = {}
        windows = sum(1 for _ in classify_windows(recognizer, frames(), stride=args.stride, stats=s))
        fps = s["frames"] / s["seconds"]
        print(f"\n(c) streaming over {len(clips)} clips back to back: {s['frames']:.0f} frames, {windows} windows "
              f"(window {spec.num_frames}, stride {args.stride}) in {s['seconds']:.1f} s = {fps:.1f} frames/s "
              f"sustained ({fps / 25:.2f}x real time at 25 fps); pose {s['pose_s'] / s['frames'] * 1000:.1f} ms/frame, "
              f"classifier {s['classify_s'] / max(windows, 1) * 1000:.1f} ms/window")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
