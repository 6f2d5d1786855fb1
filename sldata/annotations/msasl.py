"""Reader for the MS-ASL annotation files (Microsoft, C-UDA-0.1).

A folder holds ``MSASL_classes.json`` (list of 1,000 glosses; index = label),
``MSASL_synonym.json`` (lists of words given one class) and one file per split,
``MSASL_{train,val,test}.json``: lists of clips with ``url`` (YouTube), ``start_time`` and
``end_time`` (seconds), ``start``/``end`` (frames at ``fps``), ``box`` (normalized
``[ymin, xmin, ymax, xmax]``), ``width``, ``height``, ``label``, ``signer_id``, ``text``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sldata.annotations.fields import (
    FieldError,
    as_box,
    as_float,
    as_int,
    as_str,
    box_columns,
    check_box_xyxy,
    normalize_url,
    require,
    source_key,
    url_site,
)
from sldata.annotations.jsonfile import AnnotationFileError, InputFile, load_json
from sldata.annotations.rejects import Reason, RejectLog

DATASET = "msasl"
SPLITS = ("train", "val", "test")
CLASSES_FILE = "MSASL_classes.json"
SYNONYMS_FILE = "MSASL_synonym.json"
WHERE_TO_GET = (
    "MS-ASL annotations require accepting Microsoft's licence: download them from "
    "https://www.microsoft.com/en-us/research/project/ms-asl/ and put MSASL_classes.json, "
    "MSASL_synonym.json and MSASL_{train,val,test}.json into the folder set as "
    "sources.msasl.dir in params.yaml"
)


def split_file(split: str) -> str:
    return f"MSASL_{split}.json"


def read_msasl_classes(folder: str | Path) -> tuple[list[str], list[list[str]], list[InputFile]]:
    """Read ``MSASL_classes.json`` and ``MSASL_synonym.json`` from ``folder``."""
    folder = Path(folder)
    classes, classes_prov = load_json(folder / CLASSES_FILE, hint=WHERE_TO_GET)
    if not isinstance(classes, list) or not all(isinstance(c, str) and c.strip() for c in classes):
        raise AnnotationFileError(f"{folder / CLASSES_FILE}: expected a JSON list of non-empty gloss strings")
    if len(set(classes)) != len(classes):
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        raise AnnotationFileError(f"{folder / CLASSES_FILE}: duplicate class names {dupes[:5]}")
    synonyms, syn_prov = load_json(folder / SYNONYMS_FILE, hint=WHERE_TO_GET)
    if not isinstance(synonyms, list) or not all(
        isinstance(g, list) and all(isinstance(w, str) for w in g) for g in synonyms
    ):
        raise AnnotationFileError(f"{folder / SYNONYMS_FILE}: expected a JSON list of lists of words")
    return classes, synonyms, [classes_prov, syn_prov]


def read_msasl(
    folder: str | Path,
    splits: list[str],
    rejects: RejectLog,
    max_time_frame_disagreement_s: float,
) -> tuple[list[dict[str, Any]], list[str], list[InputFile]]:
    """Read MS-ASL split files into canonical manifest rows.

    Parameters
    ----------
    folder:
        Folder with the MS-ASL files (see module docs).
    splits:
        Which of ``train``, ``val``, ``test`` to read; each file must exist.
    rejects:
        Every row that cannot be used is recorded here.
    max_time_frame_disagreement_s:
        A row whose ``start_time``/``end_time`` differ from ``start/fps``/``end/fps`` by more
        than this is rejected as ``inconsistent_crop`` (which of the two is right is unknown).

    Returns
    -------
    rows, classes, provenance
        Manifest rows; class names (index = label); size and sha256 of every file read.
        Rows are read in split order; an exact duplicate clip (same URL, times, label and
        signer) is kept once, at its first occurrence, so no clip sits in two splits.
    """
    folder = Path(folder)
    classes, _synonyms, provenance = read_msasl_classes(folder)
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for split in splits:
        if split not in SPLITS:
            raise AnnotationFileError(f"unknown MS-ASL split {split!r}; expected one of {', '.join(SPLITS)}")
        path = folder / split_file(split)
        data, prov = load_json(path, hint=WHERE_TO_GET)
        provenance.append(prov)
        file = str(path)
        if not isinstance(data, list):
            raise AnnotationFileError(f"{file}: expected a JSON list of clip objects, got {type(data).__name__}")
        for index, record in enumerate(data):
            where = f"[{index}]"
            try:
                row = _clip_row(record, split, index, classes, file, where, max_time_frame_disagreement_s)
            except FieldError as err:
                rejects.add(DATASET, file, where, err.field, err.reason, err.detail, record)
                continue
            if row["sample_id"] in seen:
                rejects.add(DATASET, file, where, "", Reason.DUPLICATE_ID,
                            f"same clip (url, start_time, end_time, label, signer_id) as {seen[row['sample_id']]}",
                            record)
                continue
            seen[row["sample_id"]] = f"{file}{where}"
            rows.append(row)
    return rows, classes, provenance


def _clip_row(
    record: Any,
    split: str,
    index: int,
    classes: list[str],
    file: str,
    where: str,
    tolerance_s: float,
) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise FieldError(Reason.WRONG_TYPE, "", f"expected a clip object, got {type(record).__name__}")
    url = normalize_url(require(record, "url"))
    label = as_int(require(record, "label"), "label")
    if not 0 <= label < len(classes):
        raise FieldError(Reason.UNKNOWN_LABEL, "label", f"label {label} is not a class index in [0, {len(classes)})")
    fps = as_float(require(record, "fps"), "fps")
    if fps <= 0:
        raise FieldError(Reason.INVALID_VALUE, "fps", f"fps must be positive, got {fps}")
    start_s = as_float(require(record, "start_time"), "start_time")
    end_s = as_float(require(record, "end_time"), "end_time")
    if start_s < 0:
        raise FieldError(Reason.INVALID_VALUE, "start_time", f"start_time {start_s} is negative")
    if end_s <= start_s:
        raise FieldError(Reason.END_BEFORE_START, "end_time",
                         f"end_time {end_s} is not after start_time {start_s} (empty or reversed crop)")
    if record.get("start") is not None:
        start_frame = as_int(record["start"], "start")
    else:
        start_frame = round(start_s * fps)
    if record.get("end") is not None:
        end_frame = as_int(record["end"], "end")
    else:
        end_frame = round(end_s * fps)
    for name, seconds, frame in (("start", start_s, start_frame), ("end", end_s, end_frame)):
        if abs(seconds - frame / fps) > tolerance_s:
            raise FieldError(
                Reason.INCONSISTENT_CROP,
                name,
                f"{name} frame {frame} at {fps} fps is {frame / fps:.3f} s but {name}_time is {seconds:.3f} s "
                f"(tolerance {tolerance_s} s)",
            )
    box = None
    if record.get("box") is not None:
        ymin, xmin, ymax, xmax = as_box(record["box"], "box")
        box = (xmin, ymin, xmax, ymax)
        check_box_xyxy(box, "box", normalized=True)
    width = as_float(record["width"], "width") if record.get("width") is not None else None
    height = as_float(record["height"], "height") if record.get("height") is not None else None
    signer = as_int(record["signer_id"], "signer_id") if record.get("signer_id") is not None else None
    text = as_str(record["text"], "text") if record.get("text") is not None else None
    identity = f"{url}|{start_s:.3f}|{end_s:.3f}|{label}|{signer}"
    return {
        "sample_id": f"{DATASET}-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:12],
        "dataset": DATASET,
        "original_id": f"{split}/{index}",
        "source_key": source_key(url),
        "url": url,
        "source_site": url_site(url),
        "gloss": classes[label],
        "label": label,
        "annotated_text": text,
        "split": split,
        "signer_id": signer,
        "variation_id": None,
        "annotated_fps": fps,
        "start_frame": start_frame,
        "end_frame": end_frame,
        "start_s": start_s,
        "end_s": end_s,
        **box_columns(box, "normalized"),
        "annotated_width": width,
        "annotated_height": height,
        "source_file": file,
        "source_row": where,
    }


def read_source(cfg: dict[str, Any], raw_dir: Path, rejects: RejectLog) -> tuple[list[dict[str, Any]], list[str],
                                                                                   list[InputFile]]:
    """The ``msasl`` entry of :data:`sldata.manifest.READERS`: the ``sources.msasl`` section's splits, read."""
    rows, classes, provs = read_msasl(cfg["dir"], list(cfg["splits"]), rejects, cfg["max_time_frame_disagreement_s"])
    return rows, list(classes), list(provs)
