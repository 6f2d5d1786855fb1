"""Frame extraction into compact shards: one array (or one table) per shard, never a file per frame.

A shard is a folder written by :func:`extract_frames_shard` from a table of clips and read back
with :class:`FrameStore`:

``npy`` storage (the default)
    ``frames.npy``: one ``uint8`` array ``[total_frames, size, size, 3]`` (RGB), every clip's
    frames one after the other (nanoGPT-style: open it with ``np.load(mmap_mode="r")`` and slice).
    It is written to a temporary name by appending after a numpy header whose ``shape[0]`` is
    filled in at the end (faster than filling an ``open_memmap``: the total is unknown until
    every clip is decoded, and page-faulting a new memory map measured 2.4x slower than
    ``write``), then renamed into place.
``jpeg_parquet`` storage
    ``frames.parquet``: one row per clip (``sample_id``, ``fps``, ``frames``: ``list<binary>`` of
    JPEG images made by :func:`cv2.imencode` at ``jpeg_quality``), in row groups of
    :data:`JPEG_ROW_GROUP_CLIPS` clips so that one clip is read without reading the shard. The
    file is zstd-compressed, JPEG column included: although JPEG data is already compressed,
    every small JPEG repeats the same quantization and Huffman tables, and zstd measured 32 %
    smaller than no compression (2,213 against 3,265 bytes per 112x112 frame).
Both storages
    ``index.parquet`` (written last, so its presence marks a complete shard): one row per input
    clip with ``sample_id, offset, length, fps, src_width, src_height, status, reason,
    n_decoded, n_undecodable, clip_path``; ``offset``/``length`` locate the clip's frames in
    ``frames.npy`` (for ``jpeg_parquet`` ``offset`` is the same running frame count, and the
    frames are the clip's row of ``frames.parquet``). ``status`` is ``"ok"`` (frames stored),
    ``"failed"`` (``reason`` names the file and the error, ``length`` 0) or ``"skipped"`` (the
    input row's own status was neither ``"ok"`` nor the acquire stage's ``"usable"``).

Rules
-----
* **Time of a frame** is ``(pts - stream.start_time) * time_base`` (``start_time`` taken as 0 when
  unknown); a frame without a timestamp is put one nominal interval after the previous one, and
  a timestamp earlier than the previous frame's is raised to it (so ties go to the earlier frame).
* **Sampling** (``target_fps``): a regular grid ``g_j = t_first + j / target_fps`` is laid over
  ``[t_first, t_end)``, ``t_end`` being the last frame's time plus its duration (else plus
  ``1 / native fps``); for each grid time the decoded frame nearest in time is stored, ties to
  the earlier frame. This is exactly :func:`sldata.acquire.trim.resample_indices`, done while
  streaming (only the picked frames are resized and kept). A 25 fps clip of ``N`` frames sampled at 12.5 fps
  gives ``ceil(N / 2)`` frames (0, 2, 4, ...). ``target_fps=None`` stores every decoded frame and
  records the stream's average rate as ``fps``.
* **Resize**: a square source (the WLASL100 clips are 256x256) is resized plainly to
  ``size x size`` by area averaging (``INTER_LINEAR``/bilinear when enlarging). A source that is
  not square is letterboxed: its longer side is resized to ``size`` keeping the aspect ratio and
  the result is centred on black (0) padding, so nothing is cropped or distorted. By default
  the area averaging is FFmpeg's libswscale ``area`` filter, fused with the YUV to RGB
  conversion; ``resize="opencv"`` uses ``cv2.resize(..., INTER_AREA)`` on the full-size RGB
  frame instead (the two differ by < 1 grey level on average), at less than half the speed
  (see :attr:`FrameSettings.resize` and the measurements).
* **Threads**: clips are decoded on :func:`default_workers` threads (PyAV and OpenCV release
  the GIL), each decoder with ``thread_type="AUTO"``; results are written in input order, so the
  shard does not depend on the number of threads.
* **Tolerant decoding**: a packet that fails to decode is counted in ``n_undecodable`` and
  skipped; the clip is still ``"ok"`` when at least one frame decoded. A clip that cannot be
  opened, has no video stream, or yields no frame is ``"failed"`` with the reason in the index;
  the shard goes on.

Measurements
------------
``python bench/bench_frames.py --clips 300 --repeat 3``: 300 WLASL100 clips (18,835 frames,
256x256 mpeg4, 25 fps), ``size=112``, all frames kept, default settings otherwise; best of 3
interleaved runs on a shared 2-core CPU (load average 5-7 from other jobs, so absolute numbers
are pessimistic and the ratios are the useful part). Write speed = decode + resize + store;
random read = 200 clips in random order through :class:`FrameStore`, each copied into memory.

==========================  ===============  ==============  ========  ===================
variant                     bytes per frame  write frames/s  vs bare   random clip reads/s
==========================  ===============  ==============  ========  ===================
bare PyAV decode to RGB     --               5,193           1.00x     --
npy (default)               37,632           4,526           0.87x     2,075
jpeg_parquet (q=90, zstd)   2,213            3,388           0.65x     89
npy, ``resize="opencv"``    37,632           1,829           0.35x     --
==========================  ===============  ==============  ========  ===================

(The bare loop converts through one ``VideoReformatter`` per clip; the common
``frame.to_ndarray(format="rgb24")`` ran at only 884 frames/s, as it builds a new scaler for
every frame.) ``npy`` is the default: it extracts at 0.87x of bare decoding (target >= 0.5x) and
is read ~23x faster (a slice of a memory map, no JPEG decoding in the training loop); WLASL100
at 112x112 is ~4 GB. ``jpeg_parquet`` is 17x smaller and is the choice when disk or transfer
size matters more than read speed (large subsets, bigger ``size``).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import av
import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from av.video.reformatter import VideoReformatter

from sldata.atomic import atomic_path
from sldata.progress import Progress
from sldata.settings import settings_from_dict

Storage = Literal["npy", "jpeg_parquet"]
STORAGES: tuple[str, ...] = ("npy", "jpeg_parquet")
Resize = Literal["swscale", "opencv"]
RESIZERS: tuple[str, ...] = ("swscale", "opencv")

FRAMES_NPY = "frames.npy"
FRAMES_PARQUET = "frames.parquet"
INDEX_PARQUET = "index.parquet"
USABLE_STATUSES: tuple[str, ...] = ("usable", "ok")
"""Input ``status`` values whose clips are decoded (``usable`` from the acquire stage, or ``ok``)."""

INDEX_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("offset", pa.int64()),
    ("length", pa.int64()),
    ("fps", pa.float64()),
    ("src_width", pa.int32()),
    ("src_height", pa.int32()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("n_decoded", pa.int64()),
    ("n_undecodable", pa.int64()),
    ("clip_path", pa.string()),
])
"""Columns of ``index.parquet`` (see the module docs)."""

JPEG_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("fps", pa.float64()),
    ("frames", pa.list_(pa.binary())),
])
"""Columns of ``frames.parquet`` (``jpeg_parquet`` storage)."""

JPEG_ROW_GROUP_CLIPS = 8
"""Clips per row group of ``frames.parquet``: small, so a random clip read decodes little else."""

JPEG_COMPRESSION = "zstd"
"""Parquet codec of the JPEG column: zstd measured 32 % smaller than none (every small JPEG
repeats the same ~600 bytes of quantization and Huffman tables, which zstd removes)."""
"""Clips per row group of ``frames.parquet``: small, so a random clip read decodes little else."""

_TIME_EPS = 1e-6  # 1 µs, as sldata.acquire.crops.EPS_S


@dataclass(frozen=True)
class FrameSettings:
    """Settings of the frame extractor.

    Attributes
    ----------
    target_fps:
        Sample to this frame rate (nearest frame to a regular grid); ``None`` keeps all frames.
    size:
        Side of the square output frames in pixels (e.g. 112).
    storage:
        ``"npy"`` (one memory-mappable array) or ``"jpeg_parquet"`` (JPEG bytes in parquet).
    jpeg_quality:
        JPEG quality 1-100 of the ``jpeg_parquet`` storage.
    resize:
        ``"swscale"`` (default): FFmpeg's libswscale converts YUV to RGB and area-averages down
        to the output size in one pass (``"area"`` filter; bilinear when enlarging);
        ``"opencv"``: full-size RGB conversion, then ``cv2.resize`` with ``INTER_AREA``
        (``INTER_LINEAR`` when enlarging). Both are area averaging (mean absolute difference
        ~0.7 grey level on WLASL100 frames); OpenCV's non-integer ``INTER_AREA`` costs ~270 µs
        per 256x256 frame against ~80 µs for the fused swscale pass, which would hold extraction
        under half the speed of bare decoding (see the measurements).
    """

    target_fps: float | None
    size: int
    storage: Storage
    jpeg_quality: int
    resize: Resize

    def __post_init__(self) -> None:
        if self.target_fps is not None and (isinstance(self.target_fps, bool)
                                            or not isinstance(self.target_fps, (int, float))
                                            or not math.isfinite(self.target_fps) or not self.target_fps > 0):
            raise ValueError(f"target_fps must be a finite number > 0 or None, got {self.target_fps!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be an integer >= 1, got {self.size!r}")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {self.storage!r}")
        if isinstance(self.jpeg_quality, bool) or not isinstance(self.jpeg_quality, int) \
                or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be an integer in 1..100, got {self.jpeg_quality!r}")
        if self.resize not in RESIZERS:
            raise ValueError(f"resize must be one of {', '.join(RESIZERS)}, got {self.resize!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrameSettings:
        """Settings from a mapping (``params.yaml``); unknown keys raise ``ValueError`` naming them."""
        return settings_from_dict(cls, data, label="frames")


class ClipDecodeError(Exception):
    """A clip gave no frame: unreadable, no video stream, or nothing decodable (names the file)."""


@dataclass
class ClipFrames:
    """The frames of one clip as stored, with what the decoder saw.

    Attributes
    ----------
    frames:
        ``uint8 [T, size, size, 3]`` RGB.
    fps:
        Frame rate of ``frames``: ``target_fps`` or the stream's average rate.
    src_width, src_height:
        Size of the decoded source frames.
    n_decoded:
        Frames the decoder produced (before sampling).
    n_undecodable:
        Packets that failed to decode and were skipped.
    times:
        Source time (s) of each decoded frame, as used for sampling.
    """

    frames: np.ndarray
    fps: float
    src_width: int
    src_height: int
    n_decoded: int
    n_undecodable: int
    times: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- decoding


def _letterbox_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Size of a ``width x height`` image fitted inside ``size x size`` keeping its aspect."""
    if width == height:
        return size, size
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _pad_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre ``image`` on a black ``size x size`` canvas (no-op when it already is that size)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    out = np.zeros((size, size, 3), dtype=np.uint8)
    x0, y0 = (size - w) // 2, (size - h) // 2
    out[y0:y0 + h, x0:x0 + w] = image
    return out


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB ``H x W x 3`` image to ``size x size`` with OpenCV: plainly when square, else letterboxed.

    ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when enlarging (see the module docs).
    """
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(image)
    nw, nh = _letterbox_size(w, h, size)
    interp = cv2.INTER_AREA if nw * nh < w * h else cv2.INTER_LINEAR
    return _pad_square(cv2.resize(image, (nw, nh), interpolation=interp), size)


def _frame_to_square(frame: Any, size: int, resize: str, reformatter: VideoReformatter) -> np.ndarray:
    """A decoded frame as RGB ``size x size`` (see :attr:`FrameSettings.resize`)."""
    if resize == "opencv":
        # Through the clip's reformatter, one thread: ``frame.to_ndarray(format=...)`` builds a
        # new (multi-threaded) scaler for every frame, measured ~4x slower in wall time (PyAV 18).
        return fit_square(reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray(), size)
    w, h = frame.width, frame.height
    nw, nh = _letterbox_size(w, h, size)
    interp = "AREA" if nw * nh < w * h else "BILINEAR"
    scaled = reformatter.reformat(frame, width=nw, height=nh, format="rgb24", interpolation=interp).to_ndarray()
    return _pad_square(scaled, size)


def _native_fps(stream: Any) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return None


def _decoded_frames(container: Any, stream: Any, counts: dict[str, int]) -> Iterator[Any]:
    """Decoded frames of ``stream``; a packet that fails to decode is counted and skipped."""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.FFmpegError:
            counts["undecodable"] += 1
            continue
        yield from frames


def decode_clip(path: str | os.PathLike[str], settings: FrameSettings) -> ClipFrames:
    """Decode, sample and resize one clip (see the module docs for the rules).

    Raises
    ------
    ClipDecodeError
        When the clip cannot be opened, has no video stream, or yields no frame; the message
        names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ClipDecodeError(f"{path}: file does not exist")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ClipDecodeError(f"{path}: cannot open: {exc}") from exc
    try:
        if not container.streams.video:
            raise ClipDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        # Times as integer products over one division: as exact as Fraction arithmetic, ~10x cheaper.
        tb_num, tb_den = (tb.numerator, tb.denominator) if tb is not None else (0, 1)
        origin = stream.start_time if stream.start_time is not None else 0
        native = _native_fps(stream)
        nominal_step = 1.0 / native if native else (1.0 / settings.target_fps if settings.target_fps else 0.04)
        size = settings.size
        counts = {"undecodable": 0}
        reformatter = VideoReformatter()  # one per clip: keeps its scaler context between frames
        out: list[np.ndarray] = []
        times: list[float] = []
        src_w = src_h = 0
        last_duration: float | None = None
        # Streaming nearest-frame sampling: ``prev`` is the previous decoded frame; the grid
        # points up to the current frame's time are settled between it and the current frame.
        # A frame is resized only when the grid picks it (``[time, frame, image or None]``).
        fps_t = settings.target_fps
        t0: float | None = None
        j = 0  # next grid index
        prev: list[Any] | None = None

        def image_of(entry: list[Any]) -> np.ndarray:
            if entry[2] is None:
                entry[2] = _frame_to_square(entry[1], size, settings.resize, reformatter)
            return entry[2]

        try:
            for frame in _decoded_frames(container, stream, counts):
                if frame.pts is not None and tb is not None:
                    t = (frame.pts - origin) * tb_num / tb_den
                else:
                    t = times[-1] + nominal_step if times else 0.0
                if times and t < times[-1]:
                    t = times[-1]
                times.append(t)
                if frame.duration and tb is not None:
                    last_duration = frame.duration * tb_num / tb_den
                src_w, src_h = frame.width, frame.height
                if fps_t is None:
                    out.append(_frame_to_square(frame, size, settings.resize, reformatter))
                    continue
                cur: list[Any] = [t, frame, None]
                if t0 is None:
                    t0 = t
                while (g := t0 + j / fps_t) <= t + 1e-12:
                    pick = cur if prev is None or g - prev[0] > t - g + 1e-12 else prev
                    out.append(image_of(pick))
                    j += 1
                prev = cur
        except av.FFmpegError as exc:  # demuxing broke off: keep what decoded, count the rest as lost
            counts["undecodable"] += 1
            if not times:
                raise ClipDecodeError(f"{path}: decoding failed: {exc}") from exc
        if not times:
            detail = f" ({counts['undecodable']} undecodable packet(s))" if counts["undecodable"] else ""
            raise ClipDecodeError(f"{path}: no decodable frame{detail}")
        if fps_t is not None:
            assert prev is not None and t0 is not None
            t_end = times[-1] + (last_duration or nominal_step)
            n = max(1, math.ceil((t_end - t0) * fps_t - _TIME_EPS * fps_t))
            while j < n:  # grid points after the last frame: the last frame is the nearest
                out.append(image_of(prev))
                j += 1
            del out[n:]
        fps_out = float(fps_t) if fps_t is not None else (native or 25.0)
        return ClipFrames(frames=np.stack(out), fps=fps_out, src_width=src_w, src_height=src_h,
                          n_decoded=len(times), n_undecodable=counts["undecodable"], times=times)
    finally:
        container.close()


# --------------------------------------------------------------------------- writers


class _NpyAppender:
    """An ``.npy`` file of ``uint8 [n, *item_shape]`` written by appending, ``n`` fixed at :meth:`close`.

    Frames use ``item_shape = (S, S, 3)``; hand crops (:mod:`sldata.pose.handcrop_stage`)
    ``(2, S, S, 3)``.

    The header is written first for ``n = 0`` and rewritten in place with the final ``n`` on
    close: numpy pads ``.npy`` headers so that their length does not depend on ``shape[0]``
    (room for 21 digits), so the data offset never moves. Appending with ``write`` measured
    ~2.4x faster than filling an ``open_memmap`` (no page fault per 4 KiB page of a new file).
    """

    def __init__(self, path: Path, item_shape: tuple[int, ...]) -> None:
        self.path = path
        self.item_shape = tuple(item_shape)
        self.n = 0
        self.fh = open(path, "wb")
        header = self._header(0)
        self.header_len = len(header)
        self.fh.write(header)

    def _header(self, n: int) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (n, *self.item_shape)})
        return buf.getvalue()

    def append(self, items: np.ndarray) -> int:
        """Append ``items`` (``uint8 [k, *item_shape]``); return the index of the first."""
        if items.dtype != np.uint8 or items.shape[1:] != self.item_shape:
            raise ValueError(f"{self.path}: expected uint8 items of shape {self.item_shape}, "
                             f"got {items.dtype} {items.shape[1:]}")
        self.fh.write(np.ascontiguousarray(items).data)
        offset = self.n
        self.n += len(items)
        return offset

    def close(self) -> None:
        """Write the final header (``shape[0] == n``) and close the file."""
        if self.fh.closed:
            return
        header = self._header(self.n)
        if len(header) != self.header_len:  # pragma: no cover - numpy pads headers for growth
            raise RuntimeError(f"{self.path}: npy header length changed ({len(header)} != {self.header_len})")
        self.fh.seek(0)
        self.fh.write(header)
        self.fh.close()


def encode_jpegs(frames: np.ndarray, quality: int) -> list[bytes]:
    """Each RGB frame of ``frames`` as JPEG bytes (OpenCV, ``quality`` 1-100)."""
    params = [int(cv2.IMWRITE_JPEG_QUALITY), quality]
    out = []
    for i, image in enumerate(frames):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR), params)
        if not ok:  # pragma: no cover - OpenCV failing on a valid uint8 image
            raise RuntimeError(f"JPEG encoding of frame {i} failed")
        out.append(buf.tobytes())
    return out


class _JpegParquet:
    """``frames.parquet`` written clip by clip in row groups of :data:`JPEG_ROW_GROUP_CLIPS`."""

    def __init__(self, path: Path, compression: str = JPEG_COMPRESSION) -> None:
        self.writer = pq.ParquetWriter(path, JPEG_SCHEMA, compression=compression)
        self.rows: list[tuple[str, float, list[bytes]]] = []
        self.n = 0

    def append(self, sample_id: str, fps: float, jpegs: list[bytes]) -> int:
        """Buffer one clip's JPEG frames; return its frame offset (running frame count)."""
        self.rows.append((sample_id, fps, jpegs))
        if len(self.rows) >= JPEG_ROW_GROUP_CLIPS:
            self._flush()
        offset = self.n
        self.n += len(jpegs)
        return offset

    def _flush(self) -> None:
        if self.rows:
            ids, fpss, frames = zip(*self.rows)
            self.writer.write_table(pa.table([list(ids), list(fpss), list(frames)], schema=JPEG_SCHEMA))
            self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


# --------------------------------------------------------------------------- shard


def _index_row(sample_id: str, clip_path: str, status: str, reason: str, offset: int = 0, length: int = 0,
               clip: ClipFrames | None = None) -> dict[str, Any]:
    return {"sample_id": sample_id, "offset": offset, "length": length,
            "fps": clip.fps if clip else float("nan"), "src_width": clip.src_width if clip else 0,
            "src_height": clip.src_height if clip else 0, "status": status, "reason": reason,
            "n_decoded": clip.n_decoded if clip else 0, "n_undecodable": clip.n_undecodable if clip else 0,
            "clip_path": clip_path}


def _process(row: Mapping[str, Any], settings: FrameSettings) -> tuple[ClipFrames | None, list[bytes] | None, str]:
    """Decode (and for ``jpeg_parquet`` encode) one clip: ``(clip, jpegs, failure reason)``; never raises."""
    clip_path = str(row["clip_path"])
    try:
        clip = decode_clip(clip_path, settings)
        jpegs = encode_jpegs(clip.frames, settings.jpeg_quality) if settings.storage == "jpeg_parquet" else None
        return clip, jpegs, ""
    except ClipDecodeError as exc:
        return None, None, str(exc)
    except Exception as exc:  # one bad clip must not stop the shard; keep the evidence
        return None, None, f"{clip_path}: {type(exc).__name__}: {exc}"


def _ordered_map(fn: Any, items: list[dict[str, Any]], workers: int) -> Iterator[Any]:
    """``map(fn, items)`` on ``workers`` threads, in order, at most ``2 * workers`` results ahead.

    PyAV and OpenCV release the GIL while decoding, scaling and encoding, so threads overlap.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="frames") as pool:
        pending: deque[Future[Any]] = deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield result


def default_workers() -> int:
    """Decoding threads used by default: the CPUs this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def extract_frames_shard(clips: pd.DataFrame, out_dir: str | os.PathLike[str],
                         settings: FrameSettings, progress: bool = True,
                         workers: int | None = None) -> dict[str, Any]:
    """Decode, sample, resize and store the frames of many clips as one shard in ``out_dir``.

    Parameters
    ----------
    clips:
        Rows with ``sample_id`` (unique), ``clip_path`` and ``status``; only rows whose status is
        in :data:`USABLE_STATUSES` (``"usable"``, as the acquire stage writes, or ``"ok"``) are
        decoded, the others are listed in the index as ``"skipped"``.
    out_dir:
        Shard folder (created); its frame file and ``index.parquet`` are replaced atomically.
    settings:
        :class:`FrameSettings`.
    progress:
        A progress bar on a terminal; timestamped progress lines in the log otherwise or with
        False (:class:`sldata.progress.Progress`).
    workers:
        Clips decoded at once on threads (default :func:`default_workers`); the shard's order
        and content do not depend on it.

    Returns
    -------
    dict
        ``storage, n_clips, n_ok, n_failed, n_skipped, n_frames, n_undecodable, frame_bytes``
        (bytes of the frame file), ``bytes_per_frame``, ``seconds``, ``frames_per_s`` and
        ``frames_path``/``index_path``.

    Raises
    ------
    KeyError
        If a column is missing.
    ValueError
        If ``sample_id`` has duplicates (named).
    """
    missing = [c for c in ("sample_id", "clip_path", "status") if c not in clips.columns]
    if missing:
        raise KeyError(f"clips lack the column(s) {missing}")
    dup = clips["sample_id"][clips["sample_id"].duplicated()].astype(str).unique().tolist()
    if dup:
        raise ValueError(f"duplicate sample_id(s) in clips: {dup[:10]}")
    workers = default_workers() if workers is None else max(1, int(workers))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames_path = out_dir / (FRAMES_NPY if settings.storage == "npy" else FRAMES_PARQUET)
    index_path = out_dir / INDEX_PARQUET
    stale = out_dir / (FRAMES_PARQUET if settings.storage == "npy" else FRAMES_NPY)

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    n_frames = 0
    items = clips[["sample_id", "clip_path", "status"]].to_dict("records")
    todo = [r for r in items if r["status"] in USABLE_STATUSES]
    results = _ordered_map(lambda r: _process(r, settings), todo, workers)  # a generator: has .close()
    bar = Progress(total=len(items), desc=f"frames {out_dir.name}", unit="clip", bar=progress)
    # Both files are written to temporaries first; index.parquet (the completeness mark) is removed
    # just before the frame file is renamed into place and renamed in last, so a kill or a full disk
    # never pairs a new frame file with an old index: the shard is the old one, new or incomplete.
    with contextlib.ExitStack() as stack:
        index_tmp = stack.enter_context(atomic_path(index_path))  # entered first: renamed last
        tmp = stack.enter_context(atomic_path(frames_path))
        writer: _NpyAppender | _JpegParquet = (_NpyAppender(tmp, (settings.size, settings.size, 3)) if settings.storage == "npy"
                                               else _JpegParquet(tmp))
        try:
            for row in items:
                sample_id, clip_path = str(row["sample_id"]), str(row["clip_path"])
                if row["status"] not in USABLE_STATUSES:
                    rows.append(_index_row(sample_id, clip_path, "skipped", f"input status {row['status']!r}"))
                else:
                    clip, jpegs, failure = next(results)
                    if clip is None:
                        rows.append(_index_row(sample_id, clip_path, "failed", failure))
                    else:
                        if isinstance(writer, _NpyAppender):
                            offset = writer.append(clip.frames)
                        else:
                            assert jpegs is not None
                            offset = writer.append(sample_id, clip.fps, jpegs)
                        n_frames += len(clip.frames)
                        reason = f"{clip.n_undecodable} undecodable packet(s) skipped" if clip.n_undecodable else ""
                        rows.append(_index_row(sample_id, clip_path, "ok", reason, offset, len(clip.frames), clip))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(frames=n_frames, refresh=False)
        finally:
            results.close()  # stops the worker threads if the loop broke off
            writer.close()
            if bar is not None:
                bar.close()
        index = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA) if rows else INDEX_SCHEMA.empty_table()
        pq.write_table(index, index_tmp, compression="zstd")
        index_path.unlink(missing_ok=True)
    if stale.exists():  # a shard of the other storage left here would confuse the reader
        stale.unlink()
    seconds = time.perf_counter() - started
    statuses = [r["status"] for r in rows]
    frame_bytes = frames_path.stat().st_size
    return {
        "storage": settings.storage,
        "n_clips": len(rows),
        "n_ok": statuses.count("ok"),
        "n_failed": statuses.count("failed"),
        "n_skipped": statuses.count("skipped"),
        "n_frames": n_frames,
        "n_undecodable": int(sum(r["n_undecodable"] for r in rows)),
        "frame_bytes": frame_bytes,
        "bytes_per_frame": frame_bytes / n_frames if n_frames else float("nan"),
        "seconds": seconds,
        "frames_per_s": n_frames / seconds if seconds > 0 else float("nan"),
        "frames_path": str(frames_path),
        "index_path": str(index_path),
    }


# --------------------------------------------------------------------------- reader


class FrameStore:
    """Read a shard written by :func:`extract_frames_shard`, whatever its storage.

    ``len(store)`` is the number of clips with frames (status ``"ok"``); :attr:`index` has every
    row of ``index.parquet``. ``store.clip(sample_id)`` returns ``uint8 [T, S, S, 3]`` RGB (a
    read-only view of the memory map for ``npy``; decoded JPEGs for ``jpeg_parquet``).
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.path = Path(out_dir)
        index_path = self.path / INDEX_PARQUET
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path} not found: not a complete frame shard")
        self.index: pd.DataFrame = pq.read_table(index_path).to_pandas()
        ok = self.index[self.index["status"] == "ok"]
        self._rows: dict[str, tuple[int, int, float]] = {
            str(s): (int(o), int(n), float(f)) for s, o, n, f in zip(ok["sample_id"], ok["offset"], ok["length"], ok["fps"])}
        npy, pqt = self.path / FRAMES_NPY, self.path / FRAMES_PARQUET
        self._mm: np.ndarray | None = None
        self._pf: pq.ParquetFile | None = None
        if npy.is_file():
            self.storage: Storage = "npy"
            self._mm = np.load(npy, mmap_mode="r")
            total = sum(n for _, n, _ in self._rows.values())
            if self._mm.shape[0] < total:
                raise ValueError(f"{npy} holds {self._mm.shape[0]} frames but {index_path} lists {total}")
        elif pqt.is_file():
            self.storage = "jpeg_parquet"
            self._pf = pq.ParquetFile(pqt)
            self._where: dict[str, tuple[int, int]] = {}
            for rg in range(self._pf.num_row_groups):
                ids = self._pf.read_row_group(rg, columns=["sample_id"]).column(0).to_pylist()
                for k, sid in enumerate(ids):
                    self._where[str(sid)] = (rg, k)
            self._cache: tuple[int, pa.Table] | None = None
        else:
            raise FileNotFoundError(f"{self.path}: neither {FRAMES_NPY} nor {FRAMES_PARQUET} found")

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._rows

    @property
    def sample_ids(self) -> list[str]:
        """Ids of the clips with frames, in shard order."""
        return list(self._rows)

    def fps(self, sample_id: str) -> float:
        """Frame rate of the stored frames of ``sample_id``."""
        return self._row(sample_id)[2]

    def _row(self, sample_id: str) -> tuple[int, int, float]:
        try:
            return self._rows[sample_id]
        except KeyError:
            raise KeyError(f"{sample_id!r} has no frames in {self.path}") from None

    def clip(self, sample_id: str) -> np.ndarray:
        """The frames of ``sample_id``: ``uint8 [T, S, S, 3]`` RGB."""
        offset, length, _ = self._row(sample_id)
        if self._mm is not None:
            return self._mm[offset:offset + length]
        assert self._pf is not None
        try:
            rg, k = self._where[sample_id]
        except KeyError:
            raise KeyError(f"{sample_id!r} is in the index but not in {self.path / FRAMES_PARQUET}") from None
        if self._cache is None or self._cache[0] != rg:
            self._cache = (rg, self._pf.read_row_group(rg, columns=["frames"]))
        blobs = self._cache[1].column(0)[k].values
        frames = [cv2.imdecode(np.frombuffer(b, dtype=np.uint8), cv2.IMREAD_COLOR) for b in blobs.to_pylist()]
        if any(f is None for f in frames):
            raise ValueError(f"{sample_id}: a stored JPEG in {self.path / FRAMES_PARQUET} does not decode")
        return np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]) if frames \
            else np.zeros((0, 0, 0, 3), dtype=np.uint8)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(sample_id, frames)`` of every clip with frames, in shard order."""
        for sample_id in self._rows:
            yield sample_id, self.clip(sample_id)
