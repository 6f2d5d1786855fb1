"""The fault-injection modules for inputs (network, media, hostile input, params, checkpoints, serve).

Each module's ``run()`` is called with one repeat, exactly as ``python -m bench.faults`` calls it,
and every fault it injects must be survived with nothing lost; the tests then look at what the
modules observed (reasons, bounds, request counts, stage outputs) directly.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from bench.faults import common, hostile, media, network
from bench.faults.__main__ import BEGIN, END, readme_block, table, write_readme
from bench.faults.common import FaultOutcome


def assert_all_survived(outcomes: list[FaultOutcome], categories: set[str]) -> None:
    assert outcomes and {o.category for o in outcomes} == categories
    for o in outcomes:
        assert o.injected > 0, o.kind
        assert o.all_survived, f"{o.category} / {o.kind}: {o.survived} of {o.injected}, lost {o.lost}: {o.failures[:5]}"
        assert o.lost == 0 and not o.failures


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small exported model shared by the media, checkpoint and serve faults."""
    return media.export_small_model(tmp_path_factory.mktemp("model"))


# --------------------------------------------------------------------------- network


def test_network_faults_end_typed_bounded_and_leave_the_run_intact(tmp_path: Path) -> None:
    observed: list[network.Injection] = []
    outcomes = network.run(tmp_path, 1, 7, observed=observed)
    assert_all_survived(outcomes, {"network"})
    assert [o.kind for o in outcomes] == [f.kind for f in network.FAULTS]
    by_kind = {i.kind: i for i in observed}
    settings = network.SETTINGS
    bound = network.row_time_bound(settings)
    assert bound == pytest.approx(settings.max_attempts * (2 + 33) * settings.socket_timeout_s
                                  + settings.max_attempts * network.ATTEMPT_OVERHEAD_S
                                  + (settings.max_attempts - 1) * settings.backoff_max_s)
    for fault in network.FAULTS:
        got = by_kind[fault.kind]
        assert got.reason == fault.reason.value and got.seconds <= bound and got.requests <= got.request_bound
        assert got.attempts == (settings.max_attempts if settings.is_retryable(fault.reason) else 1)
    # the trickle is cut by the speed floor long before the 82 kB at 20 B/s (over an hour) would arrive
    assert by_kind["slow drip"].seconds < 3 * settings.max_attempts * (1 + 2 * 16 * network.DRIP_INTERVAL_S) + 10
    assert by_kind["endless redirects"].requests > settings.max_attempts * 2  # it did follow redirects, boundedly
    assert by_kind["garbage body"].attempts == 1  # not_a_video is permanent: no retry
    assert not list((tmp_path / "network").glob("*/videos/*.mp4"))  # survived run folders are removed


# --------------------------------------------------------------------------- media


def test_corrupt_media_is_rejected_or_handled_in_every_stage(tmp_path: Path, exported_model: Path) -> None:
    observed: list[media.RepeatResult] = []
    outcomes = media.run(tmp_path, 1, 3, model_dir=exported_model, observed=observed)
    assert_all_survived(outcomes, {"corrupt_media"})
    assert [o.kind for o in outcomes] == list(media.KINDS)
    (result,) = observed
    assert [s.name for s in result.stages] == ["acquire", "frames", "pose", "hand crops", "predict"]
    assert all(not s.error and not s.missing and not s.problems for s in result.stages)


def test_media_stage_outputs_say_why(tmp_path: Path) -> None:
    """What acquisition and frame extraction wrote for each corrupt file (no pose: fast)."""
    import random

    huge = media.make_huge(tmp_path / "huge.mp4", size=4000, frames=1)
    result = media.run_repeat(tmp_path / "r", 1, random.Random(5), huge, None, stages=("acquire", "frames"))
    assert not result.problems(None)
    clips = pd.read_parquet(tmp_path / "r" / "acquire" / "clips.parquet").set_index("sample_id")
    slug = media._slug
    for kind in media.MUST_REJECT_AT_ACQUIRE:
        row = clips.loc[f"wlasl-{slug(kind)}"]
        assert row["status"] == "failed" and row["reason"] == "not_in_local_store" and row["detail"], kind
    assert "still image (jpeg_pipe)" in clips.loc[f"wlasl-{slug('JPEG named .mp4')}", "detail"]
    assert "no video stream" in clips.loc[f"wlasl-{slug('audio-only file')}", "detail"]
    assert "could be decoded" in clips.loc[f"wlasl-{slug('truncated MP4')}", "detail"]  # a fast-start cut (odd repeat)
    for kind in ("huge resolution", "one-frame video"):
        assert clips.loc[f"wlasl-{slug(kind)}", "status"] == "usable"
    assert clips.loc["wlasl-good", "status"] == "usable"
    frames = pd.read_parquet(tmp_path / "r" / "frames" / "index.parquet").set_index("sample_id")
    assert frames.loc[slug("first frames undecodable"), "status"] == "ok"
    assert frames.loc[slug("first frames undecodable"), "n_undecodable"] >= 1
    assert frames.loc[slug("huge resolution"), "src_width"] == 4000
    for kind in media.NO_FRAMES_STRICT:
        assert frames.loc[slug(kind), "status"] == "failed" and frames.loc[slug(kind), "reason"]


# --------------------------------------------------------------------------- hostile annotation input


def test_hostile_annotations_are_refused_by_row_and_nothing_reaches_a_shell(tmp_path: Path) -> None:
    observed: list[hostile.AnnotationRun] = []
    outcomes = hostile.run_inputs(tmp_path, 1, 11, observed=observed)
    assert_all_survived(outcomes, {"hostile_input"})
    assert {o.kind for o in outcomes} == set(hostile.INPUT_KINDS)
    (run,) = observed
    assert not run.run_problems and not run.row_problems
    rejects = run.rejects
    assert rejects is not None and run.clips is not None
    # every reject names the file, the row and the field, with a sentence
    assert rejects["file"].str.endswith(("wlasl.json", "MSASL_train.json")).all() and rejects["detail"].str.len().gt(0).all()
    unsafe = rejects[rejects["reason"] == "unsafe_id"]
    assert len(unsafe) == 13 and (unsafe["field"] == "video_id").all()
    assert unsafe["record"].str.contains("sentinel").any()  # the id aimed at the sentinel folder
    # shell-looking URLs without white space were valid http URLs: fetched by yt-dlp, no shell, usable
    accepted = [e.accept_sample for e in run.expects if e.kind == "command-looking URLs" and e.accept_sample]
    assert len(accepted) == 5
    usable = run.clips.set_index("sample_id").loc[accepted, "status"]
    assert (usable == "usable").all()


def test_shell_spy_and_snapshot_catch_what_they_guard(tmp_path: Path) -> None:
    with hostile.ShellSpy() as spy:
        subprocess.run("true", shell=True, check=True)
        subprocess.run(["true"], check=True)
        os.system("true")
    assert spy.problems() == ["process started with shell=True: 'true'", "shell call: os.system('true',)"]
    assert subprocess.Popen.__init__ is not None and os.system.__name__ == "system"  # restored
    (tmp_path / "data").mkdir()
    before = hostile.snapshot(tmp_path)
    (tmp_path / "data" / "ok.txt").write_text("x")
    (tmp_path / "escaped.mp4").write_text("x")
    assert hostile.changed_outside(before, hostile.snapshot(tmp_path), ("data",)) == ["escaped.mp4"]


# --------------------------------------------------------------------------- params


def test_bad_params_fail_fast_naming_the_key(tmp_path: Path) -> None:
    outcomes = hostile.run_params(tmp_path, 1, 5, per_kind=4)
    assert_all_survived(outcomes, {"params"})
    assert [o.injected for o in outcomes] == [4, 4, 4]


# --------------------------------------------------------------------------- checkpoints


def test_checkpoints_that_would_run_code_or_were_tampered_are_refused(tmp_path: Path, exported_model: Path) -> None:
    version = exported_model / "1"
    outcomes = hostile.run_checkpoints(tmp_path, 1, 2, flips=12, model_version=version)
    assert_all_survived(outcomes, {"checkpoint"})
    counts = {o.kind: o.injected for o in outcomes}
    assert counts == {"pickle that runs code on load": 3, "tampered byte": 12, "mismatched label map": 5,
                      "mismatched input spec": 5}
    assert not list(tmp_path.rglob("ran-*"))  # no sentinel anywhere


def test_a_flipped_weight_byte_is_refused_by_the_digest(tmp_path: Path) -> None:
    import torch

    from sltrain.checkpoint import CheckpointError, load_checkpoint

    good = hostile._tiny_checkpoint(tmp_path / "good.pt", ["a", "b", "c"])
    ckpt = torch.load(good, weights_only=True)
    key = next(k for k in ckpt["model_state"] if k.endswith("weight"))
    ckpt["model_state"][key].view(-1)[0] += 1.0  # what a flipped byte in the tensor data amounts to
    torch.save(ckpt, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="do not match the sha256 stored"):
        load_checkpoint(tmp_path / "tampered.pt")
    assert load_checkpoint(good)["integrity"]["sha256"]


# --------------------------------------------------------------------------- serve


def test_serve_survives_bad_slow_and_concurrent_uploads(tmp_path: Path, exported_model: Path) -> None:
    outcomes = hostile.run_serve(tmp_path, 1, 4, model_dir=exported_model)
    assert_all_survived(outcomes, {"serve"})
    counts = {o.kind: o.injected for o in outcomes}
    assert counts == {"oversized upload": 3, "slow upload": 3, "malformed request": 11,
                      "many uploads at once": hostile.CONCURRENT}
    assert hostile.serve_time_bound() == 2 * hostile.SERVE_LIMITS["read_timeout"] + 3.0
    log = (tmp_path / "serve" / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log and "request headers not received within" in log


# --------------------------------------------------------------------------- the command


def test_table_json_and_readme_block(tmp_path: Path) -> None:
    ok = FaultOutcome("network", "slow drip")
    ok.record(True)
    bad = FaultOutcome("serve", "a | b")
    bad.record(False, 2, "why")
    text = table([ok, bad])
    assert "| network | slow drip | 1 | 1 | 0 |" in text and "a \\| b" in text
    assert "| **all** | **2 kinds** | **2** | **1** | **2** |" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Fault injection\n\ntext\n\n{BEGIN}\nold\n{END}\n\n## Data licences\n")
    import datetime as dt

    write_readme(readme_block([ok], "python -m bench.faults --repeats 1", dt.datetime(2026, 1, 2)), readme)
    new = readme.read_text()
    assert "old" not in new and "`python -m bench.faults --repeats 1`, 2026-01-02" in new
    assert new.count(BEGIN) == 1 and new.endswith("## Data licences\n")
    assert set(common.CATEGORIES) >= {"network", "corrupt_media", "hostile_input", "params", "checkpoint", "serve"}


def test_cli_runs_one_category_and_writes_json(tmp_path: Path) -> None:
    from bench.faults.__main__ import main

    out = tmp_path / "faults.json"
    assert main(["--repeats", "1", "--only", "params", "--json", str(out), "--workdir", str(tmp_path / "w")]) == 0
    report = json.loads(out.read_text())
    assert report["totals"]["injected"] == report["totals"]["survived"] > 0 and report["totals"]["lost"] == 0
    assert {o["category"] for o in report["outcomes"]} == {"params"}
