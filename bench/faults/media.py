"""Corrupt media through every stage that reads video: each is rejected or handled, with a reason.

Fault kinds (category ``corrupt_media``), one :class:`~bench.faults.common.FaultOutcome` each:

==============================  ==================================================================
kind                            the file
==============================  ==================================================================
``zero-byte file``              an empty ``.mp4``
``truncated MP4``               a real WLASL100 clip cut at a seeded 20-80 % of its bytes; even
                                repeats cut the clip as distributed (index at the end), odd ones a
                                fast-start remux of it (index first, so it opens)
``JPEG named .mp4``             a JPEG image with a video's name
``text named .mp4``             a few lines of text with a video's name
``audio-only file``             an AAC track in an MP4 container, no video stream
``first frames undecodable``    a real clip whose first 1-3 (seeded) video packets are overwritten
                                with random bytes, container and index intact
``huge resolution``             an 8000x8000, two-frame H.264 video made with PyAV (about 0.5 MB)
``one-frame video``             a seeded frame of a real clip, as a one-frame H.264 video
==============================  ==================================================================

Every repeat makes the eight files (PyAV, in the work folder; nothing is committed) and runs them,
together with a good real clip, through:

1. **acquire** (:func:`sldata.acquire.stage.acquire_shard`) with the files in a pretrimmed local
   store: every file is probed; the clip table must hold every clip, ``usable`` or ``failed`` with
   a reason and a detail, and the kinds in :data:`MUST_REJECT_AT_ACQUIRE` must be ``failed``;
2. **frames** (:func:`sldata.frames.extract_frames_shard`), **pose**
   (:func:`sldata.pose.extract.extract_pose_shard`, MediaPipe) and **hand crops**
   (:func:`sldata.pose.handcrop_stage.hand_crops_shard`), each fed *all* the files as if they were
   usable clips (defence in depth: a stage must not trust its input): every clip has a row, ``ok``
   with frames or not ``ok`` with a reason, and files without any decodable frame are never ``ok``;
3. **predict** (``python -m sltrain predict --json``, run in-process through
   :func:`sltrain.predict.main_predict`) with a small exported model: one JSON line per file,
   either a top-5 or an error code with a detail, exit status 1 (some files failed), no traceback.

An injection (one bad file in one repeat) is survived when every stage returned normally, handled
the file as above, and produced the good clip's output in the same run. ``lost`` counts the
stage outputs missing for the file and for the good clip.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.faults.common import FaultOutcome
from bench.faults.network import shared_data_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


def params_section(name: str, *drop: str) -> dict[str, Any]:
    """Section ``name`` of the committed params.yaml (settings have no defaults of their own), less ``drop``."""
    import yaml

    section = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())[name]
    return {k: v for k, v in section.items() if k not in drop}

CATEGORY = "corrupt_media"

GOOD_ID = "32146"
"""The good real WLASL100 clip of every run (24 frames, 16 kB, a signer in view)."""
SOURCE_ID = "00632"
"""The real WLASL100 clip the corrupt files are made from."""
HUGE_SIZE = 8000

KINDS: tuple[str, ...] = (
    "zero-byte file",
    "truncated MP4",
    "JPEG named .mp4",
    "text named .mp4",
    "audio-only file",
    "first frames undecodable",
    "huge resolution",
    "one-frame video",
)
MUST_REJECT_AT_ACQUIRE = frozenset(KINDS[:6])
"""Kinds the acquire stage's probe must refuse (the other two are valid, if odd, videos)."""
NO_FRAMES = frozenset({"zero-byte file", "JPEG named .mp4", "text named .mp4", "audio-only file"})
"""Kinds no video stage may mark ``ok`` (frames, pose, crops); a JPEG is one image, so the
frame and pose stages may decode it, but acquisition must not take it for a video."""
NO_FRAMES_STRICT = frozenset({"zero-byte file", "text named .mp4", "audio-only file"})


def _slug(kind: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in kind).strip("_")


# --------------------------------------------------------------------------- making the files


def _encode(path: Path, frames: list[np.ndarray], fps: int = 25, options: dict[str, str] | None = None,
            fmt: str = "rgb24") -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options=options or {})
        h, w = frames[0].shape[:2] if fmt == "rgb24" else (frames[0].shape[0] * 2 // 3, frames[0].shape[1])
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format=fmt)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_huge(path: Path, size: int = HUGE_SIZE, frames: int = 2) -> Path:
    """An H.264 video of ``frames`` flat ``size`` x ``size`` frames (x264 ultrafast: ~0.5 MB, seconds)."""
    planes = []
    for i in range(frames):
        yuv = np.full((size * 3 // 2, size), 128, np.uint8)
        yuv[:size] = 60 + 40 * i
        planes.append(yuv)
    _encode(path, planes, options={"preset": "ultrafast"}, fmt="yuv420p")
    return path


def make_audio_only(path: Path, seconds: float = 0.6) -> Path:
    """An MP4 holding only an AAC track of silence."""
    import av

    rate = 16000
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for i in range(int(seconds * rate / 1024) + 1):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def faststart_remux(src: Path, dst: Path) -> Path:
    """``src`` remuxed with its index (``moov``) first, as a web server would serve it."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"}) as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)
    return dst


def corrupt_first_packets(src: Path, dst: Path, n: int, rng: random.Random) -> Path:
    """Copy ``src`` with the bytes of its first ``n`` video packets replaced by random bytes."""
    import av

    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        spans = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.pos is not None and p.size][:n]
    for pos, size in spans:
        data[pos : pos + size] = rng.randbytes(size)
    dst.write_bytes(bytes(data))
    return dst


def one_frame(src: Path, dst: Path, index: int) -> Path:
    """Frame ``index`` of ``src`` as a one-frame H.264 video."""
    import av

    with av.open(str(src)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            image = frame.to_ndarray(format="rgb24")
            if i >= index:
                break
    _encode(dst, [image])
    return dst


def make_bad_files(folder: Path, rep: int, rng: random.Random, huge: Path) -> dict[str, Path]:
    """The eight corrupt files of one repeat, named ``<id>.mp4`` in ``folder``."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    clips = shared_data_dir() / "wlasl100_clips" / "videos"
    source = clips / f"{SOURCE_ID}.mp4"
    files: dict[str, Path] = {}

    def name(kind: str) -> Path:
        return folder / f"bad{KINDS.index(kind)}.mp4"

    files["zero-byte file"] = name("zero-byte file")
    files["zero-byte file"].write_bytes(b"")
    base = source if rep % 2 == 0 else faststart_remux(source, folder / "faststart.tmp.mp4")
    data = base.read_bytes()
    files["truncated MP4"] = name("truncated MP4")
    files["truncated MP4"].write_bytes(data[: int(len(data) * rng.uniform(0.2, 0.8))])
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), rng.randrange(256), np.uint8))
    assert ok
    files["JPEG named .mp4"] = name("JPEG named .mp4")
    files["JPEG named .mp4"].write_bytes(jpeg.tobytes())
    files["text named .mp4"] = name("text named .mp4")
    files["text named .mp4"].write_text("sign language clip\nthis is not a video\n" * rng.randint(1, 50))
    files["audio-only file"] = make_audio_only(name("audio-only file"))
    files["first frames undecodable"] = corrupt_first_packets(source, name("first frames undecodable"),
                                                              rng.randint(1, 3), rng)
    files["huge resolution"] = name("huge resolution")
    shutil.copyfile(huge, files["huge resolution"])
    files["one-frame video"] = one_frame(clips / f"{GOOD_ID}.mp4", name("one-frame video"), rng.randrange(24))
    (folder / "faststart.tmp.mp4").unlink(missing_ok=True)
    return files


# --------------------------------------------------------------------------- the stages


@dataclass
class StageCheck:
    """Per stage: problems per sample id (empty list = handled), and rows missing."""

    name: str
    problems: dict[str, list[str]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    error: str = ""

    def flag(self, sid: str, why: str) -> None:
        self.problems.setdefault(sid, []).append(f"{self.name}: {why}")


def _present(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_acquire(ids: dict[str, str], good: str, root: Path) -> StageCheck:
    """Acquire the clips from a pretrimmed store holding the files (see the module docs)."""
    from sldata.acquire.stage import AcquireSettings, acquire_shard

    check = StageCheck("acquire")
    samples = pd.DataFrame([
        dict(sample_id=f"wlasl-{oid}", original_id=oid, dataset="wlasl", split="train", label=0, gloss="g",
             signer_id=1, source_key=f"url-{i:016d}", url=f"https://example.org/{oid}.mp4", start_s=0.0, end_s=None)
        for i, oid in enumerate([*ids.values(), good])
    ])
    settings = AcquireSettings.from_dict({**params_section("acquire"), "network": False,
                                          "local_store": {"dir": str(root / "store"), "pretrimmed": True}})
    try:
        table = acquire_shard(samples, 0, 1, root / "acquire", root / "cache", settings, progress=False)
    except Exception as exc:
        check.error = f"acquire_shard raised {type(exc).__name__}: {exc}"
        return check
    by_id = {str(r["sample_id"]): r for r in table.to_dict("records")}
    kind_of = {f"wlasl-{oid}": kind for kind, oid in ids.items()}
    for sid in samples["sample_id"]:
        row = by_id.get(sid)
        if row is None:
            check.missing.add(sid)
            continue
        if row["status"] == "usable":
            if sid == f"wlasl-{good}" or kind_of.get(sid) not in MUST_REJECT_AT_ACQUIRE:
                clip = row["clip_path"]
                if not (_present(clip) and Path(clip).is_file() and Path(clip).stat().st_size > 0):
                    check.flag(sid, f"usable without a clip file ({clip})")
            else:
                check.flag(sid, "a corrupt file was accepted as usable")
        elif row["status"] == "failed":
            if not (_present(row["reason"]) and _present(row["detail"])) or row["reason"] == "unknown":
                check.flag(sid, f"failed without a typed reason and detail: {row['reason']!r} {row['detail']!r}")
            if sid == f"wlasl-{good}":
                check.flag(sid, f"the good clip failed: {row['reason']}: {row['detail']}")
        else:
            check.flag(sid, f"unknown status {row['status']!r}")
    return check


def _direct_clips(files: dict[str, Path]) -> pd.DataFrame:
    """Every file as an ``ok`` clip (stages are fed what acquisition would refuse)."""
    return pd.DataFrame({"sample_id": list(files), "clip_path": [str(p) for p in files.values()], "status": "ok"})


def _check_index(check: StageCheck, rows: pd.DataFrame, files: dict[str, Path], kinds: dict[str, str], good: str,
                 ok_statuses: tuple[str, ...], length_col: str, never_ok: frozenset[str]) -> None:
    by_id = {str(r["sample_id"]): r for r in rows.to_dict("records")}
    for sid in files:
        row = by_id.get(sid)
        if row is None:
            check.missing.add(sid)
            continue
        status = row["status"]
        if status in ok_statuses:
            if not (row[length_col] or 0) > 0:
                check.flag(sid, f"status {status!r} but no frames")
            if kinds.get(sid) in never_ok:
                check.flag(sid, f"{kinds[sid]} marked {status!r}")
        else:
            why = row.get("reason") if _present(row.get("reason")) else row.get("detail")
            if not _present(why):
                check.flag(sid, f"status {status!r} without a reason")
            if sid == good:
                check.flag(sid, f"the good clip is {status!r}: {why}")


def check_frames(files: dict[str, Path], kinds: dict[str, str], good: str, root: Path) -> StageCheck:
    from sldata.frames import FrameSettings, extract_frames_shard

    check = StageCheck("frames")
    try:
        extract_frames_shard(_direct_clips(files), root / "frames", FrameSettings.from_dict({**params_section("frames", "workers"), "size": 64}), progress=False, workers=1)
        index = pd.read_parquet(root / "frames" / "index.parquet")
    except Exception as exc:
        check.error = f"extract_frames_shard raised {type(exc).__name__}: {exc}"
        return check
    _check_index(check, index, files, kinds, good, ("ok",), "length", NO_FRAMES_STRICT)
    return check


def check_pose(files: dict[str, Path], kinds: dict[str, str], good: str, root: Path) -> StageCheck:
    from sldata.pose.extract import PoseSettings, extract_pose_shard
    from sldata.pose.store import read_pose_shard

    check = StageCheck("pose")
    try:
        extract_pose_shard(_direct_clips(files), root / "pose.parquet", PoseSettings.from_dict({**params_section("pose"), "workers": 1, "frame_step": 2}),
                           progress=False)
        clips, _, _ = read_pose_shard(root / "pose.parquet")
    except Exception as exc:
        check.error = f"extract_pose_shard raised {type(exc).__name__}: {exc}"
        return check
    _check_index(check, clips, files, kinds, good, ("ok", "no_person"), "num_frames", NO_FRAMES_STRICT)
    return check


def check_hand_crops(files: dict[str, Path], kinds: dict[str, str], good: str, root: Path) -> StageCheck:
    from sldata.pose.handcrop_stage import HandCropStageSettings, hand_crops_shard

    check = StageCheck("hand crops")
    if not (root / "pose.parquet").is_file():
        check.error = "no pose shard to crop from"
        return check
    try:
        hand_crops_shard(_direct_clips(files), root / "pose.parquet", root / "crops", HandCropStageSettings.from_dict({**params_section("hand_crops"), "workers": 1}),
                         progress=False)
        index = pd.read_parquet(root / "crops" / "index.parquet")
    except Exception as exc:
        check.error = f"hand_crops_shard raised {type(exc).__name__}: {exc}"
        return check
    _check_index(check, index, files, kinds, good, ("ok",), "length", NO_FRAMES)
    return check


def check_predict(files: dict[str, Path], kinds: dict[str, str], good: str, model_dir: Path) -> StageCheck:
    """``python -m sltrain predict --json`` in-process: one JSON line per file, exit 1."""
    from sltrain.predict import main_predict

    check = StageCheck("predict")
    args = argparse.Namespace(videos=[str(p) for p in files.values()], model=str(model_dir), top_k=5, device="CPU",
                              json=True)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main_predict(args)
    except BaseException as exc:  # noqa: BLE001 - SystemExit included: the CLI must not die
        check.error = f"predict raised {type(exc).__name__}: {exc}"
        return check
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    by_path = {str(d.get("path")): d for d in lines}
    if rc != 1:
        check.error = f"predict exited {rc}, expected 1 (some files fail)"
    if "Traceback" in err.getvalue():
        check.error = "predict printed a traceback"
    for sid, path in files.items():
        d = by_path.get(str(path))
        if d is None:
            check.missing.add(sid)
        elif "error" in d:
            if not (_present(d["error"]) and _present(d.get("detail"))):
                check.flag(sid, f"error without a reason: {d}")
            if sid == good:
                check.flag(sid, f"the good clip failed: {d['error']}: {d.get('detail')}")
            if d["error"] == "error":
                check.flag(sid, f"unclassified error: {d.get('detail')}")
        elif len(d.get("top", [])) != 5:
            check.flag(sid, f"no top-5: {d}")
        elif kinds.get(sid) in NO_FRAMES_STRICT:
            check.flag(sid, f"{kinds[sid]} got a prediction")
    return check


def export_small_model(root: Path) -> Path:
    """A small untrained pose model exported like the pipeline does (its predictions mean nothing)."""
    from sltrain.export import export_model, write_untrained_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    write_untrained_checkpoint(root / "model.pt", ["book", "drink", "computer", "before", "chair", "go"],
                               model_config={"d_model": 32, "num_layers": 1, "num_heads": 2}, num_frames=32)
    export_model(root / "model.pt", root / "repo", overwrite=True)
    return root / "repo" / "sign-recognizer"


# --------------------------------------------------------------------------- the module


@dataclass
class RepeatResult:
    """Everything one repeat observed, for the tests' direct assertions."""

    files: dict[str, Path]
    stages: list[StageCheck]
    seconds: float

    def problems(self, kind: str | None = None) -> list[str]:
        sid = "good" if kind is None else _slug(kind)
        out: list[str] = []
        for st in self.stages:
            if st.error:
                out.append(f"{st.name}: {st.error}")
            out += st.problems.get(sid, []) + st.problems.get(f"wlasl-{sid}", [])
            if sid in st.missing or f"wlasl-{sid}" in st.missing:
                out.append(f"{st.name}: no output row")
        return out

    def missing(self, kind: str | None = None) -> int:
        sid = "good" if kind is None else _slug(kind)
        return sum(1 for st in self.stages if sid in st.missing or f"wlasl-{sid}" in st.missing)


STAGES: tuple[str, ...] = ("acquire", "frames", "pose", "hand crops", "predict")


def run_repeat(root: Path, rep: int, rng: random.Random, huge: Path, model_dir: Path | None,
               stages: tuple[str, ...] = STAGES) -> RepeatResult:
    """Make the bad files of one repeat and push them, with the good clip, through ``stages``."""
    started = time.monotonic()
    shutil.rmtree(root, ignore_errors=True)
    made = make_bad_files(root / "made", rep, rng, huge)
    good_src = shared_data_dir() / "wlasl100_clips" / "videos" / f"{GOOD_ID}.mp4"
    # stage inputs named by a slug of the kind, so every output row says which fault it is
    files: dict[str, Path] = {}
    store = root / "store"
    store.mkdir(parents=True)
    for kind, path in made.items():
        files[_slug(kind)] = path
        (store / f"{_slug(kind)}.mp4").symlink_to(path.resolve())
    files["good"] = good_src
    (store / "good.mp4").symlink_to(good_src)
    kinds = {_slug(k): k for k in made}
    checks: list[StageCheck] = []
    if "acquire" in stages:
        checks.append(check_acquire({k: _slug(k) for k in made}, "good", root))
    if "frames" in stages:
        checks.append(check_frames(files, kinds, "good", root))
    if "pose" in stages:
        checks.append(check_pose(files, kinds, "good", root))
    if "hand crops" in stages:
        checks.append(check_hand_crops(files, kinds, "good", root))
    if "predict" in stages and model_dir is not None:
        checks.append(check_predict(files, kinds, "good", model_dir))
    return RepeatResult(files=files, stages=checks, seconds=time.monotonic() - started)


def run(workdir: Path, repeats: int, seed: int, stages: tuple[str, ...] = STAGES, model_dir: Path | None = None,
        observed: list[RepeatResult] | None = None) -> list[FaultOutcome]:
    """Inject every corrupt-media kind ``repeats`` times (see the module docs); one outcome per kind.

    Parameters
    ----------
    workdir
        Scratch folder (folders of fully survived repeats are removed).
    repeats
        Repeats; each makes fresh, differently corrupted files.
    seed
        Seed of the cuts, corrupted bytes and frames.
    stages
        Stages to run (default all of :data:`STAGES`).
    model_dir
        An exported model for ``predict`` (default: a small untrained one is exported).
    observed
        When given, every :class:`RepeatResult` is appended to it (for direct assertions).
    """
    workdir = Path(workdir) / "media"
    workdir.mkdir(parents=True, exist_ok=True)
    outcomes = {k: FaultOutcome(CATEGORY, k) for k in KINDS}
    rng = random.Random(seed)
    huge = make_huge(workdir / "huge-source.mp4")
    if model_dir is None and "predict" in stages:
        model_dir = export_small_model(workdir / "model")
    for rep in range(repeats):
        root = workdir / f"{rep:03d}"
        result = run_repeat(root, rep, rng, huge, model_dir, stages)
        if observed is not None:
            observed.append(result)
        good_problems = result.problems(None)
        good_lost = result.missing(None) + (1 if good_problems else 0)
        all_ok = not good_problems
        for kind in KINDS:
            problems = result.problems(kind) + [f"good clip: {p}" for p in good_problems]
            lost = result.missing(kind) + good_lost
            ok = not problems
            all_ok &= ok
            outcomes[kind].record(ok, lost, f"repeat {rep}: " + "; ".join(problems))
        if all_ok:
            shutil.rmtree(root, ignore_errors=True)
    return list(outcomes.values())


__all__ = ["run", "run_repeat", "KINDS", "make_bad_files", "make_huge"]
