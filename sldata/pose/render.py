"""Draw keypoints over their clip ("look, don't read"): an MP4 or animated GIF to eyeball.

:func:`render_overlay` decodes a clip with PyAV, draws each frame's skeleton with OpenCV
(:func:`draw_skeleton`: body and hand edges from :meth:`Skeleton.edges`, joints as dots, face
points as small dots; missing points and edges touching them are not drawn) and encodes

* ``.mp4``: H.264 (libx264, yuv420p; odd frame sizes are padded with one black row/column);
* ``.gif``: PyAV's GIF encoder, each frame with its own 256-colour palette (Pillow's
  fast-octree quantizer, no dithering, so the overlay colours stay flat). GIF frame delays are
  whole centiseconds, so a 30 fps clip plays at 100/3 fps;
* ``.png``: a still for reports, :data:`SHEET_FRAMES` keypoint frames spread evenly over the
  clip, side by side (:func:`render_contact_sheet`).

Colours (RGB) are those of :data:`PART_COLORS`: the signer's left hand magenta, right hand
cyan, body green, face yellow. Output is written atomically.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from sldata.atomic import atomic_path
from sldata.pose.skeleton import Skeleton

log = logging.getLogger(__name__)

PART_COLORS: dict[str, tuple[int, int, int]] = {
    "body": (0, 255, 0),
    "left_hand": (255, 0, 255),
    "right_hand": (0, 255, 255),
    "face": (255, 255, 0),
}
"""RGB colour of each part's edges and points."""
DEFAULT_FPS = Fraction(25)
MP4_CRF = 20
MP4_PRESET = "veryfast"
SHEET_FRAMES = 4
"""Frames of a ``.png`` contact sheet."""


def _sizes(width: int, height: int) -> tuple[int, int, int]:
    """Line thickness, joint radius and face-dot radius for a frame of this size."""
    base = max(1, round(min(width, height) / 256))
    return base + 1, base + 1, base


@functools.lru_cache(maxsize=8)
def _layout(skeleton: Skeleton) -> tuple[list[tuple[int, int, str]], list[tuple[str, slice]]]:
    """Edges (with the part they belong to) and part slices, computed once per skeleton."""
    slices = [(part, skeleton.part_slice(part)) for part in skeleton.parts]
    part_of = {i: part for part, sl in slices for i in range(sl.start, sl.stop)}
    return [(a, b, part_of[a]) for a, b in skeleton.edges()], slices


def draw_skeleton(image: np.ndarray, points: np.ndarray, skeleton: Skeleton,
                  min_confidence: float = 0.0) -> np.ndarray:
    """Draw one frame's keypoints on a copy of ``image``.

    Parameters
    ----------
    image
        ``[H, W, 3]`` uint8 RGB frame.
    points
        ``[P, 4]`` keypoints of that frame (normalized x, y as in :mod:`sldata.pose.skeleton`).
    skeleton
        Layout of ``points``.
    min_confidence
        Points below this confidence are treated as missing; missing (NaN) points are never drawn.

    Returns
    -------
    numpy.ndarray
        The frame with edges, joints and face dots drawn (anti-aliased).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8 RGB, got {image.shape} {image.dtype}")
    if points.shape != (skeleton.num_points, 4):
        raise ValueError(f"points must have shape ({skeleton.num_points}, 4) for this skeleton, got {points.shape}")
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    thickness, radius, face_radius = _sizes(w, h)
    ok = ~np.isnan(points[:, :2]).any(1) & (points[:, 3] >= min_confidence) & np.isfinite(points[:, :2]).all(1)
    px = np.zeros((len(points), 2), dtype=np.int64)
    px[ok] = np.round(points[ok, :2] * [w, h]).astype(np.int64)
    # Keep coordinates far outside the frame within what OpenCV accepts.
    px = np.clip(px, -4 * max(w, h), 5 * max(w, h))

    edges, slices = _layout(skeleton)
    for a, b, part in edges:
        if ok[a] and ok[b]:
            cv2.line(out, tuple(map(int, px[a])), tuple(map(int, px[b])), PART_COLORS[part], thickness, cv2.LINE_AA)
    for part, sl in slices:
        r = face_radius if part == "face" else radius
        for i in range(sl.start, sl.stop):
            if ok[i]:
                cv2.circle(out, tuple(map(int, px[i])), r, PART_COLORS[part], -1, cv2.LINE_AA)
    return out


def _decode(video_path: Path, step: int = 1) -> tuple[Iterator[np.ndarray], Fraction | None,
                                                      av.container.InputContainer]:
    """Every ``step``-th decoded frame (0, step, 2*step, ...) as RGB, the stream's rate, the container."""
    container = av.open(os.fspath(video_path))
    if not container.streams.video:
        container.close()
        raise ValueError(f"{video_path} has no video stream")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    frames = (fr.to_ndarray(format="rgb24") for i, fr in enumerate(container.decode(stream)) if i % step == 0)
    return frames, (Fraction(rate) if rate else None), container


def _even(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)))


def _gif_frame(image: np.ndarray) -> av.VideoFrame:
    """A pal8 frame with an adaptive palette for ``image``."""
    quant = Image.fromarray(image).quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    pal = np.zeros((256, 3), dtype=np.uint8)
    rgb = np.asarray(quant.getpalette() or [], dtype=np.uint8).reshape(-1, 3)[:256]
    pal[: len(rgb)] = rgb
    argb = np.concatenate([np.full((256, 1), 255, dtype=np.uint8), pal], axis=1)
    return av.VideoFrame.from_ndarray((np.asarray(quant, dtype=np.uint8), argb), format="pal8")


def sheet_indices(num_frames: int, count: int = SHEET_FRAMES) -> list[int]:
    """``count`` frame indices spread evenly over ``num_frames`` (centres of equal segments)."""
    if num_frames < 1:
        return []
    count = min(count, num_frames)
    return sorted({int((i + 0.5) * num_frames / count) for i in range(count)})


def render_contact_sheet(video_path: str | os.PathLike[str], keypoints: np.ndarray, skeleton: Skeleton,
                         out_path: str | os.PathLike[str], frames: int = SHEET_FRAMES, min_confidence: float = 0.0,
                         frame_step: int = 1) -> int:
    """Write a PNG of ``frames`` keypoint frames of the clip, skeleton drawn, side by side.

    The frames are spread evenly over the keypoint frames (:func:`sheet_indices`); arguments
    are as for :func:`render_overlay`. Returns the number of frames drawn.
    """
    kp = np.asarray(keypoints)
    if kp.ndim != 3 or kp.shape[1:] != (skeleton.num_points, 4):
        raise ValueError(f"keypoints must have shape [frames, {skeleton.num_points}, 4] for a skeleton with "
                         f"face={skeleton.face!r}, got {kp.shape}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    decoded, _, container = _decode(Path(video_path), int(frame_step))
    with container:
        images = [image for image, _ in zip(decoded, range(len(kp)))]
    wanted = sheet_indices(min(len(images), len(kp)), frames)
    if not wanted:
        raise ValueError(f"{video_path}: no frame to render ({len(kp)} keypoint frames)")
    tiles = [draw_skeleton(images[i], kp[i], skeleton, min_confidence) for i in wanted]
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    with atomic_path(out_path) as tmp:
        Image.fromarray(np.concatenate(tiles, axis=1)).save(tmp, format="PNG")
    return len(tiles)


def render_overlay(video_path: str | os.PathLike[str], keypoints: np.ndarray, skeleton: Skeleton,
                   out_path: str | os.PathLike[str], fps: float | None = None, max_frames: int | None = None,
                   min_confidence: float = 0.0, frame_step: int = 1) -> int:
    """Write ``video_path`` with ``keypoints`` drawn over it to ``out_path`` (``.mp4`` or ``.gif``).

    Parameters
    ----------
    video_path
        The clip the keypoints were extracted from (kept frame ``t``, i.e. decoded frame
        ``t * frame_step``, gets ``keypoints[t]``).
    keypoints
        ``[T, P, 4]`` as laid out by ``skeleton``.
    skeleton
        Layout of ``keypoints``.
    out_path
        Output file; ``.gif`` gives an animated GIF, ``.png`` a still of a few frames
        (:func:`render_contact_sheet`), anything else an MP4.
    fps
        Output frame rate; default the clip's average rate (25 when it states none) divided by
        ``frame_step``, so the overlay plays at the clip's speed.
    max_frames
        Render at most this many frames.
    min_confidence
        See :func:`draw_skeleton`.
    frame_step
        The pose stage's ``frame_step`` (``sldata.pose_settings`` in the shard metadata): the
        keypoints are of every ``frame_step``-th decoded frame, so only those frames are drawn.
        Without it, keypoints of a ``frame_step=2`` shard would be drawn on the wrong frames and
        cover only the first half of the clip.

    Returns
    -------
    int
        Frames written: the shorter of the clip's kept frames and ``keypoints`` (a mismatch is
        logged), capped by ``max_frames``.

    Raises
    ------
    ValueError
        If ``keypoints`` do not fit ``skeleton``, the clip has no video stream or no frame to render.
    """
    kp = np.asarray(keypoints)
    if kp.ndim != 3 or kp.shape[1:] != (skeleton.num_points, 4):
        raise ValueError(f"keypoints must have shape [frames, {skeleton.num_points}, 4] for a skeleton with "
                         f"face={skeleton.face!r}, got {kp.shape}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    if isinstance(frame_step, bool) or not isinstance(frame_step, (int, np.integer)) or frame_step < 1:
        raise ValueError(f"frame_step must be an integer >= 1, got {frame_step!r}")
    video_path, out_path = Path(video_path), Path(out_path)
    if out_path.suffix.lower() == ".png":
        return render_contact_sheet(video_path, kp, skeleton, out_path, min_confidence=min_confidence,
                                    frame_step=int(frame_step))
    is_gif = out_path.suffix.lower() == ".gif"
    limit = len(kp) if max_frames is None else min(len(kp), max_frames)

    frames, src_rate, container = _decode(video_path, int(frame_step))
    rate = (Fraction(fps).limit_denominator(1001) if fps is not None
            else (src_rate or DEFAULT_FPS) / int(frame_step))
    n = 0
    decoded_all = False
    with container, atomic_path(out_path) as tmp, \
            av.open(os.fspath(tmp), mode="w", format="gif" if is_gif else "mp4") as out:
        stream = None
        for image in frames:
            if n >= limit:
                break
            drawn = draw_skeleton(image, kp[n], skeleton, min_confidence)
            if stream is None:
                stream = out.add_stream("gif" if is_gif else "libx264", rate=rate)
                if is_gif:
                    stream.height, stream.width = drawn.shape[:2]
                    stream.pix_fmt = "pal8"
                else:
                    stream.height, stream.width = _even(drawn).shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(MP4_CRF), "preset": MP4_PRESET}
            frame = _gif_frame(drawn) if is_gif else av.VideoFrame.from_ndarray(_even(drawn), format="rgb24")
            frame.pts = n
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
            n += 1
        else:
            decoded_all = True
        if stream is None:
            raise ValueError(f"{video_path}: no frame to render ({len(kp)} keypoint frames, max_frames={max_frames})")
        for packet in stream.encode(None):
            out.mux(packet)
    if decoded_all and n < limit:
        log.warning("%s has %d frames (frame_step %d) but %d keypoint frames were given; rendered %d",
                    video_path, n, frame_step, len(kp), n)
    elif n == len(kp) and max_frames is None and not decoded_all:
        log.warning("%s has more frames (frame_step %d) than the %d keypoint frames given; rendered %d",
                    video_path, frame_step, len(kp), n)
    return n
