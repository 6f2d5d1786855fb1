"""Temporal crop arithmetic and cleaning over the manifest's crop columns.

Everything here is pure (no I/O) and parameterized by :class:`CropSettings`.

Pipeline (:func:`clean_crops`)
------------------------------
1. :func:`to_video_timeline` puts each annotated crop on the *real* video's timeline:
   the crop in seconds is taken from ``start_s``/``end_s`` (or, with
   ``time_source="frames"``, from ``start_frame / annotated_fps`` and
   ``end_frame / annotated_fps`` -- for WLASL that is the 25 fps assumption of the
   annotation, whatever the real frame rate is); a null end means "to the end" and becomes
   the probed duration; the crop is intersected with ``[0, duration]``. Rows are rejected
   with a :class:`CropReason`: ``video_unavailable`` (no probed duration),
   ``invalid_crop`` (non-finite or negative start, end before start),
   ``crop_outside_video`` (starts at or after the end of the video),
   ``empty_crop`` (nothing left after clamping) or ``crop_too_short`` (shorter than
   ``min_length_s`` after clamping).
2. ``min_annotated_frames``: crops spanning fewer annotated frames are ``invalid_crop``
   (OpenVINO's MS-ASL preparation drops crops with ``end - start <= 1`` frames, i.e. 2).
3. :func:`enhance_temporal_limits` (the OpenVINO training_extensions rule, see there).
4. :func:`trim_overlaps`: crops of one source video no longer overlap (see there).
5. Crops shorter than ``min_length_s`` after steps 3-4 are rejected (``crop_too_short``,
   or ``overlap_emptied`` when trimming left nothing).

:func:`length_stats` gives count, mean, median, p5, p95, min and max of crop lengths;
:func:`clean_crops` reports them before (after step 1) and after cleaning.

Output columns
--------------
Kept rows keep every input column and gain ``clip_start_s``/``clip_end_s`` (the crop on
the real timeline, half-open, seconds from the first frame), ``clip_clamped`` (the crop was
cut by the video's end or start) and, when a real fps column is present,
``clip_start_frame``/``clip_end_frame`` (0-based half-open frame indices at the real fps,
assuming a constant frame rate: the frames ``k`` with ``k / fps`` in
``[clip_start_s, clip_end_s)``; the trimmer itself uses each frame's timestamp).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from sldata.settings import settings_from_dict

EPS_S = 1e-6
"""Tolerance (seconds) for comparing times: far below any frame interval, above float noise."""

REJECT_COLUMNS = ["sample_id", "stage", "reason", "detail"]



class CropReason(str, enum.Enum):
    """Reason codes for a crop refused by the cleaning stage (stable strings)."""

    VIDEO_UNAVAILABLE = "video_unavailable"
    """No probed duration: the video was not downloaded or could not be probed."""
    INVALID_CROP = "invalid_crop"
    """Non-finite or negative start, end before start, or fewer annotated frames than allowed."""
    CROP_OUTSIDE_VIDEO = "crop_outside_video"
    """The crop starts at or after the end of the real video."""
    EMPTY_CROP = "empty_crop"
    """Nothing of the crop is left after clamping to the video."""
    CROP_TOO_SHORT = "crop_too_short"
    """Shorter than ``min_length_s`` after clamping, enhancement or overlap trimming."""
    OVERLAP_EMPTIED = "overlap_emptied"
    """Overlap trimming left nothing of the crop (it lay inside its neighbours)."""


@dataclass(frozen=True)
class CropSettings:
    """Parameters of the crop conversion and cleaning.

    Attributes
    ----------
    time_source:
        ``"seconds"``: the crop is ``start_s``/``end_s``; ``"frames"``: it is
        ``start_frame``/``end_frame`` divided by ``annotated_fps``.
    duration_col:
        Column with the probed duration of the source video in seconds (null = unavailable).
    fps_col:
        Column with the real (probed) frame rate; ``None`` or a missing column skips the
        ``clip_start_frame``/``clip_end_frame`` columns.
    group_col:
        Column identifying the source video, for overlap trimming.
    min_length_s:
        Crops shorter than this (seconds) after clamping and after cleaning are rejected.
        ``0`` rejects only empty crops.
    min_annotated_frames:
        Crops spanning fewer annotated frames (``end_frame - start_frame``) are rejected as
        ``invalid_crop``; ``0`` disables. Crops with a null end are not checked.
    enhance:
        Apply :func:`enhance_temporal_limits`.
    mean_sign_duration_s, speed_factor, preparation_time_s:
        Parameters of :func:`enhance_temporal_limits` (OpenVINO's defaults 0.8, 1.1, 0.8).
    overlap_policy:
        ``"midpoint"``, ``"truncate_earlier"`` or ``"keep"`` (see :func:`trim_overlaps`).
    """

    time_source: Literal["seconds", "frames"] = "seconds"
    duration_col: str = "duration_s"
    fps_col: str | None = "video_fps"
    group_col: str = "source_key"
    min_length_s: float = 0.0
    min_annotated_frames: int = 2
    enhance: bool = True
    mean_sign_duration_s: float = 0.8
    speed_factor: float = 1.1
    preparation_time_s: float = 0.8
    overlap_policy: Literal["midpoint", "truncate_earlier", "keep"] = "midpoint"

    def __post_init__(self) -> None:
        if self.time_source not in ("seconds", "frames"):
            raise ValueError(f"time_source must be 'seconds' or 'frames', got {self.time_source!r}")
        if self.overlap_policy not in ("midpoint", "truncate_earlier", "keep"):
            raise ValueError(f"overlap_policy must be 'midpoint', 'truncate_earlier' or 'keep', got {self.overlap_policy!r}")
        if not self.min_length_s >= 0:
            raise ValueError(f"min_length_s must be >= 0, got {self.min_length_s}")
        if self.min_annotated_frames < 0:
            raise ValueError(f"min_annotated_frames must be >= 0, got {self.min_annotated_frames}")
        for name in ("mean_sign_duration_s", "speed_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.preparation_time_s >= 0:
            raise ValueError(f"preparation_time_s must be >= 0, got {self.preparation_time_s}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CropSettings:
        """Settings from a mapping (e.g. ``params.yaml``); unknown keys raise ``ValueError``."""
        return settings_from_dict(cls, data)


# --------------------------------------------------------------------------- scalar helpers


def frames_to_seconds(frame: float, fps: float) -> float:
    """Time of 0-based frame ``frame`` at ``fps`` (frame ``k`` starts at ``k / fps``)."""
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return frame / fps


def seconds_to_frame_index(t: float, fps: float) -> int:
    """First 0-based frame index ``k`` with ``k / fps >= t`` (up to :data:`EPS_S`).

    So ``[seconds_to_frame_index(a), seconds_to_frame_index(b))`` are exactly the frames of a
    constant-rate video whose start time lies in ``[a, b)``.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return max(0, math.ceil(t * fps - EPS_S * fps))


def wlasl_frames_to_seconds(frame_start: int, frame_end: int, fps: float = 25.0) -> tuple[float, float | None]:
    """WLASL's 1-based inclusive ``frame_start``/``frame_end`` (``-1`` = to the end) in seconds.

    Returns the half-open ``[start_s, end_s)``; ``end_s`` is ``None`` for ``frame_end == -1``.
    """
    start = (frame_start - 1) / fps
    return start, (None if frame_end == -1 else frame_end / fps)


@dataclass(frozen=True)
class Clamped:
    """A crop on the real timeline: ``[start_s, end_s)``; ``clamped`` if the video cut it."""

    start_s: float
    end_s: float
    clamped: bool


def clamp_crop(start_s: float, end_s: float | None, duration_s: float | None,
               min_length_s: float = 0.0) -> Clamped | tuple[CropReason, str]:
    """Put one crop on the real timeline ``[0, duration_s]``; return it or ``(reason, detail)``.

    ``end_s is None`` means "to the end". The result always satisfies
    ``0 <= start_s < end_s <= duration_s`` and ``end_s - start_s >= min_length_s``.
    """
    if duration_s is None or not math.isfinite(duration_s) or duration_s <= 0:
        return CropReason.VIDEO_UNAVAILABLE, f"no usable probed duration ({duration_s!r})"
    if start_s is None or not math.isfinite(start_s) or start_s < -EPS_S:
        return CropReason.INVALID_CROP, f"start {start_s!r} is not a non-negative number"
    if end_s is not None and (math.isnan(end_s) or end_s < start_s):
        return CropReason.INVALID_CROP, f"end {end_s!r} is before start {start_s!r}"
    if start_s >= duration_s - EPS_S:
        return CropReason.CROP_OUTSIDE_VIDEO, f"crop starts at {start_s:.3f}s, the video lasts {duration_s:.3f}s"
    start = max(0.0, start_s)
    end = duration_s if end_s is None else min(end_s, duration_s)
    clamped = end_s is not None and end_s > duration_s + EPS_S
    if end - start <= EPS_S:
        return CropReason.EMPTY_CROP, f"crop [{start_s!r}, {end_s!r}) is empty on a {duration_s:.3f}s video"
    if end - start < min_length_s - EPS_S:
        return CropReason.CROP_TOO_SHORT, f"crop lasts {end - start:.3f}s < min_length_s {min_length_s}"
    return Clamped(start, end, clamped)


def enhance_limits(start_s: float, end_s: float, mean_sign_duration_s: float = 0.8,
                   speed_factor: float = 1.1, preparation_time_s: float = 0.8) -> tuple[float, float]:
    """The OpenVINO "enhance temporal limits" rule for one crop (see :func:`enhance_temporal_limits`)."""
    e = speed_factor * mean_sign_duration_s
    length = end_s - start_s
    if length > e + preparation_time_s:
        repeats = math.floor((length - preparation_time_s) / e + 0.5)
        segments = repeats + 1 if repeats > 0 else 2
        center = start_s + length / segments
        new_start, new_end = center - 0.5 * e, center + 0.5 * e
    else:
        center = 0.5 * (start_s + end_s)
        half = 0.5 * min(length, e)
        new_start, new_end = center - half, center + half
    # Never leave the original crop (the rule never does; this guards float rounding).
    return max(start_s, new_start), min(end_s, new_end)


# --------------------------------------------------------------------------- DataFrame API


def _rejects(ids: pd.Series, stage: str, reasons: list[str], details: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": ids.astype(str).to_numpy(), "stage": stage,
                         "reason": reasons, "detail": details}, columns=REJECT_COLUMNS)


def empty_rejects() -> pd.DataFrame:
    """An empty rejects table with :data:`REJECT_COLUMNS`."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in REJECT_COLUMNS})


def _float_col(df: pd.DataFrame, name: str) -> np.ndarray:
    if name not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def to_video_timeline(df: pd.DataFrame, settings: CropSettings = CropSettings()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert annotated crops to the real video's timeline (vectorized).

    Parameters
    ----------
    df:
        Manifest rows with ``sample_id``, the crop columns (see ``settings.time_source``) and
        ``settings.duration_col`` (probed duration in seconds); optionally ``settings.fps_col``.
    settings:
        :class:`CropSettings`.

    Returns
    -------
    kept, rejects:
        ``kept`` is ``df``'s surviving rows with ``clip_start_s``, ``clip_end_s``,
        ``clip_clamped`` (and ``clip_start_frame``/``clip_end_frame`` when the fps column is
        present); ``rejects`` has :data:`REJECT_COLUMNS` with a :class:`CropReason` each.
    """
    if settings.time_source == "seconds":
        start = _float_col(df, "start_s")
        end = _float_col(df, "end_s")
    else:
        fps = _float_col(df, "annotated_fps")
        with np.errstate(divide="ignore", invalid="ignore"):
            start = np.where(fps > 0, _float_col(df, "start_frame") / fps, np.nan)
            end = np.where(fps > 0, _float_col(df, "end_frame") / fps, np.nan)
    duration = _float_col(df, settings.duration_col)

    reason = np.full(len(df), "", dtype=object)
    detail = np.full(len(df), "", dtype=object)

    def mark(mask: np.ndarray, code: CropReason, text: np.ndarray | str) -> None:
        new = mask & (reason == "")
        reason[new] = code.value
        detail[new] = text[new] if isinstance(text, np.ndarray) else text

    fmt = np.vectorize(lambda *v: " ".join(str(x) for x in v), otypes=[object])
    has_end = ~np.isnan(end)
    with np.errstate(invalid="ignore"):
        mark(~(np.isfinite(duration) & (duration > 0)), CropReason.VIDEO_UNAVAILABLE,
             "no usable probed duration")
        mark(~np.isfinite(start) | (start < -EPS_S), CropReason.INVALID_CROP,
             "start is missing, not finite or negative")
        mark(has_end & (end < start), CropReason.INVALID_CROP, fmt("end", end, "is before start", start))
        mark(start >= duration - EPS_S, CropReason.CROP_OUTSIDE_VIDEO,
             fmt("crop starts at", start, "s; the video lasts", duration, "s"))
        c_start = np.maximum(start, 0.0)
        c_end = np.where(has_end, np.minimum(end, duration), duration)
        length = c_end - c_start
        mark(length <= EPS_S, CropReason.EMPTY_CROP, fmt("crop", start, end, "is empty on a", duration, "s video"))
        mark(length < settings.min_length_s - EPS_S, CropReason.CROP_TOO_SHORT,
             fmt("crop lasts", length, "s < min_length_s", settings.min_length_s))

    ok = reason == ""
    kept = df.loc[ok].copy()
    kept["clip_start_s"] = c_start[ok]
    kept["clip_end_s"] = c_end[ok]
    kept["clip_clamped"] = (has_end & (end > duration + EPS_S))[ok]
    if settings.fps_col is not None and settings.fps_col in df.columns:
        kept = add_frame_indices(kept, settings.fps_col)
    ids = df["sample_id"] if "sample_id" in df.columns else pd.Series(df.index.astype(str), index=df.index)
    rejects = _rejects(ids[~ok], "timeline", list(reason[~ok]), list(detail[~ok]))
    return kept, rejects


def add_frame_indices(df: pd.DataFrame, fps_col: str) -> pd.DataFrame:
    """Add ``clip_start_frame``/``clip_end_frame``: real-fps frame indices of the crop (nullable)."""
    fps = _float_col(df, fps_col)
    out = df.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.ceil(out["clip_start_s"].to_numpy(float) * fps - EPS_S * fps)
        e = np.ceil(out["clip_end_s"].to_numpy(float) * fps - EPS_S * fps)
    good = np.isfinite(fps) & (fps > 0)
    out["clip_start_frame"] = pd.array(np.where(good, np.maximum(s, 0), np.nan), dtype="Float64").astype("Int64")
    out["clip_end_frame"] = pd.array(np.where(good, np.maximum(e, 0), np.nan), dtype="Float64").astype("Int64")
    return out


def enhance_temporal_limits(df: pd.DataFrame, settings: CropSettings = CropSettings()) -> pd.DataFrame:
    """Shorten and re-centre crops that are longer than one expected sign (vectorized).

    The rule OpenVINO training_extensions describe as "enhancing temporal limits of
    gestures" for MS-ASL, here in seconds (their script works in integer frames). With
    ``E = speed_factor * mean_sign_duration_s`` (expected sign length),
    ``P = preparation_time_s`` and ``L = clip_end_s - clip_start_s``:

    * ``L > E + P`` (over-long: the annotator likely included preparation and repeats):
      ``n = round_half_up((L - P) / E)`` repeats, ``k = n + 1`` if ``n > 0`` else ``2``
      segments of length ``L / k``; the sign is assumed centred at the end of the first
      segment, ``c = start + L / k``, and the crop becomes ``[c - E/2, c + E/2]``.
    * ``E < L <= E + P``: the crop becomes the centred window of length ``E``.
    * ``L <= E``: unchanged.

    The result always lies inside the original crop (never lengthened). Rows with any
    length pass through the function; ``clip_enhanced`` says whether a row changed.
    """
    out = df.copy()
    s = out["clip_start_s"].to_numpy(float)
    e_ = out["clip_end_s"].to_numpy(float)
    e = settings.speed_factor * settings.mean_sign_duration_s
    p = settings.preparation_time_s
    length = e_ - s
    repeats = np.floor((length - p) / e + 0.5)
    segments = np.where(repeats > 0, repeats + 1, 2)
    long_center = s + length / segments
    over = length > e + p
    center = np.where(over, long_center, 0.5 * (s + e_))
    half = np.where(over, 0.5 * e, 0.5 * np.minimum(length, e))
    new_s = np.maximum(s, center - half)
    new_e = np.minimum(e_, center + half)
    changed = (new_s > s + EPS_S) | (new_e < e_ - EPS_S)
    out["clip_start_s"] = np.where(changed, new_s, s)
    out["clip_end_s"] = np.where(changed, new_e, e_)
    out["clip_enhanced"] = changed
    return out


def trim_interval_overlaps(intervals: list[tuple[float, float]],
                           policy: Literal["midpoint", "truncate_earlier", "keep"] = "midpoint") -> list[tuple[float, float]]:
    """Remove overlaps between the half-open intervals of one video; same order as the input.

    Intervals are processed in order of ``(start, end)`` (ties by input position). For each
    next interval ``b`` after the previous surviving one ``p``: first ``b``'s start is raised
    to ``p``'s (possibly raised) start; if ``p`` still ends after ``b`` starts, the shared
    part ``[b.start, min(p.end, b.end))`` is split at a cut point -- its midpoint
    (``"midpoint"``) or its start (``"truncate_earlier"``: the earlier crop ends where the
    later one starts, as OpenVINO's MS-ASL preparation does) -- so ``p`` ends and ``b``
    starts at the cut. An interval nested in another therefore keeps its second half and
    the outer one loses everything after the cut. An interval reduced to nothing is
    returned as ``(x, x)``; the caller drops it. ``"keep"`` returns the input unchanged.

    Guarantees: no two returned non-empty intervals overlap; each returned interval lies
    inside its input interval (starts only rise, ends only fall).
    """
    out = [(float(a), float(b)) for a, b in intervals]
    if policy == "keep" or len(out) < 2:
        return out
    order = sorted(range(len(out)), key=lambda i: (out[i][0], out[i][1], i))
    prev: int | None = None
    for i in order:
        s, e = out[i]
        if prev is None:
            if e > s:
                prev = i
            continue
        ps, pe = out[prev]
        s = max(s, ps)
        if s >= e:
            out[i] = (e, e)
            continue
        if pe > s:
            hi = min(pe, e)
            cut = 0.5 * (s + hi) if policy == "midpoint" else s
            out[prev] = (ps, min(pe, cut))
            s = max(s, cut)
        out[i] = (s, e)
        if s < e:
            prev = i
    return [(s, e) if e > s else (e, e) for s, e in out]


def trim_overlaps(df: pd.DataFrame, settings: CropSettings = CropSettings()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply :func:`trim_interval_overlaps` to the crops of each source video.

    Groups by ``settings.group_col``; rows left empty are rejected as ``overlap_emptied``.
    Adds ``clip_overlap_trimmed`` (the row's crop was shortened).
    """
    out = df.copy()
    out["clip_overlap_trimmed"] = False
    if settings.overlap_policy == "keep" or out.empty:
        return out, empty_rejects()
    starts = out["clip_start_s"].to_numpy(float).copy()
    ends = out["clip_end_s"].to_numpy(float).copy()
    positions = np.arange(len(out))
    for _, idx in pd.Series(positions, index=out.index).groupby(out[settings.group_col].to_numpy(), sort=False):
        pos = idx.to_numpy()
        if len(pos) < 2:
            continue
        new = trim_interval_overlaps(list(zip(starts[pos], ends[pos])), settings.overlap_policy)
        starts[pos] = [a for a, _ in new]
        ends[pos] = [b for _, b in new]
    trimmed = (starts > out["clip_start_s"].to_numpy(float)) | (ends < out["clip_end_s"].to_numpy(float))
    out["clip_start_s"] = starts
    out["clip_end_s"] = ends
    out["clip_overlap_trimmed"] = trimmed
    empty = ends - starts <= EPS_S
    rejects = _rejects(out.loc[empty, "sample_id"], "overlap", [CropReason.OVERLAP_EMPTIED.value] * int(empty.sum()),
                       ["overlap trimming left nothing of the crop"] * int(empty.sum()))
    return out.loc[~empty].copy(), rejects


def length_stats(lengths: Any) -> dict[str, float | int | None]:
    """Count, mean, median, p5, p95, min and max of crop lengths (``None`` when empty)."""
    x = np.asarray(lengths, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"count": 0, "mean": None, "median": None, "p5": None, "p95": None, "min": None, "max": None}
    return {"count": int(x.size), "mean": float(x.mean()), "median": float(np.median(x)),
            "p5": float(np.percentile(x, 5)), "p95": float(np.percentile(x, 95)),
            "min": float(x.min()), "max": float(x.max())}


@dataclass
class CleanResult:
    """Output of :func:`clean_crops`: kept rows, rejects and length statistics (seconds)."""

    kept: pd.DataFrame
    rejects: pd.DataFrame
    stats: dict[str, Any]


def clean_crops(df: pd.DataFrame, settings: CropSettings = CropSettings()) -> CleanResult:
    """The whole cleaning stage: timeline, annotated-frame filter, enhancement, overlaps, min length.

    ``stats`` is ``{"before": length_stats(after timeline conversion), "after":
    length_stats(final), "rejects": {reason: count}, "enhanced": n, "overlap_trimmed": n}``.
    """
    kept, rej_timeline = to_video_timeline(df, settings)
    before = length_stats(kept["clip_end_s"] - kept["clip_start_s"])
    rejects = [rej_timeline]

    if settings.min_annotated_frames > 0 and {"start_frame", "end_frame"} <= set(kept.columns):
        span = pd.to_numeric(kept["end_frame"], errors="coerce") - pd.to_numeric(kept["start_frame"], errors="coerce")
        bad = (span < settings.min_annotated_frames).fillna(False).to_numpy(bool)
        rejects.append(_rejects(kept.loc[bad, "sample_id"], "annotated_frames",
                                [CropReason.INVALID_CROP.value] * int(bad.sum()),
                                [f"crop spans {int(v)} annotated frame(s) < min_annotated_frames "
                                 f"{settings.min_annotated_frames}" for v in span[bad]]))
        kept = kept.loc[~bad]

    if settings.enhance:
        kept = enhance_temporal_limits(kept, settings)
    kept, rej_overlap = trim_overlaps(kept, settings)
    rejects.append(rej_overlap)

    length = (kept["clip_end_s"] - kept["clip_start_s"]).to_numpy(float)
    short = length < settings.min_length_s - EPS_S
    rejects.append(_rejects(kept.loc[short, "sample_id"], "min_length",
                            [CropReason.CROP_TOO_SHORT.value] * int(short.sum()),
                            [f"crop lasts {v:.3f}s < min_length_s {settings.min_length_s}" for v in length[short]]))
    kept = kept.loc[~short].copy()
    if settings.fps_col is not None and settings.fps_col in kept.columns:
        kept = add_frame_indices(kept, settings.fps_col)

    all_rejects = pd.concat([r for r in rejects if len(r)] or [empty_rejects()], ignore_index=True)
    stats = {
        "before": before,
        "after": length_stats(kept["clip_end_s"] - kept["clip_start_s"]),
        "rejects": {str(k): int(v) for k, v in all_rejects["reason"].value_counts().items()},
        "enhanced": int(kept["clip_enhanced"].sum()) if "clip_enhanced" in kept.columns else 0,
        "overlap_trimmed": int(kept["clip_overlap_trimmed"].sum()),
    }
    return CleanResult(kept=kept, rejects=all_rejects, stats=stats)
