"""Bad and hostile input: annotations, params, checkpoints and uploads are refused with a reason.

Four categories, one :class:`~bench.faults.common.FaultOutcome` per fault kind.

``hostile_input``: annotation files
    Every repeat writes a WLASL v0.3 file and an MS-ASL folder holding good rows (served by a
    loopback :class:`~bench.faults.network.FaultServer`) and seeded hostile ones: wrong types,
    missing fields, negative or reversed crops, labels out of range, duplicate ids, unicode
    glosses (accepted), ids with path separators or ``..`` (some aimed at a sentinel folder),
    ``file://``/``ftp://``/``data:`` URLs, and command-looking URLs (with white space: refused;
    without, e.g. ``?x=$(touch${IFS}<sentinel>)``: valid URLs that must be fetched without a
    shell). It then runs ``sldata manifest`` and ``sldata subset`` (the real CLI, in-process)
    and the acquire stage with ``network`` on against the loopback server, under a spy on
    ``subprocess.Popen``, ``os.system``, ``os.popen`` and ``os.posix_spawn[p]``. Each hostile row
    is one injection, survived when the rejects name its file, row, field and the expected
    reason (or, for accepted rows, its clip is acquired), and the run as a whole kept the rules:
    no process started with ``shell=True`` and no ``os.system``/``os.popen`` call, the sentinel
    file never appeared, no file was written outside the run's data folder (a snapshot of the run
    folder, the sentinel folder and the temp folder before and after), and the good clips were
    acquired. Malformed files (cut or trailing-garbage JSON, not UTF-8, wrong top-level type,
    an empty file, broken MS-ASL files) must make ``sldata manifest`` exit 2 with a message
    naming the file (and the line, for JSON syntax), no traceback and no output.
``params``
    Seeded mutations of the committed ``params.yaml``: an unknown key at a random level, a value
    of the wrong type, a value out of range (below a minimum, above a maximum, outside an enum
    or a pattern), for any key the schema constrains. ``python -m sldata check-params`` (in
    process) must exit 2 naming the key, without a traceback, within 5 s.
``checkpoint``
    A pickle whose ``__reduce__`` would create a sentinel file (inside a ``torch.save`` zip, as a
    bare pickle, nested in the weights) loaded by ``load_checkpoint`` (the resume path),
    ``sltrain evaluate`` and ``sltrain export``; seeded single-bit flips of a real checkpoint;
    checkpoints whose label map or input spec do not fit their weights; exported models whose
    label map or input spec do not fit the IR, through ``sltrain predict``. Survived when every
    path refuses with a reason (exit 2 or 1, "refused"), the sentinel never appears and nothing
    is exported; a flipped bit may also load when the loaded contents are identical (zip padding).
``serve``
    ``python -m sltrain serve`` as a subprocess with a small exported model: oversized uploads
    (honest and lying ``Content-Length``), slow uploads (body and headers trickled below any
    timeout), malformed requests (a multipart form without a file, JSON, chunked, bad lengths, garbage request lines),
    and many uploads at once. Survived when each gets a 4xx (or 503 busy) with a reason within
    :func:`serve_time_bound`, the server's resident memory grows less than
    :data:`SERVE_RSS_BOUND_BYTES` over the run, and it still answers ``/health`` and a good
    upload with 200 afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import http.client
import inspect
import io
import json
import os
import pickle
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.faults.common import FaultOutcome
from bench.faults.network import FaultServer, shared_data_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
INPUT, PARAMS, CHECKPOINT, SERVE = "hostile_input", "params", "checkpoint", "serve"
CATEGORIES: tuple[str, ...] = (INPUT, PARAMS, CHECKPOINT, SERVE)

GOOD_VIDEO = "01377.mp4"
"""Real original-format WLASL clip (0.73 s, 27 kB) the loopback server serves for good rows."""


# =========================================================================== shared guards


@dataclass
class ShellSpy:
    """Records every process start and shell call while active (a context manager).

    ``subprocess.Popen.__init__`` is wrapped (so subclasses such as yt-dlp's are seen), and
    ``os.system``, ``os.popen``, ``os.posix_spawn`` and ``os.posix_spawnp`` are recorded; the
    calls still happen.
    """

    popen: list[tuple[Any, bool]] = field(default_factory=list)
    shell_calls: list[str] = field(default_factory=list)
    _saved: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> ShellSpy:
        spy = self
        original_init = subprocess.Popen.__init__
        signature = inspect.signature(original_init)

        def init(popen_self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                bound = signature.bind(popen_self, *args, **kwargs)
                shell = bool(bound.arguments.get("shell", False))
                argv = bound.arguments.get("args")
            except TypeError:
                shell, argv = bool(kwargs.get("shell", False)), args[:1]
            spy.popen.append((argv, shell))
            original_init(popen_self, *args, **kwargs)

        def recorder(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                spy.shell_calls.append(f"os.{name}{args!r}")
                return original(*args, **kwargs)
            return call

        self._saved = {"Popen.__init__": original_init}
        subprocess.Popen.__init__ = init  # type: ignore[method-assign]
        for name in ("system", "popen", "posix_spawn", "posix_spawnp"):
            if hasattr(os, name):
                self._saved[name] = getattr(os, name)
                setattr(os, name, recorder(name, getattr(os, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.Popen.__init__ = self._saved.pop("Popen.__init__")  # type: ignore[method-assign]
        for name, original in self._saved.items():
            setattr(os, name, original)
        self._saved = {}

    def problems(self) -> list[str]:
        out = [f"process started with shell=True: {argv!r}" for argv, shell in self.popen if shell]
        return out + [f"shell call: {c}" for c in self.shell_calls]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file and folder under ``root``."""
    out: dict[str, tuple[int, int]] = {}
    if not root.exists():
        return out
    for p in root.rglob("*"):
        with contextlib.suppress(OSError):
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns if p.is_file() else 0)
    return out


def changed_outside(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                    allowed: tuple[str, ...]) -> list[str]:
    """Paths new or modified in ``after`` that are not under one of the ``allowed`` prefixes."""
    return sorted(p for p, v in after.items() if before.get(p) != v
                  and not any(p == a or p.startswith(a.rstrip("/") + "/") for a in allowed))


def token_files(token: str) -> list[str]:
    """Files or folders named after ``token`` in the temp folder and the current folder."""
    found: list[str] = []
    for folder in {Path(tempfile.gettempdir()), Path.cwd(), Path("/tmp")}:
        with contextlib.suppress(OSError):
            found += [str(p) for p in folder.glob(f"*{token}*")]
    return found


def _run_cli(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str, str]:
    """Run a CLI ``main`` in this process; ``(exit status, stdout, stderr)``; SystemExit counts."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = int(main(argv))
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:  # noqa: BLE001 - an escaping exception is what we look for
            err.write(f"Traceback (escaped): {type(exc).__name__}: {exc}\n")
            rc = -1
    return rc, out.getvalue(), err.getvalue()


def sldata_main(argv: list[str]) -> int:
    from sldata.cli import main

    return main(argv)


def sltrain_main(argv: list[str]) -> int:
    from sltrain.cli import main

    return main(argv)


# =========================================================================== annotations

WLASL_KINDS = ("wrong types", "missing fields", "negative or reversed crops", "duplicate ids",
               "unicode glosses", "ids with path separators or ..", "file:// and ftp:// URLs",
               "command-looking URLs")
INPUT_KINDS: tuple[str, ...] = ("malformed JSON", *WLASL_KINDS[:3], "labels out of range", *WLASL_KINDS[3:])

UNICODE_GLOSSES = ("café", "日本語", "привет", "👋🏽", "مرحبا", "a/b", "..", "x\u200by", "n\u0303o", "CON", "Ωmega",
                   "<script>", "$(whoami)")


@dataclass
class Expect:
    """What must become of one hostile row."""

    kind: str
    dataset: str
    row: str
    field: str = ""
    reason: str = ""
    accept_sample: str = ""  # accepted rows: the sample id that must be acquired
    gloss: str = ""  # unicode glosses: the gloss that must survive unchanged


def wlasl_instance(vid: Any, link: str, **overrides: Any) -> dict[str, Any]:
    """A valid WLASL v0.3 instance (whole video, box inside a 320x240 frame); override to break it."""
    inst: dict[str, Any] = {"bbox": [10, 10, 200, 200], "fps": 25, "frame_end": -1, "frame_start": 1,
                            "instance_id": 0, "signer_id": 7, "source": "aslu", "split": "train", "url": link,
                            "variation_id": 0, "video_id": vid}
    inst.update(overrides)
    return inst


def msasl_clip(url: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"url": url, "start_time": 1.0, "end_time": 2.0, "start": 30, "end": 60, "fps": 30.0,
                            "label": 3, "signer_id": 1, "box": [0.1, 0.2, 0.9, 0.8], "width": 640.0, "height": 360.0,
                            "text": "eat"}
    base.update(overrides)
    return base


_MISSING = object()


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def build_annotations(run: Path, server: FaultServer, rng: random.Random, sentinel: Path, token: str,
                      ) -> tuple[Path, Path, list[Expect], list[str]]:
    """Write the WLASL file and MS-ASL folder of one repeat; return them, the expectations and
    the glosses of the explicit subset."""
    ok_url = lambda n: server.url(f"ok/{GOOD_VIDEO}?n={n}")  # noqa: E731 - distinct sources, one file
    counter = iter(range(10**6))
    expects: list[Expect] = []
    book: list[Any] = [wlasl_instance("10001", ok_url(next(counter)))]  # entry 0, instance 0: the good clip
    entries: list[Any] = [{"gloss": "book", "instances": book}]
    vid = iter(f"2{n:04d}" for n in range(10**4))

    def bad_instance(kind: str, instance: Any, fld: str, reason: str) -> None:
        book.append(instance)
        expects.append(Expect(kind, "wlasl", f"[0].instances[{len(book) - 1}]", fld, reason))

    def url() -> str:
        return ok_url(next(counter))

    # wrong types
    kind = "wrong types"
    for fld, value in [("fps", str(rng.choice([25, 30]))), ("frame_start", True), ("bbox", "0,0,10,10"),
                       ("video_id", rng.uniform(1, 9)), ("split", rng.randint(0, 2)), ("signer_id", "seven"),
                       ("url", rng.randint(1, 10**6)), ("frame_end", [60]), ("source", {"x": 1})]:
        bad_instance(kind, wlasl_instance(next(vid), url(), **{fld: value}), fld, "wrong_type")
    bad_instance(kind, rng.choice(["an instance", 42, [1, 2], None]), "", "wrong_type")
    # missing fields
    kind = "missing fields"
    for fld in ("url", "video_id", "split", "fps", "frame_start", "frame_end"):
        inst = wlasl_instance(next(vid), url())
        bad_instance(kind, _without(inst, fld) if rng.random() < 0.5 else {**inst, fld: None}, fld, "missing_field")
    bad_instance(kind, wlasl_instance(next(vid), ""), "url", "missing_field")
    # negative or reversed crops
    kind = "negative or reversed crops"
    start = rng.randint(20, 80)
    for overrides, fld, reason in [({"frame_start": 0}, "frame_start", "invalid_value"),
                                   ({"frame_start": -rng.randint(1, 10**6)}, "frame_start", "invalid_value"),
                                   ({"frame_start": start, "frame_end": start - rng.randint(1, 19)}, "frame_end",
                                    "end_before_start"),
                                   ({"bbox": [-rng.randint(1, 50), 0, 100, 100]}, "bbox", "invalid_value"),
                                   ({"bbox": [200, 200, 10, 10]}, "bbox", "invalid_value"),
                                   ({"fps": 0}, "fps", "invalid_value"),
                                   ({"fps": -25}, "fps", "invalid_value"),
                                   ({"fps": float("inf")}, "fps", "invalid_value")]:
        bad_instance(kind, wlasl_instance(next(vid), url(), **overrides), fld, reason)
    # duplicate ids
    kind = "duplicate ids"
    bad_instance(kind, wlasl_instance("10001", url()), "video_id", "duplicate_id")
    # ids with path separators or ..
    kind = "ids with path separators or .."
    escape = "../" * 12 + str(sentinel).lstrip("/") + f"/{token}"
    for bad_id in [escape, "../x", "a/b", "..\\..\\windows", "/etc/passwd", "%2e%2e%2f", "..", ".", f"{token}\x00.mp4",
                   "x\ny", "~root", f"-{token}", "a" * 65]:
        bad_instance(kind, wlasl_instance(bad_id, url()), "video_id", "unsafe_id")
    # URL schemes
    kind = "file:// and ftp:// URLs"
    for bad_url in [f"file://{sentinel}/{token}", "file:///etc/passwd", "FILE:///etc/shadow", "ftp://127.0.0.1/v.mp4",
                    "ftps://example.org/v.mp4", "gopher://127.0.0.1:70/", "data:video/mp4;base64,AAAAIGZ0eXA=",
                    "javascript:alert(1)", "smb://host/share/v.mp4"]:
        bad_instance(kind, wlasl_instance(next(vid), bad_url), "url", "unsupported_url_scheme")
    # command-looking URLs: refused with white space or without a scheme, fetched safely otherwise
    kind = "command-looking URLs"
    touch = f"touch {sentinel}/{token}"
    for bad_url in [f"$({touch})", f"`{touch}`", f"{url()}; {touch}", f"{url()} | sh", f"{url()} && {touch}",
                    f"{url()}\n{touch}", f"$(touch${{IFS}}{sentinel}/{token})", f"; rm -rf {sentinel}"]:
        bad_instance(kind, wlasl_instance(next(vid), bad_url), "url", "malformed_url")
    ifs = "${IFS}"
    for payload in [f"$(touch{ifs}{sentinel}/{token})", f"`touch{ifs}{sentinel}/{token}`", f";touch{ifs}{sentinel}/{token};",
                    f"|touch{ifs}{sentinel}/{token}", f"&&touch{ifs}{sentinel}/{token}"]:
        vid_id = next(vid)
        book.append(wlasl_instance(vid_id, server.url(f"ok/{GOOD_VIDEO}?q={next(counter)}{payload}")))
        expects.append(Expect(kind, "wlasl", f"[0].instances[{len(book) - 1}]", accept_sample=f"wlasl-{vid_id}"))
    # gloss-level faults: each its own entry
    def bad_entry(kind: str, entry: Any, fld: str, reason: str) -> None:
        entries.append(entry)
        expects.append(Expect(kind, "wlasl", f"[{len(entries) - 1}]", fld, reason))

    bad_entry("wrong types", {"gloss": rng.randint(0, 99), "instances": [wlasl_instance(next(vid), url())]}, "gloss",
              "wrong_type")
    bad_entry("wrong types", {"gloss": "drink", "instances": {"0": wlasl_instance(next(vid), url())}}, "instances",
              "wrong_type")
    bad_entry("wrong types", rng.choice([["book"], "book", 7]), "", "wrong_type")
    bad_entry("missing fields", {"instances": [wlasl_instance(next(vid), url())]}, "gloss", "missing_field")
    bad_entry("missing fields", {"gloss": "chair"}, "instances", "missing_field")
    bad_entry("duplicate ids", {"gloss": "book", "instances": [wlasl_instance(next(vid), url())]}, "gloss",
              "duplicate_gloss")
    glosses = ["book"]
    for gloss in rng.sample(UNICODE_GLOSSES, 3):
        vid_id = next(vid)
        entries.append({"gloss": gloss, "instances": [wlasl_instance(vid_id, url())]})
        expects.append(Expect("unicode glosses", "wlasl", f"[{len(entries) - 1}]", accept_sample=f"wlasl-{vid_id}",
                              gloss=gloss))
        glosses.append(gloss)
    wlasl = run / "annotations" / "wlasl.json"
    wlasl.parent.mkdir(parents=True, exist_ok=True)
    wlasl.write_text(json.dumps(entries, ensure_ascii=rng.random() < 0.5), encoding="utf-8")

    # MS-ASL: labels, crops, duplicates
    msasl = run / "annotations" / "msasl"
    msasl.mkdir(parents=True, exist_ok=True)
    for name in ("MSASL_classes.json", "MSASL_synonym.json"):
        (msasl / name).symlink_to(shared_data_dir() / "msasl" / name)
    yt = "https://www.youtube.com/watch?v=ri3NrdgfAtE"
    train: list[Any] = [msasl_clip(yt)]

    def bad_clip(kind: str, clip: Any, fld: str, reason: str) -> None:
        train.append(clip)
        expects.append(Expect(kind, "msasl", f"[{len(train) - 1}]", fld, reason))

    for label in (1000, -1, 10**12, -rng.randint(2, 10**6), 1000 + rng.randint(0, 10**6)):
        bad_clip("labels out of range", msasl_clip(yt, label=label), "label", "unknown_label")
    bad_clip("wrong types", msasl_clip(yt, label=str(rng.randint(0, 999))), "label", "wrong_type")
    bad_clip("wrong types", msasl_clip(yt, start_time="1.0"), "start_time", "wrong_type")
    t0 = round(rng.uniform(1, 100), 3)
    bad_clip("negative or reversed crops", msasl_clip(yt, start_time=-1.0, start=-30), "start_time", "invalid_value")
    bad_clip("negative or reversed crops", msasl_clip(yt, start_time=t0, start=round(t0 * 30), end_time=t0 - 0.5,
                                                      end=round((t0 - 0.5) * 30)), "end_time", "end_before_start")
    bad_clip("negative or reversed crops", msasl_clip(yt, start_time=t0, start=round(t0 * 30), end_time=t0,
                                                      end=round(t0 * 30)), "end_time", "end_before_start")
    bad_clip("negative or reversed crops", msasl_clip(yt, start=900), "start", "inconsistent_crop")
    bad_clip("duplicate ids", msasl_clip(yt), "", "duplicate_id")
    bad_clip("missing fields", _without(msasl_clip(yt), "end_time"), "end_time", "missing_field")
    bad_clip("file:// and ftp:// URLs", msasl_clip(f"file://{sentinel}/{token}.mp4"), "url", "unsupported_url_scheme")
    (msasl / "MSASL_train.json").write_text(json.dumps(train), encoding="utf-8")
    return wlasl, msasl, expects, glosses


def manifest_argv(data: Path, wlasl: Path | str, msasl: Path | str, msasl_enabled: bool = True) -> list[str]:
    """``sldata manifest`` arguments reading the given files (WLASL sha256 unchecked)."""
    sources = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["sources"]
    sources["wlasl"]["enabled"] = True
    sources["wlasl"]["annotation"].update(local_path=str(wlasl), local_sha256="", timeout_s=1)
    sources["msasl"].update(enabled=msasl_enabled, dir=str(msasl), splits=["train"], max_time_frame_disagreement_s=0.1)
    return ["manifest", "--params", str(REPO_ROOT / "params.yaml"), "--set", f"sources={json.dumps(sources)}",
            "--out-dir", str(data / "manifest"), "--raw-dir", str(data / "raw")]


def acquire_settings() -> Any:
    """Acquire settings of the hostile-input runs: network on (loopback only), no local store."""
    from sldata.acquire.stage import AcquireSettings

    section = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["acquire"]
    section.update(network=True, local_store={"dir": "", "pretrimmed": False})
    section["download"].update(workers=4, max_attempts=2, backoff_base_s=0.05, backoff_max_s=0.1, socket_timeout_s=2.0,
                               per_host_min_interval_s=0.0)
    settings = AcquireSettings.from_dict(section)
    # the ledger checkpoints every row here (the faults look at each one)
    return dataclasses.replace(settings, download=dataclasses.replace(settings.download, checkpoint_interval_s=0.0))


@dataclass
class AnnotationRun:
    """What one hostile-annotation repeat observed."""

    expects: list[Expect]
    row_problems: dict[int, list[str]]
    run_problems: list[str]
    rejects: pd.DataFrame | None = None
    clips: pd.DataFrame | None = None
    seconds: float = 0.0


def run_annotations(run: Path, server: FaultServer, rng: random.Random) -> AnnotationRun:
    """One repeat of the hostile annotation rows through manifest, subset and acquire (module docs)."""
    from sldata.acquire.stage import acquire_shard

    started = time.monotonic()
    shutil.rmtree(run, ignore_errors=True)
    token = f"pwned{rng.randrange(16**8):08x}"
    sentinel = run / "sentinel"
    sentinel.mkdir(parents=True)
    wlasl, msasl, expects, glosses = build_annotations(run, server, rng, sentinel, token)
    data = run / "a" / "b" / "c" / "d" / "data"  # deep, so that ../ ids escaping it stay in the snapshot
    data.mkdir(parents=True)
    before = snapshot(run)
    tmp_before = set(token_files(token))
    run_problems: list[str] = []
    rejects = clips = None
    with ShellSpy() as spy:
        rc, out, err = _run_cli(sldata_main, manifest_argv(data, wlasl, msasl))
        if rc != 0:
            run_problems.append(f"sldata manifest exited {rc}: {err.strip()[-400:]}")
        else:
            rejects = pd.read_parquet(data / "manifest" / "rejects.parquet")
            rc, out, err = _run_cli(sldata_main, [
                "subset", "--manifest", str(data / "manifest" / "manifest.parquet"), "--out-dir", str(data / "subset"),
                *manifest_argv(data, wlasl, msasl)[1:5], "--set", "subset.dataset=wlasl", "--set", "subset.k=1",
                "--set", f"subset.classes={json.dumps(list(glosses))}", "--set", "subset.resplit.enabled=false"])
            if rc != 0:
                run_problems.append(f"sldata subset exited {rc}: {err.strip()[-400:]}")
            else:
                samples = pd.read_parquet(data / "subset" / "samples.parquet")
                try:
                    clips = acquire_shard(samples, 0, 1, data / "clips" / "shard-000", data / "cache" / "shard-000",
                                          acquire_settings(), progress=False)
                except Exception as exc:  # noqa: BLE001
                    run_problems.append(f"acquire raised {type(exc).__name__}: {exc}")
    run_problems += spy.problems()
    after = snapshot(run)
    outside = changed_outside(before, after, ("a/b/c/d/data",))
    if outside:
        run_problems.append(f"files written outside the data folder: {outside[:10]}")
    if any(sentinel.iterdir()):
        run_problems.append(f"the sentinel folder is not empty: {[p.name for p in sentinel.iterdir()]}")
    new_tmp = sorted(set(token_files(token)) - tmp_before)
    if new_tmp:
        run_problems.append(f"files named after the payload appeared: {new_tmp}")
    if clips is not None and not (clips["sample_id"] == "wlasl-10001").any():
        run_problems.append("the good clip is not in the clip table")
    elif clips is not None and clips.set_index("sample_id").at["wlasl-10001", "status"] != "usable":
        row = clips.set_index("sample_id").loc["wlasl-10001"]
        run_problems.append(f"the good clip was not acquired: {row['reason']}: {row['detail']}")

    row_problems: dict[int, list[str]] = {}
    label_map = json.loads((data / "subset" / "label_map.json").read_text()) if (data / "subset" / "label_map.json").is_file() else {}
    manifest = (pd.read_parquet(data / "manifest" / "manifest.parquet") if (data / "manifest" / "manifest.parquet").is_file()
                else pd.DataFrame(columns=["sample_id", "gloss"]))
    for i, ex in enumerate(expects):
        problems: list[str] = []
        file = str(wlasl if ex.dataset == "wlasl" else msasl / "MSASL_train.json")
        if rejects is None:
            problems.append("no rejects table")
        elif ex.accept_sample:
            hit = rejects[(rejects["file"] == file) & (rejects["row"] == ex.row)]
            if len(hit):
                problems.append(f"accepted row {ex.row} was rejected: {hit.iloc[0].to_dict()}")
            if clips is None or not (clips["sample_id"] == ex.accept_sample).any():
                problems.append(f"{ex.accept_sample} has no clip row")
            else:
                row = clips.set_index("sample_id").loc[ex.accept_sample]
                if row["status"] != "usable":
                    problems.append(f"{ex.accept_sample} not acquired: {row['reason']}: {row['detail']}")
            if ex.gloss:
                got = manifest.set_index("sample_id")["gloss"].get(ex.accept_sample)
                if got != ex.gloss or ex.gloss not in label_map.get("glosses", []):
                    problems.append(f"gloss {ex.gloss!r} came back as {got!r} / label map {label_map.get('glosses')}")
        else:
            hit = rejects[(rejects["file"] == file) & (rejects["row"] == ex.row)]
            if len(hit) != 1:
                problems.append(f"{ex.dataset} {ex.row}: {len(hit)} rejects, expected 1 ({ex.field}: {ex.reason})")
            else:
                r = hit.iloc[0]
                if (r["field"], r["reason"]) != (ex.field, ex.reason) or not r["detail"]:
                    problems.append(f"{ex.dataset} {ex.row}: rejected as ({r['field']!r}, {r['reason']!r}), expected "
                                    f"({ex.field!r}, {ex.reason!r})")
        if problems:
            row_problems[i] = problems
    return AnnotationRun(expects, row_problems, run_problems, rejects, clips, time.monotonic() - started)


# ---- malformed files: file-level rejection

def malformed_files(run: Path, rng: random.Random) -> list[tuple[str, Path, Path, bool, str]]:
    """``(variant, wlasl file, msasl folder, msasl enabled, text the error must contain)`` per malformed file."""
    good = [{"gloss": "book", "instances": [wlasl_instance("10001", "http://127.0.0.1:9/ok/x.mp4")]}]
    text = json.dumps(good, indent=1)
    folder = run / "malformed"
    folder.mkdir(parents=True, exist_ok=True)
    good_wlasl = folder / "good.json"
    good_wlasl.write_text(text)
    msasl_ok = folder / "msasl-ok"
    msasl_ok.mkdir(exist_ok=True)
    for name in ("MSASL_classes.json", "MSASL_synonym.json"):
        (msasl_ok / name).symlink_to(shared_data_dir() / "msasl" / name)
    (msasl_ok / "MSASL_train.json").write_text(json.dumps([msasl_clip("https://youtu.be/ri3NrdgfAtE")]))
    out: list[tuple[str, Path, Path, bool, str]] = []

    def wl(name: str, data: bytes, must: str) -> None:
        f = folder / f"{name}.json"
        f.write_bytes(data)
        out.append((name, f, msasl_ok, False, must))

    cut = rng.randrange(1, len(text) - 1)
    wl("cut", text[:cut].encode(), "malformed JSON at line")
    wl("trailing", (text + rng.choice(["}", "]]", ",", "x", "\x00"])).encode(), "malformed JSON at line")
    wl("latin1", "[{\"gloss\": \"caf\u00e9\", \"instances\": []}]".encode("latin-1"), "not UTF-8")
    wl("object", json.dumps({"gloss": "book", "instances": []}).encode(), "expected a JSON list")
    wl("empty", b"", "malformed JSON at line 1")
    wl("nesting", b"[" * 100_000 + b"]" * 100_000, "nested too deeply")
    for name, content, target, must in [
        ("msasl-cut", json.dumps([msasl_clip("https://youtu.be/x")])[: rng.randrange(2, 40)], "MSASL_train.json",
         "malformed JSON"),
        ("msasl-classes", json.dumps({"0": "hello"}), "MSASL_classes.json", "expected a JSON list"),
        ("msasl-train-object", json.dumps({"clips": []}), "MSASL_train.json", "expected a JSON list"),
    ]:
        m = folder / name
        m.mkdir(exist_ok=True)
        for base in ("MSASL_classes.json", "MSASL_synonym.json", "MSASL_train.json"):
            if base == target:
                (m / base).write_text(content)
            else:
                (m / base).symlink_to((msasl_ok / base).resolve())
        out.append((name, good_wlasl, m, True, must))
    return out


def check_malformed(run: Path, variant: str, wlasl: Path, msasl: Path, msasl_enabled: bool, must: str) -> list[str]:
    """``sldata manifest`` on a malformed file: exit 2 naming the file, no traceback, no output."""
    data = run / f"data-{variant}"
    started = time.monotonic()
    rc, _, err = _run_cli(sldata_main, manifest_argv(data, wlasl, msasl, msasl_enabled))
    problems: list[str] = []
    named = str(wlasl) if not variant.startswith("msasl") else str(msasl)
    if rc != 2:
        problems.append(f"{variant}: exit {rc}, expected 2 ({err.strip()[-300:]})")
    if named not in err or (must and must not in err):
        problems.append(f"{variant}: message does not name the file/problem ({must!r}): {err.strip()[-300:]}")
    if "Traceback" in err:
        problems.append(f"{variant}: traceback: {err[-300:]}")
    if (data / "manifest").exists() and any((data / "manifest").iterdir()):
        problems.append(f"{variant}: output written: {sorted(p.name for p in (data / 'manifest').iterdir())}")
    if time.monotonic() - started > 10:
        problems.append(f"{variant}: took {time.monotonic() - started:.1f} s")
    return problems


def run_inputs(workdir: Path, repeats: int, seed: int, observed: list[AnnotationRun] | None = None) -> list[FaultOutcome]:
    """Category ``hostile_input`` (see the module docs); ``observed`` collects each repeat's :class:`AnnotationRun`."""
    outcomes = {k: FaultOutcome(INPUT, k) for k in INPUT_KINDS}
    rng = random.Random(seed)
    root = workdir / "hostile_input"
    with FaultServer(shared_data_dir() / "wlasl_original_clips" / "videos", seed=seed) as server, cached_parsers():
        for rep in range(repeats):
            run = root / f"{rep:03d}"
            result = run_annotations(run, server, rng)
            if observed is not None:
                observed.append(result)
            for i, ex in enumerate(result.expects):
                problems = result.row_problems.get(i, []) + result.run_problems
                outcomes[ex.kind].record(not problems, 0 if not problems else int(bool(ex.accept_sample)),
                                         f"repeat {rep} {ex.dataset} {ex.row}: " + "; ".join(problems))
            with ShellSpy() as spy:
                for variant, wlasl, msasl, enabled, must in malformed_files(run, rng):
                    problems = check_malformed(run, variant, wlasl, msasl, enabled, must)
                    outcomes["malformed JSON"].record(not problems, 0, f"repeat {rep}: " + "; ".join(problems))
            if spy.problems():
                outcomes["malformed JSON"].record(False, 0, f"repeat {rep}: {spy.problems()}")
            if all(o.survived == o.injected for o in outcomes.values()):
                shutil.rmtree(run, ignore_errors=True)
    return list(outcomes.values())


# =========================================================================== params

PARAMS_KINDS = ("unknown key", "wrong type", "out-of-range value")


def schema_leaves(schema: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    """``(path, schema)`` of every leaf value of the params schema."""
    props = schema.get("properties")
    if schema.get("type") == "object" and isinstance(props, Mapping):
        for key, sub in props.items():
            yield from schema_leaves(sub, prefix + (key,))
    elif prefix:
        yield prefix, schema


def schema_maps(schema: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of every mapping that refuses unknown keys (``additionalProperties: false``)."""
    if schema.get("type") == "object" and isinstance(schema.get("properties"), Mapping):
        if schema.get("additionalProperties") is False:
            yield prefix
        for key, sub in schema["properties"].items():
            yield from schema_maps(sub, prefix + (key,))


def _set(params: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def wrong_type_value(leaf: Mapping[str, Any], rng: random.Random) -> Any:
    kind = leaf.get("type")
    if kind in ("integer", "number"):
        return rng.choice(["lots", [1, 2], {"n": 1}, True])
    if kind == "boolean":
        return rng.choice(["yes please", 1, [True], {"on": True}])
    if kind == "string":
        return rng.choice([12, 3.5, ["a"], {"a": 1}, False])
    return None


def out_of_range_value(leaf: Mapping[str, Any], rng: random.Random) -> Any:
    options: list[Any] = []
    if "minimum" in leaf:
        options.append(leaf["minimum"] - (1 if leaf.get("type") == "integer" else rng.uniform(0.001, 1000)))
    if "exclusiveMinimum" in leaf:
        options.append(leaf["exclusiveMinimum"])
    if "maximum" in leaf:
        options.append(leaf["maximum"] + (1 if leaf.get("type") == "integer" else rng.uniform(0.001, 1000)))
    if "exclusiveMaximum" in leaf:
        options.append(leaf["exclusiveMaximum"])
    if "enum" in leaf and leaf.get("type") == "string":
        options.append("not-an-option-" + "".join(rng.choice("xyz") for _ in range(4)))
    if "pattern" in leaf and leaf.get("type") == "string":
        candidate = rng.choice(["", " ", "..", "$(x)", "\u00e9\u00e9", "x" * 300])
        if not re.search(leaf["pattern"], candidate):
            options.append(candidate)
    return rng.choice(options) if options else _MISSING


def params_mutations(base: dict[str, Any], schema: Mapping[str, Any], rng: random.Random, per_kind: int,
                     ) -> list[tuple[str, str, dict[str, Any]]]:
    """``(kind, dotted key the message must name, mutated params)``, ``per_kind`` of each kind."""
    leaves = [(p, s) for p, s in schema_leaves(schema) if isinstance(s.get("type"), str)]
    ranged = [(p, s) for p, s in leaves if out_of_range_value(s, random.Random(0)) is not _MISSING]
    maps = list(schema_maps(schema))
    out: list[tuple[str, str, dict[str, Any]]] = []
    for _ in range(per_kind):
        path = rng.choice(maps)
        name = rng.choice(["kk", "wrkers", "unknown_" + str(rng.randrange(1000)), "__proto__", "$(id)", "ключ"])
        params = copy.deepcopy(base)
        node = params
        for key in path:
            node = node[key]
        node[name] = rng.choice([1, "x", None, {"a": 1}])
        out.append(("unknown key", ".".join(path) or "(top level)", params))
        path, leaf = rng.choice(leaves)
        params = copy.deepcopy(base)
        _set(params, path, wrong_type_value(leaf, rng))
        out.append(("wrong type", ".".join(path), params))
        value = _MISSING
        while value is _MISSING:  # a pattern leaf may draw only candidates its pattern accepts
            path, leaf = rng.choice(ranged)
            value = out_of_range_value(leaf, rng)
        params = copy.deepcopy(base)
        _set(params, path, value)
        out.append(("out-of-range value", ".".join(path), params))
    return out


def run_params(workdir: Path, repeats: int, seed: int, per_kind: int = 5) -> list[FaultOutcome]:
    """Category ``params``: ``per_kind`` mutations of each kind per repeat through ``sldata check-params``."""
    from sldata.params import load_schema

    outcomes = {k: FaultOutcome(PARAMS, k) for k in PARAMS_KINDS}
    rng = random.Random(seed)
    folder = workdir / "params"
    folder.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    schema = load_schema()
    with cached_parsers():
        _params_repeats(outcomes, folder, base, schema, rng, repeats, per_kind)
    return list(outcomes.values())


_PARSERS: dict[str, Any] = {}


@contextlib.contextmanager
def cached_parsers() -> Iterator[None]:
    """Build the ``sldata`` and ``sltrain`` argument parsers once per process.

    Building one takes seconds (every stage's flags come from the params schema, parsed anew
    for each section); the commands still run through their real ``main``.
    """
    import sldata.cli
    import sltrain.cli

    originals = {m: m.build_parser for m in (sldata.cli, sltrain.cli)}
    for module, build in originals.items():
        parser = _PARSERS.get(module.__name__)
        if parser is None:
            parser = _PARSERS[module.__name__] = build()
        module.build_parser = (lambda p=parser: p)  # type: ignore[misc]
    try:
        yield
    finally:
        for module, build in originals.items():
            module.build_parser = build  # type: ignore[method-assign]


def _params_repeats(outcomes: dict[str, FaultOutcome], folder: Path, base: dict[str, Any], schema: Mapping[str, Any],
                    rng: random.Random, repeats: int, per_kind: int) -> None:
    for rep in range(repeats):
        for i, (kind, key, params) in enumerate(params_mutations(base, schema, rng, per_kind)):
            path = folder / f"params-{rep}-{i}.yaml"
            path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
            started = time.monotonic()
            rc, out, err = _run_cli(sldata_main, ["check-params", "--params", str(path)])
            took = time.monotonic() - started
            problems = []
            if rc != 2:
                problems.append(f"exit {rc}, expected 2")
            if f"{key}:" not in err:
                problems.append(f"message does not name {key!r}: {err.strip()[:300]}")
            if "Traceback" in err:
                problems.append("traceback")
            if took > 5:
                problems.append(f"took {took:.1f} s")
            outcomes[kind].record(not problems, 0, f"repeat {rep} {kind} {key}: " + "; ".join(problems))
            path.unlink(missing_ok=True)


# =========================================================================== checkpoints

CHECKPOINT_KINDS = ("pickle that runs code on load", "tampered byte", "mismatched label map",
                    "mismatched input spec")


class _Exploit:
    """Unpickling this creates ``path`` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _tiny_checkpoint(path: Path, classes: list[str], num_frames: int = 8, points: str = "upper_body_hands") -> Path:
    from sltrain.export import write_untrained_checkpoint

    write_untrained_checkpoint(path, classes, model_config={"d_model": 16, "num_layers": 1, "num_heads": 2},
                               num_frames=num_frames, points=points)
    return path


def _refused_everywhere(ckpt: Path, root: Path, sentinel: Path | None = None) -> list[str]:
    """Load ``ckpt`` through ``load_checkpoint``+``model_from_checkpoint``, ``sltrain evaluate`` and
    ``sltrain export``; each must refuse it with a reason and write nothing."""
    from sltrain.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

    problems: list[str] = []
    try:
        model_from_checkpoint(load_checkpoint(ckpt))
        problems.append("load_checkpoint/model_from_checkpoint accepted it")
    except CheckpointError as exc:
        if "refused" not in str(exc):
            problems.append(f"refusal without a reason: {exc}")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"load raised {type(exc).__name__} instead of CheckpointError: {exc}")
    rc, _, err = _run_cli(sltrain_main, ["evaluate", "--model", str(ckpt), "--packed", str(root / "nopack"),
                                         "--samples", str(root / "nosamples.parquet"), "--splits", "val",
                                         "--params", str(REPO_ROOT / "params.yaml"),
                                         "--out-dir", str(root / "eval")])
    if rc != 2 or "refused" not in err or "Traceback" in err:
        problems.append(f"sltrain evaluate: exit {rc}: {err.strip()[-300:]}")
    rc, _, err = _run_cli(sltrain_main, ["export", str(ckpt), "--params", str(REPO_ROOT / "params.yaml"),
                                         "--out", str(root / "export")])
    if rc not in (1, 2) or "refused" not in err or "Traceback" in err:
        problems.append(f"sltrain export: exit {rc}: {err.strip()[-300:]}")
    for out in (root / "eval", root / "export"):
        written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
        if written:
            problems.append(f"written despite the refusal: {written[:5]}")
    if sentinel is not None and sentinel.exists():
        problems.append(f"code ran: {sentinel} was created")
    return problems


def checkpoint_variants(root: Path, rng: random.Random, good: Path) -> Iterator[tuple[str, str, Path, Path | None]]:
    """``(kind, variant, checkpoint, sentinel)`` of one repeat (files made on demand)."""
    import torch

    from sltrain.checkpoint import save_checkpoint

    token = f"{rng.randrange(16**8):08x}"
    # pickles that would run code
    for variant in ("torch.save zip", "bare pickle", "nested in the weights"):
        sentinel = root / f"ran-{token}-{variant.replace(' ', '_')}"
        path = root / f"evil-{variant.replace(' ', '_')}.pt"
        if variant == "torch.save zip":
            torch.save({"format": "sltrain-checkpoint-v1", "payload": _Exploit(str(sentinel))}, path)
        elif variant == "bare pickle":
            with open(path, "wb") as fh:
                pickle.dump({"format": "sltrain-checkpoint-v1", "payload": _Exploit(str(sentinel))}, fh)
        else:
            ckpt = torch.load(good, weights_only=True)
            key = rng.choice(sorted(ckpt["model_state"]))
            ckpt["model_state"][key] = _Exploit(str(sentinel))
            torch.save(ckpt, path)
        yield "pickle that runs code on load", variant, path, sentinel
    # mismatched label maps, re-saved so that their digest is right: the checks, not the digest, refuse them
    base = torch.load(good, weights_only=True)
    n = len(base["label_map"]["classes"])
    for variant, label_map in [("fewer classes", {"classes": base["label_map"]["classes"][: rng.randint(1, n - 1)]}),
                               ("more classes", {"classes": base["label_map"]["classes"] + ["extra"] * rng.randint(1, 5)}),
                               ("no classes", {"glosses": base["label_map"]["classes"]}),
                               ("not a mapping", rng.choice([["a", "b"], "a,b", 3]))]:
        ckpt = copy.deepcopy(base)
        ckpt["label_map"] = label_map
        path = root / f"labels-{variant.replace(' ', '_')}.pt"
        save_checkpoint(path, ckpt)
        yield "mismatched label map", variant, path, None
    other = _tiny_checkpoint(root / "other-spec.pt", list(base["label_map"]["classes"]), points="all")
    other_spec = torch.load(other, weights_only=True)["input_spec"]
    for variant, spec in [("other points", other_spec),
                          ("missing keys", {k: v for k, v in base["input_spec"].items() if k != "points"}),
                          ("unknown points", {**base["input_spec"], "points": ["nose", "tail"]}),
                          ("not a mapping", rng.choice([[1, 2], "spec", None]))]:
        ckpt = copy.deepcopy(base)
        ckpt["input_spec"] = spec
        path = root / f"spec-{variant.replace(' ', '_')}.pt"
        save_checkpoint(path, ckpt)
        yield "mismatched input spec", variant, path, None


def flip_checks(good: Path, root: Path, rng: random.Random, flips: int) -> list[list[str]]:
    """Problems of ``flips`` single-bit flips of ``good``: each refused, or loaded identical."""
    import torch

    from sltrain.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, payload_digest

    data = good.read_bytes()
    reference = torch.load(good, weights_only=True)
    ref_digest = payload_digest(reference)
    results: list[list[str]] = []
    for i in range(flips):
        pos, bit = rng.randrange(len(data)), rng.randrange(8)
        raw = bytearray(data)
        raw[pos] ^= 1 << bit
        path = root / f"flip-{i}.pt"
        path.write_bytes(bytes(raw))
        problems: list[str] = []
        try:
            ckpt = load_checkpoint(path)
            model_from_checkpoint(ckpt)
        except CheckpointError as exc:
            if "refused" not in str(exc):
                problems.append(f"byte {pos} bit {bit}: refusal without a reason: {exc}")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"byte {pos} bit {bit}: {type(exc).__name__} instead of CheckpointError: {exc}")
        else:
            same = payload_digest(ckpt) == ref_digest and all(
                torch.equal(ckpt["model_state"][k], reference["model_state"][k]) for k in reference["model_state"])
            if not same:
                problems.append(f"byte {pos} bit {bit}: a changed checkpoint was loaded")
        path.unlink(missing_ok=True)
        results.append(problems)
    return results


def tamper_export(src: Path, dst: Path, key: str, value: Any) -> Path:
    """Copy an exported model version folder with runtime-info ``key`` replaced by ``value``."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(src / "model.xml"))
    model.set_rt_info(json.dumps(value, sort_keys=True), ["sltrain", key])
    dst.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(dst / "model.xml"), compress_to_fp16=False)
    return dst


def export_checks(model_version: Path, root: Path, rng: random.Random) -> list[tuple[str, str, list[str]]]:
    """Exported models whose label map or input spec do not fit the IR, through ``sltrain predict``."""
    meta = json.loads((model_version / "sltrain.json").read_text())
    video = shared_data_dir() / "wlasl100_clips" / "videos" / "32146.mp4"
    classes = list(meta["label_map"]["classes"])
    out: list[tuple[str, str, list[str]]] = []
    for kind, variant, key, value in [
        ("mismatched label map", "exported, fewer classes", "label_map",
         {**meta["label_map"], "classes": classes[: rng.randint(1, len(classes) - 1)]}),
        ("mismatched input spec", "exported, other num_frames", "input_spec",
         {**meta["input_spec"], "num_frames": int(meta["input_spec"]["num_frames"]) + rng.randint(1, 16)}),
    ]:
        folder = tamper_export(model_version, root / f"export-{key}", key, value)
        rc, out_text, err = _run_cli(sltrain_main, ["predict", "--model", str(folder), str(video)])
        problems = []
        if rc != 2 or "error:" not in err or "Traceback" in err or out_text.strip():
            problems.append(f"sltrain predict: exit {rc}: {err.strip()[-300:]}")
        out.append((kind, variant, problems))
    return out


def run_checkpoints(workdir: Path, repeats: int, seed: int, flips: int = 8,
                    model_version: Path | None = None) -> list[FaultOutcome]:
    """Category ``checkpoint`` (see the module docs)."""
    outcomes = {k: FaultOutcome(CHECKPOINT, k) for k in CHECKPOINT_KINDS}
    rng = random.Random(seed)
    folder = workdir / "checkpoint"
    with cached_parsers():
        _checkpoint_repeats(outcomes, folder, rng, repeats, flips, model_version)
    return list(outcomes.values())


def _checkpoint_repeats(outcomes: dict[str, FaultOutcome], folder: Path, rng: random.Random, repeats: int, flips: int,
                        model_version: Path | None) -> None:
    for rep in range(repeats):
        root = folder / f"{rep:03d}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        good = _tiny_checkpoint(root / "good.pt", ["book", "drink", "computer", "before"], num_frames=8 + rep % 4)
        for kind, variant, path, sentinel in checkpoint_variants(root, rng, good):
            problems = _refused_everywhere(path, root / f"out-{path.stem}", sentinel)
            outcomes[kind].record(not problems, 0, f"repeat {rep} {variant}: " + "; ".join(problems))
        for problems in flip_checks(good, root, rng, flips):
            outcomes["tampered byte"].record(not problems, 0, f"repeat {rep}: " + "; ".join(problems))
        if model_version is not None:
            for kind, variant, problems in export_checks(model_version, root, rng):
                outcomes[kind].record(not problems, 0, f"repeat {rep} {variant}: " + "; ".join(problems))
        if all(o.survived == o.injected for o in outcomes.values()):
            shutil.rmtree(root, ignore_errors=True)


# =========================================================================== serve

SERVE_KINDS = ("oversized upload", "slow upload", "malformed request", "many uploads at once")
SERVE_LIMITS = {"max_bytes": 2_000_000, "max_seconds": 10.0, "max_concurrent": 2, "read_timeout": 4.0}
SERVE_RSS_BOUND_BYTES = 256 * 1024 * 1024
"""Most the server's resident memory may grow over a whole run (bodies are streamed to disk in
64 KiB chunks, so no upload size or count may show up here)."""
CONCURRENT = 16
MALLOC_ARENA_MAX = "2"
"""The server runs with glibc's ``MALLOC_ARENA_MAX=2``: without it every new request thread may get
a malloc arena of its own (up to 8 per core), so resident memory climbs for a while with *good*
traffic alone (measured here: about 60 MB per prediction thread up to ~1.3 GB, then flat) and the
growth could not be told from a leak. Deployments may want the same setting.
"""
WARMUP_ROUNDS = 4
"""Rounds of concurrent good uploads before the memory baseline is taken."""
GOOD_CLIP = "32146.mp4"


def serve_time_bound(limits: Mapping[str, float] = SERVE_LIMITS) -> float:
    """Longest any faulty request may take to be answered: the header deadline plus the body
    deadline (each ``read_timeout``) plus 3 s of slack for a busy machine."""
    return 2 * limits["read_timeout"] + 3.0


class ServeProcess:
    """``python -m sltrain serve`` in a subprocess on a free port (a context manager)."""

    def __init__(self, model: Path, log: Path, limits: Mapping[str, float] = SERVE_LIMITS) -> None:
        self.model, self.log, self.limits = model, log, dict(limits)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> ServeProcess:
        argv = [sys.executable, "-m", "sltrain", "serve", "--model", str(self.model), "--port", "0",
                "--max-bytes", str(int(self.limits["max_bytes"])), "--max-seconds", str(self.limits["max_seconds"]),
                "--max-concurrent", str(int(self.limits["max_concurrent"])),
                "--read-timeout", str(self.limits["read_timeout"])]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "MALLOC_ARENA_MAX": MALLOC_ARENA_MAX}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log, "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log_fh, env=env, cwd=REPO_ROOT)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(rb"on http://[\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            self.__exit__()
            raise RuntimeError(f"sltrain serve did not start: {line!r}; see {self.log}")
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        return self

    def _drain_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_fh.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> tuple[int, int]:
        """``(VmRSS, VmHWM)`` of the server process in bytes."""
        assert self.proc is not None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
        return fields.get("VmRSS", 0), fields.get("VmHWM", 0)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 60) -> tuple[int, dict[str, Any], dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            try:
                payload = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                payload = {"raw": raw[:200].decode("latin-1")}
            return resp.status, payload, dict(resp.getheaders())
        finally:
            conn.close()

    def raw(self, chunks: list[bytes], gap_s: float = 0.0, timeout: float = 30) -> tuple[bytes, float]:
        """Send ``chunks`` on a raw socket (``gap_s`` apart), then read the answer; ``(answer, seconds)``."""
        started = time.monotonic()
        answer = b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            try:
                for chunk in chunks:
                    sock.sendall(chunk)
                    if gap_s:
                        time.sleep(gap_s)
                        sock.setblocking(False)
                        with contextlib.suppress(BlockingIOError, InterruptedError):
                            answer += sock.recv(65536)
                        sock.setblocking(True)
                        sock.settimeout(timeout)
                        if answer:
                            break
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                while True:
                    part = sock.recv(65536)
                    if not part:
                        break
                    answer += part
        return answer, time.monotonic() - started


def _status_of(answer: bytes) -> int:
    """The status code of a raw answer; the stdlib answers an unparsable request line the HTTP/0.9
    way, with its HTML error page and no status line, so the page's ``Error code`` counts too."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", answer) or re.search(rb"Error code: (\d{3})", answer)
    return int(m.group(1)) if m else 0


def _reason_of(answer: bytes) -> str:
    """The reason a raw answer gives: the JSON ``error`` code, else the HTML page's message."""
    head, _, body = answer.partition(b"\r\n\r\n")
    if not answer.startswith(b"HTTP/"):
        head, body = b"", answer
    try:
        payload = json.loads(body.split(b"HTTP/1.", 1)[0] or b"{}")
        return str(payload.get("error") or payload.get("detail") or "")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        m = re.search(rb"Message: ([^<]+)", body)
        if m:
            return m.group(1).decode("latin-1").strip()
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        return first[13:] if len(first) > 13 else ""


def serve_faults(srv: ServeProcess, rng: random.Random, clip: bytes) -> dict[str, list[tuple[str, list[str]]]]:
    """Inject every serve fault once; ``{kind: [(variant, problems), ...]}``."""
    limits, bound = srv.limits, serve_time_bound(srv.limits)
    max_bytes = int(limits["max_bytes"])
    out: dict[str, list[tuple[str, list[str]]]] = {k: [] for k in SERVE_KINDS}

    def expect(kind: str, variant: str, answer: bytes, seconds: float, statuses: set[int]) -> None:
        problems = []
        status = _status_of(answer)
        if status not in statuses:
            problems.append(f"status {status}, expected {sorted(statuses)}: {answer[:200]!r}")
        elif not _reason_of(answer):
            problems.append(f"no reason in {answer[:300]!r}")
        if seconds > bound:
            problems.append(f"answered after {seconds:.1f} s, bound {bound:.1f} s")
        out[kind].append((variant, problems))

    head = lambda n, extra="": (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n{extra}\r\n").encode()  # noqa: E731
    # oversized: honest length, lying length, a huge declared length with only a little sent
    size = max_bytes + rng.randint(1, 5 * max_bytes)
    answer, secs = srv.raw([head(size)] + [rng.randbytes(65536)] * (size // 65536 + 1))
    expect("oversized upload", "honest Content-Length", answer, secs, {413})
    answer, secs = srv.raw([head(10**15), rng.randbytes(rng.randint(1, 100_000))])
    expect("oversized upload", "absurd Content-Length", answer, secs, {413})
    lie = rng.randint(1000, 5000)
    answer, secs = srv.raw([head(lie), rng.randbytes(3 * max_bytes)])
    expect("oversized upload", "body longer than its Content-Length", answer, secs, {400, 413, 415, 422})
    # slow: a body trickled below any socket timeout, headers trickled the same way, a stalled body
    n = rng.randint(2000, 20000)
    answer, secs = srv.raw([head(n)] + [b"x"] * 200, gap_s=limits["read_timeout"] / 4)
    expect("slow upload", "body trickled", answer, secs, {408})
    request_head = head(n)
    answer, secs = srv.raw([request_head[i:i + 1] for i in range(len(request_head))], gap_s=limits["read_timeout"] / 4)
    expect("slow upload", "headers trickled", answer, secs, {408})
    answer, secs = srv.raw([head(n), b"x" * rng.randint(1, n - 1)])
    expect("slow upload", "body stalls", answer, secs, {400, 408})
    # malformed requests
    boundary = "----x" + str(rng.randrange(10**9))
    # a form (which serve takes) whose video is a text field, not a file: refused as holding no video
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"\r\n\r\n").encode() + clip + \
        f"\r\n--{boundary}--\r\n".encode()
    for variant, chunks, statuses in [
        ("multipart form without a file", [head(len(form), f"Content-Type: multipart/form-data; boundary={boundary}\r\n"),
                                           form], {400}),
        ("JSON body", [head(60, "Content-Type: application/json\r\n"),
                       json.dumps({"video": "AAAA" * 10, "url": "file:///etc/passwd"})[:60].ljust(60).encode()], {415}),
        ("chunked body", [b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
         {411}),
        ("no Content-Length", [b"POST /predict HTTP/1.1\r\nHost: x\r\n\r\n"], {400}),
        ("Content-Length not a number", [head(0).replace(b"Content-Length: 0", b"Content-Length: " +
                                                         rng.choice([b"abc", b"1e9", b"0x10", b"-"]))], {400}),
        ("negative Content-Length", [head(-rng.randint(1, 10**6))], {400}),
        ("garbage request line", [rng.randbytes(64).replace(b"\n", b"") + b"\r\n\r\n"], {400}),
        ("request line too long", [b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"], {414}),
        ("too many headers", [b"POST /predict HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n"],
         {431}),
        ("unknown path", [b"POST /../../etc/passwd HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"], {404}),
        ("video that is not one", [head(4096), rng.randbytes(4096)], {415}),
    ]:
        answer, secs = srv.raw(chunks)
        expect("malformed request", variant, answer, secs, statuses)
    # many at once: good and bad uploads together
    def one(i: int) -> tuple[int, dict[str, Any], dict[str, str], float]:
        started = time.monotonic()
        body = clip if i % 2 == 0 else bodies[i]
        try:
            status, payload, headers = srv.request("POST", "/predict", body, timeout=120)
        except OSError as exc:  # a reset or a timeout instead of an answer
            status, payload, headers = 0, {"exception": repr(exc)}, {}
        return status, payload, headers, time.monotonic() - started

    bodies = [rng.randbytes(rng.randint(1, 50_000)) for _ in range(CONCURRENT)]

    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(one, range(CONCURRENT)))
    for i, (status, payload, headers, secs) in enumerate(answers):
        problems = []
        good = i % 2 == 0
        allowed = {200, 503} if good else {415, 503}
        if status not in allowed:
            problems.append(f"upload {i}: status {status} {payload}")
        elif status == 503 and (payload.get("error") != "busy" or headers.get("Retry-After") != "1"):
            problems.append(f"upload {i}: 503 without busy/Retry-After: {payload} {headers}")
        elif status == 200 and len(payload.get("top", [])) != 5:
            problems.append(f"upload {i}: 200 without a top-5: {payload}")
        elif status not in (200, 503) and not payload.get("error"):
            problems.append(f"upload {i}: {status} without a reason")
        if secs > 60:
            problems.append(f"upload {i}: answered after {secs:.1f} s")
        out["many uploads at once"].append((f"upload {i} ({'video' if good else 'noise'})", problems))
    if not any(a[0] == 200 for a in answers[::2]):
        out["many uploads at once"].append(("at least one good upload answered", ["every good upload was refused"]))
    return out


def healthy(srv: ServeProcess, clip: bytes) -> list[str]:
    """The server still answers ``/health`` and a good upload with 200."""
    problems = []
    if not srv.alive():
        return ["the server process died"]
    try:
        status, payload, _ = srv.request("GET", "/health", timeout=20)
        if status != 200 or payload.get("status") != "ok":
            problems.append(f"/health answered {status} {payload}")
        for _ in range(3):  # a slot may still be held for a moment by a request just refused
            status, payload, _ = srv.request("POST", "/predict", clip, timeout=60)
            if status != 503:
                break
            time.sleep(0.5)
        if status != 200 or len(payload.get("top", [])) != 5:
            problems.append(f"a good upload got {status} {payload}")
    except OSError as exc:
        problems.append(f"no answer: {exc}")
    return problems


def warm_up(srv: ServeProcess, clip: bytes, rounds: int = WARMUP_ROUNDS) -> list[str]:
    """Good uploads, ``max_concurrent`` at a time, until memory settles; problems if they fail."""
    problems = healthy(srv, clip)
    n = int(srv.limits["max_concurrent"])
    for _ in range(rounds):
        with ThreadPoolExecutor(n) as pool:
            statuses = list(pool.map(lambda _: srv.request("POST", "/predict", clip, timeout=120)[0], range(n)))
        if 200 not in statuses:
            problems.append(f"warm-up uploads answered {statuses}")
    return problems


def run_serve(workdir: Path, repeats: int, seed: int, model_dir: Path | None = None) -> list[FaultOutcome]:
    """Category ``serve`` (see the module docs). ``model_dir``: an exported model (made if None)."""
    from bench.faults.media import export_small_model

    outcomes = {k: FaultOutcome(SERVE, k) for k in SERVE_KINDS}
    rng = random.Random(seed)
    folder = workdir / "serve"
    model_dir = model_dir or export_small_model(folder / "model")
    clip = (shared_data_dir() / "wlasl100_clips" / "videos" / GOOD_CLIP).read_bytes()
    with ServeProcess(model_dir, folder / "serve.log") as srv:
        warm = warm_up(srv, clip)
        _, peak0 = srv.rss()
        for rep in range(repeats):
            results = serve_faults(srv, rng, clip)
            after = healthy(srv, clip)
            rss, peak = srv.rss()
            grown = max(rss, peak) - peak0
            run_level = list(warm) + [f"afterwards: {p}" for p in after]
            if grown > SERVE_RSS_BOUND_BYTES:
                run_level.append(f"server memory grew by {grown / 2**20:.0f} MiB over its peak under good traffic "
                                 f"(bound {SERVE_RSS_BOUND_BYTES / 2**20:.0f} MiB)")
            for kind, items in results.items():
                for variant, problems in items:
                    problems = problems + run_level
                    outcomes[kind].record(not problems, 0, f"repeat {rep} {variant}: " + "; ".join(problems))
    return list(outcomes.values())


# =========================================================================== the module


def run(workdir: Path, repeats: int, seed: int, categories: Sequence[str] | None = None) -> list[FaultOutcome]:
    """Every category of this module: hostile annotation input, params, checkpoints, serve.

    Parameters
    ----------
    workdir
        Scratch folder.
    repeats
        Repeats of each category (each repeat draws new seeded variants).
    seed
        Seed of everything random.
    categories
        Run only these of :data:`CATEGORIES` (default all).
    """
    from bench.faults.media import export_small_model

    wanted = set(categories or CATEGORIES)
    workdir = Path(workdir) / "hostile"
    workdir.mkdir(parents=True, exist_ok=True)
    model = export_small_model(workdir / "model") if wanted & {CHECKPOINT, SERVE} else None
    outcomes: list[FaultOutcome] = []
    with cached_parsers():
        if INPUT in wanted:
            outcomes += run_inputs(workdir, repeats, seed)
        if PARAMS in wanted:
            outcomes += run_params(workdir, repeats, seed)
        if CHECKPOINT in wanted:
            outcomes += run_checkpoints(workdir, repeats, seed, model_version=model / "1" if model else None)
    if SERVE in wanted:
        outcomes += run_serve(workdir, repeats, seed, model_dir=model)
    return outcomes


__all__ = ["run", "run_inputs", "run_params", "run_checkpoints", "run_serve", "ShellSpy", "snapshot",
           "changed_outside", "serve_time_bound", "SERVE_RSS_BOUND_BYTES"]
