"""The MS-ASL reader on the real annotation files and on malformed and hostile input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import write_json
from sldata.annotations import RejectLog
from sldata.annotations.jsonfile import AnnotationFileError
from sldata.annotations.msasl import read_msasl


def test_reads_real_val_and_test_completely(msasl_dir: Path, shared: Path) -> None:
    rejects = RejectLog()
    rows, classes, prov = read_msasl(msasl_dir, ["val", "test"], rejects, 0.1)
    assert len(rows) == 5287 + 4172 and len(rejects) == 0
    assert len(classes) == 1000 and classes[0] == "hello"
    assert [p.path.rsplit("/", 1)[-1] for p in prov] == [
        "MSASL_classes.json", "MSASL_synonym.json", "MSASL_val.json", "MSASL_test.json",
    ]
    raw = json.loads((shared / "msasl" / "MSASL_val.json").read_text())
    first = rows[0]
    assert first["gloss"] == classes[raw[0]["label"]] and first["annotated_text"] == raw[0]["text"]
    ymin, xmin, ymax, xmax = raw[0]["box"]
    assert (first["box_xmin"], first["box_ymin"], first["box_xmax"], first["box_ymax"]) == (xmin, ymin, xmax, ymax)
    assert first["box_units"] == "normalized" and first["annotated_width"] == raw[0]["width"]
    assert first["start_s"] == raw[0]["start_time"] and first["end_frame"] == raw[0]["end"]
    assert first["source_key"] == "youtube-ri3NrdgfAtE" and first["source_site"] == "youtube"
    # Scheme-less links in the real files are normalized, not rejected.
    assert all(r["url"].startswith("https://") for r in rows)


def test_real_train_rows_with_broken_crops_are_rejected(msasl_dir: Path) -> None:
    rejects = RejectLog()
    rows, _, _ = read_msasl(msasl_dir, ["train"], rejects, 0.1)
    assert len(rows) + len(rejects) == 3654
    assert {(r.row, r.field, r.reason) for r in rejects.rejects} == {
        ("[534]", "end_time", "end_before_start"),      # start_time == end_time == 133.7
        ("[2370]", "start", "inconsistent_crop"),       # start_time 0.0 but frame 155 at 29.939 fps
        ("[2371]", "end", "inconsistent_crop"),
    }


def test_sample_ids_are_stable_and_unique(msasl_dir: Path) -> None:
    rows_a, _, _ = read_msasl(msasl_dir, ["val", "test"], RejectLog(), 0.1)
    rows_b, _, _ = read_msasl(msasl_dir, ["test", "val"], RejectLog(), 0.1)
    assert {r["sample_id"] for r in rows_a} == {r["sample_id"] for r in rows_b}
    assert len({r["sample_id"] for r in rows_a}) == len(rows_a)


def make_dir(tmp_path: Path, shared: Path, train: list) -> Path:
    folder = tmp_path / "msasl"
    folder.mkdir()
    for name in ("MSASL_classes.json", "MSASL_synonym.json"):
        shutil.copy(shared / "msasl" / name, folder / name)
    write_json(folder / "MSASL_train.json", train)
    return folder


def clip(**overrides: object) -> dict:
    base = {
        "url": "https://www.youtube.com/watch?v=ri3NrdgfAtE", "start_time": 1.0, "end_time": 2.0, "start": 30,
        "end": 60, "fps": 30.0, "label": 3, "signer_id": 1, "box": [0.1, 0.2, 0.9, 0.8], "width": 640.0,
        "height": 360.0, "text": "eat",
    }
    base.update(overrides)
    return base


def test_malformed_and_hostile_rows(tmp_path: Path, shared: Path) -> None:
    train = [
        clip(),
        clip(label=1000),
        clip(label=-1),
        clip(label="3"),
        clip(end_time=0.5, end=15),
        clip(url="file:///etc/passwd"),
        clip(url="www.youtube.com/watch?v=ri3NrdgfAtE; rm -rf /"),
        clip(),
        clip(start_time=-1.0, start=-30),
        clip(box=[0.5, 0.5, 0.4, 0.9]),
        clip(fps=0),
        {k: v for k, v in clip().items() if k != "end_time"},
        clip(text="théâtre", start_time=3.0, start=90, end_time=4.0, end=120),
        42,
    ]
    rejects = RejectLog()
    rows, _, _ = read_msasl(make_dir(tmp_path, shared, train), ["train"], rejects, 0.1)
    assert [r["original_id"] for r in rows] == ["train/0", "train/12"]
    assert rows[1]["annotated_text"] == "théâtre"
    assert [(r.row, r.field, r.reason) for r in rejects.rejects] == [
        ("[1]", "label", "unknown_label"),
        ("[2]", "label", "unknown_label"),
        ("[3]", "label", "wrong_type"),
        ("[4]", "end_time", "end_before_start"),
        ("[5]", "url", "unsupported_url_scheme"),
        ("[6]", "url", "malformed_url"),
        ("[7]", "", "duplicate_id"),
        ("[8]", "start_time", "invalid_value"),
        ("[9]", "box", "invalid_value"),
        ("[10]", "fps", "invalid_value"),
        ("[11]", "end_time", "missing_field"),
        ("[13]", "", "wrong_type"),
    ]


def test_missing_split_file_says_where_to_get_it(tmp_path: Path, shared: Path) -> None:
    folder = make_dir(tmp_path, shared, [clip()])
    with pytest.raises(AnnotationFileError, match=r"MSASL_val.json.*microsoft.com.*sources.msasl.dir"):
        read_msasl(folder, ["train", "val"], RejectLog(), 0.1)
    with pytest.raises(AnnotationFileError, match="MSASL_classes.json.*licence"):
        read_msasl(tmp_path / "nowhere", ["train"], RejectLog(), 0.1)
