"""Class subsets and splits: WLASL-k, MS-ASL-k, explicit class lists, signer-independent re-splits.

* ``WLASL-k`` keeps the first ``k`` glosses of the WLASL v0.3 JSON (it is ordered by
  frequency) with all their instances and official splits. This reproduces the official
  ``nslt_k.json`` membership, splits and class indices exactly, apart from the 12 ids of
  ``nslt_2000.json`` that are not in ``WLASL_v0.3.json`` at all. The class list names class
  163 ``losear`` where the JSON says ``lose``; the label map uses the JSON's name.
* ``MS-ASL-k`` keeps clips with ``label < k``, as the MS-ASL authors define the subsets.
* An explicit class list keeps those glosses, re-indexed in the order given.

Outputs (``<data_dir>/subset/``): ``samples.parquet`` (manifest rows of the subset, with
``label`` the subset class index, ``dataset_label`` the original one, ``official_split``
beside ``split``), ``label_map.json`` and ``report.json``.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from sldata.atomic import write_json
from sldata.manifest import write_parquet

SPLITS = ("train", "val", "test")


class SubsetError(ValueError):
    """The requested subset cannot be built from this manifest (the message says why)."""


@dataclass(frozen=True)
class LabelMap:
    """Index <-> gloss for one subset, with where it came from.

    Attributes
    ----------
    dataset: ``"wlasl"`` or ``"msasl"``.
    k: the k of a top-k subset, or ``None`` for an explicit class list.
    glosses: ``glosses[i]`` is the gloss of subset class ``i``.
    dataset_labels: ``dataset_labels[i]`` is that class's index in the whole dataset.
    """

    dataset: str
    k: int | None
    glosses: list[str]
    dataset_labels: list[int]

    @property
    def num_classes(self) -> int:
        return len(self.glosses)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelMap:
        return cls(
            dataset=data["dataset"], k=data["k"], glosses=list(data["glosses"]),
            dataset_labels=[int(x) for x in data["dataset_labels"]],
        )


def top_k_label_map(dataset: str, classes: list[str | None], k: int) -> LabelMap:
    """The label map of ``<dataset>-k``: the first ``k`` classes of the dataset, same indices."""
    if k > len(classes):
        raise SubsetError(
            f"subset.k: {dataset} has {len(classes)} classes in this manifest, fewer than k={k}"
            + (" (is sources.wlasl.annotation.local_path a partial file such as asl100.json?)" if dataset == "wlasl" else "")
        )
    missing = [i for i in range(k) if classes[i] is None]
    if missing:
        raise SubsetError(
            f"subset.k: classes {missing[:10]} of {dataset} were rejected in the manifest (see rejects.parquet), "
            f"so {dataset}-{k} cannot be reproduced"
        )
    return LabelMap(dataset=dataset, k=k, glosses=[str(c) for c in classes[:k]], dataset_labels=list(range(k)))


def explicit_label_map(dataset: str, classes: list[str | None], glosses: list[str]) -> LabelMap:
    """The label map of an explicit gloss list; subset index = position in ``glosses``."""
    index = {c: i for i, c in enumerate(classes) if c is not None}
    unknown = [g for g in glosses if g not in index]
    if unknown:
        hints = {g: difflib.get_close_matches(g, list(index), n=3) for g in unknown}
        raise SubsetError(
            "subset.classes: unknown glosses for "
            + dataset
            + ": "
            + "; ".join(f"{g!r} (close: {', '.join(h) or 'none'})" for g, h in hints.items())
        )
    return LabelMap(dataset=dataset, k=None, glosses=list(glosses), dataset_labels=[index[g] for g in glosses])


def select_samples(manifest: pd.DataFrame, label_map: LabelMap) -> pd.DataFrame:
    """Manifest rows of ``label_map``'s classes, re-labelled with subset indices."""
    to_subset = {dl: i for i, dl in enumerate(label_map.dataset_labels)}
    rows = manifest[(manifest["dataset"] == label_map.dataset) & manifest["label"].isin(to_subset)].copy()
    rows["dataset_label"] = rows["label"].astype("int32")
    rows["label"] = rows["dataset_label"].map(to_subset).astype("int32")
    rows["official_split"] = rows["split"]
    return rows.reset_index(drop=True)


def signer_independent_split(
    samples: pd.DataFrame, fractions: dict[str, float], seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Re-split so that no signer appears in two splits, stratified by class.

    Signers are taken in a seeded random order and each goes, with
    all its clips, to the split where it most reduces the squared gap between the split's
    per-class counts and their targets (``fraction * clips of that class``). Clips without
    a signer id cannot be placed and are left out; the report counts them.

    Returns
    -------
    samples, report
        The placed samples with ``split`` replaced (``official_split`` unchanged), and a
        report of signers, clips and classes per split.
    """
    names = [s for s in SPLITS if fractions[s] > 0]
    no_signer = samples["signer_id"].isna()
    placed = samples[~no_signer].copy()
    classes = np.sort(placed["label"].unique())
    class_pos = {c: i for i, c in enumerate(classes)}
    per_signer = (
        placed.assign(_c=placed["label"].map(class_pos))
        .groupby(["signer_id", "_c"]).size().unstack(fill_value=0)
        .reindex(columns=range(len(classes)), fill_value=0)
    )
    totals = per_signer.sum(axis=0).to_numpy(dtype=float)
    targets = np.stack([fractions[s] * totals for s in names])
    counts = np.zeros_like(targets)
    rng = np.random.default_rng(seed)
    signers = per_signer.index.to_numpy()
    order = rng.permutation(len(signers))
    assignment: dict[Any, str] = {}
    vectors = per_signer.to_numpy(dtype=float)
    for i in order:
        v = vectors[i]
        gain = ((counts + v - targets) ** 2 - (counts - targets) ** 2).sum(axis=1)
        j = int(np.argmin(gain))
        counts[j] += v
        assignment[signers[i]] = names[j]
    placed["split"] = placed["signer_id"].map(assignment)
    report = {
        "seed": seed,
        "fractions": fractions,
        "excluded_without_signer": int(no_signer.sum()),
        "signers": {s: int(sum(1 for v in assignment.values() if v == s)) for s in names},
    }
    return placed.reset_index(drop=True), report


def subset_report(samples: pd.DataFrame, label_map: LabelMap) -> dict[str, Any]:
    report: dict[str, Any] = {"dataset": label_map.dataset, "k": label_map.k, "num_classes": label_map.num_classes}
    for split in SPLITS:
        part = samples[samples["split"] == split]
        present = set(part["label"].tolist())
        report[split] = {
            "clips": int(len(part)),
            "signers": int(part["signer_id"].nunique()),
            "classes": len(present),
            "classes_missing": [label_map.glosses[i] for i in range(label_map.num_classes) if i not in present][:50],
        }
    report["total_clips"] = int(len(samples))
    return report


def build_subset(
    manifest: pd.DataFrame, classes: dict[str, list[str | None]], subset: dict[str, Any]
) -> tuple[pd.DataFrame, LabelMap, dict[str, Any]]:
    """Build the subset described by the validated ``subset`` section of params."""
    dataset = subset["dataset"]
    if dataset not in classes:
        raise SubsetError(f"subset.dataset: the manifest has no {dataset} rows (is sources.{dataset}.enabled true?)")
    glosses = list(subset["classes"])
    if glosses:
        label_map = explicit_label_map(dataset, classes[dataset], glosses)
    else:
        label_map = top_k_label_map(dataset, classes[dataset], subset["k"])
    samples = select_samples(manifest, label_map)
    resplit_report = None
    if subset["resplit"]["enabled"]:
        samples, resplit_report = signer_independent_split(
            samples, subset["resplit"]["fractions"], subset["resplit"]["seed"]
        )
    report = subset_report(samples, label_map)
    if resplit_report is not None:
        report["resplit"] = resplit_report
    return samples, label_map, report


def write_subset(samples: pd.DataFrame, label_map: LabelMap, report: dict[str, Any], out_dir: str | Path) -> None:
    out = Path(out_dir)
    write_parquet(pa.Table.from_pandas(samples, preserve_index=False), out / "samples.parquet")
    write_json(out / "label_map.json", label_map.to_dict())
    write_json(out / "report.json", report)


def read_label_map(path: str | Path) -> LabelMap:
    with open(path, encoding="utf-8") as fh:
        return LabelMap.from_dict(json.load(fh))
