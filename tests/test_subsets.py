"""Top-k subsets reproduce the official WLASL / MS-ASL subsets exactly; re-splits are signer-independent."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write_json
from sldata.annotations import RejectLog
from sldata.annotations.msasl import read_msasl
from sldata.annotations.wlasl import read_wlasl
from sldata.manifest_schema import SCHEMA
from sldata.subsets import SubsetError, build_subset, signer_independent_split

import pyarrow as pa


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    return pa.Table.from_pylist(rows, schema=SCHEMA).to_pandas(types_mapper=pd.ArrowDtype)


def subset_params(dataset: str = "wlasl", k: int = 100, classes: str = "", resplit: bool = False, seed: int = 0) -> dict:
    return {
        "dataset": dataset, "k": k, "classes": [c for c in classes.split(",") if c],
        "resplit": {"enabled": resplit, "seed": seed, "fractions": {"train": 0.7, "val": 0.15, "test": 0.15}},
    }


def wlasl_subset(path: Path, k: int) -> tuple[pd.DataFrame, object]:
    rows, classes, _ = read_wlasl(path, RejectLog())
    samples, label_map, _ = build_subset(manifest_frame(rows), {"wlasl": classes}, subset_params(k=k))
    return samples, label_map


def assert_matches_nslt(samples: pd.DataFrame, nslt: dict, expected_absent: int) -> None:
    ours = {r.original_id: (r.split, int(r.label)) for r in samples.itertuples()}
    official = {vid: (v["subset"], v["action"][0]) for vid, v in nslt.items()}
    absent = set(official) - set(ours)
    assert not set(ours) - set(official), "rows that the official split does not have"
    assert len(absent) == expected_absent  # ids of nslt_k.json missing from WLASL_v0.3.json itself
    assert {vid: official[vid] for vid in ours} == ours


@pytest.mark.parametrize(("k", "file", "absent"), [(100, "asl100.json", 0), (300, "asl300.json", 1), (1000, "asl1000.json", 6)])
def test_wlasl_k_reproduces_official_nslt(shared: Path, k: int, file: str, absent: int) -> None:
    samples, label_map = wlasl_subset(shared / "wlasl" / file, k)
    nslt = json.loads((shared / "wlasl" / f"nslt_{k}.json").read_text())
    assert_matches_nslt(samples, nslt, absent)
    class_list = [line.split("\t")[1].strip() for line in (shared / "wlasl" / "wlasl_class_list.txt").read_text().splitlines()]
    quirks = {i: (a, b) for i, (a, b) in enumerate(zip(label_map.glosses, class_list[:k])) if a != b}
    assert quirks == ({163: ("lose", "losear")} if k > 163 else {})
    assert label_map.num_classes == k and label_map.dataset_labels == list(range(k))


def test_wlasl_k_on_a_prefix_file_of_1000_glosses_equals_smaller_files(shared: Path) -> None:
    small, _ = wlasl_subset(shared / "wlasl" / "asl100.json", 100)
    large, _ = wlasl_subset(shared / "wlasl" / "asl1000.json", 100)
    pd.testing.assert_frame_equal(
        small[["sample_id", "label", "split"]].sort_values("sample_id").reset_index(drop=True),
        large[["sample_id", "label", "split"]].sort_values("sample_id").reset_index(drop=True),
    )


def test_wlasl_2000_reproduces_official_nslt(shared: Path, tmp_path: Path) -> None:
    """All 21,083 WLASL2000 instances, in v0.3 shape, rebuilt from the flat lists (which lack URLs and crops)."""
    folder = shared / "wlasl" / "wlasl2000_instances"
    label_map = json.loads((folder / "label_map_2000.json").read_text())
    entries = [{"gloss": label_map[str(i)], "instances": []} for i in range(2000)]
    for split in ("train", "val", "test"):
        for inst in json.loads((folder / f"{split}.json").read_text()):
            entries[inst["label"]]["instances"].append({
                "video_id": inst["video_id"], "split": inst["split"], "signer_id": inst["signer_id"],
                "variation_id": inst["variation_id"], "bbox": inst["bbox"], "fps": 25, "frame_start": 1,
                "frame_end": -1, "url": f"https://example.org/{inst['video_id']}.mp4", "source": "test",
            })
    samples, lm = wlasl_subset(write_json(tmp_path / "wlasl2000.json", entries), 2000)
    assert len(samples) == 21083
    assert_matches_nslt(samples, json.loads((shared / "wlasl" / "nslt_2000.json").read_text()), 12)


def test_msasl_k_matches_the_authors_subsets(msasl_dir: Path, shared: Path) -> None:
    """MS-ASL100 is "label < 100" (MS-ASL README); its val/test sizes are the paper's 1,190 / 757.

    asl100_full_fields/ is a copy of MS-ASL100 that lost 32 val and 24 test rows (1,158 / 733):
    every row it has must be in ours, with the same label and split.
    """
    rows, classes, _ = read_msasl(msasl_dir, ["val", "test"], RejectLog(), 0.1)
    samples, label_map, report = build_subset(manifest_frame(rows), {"msasl": classes}, subset_params("msasl", 100))
    assert label_map.glosses == classes[:100]
    assert (report["val"]["clips"], report["test"]["clips"]) == (1190, 757)
    key = lambda url, s, e, lab: (url.split("v=")[-1], round(s, 3), round(e, 3), lab)  # noqa: E731
    for split, copy_size in (("val", 1158), ("test", 733)):
        official = json.loads((shared / "msasl" / "asl100_full_fields" / f"ASL100_{split}.json").read_text())
        ours = {key(r.url, r.start_s, r.end_s, int(r.label)) for r in samples[samples.split == split].itertuples()}
        theirs = {key(o["url"], o["start_time"], o["end_time"], o["label"]) for o in official}
        assert len(theirs) == copy_size and theirs <= ours
        full = json.loads((shared / "msasl" / f"MSASL_{split}.json").read_text())
        assert ours == {key(o["url"], o["start_time"], o["end_time"], o["label"]) for o in full if o["label"] < 100}


def test_explicit_class_list_reindexes_in_given_order(shared: Path) -> None:
    rows, classes, _ = read_wlasl(shared / "wlasl" / "asl100.json", RejectLog())
    samples, lm, _ = build_subset(manifest_frame(rows), {"wlasl": classes}, subset_params(classes="drink,book,who"))
    assert lm.glosses == ["drink", "book", "who"] and lm.dataset_labels == [1, 0, 7] and lm.k is None
    assert set(zip(samples.gloss, samples.label)) == {("drink", 0), ("book", 1), ("who", 2)}
    assert (samples.dataset_label.astype(int) == samples.label.map({0: 1, 1: 0, 2: 7}).astype(int)).all()
    with pytest.raises(SubsetError, match=r"'bok' \(close: book"):
        build_subset(manifest_frame(rows), {"wlasl": classes}, subset_params(classes="bok"))


def test_k_beyond_the_annotation_is_a_clear_error(shared: Path) -> None:
    rows, classes, _ = read_wlasl(shared / "wlasl" / "asl100.json", RejectLog())
    with pytest.raises(SubsetError, match="100 classes in this manifest, fewer than k=300.*asl100"):
        build_subset(manifest_frame(rows), {"wlasl": classes}, subset_params(k=300))


@pytest.fixture(scope="module")
def wlasl300(shared: Path) -> tuple[pd.DataFrame, list]:
    rows, classes, _ = read_wlasl(shared / "wlasl" / "asl300.json", RejectLog())
    return manifest_frame(rows), classes


def test_signer_independent_resplit_on_real_wlasl(wlasl300: tuple) -> None:
    manifest, classes = wlasl300
    samples, _, report = build_subset(manifest, {"wlasl": classes}, subset_params(k=300, resplit=True, seed=3))
    assert samples.groupby("signer_id")["split"].nunique().max() == 1
    assert len(samples) == int((manifest.label < 300).sum())  # complete: every clip placed once
    assert samples.sample_id.is_unique
    shares = samples.split.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.06)
    assert shares["val"] == pytest.approx(0.15, abs=0.06) and shares["test"] == pytest.approx(0.15, abs=0.06)
    assert report["train"]["classes"] == 300  # stratified: every class is trained on
    again, _, _ = build_subset(manifest, {"wlasl": classes}, subset_params(k=300, resplit=True, seed=3))
    pd.testing.assert_frame_equal(samples, again)
    other, _, _ = build_subset(manifest, {"wlasl": classes}, subset_params(k=300, resplit=True, seed=4))
    assert not other.split.equals(samples.split)
    assert (samples.official_split.isin(["train", "val", "test"])).all()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 15), st.integers(0, 5) | st.none()), min_size=1, max_size=120),
    st.integers(0, 1000),
)
def test_resplit_is_disjoint_complete_and_deterministic(clips: list, seed: int) -> None:
    frame = pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(len(clips))],
        "signer_id": pd.array([s for s, _ in clips], dtype="Int32"),
        "label": [c if c is not None else 0 for _, c in clips],
        "split": "train",
    })
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    placed, report = signer_independent_split(frame, fractions, seed)
    placed_again, _ = signer_independent_split(frame, fractions, seed)
    pd.testing.assert_frame_equal(placed, placed_again)
    assert placed.groupby("signer_id")["split"].nunique().max() == 1
    assert sorted(placed.sample_id) == sorted(frame.sample_id)  # complete, no duplicates
    assert report["excluded_without_signer"] == 0
