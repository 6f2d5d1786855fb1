"""Disk full while a stage writes an artifact: a clear error, the previous artifact intact.

How the fault is made
---------------------
There is no root here to mount a small file system, so the stage command runs with a
**file-size limit**: ``setrlimit(RLIMIT_FSIZE, limit)`` in the child (with ``SIGXFSZ`` ignored,
as CPython does anyway). The kernel then fails any ``write(2)`` that would take a file beyond
``limit`` bytes, exactly as a full disk fails it, except with ``EFBIG`` ("File too large")
instead of ``ENOSPC``: the bytes up to the limit are written, the write that crosses it comes
back short and the next fails. This reaches every writer at the system-call level (pyarrow's
C++ Parquet writer, numpy, FFmpeg through PyAV, PyTorch's zip writer, plain Python files),
which a Python-level hook that raises ``ENOSPC`` could not; :mod:`sldata.atomic` treats
``ENOSPC``, ``EDQUOT`` and ``EFBIG`` alike.

For every case a *previous good version* is made by an ordinary run, then the same (or, for
the training checkpoint, a changed) command runs again under a limit drawn between the size of
the largest file that run writes before the artifact and the artifact's own size, so the limit
is reached while the artifact itself is being written. Cases:

=======================  ========================================  ===============================
artifact                 command                                   written before it (must fit)
=======================  ========================================  ===============================
manifest parquet         ``sldata manifest`` (asl100.json)         nothing
clip table               ``sldata acquire`` (pretrimmed store)     the download ledger
trimmed clip             ``sldata acquire``, one clip's            the ledgers, the clip table
                         provenance removed so it is redone
pose shard               ``sldata pose`` (checkpoint per clip)     one-clip checkpoint parts
frames shard             ``sldata frames``                         ``index.parquet`` (temporary)
packed keypoints         ``sldata pack-pose``                      nothing
training checkpoint      ``sltrain train`` with another lr, so it  ``best.pt`` of epoch 1
                         starts afresh (``last.pt``)
model.pt                 ``sltrain train`` again (resumes a        nothing
                         finished run, copies ``best.pt``)
JSON report              ``sldata coverage`` (``coverage.json``)   nothing
=======================  ========================================  ===============================

An injection is survived when the command exits non-zero with no traceback and a last line
``error: ...`` that names the artifact's path and says "File too large" (or "No space"); the
artifact (and, for the trimmed clip, the clip table) is byte-identical to the previous version;
no temporary (``.*.tmp``) or partial file is left (a pose run keeps its ``.parts`` checkpoints,
by design); and a rerun without the limit exits 0 and writes the artifact identical to the
previous version (a checkpoint: the same weights), or, for the training checkpoint, finishes.
Anything else that made the previous version disappear or change counts in ``lost``.
"""

from __future__ import annotations

import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.faults.common import FaultOutcome, sha256_file
from bench.faults.kill import (
    build_packed_pose_set,
    checkpoint_digest,
    child_env,
    default_params,
    flags,
    leftovers,
    merged,
    run_command,
    shared_data_dir,
    train_argv,
    train_sections,
    write_clip_table,
)

TIMEOUT_S = 600.0
CLEAR_WORDS = ("File too large", "No space left")

ACQUIRE_IDS = ("05736", "32162", "22956")
POSE_IDS = ("05736", "32162", "22956")
FRAME_IDS = ("05736", "32162", "22956", "01382", "13309")
TRAIN_EPOCHS = 3


@dataclass
class DiskCase:
    """One artifact under a disk-full fault.

    Attributes
    ----------
    artifact
        Human-readable name (the fault kind is ``disk full writing the <artifact>``).
    target
        The artifact's path relative to the case folder (as the command names it).
    argv
        The faulted command, run from the case folder.
    limit_range
        ``(low, high)``: the file-size limit is drawn in ``(low, high)`` bytes (``low``: the
        largest file the run writes before the artifact; ``high``: the artifact's size).
    recovered
        Whether a rerun without the limit restored the artifact; ``None``: compare bytes with
        the previous version.
    unchanged
        Further files (relative paths) that must stay byte-identical.
    allowed_left
        Folder names a failed run may keep (resumable checkpoints).
    """

    artifact: str
    target: str
    argv: list[str]
    limit_range: tuple[int, int]
    recovered: Callable[[Path, Any], bool] | None = None
    unchanged: list[str] = field(default_factory=list)
    allowed_left: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return f"disk full writing the {self.artifact}"


# --------------------------------------------------------------------------- running


def run_with_file_size_limit(argv: list[str], cwd: Path, limit: int, log: Path,
                             timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """Run ``argv`` with ``RLIMIT_FSIZE = limit`` bytes (``SIGXFSZ`` ignored); returns (exit status, stderr)."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    proc = subprocess.run(argv, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit_file_size)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ (RLIMIT_FSIZE={limit}) {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n[exit {proc.returncode}]\n")
    return proc.returncode, proc.stderr


def must_run(argv: list[str], cwd: Path, log: Path) -> None:
    """Run a setup command; raise naming the log when it fails."""
    rc, _ = run_command(argv, cwd, log, TIMEOUT_S)
    if rc != 0:
        raise RuntimeError(f"setup command failed (exit {rc}): {' '.join(argv[:4])} ...; see {log}")


def error_problems(stderr: str, target: str) -> list[str]:
    """What is unclear about a disk-full error: a traceback, no ``error:`` line, no path, no reason."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    problems = []
    if "Traceback (most recent call last)" in stderr:
        problems.append("a traceback instead of an error message")
    if not last.startswith("error:"):
        problems.append(f"the last line is not 'error: ...': {last[:200]!r}")
    if target not in last:
        problems.append(f"the error does not name {target}: {last[:300]!r}")
    if not any(word in last for word in CLEAR_WORDS):
        problems.append(f"the error does not say {' or '.join(CLEAR_WORDS)}: {last[:300]!r}")
    return problems


# --------------------------------------------------------------------------- cases


def _acquire_argv(store: Path) -> list[str]:
    section = merged(default_params()["acquire"], {"local_store.dir": str(store), "local_store.pretrimmed": True,
                                                   "network": False})
    return [sys.executable, "-m", "sldata", "acquire", "--samples", "samples.parquet", "--shard", "0",
            "--out-dir", "clips", "--cache-dir", "cache", "--no-progress", *flags(acquire=section)]


def _write_acquire_samples(path: Path) -> None:
    rows = [{"sample_id": f"wlasl-{v}", "dataset": "wlasl", "original_id": v, "source_key": f"url-{i:016x}",
             "url": f"https://example.invalid/{v}.mp4", "gloss": f"g{i}", "label": i, "split": "train",
             "signer_id": "1", "annotated_fps": 25.0, "start_frame": 0, "end_frame": None, "start_s": 0.0,
             "end_s": None, "box_xmin": None, "box_ymin": None, "box_xmax": None, "box_ymax": None,
             "box_units": None} for i, v in enumerate(ACQUIRE_IDS)]
    frame = pd.DataFrame(rows)
    frame["end_frame"] = frame["end_frame"].astype("Int64")
    frame.to_parquet(path, index=False)


def _size(folder: Path, rel: str) -> int:
    return (folder / rel).stat().st_size


def _max_single_row_size(shard: Path) -> int:
    """Size of the largest one-clip table of a pose shard, written as checkpoint parts are."""
    import pyarrow.parquet as pq

    from sldata.pose.store import write_table

    table = pq.read_table(shard)
    biggest = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(table.num_rows):
            part = Path(tmp) / f"part-{i}.parquet"
            write_table(table.slice(i, 1), part)
            biggest = max(biggest, part.stat().st_size)
    return biggest


def _same_checkpoint(previous_digest: str, rel: str) -> Callable[[Path, Any], bool]:
    return lambda folder, _: checkpoint_digest(folder / rel) == previous_digest


class CaseBuilder:
    """Builds each case's previous good state once (in ``root/<name>/base``) and hands out copies."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._train: tuple[Path, Path] | None = None
        self._trained_run: Path | None = None

    def base(self, name: str) -> Path:
        folder = self.root / name / "base"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    # -- the cases -----------------------------------------------------------------------
    def manifest(self) -> tuple[Path, DiskCase]:
        base = self.base("manifest")
        argv = [sys.executable, "-m", "sldata", "manifest", *flags(), "--set", "sources.wlasl.enabled=true",
                "--set", f"sources.wlasl.annotation.local_path={shared_data_dir() / 'wlasl' / 'asl100.json'}",
                "--set", "sources.wlasl.annotation.timeout_s=10", "--set", "sources.msasl.enabled=false",
                "--out-dir", "manifest", "--raw-dir", "raw", "--show-rejects", "0"]
        must_run(argv, base, self.log("manifest"))
        target = "manifest/manifest.parquet"
        return base, DiskCase("manifest parquet", target, argv, (0, _size(base, target)))

    def _acquired(self, name: str) -> Path:
        base = self.base(name)
        _write_acquire_samples(base / "samples.parquet")
        must_run(_acquire_argv(shared_data_dir() / "wlasl100_clips" / "videos"), base, self.log(name))
        return base

    def clip_table(self) -> tuple[Path, DiskCase]:
        base = self._acquired("clip_table")
        target = "clips/shard-000/clips.parquet"
        low = _size(base, "cache/shard-000/ledger.parquet")
        return base, DiskCase("clip table", target, _acquire_argv(shared_data_dir() / "wlasl100_clips" / "videos"),
                              (low, _size(base, target)))

    def trimmed_clip(self) -> tuple[Path, DiskCase]:
        base = self._acquired("trimmed_clip")
        sid = f"wlasl-{ACQUIRE_IDS[0]}"
        (base / "clips/shard-000/videos" / f"{sid}.json").unlink()  # provenance gone: the clip is redone
        target = f"clips/shard-000/videos/{sid}.mp4"
        low = max(_size(base, rel) for rel in ("cache/shard-000/ledger.parquet", "clips/shard-000/clips.parquet",
                                               "clips/shard-000/ledger.parquet", "clips/shard-000/report.json"))
        return base, DiskCase("trimmed clip", target, _acquire_argv(shared_data_dir() / "wlasl100_clips" / "videos"),
                              (low, _size(base, target)), unchanged=["clips/shard-000/clips.parquet"])

    def pose_shard(self) -> tuple[Path, DiskCase]:
        base = self.base("pose_shard")
        write_clip_table(base / "clips/shard-000/clips.parquet", POSE_IDS)
        section = merged(default_params()["pose"], {"workers": 1, "checkpoint_every": 1, "frame_step": 2})
        argv = [sys.executable, "-m", "sldata", "pose", "--clips-dir", "clips", "--shard", "0",
                "--out-dir", "pose", "--no-progress", *flags(pose=section)]
        must_run(argv, base, self.log("pose_shard"))
        target = "pose/shard-000.parquet"
        return base, DiskCase("pose shard", target, argv, (_max_single_row_size(base / target), _size(base, target)),
                              allowed_left=("shard-000.parquet.parts",))

    def frames_shard(self) -> tuple[Path, DiskCase]:
        base = self.base("frames_shard")
        write_clip_table(base / "clips/shard-000/clips.parquet", FRAME_IDS)
        section = merged(default_params()["frames"], {"size": 64, "workers": 1, "storage": "npy"})
        argv = [sys.executable, "-m", "sldata", "frames", "--clips-dir", "clips", "--shard", "0",
                "--out-dir", "frames", "--no-progress", *flags(frames=section)]
        must_run(argv, base, self.log("frames_shard"))
        target = "frames/shard-000/frames.npy"
        return base, DiskCase("frames shard", target, argv,
                              (_size(base, "frames/shard-000/index.parquet"), _size(base, target)),
                              unchanged=["frames/shard-000/index.parquet"])

    def _train_inputs(self) -> tuple[Path, Path]:
        if self._train is None:
            self._train = build_packed_pose_set(self.root / "train_inputs")
        return self._train

    def packed_keypoints(self) -> tuple[Path, DiskCase]:
        packed, _ = self._train_inputs()
        base = self.base("packed_keypoints")
        argv = [sys.executable, "-m", "sldata", "pack-pose", "--pose-dir", str(packed.parent), *flags(),
                "--samples", str(packed.parent / "samples.parquet"), "--out-dir", "packed"]
        must_run(argv, base, self.log("packed_keypoints"))
        target = "packed/keypoints.npy"
        return base, DiskCase("packed keypoints", target, argv, (0, _size(base, target)),
                              unchanged=["packed/index.parquet", "packed/skeleton.json"])

    def _trained(self, name: str) -> tuple[Path, list[str]]:
        """A copy of one finished training run (made once, shared by the training cases)."""
        packed, label_map = self._train_inputs()
        argv = train_argv(packed, label_map, train_sections(TRAIN_EPOCHS))
        if self._trained_run is None:
            self._trained_run = self.root / "trained"
            if self._trained_run.exists():
                shutil.rmtree(self._trained_run)
            self._trained_run.mkdir(parents=True)
            must_run(argv, self._trained_run, self.log("trained"))
        base = self.root / name / "base"
        if base.exists():
            shutil.rmtree(base)
        shutil.copytree(self._trained_run, base)
        return base, argv

    def training_checkpoint(self) -> tuple[Path, DiskCase]:
        base, _ = self._trained("training_checkpoint")
        packed, label_map = self._train_inputs()
        # Another learning rate: the run starts afresh and, after epoch 1, writes best.pt then last.pt.
        argv = train_argv(packed, label_map, train_sections(TRAIN_EPOCHS, lr=0.001))
        best, last = _size(base, "work/best.pt"), _size(base, "work/last.pt")
        low = best + (last - best) // 10  # epoch 1's last.pt holds a shorter history than the finished one
        return base, DiskCase("training checkpoint", "work/last.pt", argv, (low, last - (last - best) // 10),
                              recovered=lambda folder, _: (folder / "out/model.pt").is_file())

    def model_pt(self) -> tuple[Path, DiskCase]:
        base, argv = self._trained("model_pt")
        target = "out/model.pt"
        return base, DiskCase("model.pt", target, argv, (0, _size(base, target)),
                              recovered=_same_checkpoint(checkpoint_digest(base / target), target),
                              unchanged=["out/metrics.json", "out/history.csv"])

    def json_report(self) -> tuple[Path, DiskCase]:
        base = self.base("json_report")
        clips = base / "clips.parquet"
        pd.DataFrame({"sample_id": [f"s{i}" for i in range(6)], "dataset": ["wlasl"] * 6,
                      "split": ["train", "train", "train", "val", "val", "test"],
                      "status": ["usable", "usable", "failed", "usable", "failed", "usable"],
                      "reason": [None, None, "not_found", None, "not_in_local_store", None]}).to_parquet(clips)
        argv = [sys.executable, "-m", "sldata", "coverage", *flags(), "--set", "acquire.min_success_ratio=0",
                "--clips", "clips.parquet",
                "--metrics", "coverage/coverage.json", "--report", "coverage/coverage.txt"]
        must_run(argv, base, self.log("json_report"))
        target = "coverage/coverage.json"
        return base, DiskCase("JSON report", target, argv, (0, _size(base, target)))


CASES: tuple[str, ...] = ("manifest", "clip_table", "trimmed_clip", "pose_shard", "frames_shard", "packed_keypoints",
                          "training_checkpoint", "model_pt", "json_report")
"""The cases, by :class:`CaseBuilder` method name."""


# --------------------------------------------------------------------------- the experiment


TIMINGS: dict[str, float] = {}
"""Seconds per case of the last :func:`run` (setup and injections), by fault kind."""


def inject(case: DiskCase, base: Path, work: Path, limit: int, log: Path) -> tuple[list[str], int]:
    """One disk-full injection on a copy of ``base``; returns (problems, lost)."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(base, work, symlinks=True)
    previous = {rel: sha256_file(work / rel) for rel in [case.target, *case.unchanged]}
    rc, stderr = run_with_file_size_limit(case.argv, work, limit, log)
    problems: list[str] = []
    lost = 0
    if rc == 0:
        problems.append("the command succeeded despite the full disk")
    elif rc < 0:
        problems.append(f"the command died of signal {-rc}")
    problems += error_problems(stderr, case.target)
    for rel, digest in previous.items():
        path = work / rel
        if not path.is_file():
            problems.append(f"{rel} disappeared")
            lost += 1
        elif sha256_file(path) != digest:
            problems.append(f"{rel} changed")
            lost += 1
    left = [p for p in leftovers(work) if not any(p.rstrip("/").endswith(a) for a in case.allowed_left)]
    if left:
        problems.append(f"scratch files left: {left[:5]}")

    rc, _ = run_command(case.argv, work, log, TIMEOUT_S)  # the disk has space again
    if rc != 0:
        problems.append(f"the rerun without the fault exited {rc}")
        lost += 1
    else:
        ok = (case.recovered(work, None) if case.recovered is not None
              else sha256_file(work / case.target) == previous[case.target])
        if not ok:
            problems.append(f"the rerun without the fault did not restore {case.target}")
            lost += 1
        left = leftovers(work)
        if left:
            problems.append(f"scratch files left after the rerun: {left[:5]}")
    return problems, lost


def run(workdir: Path, repeats: int, seed: int, *, cases: tuple[str, ...] | list[str] | None = None
        ) -> list[FaultOutcome]:
    """Fill the disk while each artifact is written, ``repeats`` times at seeded random sizes.

    Parameters
    ----------
    workdir
        Scratch folder (created); cases work in ``workdir/disk/<case>``.
    repeats
        Injections per artifact, each with its own file-size limit.
    seed
        Seeds the limits (each case its own stream).
    cases
        Case names (default :data:`CASES`).

    Returns
    -------
    list[FaultOutcome]
        One per artifact, category ``disk_full``, kind ``disk full writing the <artifact>``.
    """
    chosen = list(CASES if cases is None else cases)
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    root = Path(workdir) / "disk"
    root.mkdir(parents=True, exist_ok=True)
    builder = CaseBuilder(root)
    TIMINGS.clear()
    outcomes = []
    for name in chosen:
        started = time.monotonic()
        base, case = getattr(builder, name)()
        outcome = FaultOutcome(category="disk_full", kind=case.kind)
        rng = random.Random(f"disk-{name}-{seed}")
        low, high = case.limit_range
        if not 0 <= low < high - 1:
            raise RuntimeError(f"{name}: no room for a limit between {low} and {high} bytes")
        for i in range(repeats):
            limit = rng.randint(low + 1, high - 1)
            work = root / name / f"run-{i:03d}"
            problems, lost = inject(case, base, work, limit, builder.log(f"{name}-run-{i:03d}"))
            outcome.record(not problems, lost, f"limit {limit} B: " + "; ".join(problems)
                           + f" [log: {builder.log(f'{name}-run-{i:03d}')}]")
            if not problems:
                shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
        TIMINGS[case.kind] = time.monotonic() - started
        outcomes.append(outcome)
    return outcomes


if __name__ == "__main__":  # python -m bench.faults.disk [repeats] [seed] [case ...]
    args = sys.argv[1:]
    n = int(args[0]) if args else 1
    s = int(args[1]) if len(args) > 1 else 0
    with tempfile.TemporaryDirectory(prefix="faults-disk-") as tmp:
        for o in run(Path(tmp), n, s, cases=args[2:] or None):
            print(f"{o.kind}: {o.survived}/{o.injected} survived, lost {o.lost}; {TIMINGS[o.kind]:.1f} s")
            for f in o.failures:
                print("   ", f)
