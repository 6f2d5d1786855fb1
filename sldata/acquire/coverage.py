"""How many manifest clips can be used, per dataset and split, and why the others cannot.

A clip is usable when

* a pretrimmed ledger row keyed by its ``sample_id`` is ok, or
* the ledger row of its ``source_key`` is ok and, when both are known, its ``end_s`` is within
  the video's decoded duration (plus ``tolerance_s``).

Otherwise its status is the failure reason of that row, ``too_short_for_crops`` for the clip
check, or ``not_attempted`` when the ledger has no row for it.
"""

from __future__ import annotations

import pandas as pd

USABLE = "usable"
NOT_ATTEMPTED = "not_attempted"
_GROUP = ["dataset", "split"]


class InsufficientCoverageError(RuntimeError):
    """Fewer usable clips than required; ``report_text`` holds the printed report."""

    def __init__(self, message: str, report_text: str) -> None:
        super().__init__(f"{message}\n{report_text}")
        self.report_text = report_text


def clip_status(manifest: pd.DataFrame, ledger: pd.DataFrame, tolerance_s: float = 0.5) -> pd.DataFrame:
    """Per clip: ``sample_id, dataset, split, status`` (``usable`` or a failure reason) and
    ``ledger_key`` (the ledger row that decided it, or null)."""
    need = ["sample_id", "dataset", "split", "source_key", "end_s"]
    missing = [c for c in need if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing} needed for the coverage report")
    lneed = ["source_key", "status", "failure_reason", "pretrimmed", "duration_s"]
    lmissing = [c for c in lneed if c not in ledger.columns]
    if lmissing:
        raise ValueError(f"ledger lacks column(s) {lmissing} needed for the coverage report")
    rows = ledger.set_index("source_key")
    clip_rows = rows[rows["pretrimmed"].astype(bool)]
    src_rows = rows[~rows["pretrimmed"].astype(bool)]

    statuses: list[str] = []
    keys: list[str | None] = []
    for rec in manifest[need].itertuples(index=False):
        if rec.sample_id in clip_rows.index and clip_rows.at[rec.sample_id, "status"] == "ok":
            statuses.append(USABLE)
            keys.append(rec.sample_id)
            continue
        if rec.source_key in src_rows.index:
            r = src_rows.loc[rec.source_key]
            keys.append(rec.source_key)
            if r["status"] != "ok":
                statuses.append(str(r["failure_reason"]))
            elif pd.notna(rec.end_s) and pd.notna(r["duration_s"]) and rec.end_s > r["duration_s"] + tolerance_s:
                statuses.append("too_short_for_crops")
            else:
                statuses.append(USABLE)
            continue
        if rec.sample_id in clip_rows.index:  # a failed pretrimmed row and no source row
            statuses.append(str(clip_rows.at[rec.sample_id, "failure_reason"]))
            keys.append(rec.sample_id)
            continue
        statuses.append(NOT_ATTEMPTED)
        keys.append(None)
    out = manifest[["sample_id", "dataset", "split"]].copy()
    out["status"] = statuses
    out["ledger_key"] = keys
    return out.reset_index(drop=True)


def coverage_report(manifest: pd.DataFrame, ledger: pd.DataFrame, tolerance_s: float = 0.5) -> pd.DataFrame:
    """Counts per (dataset, split): ``clips``, ``usable``, ``usable_ratio`` and one column per
    failure reason seen; a last row ``("ALL", "ALL")`` sums everything.

    Parameters
    ----------
    manifest
        Canonical manifest (needs ``sample_id, dataset, split, source_key, end_s``).
    ledger
        Download ledger as a DataFrame (:meth:`sldata.acquire.ledger.Ledger.to_frame`).
    tolerance_s
        Slack allowed between a clip's end and the video's decoded duration.
    """
    return report_from_status(clip_status(manifest, ledger, tolerance_s))


def report_from_status(status: pd.DataFrame) -> pd.DataFrame:
    """The :func:`coverage_report` table from one row per clip with ``dataset``, ``split`` and
    ``status`` (``usable`` or why not)."""
    counts = pd.crosstab([status["dataset"], status["split"]], status["status"]) if len(status) else pd.DataFrame()
    reasons = sorted(c for c in counts.columns if c != USABLE)
    report = pd.DataFrame(index=counts.index)
    report["clips"] = counts.sum(axis=1) if len(counts.columns) else 0
    report["usable"] = counts[USABLE] if USABLE in counts.columns else 0
    for reason in reasons:
        report[reason] = counts[reason]
    total = report.sum(axis=0).to_frame().T
    total.index = pd.MultiIndex.from_tuples([("ALL", "ALL")], names=_GROUP)
    report = pd.concat([report, total]) if len(report) else total.fillna(0)
    report = report.astype("int64")
    ratio = report["usable"] / report["clips"].where(report["clips"] > 0)
    report.insert(2, "usable_ratio", ratio.fillna(0.0).round(4))
    report.index.names = _GROUP
    return report


def format_coverage_report(report: pd.DataFrame) -> str:
    """The report as a fixed-width text table."""
    return report.to_string()


def check_min_success_ratio(report: pd.DataFrame, ratio: float, per_group: bool = False) -> None:
    """Raise :class:`InsufficientCoverageError` when too few clips are usable.

    Parameters
    ----------
    report
        From :func:`coverage_report`.
    ratio
        Required ``usable / clips`` (0..1).
    per_group
        Check every (dataset, split) row instead of the overall ``ALL`` row only.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"min success ratio must be within [0, 1], got {ratio}")
    text = format_coverage_report(report)
    rows = report.drop(index=("ALL", "ALL"), errors="ignore") if per_group else report.loc[[("ALL", "ALL")]]
    bad = rows[rows["usable_ratio"] < ratio]
    if len(bad):
        where = ", ".join(
            f"{ds}/{sp}: {int(r.usable)}/{int(r.clips)} usable ({r.usable_ratio:.1%})" for (ds, sp), r in bad.iterrows()
        )
        raise InsufficientCoverageError(f"usable clip ratio below the required {ratio:.1%}: {where}", text)
