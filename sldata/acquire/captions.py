"""Find and hide burned-in static text captions (label leaks) in sign-language clips.

Some source videos (MS-ASL's YouTube material in particular, and many WLASL sources with
their site watermarks) show text drawn onto every frame: the gloss itself, a caption, a
site name. An RGB model can learn to read the gloss instead of the sign, so the pipeline
masks such text in every trimmed clip before training.

Detection rule (no learned model, nothing downloaded)
------------------------------------------------------
A burned-in caption is *static* (the same pixels in every frame while the signer moves)
and *text-like* (dense, high-contrast strokes arranged in a horizontal line). On up to
``sample_frames`` frames sampled evenly over the clip, downscaled so the longer side is
at most ``max_side`` pixels:

1. **Stroke pixels**, per frame and per polarity: ``bright`` pixels exceed some 3x3
   neighbour by ``grad_thresh`` in some colour channel (``frame - erode(frame)``, the
   strokes of light text), ``dark`` pixels fall below one (``dilate(frame) - frame``,
   the strokes of dark text). Marking the stroke side only, not both sides of an edge,
   keeps small text resolved (a symmetric gradient fills the gaps between letters).
2. **Static strokes**: marked in at least ``static_agreement`` of the sampled frames, and
   with a grey level within ``stable_tol`` of the pixel's temporal median in as many
   frames. The second test is a sensitive motion detector at edges (a one-pixel shift of
   a face changes edge pixels by tens of levels) and, being a median and a fraction, it
   tolerates a few odd frames (a black frame at a cut). A moving or scrolling text and
   the moving signer fail it.
3. **Borders out**: straight horizontal or vertical runs of static strokes at least
   ``line_length_frac`` of the longer side (letterbox bars, frame edges) are removed.
4. **Text lines**: the static strokes are closed with a ``close_width x 3`` rectangle
   (letters into words) and the connected components are candidate text lines.
5. **Text structure**: a candidate is kept when its height is between
   ``min_text_height`` and ``max_text_height_frac`` of the frame, its aspect ratio is at
   least ``min_aspect``, the fraction of its box covered by static strokes (``fill``) is
   in ``[min_fill, max_fill]``, and its strokes are dense along the line
   (``transitions``: mean number of on/off changes along a row, per box-height of
   length, at least ``min_transitions``) and across it (per column, at least
   ``min_col_transitions``). Smooth contours (a still shoulder) and plain texture fail.
6. **Score**: ``agreement * min(1, transitions / (2 * min_transitions)) *
   min(1, fill / (2 * min_fill))`` with ``agreement`` the mean stroke agreement over the
   candidate's static strokes; boxes below ``min_score`` are dropped. Both polarities'
   boxes are pooled and boxes on one line closer than ``merge_gap`` line heights are
   merged (a caption of several words becomes one box).

Known limits: static *scene* text and busy static clutter (posters on a wall behind the
signer) can be boxed too; masking them only touches the static background. Text shown
in fewer than ``static_agreement`` of the frames, or with almost no contrast to the
video under it, is not found.

Boxes are returned in the clip's own pixel coordinates, tight around the static strokes;
masking grows them by ``pad_frac`` of their height plus ``pad_px`` pixels.

Masking modes
-------------
``"blur"`` (default) replaces the box by a strong Gaussian blur of itself (sigma
``blur_sigma_frac`` times the box height), ``"inpaint"`` fills it from its surroundings
with ``cv2.inpaint`` (Telea), ``"fill"`` paints it with ``fill_color`` (RGB). Only pixels
inside the padded boxes change.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import cv2
import numpy as np

from sldata.atomic import atomic_path
from sldata.settings import settings_from_dict

__all__ = [
    "Box",
    "CaptionMaskSettings",
    "CaptionReport",
    "detect_static_text",
    "mask_boxes",
    "mask_captions_in_video",
]

MODES = ("blur", "inpaint", "fill")


@dataclass(frozen=True)
class CaptionMaskSettings:
    """Settings of caption detection and masking (see the module docstring for the rule).

    Attributes
    ----------
    enabled : bool
        When false, :func:`mask_captions_in_video` copies the clip unchanged.
    sample_frames : int
        Number of frames, evenly spaced over the clip, that detection looks at.
    min_frames : int
        Clips with fewer frames get no boxes (static cannot be told from moving).
    max_side : int
        Frames are downscaled so their longer side is at most this many pixels.
    grad_thresh : int
        Morphological-gradient level (0-255) that counts as a stroke edge.
    static_agreement : float
        Fraction of sampled frames in which an edge pixel must be present to be static.
    stable_tol : float
        A pixel is unchanged in a frame when its grey level is within this many levels of
        its temporal median; static strokes must be unchanged in ``static_agreement`` of
        the sampled frames.
    line_length_frac : float
        Straight runs of static edges at least this long (fraction of the longer frame
        side) are frame or letterbox borders and are removed before grouping.
    close_width : float
        Width of the horizontal closing, as a fraction of the working-frame width.
    min_text_height : int
        Smallest text-line height, in working-resolution pixels.
    max_text_height_frac : float
        Largest text-line height, as a fraction of the frame height.
    min_aspect : float
        Smallest width / height of a text line.
    min_fill, max_fill : float
        Allowed fraction of a line's box covered by static edge pixels.
    min_transitions : float
        Smallest mean number of edge on/off changes per row, per box-height of length.
    min_col_transitions : float
        Smallest mean number of edge on/off changes per column.
    min_score : float
        Boxes scoring lower are dropped.
    merge_gap : float
        Boxes on one line closer than this many line heights are merged.
    max_boxes : int
        At most this many boxes (best scores) are returned.
    mode : str
        ``"blur"``, ``"inpaint"`` or ``"fill"``.
    pad_frac : float
        Masked area grows by this fraction of the box height on each side...
    pad_px : int
        ...plus this many pixels.
    blur_sigma_frac : float
        Gaussian sigma of ``"blur"`` as a fraction of the padded box height.
    inpaint_radius : int
        Neighbourhood radius of ``"inpaint"``.
    fill_color : tuple of int
        RGB colour of ``"fill"``.
    crf : int
        libx264 constant rate factor of the re-encoded clip.
    preset : str
        libx264 preset.
    copy_when_clean : bool
        When no box is found, copy the input byte for byte instead of re-encoding it.
    """

    enabled: bool = True
    sample_frames: int = 24
    min_frames: int = 4
    max_side: int = 640
    grad_thresh: int = 48
    static_agreement: float = 0.85
    stable_tol: float = 8.0
    line_length_frac: float = 0.15
    close_width: float = 0.025
    min_text_height: int = 5
    max_text_height_frac: float = 0.2
    min_aspect: float = 1.0
    min_fill: float = 0.12
    max_fill: float = 0.85
    min_transitions: float = 3.0
    min_col_transitions: float = 2.0
    min_score: float = 0.5
    merge_gap: float = 1.0
    max_boxes: int = 8
    mode: str = "blur"
    pad_frac: float = 0.2
    pad_px: int = 2
    blur_sigma_frac: float = 0.6
    inpaint_radius: int = 3
    fill_color: tuple[int, int, int] = (0, 0, 0)
    crf: int = 18
    preset: str = "medium"
    copy_when_clean: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 < self.static_agreement <= 1.0:
            raise ValueError(f"static_agreement must be in (0, 1], got {self.static_agreement}")
        if self.sample_frames < 2 or self.min_frames < 2:
            raise ValueError("sample_frames and min_frames must be at least 2")
        if len(tuple(self.fill_color)) != 3:
            raise ValueError(f"fill_color must be three RGB values, got {self.fill_color!r}")
        object.__setattr__(self, "fill_color", tuple(int(c) for c in self.fill_color))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CaptionMaskSettings:
        """Build settings from a config mapping; unknown keys are an error naming them.

        Parameters
        ----------
        data : mapping or None
            Keys are field names of this class; missing keys keep their defaults.

        Raises
        ------
        ValueError
            If ``data`` has keys that are not settings, or a value is out of range.
        """
        return settings_from_dict(cls, data or {}, label="caption-mask")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain, JSON-ready dict."""
        out = dataclasses.asdict(self)
        out["fill_color"] = list(self.fill_color)
        return out


@dataclass(frozen=True)
class Box:
    """An axis-aligned text box in pixel coordinates, half-open: ``[x0, x1) x [y0, y1)``."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float = 1.0

    @property
    def width(self) -> int:
        """Width in pixels."""
        return max(0, self.x1 - self.x0)

    @property
    def height(self) -> int:
        """Height in pixels."""
        return max(0, self.y1 - self.y0)

    @property
    def area(self) -> int:
        """Area in pixels."""
        return self.width * self.height

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other`` (0 when disjoint)."""
        iw = min(self.x1, other.x1) - max(self.x0, other.x0)
        ih = min(self.y1, other.y1) - max(self.y0, other.y0)
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        return inter / float(self.area + other.area - inter)

    def padded(self, pad_frac: float, pad_px: int, width: int, height: int) -> Box:
        """Grow by ``pad_frac * height + pad_px`` on each side, clipped to the frame."""
        p = int(round(pad_frac * self.height)) + int(pad_px)
        return Box(
            max(0, self.x0 - p), max(0, self.y0 - p),
            min(width, self.x1 + p), min(height, self.y1 + p), self.score,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return ``{x0, y0, x1, y1, score}``."""
        return {"x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1,
                "score": round(float(self.score), 4)}


@dataclass(frozen=True)
class CaptionReport:
    """What :func:`mask_captions_in_video` did to one clip."""

    in_path: str
    out_path: str
    enabled: bool
    n_frames: int
    width: int
    height: int
    boxes: tuple[Box, ...] = field(default_factory=tuple)
    mode: str = "blur"
    reencoded: bool = False

    @property
    def masked(self) -> bool:
        """True when at least one box was masked."""
        return bool(self.boxes)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain, JSON-ready dict."""
        return {
            "in_path": self.in_path, "out_path": self.out_path, "enabled": self.enabled,
            "n_frames": self.n_frames, "width": self.width, "height": self.height,
            "boxes": [b.to_dict() for b in self.boxes], "mode": self.mode,
            "reencoded": self.reencoded, "masked": self.masked,
        }


# --------------------------------------------------------------------------- detection


def _as_frames(frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    out = list(frames)
    for f in out:
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frames must be uint8 HxWx3, got {f.dtype} {f.shape}")
    if out and any(f.shape != out[0].shape for f in out):
        raise ValueError("all frames must have the same shape")
    return out


def _transitions(mask: np.ndarray, axis: int) -> np.ndarray:
    """Number of on/off changes along ``axis`` for each line of a boolean mask."""
    m = mask.astype(np.int8)
    return np.abs(np.diff(m, axis=axis)).sum(axis=axis)


def _sample_maps(
    frames: list[np.ndarray], s: CaptionMaskSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per-pixel agreement maps over the sampled frames, and the working scale.

    ``bright`` holds the fraction of sampled frames in which a pixel is brighter than a
    3x3 neighbour by ``grad_thresh`` (the strokes of light text), ``dark`` the same for
    darker (the strokes of dark text), and ``stable`` the fraction in which its grey
    level is within ``stable_tol`` of its temporal median (a robust "does not change"
    that tolerates a few odd frames, such as a black frame at a cut or fade).
    """
    h, w = frames[0].shape[:2]
    scale = min(1.0, s.max_side / float(max(h, w)))
    n = min(s.sample_frames, len(frames))
    idx = np.unique(np.linspace(0, len(frames) - 1, n).round().astype(int))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    bright = dark = None
    grays = []
    for i in idx:
        f = frames[i]
        if scale < 1.0:
            f = cv2.resize(f, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
        b = (cv2.subtract(f, cv2.erode(f, kernel)).max(axis=2) >= s.grad_thresh)
        d = (cv2.subtract(cv2.dilate(f, kernel), f).max(axis=2) >= s.grad_thresh)
        if bright is None:
            bright, dark = b.astype(np.uint16), d.astype(np.uint16)
        else:
            bright += b
            dark += d
        grays.append(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY))
    stack = np.stack(grays).astype(np.int16)
    median = np.median(stack, axis=0)
    stable = (np.abs(stack - median) <= s.stable_tol).mean(axis=0)
    k = float(len(idx))
    return bright / k, dark / k, stable, scale


def _remove_long_lines(mask: np.ndarray, length: int) -> np.ndarray:
    """Drop horizontal and vertical runs of at least ``length`` pixels (frame edges)."""
    m = mask.astype(np.uint8)
    hor = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1)))
    ver = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, length)))
    return mask & (hor == 0) & (ver == 0)


def _candidate_features(static: np.ndarray, agree: np.ndarray,
                        x: int, y: int, w: int, h: int) -> dict[str, float]:
    """Text-structure features of the static edges in one candidate box."""
    crop = static[y:y + h, x:x + w]
    fill = float(crop.mean())
    rows = _transitions(crop, axis=1)
    rows = rows[crop.any(axis=1)]
    cols = _transitions(crop, axis=0)
    cols = cols[crop.any(axis=0)]
    row_tr = float(rows.mean()) * h / max(w, 1) if rows.size else 0.0
    col_tr = float(cols.mean()) if cols.size else 0.0
    agreement = float(agree[y:y + h, x:x + w][crop].mean()) if crop.any() else 0.0
    return {"fill": fill, "transitions": row_tr, "col_transitions": col_tr,
            "agreement": agreement}


def _merge_line_boxes(boxes: list[Box], gap: float) -> list[Box]:
    """Merge boxes that share a text line and are closer than ``gap`` line heights."""
    boxes = sorted(boxes, key=lambda b: b.x0)
    merged = True
    while merged:
        merged = False
        out: list[Box] = []
        for b in boxes:
            for j, a in enumerate(out):
                ov = min(a.y1, b.y1) - max(a.y0, b.y0)
                hmin = min(a.height, b.height)
                hgap = max(a.x0, b.x0) - min(a.x1, b.x1)
                if ov >= 0.5 * hmin and hgap <= gap * max(a.height, b.height):
                    out[j] = Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1),
                                 max(a.y1, b.y1), max(a.score, b.score))
                    merged = True
                    break
            else:
                out.append(b)
        boxes = out
    return boxes


def detect_static_text(
    frames: Sequence[np.ndarray] | np.ndarray,
    settings: CaptionMaskSettings | None = None,
    *,
    debug: list[dict[str, Any]] | None = None,
) -> list[Box]:
    """Find static, text-like overlays in a clip.

    Parameters
    ----------
    frames : sequence of ndarray
        The clip's frames, uint8 ``HxWx3`` (any channel order), all the same shape.
    settings : CaptionMaskSettings, optional
        Detection parameters; defaults when omitted.
    debug : list, optional
        When given, one dict of features per candidate is appended to it (for tuning).

    Returns
    -------
    list of Box
        Text boxes in frame pixel coordinates, best score first. Empty when the clip
        has fewer than ``settings.min_frames`` frames or detection is disabled.
    """
    s = settings or CaptionMaskSettings()
    fr = _as_frames(frames)
    if not s.enabled or len(fr) < s.min_frames:
        return []
    H, W = fr[0].shape[:2]
    bright, dark, stable_frac, scale = _sample_maps(fr, s)
    hh, ww = stable_frac.shape
    stable = stable_frac >= s.static_agreement
    line_len = max(8, int(round(s.line_length_frac * max(hh, ww))))
    kw = max(3, int(round(s.close_width * ww)))
    close_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (kw, 3))
    boxes: list[Box] = []
    for polarity, agree in (("bright", bright), ("dark", dark)):
        static = _remove_long_lines((agree >= s.static_agreement) & stable, line_len)
        closed = cv2.morphologyEx(static.astype(np.uint8), cv2.MORPH_CLOSE, close_kernel)
        n, _, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
        for i in range(1, n):
            x, y, w, h, _area = (int(v) for v in stats[i])
            if h < s.min_text_height or h > s.max_text_height_frac * hh or w < s.min_aspect * h:
                continue
            f = _candidate_features(static, agree, x, y, w, h)
            ok = (s.min_fill <= f["fill"] <= s.max_fill
                  and f["transitions"] >= s.min_transitions
                  and f["col_transitions"] >= s.min_col_transitions)
            score = (f["agreement"] * min(1.0, f["transitions"] / (2 * s.min_transitions))
                     * min(1.0, f["fill"] / (2 * s.min_fill)))
            ok = ok and score >= s.min_score
            if debug is not None:
                debug.append({"polarity": polarity, "box": (x, y, w, h), **f, "score": score,
                              "rejected": "" if ok else "structure"})
            if ok:
                boxes.append(Box(
                    int(np.floor(x / scale)), int(np.floor(y / scale)),
                    min(W, int(np.ceil((x + w) / scale))), min(H, int(np.ceil((y + h) / scale))),
                    score,
                ))
    boxes = _merge_line_boxes(boxes, s.merge_gap)
    boxes.sort(key=lambda b: -b.score)
    return boxes[: s.max_boxes]


# --------------------------------------------------------------------------- masking


def mask_boxes(
    frames: Sequence[np.ndarray] | np.ndarray,
    boxes: Sequence[Box],
    settings: CaptionMaskSettings | None = None,
) -> list[np.ndarray]:
    """Hide the content of ``boxes`` (grown by the padding settings) in every frame.

    Parameters
    ----------
    frames : sequence of ndarray
        uint8 ``HxWx3`` frames, RGB for ``mode="fill"`` colours to be right.
    boxes : sequence of Box
        Boxes from :func:`detect_static_text`.
    settings : CaptionMaskSettings, optional
        ``mode``, padding and mode parameters.

    Returns
    -------
    list of ndarray
        New frames; pixels outside the padded boxes are identical to the input.
    """
    s = settings or CaptionMaskSettings()
    fr = _as_frames(frames)
    if not fr or not boxes:
        return [f.copy() for f in fr]
    H, W = fr[0].shape[:2]
    padded = [b.padded(s.pad_frac, s.pad_px, W, H) for b in boxes]
    padded = [b for b in padded if b.area > 0]
    region = np.zeros((H, W), np.uint8)
    for b in padded:
        region[b.y0:b.y1, b.x0:b.x1] = 255
    out: list[np.ndarray] = []
    for f in fr:
        g = f.copy()
        if s.mode == "fill":
            g[region > 0] = np.asarray(s.fill_color, np.uint8)
        elif s.mode == "inpaint":
            g = cv2.inpaint(f, region, s.inpaint_radius, cv2.INPAINT_TELEA)
            g[region == 0] = f[region == 0]
        else:  # blur
            for b in padded:
                sigma = max(1.0, s.blur_sigma_frac * b.height)
                m = int(np.ceil(3 * sigma))
                ys, ye = max(0, b.y0 - m), min(H, b.y1 + m)
                xs, xe = max(0, b.x0 - m), min(W, b.x1 + m)
                blurred = cv2.GaussianBlur(f[ys:ye, xs:xe], (0, 0), sigma,
                                           borderType=cv2.BORDER_REFLECT)
                g[b.y0:b.y1, b.x0:b.x1] = blurred[b.y0 - ys:b.y1 - ys, b.x0 - xs:b.x1 - xs]
        out.append(g)
    return out


# --------------------------------------------------------------------------- files


def _open_video(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    container = av.open(os.fspath(path))
    if not container.streams.video:
        container.close()
        raise ValueError(f"{os.fspath(path)}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _read_working_frames(
    path: str | os.PathLike[str], max_side: int
) -> tuple[list[np.ndarray], int, int, fractions.Fraction]:
    """Decode all frames as RGB, downscaled so the longer side is at most ``max_side``.

    Returns the small frames, the full width and height, and the average frame rate.
    Keeping only working-resolution frames bounds memory for long or large clips.
    """
    container, stream = _open_video(path)
    with container:
        rate = stream.average_rate or stream.guessed_rate or fractions.Fraction(25)
        frames: list[np.ndarray] = []
        w = h = 0
        for fr in container.decode(stream):
            img = fr.to_ndarray(format="rgb24")
            h, w = img.shape[:2]
            scale = min(1.0, max_side / float(max(h, w)))
            if scale < 1.0:
                img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                                 interpolation=cv2.INTER_AREA)
            frames.append(img)
    return frames, w, h, fractions.Fraction(rate)


def _scale_box(b: Box, sx: float, sy: float, width: int, height: int) -> Box:
    return Box(max(0, int(np.floor(b.x0 * sx))), max(0, int(np.floor(b.y0 * sy))),
               min(width, int(np.ceil(b.x1 * sx))), min(height, int(np.ceil(b.y1 * sy))),
               b.score)


def _mask_and_encode(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str],
                     boxes: Sequence[Box], rate: fractions.Fraction,
                     s: CaptionMaskSettings) -> int:
    """Decode ``in_path`` again, mask every frame and encode constant-rate H.264 mp4."""
    container, stream = _open_video(in_path)
    n = 0
    with container, av.open(os.fspath(out_path), mode="w", format="mp4") as out:
        ostream = None
        for fr in container.decode(stream):
            img = mask_boxes([fr.to_ndarray(format="rgb24")], boxes, s)[0]
            if ostream is None:
                h, w = img.shape[:2]
                ostream = out.add_stream("libx264", rate=rate)
                ostream.width, ostream.height = w, h
                # 4:2:0 needs even sizes; odd-sized clips keep their size in 4:4:4.
                ostream.pix_fmt = "yuv420p" if (h % 2 == 0 and w % 2 == 0) else "yuv444p"
                ostream.options = {"crf": str(s.crf), "preset": s.preset}
            for packet in ostream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
            n += 1
        if ostream is not None:
            for packet in ostream.encode(None):
                out.mux(packet)
    return n


def mask_captions_in_video(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    settings: CaptionMaskSettings | None = None,
) -> CaptionReport:
    """Detect static captions in a clip and write it with them masked.

    The clip is decoded with PyAV at working resolution for :func:`detect_static_text`,
    then decoded again frame by frame, masked with :func:`mask_boxes` at full resolution
    and encoded as H.264 mp4 (libx264, ``crf``/``preset`` from the settings, yuv420p, or
    yuv444p for odd sizes; constant frame rate at the input's average rate; audio and
    other streams are dropped), written atomically. When detection is disabled, or finds
    nothing and ``copy_when_clean`` is set, the input file is copied byte for byte.

    Parameters
    ----------
    in_path, out_path : path
        Input clip and output mp4 (its folder is created).
    settings : CaptionMaskSettings, optional
        Detection, masking and encoding parameters.

    Returns
    -------
    CaptionReport
        The boxes masked (full-resolution pixels) and whether the clip was re-encoded.
        When disabled, the clip is not decoded and ``n_frames`` is the count the
        container states (0 when it states none).

    Raises
    ------
    ValueError
        If the input has no video stream or no decodable frame.
    """
    s = settings or CaptionMaskSettings()
    boxes: list[Box] = []
    if s.enabled:
        small, w, h, rate = _read_working_frames(in_path, s.max_side)
        if not small:
            raise ValueError(f"{os.fspath(in_path)}: no video frames decoded")
        n_frames = len(small)
        sh, sw = small[0].shape[:2]
        boxes = [_scale_box(b, w / sw, h / sh, w, h) for b in detect_static_text(small, s)]
    else:
        container, stream = _open_video(in_path)
        with container:
            w, h = stream.codec_context.width, stream.codec_context.height
            n_frames = int(stream.frames or 0)
    reencode = s.enabled and (bool(boxes) or not s.copy_when_clean)
    with atomic_path(out_path) as tmp:
        if reencode:
            written = _mask_and_encode(in_path, tmp, boxes, rate, s)
            if written != n_frames:
                raise RuntimeError(f"{os.fspath(in_path)}: decoded {n_frames} frames for "
                                   f"detection but {written} for masking")
        else:
            shutil.copyfile(in_path, tmp)
    return CaptionReport(
        in_path=os.fspath(in_path), out_path=os.fspath(out_path), enabled=s.enabled,
        n_frames=n_frames, width=w, height=h, boxes=tuple(boxes), mode=s.mode,
        reencoded=reencode,
    )
