"""Pose extraction speed and storage: a plain MediaPipe Holistic loop vs :func:`extract_pose_shard`.

On the same ``N`` real WLASL100 clips (``$SLDATA_SHARED/wlasl100_clips/videos``, default
``../shared/data``), in one run:

(decode) the pose stage's own reader (:class:`sldata.pose.extract.ClipReader`: PyAV, RGB arrays)
    alone, one process, timed per clip: the decoding share of the work;
(a) a plain single-process loop: PyAV decode -> ``mp.solutions.holistic.Holistic(model_complexity=1)``
    built per clip, every frame (what one would write by hand);
(b) ``extract_pose_shard`` with ``workers`` processes (default 2) and ``frame_step=1``: frames/s,
    the ratio (b)/(a) (target >= 1.8x with 2 workers), and the pipeline's own overhead: decoding
    (from the decode pass) and storage (checkpoint parts, merge and final write, timed inside the
    run) as a share of all the work (decode + Holistic + storage, in single-process seconds);
(c) the same with ``frame_step=2`` (the default in params.yaml): keypoint frames/s and clips/s;
(d) storage: bytes per clip of the Parquet shard of (b) against the same keypoints written as
    OpenPose-style JSON, one file per frame (``people[0].pose_keypoints_2d``,
    ``face_keypoints_2d``, ``hand_left_keypoints_2d``, ``hand_right_keypoints_2d``: flattened
    ``[x, y, c, ...]`` in pixels, missing points ``0, 0, 0``, no people when no body), as OpenPose
    writes them (target: Parquet <= 1/5 of the JSON).

Everything is written under a temporary folder and removed. Usage::

    python bench/bench_pose.py                # --clips 40 (about 5 minutes on 2 idle cores)
    python bench/bench_pose.py --clips 6      # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import sldata.pose.extract as extract_mod  # noqa: E402
from sldata.pose.extract import ClipReader, PoseSettings, extract_pose_shard  # noqa: E402
from sldata.pose.store import read_pose_shard  # noqa: E402


def shared_data_dir() -> Path:
    """The real-data folder: $SLDATA_SHARED, else ../shared/data beside the checkout."""
    return Path(os.environ.get("SLDATA_SHARED", REPO_ROOT.parent / "shared" / "data")).resolve()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min), {five:.1f} (5 min)"


# --------------------------------------------------------------------------- (decode), (a)


def decode_pass(paths: list[Path], step: int = 1) -> tuple[int, float, list[float]]:
    """Decode every clip with the pose stage's reader; (kept frames, seconds, seconds per clip)."""
    per_clip = []
    n = 0
    for path in paths:
        t0 = time.perf_counter()
        for _ in ClipReader(path, step):
            n += 1
        per_clip.append(time.perf_counter() - t0)
    return n, sum(per_clip), per_clip


def plain_holistic(paths: list[Path]) -> tuple[int, float, float]:
    """PyAV decode -> Holistic(model_complexity=1) per clip, every frame, one process.

    Returns (frames, wall seconds, CPU seconds of this process, all its threads).
    """
    import mediapipe as mp

    holistic_cls = mp.solutions.holistic.Holistic
    with holistic_cls(model_complexity=1) as warm:  # load the graph once outside the timing, as (b) does
        warm.process(np.zeros((256, 256, 3), dtype=np.uint8))
    n = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    for path in paths:
        with av.open(str(path)) as container, holistic_cls(model_complexity=1) as holistic:
            for frame in container.decode(video=0):
                holistic.process(frame.to_ndarray(format="rgb24"))
                n += 1
    return n, time.perf_counter() - t0, time.process_time() - cpu0


# --------------------------------------------------------------------------- (b), (c)


class StorageTimer:
    """Times the shard's storage work inside ``extract_pose_shard`` (table building and writes)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._saved: dict[str, Any] = {}

    def _wrap(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
        return timed

    def __enter__(self) -> StorageTimer:
        for name in ("records_to_table", "write_table"):
            self._saved[name] = getattr(extract_mod, name)
            setattr(extract_mod, name, self._wrap(self._saved[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._saved.items():
            setattr(extract_mod, name, fn)


def pipeline_run(clips: pd.DataFrame, out: Path, workers: int, frame_step: int) -> dict[str, Any]:
    settings = PoseSettings(workers=workers, frame_step=frame_step, checkpoint_every=25)

    def children_cpu() -> float:  # worker processes, counted once they have been joined
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    with StorageTimer() as timer:
        t0, cpu0, child0 = time.perf_counter(), time.process_time(), children_cpu()
        summary = extract_pose_shard(clips, out, settings, progress=False)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0 + children_cpu() - child0
    return {"frames": summary["frames"], "clips": summary["clips"], "wall": wall, "cpu": cpu, "storage": timer.seconds,
            "by_status": summary["by_status"], "bytes": out.stat().st_size}


# --------------------------------------------------------------------------- (d)


def _flat(points: np.ndarray, width: int, height: int) -> str:
    """OpenPose's flattened ``[x, y, c, ...]`` in pixels as JSON text; a missing point is ``0,0,0``.

    Numbers are written as OpenPose's ``JsonOfstream`` writes them (``std::ostream << float``:
    6 significant digits, ``%g``).
    """
    out: list[str] = []
    for x, y, _, c in points:
        if np.isnan(x) or np.isnan(y):
            out.append("0,0,0")
        else:
            out.append(f"{float(x) * width:.6g},{float(y) * height:.6g},{float(c):.6g}")
    return "[" + ",".join(out) + "]"


def _alternative_sizes(shard: Path) -> dict[str, int]:
    """Bytes of the same keypoints in two other Parquet encodings (for the record, not used by the pipeline).

    ``bss``: lossless float32 with BYTE_STREAM_SPLIT + zstd, one row group; ``int16_xyc``: x, y, c
    only, quantized to 1e-4 (of the frame side / of the confidence range; ~0.03 px at 256 px),
    BYTE_STREAM_SPLIT + zstd.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(shard, columns=["sample_id", "keypoints"])
    col = "keypoints.list.element.list.element"
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", use_dictionary=["sample_id"], column_encoding={col: "BYTE_STREAM_SPLIT"})
    sizes = {"bss": len(buf.getvalue())}
    kp = table.column("keypoints").combine_chunks()
    flat = kp.values.flatten().to_numpy(zero_copy_only=False).reshape(-1, 4)[:, [0, 1, 3]]
    q = np.where(np.isnan(flat), -32768, np.clip(np.round(flat * 10000), -32767, 32767)).astype(np.int32)
    buf = io.BytesIO()
    pq.write_table(pa.table({"k": pa.array(q.reshape(-1))}), buf, compression="zstd", use_dictionary=False,
                   column_encoding={"k": "BYTE_STREAM_SPLIT"})
    sizes["int16_xyc"] = len(buf.getvalue())
    return sizes


def openpose_json_bytes(shard: Path, folder: Path) -> tuple[int, int, int, int]:
    """Write the shard's keypoints as OpenPose JSON files (one per frame); (bytes, disk bytes, files, clips)."""
    clips, keypoints, skeleton = read_pose_shard(shard)
    sizes = dict(zip(clips["sample_id"], zip(clips["width"], clips["height"])))
    slices = {part: skeleton.part_slice(part) for part in skeleton.parts}
    total = disk = files = 0
    checked = False
    folder.mkdir(parents=True, exist_ok=True)
    for sid, kp in keypoints.items():
        w, h = (int(v) for v in sizes[sid])
        for t, frame in enumerate(kp):
            people = ""
            if not np.isnan(frame[slices["body"], 0]).all():
                face = _flat(frame[slices["face"]], w, h) if "face" in slices else "[]"
                people = ('{"person_id":[-1],"pose_keypoints_2d":' + _flat(frame[slices["body"]], w, h)
                          + ',"face_keypoints_2d":' + face
                          + ',"hand_left_keypoints_2d":' + _flat(frame[slices["left_hand"]], w, h)
                          + ',"hand_right_keypoints_2d":' + _flat(frame[slices["right_hand"]], w, h)
                          + ',"pose_keypoints_3d":[],"face_keypoints_3d":[],"hand_left_keypoints_3d":[],'
                          '"hand_right_keypoints_3d":[]}')
            path = folder / f"{sid}_{t:012d}_keypoints.json"
            path.write_text('{"version":1.3,"people":[' + people + "]}")
            if people and not checked:  # the hand-built text is valid JSON with the OpenPose layout
                person = json.loads(path.read_text())["people"][0]
                body = slices["body"]
                assert len(person["pose_keypoints_2d"]) == 3 * (body.stop - body.start)
                checked = True
            st = path.stat()
            total += st.st_size
            disk += st.st_blocks * 512
            files += 1
    return total, disk, files, len(keypoints)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Real data folder: $SLDATA_SHARED (default ../shared/data).")
    parser.add_argument("--clips", type=int, default=40, help="real WLASL100 clips to use (default 40)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of (b) and (c) (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    videos = sorted((shared_data_dir() / "wlasl100_clips" / "videos").glob("*.mp4"))[: args.clips]
    if len(videos) < args.clips:
        parser.error(f"only {len(videos)} clips under {shared_data_dir() / 'wlasl100_clips' / 'videos'}")
    clips = pd.DataFrame({"sample_id": [p.stem for p in videos], "clip_path": [str(p) for p in videos],
                          "status": "usable"})
    print(f"{len(videos)} clips, {os.cpu_count()} CPUs, load average at start {load()}", flush=True)
    res: dict[str, Any] = {"clips": len(videos), "cpus": os.cpu_count(), "load_start": os.getloadavg()[:2]}

    n_dec, dec_s, per_clip = decode_pass(videos)
    print(f"(decode) ClipReader, 1 process: {n_dec} frames in {dec_s:.1f} s ({n_dec / dec_s:.0f} frames/s, "
          f"median {1000 * float(np.median(per_clip)):.0f} ms/clip)", flush=True)
    n_a, a_s, a_cpu = plain_holistic(videos)
    assert n_a == n_dec, (n_a, n_dec)
    print(f"(a) plain Holistic loop, 1 process: {n_a} frames in {a_s:.1f} s = {n_a / a_s:.2f} frames/s; "
          f"{1000 * a_cpu / n_a:.1f} CPU-ms/frame, {a_cpu / a_s:.2f} cores busy", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_pose_") as tmp:
        tmp_path = Path(tmp)
        b = pipeline_run(clips, tmp_path / "step1.parquet", args.workers, 1)
        assert b["frames"] == n_a, (b["frames"], n_a)
        b_fps = b["frames"] / b["wall"]
        holistic_s = a_s - dec_s
        overhead = (dec_s + b["storage"]) / (dec_s + holistic_s + b["storage"])
        print(f"(b) extract_pose_shard, workers={args.workers}, frame_step=1: {b['frames']} frames in {b['wall']:.1f} s "
              f"= {b_fps:.2f} frames/s, {b_fps / (n_a / a_s):.2f}x (a); {1000 * b['cpu'] / b['frames']:.1f} CPU-ms/frame "
              f"({b['cpu'] / b['frames'] / (a_cpu / n_a):.2f}x (a)), {b['cpu'] / b['wall']:.2f} cores busy", flush=True)
        print(f"    overhead: decode {dec_s:.1f} s ({dec_s / a_s:.1%} of (a)), storage {b['storage']:.2f} s "
              f"({b['storage'] / b['wall']:.1%} of (b) wall); decode + storage = {overhead:.1%} of all work "
              f"(Holistic {holistic_s:.1f} s)", flush=True)
        c = pipeline_run(clips, tmp_path / "step2.parquet", args.workers, 2)
        c_fps = c["frames"] / c["wall"]
        print(f"(c) extract_pose_shard, workers={args.workers}, frame_step=2: {c['frames']} keypoint frames in "
              f"{c['wall']:.1f} s = {c_fps:.2f} keypoint frames/s, {len(videos) / c['wall']:.3f} clips/s "
              f"(b: {len(videos) / b['wall']:.3f} clips/s, {b['wall'] / c['wall']:.2f}x faster per clip)", flush=True)
        js, js_disk, js_files, n_clips = openpose_json_bytes(tmp_path / "step1.parquet", tmp_path / "openpose")
        pq_per_clip = b["bytes"] / n_clips
        alt = _alternative_sizes(tmp_path / "step1.parquet")
        print(f"(d) storage of the frame_step=1 keypoints ({n_clips} clips, {js_files} frames): Parquet shard "
              f"{pq_per_clip / 1024:.1f} KiB/clip; OpenPose JSON {js / n_clips / 1024:.1f} KiB/clip "
              f"({js_disk / n_clips / 1024:.1f} KiB/clip on disk in 4 KiB blocks); Parquet = 1/{js / b['bytes']:.1f} "
              f"of the JSON bytes (1/{js_disk / b['bytes']:.1f} on disk)", flush=True)
        print(f"    other encodings of the same keypoints: float32 BYTE_STREAM_SPLIT {alt['bss'] / n_clips / 1024:.1f} "
              f"KiB/clip (1/{js / alt['bss']:.1f}); x, y, c as int16 (1e-4) {alt['int16_xyc'] / n_clips / 1024:.1f} "
              f"KiB/clip (1/{js / alt['int16_xyc']:.1f})", flush=True)
        res.update({
            "decode": {"frames": n_dec, "seconds": dec_s},
            "a_plain": {"frames": n_a, "seconds": a_s, "cpu_seconds": a_cpu, "frames_per_s": n_a / a_s},
            "b_pipeline_step1": {**b, "frames_per_s": b_fps, "speedup_vs_a": b_fps / (n_a / a_s),
                                 "overhead_share": overhead},
            "c_pipeline_step2": {**c, "keypoint_frames_per_s": c_fps, "clips_per_s": len(videos) / c["wall"]},
            "d_storage": {"parquet_bytes_per_clip": pq_per_clip, "json_bytes_per_clip": js / n_clips,
                          "json_disk_bytes_per_clip": js_disk / n_clips, "json_files": js_files,
                          "parquet_over_json": b["bytes"] / js,
                          "alternative_bytes_per_clip": {k: v / n_clips for k, v in alt.items()}},
        })
    res["load_end"] = os.getloadavg()[:2]
    print(f"load average at end {load()}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
