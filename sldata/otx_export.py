"""Export frames in the layout OpenVINO training_extensions' action (sign) recognition reads.

This is the one place where the project writes one file per frame: that toolchain reads
rawframe folders. The layout, under ``out_dir``::

    rawframes/<sample_id>/img_00001.jpg, img_00002.jpg, ...   (RGB frames saved as JPEG)
    <split>.txt                                                (one annotation file per split)

Each line of ``<split>.txt`` has seven space-separated fields, as training_extensions' MS-ASL data
preparation writes them::

    <rel_path> <label> <start> <end> <clip_start> <clip_end> <fps>

* ``rel_path``: ``rawframes/<sample_id>``, relative to ``out_dir`` (the data root).
* ``label``: the sample's integer class (``samples_df["label"]``).
* ``start``, ``end``: the sign's frame range within the exported frames, 0-based and half-open
  ``[start, end)``: frame index ``i`` is the file ``img_{i + 1:05d}.jpg``. Without sign times
  the whole clip is the sign (``start = 0``, ``end = n_frames``), which is the case of clips
  already trimmed to the sign (e.g. WLASL100's). With ``sign_start_s``/``sign_end_s`` columns
  (seconds from the clip's first frame) they are ``round(t * fps)`` clamped to
  ``[0, n_frames]``.
* ``clip_start``, ``clip_end``: the exported frame range, 0-based, half-open: always
  ``0`` and ``n_frames`` (the number of ``img_*.jpg`` files of the sample).
* ``fps``: frame rate of the exported frames (``format(fps, "g")``: ``25``, ``12.5``).

Safety: every ``sample_id`` (and split name) must match ``^[A-Za-z0-9_][A-Za-z0-9_.-]*$`` and
contain no ``..``; otherwise :func:`export_otx` raises before writing anything, so nothing can
be written outside ``out_dir``. Each sample's folder is written under a temporary name and
renamed into place, and each annotation file is written atomically, so an interrupted export
never leaves a half-written folder under a final name.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from sldata.atomic import atomic_open
from sldata.frames import ClipDecodeError, FrameSettings, FrameStore, decode_clip

try:  # tqdm is a declared dependency; degrade to no progress bar if it is absent.
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None  # type: ignore[assignment]

SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
"""Pattern every exported ``sample_id`` and split name must match (plus: no ``..``)."""

RAWFRAMES = "rawframes"
FRAME_TEMPLATE = "img_{:05d}.jpg"
"""File name of exported frame index ``i`` is ``FRAME_TEMPLATE.format(i + 1)``."""


def check_safe_id(value: object, what: str = "sample_id") -> str:
    """Return ``value`` as a string if it is safe as one path component, else raise ``ValueError``.

    Safe: matches :data:`SAFE_ID` and contains no ``..`` (so not ``.``-only tricks either).
    """
    text = str(value)
    if not isinstance(value, str) or not SAFE_ID.fullmatch(text) or ".." in text:
        raise ValueError(f"unsafe {what} {value!r}: must match {SAFE_ID.pattern} without '..'")
    return text


@dataclass(frozen=True)
class OtxRecord:
    """One annotation line (see the module docs for the meaning of each field)."""

    rel_path: str
    label: int
    start: int
    end: int
    clip_start: int
    clip_end: int
    fps: float

    def line(self) -> str:
        """The line as written to ``<split>.txt`` (without the newline)."""
        return (f"{self.rel_path} {self.label} {self.start} {self.end} "
                f"{self.clip_start} {self.clip_end} {format(self.fps, 'g')}")


def parse_otx_line(line: str) -> OtxRecord:
    """Parse one annotation line back into an :class:`OtxRecord` (raises ``ValueError``)."""
    parts = line.split()
    if len(parts) != 7:
        raise ValueError(f"expected 7 fields, got {len(parts)}: {line!r}")
    rel, label, start, end, cs, ce, fps = parts
    return OtxRecord(rel, int(label), int(start), int(end), int(cs), int(ce), float(fps))


def sign_range(n_frames: int, fps: float, sign_start_s: float | None, sign_end_s: float | None) -> tuple[int, int]:
    """The sign's half-open frame range ``[start, end)`` within ``n_frames`` exported frames.

    ``None`` (or NaN) times mean the clip's start / end. Raises ``ValueError`` if the range is empty.
    """
    def frame(t: Any, default: int) -> int:
        if t is None or pd.isna(t):
            return default
        return min(max(int(round(float(t) * fps)), 0), n_frames)

    start, end = frame(sign_start_s, 0), frame(sign_end_s, n_frames)
    if not start < end:
        raise ValueError(f"empty sign range [{start}, {end}) of {n_frames} frames "
                         f"(sign_start_s={sign_start_s}, sign_end_s={sign_end_s}, fps={fps})")
    return start, end


def _write_rawframes(frames: np.ndarray, final: Path, quality: int) -> None:
    """Write ``frames`` (RGB) as ``final/img_00001.jpg ...`` via a temporary folder and a rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        params = [int(cv2.IMWRITE_JPEG_QUALITY), quality]
        for i, image in enumerate(frames):
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR), params)
            if not ok:  # pragma: no cover - OpenCV failing on a valid uint8 image
                raise RuntimeError(f"{final.name}: JPEG encoding of frame {i} failed")
            (tmp / FRAME_TEMPLATE.format(i + 1)).write_bytes(buf.tobytes())
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700 folders; exported data is shared like any other
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _frames_source(source: FrameStore | str | os.PathLike[str] | pd.DataFrame,
                   settings: FrameSettings | None) -> tuple[Any, Any]:
    """``(has(sample_id), get(sample_id) -> (frames, fps))`` for any accepted source."""
    if isinstance(source, pd.DataFrame):
        missing = [c for c in ("sample_id", "clip_path") if c not in source.columns]
        if missing:
            raise KeyError(f"clips lack the column(s) {missing}")
        ok = source if "status" not in source.columns else source[source["status"] == "ok"]
        paths = {str(s): str(p) for s, p in zip(ok["sample_id"], ok["clip_path"])}
        if settings is None:
            raise ValueError("decoding a clips table needs the frame settings (params frames, FrameSettings.from_dict)")
        cfg = settings

        def get_clip(sample_id: str) -> tuple[np.ndarray, float]:
            clip = decode_clip(paths[sample_id], cfg)
            return clip.frames, clip.fps

        return paths.__contains__, get_clip
    store = source if isinstance(source, FrameStore) else FrameStore(source)

    def get_store(sample_id: str) -> tuple[np.ndarray, float]:
        return store.clip(sample_id), store.fps(sample_id)

    return store.__contains__, get_store


def export_otx(frame_store_or_clips: FrameStore | str | os.PathLike[str] | pd.DataFrame,
               samples_df: pd.DataFrame, out_dir: str | os.PathLike[str], *,
               settings: FrameSettings | None = None, jpeg_quality: int = 95,
               splits: Sequence[str] | None = None, progress: bool = True) -> pd.DataFrame:
    """Write rawframe folders and per-split annotation files for training_extensions.

    Parameters
    ----------
    frame_store_or_clips:
        A :class:`~sldata.frames.FrameStore` (or the path of a shard) whose frames are exported
        as stored, or a clips table (``sample_id``, ``clip_path``, optional ``status``) decoded
        on the fly with ``settings``.
    samples_df:
        One row per sample: ``sample_id``, ``label`` (int), ``split``; optional
        ``sign_start_s``/``sign_end_s`` (see the module docs).
    out_dir:
        Data root; ``rawframes/`` and ``<split>.txt`` are written in it.
    settings:
        Decoding settings for a clips table (required then; e.g. from params ``frames``);
        ignored for a frame store.
    jpeg_quality:
        Quality (1-100) of the exported JPEG files.
    splits:
        Export only these splits (default: every split in ``samples_df``). An annotation file is
        written for each, even if empty.
    progress:
        Show a tqdm progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per sample of the exported splits: ``sample_id, split, status`` (``"written"``,
        ``"missing"``: no frames in the source, ``"failed"``: the clip did not decode or the sign
        range is empty), ``reason`` and the :class:`OtxRecord` fields (null unless written).

    Raises
    ------
    KeyError
        If a required column is missing.
    ValueError
        On an unsafe ``sample_id`` or split name, a duplicate ``sample_id`` or a bad
        ``jpeg_quality`` or a missing / non-integer label, before anything is written.
    """
    missing = [c for c in ("sample_id", "label", "split") if c not in samples_df.columns]
    if missing:
        raise KeyError(f"samples_df lacks the column(s) {missing}")
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be an integer in 1..100, got {jpeg_quality!r}")
    rows = samples_df if splits is None else samples_df[samples_df["split"].isin(list(splits))]
    ids = [check_safe_id(s) for s in rows["sample_id"]]
    labels = pd.to_numeric(rows["label"], errors="coerce")
    bad = [sid for sid, lab in zip(ids, labels) if pd.isna(lab) or float(lab) != int(lab)]
    if bad:
        raise ValueError(f"samples without an integer label: {bad[:10]}")
    split_names = list(dict.fromkeys(rows["split"])) if splits is None else list(dict.fromkeys(splits))
    for name in split_names:
        check_safe_id(name, "split name")
    dup = sorted(pd.Series(ids)[pd.Series(ids).duplicated()].unique().tolist())
    if dup:
        raise ValueError(f"duplicate sample_id(s) in samples_df: {dup[:10]}")

    out_dir = Path(out_dir)
    root = (out_dir / RAWFRAMES).resolve()
    has, get = _frames_source(frame_store_or_clips, settings)
    records: list[dict[str, Any]] = []
    lines: dict[str, list[str]] = {name: [] for name in split_names}
    items: Iterator[dict[str, Any]] | list[dict[str, Any]] = rows.to_dict("records")
    bar = tqdm(items, desc="otx export", unit="clip", disable=not progress) if tqdm is not None else items
    for row in bar:
        sample_id, split = str(row["sample_id"]), str(row["split"])
        base: dict[str, Any] = {"sample_id": sample_id, "split": split}
        if not has(sample_id):
            records.append({**base, "status": "missing", "reason": f"{sample_id}: no frames in the source"})
            continue
        try:
            frames, fps = get(sample_id)
            start, end = sign_range(len(frames), fps, row.get("sign_start_s"), row.get("sign_end_s"))
        except (ClipDecodeError, ValueError) as exc:
            records.append({**base, "status": "failed", "reason": f"{sample_id}: {exc}"})
            continue
        final = root / sample_id
        if final.parent != root:  # pragma: no cover - excluded by check_safe_id
            raise ValueError(f"{sample_id!r} would be written outside {root}")
        _write_rawframes(frames, final, jpeg_quality)
        record = OtxRecord(rel_path=f"{RAWFRAMES}/{sample_id}", label=int(row["label"]), start=start, end=end,
                           clip_start=0, clip_end=len(frames), fps=float(fps))
        lines[split].append(record.line())
        records.append({**base, "status": "written", "reason": "", **asdict(record)})
    for name, split_lines in lines.items():
        with atomic_open(out_dir / f"{name}.txt", "w", encoding="utf-8") as fh:
            fh.write("".join(f"{line}\n" for line in split_lines))
    columns = ["sample_id", "split", "status", "reason", *OtxRecord.__dataclass_fields__]
    return pd.DataFrame(records, columns=columns)
