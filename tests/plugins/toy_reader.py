"""A dataset reader: ``toy`` annotations are WLASL-format JSON files whose rows become ``toy`` rows.

Plugged in by ``READERS["toy"] = "plugins.toy_reader:read_source"`` (plus a ``sources.toy`` schema
section and ``toy`` in ``subset.dataset``'s enum).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sldata.annotations.jsonfile import InputFile
from sldata.annotations.rejects import RejectLog
from sldata.annotations.wlasl import read_wlasl


def read_source(cfg: dict[str, Any], raw_dir: Path, rejects: RejectLog) -> tuple[list[dict[str, Any]], list[str],
                                                                                   list[InputFile]]:
    """``sources.toy`` is ``{enabled, file}``: the rows of ``file``, as dataset ``toy``."""
    rows, glosses, prov = read_wlasl(cfg["file"], rejects)
    for row in rows:
        row["dataset"] = "toy"
        row["sample_id"] = "toy-" + row["sample_id"].split("-", 1)[1]
    return rows, glosses, [prov]
