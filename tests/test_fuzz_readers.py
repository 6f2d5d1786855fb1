"""A bounded Hypothesis fuzz of the WLASL and MS-ASL annotation readers.

Inputs are arbitrary JSON-like structures, WLASL/MS-ASL-shaped ones with arbitrary values, and
real rows of ``../shared/data`` with fields dropped or replaced. The readers may raise only their
documented :class:`~sldata.annotations.jsonfile.AnnotationFileError` (for a file that is not a
list), and every row of a list ends either accepted (a manifest row pointing back at it) or in
exactly one reject naming the file, the row, a known reason and a detail: nothing is dropped
silently, nothing is counted twice. About 10-40 s in all (``max_examples`` below, no deadline).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import shared_data_dir
from sldata.annotations import Reason, RejectLog
from sldata.annotations.jsonfile import AnnotationFileError
from sldata.annotations.msasl import read_msasl
from sldata.annotations.wlasl import read_wlasl

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=False)
REASONS = {r.value for r in Reason}
WLASL_FIELDS = ["bbox", "fps", "frame_end", "frame_start", "instance_id", "signer_id", "source", "split", "url",
                "variation_id", "video_id"]
MSASL_FIELDS = ["url", "start_time", "end_time", "start", "end", "fps", "label", "signer_id", "box", "width", "height",
                "text"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["train", "val", "test", "https://www.youtube.com/watch?v=ri3NrdgfAtE", "file:///etc/passwd",
                     "../x", "00335", "$(touch /tmp/x)", "http://aslbricks.org/a.mp4", "", "-1", "25"]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)), max_leaves=20)


def field_dicts(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with (some of) the format's field names and arbitrary values."""
    return st.dictionaries(st.sampled_from(fields), st.one_of(scalars, st.lists(st.integers(-5, 500), max_size=5)),
                           max_size=len(fields))


wlasl_entries = st.one_of(
    json_values,
    st.fixed_dictionaries({"gloss": st.one_of(st.text(max_size=10), scalars),
                           "instances": st.one_of(st.lists(st.one_of(field_dicts(WLASL_FIELDS), json_values),
                                                           max_size=6), json_values)}),
)


def _write(obj: Any, name: str = "ann.json") -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    path = folder / name
    path.write_text(json.dumps(obj, allow_nan=True), encoding="utf-8")
    return path


def check_wlasl_accounting(data: Any, path: Path) -> None:
    """``read_wlasl`` raises only AnnotationFileError and accounts for every entry and instance."""
    rejects = RejectLog()
    try:
        rows, glosses, _ = read_wlasl(path, rejects)
    except AnnotationFileError as exc:
        assert not isinstance(data, list) and str(path) in str(exc)
        return
    assert isinstance(data, list) and len(glosses) == len(data)
    by_row: dict[str, list[str]] = {}
    for r in rejects.rejects:
        assert r.file == str(path) and r.reason in REASONS and r.detail, r
        by_row.setdefault(r.row, []).append(r.reason)
    accepted = {row["source_row"] for row in rows}
    assert len(accepted) == len(rows)  # one row per instance at most
    for row in rows:
        assert set(row) >= {"sample_id", "source_row", "url", "gloss", "label"}
        assert row["url"].startswith(("http://", "https://")) and "/" not in row["original_id"]
    for e, entry in enumerate(data):
        where = f"[{e}]"
        if glosses[e] is None:  # the whole entry was refused, once, with its instances
            assert len(by_row.get(where, [])) == 1, (where, by_row.get(where))
            assert not any(k.startswith(where + ".") for k in list(by_row) + list(accepted))
            continue
        assert where not in by_row
        for i in range(len(entry["instances"])):
            inst = f"{where}.instances[{i}]"
            outcomes = len(by_row.get(inst, [])) + (inst in accepted)
            assert outcomes == 1, (inst, by_row.get(inst), inst in accepted)


@FUZZ
@given(st.one_of(json_values, st.lists(wlasl_entries, max_size=6)))
def test_wlasl_reader_accounts_for_every_row_of_arbitrary_json(data: Any) -> None:
    check_wlasl_accounting(data, _write(data))


_REAL_WLASL = json.loads((shared_data_dir() / "wlasl" / "asl100.json").read_text(encoding="utf-8"))[:8]
_REAL_MSASL = json.loads((shared_data_dir() / "msasl" / "MSASL_val.json").read_text(encoding="utf-8"))[:40]


@st.composite
def mutated_wlasl(draw: st.DrawFn) -> list[Any]:
    """Real WLASL entries (first instances) with fields dropped, replaced or duplicated."""
    entries = [{"gloss": e["gloss"], "instances": [dict(i) for i in e["instances"][:3]]}
               for e in draw(st.lists(st.sampled_from(_REAL_WLASL), min_size=1, max_size=4))]
    for _ in range(draw(st.integers(1, 6))):
        e = draw(st.sampled_from(entries))
        what = draw(st.sampled_from(["drop", "replace", "duplicate", "gloss"]))
        if what == "gloss":
            e["gloss"] = draw(st.one_of(scalars, st.sampled_from([x["gloss"] for x in entries])))
        elif e["instances"]:
            inst = draw(st.sampled_from(e["instances"]))
            key = draw(st.sampled_from(WLASL_FIELDS))
            if what == "drop":
                inst.pop(key, None)
            elif what == "replace":
                inst[key] = draw(json_values)
            else:
                e["instances"].append(dict(inst))
    return entries


@FUZZ
@given(mutated_wlasl())
def test_wlasl_reader_accounts_for_every_mutated_real_row(data: list[Any]) -> None:
    check_wlasl_accounting(data, _write(data))


@pytest.fixture(scope="module")
def msasl_root() -> Path:
    """A folder with the real MS-ASL class and synonym files; each example writes its own train file."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-msasl-"))
    for name in ("MSASL_classes.json", "MSASL_synonym.json"):
        (folder / name).symlink_to(shared_data_dir() / "msasl" / name)
    return folder


def check_msasl_accounting(data: Any, root: Path) -> None:
    folder = Path(tempfile.mkdtemp(dir=root))
    for name in ("MSASL_classes.json", "MSASL_synonym.json"):
        (folder / name).symlink_to((root / name).resolve())
    path = folder / "MSASL_train.json"
    path.write_text(json.dumps(data, allow_nan=True), encoding="utf-8")
    rejects = RejectLog()
    try:
        rows, _, _ = read_msasl(folder, ["train"], rejects, 0.1)
    except AnnotationFileError as exc:
        assert not isinstance(data, list) and str(path) in str(exc)
        return
    assert isinstance(data, list)
    counts: dict[str, int] = {}
    for r in rejects.rejects:
        assert r.file == str(path) and r.reason in REASONS and r.detail, r
        counts[r.row] = counts.get(r.row, 0) + 1
    accepted = [row["source_row"] for row in rows]
    assert len(set(accepted)) == len(accepted)
    for row in rows:
        assert 0 <= row["label"] < 1000 and row["end_s"] > row["start_s"] >= 0
        assert math.isfinite(row["start_s"]) and math.isfinite(row["end_s"])
    for i in range(len(data)):
        where = f"[{i}]"
        assert counts.get(where, 0) + (where in accepted) == 1, (where, counts.get(where))


msasl_clips = st.one_of(json_values, field_dicts(MSASL_FIELDS))


@FUZZ
@given(st.one_of(json_values, st.lists(msasl_clips, max_size=8)))
def test_msasl_reader_accounts_for_every_row_of_arbitrary_json(msasl_root: Path, data: Any) -> None:
    check_msasl_accounting(data, msasl_root)


@st.composite
def mutated_msasl(draw: st.DrawFn) -> list[Any]:
    clips = [dict(c) for c in draw(st.lists(st.sampled_from(_REAL_MSASL), min_size=1, max_size=6))]
    for _ in range(draw(st.integers(1, 6))):
        clip = draw(st.sampled_from(clips))
        key = draw(st.sampled_from(MSASL_FIELDS))
        what = draw(st.sampled_from(["drop", "replace", "duplicate"]))
        if what == "drop":
            clip.pop(key, None)
        elif what == "replace":
            clip[key] = draw(json_values)
        else:
            clips.append(dict(clip))
    return clips


@FUZZ
@given(mutated_msasl())
def test_msasl_reader_accounts_for_every_mutated_real_row(msasl_root: Path, data: list[Any]) -> None:
    check_msasl_accounting(data, msasl_root)


def test_not_json_and_deep_nesting_are_annotation_file_errors(tmp_path: Path) -> None:
    for name, raw in [("bytes.json", b"\xff\xfe\x00garbage"), ("deep.json", b"[" * 200_000 + b"]" * 200_000),
                      ("empty.json", b"")]:
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(AnnotationFileError, match=name):
            read_wlasl(path, RejectLog())
