"""Frame-accurate trimming, box cropping and re-encoding of clips with PyAV.

Rules
-----
* **Time of a frame** is ``(pts - stream.start_time) * time_base`` (``start_time`` taken as 0
  when unknown, or always with ``relative_to_stream_start=False``): the first frame of a
  video is at 0 s whatever its container offset, matching annotations that count frames
  from the first decoded one. Each frame's own timestamp is used, so variable frame rate
  sources are trimmed correctly.
* **Temporal selection**: exactly the frames with ``start_s <= t < end_s`` are kept,
  comparisons made with a tolerance of :data:`~sldata.acquire.crops.EPS_S` (1 µs) so a
  frame exactly on a boundary counts as on it despite float rounding (``7/25`` s is not
  exactly representable). ``end_s=None`` means to the end.
* **Resampling** (``target_fps``): a regular grid ``g_j = t_first + j / target_fps`` is laid
  over ``[t_first, t_end)``, where ``t_end`` is ``end_s`` or, when earlier, the end of the
  last kept frame (its successor's time, else its own time plus its duration, else plus
  ``1 / native fps``); for each grid time the kept frame with the nearest time is written
  (ties go to the earlier frame). Without resampling every kept frame is written.
  The output is constant frame rate: ``target_fps`` or the source's average rate.
* **Box**: ``normalized`` boxes are multiplied by the real width/height; ``pixel`` boxes are
  rescaled by ``real / annotated`` size when ``annotated_width``/``annotated_height`` are
  known, else taken as pixels of the real video. The box is intersected with the frame
  (a box entirely outside is rejected as ``box_outside_frame``), enlarged about its centre
  by ``box_scale`` and then grown (never shrunk) in one dimension to the target aspect ratio
  (``target_aspect``, else ``out_width / out_height``, else the box's own). Where the
  window exceeds the frame, ``border="shift"`` moves it inside the frame when it fits and
  centres the frame in it when it does not (the excess is padded with ``pad_value``);
  ``border="pad"`` keeps it in place and pads whatever lies outside. Without a box (or with
  ``use_box=False``) the window is the whole frame, grown to the target aspect (letterbox).
* **Output**: resized to ``out_width x out_height`` (both even; INTER_AREA when shrinking,
  INTER_LINEAR when enlarging) or, without a size, the window cut down to even dimensions
  (last column/row dropped); H.264 (``codec``) in mp4, ``yuv420p``, ``crf``/``preset``.
* **Pretrimmed** sources (a store of already trimmed and cropped clips) are never trimmed or
  box-cropped again: with ``pretrimmed=True`` the crop and box are ignored; the file is
  copied byte for byte when no resize or resample is asked (``pretrimmed_copy``), else every
  frame is resized directly to the output size (no aspect change) and/or resampled.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import cv2
import numpy as np
import pandas as pd

from sldata.acquire.crops import EPS_S, REJECT_COLUMNS
from sldata.settings import settings_from_dict
from sldata.atomic import atomic_path, is_out_of_space, write_json
from sldata.progress import Progress


class TrimReason:
    """Reason codes of a clip the trimmer refused (stable strings)."""

    MISSING_SOURCE = "missing_source"
    UNDECODABLE = "undecodable"
    NO_VIDEO_STREAM = "no_video_stream"
    INVALID_CROP = "invalid_crop"
    CROP_OUTSIDE_VIDEO = "crop_outside_video"
    """No frame of the video lies in ``[start_s, end_s)``."""
    TOO_FEW_FRAMES = "too_few_frames"
    INVALID_BOX = "invalid_box"
    BOX_OUTSIDE_FRAME = "box_outside_frame"
    ENCODE_FAILED = "encode_failed"
    ERROR = "error"
    """Any other failure (the detail names the exception)."""


class TrimError(Exception):
    """A clip could not be produced; ``reason`` is a :class:`TrimReason` code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class TrimSettings:
    """Settings of the trimmer (see the module docs for the exact rules).

    Attributes
    ----------
    target_fps:
        Resample to this frame rate (nearest frame to a regular grid); ``None`` keeps all frames.
    use_box:
        Crop to the annotated box when the row has one.
    box_scale:
        Enlargement of the box about its centre (1.0 = the box itself).
    target_aspect:
        Width / height of the crop window; ``None``: ``out_width / out_height`` when both are
        set, else the enlarged box's own aspect.
    border:
        ``"shift"`` or ``"pad"``: how a window reaching outside the frame is handled.
    pad_value:
        Grey level (0-255) of padding.
    out_width, out_height:
        Output size in pixels (both or neither; even). ``None``: the window size, made even.
    codec, crf, preset:
        Encoder name and its quality/speed options.
    pretrimmed_copy:
        For pretrimmed sources needing no resize or resample, copy the file instead of
        re-encoding.
    relative_to_stream_start:
        Measure frame times from the stream's ``start_time`` (see module docs).
    seek_min_s:
        Seek (to the key frame before the crop) when the crop starts later than this; frame
        indices in the provenance are then estimated (``indices_estimated``).
    min_frames:
        Clips with fewer selected frames are rejected (``too_few_frames``).
    """

    target_fps: float | None = None
    use_box: bool = True
    box_scale: float = 1.2
    target_aspect: float | None = None
    border: Literal["shift", "pad"] = "shift"
    pad_value: int = 0
    out_width: int | None = 256
    out_height: int | None = 256
    codec: str = "libx264"
    crf: int = 23
    preset: str = "veryfast"
    pretrimmed_copy: bool = True
    relative_to_stream_start: bool = True
    seek_min_s: float = 30.0
    min_frames: int = 1

    def __post_init__(self) -> None:
        if self.target_fps is not None and not self.target_fps > 0:
            raise ValueError(f"target_fps must be > 0 or None, got {self.target_fps}")
        if not self.box_scale > 0:
            raise ValueError(f"box_scale must be > 0, got {self.box_scale}")
        if self.target_aspect is not None and not self.target_aspect > 0:
            raise ValueError(f"target_aspect must be > 0 or None, got {self.target_aspect}")
        if self.border not in ("shift", "pad"):
            raise ValueError(f"border must be 'shift' or 'pad', got {self.border!r}")
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"pad_value must be in 0..255, got {self.pad_value}")
        if (self.out_width is None) != (self.out_height is None):
            raise ValueError("out_width and out_height must both be set or both be None")
        for name in ("out_width", "out_height"):
            v = getattr(self, name)
            if v is not None and (v < 2 or v % 2):
                raise ValueError(f"{name} must be an even number >= 2 (yuv420p), got {v}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrimSettings:
        """Settings from a mapping; unknown keys raise ``ValueError`` naming them."""
        return settings_from_dict(cls, data)

    @property
    def aspect(self) -> float | None:
        """The effective target aspect (width / height) or ``None``."""
        if self.target_aspect is not None:
            return self.target_aspect
        if self.out_width is not None and self.out_height is not None:
            return self.out_width / self.out_height
        return None


@dataclass(frozen=True)
class Box:
    """An annotated box as in the manifest: ``xyxy`` in ``units`` (``pixel``/``normalized``)."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    units: Literal["pixel", "normalized"]
    annotated_width: float | None = None
    annotated_height: float | None = None


# --------------------------------------------------------------------------- geometry


def box_to_pixels(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """The box in pixels of a ``width x height`` frame, intersected with the frame.

    Raises
    ------
    TrimError
        ``invalid_box`` (unknown units, non-finite, reversed) or ``box_outside_frame``.
    """
    vals = (box.xmin, box.ymin, box.xmax, box.ymax)
    if not all(v is not None and math.isfinite(v) for v in vals):
        raise TrimError(TrimReason.INVALID_BOX, f"box {vals} has missing or non-finite values")
    x0, y0, x1, y1 = (float(v) for v in vals)
    if box.units == "normalized":
        x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
    elif box.units == "pixel":
        aw, ah = box.annotated_width, box.annotated_height
        if aw and ah and math.isfinite(aw) and math.isfinite(ah) and aw > 0 and ah > 0:
            x0, x1, y0, y1 = x0 * width / aw, x1 * width / aw, y0 * height / ah, y1 * height / ah
    else:
        raise TrimError(TrimReason.INVALID_BOX, f"box_units must be 'pixel' or 'normalized', got {box.units!r}")
    if x1 <= x0 or y1 <= y0:
        raise TrimError(TrimReason.INVALID_BOX, f"box {vals} is empty or reversed")
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if cx1 <= cx0 or cy1 <= cy0:
        raise TrimError(TrimReason.BOX_OUTSIDE_FRAME,
                        f"box {(x0, y0, x1, y1)} (pixels) lies outside the {width}x{height} frame")
    return cx0, cy0, cx1, cy1


def crop_window(box_px: tuple[float, float, float, float] | None, width: int, height: int,
                scale: float = 1.2, aspect: float | None = None,
                border: Literal["shift", "pad"] = "shift") -> tuple[int, int, int, int]:
    """Integer crop window ``(x0, y0, x1, y1)`` (may extend outside the frame; see module docs).

    ``box_px=None`` means the whole frame (scale is not applied to it).
    """
    if box_px is None:
        x0f, y0f, x1f, y1f = 0.0, 0.0, float(width), float(height)
        scale = 1.0
    else:
        x0f, y0f, x1f, y1f = box_px
    cx, cy = 0.5 * (x0f + x1f), 0.5 * (y0f + y1f)
    w, h = (x1f - x0f) * scale, (y1f - y0f) * scale
    if aspect is not None:
        if w / h < aspect:
            w = h * aspect
        else:
            h = w / aspect
    wi, hi = max(2, int(round(w))), max(2, int(round(h)))
    x0, y0 = int(round(cx - wi / 2)), int(round(cy - hi / 2))
    if border == "shift":
        x0 = min(max(x0, 0), width - wi) if wi <= width else -((wi - width) // 2)
        y0 = min(max(y0, 0), height - hi) if hi <= height else -((hi - height) // 2)
    return x0, y0, x0 + wi, y0 + hi


def extract_window(image: np.ndarray, window: tuple[int, int, int, int], pad_value: int = 0) -> np.ndarray:
    """Cut ``window`` out of ``image`` (H x W x C), padding what lies outside with ``pad_value``."""
    x0, y0, x1, y1 = window
    h, w = image.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return image[y0:y1, x0:x1]
    out = np.full((y1 - y0, x1 - x0) + image.shape[2:], pad_value, dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def fit_output(image: np.ndarray, out_width: int | None, out_height: int | None) -> np.ndarray:
    """Resize to the output size, or cut to even dimensions when no size is given."""
    h, w = image.shape[:2]
    if out_width is None or out_height is None:
        return image[: h - h % 2, : w - w % 2]
    if (w, h) == (out_width, out_height):
        return image
    interp = cv2.INTER_AREA if out_width * out_height < w * h else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (out_width, out_height), interpolation=interp)


# --------------------------------------------------------------------------- time


def select_in_range(times: Sequence[float], start_s: float, end_s: float | None) -> np.ndarray:
    """Indices of the ``times`` in ``[start_s, end_s)`` (tolerance :data:`EPS_S`)."""
    t = np.asarray(times, dtype=float)
    keep = t >= start_s - EPS_S
    if end_s is not None:
        keep &= t < end_s - EPS_S
    return np.flatnonzero(keep)


def resample_indices(times: Sequence[float], target_fps: float, t_end: float) -> np.ndarray:
    """For the grid ``times[0] + j / target_fps < t_end``, the index of the nearest time each.

    ``times`` must be sorted; ties go to the earlier frame.
    """
    t = np.asarray(times, dtype=float)
    if t.size == 0:
        return np.zeros(0, dtype=int)
    n = max(1, math.ceil((t_end - t[0]) * target_fps - EPS_S * target_fps))
    grid = t[0] + np.arange(n) / target_fps
    right = np.clip(np.searchsorted(t, grid, side="left"), 0, t.size - 1)
    left = np.clip(right - 1, 0, t.size - 1)
    choose_left = np.abs(grid - t[left]) <= np.abs(t[right] - grid) + 1e-12
    return np.where(choose_left, left, right)


def _process(frame: Any, window: tuple[int, int, int, int], settings: TrimSettings) -> np.ndarray:
    """Crop ``window`` out of a decoded frame and fit it to the output size (RGB array)."""
    ow, oh = settings.out_width, settings.out_height
    x0, y0, x1, y1 = window
    fw, fh = frame.width, frame.height
    if ow is not None and oh is not None and x0 <= 0 and y0 <= 0 and x1 >= fw and y1 >= fh:
        # The window holds the whole frame (plus padding): let swscale convert and scale the
        # frame in one pass (much cheaper than a full-size RGB conversion and a resize), then pad.
        sx, sy = ow / (x1 - x0), oh / (y1 - y0)
        px, py = int(round(-x0 * sx)), int(round(-y0 * sy))
        sw, sh = min(ow - px, max(1, int(round(fw * sx)))), min(oh - py, max(1, int(round(fh * sy))))
        interp = "AREA" if sw * sh < fw * fh else "BILINEAR"
        scaled = frame.reformat(width=sw, height=sh, format="rgb24", interpolation=interp).to_ndarray()
        if (sw, sh) == (ow, oh):
            return scaled
        out = np.full((oh, ow, 3), settings.pad_value, dtype=np.uint8)
        out[py:py + sh, px:px + sw] = scaled
        return out
    image = extract_window(frame.to_ndarray(format="rgb24"), window, settings.pad_value)
    return np.ascontiguousarray(fit_output(image, ow, oh))


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(100_000)


# --------------------------------------------------------------------------- one clip


@dataclass
class ClipProvenance:
    """What was done to produce one clip (one row of the provenance table)."""

    sample_id: str
    source_path: str
    output_path: str
    status: str
    pretrimmed: bool
    native_fps: float | None
    native_width: int
    native_height: int
    start_s: float | None
    end_s: float | None
    first_frame_index: int | None
    end_frame_index: int | None
    indices_estimated: bool
    first_frame_time_s: float | None
    last_frame_time_s: float | None
    n_source_frames: int
    n_frames_written: int
    box_units: str | None
    window_x0: int | None
    window_y0: int | None
    window_x1: int | None
    window_y1: int | None
    padded: bool
    out_width: int
    out_height: int
    out_fps: float
    codec: str
    crf: int | None


def _open(src: Path) -> tuple[Any, Any]:
    if not src.is_file():
        raise TrimError(TrimReason.MISSING_SOURCE, f"{src} does not exist")
    if src.stat().st_size == 0:
        raise TrimError(TrimReason.UNDECODABLE, f"{src} is empty (0 bytes)")
    try:
        container = av.open(str(src))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise TrimError(TrimReason.UNDECODABLE, f"cannot open {src}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise TrimError(TrimReason.NO_VIDEO_STREAM, f"{src} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _native_fps(stream: Any) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return None


def _frames(container: Any, stream: Any, settings: TrimSettings, start_s: float) -> Iterator[tuple[int, float, Any]]:
    """Decoded frames as ``(decode index, time s, frame)``; index is -1-based-estimated after a seek."""
    tb = stream.time_base
    origin = stream.start_time if (settings.relative_to_stream_start and stream.start_time is not None) else 0
    seeked = start_s > settings.seek_min_s
    if seeked:
        target = int((start_s - 1.0) / tb) + origin
        container.seek(max(origin, target), stream=stream, backward=True, any_frame=False)
    last_t: float | None = None
    fps = _native_fps(stream) or 25.0
    for i, frame in enumerate(container.decode(stream)):
        if frame.pts is not None:
            t = float((frame.pts - origin) * tb)
        else:  # no timestamp: assume the nominal interval after the previous frame
            t = 0.0 if last_t is None else last_t + 1.0 / fps
        last_t = t
        yield (int(round(t * fps)) if seeked else i), t, frame


def trim_clip(src: str | Path, dst: str | Path, *, start_s: float | None = None, end_s: float | None = None,
              box: Box | None = None, settings: TrimSettings = TrimSettings(), pretrimmed: bool = False,
              sample_id: str = "") -> ClipProvenance:
    """Trim, crop, resize and re-encode one clip; write ``dst`` atomically.

    Parameters
    ----------
    src, dst:
        Source video and output ``.mp4``.
    start_s, end_s:
        The crop on the video's timeline, half-open; ``end_s=None`` = to the end. Ignored
        (must be left ``None`` or not) when ``pretrimmed``.
    box:
        The annotated signer box, or ``None`` for the whole frame. Ignored when ``pretrimmed``.
    settings:
        :class:`TrimSettings`.
    pretrimmed:
        The source is already trimmed and cropped (e.g. ``wlasl100_clips``): never trim or
        crop it again; copy it, or only resize/resample it.

    Returns
    -------
    ClipProvenance

    Raises
    ------
    TrimError
        With a :class:`TrimReason` code when the clip cannot be produced.
    """
    src, dst = Path(src), Path(dst)
    if pretrimmed:
        start_s, end_s, box = 0.0, None, None
    else:
        start_s = 0.0 if start_s is None else float(start_s)
        if not math.isfinite(start_s) or start_s < -EPS_S or (end_s is not None and not end_s > start_s):
            raise TrimError(TrimReason.INVALID_CROP, f"crop [{start_s}, {end_s}) is not a valid interval")
    container, stream = _open(src)
    try:
        native_fps = _native_fps(stream)
        if pretrimmed and settings.pretrimmed_copy and settings.target_fps is None and (
                settings.out_width is None or (settings.out_width, settings.out_height) == (stream.width, stream.height)):
            n = sum(1 for p in container.demux(stream) if p.size)
            if n == 0:
                raise TrimError(TrimReason.UNDECODABLE, f"{src} has no video packets")
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            return ClipProvenance(
                sample_id=sample_id, source_path=str(src), output_path=str(dst), status="copied", pretrimmed=True,
                native_fps=native_fps, native_width=stream.width, native_height=stream.height, start_s=None,
                end_s=None, first_frame_index=0, end_frame_index=n, indices_estimated=False,
                first_frame_time_s=None, last_frame_time_s=None, n_source_frames=n, n_frames_written=n,
                box_units=None, window_x0=None, window_y0=None, window_x1=None, window_y1=None, padded=False,
                out_width=stream.width, out_height=stream.height, out_fps=native_fps or 0.0, codec="copy", crf=None)

        kept: list[np.ndarray] = []
        times: list[float] = []
        first_index = end_index = None
        next_time: float | None = None
        last_duration: float | None = None
        window: tuple[int, int, int, int] | None = None
        windows: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        frame_w = frame_h = 0
        seeked = start_s > settings.seek_min_s
        try:
            for index, t, frame in _frames(container, stream, settings, start_s):
                if t < start_s - EPS_S:
                    continue
                if end_s is not None and t >= end_s - EPS_S:
                    next_time = t
                    break
                size = (frame.width, frame.height)
                if size not in windows:
                    if pretrimmed:
                        windows[size] = (0, 0, frame.width, frame.height)
                    else:
                        box_px = None
                        if box is not None and settings.use_box:
                            box_px = box_to_pixels(box, frame.width, frame.height)
                        windows[size] = crop_window(box_px, frame.width, frame.height, settings.box_scale,
                                                    settings.aspect, settings.border)
                window = windows[size]
                frame_w, frame_h = size
                kept.append(_process(frame, window, settings))
                times.append(t)
                if first_index is None:
                    first_index = index
                end_index = index + 1
                if frame.duration:
                    last_duration = float(frame.duration * stream.time_base)
        except av.FFmpegError as exc:
            raise TrimError(TrimReason.UNDECODABLE, f"decoding {src} failed: {exc}") from exc
    finally:
        container.close()

    if not kept:
        raise TrimError(TrimReason.CROP_OUTSIDE_VIDEO, f"no frame of {src} lies in [{start_s}, {end_s})")
    if len(kept) < settings.min_frames:
        raise TrimError(TrimReason.TOO_FEW_FRAMES, f"{len(kept)} frame(s) < min_frames {settings.min_frames}")

    if settings.target_fps is not None:
        step = last_duration or (1.0 / native_fps if native_fps else 1.0 / settings.target_fps)
        frame_end = next_time if next_time is not None else times[-1] + step
        t_end = frame_end if end_s is None else min(end_s, frame_end)
        chosen = resample_indices(times, settings.target_fps, t_end)
        out_fps = float(settings.target_fps)
    else:
        chosen = np.arange(len(kept))
        out_fps = native_fps or 25.0
    out_h, out_w = kept[0].shape[:2]

    try:
        with atomic_path(dst) as tmp:
            write_frames(tmp, (kept[i] for i in chosen), out_fps, settings)
    except av.FFmpegError as exc:
        raise TrimError(TrimReason.ENCODE_FAILED, f"encoding {dst} failed: {exc}") from exc

    assert window is not None
    padded = window[0] < 0 or window[1] < 0 or window[2] > frame_w or window[3] > frame_h
    return ClipProvenance(
        sample_id=sample_id, source_path=str(src), output_path=str(dst), status="written", pretrimmed=pretrimmed,
        native_fps=native_fps, native_width=frame_w, native_height=frame_h, start_s=None if pretrimmed else start_s,
        end_s=end_s, first_frame_index=first_index, end_frame_index=end_index, indices_estimated=seeked,
        first_frame_time_s=times[0], last_frame_time_s=times[-1], n_source_frames=len(kept),
        n_frames_written=int(len(chosen)), box_units=None if (box is None or not settings.use_box) else box.units,
        window_x0=window[0], window_y0=window[1], window_x1=window[2], window_y1=window[3], padded=padded,
        out_width=int(out_w), out_height=int(out_h), out_fps=out_fps, codec=settings.codec, crf=settings.crf)


def write_frames(path: str | Path, frames: Iterator[np.ndarray] | Sequence[np.ndarray], fps: float,
                 settings: TrimSettings = TrimSettings()) -> int:
    """Encode RGB frames (all the same even size) to an mp4 at constant ``fps``; return the count."""
    n = 0
    with av.open(str(path), mode="w", format="mp4") as out:
        stream = None
        for image in frames:
            if stream is None:
                stream = out.add_stream(settings.codec, rate=_rate(fps))
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(settings.crf), "preset": settings.preset}
            vf = av.VideoFrame.from_ndarray(image, format="rgb24")
            vf.pts = n
            vf.time_base = Fraction(1) / _rate(fps)
            for packet in stream.encode(vf):
                out.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return n


# --------------------------------------------------------------------------- batch


def _value(row: Mapping[str, Any], name: str) -> Any:
    v = row.get(name)
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return v


def box_from_row(row: Mapping[str, Any]) -> Box | None:
    """The row's :class:`Box`, or ``None`` when it has none (null ``box_units``)."""
    units = _value(row, "box_units")
    if units is None:
        return None
    vals = [_value(row, c) for c in ("box_xmin", "box_ymin", "box_xmax", "box_ymax")]
    return Box(*[float(v) if v is not None else float("nan") for v in vals], units=units,
               annotated_width=_value(row, "annotated_width"), annotated_height=_value(row, "annotated_height"))


def trim_clips(rows: pd.DataFrame, source_paths: Mapping[str, str | Path], out_dir: str | Path,
               settings: TrimSettings = TrimSettings(), *, pretrimmed: bool = False,
               key_column: str = "source_key", start_col: str = "clip_start_s", end_col: str = "clip_end_s",
               progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trim many clips to ``out_dir/<sample_id>.mp4``, resuming and never failing on one clip.

    Each clip's provenance is written beside it as ``<sample_id>.json`` after the video
    (both atomically); a clip whose video and JSON both exist is skipped and its stored
    provenance reported with ``status="skipped_existing"``. A clip that fails is recorded
    as a reject (``sample_id, stage="trim", reason, detail``) and the batch goes on.

    Parameters
    ----------
    rows:
        Manifest rows with ``sample_id``, ``key_column``, the crop columns ``start_col``/
        ``end_col`` (seconds on the real timeline, e.g. from
        :func:`sldata.acquire.crops.clean_crops`; not needed when ``pretrimmed``) and the box
        columns.
    source_paths:
        ``row[key_column] -> path`` of the source video (``source_key`` for downloaded
        videos; ``sample_id`` for a store of pretrimmed clips).
    pretrimmed:
        The sources are already trimmed and cropped: see :func:`trim_clip`.

    Returns
    -------
    provenance, rejects:
        One row per produced (or skipped) clip with the :class:`ClipProvenance` fields, and
        the rejects with :data:`~sldata.acquire.crops.REJECT_COLUMNS`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    rejects: list[dict[str, str]] = []
    if not pretrimmed:
        missing = [c for c in (start_col, end_col) if c not in rows.columns]
        if missing:
            raise KeyError(f"rows lack the crop column(s) {missing}; run the crop cleaning first or pass start_col/end_col")
    items = rows.to_dict("records")
    bar = Progress(items, desc=f"trim {out_dir.parent.name}", unit="clip", bar=progress)
    for row in bar:
        sample_id = str(row["sample_id"])
        dst = out_dir / f"{sample_id}.mp4"
        meta = out_dir / f"{sample_id}.json"
        if dst.is_file() and meta.is_file():
            try:
                record = json.loads(meta.read_text(encoding="utf-8"))
                record["status"] = "skipped_existing"
                records.append(record)
                continue
            except (OSError, ValueError):
                pass  # unreadable provenance: redo the clip
        key = _value(row, key_column)
        src = source_paths.get(str(key)) if key is not None else None
        try:
            if src is None:
                raise TrimError(TrimReason.MISSING_SOURCE, f"no source path for {key_column}={key!r}")
            if pretrimmed:
                prov = trim_clip(src, dst, settings=settings, pretrimmed=True, sample_id=sample_id)
            else:
                start = _value(row, start_col)
                end = _value(row, end_col)
                prov = trim_clip(src, dst, start_s=None if start is None else float(start),
                                 end_s=None if end is None else float(end), box=box_from_row(row),
                                 settings=settings, sample_id=sample_id)
        except TrimError as exc:
            rejects.append({"sample_id": sample_id, "stage": "trim", "reason": exc.reason, "detail": exc.detail})
            continue
        except OSError as exc:
            if is_out_of_space(exc):  # the disk, not the clip: stop rather than record a good clip as failed
                raise
            rejects.append({"sample_id": sample_id, "stage": "trim", "reason": TrimReason.ERROR,
                            "detail": f"{type(exc).__name__}: {exc}"})
            continue
        except Exception as exc:  # one bad clip must not stop the batch; keep the evidence
            rejects.append({"sample_id": sample_id, "stage": "trim", "reason": TrimReason.ERROR,
                            "detail": f"{type(exc).__name__}: {exc}"})
            continue
        record = asdict(prov)
        write_json(meta, record)
        records.append(record)
    columns = list(ClipProvenance.__dataclass_fields__)
    prov_df = pd.DataFrame(records, columns=columns)
    rej_df = pd.DataFrame(rejects, columns=REJECT_COLUMNS)
    return prov_df, rej_df
