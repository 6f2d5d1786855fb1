"""Keypoint extraction for a shard of clips: parallel, resumable, never stopped by one bad clip.

Rules
-----
* **Input**: a table with ``sample_id``, ``clip_path`` and ``status``; only ``ok`` rows are
  processed, the others are carried into the shard as ``skipped_unusable_clip`` (no keypoints).
* **Decoding** (PyAV, RGB uint8): a packet that cannot be decoded is skipped and counted
  (``decode_errors``, noted in ``detail``); a demuxer error ends the clip at the frames decoded
  so far (also counted). A clip that is missing, empty, cannot be opened, has no video stream
  or yields no frame is ``failed`` with a ``reason`` (:class:`PoseReason`) and a ``detail``.
* **Status**: ``ok``; ``no_person`` when frames were decoded but no frame has a body (kept,
  keypoints all missing); ``failed``; ``skipped_unusable_clip``.
* **Parallelism**: ``workers`` spawned processes, each building one estimator (one mediapipe
  import) and taking clips in any order; ``workers=1`` runs in this process. A Holistic graph is
  built per clip, so results do not depend on the number of workers or the order of clips.
* **Resuming**: finished clips are checkpointed every ``checkpoint_every`` clips to
  ``<out_path>.parts/part-NNNNN.parquet`` (atomic). A new run reads the parts whose settings
  and skeleton match, skips their clips, and at the end merges all rows, sorted by
  ``sample_id``, into ``out_path`` (atomic) and removes the parts. The merged file is
  byte-identical whether or not the run was interrupted; a ``kill -9`` loses at most the
  clips since the last checkpoint and never leaves a partial ``out_path``.
* **Reuse across runs** (``cache_dir``): Snakemake and DVC delete a stage's outputs before they
  rerun it, so a shard that gained clips (more videos in the manifest) would otherwise be
  extracted again from scratch. With a ``cache_dir``, every finished shard is also copied to
  ``<cache_dir>/<shard>.<key>.parquet`` (one file per shard, with each clip's ``clip_path`` and
  the sha256 of its clip file), where ``key`` (:func:`reuse_key`) digests everything that
  determines a clip's row besides the clip: the skeleton, the keypoint settings
  (:meth:`PoseSettings.output_dict`; not ``workers``/``checkpoint_every``), the pose code and
  the mediapipe, PyAV, numpy, OpenVINO and OpenCV versions. A later run takes the row of every clip whose
  ``sample_id``, ``clip_path`` and clip sha256 are unchanged and extracts only new or changed
  clips; the merged shard is byte-identical to a from-scratch extraction of the same clips. A
  changed setting changes the key, so nothing is reused; the :data:`CACHE_VERSIONS` most recent
  keys of a shard are kept, so switching a setting back reuses the earlier rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sldata.annotations.jsonfile import sha256_of
from sldata.pose.estimator import (DEFAULT_ESTIMATOR, PoseEstimator, estimator_skeleton, make_estimator,
                                   validate_estimator, validate_holistic_settings)
from sldata.pose.skeleton import Skeleton, present
from sldata.pose.store import (SETTINGS_KEY, SKELETON_KEY, ClipPose, check_storage, records_to_table,
                               shard_schema, write_table)
from sldata.progress import Progress
from sldata.settings import settings_from_dict

log = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_NO_PERSON = "no_person"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped_unusable_clip"


class PoseReason:
    """Reason codes of a clip whose pose could not be extracted (stable strings)."""

    MISSING_CLIP = "missing_clip"
    UNDECODABLE = "undecodable"
    NO_VIDEO_STREAM = "no_video_stream"
    NO_FRAMES = "no_frames"
    """The file opened but not one frame could be decoded."""
    UNUSABLE_CLIP = "unusable_clip"
    """The input row's clip status was not ``ok`` (the clip was not processed)."""
    ERROR = "error"
    """Any other failure (the detail names the exception)."""


class PoseClipError(Exception):
    """A clip cannot be read; ``reason`` is a :class:`PoseReason` code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class OpenVinoOptions:
    """Options of the ``openvino`` pose engine (``pose.openvino`` in params; the mediapipe engine ignores them).

    Attributes
    ----------
    precision
        ``f32`` (every model in f32: MediaPipe's numbers), ``mixed`` (the pose models in f32, the
        hand and face models in bf16: half of Holistic's CPU per frame at the same parity) or
        ``bf16`` (every model; faster, less exact). See
        :class:`sldata.pose.openvino_holistic.OpenVinoHolisticEstimator`.
    hand_second_chance
        Give a hand side the tracker lost a second chance (palm detection around the pose wrist).
    """

    precision: str = "f32"
    hand_second_chance: bool = False

    def __post_init__(self) -> None:
        from sldata.pose.openvino_holistic import validate_options

        validate_options(self.precision, self.hand_second_chance, label="pose openvino ")


@dataclass(frozen=True)
class PoseSettings:
    """Settings of the pose extraction (``pose`` in params).

    Attributes
    ----------
    estimator
        ``mediapipe`` (MediaPipe's Holistic graph) or ``openvino`` (the same graph and models
        rebuilt on OpenVINO, :mod:`sldata.pose.openvino_holistic`). Stored in the shard settings
        only when not the default, so shards made before it existed keep their metadata.
    face
        Face points kept: ``none``, ``subset`` (93) or ``full`` (468).
    model_complexity
        MediaPipe pose model; only 1 is available offline.
    min_detection_confidence, min_tracking_confidence
        Holistic thresholds in [0, 1].
    workers
        Worker processes (each uses about 1.35 cores); 1 runs in the calling process.
    checkpoint_every
        Finished clips per checkpoint part.
    frame_step
        Estimate every ``frame_step``-th frame (1: all; 2 on a 25 fps clip gives 12.5 fps
        keypoints at half the cost). The stored ``fps`` is the rate of the kept frames.
    storage
        Keypoint storage of the finished shard: ``float32`` (lossless) or ``compact`` (int32
        fixed point, see :mod:`sldata.pose.store`). Checkpoints and the reuse cache stay
        float32; not part of :meth:`output_dict` (the shard says its storage itself).
    openvino
        :class:`OpenVinoOptions` (a mapping is converted). Stored in the shard settings only with
        the ``openvino`` engine.
    """

    estimator: str
    face: str
    model_complexity: int
    min_detection_confidence: float
    min_tracking_confidence: float
    workers: int
    checkpoint_every: int
    frame_step: int
    storage: str
    openvino: OpenVinoOptions = OpenVinoOptions()

    def __post_init__(self) -> None:
        if isinstance(self.openvino, Mapping):
            object.__setattr__(self, "openvino", settings_from_dict(OpenVinoOptions, self.openvino, label="pose openvino"))
        if not isinstance(self.openvino, OpenVinoOptions):
            raise ValueError(f"pose openvino must be a mapping of the engine's options, got {self.openvino!r}")
        validate_estimator(self.estimator)
        validate_holistic_settings(self.face, self.model_complexity, self.min_detection_confidence,
                                   self.min_tracking_confidence)
        check_storage(self.storage)
        for name in ("workers", "checkpoint_every", "frame_step"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"pose {name} must be an integer >= 1, got {v!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoseSettings:
        """Settings from a mapping; unknown keys raise ``ValueError`` naming them."""
        return settings_from_dict(cls, data, label="pose")

    def output_dict(self) -> dict[str, Any]:
        """The settings that determine the keypoints (stored in shards; not workers/checkpointing)."""
        d = asdict(self)
        del d["workers"], d["checkpoint_every"], d["storage"]
        if d["estimator"] == DEFAULT_ESTIMATOR:
            del d["estimator"]
        if self.estimator != "openvino":
            del d["openvino"]
        d["min_detection_confidence"] = float(d["min_detection_confidence"])
        d["min_tracking_confidence"] = float(d["min_tracking_confidence"])
        return d

    def skeleton(self) -> Skeleton:
        """The layout of the keypoints these settings produce."""
        return estimator_skeleton(self.estimator, self.face, self.model_complexity)

    def make_estimator(self) -> PoseEstimator:
        """A new estimator (imports mediapipe, or openvino)."""
        options = asdict(self.openvino) if self.estimator == "openvino" else {}
        return make_estimator(self.estimator, face=self.face, model_complexity=self.model_complexity,
                              min_detection_confidence=self.min_detection_confidence,
                              min_tracking_confidence=self.min_tracking_confidence, **options)


# --------------------------------------------------------------------------- decoding


class ClipReader:
    """Tolerant RGB frame reader of one clip; iterate for frames, then read the counters.

    Attributes
    ----------
    fps, width, height
        Of the frames yielded: ``fps`` is the stream's rate over ``step`` (``None`` when unknown).
    source_fps
        The stream's own frame rate (``None`` when unknown).
    frames
        Frames yielded so far.
    decode_errors
        Packets skipped because they could not be decoded (plus one if demuxing broke off).
    notes
        Human-readable notes on the errors (first few).

    Raises
    ------
    PoseClipError
        On opening: a missing or empty file, one that cannot be opened, or no video stream.
    """

    MAX_NOTES = 3

    def __init__(self, path: str | os.PathLike[str], step: int = 1) -> None:
        if step < 1:
            raise ValueError(f"frame step must be >= 1, got {step}")
        self.step = step
        self.decoded = 0
        self.path = Path(path)
        if not self.path.is_file():
            raise PoseClipError(PoseReason.MISSING_CLIP, f"{self.path} does not exist")
        if self.path.stat().st_size == 0:
            raise PoseClipError(PoseReason.UNDECODABLE, f"{self.path} is empty (0 bytes)")
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise PoseClipError(PoseReason.UNDECODABLE, f"cannot open {self.path}: {exc}") from exc
        if not self._container.streams.video:
            self._container.close()
            raise PoseClipError(PoseReason.NO_VIDEO_STREAM, f"{self.path} has no video stream")
        self._stream = self._container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.source_fps: float | None = float(rate) if rate else None
        self.fps: float | None = self.source_fps / step if self.source_fps else None
        self.width: int | None = self._stream.codec_context.width or None
        self.height: int | None = self._stream.codec_context.height or None
        self.frames = 0
        self.decode_errors = 0
        self.notes: list[str] = []

    def set_step(self, step: int) -> None:
        """Keep every ``step``-th decoded frame from now on (call before iterating; ``fps`` follows)."""
        if step < 1:
            raise ValueError(f"frame step must be >= 1, got {step}")
        if self.decoded:
            raise RuntimeError("the frame step can only be set before the first frame is decoded")
        self.step = int(step)
        self.fps = self.source_fps / self.step if self.source_fps else None

    def _error(self, what: str, exc: Exception) -> None:
        self.decode_errors += 1
        if len(self.notes) < self.MAX_NOTES:
            self.notes.append(f"{what}: {exc}")

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            packets = self._container.demux(self._stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as exc:  # the container broke off: keep what we have
                    self._error("demuxing stopped", exc)
                    break
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:
                    self._error(f"packet pts={packet.pts} skipped", exc)
                    continue
                for frame in decoded:
                    self.decoded += 1
                    if (self.decoded - 1) % self.step:
                        continue
                    image = frame.to_ndarray(format="rgb24")
                    if self.frames == 0:
                        self.height, self.width = image.shape[:2]
                    self.frames += 1
                    yield image
        finally:
            self.close()

    def close(self) -> None:
        self._container.close()


# --------------------------------------------------------------------------- one clip


def process_clip(estimator: PoseEstimator, sample_id: str, clip_path: str | os.PathLike[str] | None,
                 frame_step: int = 1) -> ClipPose:
    """Extract one clip's keypoints; every failure becomes a ``failed`` record, never an exception.

    Parameters
    ----------
    estimator
        Its ``skeleton`` fixes the layout.
    sample_id, clip_path
        The clip (``clip_path`` ``None`` records ``missing_clip``).
    frame_step
        Keep every ``frame_step``-th decoded frame.
    """
    if clip_path is None:
        return ClipPose(sample_id, STATUS_FAILED, PoseReason.MISSING_CLIP, "the clip row has no clip_path")
    try:
        reader = ClipReader(clip_path, frame_step)
    except PoseClipError as exc:
        return ClipPose(sample_id, STATUS_FAILED, exc.reason, exc.detail)
    try:
        kp = estimator.estimate(reader)
    except Exception as exc:  # an estimator or decoder bug must not stop the shard; keep the evidence
        reader.close()
        return ClipPose(sample_id, STATUS_FAILED, PoseReason.ERROR, f"{clip_path}: {type(exc).__name__}: {exc}",
                        fps=reader.fps, width=reader.width, height=reader.height, decode_errors=reader.decode_errors)
    notes = "; ".join(reader.notes)
    common = dict(fps=reader.fps, width=reader.width, height=reader.height, decode_errors=reader.decode_errors)
    if kp.shape[0] == 0:
        detail = f"{clip_path}: no frame could be decoded"
        if notes:
            detail += f" ({reader.decode_errors} error(s): {notes})"
        return ClipPose(sample_id, STATUS_FAILED, PoseReason.NO_FRAMES, detail, **common)
    sk = estimator.skeleton
    found = present(kp)
    counts = {f"frames_with_{part}": int(found[:, sk.part_slice(part)].any(axis=1).sum())
              for part in ("body", "left_hand", "right_hand")}
    detail = f"{reader.decode_errors} undecodable packet(s) skipped: {notes}" if reader.decode_errors else None
    status = STATUS_OK if counts["frames_with_body"] else STATUS_NO_PERSON
    if status == STATUS_NO_PERSON:
        detail = f"no body detected in any of {kp.shape[0]} frames" + (f"; {detail}" if detail else "")
    return ClipPose(sample_id, status, None, detail, num_frames=int(kp.shape[0]), keypoints=kp, **counts, **common)


_WORKER_ESTIMATOR: PoseEstimator | None = None
_WORKER_STEP = 1


PARENT_CHECK_S = 1.0
"""How often a worker checks that the process that started it is still there."""


def _exit_when_orphaned(parent: int) -> None:
    """End this worker process once ``parent`` is gone (killed with SIGTERM or SIGKILL, say).

    A pool's workers otherwise outlive a killed pose job for minutes, each finishing its clip and
    holding a core; checkpoints are written atomically, so nothing is lost by leaving at once.
    """
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def _init_worker(settings: PoseSettings) -> None:
    global _WORKER_ESTIMATOR, _WORKER_STEP
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True, name="orphan-check").start()
    with contextlib.suppress(Exception):  # keep each worker to the cores it is meant to use
        import cv2

        cv2.setNumThreads(1)
    _WORKER_ESTIMATOR = settings.make_estimator()
    _WORKER_STEP = settings.frame_step


def _work(item: tuple[str, str | None]) -> ClipPose:
    assert _WORKER_ESTIMATOR is not None, "worker not initialised"
    return process_clip(_WORKER_ESTIMATOR, *item, frame_step=_WORKER_STEP)


# --------------------------------------------------------------------------- checkpoints


def parts_dir(out_path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder of ``out_path``: ``<out_path>.parts``."""
    out = Path(out_path)
    return out.with_name(out.name + ".parts")


def _load_parts(folder: Path, schema: pa.Schema) -> tuple[list[pa.Table], int]:
    """Tables of the usable parts in ``folder`` and the next part number; stale parts are removed."""
    tables: list[pa.Table] = []
    next_n = 0
    if not folder.is_dir():
        return tables, next_n
    for tmp in folder.glob(".part-*.tmp"):  # left by a killed write
        tmp.unlink(missing_ok=True)
    for part in sorted(folder.glob("part-*.parquet")):
        with contextlib.suppress(ValueError):
            next_n = max(next_n, int(part.stem.split("-", 1)[1]) + 1)
        try:
            meta = pq.read_schema(part).metadata or {}
            if (meta.get(SKELETON_KEY) != schema.metadata[SKELETON_KEY]
                    or meta.get(SETTINGS_KEY) != schema.metadata[SETTINGS_KEY]):
                log.warning("discarding checkpoint %s: made with other pose settings or skeleton", part)
                part.unlink(missing_ok=True)
                continue
            tables.append(pq.read_table(part).cast(schema))
        except (OSError, pa.ArrowException) as exc:
            log.warning("discarding unreadable checkpoint %s: %s", part, exc)
            part.unlink(missing_ok=True)
    return tables, next_n


def _clean_stale_temp(out: Path) -> None:
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):  # a merge killed before its rename
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reuse cache

CACHE_VERSIONS = 3
"""Cached copies kept per shard (the most recent keys: settings switched back are still reused)."""
CACHE_PATH_COLUMN = "clip_path"
CACHE_SHA_COLUMN = "clip_sha256"
_KEY_FILES = ("estimator.py", "extract.py", "skeleton.py", "store.py")
_KEY_ENGINE_FILES = {"openvino": ("openvino_holistic.py",)}
"""Modules that only one engine's keypoints depend on (so editing them keeps the other's cache)."""
_KEY_DISTRIBUTIONS = ("mediapipe", "av", "numpy", "openvino", "opencv-contrib-python")


def reuse_key(schema: pa.Schema) -> str:
    """16 hex digits naming what determines a clip's row besides the clip file itself.

    The shard ``schema``'s skeleton and settings metadata, the source of the pose modules
    (:data:`_KEY_FILES`, and the engine's own modules in :data:`_KEY_ENGINE_FILES`) and the installed versions of mediapipe, PyAV, numpy, OpenVINO and OpenCV. Any change
    gives a new key, so rows made another way are never reused.
    """
    digest = hashlib.sha256()
    meta = schema.metadata or {}
    for part in (meta.get(SKELETON_KEY, b""), meta.get(SETTINGS_KEY, b"")):
        digest.update(part + b"\0")
    here = Path(__file__).resolve().parent
    engine = json.loads(meta.get(SETTINGS_KEY, b"{}") or b"{}").get("estimator", DEFAULT_ESTIMATOR)
    for name in _KEY_FILES + _KEY_ENGINE_FILES.get(engine, ()):
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    for dist in _KEY_DISTRIBUTIONS:
        try:
            digest.update(f"{dist}=={version(dist)}\0".encode())
        except PackageNotFoundError:
            digest.update(f"{dist} missing\0".encode())
    return digest.hexdigest()[:16]


def cache_path(cache_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], key: str) -> Path:
    """The cached copy of shard ``out_path`` made under ``key``: ``<cache_dir>/<shard>.<key>.parquet``."""
    return Path(cache_dir) / f"{Path(out_path).stem}.{key}.parquet"


def clip_digests(todo: list[tuple[str, str | None]]) -> dict[str, tuple[str, str]]:
    """``sample_id -> (clip_path, sha256 of the clip file)`` for the clips whose file exists."""
    out: dict[str, tuple[str, str]] = {}
    for sid, path in todo:
        if path is not None and os.path.isfile(path):
            out[sid] = (path, sha256_of(path))
    return out


def _load_cached(path: Path, schema: pa.Schema, digests: Mapping[str, tuple[str, str]]) -> pa.Table | None:
    """Rows of the cached shard ``path`` whose clip (path and sha256) is unchanged, cast to ``schema``."""
    if not path.is_file() or not digests:
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
        if meta.get(SKELETON_KEY) != schema.metadata[SKELETON_KEY] or meta.get(SETTINGS_KEY) != schema.metadata[SETTINGS_KEY]:
            log.warning("ignoring cached shard %s: made with other pose settings or skeleton", path)
            return None
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        log.warning("ignoring unreadable cached shard %s: %s", path, exc)
        return None
    ids = table.column("sample_id").to_pylist()
    paths = table.column(CACHE_PATH_COLUMN).to_pylist()
    shas = table.column(CACHE_SHA_COLUMN).to_pylist()
    keep = [digests.get(sid) == (p, sha) for sid, p, sha in zip(ids, paths, shas)]
    if not any(keep):
        return None
    table = table.filter(pa.array(keep, type=pa.bool_()))
    return table.select(schema.names).cast(schema)


def _write_cache(path: Path, merged: pa.Table, digests: Mapping[str, tuple[str, str]]) -> None:
    """Store the rows of ``merged`` whose clip file was hashed, with its path and sha256; prune old keys."""
    ids = merged.column("sample_id").to_pylist()
    keep = [sid in digests for sid in ids]
    table = merged.filter(pa.array(keep, type=pa.bool_()))
    kept = table.column("sample_id").to_pylist()
    table = table.append_column(pa.field(CACHE_PATH_COLUMN, pa.string(), nullable=False),
                                pa.array([digests[sid][0] for sid in kept], type=pa.string()))
    table = table.append_column(pa.field(CACHE_SHA_COLUMN, pa.string(), nullable=False),
                                pa.array([digests[sid][1] for sid in kept], type=pa.string()))
    write_table(table, path)
    shard = path.name.split(".", 1)[0]
    older = sorted((p for p in path.parent.glob(f"{shard}.*.parquet") if p != path),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in older[CACHE_VERSIONS - 1:]:
        stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------- shard


def _items(clips: pd.DataFrame) -> tuple[list[tuple[str, str | None]], list[ClipPose]]:
    """``(sample_id, clip_path)`` of the usable rows (status ``usable`` from the acquire stage,
    or ``ok``), and records of the others."""
    missing = [c for c in ("sample_id", "clip_path", "status") if c not in clips.columns]
    if missing:
        raise KeyError(f"clips table lacks column(s) {missing}")
    ids = clips["sample_id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"clips table has duplicate sample_id {ids[ids.duplicated()].iloc[0]!r}")
    todo: list[tuple[str, str | None]] = []
    skipped: list[ClipPose] = []
    for row in clips.to_dict("records"):
        sid = str(row["sample_id"])
        if row["status"] in ("usable", "ok"):
            path = row["clip_path"]
            todo.append((sid, None if path is None or (isinstance(path, float) and math.isnan(path)) else str(path)))
        else:
            why = row.get("reason")
            detail = f"clip status {row['status']!r}" + (f" ({why})" if isinstance(why, str) and why else "")
            skipped.append(ClipPose(sid, STATUS_SKIPPED, PoseReason.UNUSABLE_CLIP, detail))
    return todo, skipped


def _results(todo: list[tuple[str, str | None]], settings: PoseSettings) -> Iterator[ClipPose]:
    """Clip records as they finish (in-process for one worker, else from a spawned pool)."""
    if not todo:
        return
    if settings.workers == 1 or len(todo) <= 1:
        estimator = settings.make_estimator()
        for sid, path in todo:
            yield process_clip(estimator, sid, path, frame_step=settings.frame_step)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(settings.workers, len(todo)), mp_context=ctx,
                               initializer=_init_worker, initargs=(settings,))
    try:
        pending: set[Future[ClipPose]] = {pool.submit(_work, item) for item in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()  # a dead worker raises BrokenProcessPool: checkpoints survive
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def extract_pose_shard(clips: pd.DataFrame, out_path: str | os.PathLike[str],
                       settings: PoseSettings, progress: bool = True,
                       cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Extract keypoints of every clip of ``clips`` into the pose shard ``out_path``.

    See the module docs for statuses, checkpointing and resuming; the shard layout is in
    :mod:`sldata.pose.store`.

    Parameters
    ----------
    clips
        Columns ``sample_id``, ``clip_path`` (a trimmed clip video) and ``status`` (only
        ``ok`` rows are processed); an optional ``reason`` column is quoted for skipped rows.
    out_path
        The shard (``.parquet``), written atomically at the end.
    settings
        :class:`PoseSettings`.
    progress
        A progress bar on a terminal; timestamped progress lines in the log otherwise or with
        False (:class:`sldata.progress.Progress`).
    cache_dir
        Folder of cached finished shards (see "Reuse across runs" in the module docs): rows
        of unchanged clips are taken from it and the finished shard is stored in it. ``None``
        extracts every clip and stores nothing.

    Returns
    -------
    dict
        ``out_path``, ``clips`` (rows), ``by_status`` (status -> count), ``resumed`` (clips
        taken from checkpoints), ``reused`` (clips taken from ``cache_dir``), ``processed``
        (clips extracted by this run), ``frames`` (frames extracted by this run), ``seconds``
        and ``frames_per_s``.

    Raises
    ------
    KeyError, ValueError
        Missing columns or duplicate ``sample_id``\\ s in ``clips``.
    """
    out = Path(out_path)
    todo_all, skipped = _items(clips)
    skeleton = settings.skeleton()
    settings_dict = settings.output_dict()
    schema = shard_schema(skeleton, settings_dict)
    folder = parts_dir(out)
    _clean_stale_temp(out)
    part_tables, next_n = _load_parts(folder, schema)
    done_ids = {sid for t in part_tables for sid in t.column("sample_id").to_pylist()}
    todo = [item for item in todo_all if item[0] not in done_ids]
    resumed = len(todo_all) - len(todo)
    if resumed:
        log.info("%s: resuming, %d clip(s) already extracted in %s", out, resumed, folder)
    digests: dict[str, tuple[str, str]] = {}
    cached_file: Path | None = None
    reused_tables: list[pa.Table] = []
    if cache_dir is not None:
        cached_file = cache_path(cache_dir, out, reuse_key(schema))
        digests = clip_digests(todo_all)
        cached = _load_cached(cached_file, schema, {sid: digests[sid] for sid, _ in todo if sid in digests})
        if cached is not None:
            reused_tables.append(cached)
            reused_ids = set(cached.column("sample_id").to_pylist())
            todo = [item for item in todo if item[0] not in reused_ids]
    reused = sum(t.num_rows for t in reused_tables)
    if cache_dir is not None:
        log.info("%s: %d clip(s) reused from %s, %d to extract", out, reused, cached_file, len(todo))

    start = time.perf_counter()
    frames = 0
    buffer: list[ClipPose] = []

    def checkpoint() -> None:
        nonlocal next_n
        if not buffer:
            return
        buffer.sort(key=lambda r: r.sample_id)
        table = records_to_table(buffer, skeleton, settings_dict)
        folder.mkdir(parents=True, exist_ok=True)
        write_table(table, folder / f"part-{next_n:05d}.parquet")
        part_tables.append(table)
        next_n += 1
        buffer.clear()

    bar = Progress(total=len(todo), desc=f"pose {out.stem}", unit="clip", bar=progress)
    try:
        for rec in _results(todo, settings):
            buffer.append(rec)
            frames += rec.num_frames
            if bar is not None:
                bar.update(1)
                bar.set_postfix(frames=frames, fps=f"{frames / max(time.perf_counter() - start, 1e-9):.1f}")
            if len(buffer) >= settings.checkpoint_every:
                checkpoint()
        checkpoint()
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start

    wanted = pa.array(sorted(sid for sid, _ in todo_all), type=pa.string())
    tables = [t.filter(pc.is_in(t.column("sample_id"), value_set=wanted)) for t in part_tables]
    tables.extend(reused_tables)
    tables.append(records_to_table(skipped, skeleton, settings_dict))
    merged = pa.concat_tables(tables)
    ids = merged.column("sample_id").to_pylist()
    if len(set(ids)) != len(ids):  # cannot happen unless parts were edited by hand
        raise ValueError(f"checkpoints in {folder} hold a clip twice; delete the folder and rerun")
    merged = merged.sort_by("sample_id")
    write_table(merged, out, storage=settings.storage)
    if cached_file is not None:
        _write_cache(cached_file, merged, digests)
    shutil.rmtree(folder, ignore_errors=True)

    statuses = merged.column("status").to_pylist()
    by_status = {s: statuses.count(s) for s in sorted(set(statuses))}
    return {"out_path": str(out), "clips": len(ids), "by_status": by_status, "resumed": resumed,
            "reused": reused, "processed": len(todo), "frames": frames, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 2) if seconds > 0 and frames else 0.0}
