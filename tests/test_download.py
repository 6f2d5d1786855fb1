"""The downloader against a loopback server that serves real clips and misbehaves on purpose.

Everything goes through yt-dlp (its generic extractor for direct links), as in the pipeline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from http_fixture import MisbehavingServer
from sldata.acquire.download import (
    INCOMPLETE_DIR,
    DownloadSettings,
    SourceRequest,
    build_requests,
    classify_error,
    download_sources,
    parse_retry_after,
)
from sldata.acquire.ledger import FailureReason, Ledger, LedgerError, LedgerRow
from sldata.acquire.probe import probe_video
from sldata.acquire.store import LocalStore

REPO = Path(__file__).resolve().parents[1]

FAST = DownloadSettings(
    workers=3,
    max_attempts=2,
    backoff_base_s=0.05,
    backoff_max_s=0.1,
    socket_timeout_s=1.0,
    per_host_min_interval_s=0.0,
    checkpoint_interval_s=0.0,
    progress=False,
)


@pytest.fixture()
def videos(shared: Path) -> Path:
    return shared / "wlasl_original_clips" / "videos"


@pytest.fixture()
def server(videos: Path):
    with MisbehavingServer(videos, stall_s=4.0) as srv:
        yield srv


def finals(out_dir: Path) -> dict[str, Path]:
    """Files under a final name ``<key>.<ext>`` (not hidden, not the ledger)."""
    return {p.stem: p for p in out_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".parquet"}


def assert_no_partial_under_final_name(out_dir: Path) -> None:
    for key, f in finals(out_dir).items():
        p = probe_video(f)
        assert p.ok, f"{f} holds an invalid file: {p.detail}"


# -- settings, classification, ledger ---------------------------------------------------------
def test_settings_from_dict_rejects_unknown_keys() -> None:
    s = DownloadSettings.from_dict({"workers": 2, "retryable_reasons": ["timeout"], "http_headers": {"X-A": "1"}})
    assert s.workers == 2 and s.retryable_reasons == ("timeout",) and s.http_headers == (("X-A", "1"),)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sleep', 'wrkers'\]"):
        DownloadSettings.from_dict({"wrkers": 2, "sleep": 1})
    with pytest.raises(ValueError, match="retryable_reasons"):
        DownloadSettings(retryable_reasons=("sometimes",))
    with pytest.raises(ValueError, match="workers"):
        DownloadSettings(workers=0)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", FailureReason.PRIVATE_OR_REMOVED),
        ("ERROR: [youtube] abc: Video unavailable", FailureReason.PRIVATE_OR_REMOVED),
        ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", FailureReason.PRIVATE_OR_REMOVED),
        ("ERROR: [youtube] abc: Sign in to confirm your age", FailureReason.LOGIN_REQUIRED),
        ("ERROR: [youtube] abc: Sign in to confirm you're not a bot", FailureReason.RATE_LIMITED),
        ("ERROR: unable to download video data: HTTP Error 403: Forbidden", FailureReason.FORBIDDEN),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: Not Found", FailureReason.NOT_FOUND),
        ("ERROR: HTTP Error 429: Too Many Requests", FailureReason.RATE_LIMITED),
        ("ERROR: HTTP Error 503: Service Unavailable", FailureReason.SERVER_ERROR),
        ("ERROR: Unsupported URL: https://example.com/page", FailureReason.UNSUPPORTED_URL),
        ("ERROR: [download] Got error: Read timed out.", FailureReason.TIMEOUT),
        ("ERROR: [generic] Unable to download webpage: [Errno 111] Connection refused", FailureReason.NETWORK_ERROR),
        ("something new", FailureReason.UNKNOWN),
    ],
)
def test_classify_error_messages(message: str, reason: FailureReason) -> None:
    assert classify_error(None, message).reason is reason


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None


def test_ledger_merge_keeps_old_rows_and_load_names_problems(tmp_path: Path) -> None:
    old = Ledger([LedgerRow("url-a", "ok", bytes=1), LedgerRow("url-b", "failed", failure_reason="not_found")])
    path = tmp_path / "ledger.parquet"
    old.save(path)
    merged = Ledger.load(path).merge([LedgerRow("url-b", "ok", bytes=2), LedgerRow("url-c", "failed", failure_reason="timeout", retryable=True)])
    assert sorted(merged.keys()) == ["url-a", "url-b", "url-c"]
    assert merged.get("url-b").ok and merged.get("url-a").bytes == 1
    merged.save(path)
    assert len(Ledger.load(path)) == 3
    df = merged.to_frame()
    df.loc[1, "failure_reason"] = "gremlins"
    df.loc[1, "status"] = "failed"
    with pytest.raises(LedgerError, match=r"row 1: row source_key='url-b': field 'failure_reason' is 'gremlins'"):
        Ledger.from_frame(df, where="x.parquet: ")
    with pytest.raises(LedgerError, match=r"x.parquet: missing ledger column\(s\) \['sha256'\]"):
        Ledger.from_frame(df.drop(columns=["sha256"]), where="x.parquet: ")


def test_local_store_rejects_unsafe_keys(videos: Path) -> None:
    store = LocalStore(videos)
    assert store.lookup("00335") == videos / "00335.mp4"
    assert store.lookup("99999") is None
    for bad in ("../videos/00335", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="not a safe file name"):
            store.lookup(bad)


# -- downloads ----------------------------------------------------------------------------------
def _manifest(server: MisbehavingServer) -> pd.DataFrame:
    """Three clips share one source; one clip per misbehaving source."""
    rows = []

    def add(sample: str, source_key: str, path: str, end_s: float | None) -> None:
        rows.append(dict(sample_id=f"wlasl-{sample}", original_id=sample, dataset="wlasl", split="train",
                         source_key=source_key, url=server.url(path), start_s=0.0, end_s=end_s))

    for i, end in enumerate([0.5, 1.0, 2.0]):
        add(f"9000{i}", "url-shared0000000000", "ok/00335.mp4", end)
    add("90010", "url-notfound00000000", "notfound/x.mp4", 1.0)
    add("90011", "url-forbidden0000000", "forbidden/x.mp4", 1.0)
    add("90012", "url-html000000000000", "html/00335.mp4", 1.0)
    add("90013", "url-swf0000000000000", "swf/x.mp4", 1.0)
    add("90014", "url-truncated0000000", "truncated/00336.mp4", 1.0)
    add("90015", "url-empty00000000000", "empty/x.mp4", 1.0)
    add("90016", "url-stall00000000000", "stall/00338.mp4", 1.0)
    add("90017", "url-short00000000000", "ok/01377.mp4", 5.0)  # a 0.73 s video
    add("90018", "url-servererror00000", "servererror/x.mp4", 1.0)
    return pd.DataFrame(rows)


EXPECTED = {
    "url-shared0000000000": ("ok", None),
    "url-notfound00000000": ("failed", "not_found"),
    "url-forbidden0000000": ("failed", "forbidden"),
    "url-html000000000000": ("failed", "not_a_video"),
    "url-swf0000000000000": ("failed", "not_a_video"),
    "url-truncated0000000": ("failed", "truncated_or_undecodable"),
    "url-empty00000000000": ("failed", "empty_file"),
    "url-stall00000000000": ("failed", "timeout"),
    "url-short00000000000": ("failed", "too_short_for_crops"),
    "url-servererror00000": ("failed", "server_error"),
}
RETRYABLE = {"url-truncated0000000", "url-empty00000000000", "url-stall00000000000", "url-servererror00000"}


def test_download_typed_reasons_once_per_source_and_rerun(server: MisbehavingServer, tmp_path: Path) -> None:
    out, ledger_path = tmp_path / "videos", tmp_path / "ledger.parquet"
    manifest = _manifest(server)
    requests = build_requests(manifest)
    assert len(requests) == 10  # three clips, one source
    shared = next(r for r in requests if r.source_key == "url-shared0000000000")
    assert shared.min_duration_s == 2.0

    ledger = download_sources(requests, out, ledger_path, FAST)

    df = ledger.to_frame().set_index("source_key")
    for key, (status, reason) in EXPECTED.items():
        row = df.loc[key]
        assert (row.status, None if pd.isna(row.failure_reason) else row.failure_reason) == (status, reason), (key, row.last_error)
        assert bool(row.retryable) == (key in RETRYABLE), key
    ok = df.loc["url-shared0000000000"]
    assert ok.path == "url-shared0000000000.mp4" and ok.attempts == 1 and not ok.from_local_store
    assert ok.bytes == (out / ok.path).stat().st_size == 82741
    assert (ok.width, ok.height) == (320, 240) and ok.duration_s == pytest.approx(2.32, abs=0.01)
    assert df.loc["url-notfound00000000"].http_status == 404 and df.loc["url-forbidden0000000"].http_status == 403
    assert df.loc["url-short00000000000"].duration_s == pytest.approx(0.73, abs=0.05)
    # permanent failures were tried once, retryable ones max_attempts times
    assert df.loc["url-notfound00000000"].attempts == 1 and df.loc["url-stall00000000000"].attempts == 2
    # the shared source was fetched once (one extractor request + one download request)
    assert server.hits["/ok/00335.mp4"] == 2
    # only the valid video took a final name; nothing left in the scratch folder
    assert set(finals(out)) == {"url-shared0000000000"}
    assert_no_partial_under_final_name(out)
    assert not any((out / INCOMPLETE_DIR).iterdir())
    assert len(Ledger.load(ledger_path)) == 10

    # rerun: done and permanent failures cause no request, retryable ones are tried again
    server.reset_counts()
    again = download_sources(build_requests(manifest), out, ledger_path, FAST).to_frame().set_index("source_key")
    for path in ("/ok/00335.mp4", "/notfound/x.mp4", "/forbidden/x.mp4", "/html/00335.mp4", "/swf/x.mp4", "/ok/01377.mp4"):
        assert server.hits[path] == 0, path
    for path in ("/truncated/00336.mp4", "/empty/x.mp4", "/stall/00338.mp4", "/servererror/x.mp4"):
        assert server.hits[path] > 0, path
    assert again.loc["url-stall00000000000"].attempts == 4  # 2 per run, accumulated
    assert again.loc["url-notfound00000000"].attempts == 1
    assert set(again.index) == set(EXPECTED)


def test_retry_after_is_honoured(server: MisbehavingServer, tmp_path: Path) -> None:
    req = SourceRequest("url-ratelimited00000", server.url("ratelimited/1/1/00339.mp4"), None)
    start = time.monotonic()
    ledger = download_sources([req], tmp_path / "v", tmp_path / "l.parquet", FAST)
    elapsed = time.monotonic() - start
    row = ledger.get("url-ratelimited00000")
    assert row.ok and row.attempts == 2, row
    assert elapsed >= 1.0
    times = server.hit_times["/ratelimited/1/1/00339.mp4"]
    assert times[1] - times[0] >= 1.0  # the retry came after Retry-After seconds


def test_retry_after_beyond_the_limit_fails_as_retryable_rate_limit(server: MisbehavingServer, tmp_path: Path) -> None:
    req = SourceRequest("url-ratelimited00001", server.url("ratelimited/5/3600/00339.mp4"), None)
    settings = DownloadSettings.from_dict({**FAST.__dict__, "max_retry_after_s": 10.0})
    row = download_sources([req], tmp_path / "v", tmp_path / "l.parquet", settings).get("url-ratelimited00001")
    assert row.failure_reason == "rate_limited" and row.retryable and row.http_status == 429 and row.attempts == 1


def test_per_host_rate_limit(server: MisbehavingServer, tmp_path: Path) -> None:
    reqs = [SourceRequest(f"url-rate{i}", server.url(f"ok/{vid}.mp4"), None) for i, vid in enumerate(["00335", "00338", "00339"])]
    # three workers would start together; the limiter spaces the attempt starts 0.6 s apart
    # (request arrival adds some jitter: yt-dlp needs a moment to build its first instance)
    settings = DownloadSettings.from_dict({**FAST.__dict__, "per_host_min_interval_s": 0.6, "workers": 3})
    ledger = download_sources(reqs, tmp_path / "v", tmp_path / "l.parquet", settings)
    assert all(r.ok for r in ledger)
    firsts = sorted(server.hit_times[f"/ok/{vid}.mp4"][0] for vid in ["00335", "00338", "00339"])
    gaps = [b - a for a, b in zip(firsts, firsts[1:])]
    assert min(gaps) >= 0.3 and firsts[-1] - firsts[0] >= 0.85, gaps  # unlimited: ~0.05 s


def test_local_store_hit_avoids_the_network(server: MisbehavingServer, shared: Path, tmp_path: Path) -> None:
    untrimmed = LocalStore(shared / "wlasl_original_clips" / "videos")
    pretrimmed = LocalStore(shared / "wlasl100_clips" / "videos", pretrimmed=True)
    manifest = pd.DataFrame([
        # in the pretrimmed store (WLASL100 clips): served per clip, keyed by sample_id
        dict(sample_id="wlasl-69241", original_id="69241", source_key="url-aaaaaaaaaaaaaaaa", url=server.url("ok/69241.mp4"), start_s=0.0, end_s=1.0),
        dict(sample_id="wlasl-00618", original_id="00618", source_key="url-bbbbbbbbbbbbbbbb", url=server.url("ok/x.mp4"), start_s=0.0, end_s=1.0),
        # not pretrimmed, but its whole source video is in the untrimmed store under its video_id
        dict(sample_id="wlasl-02712", original_id="02712", source_key="url-cccccccccccccccc", url=server.url("ok/02712.mp4"), start_s=0.0, end_s=1.0),
    ])
    requests = build_requests(manifest, pretrimmed_store=pretrimmed)
    kinds = {r.source_key: r.pretrimmed for r in requests}
    assert kinds == {"wlasl-69241": True, "wlasl-00618": True, "url-cccccccccccccccc": False}
    out = tmp_path / "v"
    ledger = download_sources(requests, out, tmp_path / "l.parquet", FAST, local_store=[pretrimmed, untrimmed])
    assert server.total_hits() == 0
    for key in kinds:
        row = ledger.get(key)
        assert row.ok and row.from_local_store and row.attempts == 0 and row.pretrimmed == kinds[key], row
        assert Path(row.store_path).is_absolute() and (out / row.path).stat().st_size == row.bytes
    clip = ledger.get("wlasl-69241")
    assert (clip.width, clip.height) == (256, 256)  # the pretrimmed clip, not the 1280x720 source
    src = ledger.get("url-cccccccccccccccc")
    assert src.store_path == str(untrimmed.root.resolve() / "02712.mp4") and src.width == 1920
    # a rerun sees everything done: still no request
    download_sources(requests, out, tmp_path / "l.parquet", FAST, local_store=[pretrimmed, untrimmed])
    assert server.total_hits() == 0


def test_pretrimmed_request_missing_from_store_never_uses_the_network(server: MisbehavingServer, shared: Path, tmp_path: Path) -> None:
    store = LocalStore(shared / "wlasl100_clips" / "videos", pretrimmed=True)
    req = SourceRequest("wlasl-00000", server.url("ok/00335.mp4"), None, store_keys=("00000",), pretrimmed=True)
    row = download_sources([req], tmp_path / "v", tmp_path / "l.parquet", FAST, local_store=store).get("wlasl-00000")
    assert row.failure_reason == "not_in_local_store" and server.total_hits() == 0


KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from sldata.acquire.download import DownloadSettings, SourceRequest, download_sources
    cfg = json.loads(sys.argv[1])
    reqs = [SourceRequest(k, u, None) for k, u in cfg["requests"]]
    settings = DownloadSettings.from_dict(cfg["settings"])
    download_sources(reqs, cfg["out"], cfg["ledger"], settings)
    """
)


def test_killed_run_leaves_no_partial_file_and_rerun_loses_no_row(server: MisbehavingServer, tmp_path: Path) -> None:
    out, ledger_path = tmp_path / "v", tmp_path / "l.parquet"
    # a row from an earlier run for a source not requested now: it must survive everything
    Ledger([LedgerRow("url-earlier000000000", "failed", failure_reason="not_found", attempts=1)]).save(ledger_path)
    server.slow_chunk_delay_s = 0.3  # 3 MB in 16 KiB chunks: about a minute
    pairs = [
        ("url-first0000000000", server.url("ok/00335.mp4")),
        ("url-second000000000", server.url("ok/00338.mp4")),
        ("url-slow00000000000", server.url("slow/69241.mp4")),
    ]
    settings = {**{k: v for k, v in FAST.__dict__.items() if k not in ("retryable_reasons", "http_headers")},
                "workers": 1, "socket_timeout_s": 10.0}
    cfg = dict(requests=pairs, settings=settings, out=str(out), ledger=str(ledger_path))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(cfg)], env=env)
    try:
        deadline = time.monotonic() + 60
        # wait until the slow body is being downloaded (second request: the extractor made the first)
        while server.hits["/slow/69241.mp4"] < 2 or not server.slow_started.is_set():
            assert proc.poll() is None, "download finished before it could be killed"
            assert time.monotonic() < deadline, "slow download never started"
            time.sleep(0.05)
        time.sleep(0.5)
        partial = list((out / INCOMPLETE_DIR).rglob("*"))
        assert any(p.is_file() for p in partial), "expected a partial file in the scratch folder"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    # nothing half-written under a final name; the checkpointed ledger is readable
    assert "url-slow00000000000" not in finals(out)
    assert_no_partial_under_final_name(out)
    after_kill = Ledger.load(ledger_path)
    assert {"url-earlier000000000", "url-first0000000000", "url-second000000000"} <= set(after_kill.keys())

    server.slow_enabled = False
    ledger = download_sources([SourceRequest(k, u, None) for k, u in pairs], out, ledger_path, FAST)
    assert set(ledger.keys()) == {"url-earlier000000000", *(k for k, _ in pairs)}
    assert all(ledger.get(k).ok for k, _ in pairs)
    assert ledger.get("url-first0000000000").updated_at == after_kill.get("url-first0000000000").updated_at  # skipped
    assert_no_partial_under_final_name(out)
    assert not any((out / INCOMPLETE_DIR).iterdir())


def test_orphaned_final_file_is_adopted_without_network(server: MisbehavingServer, videos: Path, tmp_path: Path) -> None:
    # a run killed between the rename and the ledger checkpoint leaves a valid file without a row
    out = tmp_path / "v"
    out.mkdir()
    os.link(videos / "00339.mp4", out / "url-orphan0000000000.mp4")
    row = download_sources([SourceRequest("url-orphan0000000000", server.url("ok/00339.mp4"), 1.0)],
                           out, tmp_path / "l.parquet", FAST).get("url-orphan0000000000")
    assert row.ok and row.attempts == 0 and server.total_hits() == 0
