"""Reader for the WLASL v0.3 annotation JSON (dxli94/WLASL ``start_kit/WLASL_v0.3.json``).

The file is a list of ``{"gloss": str, "instances": [instance, ...]}`` ordered by class
index (the order of ``wlasl_class_list.txt``). Each instance has ``video_id``, ``url``,
``split``, ``frame_start`` (1-based), ``frame_end`` (-1 = to the end), ``fps`` (always 25),
``bbox`` (pixel ``[xmin, ymin, xmax, ymax]``), ``signer_id``, ``variation_id``,
``instance_id`` and ``source``.
"""

from __future__ import annotations

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
    safe_id,
    source_key,
    url_site,
)
from sldata.annotations.jsonfile import AnnotationFileError, InputFile, load_json, sha256_of
from sldata.annotations.rejects import Reason, RejectLog
from sldata.fetch import fetch_pinned

DATASET = "wlasl"
SPLITS = ("train", "val", "test")


def read_wlasl(path: str | Path, rejects: RejectLog) -> tuple[list[dict[str, Any]], list[str], InputFile]:
    """Read a WLASL v0.3 JSON file into canonical manifest rows.

    Parameters
    ----------
    path:
        The annotation file (the full ``WLASL_v0.3.json`` or a prefix of it such as ``asl100.json``).
    rejects:
        Every instance (or whole gloss entry) that cannot be used is recorded here.

    Returns
    -------
    rows, glosses, provenance
        ``rows`` are dicts with the columns of :data:`sldata.manifest_schema.COLUMNS`;
        ``glosses[i]`` is the gloss of class ``i`` (``None`` where the entry was rejected, so
        later class indices never shift); ``provenance`` is the file's size and sha256.

    Raises
    ------
    AnnotationFileError
        If the file is missing, is not JSON, or is not a list.
    """
    file = str(path)
    data, provenance = load_json(path)
    if not isinstance(data, list):
        raise AnnotationFileError(
            f"{file}: expected a JSON list of {{gloss, instances}} entries (WLASL v0.3), got {type(data).__name__}"
        )
    rows: list[dict[str, Any]] = []
    glosses: list[str | None] = []
    seen_gloss: dict[str, int] = {}
    seen_ids: dict[str, str] = {}
    for label, entry in enumerate(data):
        where = f"[{label}]"
        gloss = _read_gloss_entry(entry, file, where, rejects)
        if gloss is not None and gloss in seen_gloss:
            rejects.add(DATASET, file, where, "gloss", Reason.DUPLICATE_GLOSS,
                        f"gloss {gloss!r} already defined as class {seen_gloss[gloss]}; "
                        f"its {len(entry['instances'])} instances are rejected", {"gloss": gloss})
            gloss = None
        glosses.append(gloss)
        if gloss is None:
            continue
        seen_gloss[gloss] = label
        for i, inst in enumerate(entry["instances"]):
            row_where = f"{where}.instances[{i}]"
            try:
                row = _instance_row(inst, gloss, label, file, row_where)
            except FieldError as err:
                rejects.add(DATASET, file, row_where, err.field, err.reason, err.detail, inst)
                continue
            if row["sample_id"] in seen_ids:
                rejects.add(DATASET, file, row_where, "video_id", Reason.DUPLICATE_ID,
                            f"video_id {row['original_id']!r} already used at {seen_ids[row['sample_id']]}", inst)
                continue
            seen_ids[row["sample_id"]] = row_where
            rows.append(row)
    return rows, glosses, provenance  # type: ignore[return-value]


def _read_gloss_entry(entry: Any, file: str, where: str, rejects: RejectLog) -> str | None:
    """Validate one ``{gloss, instances}`` entry; record a reject and return None if unusable."""
    if not isinstance(entry, dict):
        rejects.add(DATASET, file, where, "", Reason.WRONG_TYPE,
                    f"expected an object with 'gloss' and 'instances', got {type(entry).__name__}", entry)
        return None
    try:
        gloss = as_str(require(entry, "gloss"), "gloss").strip()
        if not gloss:
            raise FieldError(Reason.INVALID_VALUE, "gloss", "gloss is empty")
        instances = require(entry, "instances")
        if not isinstance(instances, list):
            raise FieldError(Reason.WRONG_TYPE, "instances", f"expected a list, got {type(instances).__name__}")
    except FieldError as err:
        n = len(entry.get("instances") or []) if isinstance(entry.get("instances"), list) else 0
        rejects.add(DATASET, file, where, err.field, err.reason,
                    f"{err.detail}; the entry and its {n} instances are rejected", {k: entry[k] for k in entry if k != "instances"})
        return None
    return gloss


def _instance_row(inst: Any, gloss: str, label: int, file: str, where: str) -> dict[str, Any]:
    if not isinstance(inst, dict):
        raise FieldError(Reason.WRONG_TYPE, "", f"expected an instance object, got {type(inst).__name__}")
    video_id = safe_id(require(inst, "video_id"), "video_id")
    url = normalize_url(require(inst, "url"))
    split = as_str(require(inst, "split"), "split")
    if split not in SPLITS:
        raise FieldError(Reason.INVALID_VALUE, "split", f"split {split!r} is not one of {', '.join(SPLITS)}")
    fps = as_float(require(inst, "fps"), "fps")
    if fps <= 0:
        raise FieldError(Reason.INVALID_VALUE, "fps", f"fps must be positive, got {fps}")
    frame_start = as_int(require(inst, "frame_start"), "frame_start")
    frame_end = as_int(require(inst, "frame_end"), "frame_end")
    if frame_start < 1:
        raise FieldError(Reason.INVALID_VALUE, "frame_start", f"frame_start is 1-based, got {frame_start}")
    if frame_end != -1 and frame_end < frame_start:
        raise FieldError(Reason.END_BEFORE_START, "frame_end",
                         f"frame_end {frame_end} is before frame_start {frame_start}")
    box = None
    if inst.get("bbox") is not None:
        box = as_box(inst["bbox"], "bbox")
        check_box_xyxy(box, "bbox", normalized=False)
    signer = as_int(inst["signer_id"], "signer_id") if inst.get("signer_id") is not None else None
    variation = as_int(inst["variation_id"], "variation_id") if inst.get("variation_id") is not None else None
    site = as_str(inst["source"], "source").strip() if inst.get("source") is not None else ""
    start_frame = frame_start - 1
    end_frame = None if frame_end == -1 else frame_end
    return {
        "sample_id": f"{DATASET}-{video_id}",
        "dataset": DATASET,
        "original_id": video_id,
        "source_key": source_key(url),
        "url": url,
        "source_site": site or url_site(url),
        "gloss": gloss,
        "label": label,
        "annotated_text": gloss,
        "split": split,
        "signer_id": signer,
        "variation_id": variation,
        "annotated_fps": fps,
        "start_frame": start_frame,
        "end_frame": end_frame,
        "start_s": start_frame / fps,
        "end_s": None if end_frame is None else end_frame / fps,
        **box_columns(box, "pixel"),
        "annotated_width": None,
        "annotated_height": None,
        "source_file": file,
        "source_row": where,
    }


def wlasl_annotation_path(annotation: dict[str, Any], raw_dir: str | Path) -> Path:
    """The WLASL annotation file to read: the verified local copy, or the pinned fetch.

    Raises
    ------
    AnnotationFileError
        When a configured local copy is missing or its sha256 is not ``local_sha256``.
    FetchError
        When fetching is needed and fails (offline, mismatch).
    """
    local = annotation["local_path"]
    if local:
        path = Path(local)
        if not path.is_file():
            raise AnnotationFileError(
                f"sources.wlasl.annotation.local_path: {local} does not exist; fix the path, or set it to \"\" "
                f"to fetch the pinned WLASL v0.3 from {annotation['url']}"
            )
        expected = annotation["local_sha256"]
        if expected:
            actual = sha256_of(path)
            if actual != expected:
                raise AnnotationFileError(
                    f"sources.wlasl.annotation.local_sha256: {local} has sha256 {actual}, params say {expected}. "
                    "If the file was changed on purpose, put the new sha256 in params.yaml."
                )
        return path
    dest = Path(raw_dir) / "WLASL_v0.3.json"
    return fetch_pinned(annotation["url"], dest, annotation["size"], annotation["sha256"], annotation["timeout_s"])


def read_source(cfg: dict[str, Any], raw_dir: Path, rejects: RejectLog) -> tuple[list[dict[str, Any]], list[str],
                                                                                   list[InputFile]]:
    """The ``wlasl`` entry of :data:`sldata.manifest.READERS`: the ``sources.wlasl`` section's annotation, read."""
    rows, glosses, prov = read_wlasl(wlasl_annotation_path(cfg["annotation"], raw_dir), rejects)
    return rows, glosses, [prov]
