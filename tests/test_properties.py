"""Hypothesis properties the issue lists that no other test module states yet.

Covered elsewhere (and not repeated here): crop arithmetic (fps conversion round trips,
clamping, overlap trimming, enhancement) in ``test_crops.py``; the signer-independent re-split
(disjoint, complete, deterministic) in ``test_subsets.py``; pose flow invariance to translation
and scale in ``test_pose_flow.py``. This module adds the **top-k subset** on arbitrary manifests:
deterministic, disjoint, complete, labels and splits kept.
"""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sldata.subsets import SubsetError, build_subset

SUBSET = {"dataset": "wlasl", "k": 1, "classes": [], "resplit": {"enabled": False, "seed": 0,
                                                                  "fractions": {"train": 0.7, "val": 0.15, "test": 0.15}}}


@st.composite
def manifests(draw: st.DrawFn) -> tuple[pd.DataFrame, dict[str, list[str | None]], int]:
    """A manifest of two datasets over ``n`` classes (some rejected: ``None``) and a k."""
    n = draw(st.integers(1, 12))
    classes = [draw(st.one_of(st.none(), st.just(f"g{i}"))) if draw(st.booleans()) else f"g{i}" for i in range(n)]
    rows = draw(st.lists(st.tuples(st.sampled_from(["wlasl", "msasl"]), st.integers(0, n - 1),
                                   st.sampled_from(["train", "val", "test"]), st.integers(0, 5)), max_size=60))
    manifest = pd.DataFrame({
        "sample_id": [f"{d}-{i:04d}" for i, (d, *_) in enumerate(rows)],
        "dataset": [r[0] for r in rows], "label": pd.array([r[1] for r in rows], dtype="int32"),
        "split": [r[2] for r in rows], "signer_id": pd.array([r[3] for r in rows], dtype="int32"),
    })
    valid = [c for c in classes if c is not None]
    return manifest, {"wlasl": classes, "msasl": valid}, draw(st.integers(1, n))


@settings(max_examples=100, deadline=None)
@given(manifests())
def test_top_k_subset_is_deterministic_disjoint_and_complete(case: tuple[pd.DataFrame, dict, int]) -> None:
    manifest, classes, k = case
    subset = {**SUBSET, "k": k}
    if any(c is None for c in classes["wlasl"][:k]):
        with pytest.raises(SubsetError, match="rejected in the manifest"):
            build_subset(manifest, classes, subset)
        return
    samples, label_map, report = build_subset(manifest, classes, subset)
    again, label_map2, report2 = build_subset(manifest.sample(frac=1.0, random_state=k), classes, subset)
    # deterministic: the same rows, labels and splits whatever the manifest's row order
    key = ["sample_id", "label", "split"]
    pd.testing.assert_frame_equal(samples[key].sort_values("sample_id").reset_index(drop=True),
                                  again[key].sort_values("sample_id").reset_index(drop=True))
    assert label_map == label_map2 and report == report2
    # complete: exactly the rows of the dataset's first k classes, nothing else
    expected = manifest[(manifest["dataset"] == "wlasl") & (manifest["label"] < k)]
    assert sorted(samples["sample_id"]) == sorted(expected["sample_id"])
    # disjoint: each clip once, in its official split, under its own class index (top-k keeps indices)
    assert samples["sample_id"].is_unique
    merged = samples.merge(manifest, on="sample_id", suffixes=("", "_m"))
    assert (merged["split"] == merged["split_m"]).all() and (merged["label"] == merged["label_m"]).all()
    assert label_map.glosses == classes["wlasl"][:k] and label_map.dataset_labels == list(range(k))
    assert sum(report[s]["clips"] for s in ("train", "val", "test")) == report["total_clips"] == len(samples)
