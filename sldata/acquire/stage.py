"""The acquisition stage: one shard of the subset from annotation rows to usable clips.

For the clips of one shard (:func:`shard_of` groups clips by their source video, so a video
is downloaded by exactly one shard, once):

1. **Acquire** each source video once (:func:`sldata.acquire.download.download_sources`): a
   pretrimmed local store first (its clips are used as they are), then an untrimmed local
   store, then the network when ``acquire.network`` is true. Downloads and the ledger live in
   ``cache_dir``, outside the stage outputs, so a rerun (or a killed run) never downloads a
   finished video again.
2. **Clean the temporal crops** of the downloaded sources on their real timeline
   (:func:`sldata.acquire.crops.clean_crops`).
3. **Trim and crop** (:func:`sldata.acquire.trim.trim_clips`) into ``out_dir/videos``;
   pretrimmed clips are copied, never trimmed or cropped again.
4. Optionally **mask burned-in captions** (:func:`sldata.acquire.captions.mask_captions_in_video`).

Every clip of the shard ends in ``out_dir/clips.parquet`` with ``status`` ``usable`` or
``failed`` and, when failed, the ``stage`` that rejected it, a typed ``reason`` and a
``detail``; nothing is dropped silently. :func:`coverage_from_clip_tables` turns the tables
of all shards into the coverage report.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from sldata.acquire.captions import CaptionMaskSettings, mask_captions_in_video
from sldata.acquire.coverage import USABLE, report_from_status
from sldata.acquire.crops import CropSettings, clean_crops
from sldata.acquire.download import DownloadSettings, SourceRequest, build_requests, download_sources
from sldata.acquire.ledger import FailureReason
from sldata.acquire.store import LocalStore
from sldata.acquire.trim import TrimSettings, trim_clips
from sldata.atomic import is_out_of_space, write_json
from sldata.manifest import write_parquet
from sldata.settings import settings_from_dict

log = logging.getLogger(__name__)

FAILED = "failed"

CLIP_COLUMNS: list[str] = [
    "sample_id", "dataset", "split", "label", "gloss", "signer_id", "source_key", "shard",
    "status", "stage", "reason", "detail", "clip_path", "pretrimmed", "native_fps",
    "clip_start_s", "clip_end_s", "n_frames", "width", "height", "fps", "captions_masked",
]


def shard_of(key: str, count: int) -> int:
    """Stable shard number of a source key (sha1, so it never changes between runs or machines)."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % count


def shard_rows(samples: pd.DataFrame, shard: int, count: int) -> pd.DataFrame:
    """The rows of ``samples`` whose source video belongs to ``shard``."""
    if not 0 <= shard < count:
        raise ValueError(f"shard {shard} is outside 0..{count - 1}")
    keys = samples["source_key"].astype(str)
    return samples[keys.map(lambda k: shard_of(k, count) == shard).to_numpy(bool)].copy()


@dataclass(frozen=True)
class LocalStoreSettings:
    """``acquire.local_store``: a folder of videos named by id; empty ``dir`` means none."""

    dir: str
    pretrimmed: bool


@dataclass(frozen=True)
class AcquireSettings:
    """The ``acquire`` section of params.yaml."""

    local_store: LocalStoreSettings
    network: bool
    min_success_ratio: float
    download: DownloadSettings
    crops: CropSettings
    trim: TrimSettings
    captions: CaptionMaskSettings

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AcquireSettings:
        """Build from the (validated) params section (``null`` ``trim.target_fps``: the native rate)."""
        data = dict(data)
        trim = dict(data.pop("trim"))
        download = dict(data.pop("download"))
        crops = {"fps_col": "fps", **dict(data.pop("crops"))}
        local_store = settings_from_dict(LocalStoreSettings, data.pop("local_store"), "acquire.local_store")
        captions = settings_from_dict(CaptionMaskSettings, data.pop("captions"), "acquire.captions")
        unknown = sorted(set(data) - {"network", "min_success_ratio"})
        if unknown:
            raise ValueError(f"acquire: unknown key(s) {unknown}")
        return cls(
            local_store=local_store,
            download=DownloadSettings.from_dict({"progress": False, **download}, where="acquire.download"),
            crops=settings_from_dict(CropSettings, crops, "acquire.crops"),
            trim=settings_from_dict(TrimSettings, trim, "acquire.trim"),
            captions=captions,
            network=bool(data["network"]),
            min_success_ratio=float(data["min_success_ratio"]),
        )

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_success_ratio <= 1.0:
            raise ValueError(f"acquire.min_success_ratio must be within [0, 1], got {self.min_success_ratio}")


def _stores(settings: AcquireSettings) -> tuple[LocalStore | None, LocalStore | None]:
    """(pretrimmed store, untrimmed store) from the settings."""
    s = settings.local_store
    if not s.dir:
        return None, None
    root = Path(s.dir)
    if not root.is_dir():
        raise FileNotFoundError(f"acquire.local_store.dir {s.dir!r} is not a folder")
    store = LocalStore(root, pretrimmed=s.pretrimmed)
    return (store, None) if s.pretrimmed else (None, store)


def _offline_filter(requests: list[SourceRequest], untrimmed: LocalStore | None,
                    network: bool) -> tuple[list[SourceRequest], dict[str, str]]:
    """Without network, keep the requests a store can serve; the others fail as not in a store."""
    if network:
        return requests, {}
    keep: list[SourceRequest] = []
    missing: dict[str, str] = {}
    for req in requests:
        if req.pretrimmed or (untrimmed is not None and untrimmed.lookup_any(req.lookup_keys)):
            keep.append(req)
        else:
            missing[req.source_key] = "not in the local store and acquire.network is false"
    return keep, missing


def acquire_shard(samples: pd.DataFrame, shard: int, count: int, out_dir: str | Path, cache_dir: str | Path,
                  settings: AcquireSettings, progress: bool = True) -> pd.DataFrame:
    """Acquire, clean, trim (and optionally caption-mask) the clips of one shard.

    Parameters
    ----------
    samples
        The subset's samples table (manifest columns plus ``label``).
    shard, count
        Which shard of how many (see :func:`shard_of`).
    out_dir
        The shard's output folder: ``videos/<sample_id>.mp4`` (+ provenance ``.json``),
        ``clips.parquet``, ``ledger.parquet`` (a copy of the download ledger) and ``report.json``.
    cache_dir
        Folder of downloaded source videos and the live download ledger; kept between runs.

    Returns
    -------
    pandas.DataFrame
        The clip table (:data:`CLIP_COLUMNS`), also written to ``out_dir/clips.parquet``.
    """
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    rows = shard_rows(samples, shard, count).sort_values("sample_id").reset_index(drop=True)
    pre_store, untrimmed = _stores(settings)
    requests = build_requests(rows, pre_store)
    requests, offline_missing = _offline_filter(requests, untrimmed, settings.network)
    ledger_path = cache_dir / "ledger.parquet"
    stores = [s for s in (pre_store, untrimmed) if s is not None]
    source_dir = cache_dir / "videos"
    ledger = download_sources(requests, source_dir, ledger_path, settings.download, stores)
    ledger_df = ledger.to_frame()

    status: dict[str, dict[str, Any]] = {}

    def fail(sample_id: str, stage: str, reason: str, detail: str) -> None:
        status[sample_id] = {"status": FAILED, "stage": stage, "reason": reason, "detail": detail}

    by_key = ledger_df.set_index("source_key") if len(ledger_df) else pd.DataFrame()
    pre_ids = {r.source_key for r in requests if r.pretrimmed}
    pre_rows, src_rows = [], []
    for rec in rows.to_dict("records"):
        sid, key = rec["sample_id"], rec["source_key"]
        if sid in pre_ids and sid in by_key.index and by_key.at[sid, "status"] == "ok":
            pre_rows.append(rec)
        elif sid in pre_ids and sid in by_key.index:  # a pretrimmed clip whose store file was refused
            fail(sid, "download", str(by_key.at[sid, "failure_reason"]), str(by_key.at[sid, "last_error"] or ""))
        elif key in offline_missing:
            fail(sid, "download", FailureReason.NOT_IN_LOCAL_STORE.value, offline_missing[key])
        elif key in by_key.index and by_key.at[key, "status"] == "ok":
            src_rows.append({**rec, "duration_s": by_key.at[key, "duration_s"], "fps": by_key.at[key, "fps"]})
        elif key in by_key.index:
            fail(sid, "download", str(by_key.at[key, "failure_reason"]), str(by_key.at[key, "last_error"] or ""))
        else:
            fail(sid, "download", FailureReason.UNKNOWN.value, "no ledger row after download")

    video_dir = out_dir / "videos"
    provenance: list[pd.DataFrame] = []
    crop_stats: dict[str, Any] = {}
    if pre_rows:
        paths = {r["sample_id"]: source_dir / by_key.at[r["sample_id"], "path"] for r in pre_rows}
        prov, rej = trim_clips(pd.DataFrame(pre_rows), paths, video_dir, settings.trim, pretrimmed=True,
                               key_column="sample_id", progress=progress)
        provenance.append(prov)
        for r in rej.to_dict("records"):
            fail(r["sample_id"], "trim", r["reason"], r["detail"])
    if src_rows:
        cleaned = clean_crops(pd.DataFrame(src_rows), settings.crops)
        crop_stats = cleaned.stats
        for r in cleaned.rejects.to_dict("records"):
            fail(r["sample_id"], "crops", r["reason"], r["detail"])
        paths = {k: source_dir / by_key.at[k, "path"] for k in cleaned.kept["source_key"].unique()}
        prov, rej = trim_clips(cleaned.kept, paths, video_dir, settings.trim, progress=progress)
        provenance.append(prov)
        for r in rej.to_dict("records"):
            fail(r["sample_id"], "trim", r["reason"], r["detail"])
        crops = cleaned.kept.set_index("sample_id")[["clip_start_s", "clip_end_s"]]
    else:
        crops = pd.DataFrame(columns=["clip_start_s", "clip_end_s"])

    prov_df = pd.concat(provenance, ignore_index=True) if provenance else pd.DataFrame(columns=["sample_id"])
    prov_df = prov_df.set_index("sample_id") if len(prov_df) else prov_df
    masked: dict[str, int] = {}
    if settings.captions.enabled:
        for sid in prov_df.index:
            if sid in status:
                continue
            clip = video_dir / f"{sid}.mp4"
            try:
                tmp = video_dir / f".{sid}.captions.mp4"
                report = mask_captions_in_video(clip, tmp, settings.captions)
                tmp.replace(clip)
                masked[sid] = len(report.boxes)
            except Exception as exc:  # one bad clip never stops the shard (a full disk does)
                if is_out_of_space(exc):
                    raise
                fail(sid, "captions", "caption_masking_failed", f"{type(exc).__name__}: {exc}")

    records = []
    for rec in rows.to_dict("records"):
        sid = rec["sample_id"]
        out = {c: rec.get(c) for c in ("sample_id", "dataset", "split", "label", "gloss", "signer_id", "source_key")}
        out["shard"] = shard
        st = status.get(sid)
        if st is None and sid not in prov_df.index:
            st = {"status": FAILED, "stage": "trim", "reason": "unknown", "detail": "no clip was produced"}
        if st is not None:
            out.update(st)
            out.update(clip_path=None, pretrimmed=sid in pre_ids)
        else:
            p = prov_df.loc[sid]
            out.update(status=USABLE, stage=None, reason=None, detail=None,
                       clip_path=(video_dir / f"{sid}.mp4").as_posix(), pretrimmed=bool(p["pretrimmed"]),
                       native_fps=p["native_fps"], n_frames=p["n_frames_written"], width=p["out_width"],
                       height=p["out_height"], fps=p["out_fps"])
            if sid in crops.index:
                out.update(clip_start_s=crops.at[sid, "clip_start_s"], clip_end_s=crops.at[sid, "clip_end_s"])
            out["captions_masked"] = masked.get(sid, 0)
        records.append(out)
    table = _typed_clip_table(records)
    write_parquet(pa.Table.from_pandas(table, preserve_index=False), out_dir / "clips.parquet")
    write_parquet(pa.Table.from_pandas(ledger_df, preserve_index=False), out_dir / "ledger.parquet")
    counts = table.groupby(["status", "reason"], dropna=False).size()
    write_json(out_dir / "report.json", {
        "shard": shard, "shards": count, "clips": int(len(table)),
        "usable": int((table["status"] == USABLE).sum()),
        "by_reason": {str(r if isinstance(r, str) else USABLE): int(n) for (s, r), n in counts.items()},
        "crop_lengths_s": crop_stats,
    })
    return table


def _typed_clip_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame.from_records(list(records), columns=CLIP_COLUMNS)
    for col in ("label", "shard", "n_frames", "width", "height", "captions_masked"):
        table[col] = pd.array(table[col], dtype="Int32")
    for col in ("native_fps", "clip_start_s", "clip_end_s", "fps"):
        table[col] = pd.array(table[col], dtype="Float64")
    table["pretrimmed"] = table["pretrimmed"].astype(bool)
    for col in ("sample_id", "dataset", "split", "gloss", "source_key", "status", "stage", "reason", "detail", "clip_path"):
        table[col] = table[col].astype("string")
    table["signer_id"] = table["signer_id"].astype("string")
    return table


def read_clip_tables(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate the clip tables of several shards (sorted by sample_id)."""
    frames = [pd.read_parquet(p) for p in paths]
    if not frames:
        return _typed_clip_table([])
    return pd.concat(frames, ignore_index=True).sort_values("sample_id").reset_index(drop=True)


def coverage_from_clip_tables(clips: pd.DataFrame) -> pd.DataFrame:
    """Counts per (dataset, split): ``clips``, ``usable``, ``usable_ratio`` and one column per failure
    reason; a last row ``("ALL", "ALL")`` sums everything (:func:`sldata.acquire.coverage.report_from_status`)."""
    status = clips["status"].where(clips["status"] == USABLE, clips["reason"].fillna("unknown")).astype(str)
    return report_from_status(pd.DataFrame({"dataset": clips["dataset"].astype(str).to_numpy(),
                                            "split": clips["split"].astype(str).to_numpy(), "status": status.to_numpy()}))

def coverage_metrics(report: pd.DataFrame) -> dict[str, Any]:
    """The report as nested JSON for ``dvc metrics``: ``{dataset: {split: {clips, usable, ...}}}``."""
    out: dict[str, Any] = {}
    for (ds, sp), row in report.iterrows():
        out.setdefault(str(ds), {})[str(sp)] = {k: (float(v) if k == "usable_ratio" else int(v)) for k, v in row.items()}
    return out

