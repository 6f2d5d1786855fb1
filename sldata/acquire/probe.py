"""Validate a video file by decoding it (PyAV), not by trusting its name or headers.

A download only counts once :func:`probe_video` has decoded its first frame and a frame near
its end. HTML error pages, Flash ``.swf`` files, empty files and truncated transfers come back
with ``ok=False`` and a typed :class:`ProbeFailure`.

Speed: short videos (declared duration up to ``full_decode_below_s``) are decoded in full, so
``n_frames`` is exact; longer ones are decoded at the start and over their last ``tail_s``
seconds only (``n_frames`` is then the container's count or ``duration * fps``), unless
``count_frames=True`` asks for a full decode.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

# Leading bytes of containers FFmpeg can read: a file starting like this that fails to open
# is a damaged video (truncated_or_undecodable), anything else is not a video at all.
_VIDEO_MAGIC: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),  # ISO BMFF: mp4, mov, m4v, 3gp
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),  # AVI
    (0, b"FLV"),
    (0, b"OggS"),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x00\x00\x01\xb3"),  # MPEG-1/2 elementary
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
)
_SWF_MAGIC = (b"FWS", b"CWS", b"ZWS")
END_TOLERANCE_FRAMES = 4
"""A fully decoded video may yield this many frames (or ``end_tolerance_ratio`` of them) fewer than
its container lists (real WLASL sources decode up to 3 fewer than listed) before it counts as
truncated."""
# FFmpeg demuxers of single images (a JPEG or PNG named .mp4 opens as a one-frame "video"):
# ``image2`` and every ``*_pipe`` (jpeg_pipe, png_pipe, webp_pipe, ...).
_IMAGE_DEMUXERS = ("image2",)
_MARKUP_STARTS = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<!--", b"<meta", b"<script", b"<title")


class ProbeFailure(str, enum.Enum):
    """Why a file is not a usable video."""

    MISSING = "missing"
    EMPTY = "empty_file"
    NOT_A_VIDEO = "not_a_video"  # HTML page, Flash .swf, a still image, unknown bytes
    NO_VIDEO_STREAM = "no_video_stream"  # a media file without video (audio only)
    TRUNCATED_OR_UNDECODABLE = "truncated_or_undecodable"


@dataclass(frozen=True)
class VideoProbe:
    """What decoding a file found.

    Attributes
    ----------
    path
        The probed file.
    ok
        True when a first frame and a frame near the end were decoded.
    failure
        Why not, when ``ok`` is false.
    detail
        Human-readable explanation (the decoder's message, what the bytes looked like).
    size_bytes
        File size.
    duration_s
        Decoded duration: time of the last decodable frame plus one frame, minus the stream
        start; the declared duration when decoding did not get that far.
    declared_duration_s
        Duration stated by the container.
    fps
        Average frame rate of the video stream.
    width, height
        Frame size in pixels.
    codec
        Video codec name (``h264``, ``vp9``, ...).
    container
        FFmpeg demuxer name.
    n_frames
        Decoded frame count when ``n_frames_exact``, else the container's count or an
        estimate (``duration_s * fps``).
    n_frames_exact
        Whether every frame was decoded and counted.
    """

    path: str
    ok: bool
    failure: ProbeFailure | None = None
    detail: str = ""
    size_bytes: int = 0
    duration_s: float | None = None
    declared_duration_s: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    container: str | None = None
    n_frames: int | None = None
    n_frames_exact: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failure"] = self.failure.value if self.failure else None
        return d


def sniff(head: bytes) -> tuple[str, str]:
    """Classify the first bytes of a file: ``("video"|"markup"|"swf"|"unknown", detail)``."""
    for offset, magic in _VIDEO_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return "video", f"starts like a video container ({magic!r} at byte {offset})"
    if head[:3] in _SWF_MAGIC:
        return "swf", "a Flash .swf file, not a video"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith(_MARKUP_STARTS) or stripped.startswith(b"<"):
        return "markup", "an HTML/XML page, not a video"
    if stripped.startswith((b"{", b"[")):
        return "markup", "a JSON document, not a video"
    return "unknown", f"unrecognised leading bytes {head[:12]!r}"


def _fail(path: Path, size: int, failure: ProbeFailure, detail: str, **meta: Any) -> VideoProbe:
    return VideoProbe(path=str(path), ok=False, failure=failure, detail=detail, size_bytes=size, **meta)


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def probe_video(
    path: str | Path,
    *,
    count_frames: bool = False,
    full_decode_below_s: float = 4.0,
    tail_s: float = 1.0,
    end_tolerance_s: float = 1.0,
    end_tolerance_ratio: float = 0.1,
) -> VideoProbe:
    """Open ``path`` with PyAV and decode enough of it to trust it.

    Parameters
    ----------
    path
        The file to check.
    count_frames
        Decode every frame so ``n_frames`` is exact (slow on long videos).
    full_decode_below_s
        Videos whose declared duration is at most this are decoded in full anyway.
    tail_s
        How far before the declared end to seek for the end check.
    end_tolerance_s, end_tolerance_ratio
        A video whose last decodable frame lies more than
        ``max(end_tolerance_s, end_tolerance_ratio * declared)`` before its declared end is
        truncated; so is a fully decoded one that yields more than
        ``max(END_TOLERANCE_FRAMES, end_tolerance_ratio * listed)`` frames fewer than its
        container lists.

    Returns
    -------
    VideoProbe
        Never raises for a bad file; ``ok`` and ``failure`` say what was found.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return _fail(path, 0, ProbeFailure.MISSING, f"{path}: no such file")
    if size == 0:
        return _fail(path, 0, ProbeFailure.EMPTY, f"{path}: zero-byte file")
    with open(path, "rb") as fh:
        head = fh.read(64)
    kind, why = sniff(head)
    if kind in ("markup", "swf"):
        return _fail(path, size, ProbeFailure.NOT_A_VIDEO, f"{path}: {why}")

    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        failure = ProbeFailure.TRUNCATED_OR_UNDECODABLE if kind == "video" else ProbeFailure.NOT_A_VIDEO
        return _fail(path, size, failure, f"{path}: cannot open ({why}): {exc}")

    with container:
        demuxer = container.format.name or ""
        if demuxer in _IMAGE_DEMUXERS or demuxer.endswith("_pipe"):
            return _fail(path, size, ProbeFailure.NOT_A_VIDEO, f"{path}: a still image ({demuxer}), not a video")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            return _fail(path, size, ProbeFailure.NO_VIDEO_STREAM, f"{path}: no video stream (streams: {kinds})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        tb = stream.time_base
        start = _seconds(stream.start_time, tb) or 0.0
        declared = _seconds(stream.duration, tb)
        if declared is None and container.duration is not None:
            declared = container.duration / 1_000_000
        meta: dict[str, Any] = dict(
            declared_duration_s=declared,
            fps=fps,
            width=stream.codec_context.width or None,
            height=stream.codec_context.height or None,
            codec=stream.codec_context.name,
            container=container.format.name,
        )
        full = count_frames or declared is None or declared <= full_decode_below_s
        try:
            n_decoded, last_time = _decode(container, stream, full=full, declared=declared, start=start, tail_s=tail_s)
        except (av.FFmpegError, OSError, ValueError, RuntimeError) as exc:
            return _fail(path, size, ProbeFailure.TRUNCATED_OR_UNDECODABLE, f"{path}: decoding failed: {exc}", **meta)
        if n_decoded == 0:
            where = "any frame" if full else "a frame near the end"
            return _fail(path, size, ProbeFailure.TRUNCATED_OR_UNDECODABLE, f"{path}: could not decode {where}", **meta)

        frame_dur = 1.0 / fps if fps else 0.0
        duration = (last_time - start + frame_dur) if last_time is not None else declared
        if declared is not None and duration is not None:
            allowed = max(end_tolerance_s, end_tolerance_ratio * declared)
            if duration < declared - allowed:
                return _fail(
                    path,
                    size,
                    ProbeFailure.TRUNCATED_OR_UNDECODABLE,
                    f"{path}: decodable video ends at {duration:.2f}s but the container declares {declared:.2f}s",
                    **meta,
                )
        listed = int(stream.frames or 0)
        if full and listed and n_decoded < listed - max(END_TOLERANCE_FRAMES, end_tolerance_ratio * listed):
            # a short clip cut short can end within end_tolerance_s of its declared end; its
            # index still lists every frame it lost
            return _fail(path, size, ProbeFailure.TRUNCATED_OR_UNDECODABLE,
                         f"{path}: only {n_decoded} of the {listed} frames the container lists could be decoded",
                         **meta)
        if full:
            n_frames, exact = n_decoded, True
        elif stream.frames:
            n_frames, exact = int(stream.frames), False
        else:
            n_frames, exact = (round(duration * fps) if duration and fps else None), False
        return VideoProbe(
            path=str(path),
            ok=True,
            size_bytes=size,
            duration_s=duration,
            n_frames=n_frames,
            n_frames_exact=exact,
            **meta,
        )


def _decode(
    container: Any, stream: Any, *, full: bool, declared: float | None, start: float, tail_s: float
) -> tuple[int, float | None]:
    """Decode all frames, or the first frame plus the last ``tail_s`` seconds.

    Returns the number of frames decoded (in the tail, when not ``full``) and the time of the
    last one.
    """
    last_time: float | None = None
    count = 0
    if full:
        for frame in container.decode(stream):
            count += 1
            if frame.time is not None:
                last_time = frame.time
        return count, last_time
    # first frame
    for _frame in container.decode(stream):
        count = 1
        break
    if count == 0:
        return 0, None
    assert declared is not None
    target = start + max(0.0, declared - tail_s)
    container.seek(int(target / stream.time_base), backward=True, any_frame=False, stream=stream)
    count = 0
    for frame in container.decode(stream):
        count += 1
        if frame.time is not None:
            last_time = frame.time
    return count, last_time
