"""The manifest stage: annotation files in, one typed ``manifest.parquet`` out.

Outputs (in ``<data_dir>/manifest/``):

``manifest.parquet``
    One row per usable clip, columns of :data:`sldata.manifest_schema.SCHEMA`. The file
    metadata holds ``sldata.schema`` (column docs), ``sldata.provenance`` (every input
    file's path, size and sha256) and ``sldata.classes`` (class names per dataset).
``rejects.parquet``
    One row per refused input row: file, row, field, reason code, detail.
``report.json``
    Counts of kept rows per dataset/split and of rejects per reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sldata import __version__
from sldata.annotations import RejectLog
from sldata.annotations.jsonfile import AnnotationFileError, InputFile, sha256_of
from sldata.annotations.msasl import read_msasl
from sldata.annotations.wlasl import read_wlasl
from sldata.atomic import atomic_path, write_json
from sldata.fetch import fetch_pinned
from sldata.manifest_schema import REJECT_SCHEMA, SCHEMA, SCHEMA_VERSION, describe_schema


@dataclass
class ManifestResult:
    """What the manifest stage read and produced."""

    rows: list[dict[str, Any]]
    rejects: RejectLog
    inputs: list[InputFile] = field(default_factory=list)
    classes: dict[str, list[str | None]] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        kept = Counter(f"{r['dataset']}/{r['split']}" for r in self.rows)
        return {
            "kept_total": len(self.rows),
            "kept": dict(sorted(kept.items())),
            "rejected_total": len(self.rejects),
            "rejected_by_reason": dict(sorted(self.rejects.counts().items())),
            "classes": {name: sum(g is not None for g in glosses) for name, glosses in self.classes.items()},
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


def build_manifest(sources: dict[str, Any], raw_dir: str | Path) -> ManifestResult:
    """Read every enabled source of a validated ``sources`` params section into one result.

    ``raw_dir`` is where a fetched annotation is kept (verified by sha256 on every use).
    """
    rejects = RejectLog()
    result = ManifestResult(rows=[], rejects=rejects)
    if sources["wlasl"]["enabled"]:
        path = wlasl_annotation_path(sources["wlasl"]["annotation"], raw_dir)
        rows, glosses, prov = read_wlasl(path, rejects)
        result.rows.extend(rows)
        result.inputs.append(prov)
        result.classes["wlasl"] = glosses
    if sources["msasl"]["enabled"]:
        cfg = sources["msasl"]
        rows, classes, provs = read_msasl(
            cfg["dir"], list(cfg["splits"]), rejects, cfg["max_time_frame_disagreement_s"]
        )
        result.rows.extend(rows)
        result.inputs.extend(provs)
        result.classes["msasl"] = list(classes)
    return result


def manifest_table(result: ManifestResult) -> pa.Table:
    """The manifest as an Arrow table with schema, provenance and classes in its metadata."""
    table = pa.Table.from_pylist(result.rows, schema=SCHEMA)
    metadata = {
        "sldata.schema_version": SCHEMA_VERSION,
        "sldata.version": __version__,
        "sldata.schema": describe_schema(),
        "sldata.provenance": json.dumps([i.as_dict() for i in result.inputs], sort_keys=True),
        "sldata.classes": json.dumps(result.classes, ensure_ascii=False),
    }
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write ``table`` atomically, deterministically (same input, same bytes)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)


def write_manifest(result: ManifestResult, out_dir: str | Path) -> dict[str, Any]:
    """Write ``manifest.parquet``, ``rejects.parquet`` and ``report.json`` into ``out_dir``."""
    out = Path(out_dir)
    write_parquet(manifest_table(result), out / "manifest.parquet")
    write_parquet(pa.Table.from_pylist(result.rejects.as_dicts(), schema=REJECT_SCHEMA), out / "rejects.parquet")
    report = result.report()
    write_json(out / "report.json", report)
    return report


def read_manifest(path: str | Path) -> tuple[pa.Table, dict[str, Any]]:
    """Read a manifest and its decoded metadata (provenance, classes)."""
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    decoded: dict[str, Any] = {
        "schema_version": meta.get("sldata.schema_version"),
        "provenance": json.loads(meta.get("sldata.provenance", "[]")),
        "classes": json.loads(meta.get("sldata.classes", "{}")),
    }
    return table, decoded


def format_report(report: dict[str, Any]) -> str:
    """Human summary printed by the CLI."""
    lines = [f"kept {report['kept_total']} rows"]
    lines += [f"  {name}: {n}" for name, n in report["kept"].items()]
    lines.append(f"rejected {report['rejected_total']} rows")
    lines += [f"  {reason}: {n}" for reason, n in report["rejected_by_reason"].items()]
    return "\n".join(lines)
