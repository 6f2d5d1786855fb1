"""``kill -9`` at random moments of five pipeline stages: the rerun finishes as if nothing happened.

Fault kinds (category ``kill``), one :class:`~bench.faults.common.FaultOutcome` each:

``kill -9 during download``
    ``python -m sldata acquire`` with ``acquire.network`` on and no local store, downloading four
    real WLASL source videos (``wlasl_original_clips``) through yt-dlp from a loopback HTTP
    server that sends them at :data:`DOWNLOAD_BYTES_PER_S`, so a kill lands mid-body, between
    downloads, or in the trimming that follows.
``kill -9 during trim``
    The same command with the original-format clips in an untrimmed local store: the stage links
    the sources and trims, box-crops and re-encodes every clip (their real WLASL frame ranges and
    boxes, from ``andreewaziz_manifest.csv``).
``kill -9 during frames``
    ``python -m sldata frames`` over real WLASL100 clips (``npy`` storage).
``kill -9 during pose``
    ``python -m sldata pose`` (MediaPipe Holistic, one process, a checkpoint after every clip)
    over short real WLASL100 clips.
``kill -9 during training``
    ``python -m sltrain train``: a tiny pose transformer on a small packed set cut from real
    MediaPipe ``.pose`` files (as ``tests/test_train.py`` builds it), a ``last.pt`` per epoch.

For every stage an uninterrupted *reference* run is made once in a fresh folder, timing its
*working phase*: from the moment the stage starts its real work (a stage-specific sign, such as
the first partial download in ``.incomplete``, the trimmed-clip folder, the temporary frame file,
the first pose checkpoint or the training work folder; interpreter start-up does not count) to
its end. Then, ``repeats`` times, the same command starts in another fresh folder and gets
``SIGKILL`` (its own process, as ``kill -9 <pid>``) a delay after its working phase began, drawn
from a seeded :class:`random.Random` uniformly over :data:`KILL_WINDOW` of the reference working
phase (a kill that would come after the run finished is drawn again, shorter, in a fresh folder),
and is rerun to completion. An injection is survived when

* right after the kill, every final artifact that exists is already byte-identical to the
  reference (or, for artifacts with timestamps, holds a subset of its rows), and every
  checkpoint left (pose parts, ``last.pt``/``best.pt``) is readable: nothing half-written ever
  takes a final name;
* the rerun exits 0;
* its artifacts are byte-identical to the reference's, except where the stage records wall-clock
  facts: download ledgers are compared without ``updated_at``/``attempts``/``last_error``,
  ``history.csv`` without ``elapsed_s``, ``metrics.json`` without ``train_time_s``, and
  checkpoints (``torch.save`` writes a random serialization id) by their weights and metadata,
  which is what exact resume promises (``tests/test_train.py``);
* no row is lost: clip-table, ledger, pose-shard and frame-index ids, and training epochs, equal
  the reference's (missing rows and missing or different artifacts are counted in ``lost``);
* no temporary file (``.*.tmp``), ``.incomplete`` download, ``.parts`` checkpoint folder or
  caption scratch file is left anywhere in the run folder.

Commands run from the run folder with relative paths, so the artifacts do not depend on where
the folder is. Run folders of survived injections are deleted; failed ones are kept with the
commands' logs under ``workdir/kill/<stage>/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from bench.faults.common import FaultOutcome, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[2]

STAGES: tuple[str, ...] = ("download", "trim", "frames", "pose", "training")

DOWNLOAD_BYTES_PER_S = 48 * 1024
"""Rate of the loopback server in the download stage (four sources of ~330 kB in all)."""

DOWNLOAD_IDS = ("16428", "19109", "34699", "30257")
"""Original-format WLASL videos downloaded over loopback (320x240, 66-126 kB each)."""

TRIM_IDS = ("02873", "10008", "11767", "23705", "38530", "41506")
"""Original-format WLASL videos trimmed and box-cropped (414p to 720p)."""

POSE_IDS = ("05736", "32162", "22956", "01382")
"""Short WLASL100 clips (12-38 frames) for pose extraction."""

FRAME_CLIPS = 40
"""WLASL100 clips (the first by name) whose frames are extracted."""

TRAIN_EPOCHS = 40

KILL_WINDOW = (0.02, 0.98)
"""A kill comes this fraction (uniform) of the reference run's working phase after that phase began."""

LEFTOVER_SUFFIXES = (".tmp", ".part", ".ytdl")


# --------------------------------------------------------------------------- helpers


def shared_data_dir() -> Path:
    """The real-data folder: ``$SLDATA_SHARED``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("SLDATA_SHARED", REPO_ROOT.parent / "shared" / "data")).resolve()


def default_params() -> dict[str, Any]:
    """The committed ``params.yaml``."""
    import yaml

    with open(REPO_ROOT / "params.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def merged(section: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``section`` with dotted-key ``overrides`` (``{"download.workers": 2}``)."""
    out = json.loads(json.dumps(dict(section)))
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        if leaf not in node:
            raise KeyError(f"no key {dotted!r} in the section")
        node[leaf] = value
    return out


def flags(**sections: Mapping[str, Any]) -> list[str]:
    """``--params`` (the committed params.yaml) with ``sections`` replacing its sections (``--set``) and one shard."""
    argv = ["--params", str(REPO_ROOT / "params.yaml"), "--set", "shards.count=1"]
    for name, section in sections.items():
        argv += ["--set", f"{name}={json.dumps(section)}"]  # JSON is YAML
    return argv


def child_env() -> dict[str, str]:
    """Environment of the stage commands: the checkout importable, one thread per library."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_command(argv: Sequence[str], cwd: Path, log: Path, timeout: float) -> tuple[int, float]:
    """Run ``argv`` to completion in ``cwd`` (output to ``log``); returns (exit status, seconds)."""
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = -signal.SIGKILL
            out.write(f"\n[bench] timed out after {timeout:.0f} s\n".encode())
    return rc, time.monotonic() - started


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` and anything it started (its own session), and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _marker_seen(stage: KillStage, run_dir: Path) -> bool:
    try:
        return stage.work_started(run_dir)
    except OSError:
        return False


def timed_reference(stage: KillStage, run_dir: Path, log: Path) -> tuple[int, float, float]:
    """Run the stage to completion, timing its working phase.

    Returns
    -------
    (exit status, seconds until :meth:`KillStage.work_started` first held, total seconds)
    """
    started = time.monotonic()
    marker_at: float | None = None
    with open(log, "ab") as out:
        proc = subprocess.Popen(stage.argv(), cwd=run_dir, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                if marker_at is None and _marker_seen(stage, run_dir):
                    marker_at = time.monotonic() - started
                if time.monotonic() - started > stage.timeout_s:
                    _kill_group(proc)
                    break
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
    total = time.monotonic() - started
    return proc.returncode, (total if marker_at is None else marker_at), total


def kill_after(stage: KillStage, run_dir: Path, log: Path, delay_s: float) -> bool:
    """Start the stage and ``kill -9`` it ``delay_s`` after its working phase began.

    Returns False when the command finished before the kill (no injection).
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(stage.argv(), cwd=run_dir, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + stage.timeout_s
            while not _marker_seen(stage, run_dir):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            try:
                proc.wait(timeout=delay_s)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)  # the fault: the stage's own process, nothing else
                proc.wait()
                out.write(f"\n[bench] kill -9 {delay_s:.2f} s into the working phase\n".encode())
                return True
            out.write(f"\n[bench] finished (exit {proc.returncode}) before the kill\n".encode())
            return False
        finally:
            try:  # stray children (none expected: every stage here runs in one process)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if proc.poll() is None:
                proc.wait()


def leftovers(root: Path) -> list[str]:
    """Scratch files a finished run must not leave: temporaries, partial downloads, checkpoint parts."""
    found: list[str] = []
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and p.name.startswith(".") and p.name.endswith(LEFTOVER_SUFFIXES):
            found.append(rel)
        elif p.is_file() and ".captions." in p.name:
            found.append(rel)
        elif p.is_dir() and p.name.endswith(".parts"):
            found.append(rel + "/")
        elif p.is_dir() and p.name == ".incomplete" and any(p.iterdir()):
            found.append(rel + "/*")
    return found


def visible_files(root: Path) -> Iterator[Path]:
    """Files under ``root`` whose own name is not hidden (locks and temporaries are)."""
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and not any(part.endswith(".parts") for part in p.parts):
            yield p


def frame_rows(frame: pd.DataFrame, drop: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of ``frame`` without the ``drop`` columns, as JSON-comparable dicts."""
    kept = frame.drop(columns=[c for c in drop if c in frame.columns])
    return json.loads(kept.to_json(orient="records", date_format="iso", double_precision=15))


def checkpoint_digest(path: Path) -> str:
    """Digest of what a checkpoint promises: its weights and metadata, not its zip layout."""
    import torch

    from sltrain.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    h = hashlib.sha256()
    for key in sorted(ckpt["model_state"]):
        tensor = ckpt["model_state"][key].contiguous()
        h.update(key.encode())
        h.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    meta = {k: v for k, v in ckpt.items() if k not in ("model_state", "state")}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- loopback server


class ThrottledServer:
    """A threaded HTTP server on ``127.0.0.1`` serving the files of a folder at a limited rate.

    Parameters
    ----------
    folder
        Files served by name (``GET /<name>``), as ``video/mp4``.
    bytes_per_s
        Body rate of every reply (sent in 8 KiB chunks).
    """

    def __init__(self, folder: Path, bytes_per_s: float) -> None:
        self.folder = Path(folder)
        self.bytes_per_s = bytes_per_s
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ThrottledServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                return

            def do_HEAD(self) -> None:  # noqa: N802
                server._reply(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                server._reply(self, head=False)

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:  # killed clients hang up
                return

        self._httpd = Quiet(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def url(self, name: str) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{name}"

    def _reply(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        name = req.path.split("?", 1)[0].rsplit("/", 1)[-1]
        file = self.folder / name
        if not name or not file.is_file():
            req.send_error(404)
            return
        data = file.read_bytes()
        req.send_response(200)
        req.send_header("Content-Type", "video/mp4")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if head:
            return
        chunk = 8192
        try:
            for i in range(0, len(data), chunk):
                req.wfile.write(data[i:i + chunk])
                req.wfile.flush()
                time.sleep(chunk / self.bytes_per_s)
        except (BrokenPipeError, ConnectionResetError):
            return


# --------------------------------------------------------------------------- stages


@dataclass
class Snapshot:
    """What a finished run produced, in comparable form.

    Attributes
    ----------
    exact
        Relative path -> sha256 of artifacts that must be byte-identical.
    loose
        Relative path -> comparable content of artifacts with wall-clock fields removed.
    rows
        Name -> sorted ids (clips, ledger keys, epochs) that must all survive.
    """

    exact: dict[str, str] = field(default_factory=dict)
    loose: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, list[str]] = field(default_factory=dict)


class KillStage:
    """One stage under ``kill -9``: its inputs, its command and how its outputs compare.

    Subclasses set :attr:`name`, and implement :meth:`prepare`, :meth:`argv`, :meth:`snapshot`
    and :meth:`loose_content`; :meth:`setup`/:meth:`close` hold shared inputs (a server, a pack).
    """

    name = ""
    timeout_s = 600.0

    def setup(self, root: Path) -> None:
        """Build inputs shared by every run of this stage under ``root``."""

    def close(self) -> None:
        """Release what :meth:`setup` started."""

    def prepare(self, run_dir: Path) -> None:
        """Lay out the per-run inputs in a fresh ``run_dir``."""

    def argv(self) -> list[str]:
        """The stage command, with paths relative to the run folder."""
        raise NotImplementedError

    def work_started(self, run_dir: Path) -> bool:
        """Whether the stage's working phase has begun (kills are timed from then); default: at once."""
        return True

    def loose_content(self, run_dir: Path, rel: str) -> Any:
        """Comparable content of the loose artifact ``rel`` (raises when it is unreadable)."""
        raise KeyError(rel)

    def snapshot(self, run_dir: Path) -> Snapshot:
        """Artifacts of a finished run."""
        raise NotImplementedError

    def killed_problems(self, run_dir: Path, ref: Snapshot) -> list[str]:
        """Stage-specific checks right after a kill (checkpoints readable); none by default."""
        return []

    def loose_subset_ok(self, rel: str, got: Any, ref: Any) -> bool:
        """Whether a loose artifact seen after a kill is a complete older version of ``ref``."""
        return got == ref


def after_kill_problems(stage: KillStage, run_dir: Path, ref: Snapshot) -> list[str]:
    """What is wrong with a killed run's folder: a final artifact that is neither absent nor complete."""
    problems: list[str] = []
    for rel, digest in ref.exact.items():
        path = run_dir / rel
        if path.exists() and sha256_file(path) != digest:
            problems.append(f"after the kill {rel} exists but differs from the reference (half-written?)")
    for rel, content in ref.loose.items():
        path = run_dir / rel
        if not path.exists():
            continue
        try:
            got = stage.loose_content(run_dir, rel)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            problems.append(f"after the kill {rel} is unreadable: {type(exc).__name__}: {exc}")
            continue
        if not stage.loose_subset_ok(rel, got, content):
            problems.append(f"after the kill {rel} is neither the reference nor an older complete version")
    problems += stage.killed_problems(run_dir, ref)
    return problems


def rerun_problems(stage: KillStage, run_dir: Path, ref: Snapshot) -> tuple[list[str], int]:
    """Differences between a rerun and the reference, and how many rows/artifacts were lost."""
    problems: list[str] = []
    lost = 0
    try:
        got = stage.snapshot(run_dir)
    except Exception as exc:  # noqa: BLE001
        return [f"rerun outputs unreadable: {type(exc).__name__}: {exc}"], len(ref.exact) + len(ref.loose)
    for rel, digest in ref.exact.items():
        if rel not in got.exact:
            problems.append(f"{rel} missing after the rerun")
            lost += 1
        elif got.exact[rel] != digest:
            problems.append(f"{rel} differs from the reference")
            lost += 1
    extra = sorted(set(got.exact) - set(ref.exact))
    if extra:
        problems.append(f"artifacts the reference does not have: {extra[:5]}")
    for rel, content in ref.loose.items():
        if got.loose.get(rel) != content:
            problems.append(f"{rel} differs from the reference (wall-clock fields ignored)")
            lost += 1
    for name, ids in ref.rows.items():
        have = set(got.rows.get(name, []))
        missing = [i for i in ids if i not in have]
        if missing:
            problems.append(f"{len(missing)} {name} row(s) lost, e.g. {missing[:3]}")
            lost += len(missing)
        if sorted(have) != sorted(ids):
            problems.append(f"{name} rows differ from the reference")
    left = leftovers(run_dir)
    if left:
        problems.append(f"scratch files left after the rerun: {left[:5]}")
    return problems, lost


# -- acquire: download and trim ------------------------------------------------------------------


def original_clip_samples(video_ids: Sequence[str], url_of: Mapping[str, str]) -> pd.DataFrame:
    """Subset-stage rows for original-format WLASL clips, from their real annotations.

    Frame ranges are WLASL's (1-based ``nslt_frame_start``/``nslt_frame_end`` at 25 fps, as the
    manifest converts them) and boxes are the annotated pixel ``bbox``.
    """
    table = pd.read_csv(shared_data_dir() / "wlasl_original_clips" / "andreewaziz_manifest.csv", dtype=str)
    table = table.set_index("video_id")
    rows = []
    for label, vid in enumerate(video_ids):
        rec = table.loc[vid]
        start, end = int(rec["nslt_frame_start"]) - 1, int(rec["nslt_frame_end"])
        x0, y0, x1, y1 = (float(v) for v in str(rec["bbox"]).split())
        rows.append({
            "sample_id": f"wlasl-{vid}", "dataset": "wlasl", "original_id": vid,
            "source_key": "url-" + hashlib.sha1(vid.encode()).hexdigest()[:16], "url": url_of[vid],
            "gloss": str(rec["gloss"]), "label": label, "split": str(rec["split"]),
            "signer_id": str(rec["signer_id"]), "annotated_fps": 25.0, "start_frame": start, "end_frame": end,
            "start_s": start / 25.0, "end_s": end / 25.0, "box_xmin": x0, "box_ymin": y0, "box_xmax": x1,
            "box_ymax": y1, "box_units": "pixel",
        })
    frame = pd.DataFrame(rows)
    frame["label"] = frame["label"].astype("int32")
    frame["start_frame"] = frame["start_frame"].astype("int64")
    frame["end_frame"] = frame["end_frame"].astype("Int64")
    return frame


LEDGER_VOLATILE = ("updated_at", "attempts", "last_error")
"""Ledger columns that record when and how often, not what: a killed attempt is not counted."""


class AcquireStage(KillStage):
    """``python -m sldata acquire`` on one shard (``clips/shard-000``, cache ``cache/shard-000``)."""

    video_ids: tuple[str, ...] = ()
    network = False

    def __init__(self) -> None:
        self.samples: Path | None = None
        self.server: ThrottledServer | None = None

    def url_of(self) -> dict[str, str]:
        return {v: f"https://example.invalid/{v}.mp4" for v in self.video_ids}

    def setup(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.samples = root / "samples.parquet"
        original_clip_samples(self.video_ids, self.url_of()).to_parquet(self.samples, index=False)

    def acquire_section(self) -> dict[str, Any]:
        return merged(default_params()["acquire"], {
            "network": self.network, "local_store.dir": "", "local_store.pretrimmed": False,
            "download.workers": 2, "download.max_attempts": 2, "download.backoff_base_s": 0.1,
            "download.backoff_max_s": 0.2, "download.socket_timeout_s": 20.0,
            "download.per_host_min_interval_s": 0.0, "trim.out_width": 128, "trim.out_height": 128,
        })

    def argv(self) -> list[str]:
        assert self.samples is not None
        return [sys.executable, "-m", "sldata", "acquire", "--samples", str(self.samples), "--shard", "0",
                "--out-dir", "clips", "--cache-dir", "cache", "--no-progress",
                *flags(acquire=self.acquire_section())]

    LEDGERS = ("cache/shard-000/ledger.parquet", "clips/shard-000/ledger.parquet")

    def loose_content(self, run_dir: Path, rel: str) -> Any:
        if rel not in self.LEDGERS:
            raise KeyError(rel)
        frame = pd.read_parquet(run_dir / rel).sort_values("source_key")
        return frame_rows(frame, LEDGER_VOLATILE)

    def loose_subset_ok(self, rel: str, got: Any, ref: Any) -> bool:
        # A checkpointed ledger may lack rows still being downloaded; each row it has must be final.
        return all(row in ref for row in got)

    def snapshot(self, run_dir: Path) -> Snapshot:
        snap = Snapshot()
        for root in (run_dir / "clips", run_dir / "cache"):
            for p in visible_files(root):
                rel = str(p.relative_to(run_dir))
                if rel not in self.LEDGERS:
                    snap.exact[rel] = sha256_file(p)
        for rel in self.LEDGERS:
            snap.loose[rel] = self.loose_content(run_dir, rel)
        clips = pd.read_parquet(run_dir / "clips/shard-000/clips.parquet")
        snap.rows["clip-table"] = sorted(clips["sample_id"].astype(str))
        snap.rows["usable-clip"] = sorted(clips.loc[clips["status"] == "usable", "sample_id"].astype(str))
        ledger = pd.read_parquet(run_dir / self.LEDGERS[0])
        snap.rows["ledger"] = sorted(ledger["source_key"].astype(str))
        return snap


class DownloadStage(AcquireStage):
    """Sources fetched over loopback HTTP with yt-dlp, slowly enough for a kill to land mid-body."""

    name = "download"
    video_ids = DOWNLOAD_IDS
    network = True

    def setup(self, root: Path) -> None:
        self.server = ThrottledServer(shared_data_dir() / "wlasl_original_clips" / "videos",
                                      DOWNLOAD_BYTES_PER_S).start()
        super().setup(root)

    def url_of(self) -> dict[str, str]:
        assert self.server is not None
        return {v: self.server.url(f"{v}.mp4") for v in self.video_ids}

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def work_started(self, run_dir: Path) -> bool:
        scratch = run_dir / "cache/shard-000/videos/.incomplete"
        return scratch.is_dir() and any(scratch.iterdir())


class TrimStage(AcquireStage):
    """Original-format sources from an untrimmed local store, trimmed, box-cropped and re-encoded."""

    name = "trim"
    video_ids = TRIM_IDS

    def acquire_section(self) -> dict[str, Any]:
        section = super().acquire_section()
        section["local_store"] = {"dir": str(shared_data_dir() / "wlasl_original_clips" / "videos"),
                                  "pretrimmed": False}
        return section

    def work_started(self, run_dir: Path) -> bool:
        return (run_dir / "clips/shard-000/videos").is_dir()


# -- frames and pose ---------------------------------------------------------------------------


def write_clip_table(path: Path, video_ids: Sequence[str], missing_first: str | None = None) -> None:
    """A clip table of real WLASL100 clips (status ``usable``) plus one failed row, as acquire writes.

    ``missing_first`` adds, first, a usable row whose clip file does not exist.
    """
    videos = shared_data_dir() / "wlasl100_clips" / "videos"
    ids = [f"wlasl-{v}" for v in video_ids] + ["wlasl-failed"]
    paths: list[str | None] = [str(videos / f"{v}.mp4") for v in video_ids] + [None]
    status = ["usable"] * len(video_ids) + ["failed"]
    if missing_first:
        # relative to the run folder (the command's working directory), so the detail is the same in every run
        ids, paths, status = [missing_first, *ids], ["clips/gone.mp4", *paths], ["usable", *status]
    frame = pd.DataFrame({
        "sample_id": ids,
        "split": ["train"] * (len(ids) - 1) + ["val"],
        "status": status,
        "reason": [None if s == "usable" else "not_found" for s in status],
        "clip_path": paths,
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


class FramesStage(KillStage):
    """``python -m sldata frames`` into ``frames/shard-000`` (``frames.npy`` + ``index.parquet``)."""

    name = "frames"

    def __init__(self) -> None:
        self.video_ids: list[str] = []

    def setup(self, root: Path) -> None:
        videos = sorted((shared_data_dir() / "wlasl100_clips" / "videos").glob("*.mp4"))[:FRAME_CLIPS]
        self.video_ids = [p.stem for p in videos]

    def prepare(self, run_dir: Path) -> None:
        write_clip_table(run_dir / "clips" / "shard-000" / "clips.parquet", self.video_ids)

    def argv(self) -> list[str]:
        section = merged(default_params()["frames"], {"size": 64, "workers": 1, "storage": "npy"})
        return [sys.executable, "-m", "sldata", "frames", "--clips-dir", "clips", "--shard", "0",
                "--out-dir", "frames", "--no-progress", *flags(frames=section)]

    def work_started(self, run_dir: Path) -> bool:
        return any((run_dir / "frames/shard-000").glob(".frames.npy.*.tmp"))

    def snapshot(self, run_dir: Path) -> Snapshot:
        snap = Snapshot()
        for p in visible_files(run_dir / "frames"):
            snap.exact[str(p.relative_to(run_dir))] = sha256_file(p)
        index = pd.read_parquet(run_dir / "frames/shard-000/index.parquet")
        snap.rows["frame-index"] = sorted(index["sample_id"].astype(str))
        snap.rows["frames-ok"] = sorted(index.loc[index["status"] == "ok", "sample_id"].astype(str))
        return snap

    def killed_problems(self, run_dir: Path, ref: Snapshot) -> list[str]:
        # index.parquet marks a complete shard: it may only exist beside the finished frames.
        shard = run_dir / "frames/shard-000"
        if (shard / "index.parquet").exists() and not (shard / "frames.npy").exists():
            return ["after the kill index.parquet exists without frames.npy"]
        return []


class PoseStage(KillStage):
    """``python -m sldata pose`` into ``pose/shard-000.parquet``, a checkpoint part per clip."""

    name = "pose"

    def prepare(self, run_dir: Path) -> None:
        # The first row's clip is missing: it fails at once, so the first checkpoint marks the
        # moment MediaPipe is ready and the real clips start.
        write_clip_table(run_dir / "clips" / "shard-000" / "clips.parquet", POSE_IDS,
                         missing_first="wlasl-00000-missing")

    def work_started(self, run_dir: Path) -> bool:
        return (run_dir / "pose/shard-000.parquet.parts").is_dir()

    def argv(self) -> list[str]:
        section = merged(default_params()["pose"], {"workers": 1, "checkpoint_every": 1, "frame_step": 2})
        return [sys.executable, "-m", "sldata", "pose", "--clips-dir", "clips", "--shard", "0",
                "--out-dir", "pose", "--no-progress", *flags(pose=section)]

    def snapshot(self, run_dir: Path) -> Snapshot:
        shard = run_dir / "pose/shard-000.parquet"
        snap = Snapshot(exact={"pose/shard-000.parquet": sha256_file(shard)})
        table = pq.read_table(shard, columns=["sample_id", "status"]).to_pandas()
        snap.rows["pose-shard"] = sorted(table["sample_id"].astype(str))
        snap.rows["pose-ok"] = sorted(table.loc[table["status"] == "ok", "sample_id"].astype(str))
        return snap

    def killed_problems(self, run_dir: Path, ref: Snapshot) -> list[str]:
        problems = []
        parts = run_dir / "pose/shard-000.parquet.parts"
        for part in sorted(parts.glob("part-*.parquet")) if parts.is_dir() else []:
            try:
                ids = pq.read_table(part, columns=["sample_id"]).column("sample_id").to_pylist()
            except Exception as exc:  # noqa: BLE001
                problems.append(f"after the kill checkpoint {part.name} is unreadable: {exc}")
                continue
            if not set(ids) <= set(ref.rows["pose-shard"]):
                problems.append(f"after the kill checkpoint {part.name} holds unknown clips")
        return problems


# -- training ----------------------------------------------------------------------------------

TINY_TRANSFORMER = {"d_model": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.1, "pooling": "cls"}
TRAIN_SPLITS = ["train"] * 8 + ["val"] * 3 + ["test"] * 3


def build_packed_pose_set(root: Path) -> tuple[Path, Path]:
    """14 clips cut from real MediaPipe Holistic ``.pose`` files (3 classes), packed as the pipeline does.

    The same construction as ``tests/test_train.py``; returns (packed folder, label_map.json).
    """
    import numpy as np

    from sldata.pose.poseformat import read_pose_file
    from sldata.pose.skeleton import Skeleton
    from sldata.pose.store import ClipPose, pack_pose_arrays, write_pose_shard

    pose_dir = shared_data_dir() / "pose_format"
    sources = [pose_dir / "mediapipe_long.pose", pose_dir / "mediapipe.pose",
               pose_dir / "js_example" / "sample-data_example.pose"]
    skeleton = Skeleton(face="subset")
    records, samples = [], []
    n = 0
    for label, path in enumerate(sources):
        kp, _, fps, width, height = read_pose_file(path, face="subset")
        for start in range(0, len(kp) - 20, max(8, (len(kp) - 20) // 5))[:5]:
            if n == len(TRAIN_SPLITS):
                break
            sid = f"clip-{n:02d}"
            seg = np.ascontiguousarray(kp[start:start + 20 + 3 * label])
            found = ~np.isnan(seg[..., 0])
            records.append(ClipPose(sid, "ok", None, None, num_frames=len(seg), fps=fps, width=width, height=height,
                                    frames_with_body=int(found[:, :33].any(1).sum()),
                                    frames_with_left_hand=int(found[:, 33:54].any(1).sum()),
                                    frames_with_right_hand=int(found[:, 54:75].any(1).sum()), keypoints=seg))
            samples.append({"sample_id": sid, "label": label, "split": TRAIN_SPLITS[n], "gloss": f"g{label}",
                            "signer_id": str(n % 2)})
            n += 1
    root.mkdir(parents=True, exist_ok=True)
    write_pose_shard(records, root / "shard-000.parquet", skeleton, {"face": "subset"})
    pack_pose_arrays([root / "shard-000.parquet"], pd.DataFrame(samples), root / "packed")
    pd.DataFrame(samples).to_parquet(root / "samples.parquet", index=False)
    label_map = root / "label_map.json"
    label_map.write_text(json.dumps({"dataset": "test", "glosses": ["g0", "g1", "g2"], "num_classes": 3}))
    return root / "packed", label_map


def train_sections(epochs: int = TRAIN_EPOCHS, **train_overrides: Any) -> dict[str, dict[str, Any]]:
    """``features``, ``train`` and ``models`` for a tiny, deterministic CPU training run."""
    params = default_params()
    features = merged(params["features"], {"num_frames": 16})
    train = merged(params["train"], {"epochs": epochs, "batch_size": 4, "lr": 0.003, "warmup_epochs": 1,
                                     "patience": 1000, "threads": 1, "device": "cpu", "model": "pose_transformer",
                                     "ensemble": {}, **train_overrides})  # one tiny model: its last.pt is the target
    models = merged(params["models"], {f"pose_transformer.{k}": v for k, v in TINY_TRANSFORMER.items()})
    return {"features": features, "train": train, "models": models}


def train_argv(packed: Path, label_map: Path, sections: Mapping[str, Mapping[str, Any]],
               out_dir: str = "out", work_dir: str = "work") -> list[str]:
    """``python -m sltrain train`` with ``sections`` (features, train, models) over the committed params."""
    return [sys.executable, "-m", "sltrain", "train", "--packed", str(packed), "--label-map", str(label_map),
            "--out-dir", out_dir, "--work-dir", work_dir, "--no-progress",
            *flags(**{name: sections[name] for name in ("features", "train", "models")})]


class TrainingStage(KillStage):
    """``python -m sltrain train`` (``out/`` outputs, ``work/last.pt`` resumable state)."""

    name = "training"

    def __init__(self) -> None:
        self.packed: Path | None = None
        self.label_map: Path | None = None

    def setup(self, root: Path) -> None:
        self.packed, self.label_map = build_packed_pose_set(root)

    def argv(self) -> list[str]:
        assert self.packed is not None and self.label_map is not None
        return train_argv(self.packed, self.label_map, train_sections())

    def work_started(self, run_dir: Path) -> bool:
        return (run_dir / "work").is_dir()

    LOOSE = ("out/model.pt", "out/history.csv", "out/metrics.json", "work/best.pt")

    def loose_content(self, run_dir: Path, rel: str) -> Any:
        path = run_dir / rel
        if rel.endswith(".pt"):
            return checkpoint_digest(path)
        if rel.endswith("history.csv"):
            return frame_rows(pd.read_csv(path), ["elapsed_s"])
        if rel.endswith("metrics.json"):
            metrics = json.loads(path.read_text(encoding="utf-8"))
            metrics.pop("train_time_s", None)
            return metrics
        raise KeyError(rel)

    def loose_subset_ok(self, rel: str, got: Any, ref: Any) -> bool:
        # best.pt moves on with training: any complete checkpoint is fine right after a kill
        # (it was loaded above). history.csv and metrics.json are rewritten after every epoch
        # (sltrain.live): the epochs so far, and a summary that says it is not finished.
        if rel == "work/best.pt" or got == ref:
            return True
        if rel == "out/history.csv":
            return 0 < len(got) < len(ref) and got == ref[:len(got)]
        if rel == "out/metrics.json":
            return got.get("finished") is False
        return False

    def snapshot(self, run_dir: Path) -> Snapshot:
        snap = Snapshot(loose={rel: self.loose_content(run_dir, rel) for rel in self.LOOSE})
        if not (run_dir / "out/curves.png").is_file():
            raise FileNotFoundError("out/curves.png")
        history = pd.read_csv(run_dir / "out/history.csv")
        snap.rows["epoch"] = [str(e) for e in history["epoch"]]
        return snap

    def killed_problems(self, run_dir: Path, ref: Snapshot) -> list[str]:
        from sltrain.checkpoint import CheckpointError, load_checkpoint

        problems = []
        for name in ("last.pt", "best.pt"):
            path = run_dir / "work" / name
            if path.exists():
                try:
                    load_checkpoint(path)
                except CheckpointError as exc:
                    problems.append(f"after the kill work/{name} is unreadable: {exc}")
        return problems


STAGE_CLASSES: dict[str, type[KillStage]] = {
    "download": DownloadStage, "trim": TrimStage, "frames": FramesStage, "pose": PoseStage,
    "training": TrainingStage,
}


# --------------------------------------------------------------------------- the experiment


@dataclass
class StageTiming:
    """Seconds of a stage's reference run (and of its working phase) and of each injection (kill + rerun + checks)."""

    reference_s: float = 0.0
    work_s: float = 0.0
    injections_s: list[float] = field(default_factory=list)


TIMINGS: dict[str, StageTiming] = {}
"""Timings of the last :func:`run`, by stage (for the README figures)."""


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def inject_kills(stage: KillStage, root: Path, repeats: int, rng: random.Random) -> FaultOutcome:
    """The reference run and ``repeats`` kill-and-rerun injections of one stage."""
    outcome = FaultOutcome(category="kill", kind=f"kill -9 during {stage.name}")
    timing = TIMINGS.setdefault(stage.name, StageTiming())
    logs = _fresh(root / "logs")
    stage.setup(root / "inputs")
    try:
        ref_dir = _fresh(root / "reference")
        stage.prepare(ref_dir)
        rc, work_at, total = timed_reference(stage, ref_dir, logs / "reference.log")
        timing.reference_s = total
        window = max(total - work_at, 0.05)
        timing.work_s = window
        if rc != 0:
            raise RuntimeError(f"{stage.name}: the reference run failed (exit {rc}); see {logs / 'reference.log'}")
        reference = stage.snapshot(ref_dir)
        if not reference.rows or not any(reference.rows.values()):
            raise RuntimeError(f"{stage.name}: the reference run produced no rows")

        for i in range(repeats):
            started = time.monotonic()
            run_dir = root / f"run-{i:03d}"
            log = logs / f"run-{i:03d}.log"
            delay = rng.uniform(*KILL_WINDOW) * window
            landed = False
            for _ in range(4):  # a kill after the run finished is no injection: draw a shorter one
                _fresh(run_dir)
                stage.prepare(run_dir)
                if kill_after(stage, run_dir, log, delay):
                    landed = True
                    break
                delay *= 0.5
            if not landed:
                outcome.record(False, 0, f"run {i}: the command always finished before the kill")
                continue
            problems = after_kill_problems(stage, run_dir, reference)
            rc, _ = run_command(stage.argv(), run_dir, log, stage.timeout_s)
            lost = 0
            if rc != 0:
                problems.append(f"the rerun exited {rc}")
            else:
                more, lost = rerun_problems(stage, run_dir, reference)
                problems += more
            why = f"run {i} (kill {delay:.2f} s into the work): " + "; ".join(problems) + f" [log: {log}]"
            outcome.record(not problems, lost, why)
            if not problems:
                shutil.rmtree(run_dir, ignore_errors=True)
            timing.injections_s.append(time.monotonic() - started)
        shutil.rmtree(ref_dir, ignore_errors=True)
    finally:
        stage.close()
    return outcome


def run(workdir: Path, repeats: int, seed: int, *, stages: Sequence[str] | None = None) -> list[FaultOutcome]:
    """Kill each stage ``repeats`` times at seeded random moments and check every rerun.

    Parameters
    ----------
    workdir
        Scratch folder (created); each stage works in ``workdir/kill/<stage>``.
    repeats
        Kills per stage.
    seed
        Seeds the kill delays (each stage its own stream, so a subset of stages draws the same).
    stages
        Stages to run (default :data:`STAGES`, in that order).

    Returns
    -------
    list[FaultOutcome]
        One per stage, category ``kill``, kind ``kill -9 during <stage>``.
    """
    chosen = list(STAGES if stages is None else stages)
    unknown = [s for s in chosen if s not in STAGE_CLASSES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    TIMINGS.clear()
    outcomes = []
    for name in chosen:
        rng = random.Random(f"kill-{name}-{seed}")
        outcomes.append(inject_kills(STAGE_CLASSES[name](), Path(workdir) / "kill" / name, repeats, rng))
    return outcomes


if __name__ == "__main__":  # python -m bench.faults.kill [repeats] [seed] [stage ...]
    import tempfile

    args = sys.argv[1:]
    n = int(args[0]) if args else 2
    s = int(args[1]) if len(args) > 1 else 0
    with tempfile.TemporaryDirectory(prefix="faults-kill-") as tmp:
        for o in run(Path(tmp), n, s, stages=args[2:] or None):
            t = TIMINGS[o.kind.rsplit(" ", 1)[-1]]
            print(f"{o.kind}: {o.survived}/{o.injected} survived, lost {o.lost}; reference {t.reference_s:.1f} s, "
                  f"{sum(t.injections_s):.1f} s for the injections")
            for f in o.failures:
                print("   ", f)
