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

import importlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sldata import __version__
from sldata.annotations import RejectLog
from sldata.annotations.jsonfile import InputFile
from sldata.atomic import atomic_path, write_json
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


READERS: dict[str, str] = {
    "wlasl": "sldata.annotations.wlasl:read_source",
    "msasl": "sldata.annotations.msasl:read_source",
}
"""Annotation readers by dataset name, as ``"module:function"`` (imported when the source is enabled).

A reader takes its ``sources.<name>`` params section, the raw-data folder and the
:class:`RejectLog`, and returns ``(manifest rows, class names, [InputFile provenance])``. A new
dataset is one module with its ``read_source``, one line here, its ``sources.<name>`` schema
section and its name in ``subset.dataset``'s enum. Sources are read in this order."""


def build_manifest(sources: dict[str, Any], raw_dir: str | Path) -> ManifestResult:
    """Read every enabled source of a validated ``sources`` params section into one result.

    ``raw_dir`` is where a fetched annotation is kept (verified by sha256 on every use).
    """
    rejects = RejectLog()
    result = ManifestResult(rows=[], rejects=rejects)
    for name, where in READERS.items():
        if name not in sources or not sources[name]["enabled"]:
            continue
        module, _, attribute = where.partition(":")
        read_source = getattr(importlib.import_module(module), attribute)
        rows, classes, provs = read_source(sources[name], Path(raw_dir), rejects)
        result.rows.extend(rows)
        result.inputs.extend(provs)
        result.classes[name] = list(classes)
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
