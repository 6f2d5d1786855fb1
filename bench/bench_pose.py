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
(e) as (b) with ``pose.estimator: openvino`` (the OpenVINO rebuild of Holistic, with params.yaml's
    ``pose.openvino`` options and ``pose.face``): CPU-ms per keypoint frame against (a)'s (target
    <= 0.5) and against (b)'s, printed side by side with (a) and (b) in one table;
(f) as (e) with ``pose.face: subset`` (the face models run, as (a) runs them), unless params.yaml
    already asks for a face: what skipping the face models saves;
(d) storage: bytes per clip of the same keypoints as OpenPose-style JSON, one file per frame
    (``people[0].pose_keypoints_2d``, ``face_keypoints_2d``, ``hand_left_keypoints_2d``,
    ``hand_right_keypoints_2d``: flattened ``[x, y, c, ...]`` in pixels, missing points
    ``0, 0, 0``, no people when no body), as OpenPose writes them, against the pose shard in both
    keypoint storages of :mod:`sldata.pose.store` (``float32``, the default, and ``compact``:
    int32 fixed point at 2^-14, BYTE_STREAM_SPLIT + zstd level 9) and a few alternatives for the record
    (target: <= 1/5 of the JSON). Then what ``compact`` costs: the largest rounding error (in
    normalized units and in pixels of each clip's frame), and downstream, both storages packed
    with :func:`pack_pose_arrays` and turned into model features (every channel
    :func:`sltrain.inputs.clip_features` can make), compared value by value.

``--storage-only`` runs (d) alone on existing shards (default: the real ``data/pose/shard-*.parquet``
of the pipeline, WLASL100 keypoints), without running pose. Everything is written under a
temporary folder and removed. Usage::

    python bench/bench_pose.py                # --clips 40 (about 5 minutes on 2 idle cores)
    python bench/bench_pose.py --clips 6      # a quick check
    python bench/bench_pose.py --speed-only   # (decode), (a), (b) and (e) only: the engines' speed
    python bench/bench_pose.py --storage-only # (d) on data/pose/shard-*.parquet (about a minute)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import sldata.pose.extract as extract_mod  # noqa: E402
from sldata.pose.extract import ClipReader, PoseSettings, extract_pose_shard  # noqa: E402
from sldata.pose.store import (COMPACT_COLUMNS, convert_pose_shard, load_packed, pack_pose_arrays,  # noqa: E402
                               read_pose_shard, shard_storage)


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


def params_pose() -> dict[str, Any]:
    """params.yaml's ``pose`` section."""
    from sldata.params import load_params

    return load_params(Path(__file__).resolve().parents[1] / "params.yaml")["pose"]


def pipeline_run(clips: pd.DataFrame, out: Path, workers: int, frame_step: int,
                 estimator: str = "mediapipe", face: str | None = None) -> dict[str, Any]:
    """``extract_pose_shard`` with params.yaml's pose settings but these workers, frame step and engine (and face)."""
    section = params_pose()
    settings = PoseSettings.from_dict({**section, "workers": workers, "frame_step": frame_step, "checkpoint_every": 25,
                                       "estimator": estimator, "face": face or section["face"]})

    def children_cpu() -> float:  # worker processes, counted once they have been joined
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    with StorageTimer() as timer:
        t0, cpu0, child0 = time.perf_counter(), time.process_time(), children_cpu()
        summary = extract_pose_shard(clips, out, settings, progress=False)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0 + children_cpu() - child0
    return {"frames": summary["frames"], "clips": summary["clips"], "wall": wall, "cpu": cpu, "storage": timer.seconds,
            "by_status": summary["by_status"], "bytes": out.stat().st_size, "face": settings.face,
            **({"openvino": asdict(settings.openvino)} if estimator == "openvino" else {})}


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


def _alternative_bytes(float32_shard: Path, compact_shard: Path) -> dict[str, tuple[int, float]]:
    """(bytes, write seconds) of the same shard in other encodings, for the record (not used by the pipeline).

    ``float32_bss``: the float32 layout with BYTE_STREAM_SPLIT on the keypoints (lossless);
    ``float16``: one native Parquet FLOAT16 column per component (``list<fixed_size_list<halffloat, P>>``,
    NaN for missing), BYTE_STREAM_SPLIT; ``compact_zstd19``: the compact shard at zstd level 19
    (the pipeline writes compact shards at level 9, float32 ones at Arrow's default, 1).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def written(table: pa.Table, **kwargs: Any) -> tuple[int, float]:
        buf = io.BytesIO()
        t0 = time.perf_counter()
        pq.write_table(table.combine_chunks(), buf, compression="zstd", row_group_size=64, **kwargs)
        return len(buf.getvalue()), time.perf_counter() - t0

    out: dict[str, tuple[int, float]] = {}
    table = pq.read_table(float32_shard)
    scalar = [n for n in table.column_names if n != "keypoints"]
    out["float32_bss"] = written(table, use_dictionary=scalar,
                                 column_encoding={"keypoints.list.element.list.element": "BYTE_STREAM_SPLIT"})
    kp = table.column("keypoints").combine_chunks()
    width = kp.type.value_type.list_size
    points = width // 4
    lengths = pc.fill_null(pc.list_value_length(kp), 0).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    flat = kp.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, points, 4)
    half = table.drop_columns(["keypoints"])
    names = [f"{c}_f16" for c in ("x", "y", "z", "confidence")]
    for i, name in enumerate(names):
        values = pa.array(np.ascontiguousarray(flat[..., i]).astype(np.float16).reshape(-1))
        frames_f16 = pa.FixedSizeListArray.from_arrays(values, points)
        half = half.append_column(name, pa.ListArray.from_arrays(offsets, frames_f16, mask=kp.is_null()))
    out["float16"] = written(half, use_dictionary=scalar,
                             column_encoding={f"{n}.list.element.list.element": "BYTE_STREAM_SPLIT" for n in names})
    compact = pq.read_table(compact_shard)
    out["compact_zstd19"] = written(compact, compression_level=19,
                                    use_dictionary=[n for n in compact.column_names if n not in COMPACT_COLUMNS],
                                    column_encoding={f"{c}.list.element.list.element": "BYTE_STREAM_SPLIT"
                                                     for c in COMPACT_COLUMNS})
    return out


def rounding_error(original: dict[str, np.ndarray], decoded: dict[str, np.ndarray],
                   sizes: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Largest |decoded - original| per component, normalized and in pixels (x, z: width; y: height)."""
    err = {"x": 0.0, "y": 0.0, "z": 0.0, "confidence": 0.0, "x_px": 0.0, "y_px": 0.0, "z_px": 0.0}
    nan_mismatch = 0
    for sid, kp in original.items():
        got = decoded[sid].astype(np.float64)
        ref = kp.astype(np.float64)
        nan_mismatch += int((np.isnan(got) != np.isnan(ref)).sum())
        diff = np.nan_to_num(np.abs(got - ref), nan=0.0)
        w, h = sizes[sid]
        for i, c in enumerate(("x", "y", "z", "confidence")):
            err[c] = max(err[c], float(diff[..., i].max(initial=0.0)))
        err["x_px"] = max(err["x_px"], float(diff[..., 0].max(initial=0.0)) * w)
        err["y_px"] = max(err["y_px"], float(diff[..., 1].max(initial=0.0)) * h)
        err["z_px"] = max(err["z_px"], float(diff[..., 2].max(initial=0.0)) * w)
    err["missing_points_changed"] = nan_mismatch
    return err


def downstream_check(float32_shards: list[Path], compact_shards: list[Path], folder: Path) -> dict[str, Any]:
    """Pack both storages (:func:`pack_pose_arrays`) and compare the arrays and every model feature channel."""
    from dataclasses import asdict

    from sldata.pose.features import FeatureSettings
    from sltrain.inputs import InputSpec, clip_features

    ids = []
    for shard in float32_shards:
        clips = pd.read_parquet(shard, columns=["sample_id", "status"])
        ids += list(clips.loc[clips["status"] == "ok", "sample_id"].astype(str))
    samples = pd.DataFrame({"sample_id": ids, "label": 0, "split": "train", "gloss": "", "signer_id": 0})
    t0 = time.perf_counter()
    pack_pose_arrays(float32_shards, samples, folder / "pack_float32")
    t_float = time.perf_counter() - t0
    t0 = time.perf_counter()
    pack_pose_arrays(compact_shards, samples, folder / "pack_compact")
    t_compact = time.perf_counter() - t0
    ka, index, meta = load_packed(folder / "pack_float32")
    kb, index_b, _ = load_packed(folder / "pack_compact")
    assert index.equals(index_b) and ka.shape == kb.shape
    packed_diff = float(np.nanmax(np.abs(np.asarray(kb, dtype=np.float64) - np.asarray(ka, dtype=np.float64))))
    nan_same = bool((np.isnan(ka) == np.isnan(kb)).all())

    from sldata.pose.flow import fill_missing, pixel_xy
    from sldata.pose.skeleton import Skeleton

    skeleton = Skeleton.from_dict(meta["skeleton"])
    spec = InputSpec(skeleton=skeleton.to_dict(), points=skeleton.point_names, num_frames=1_000_000, hand_local=True,
                     features=asdict(FeatureSettings(normalize=True, velocity=True, acceleration=True, pose_flow=True,
                                                     fill_missing=True)))
    channels = spec.channels
    angle = channels.index("flow_angle")
    edges = np.concatenate([[0.0], np.logspace(-9, 1, 101)])  # |diff| histogram, 10 bins per decade
    hist = np.zeros((len(channels), len(edges) - 1), dtype=np.int64)
    worst = np.zeros(len(channels))
    worst_angle_moving = 0.0  # flow angle of points that moved >= 1 px between the two frames
    skipped = 0
    for off, n, w, h in zip(index["offset"], index["length"], index["width"], index["height"]):
        try:
            fa = clip_features(ka[off:off + n], float(w), float(h), spec)
        except ValueError:  # no measurable shoulder width / body length: the same clip fails both ways
            skipped += 1
            continue
        fb = clip_features(kb[off:off + n], float(w), float(h), spec)
        d = np.abs(fb.astype(np.float64) - fa.astype(np.float64))
        d[..., angle] = np.minimum(d[..., angle], 2.0 - d[..., angle])  # angles: -1 and 1 are the same direction
        moved = np.zeros(d.shape[:2], dtype=bool)
        moved[1:] = np.hypot(*np.moveaxis(np.diff(pixel_xy(fill_missing(ka[off:off + n]), w, h), axis=0), -1, 0)) >= 1.0
        worst_angle_moving = max(worst_angle_moving, float(d[..., angle][moved].max(initial=0.0)))
        d = d.reshape(-1, len(channels))
        worst = np.maximum(worst, d.max(axis=0))
        for c in range(len(channels)):
            hist[c] += np.histogram(np.minimum(d[:, c], 10.0), edges)[0]
    total = hist.sum(axis=1, keepdims=True)
    p999 = edges[1:][np.argmax(np.cumsum(hist, axis=1) >= 0.999 * total, axis=1)]
    over = hist[:, edges[1:] > 1e-3 * 1.0001].sum(axis=1) / np.maximum(total[:, 0], 1)
    return {"clips": int(len(index)), "frames": int(ka.shape[0]), "packed_max_abs_diff": packed_diff,
            "packed_missing_same": nan_same, "pack_seconds_float32": t_float, "pack_seconds_compact": t_compact,
            "feature_clips_skipped": skipped,
            "features_max_abs_diff": {c: float(v) for c, v in zip(channels, worst)},
            "features_p99_9_abs_diff_at_most": {c: float(v) for c, v in zip(channels, p999)},
            "features_share_over_1e-3": {c: float(v) for c, v in zip(channels, over)},
            "flow_angle_max_abs_diff_moved_1px": worst_angle_moving}


def storage_comparison(shards: list[Path], folder: Path) -> dict[str, Any]:
    """(d) on ``shards``: bytes per clip of every variant, compact's rounding error and the downstream check."""
    float32_shards, compact_shards = [], []
    json_bytes = json_disk = json_files = n_clips = 0
    frames = 0
    sizes: dict[str, tuple[int, int]] = {}
    err: dict[str, float] = {}
    alt: dict[str, list[float]] = {}
    write_s = {"float32": 0.0, "compact": 0.0}
    read_s = {"float32": 0.0, "compact": 0.0}
    for shard in shards:
        f32 = folder / "float32" / shard.name
        cpt = folder / "compact" / shard.name
        t0 = time.perf_counter()
        convert_pose_shard(shard, f32, "float32")  # the default storage, as the pipeline writes it
        write_s["float32"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        convert_pose_shard(shard, cpt, "compact")
        write_s["compact"] += time.perf_counter() - t0
        float32_shards.append(f32)
        compact_shards.append(cpt)
        t0 = time.perf_counter()
        clips, original, _ = read_pose_shard(f32)
        read_s["float32"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        _, decoded, _ = read_pose_shard(cpt)
        read_s["compact"] += time.perf_counter() - t0
        sizes.update({sid: (int(w), int(h)) for sid, w, h in zip(clips["sample_id"], clips["width"], clips["height"])
                      if sid in original})
        frames += sum(len(k) for k in original.values())
        for k, v in rounding_error(original, decoded, sizes).items():
            err[k] = max(err.get(k, 0), v) if k != "missing_points_changed" else err.get(k, 0) + v
        js, disk, files, n = openpose_json_bytes(f32, folder / "openpose")
        shutil.rmtree(folder / "openpose")
        json_bytes += js
        json_disk += disk
        json_files += files
        n_clips += n
        for name, (b, sec) in _alternative_bytes(f32, cpt).items():
            alt.setdefault(name, [0, 0.0])
            alt[name][0] += b
            alt[name][1] += sec
    bytes_f32 = sum(p.stat().st_size for p in float32_shards)
    bytes_cpt = sum(p.stat().st_size for p in compact_shards)
    assert all(shard_storage(p) == "compact" for p in compact_shards)
    down = downstream_check(float32_shards, compact_shards, folder)
    return {"shards": [str(p) for p in shards], "clips_with_keypoints": n_clips, "frames": frames,
            "json_bytes": json_bytes, "json_disk_bytes": json_disk, "json_files": json_files,
            "float32_bytes": bytes_f32, "compact_bytes": bytes_cpt, "write_seconds": write_s, "read_seconds": read_s,
            "alternatives": {k: {"bytes": int(v[0]), "write_seconds": v[1]} for k, v in alt.items()},
            "compact_max_abs_error": err, "downstream": down}


def print_storage(r: dict[str, Any]) -> None:
    n = r["clips_with_keypoints"]
    js = r["json_bytes"]

    def row(label: str, nbytes: float, extra: str = "") -> None:
        print(f"    {label:<62} {nbytes / n / 1024:8.1f} KiB/clip   1/{js / nbytes:4.1f} of JSON   "
              f"{r['float32_bytes'] / nbytes:5.2f}x smaller than float32{extra}", flush=True)

    print(f"(d) storage of the same keypoints: {len(r['shards'])} shard(s), {n} clips with keypoints, {r['frames']} "
          f"frames ({r['frames'] / n:.1f} per clip), OpenPose JSON in {r['json_files']} files", flush=True)
    print(f"    {'OpenPose-style JSON, one file per frame (bytes)':<62} {js / n / 1024:8.1f} KiB/clip   1", flush=True)
    print(f"    {'same, on disk (4 KiB blocks)':<62} {r['json_disk_bytes'] / n / 1024:8.1f} KiB/clip   "
          f"{r['json_disk_bytes'] / js:.2f}", flush=True)
    row("Parquet shard, float32 storage (default; lossless)", r["float32_bytes"],
        f"   write {r['write_seconds']['float32']:.2f} s, read {r['read_seconds']['float32']:.2f} s")
    row("Parquet shard, compact storage (int32 x 2^-14, BSS + zstd 9)", r["compact_bytes"],
        f"   write {r['write_seconds']['compact']:.2f} s, read {r['read_seconds']['compact']:.2f} s")
    labels = {"float32_bss": "  alt: float32 + BYTE_STREAM_SPLIT (lossless)",
              "float16": "  alt: native Parquet float16 columns + BSS",
              "compact_zstd19": "  alt: compact at zstd level 19"}
    for name, v in r["alternatives"].items():
        row(labels[name], v["bytes"], f"   write {v['write_seconds']:.2f} s")
    e = r["compact_max_abs_error"]
    print(f"    compact rounding, max |error|: x {e['x']:.3g}, y {e['y']:.3g}, z {e['z']:.3g}, confidence "
          f"{e['confidence']:.3g} (normalized); {e['x_px']:.4f} px in x, {e['y_px']:.4f} px in y, "
          f"{e['z_px']:.4f} px in z; missing points changed: {e['missing_points_changed']}", flush=True)
    d = r["downstream"]
    print(f"    downstream: packed {d['clips']} ok clips ({d['frames']} frames) from each storage: max |diff| "
          f"{d['packed_max_abs_diff']:.3g}, missing points identical: {d['packed_missing_same']}; pack "
          f"{d['pack_seconds_float32']:.2f} s from float32, {d['pack_seconds_compact']:.2f} s from compact", flush=True)
    print(f"    features (every channel of clip_features, all points, all frames; {d['feature_clips_skipped']} clip(s) "
          "without a measurable scale skipped), |diff| max / 99.9th percentile (at most) / share over 1e-3:",
          flush=True)
    for c, v in d["features_max_abs_diff"].items():
        print(f"      {c:<16} {v:9.2g} {d['features_p99_9_abs_diff_at_most'][c]:9.2g} "
              f"{d['features_share_over_1e-3'][c]:8.3%}", flush=True)
    print(f"      flow_angle (angle/pi, circular) of points that moved >= 1 px: max |diff| "
          f"{d['flow_angle_max_abs_diff_moved_1px']:.2g}", flush=True)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Real data folder: $SLDATA_SHARED (default ../shared/data).")
    parser.add_argument("--clips", type=int, default=40, help="real WLASL100 clips to use (default 40)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of (b) and (c) (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--speed-only", action="store_true",
                        help="run only (decode), (a), (b) and (e): the engines' speed, without (c) and (d)")
    parser.add_argument("--storage-only", action="store_true",
                        help="run only (d), the storage comparison, on existing pose shards (--shards); no pose")
    parser.add_argument("--shards", type=Path, nargs="+", default=None,
                        help="pose shards for --storage-only (default: data/pose/shard-*.parquet of this checkout)")
    args = parser.parse_args(argv)

    if args.storage_only:
        shards = args.shards or sorted((REPO_ROOT / "data" / "pose").glob("shard-*.parquet"))
        if not shards:
            parser.error("no shard given and no data/pose/shard-*.parquet here; run the pose stage or pass --shards")
        print(f"storage only: {len(shards)} shard(s), {os.cpu_count()} CPUs, load average at start {load()}",
              flush=True)
        with tempfile.TemporaryDirectory(prefix="bench_pose_") as tmp:
            res = {"d_storage": storage_comparison([Path(p) for p in shards], Path(tmp))}
        print_storage(res["d_storage"])
        res["load_end"] = os.getloadavg()[:2]
        print(f"load average at end {load()}")
        if args.json:
            args.json.write_text(json.dumps(res, indent=2, default=str))
        return 0

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
        e = pipeline_run(clips, tmp_path / "openvino.parquet", args.workers, 1, estimator="openvino")
        assert e["frames"] == n_a, (e["frames"], n_a)
        if e["face"] == "none":
            f = pipeline_run(clips, tmp_path / "openvino-face.parquet", args.workers, 1, estimator="openvino",
                             face="subset")
            res["f_pipeline_openvino_face"] = {**f, "frames_per_s": f["frames"] / f["wall"],
                                               "cpu_ratio_vs_a": (f["cpu"] / f["frames"]) / (a_cpu / n_a)}
        res.update({
            "decode": {"frames": n_dec, "seconds": dec_s},
            "a_plain": {"frames": n_a, "seconds": a_s, "cpu_seconds": a_cpu, "frames_per_s": n_a / a_s},
            "b_pipeline_step1": {**b, "frames_per_s": b_fps, "speedup_vs_a": b_fps / (n_a / a_s),
                                 "overhead_share": overhead},
            "e_pipeline_openvino": {**e, "frames_per_s": e["frames"] / e["wall"],
                                    "cpu_ratio_vs_a": (e["cpu"] / e["frames"]) / (a_cpu / n_a),
                                    "cpu_ratio_vs_b": (e["cpu"] / e["frames"]) / (b["cpu"] / b["frames"])},
        })
        print_engines(res)
        if args.speed_only:
            return finish(res, args.json)
        c = pipeline_run(clips, tmp_path / "step2.parquet", args.workers, 2)
        c_fps = c["frames"] / c["wall"]
        print(f"(c) extract_pose_shard, workers={args.workers}, frame_step=2: {c['frames']} keypoint frames in "
              f"{c['wall']:.1f} s = {c_fps:.2f} keypoint frames/s, {len(videos) / c['wall']:.3f} clips/s "
              f"(b: {len(videos) / b['wall']:.3f} clips/s, {b['wall'] / c['wall']:.2f}x faster per clip)", flush=True)
        storage = storage_comparison([tmp_path / "step1.parquet"], tmp_path / "storage")
        print_storage(storage)
        res.update({
            "c_pipeline_step2": {**c, "keypoint_frames_per_s": c_fps, "clips_per_s": len(videos) / c["wall"]},
            "d_storage": storage,
        })
    return finish(res, args.json)


def print_engines(res: dict[str, Any]) -> None:
    """(a), (b) and (e) side by side: wall frames/s, CPU-ms per keypoint frame and the ratios to (a)."""
    a, b, e = res["a_plain"], res["b_pipeline_step1"], res["e_pipeline_openvino"]
    a_ms = 1000 * a["cpu_seconds"] / a["frames"]
    rows = [("(a) plain Holistic loop, 1 process", a["frames_per_s"], a_ms),
            (f"(b) pipeline, mediapipe engine (face {b['face']})", b["frames_per_s"], 1000 * b["cpu"] / b["frames"]),
            (f"(e) pipeline, openvino engine ({', '.join(f'{k} {v}' for k, v in e['openvino'].items())}, "
             f"face {e['face']})", e["frames_per_s"], 1000 * e["cpu"] / e["frames"])]
    if "f_pipeline_openvino_face" in res:
        f = res["f_pipeline_openvino_face"]
        rows.append((f"(f) as (e), face {f['face']}: the face models run, as in (a)", f["frames_per_s"],
                     1000 * f["cpu"] / f["frames"]))
    print(f"\n{'variant (frame_step 1, ' + str(a['frames']) + ' frames)':<86} {'frames/s':>9} {'CPU-ms/frame':>13} "
          f"{'vs (a)':>7}")
    for label, fps, ms in rows:
        print(f"{label:<86} {fps:9.2f} {ms:13.1f} {ms / a_ms:7.2f}")
    print(f"(e) / (a) CPU-ms per frame: {e['cpu_ratio_vs_a']:.2f} (target <= 0.5); (e) / (b): {e['cpu_ratio_vs_b']:.2f}\n",
          flush=True)


def finish(res: dict[str, Any], json_path: Path | None) -> int:
    res["load_end"] = os.getloadavg()[:2]
    print(f"load average at end {load()}")
    if json_path:
        json_path.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
