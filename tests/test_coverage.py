"""Coverage: usable clips per dataset/split and failure counts, and the min-ratio gate."""

from __future__ import annotations

import pandas as pd
import pytest

from sldata.acquire.coverage import (
    InsufficientCoverageError,
    check_min_success_ratio,
    clip_status,
    coverage_report,
)
from sldata.acquire.ledger import Ledger, LedgerRow


def _manifest() -> pd.DataFrame:
    rows = [
        # dataset, split, sample_id, source_key, end_s
        ("wlasl", "train", "wlasl-1", "url-ok", 1.0),
        ("wlasl", "train", "wlasl-2", "url-ok", 3.0),  # ends after the 2.0 s video
        ("wlasl", "train", "wlasl-3", "url-404", 1.0),
        ("wlasl", "val", "wlasl-4", "url-other", None),  # pretrimmed clip row decides
        ("wlasl", "val", "wlasl-5", "url-missing", 1.0),  # never attempted
        ("msasl", "test", "msasl-aaaaaaaaaaaa", "youtube-x", 2.0),
        ("msasl", "test", "msasl-bbbbbbbbbbbb", "youtube-y", 2.0),
    ]
    return pd.DataFrame(rows, columns=["dataset", "split", "sample_id", "source_key", "end_s"])


def _ledger() -> pd.DataFrame:
    return Ledger([
        LedgerRow("url-ok", "ok", duration_s=2.0, path="url-ok.mp4", bytes=10),
        LedgerRow("url-404", "failed", failure_reason="not_found"),
        LedgerRow("wlasl-4", "ok", pretrimmed=True, from_local_store=True, duration_s=0.9),
        LedgerRow("youtube-x", "ok", duration_s=60.0),
        LedgerRow("youtube-y", "failed", failure_reason="private_or_removed"),
    ]).to_frame()


def test_clip_status() -> None:
    status = clip_status(_manifest(), _ledger()).set_index("sample_id")["status"].to_dict()
    assert status == {
        "wlasl-1": "usable",
        "wlasl-2": "too_short_for_crops",
        "wlasl-3": "not_found",
        "wlasl-4": "usable",
        "wlasl-5": "not_attempted",
        "msasl-aaaaaaaaaaaa": "usable",
        "msasl-bbbbbbbbbbbb": "private_or_removed",
    }


def test_report_counts_per_dataset_and_split() -> None:
    report = coverage_report(_manifest(), _ledger())
    assert list(report.columns[:3]) == ["clips", "usable", "usable_ratio"]
    train = report.loc[("wlasl", "train")]
    assert (train.clips, train.usable, train.not_found, train.too_short_for_crops) == (3, 1, 1, 1)
    assert report.loc[("wlasl", "val")].not_attempted == 1
    assert report.loc[("msasl", "test")].private_or_removed == 1
    total = report.loc[("ALL", "ALL")]
    assert (total.clips, total.usable) == (7, 3) and total.usable_ratio == pytest.approx(3 / 7, abs=1e-4)
    # every clip is counted exactly once
    reasons = [c for c in report.columns if c not in ("clips", "usable", "usable_ratio")]
    assert (report["usable"] + report[reasons].sum(axis=1) == report["clips"]).all()


def test_min_success_ratio_gate() -> None:
    report = coverage_report(_manifest(), _ledger())
    check_min_success_ratio(report, 0.4)  # 3/7 overall passes
    with pytest.raises(InsufficientCoverageError) as err:
        check_min_success_ratio(report, 0.5)
    text = str(err.value)
    assert "ALL/ALL: 3/7 usable" in text and "not_found" in text and err.value.report_text in text
    with pytest.raises(InsufficientCoverageError, match=r"wlasl/train: 1/3 usable"):
        check_min_success_ratio(report, 0.4, per_group=True)
    with pytest.raises(ValueError, match="within"):
        check_min_success_ratio(report, 1.5)


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match=r"manifest lacks column\(s\) \['end_s'\]"):
        coverage_report(_manifest().drop(columns=["end_s"]), _ledger())
