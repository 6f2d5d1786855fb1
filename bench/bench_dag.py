"""DAG size: Snakemake planning of the sharded pipeline at 25,000 videos, and no-op reruns.

In one run, in temporary git + DVC repositories built from this checkout (Snakefile, pipeline/,
sldata/, sltrain/, dvc.yaml, params.yaml, .dvc/config), never touching ./data:

1. **Planning at scale.** A synthetic manifest of ``--rows`` clips (one source video each,
   every column of :data:`sldata.manifest_schema.SCHEMA`) and the subset built from it by
   :func:`sldata.subsets.build_subset` are written as if the manifest and subset stages had run
   (inputs older than outputs), ``shards.count`` is set to ``--shards``, and
   ``snakemake -n all`` plans acquire -> ... -> export. Its wall time and peak RSS are printed
   beside the same plan for a throwaway **naive per-video DAG** (one job per video per stage,
   a ``{sample_id}`` wildcard, 2 stages: acquire and pose, then one gather job), built on the
   first ``--naive-rows`` clips (default: all of them).
2. **No-op rerun.** A small pipeline (``--noop-rows`` clips, 4 shards) whose every declared
   output (``all``, ``frames_all``, ``hand_crops_all``, ``train_rgb``, ``train_hands``) is faked with ``snakemake --touch``
   (nothing really runs), then recorded in ``dvc.lock`` with ``dvc commit -f``; times
   ``snakemake -n all`` (must say "Nothing to be done") and ``dvc status`` (must say
   "up to date").

Wall seconds are measured around the child process; peak RSS is the child's maximum resident
set size from ``/usr/bin/time -v`` (else ``getrusage(RUSAGE_CHILDREN)``, a high-water mark over
all children so far). Usage::

    python bench/bench_dag.py --rows 25000 --shards 100     # --help for the options
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from sldata.atomic import write_json  # noqa: E402
from sldata.manifest import write_parquet  # noqa: E402
from sldata.manifest_schema import SCHEMA  # noqa: E402
from sldata.subsets import build_subset, write_subset  # noqa: E402

TIME_BIN = "/usr/bin/time"
FINAL_TARGETS = ["all", "frames_all", "hand_crops_all", "train_rgb", "train_hands"]


@dataclass
class Timed:
    """One timed child process."""

    wall_s: float
    peak_rss_mb: float
    output: str


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(cmd: list[str], cwd: Path, check: bool = True) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def timed(cmd: list[str], cwd: Path) -> Timed:
    """Run ``cmd``; wall seconds and the child's peak RSS in MB."""
    use_time = os.access(TIME_BIN, os.X_OK)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = [TIME_BIN, "-v", "-o", tf.name, *cmd] if use_time else cmd
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        result = subprocess.run(full, cwd=cwd, env=_env(), capture_output=True, text=True)
        wall = time.perf_counter() - t0
        out = result.stdout + result.stderr
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{out[-4000:]}")
        rss_kb = None
        if use_time:
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", Path(tf.name).read_text())
            rss_kb = int(m.group(1)) if m else None
        if rss_kb is None:  # high-water mark of all children (may include earlier, bigger ones)
            rss_kb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
    return Timed(wall, rss_kb / 1024, out)


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The ``Job stats`` table of ``snakemake -n``: jobs per rule, with ``total``."""
    counts: dict[str, int] = {}
    lines = dry_run_output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("Job stats"))
    except StopIteration:
        return counts
    for line in lines[start + 1:]:
        m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s+(\d+)\s*", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
        elif counts and not line.strip():
            break
    return counts


# --------------------------------------------------------------------------- repository


def build_repo(root: Path, rows: int, shards: int, classes: int = 100, seed: int = 0) -> Path:
    """A git + DVC repository of the pipeline whose manifest and subset stages look finished.

    The WLASL annotation and the local video store are empty stand-ins inside ``root``; the
    manifest holds ``rows`` synthetic clips, one source video each, over ``classes`` glosses.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, root / name)
    for name in ("pipeline", "sldata", "sltrain"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    annotation = root / "annotations" / "wlasl.json"
    annotation.parent.mkdir()
    annotation.write_text("[]\n")
    store = root / "store"
    store.mkdir()
    (store / "README").write_text("empty local video store (bench_dag.py)\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["sources"]["wlasl"]["annotation"]["local_path"] = "annotations/wlasl.json"
    params["acquire"]["local_store"]["dir"] = "store"
    params["subset"]["k"] = classes
    params["shards"]["count"] = shards
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "bench@example.org"], root)
    run(["git", "config", "user.name", "bench"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    shutil.copy(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "pipeline"], root)

    manifest = synthetic_manifest(rows, classes, seed)
    data = root / "data"
    write_parquet(pa.Table.from_pandas(manifest, schema=SCHEMA, preserve_index=False),
                  data / "manifest" / "manifest.parquet")
    write_parquet(pa.Table.from_pandas(pd.DataFrame({c: pd.Series(dtype=str) for c in
                                                     ("dataset", "file", "row", "field", "reason", "detail", "record")})),
                  data / "manifest" / "rejects.parquet")
    write_json(data / "manifest" / "report.json", {"synthetic": True, "rows": rows})
    gloss_list = [f"gloss{c:04d}" for c in range(classes)]
    samples, label_map, report = build_subset(manifest, {"wlasl": gloss_list}, params["subset"])
    write_subset(samples, label_map, report, data / "subset")

    # Inputs strictly older than outputs, so the plan starts at acquire. The library modules are
    # inputs too (sldata/stages.py lists each stage's code): copied with their checkout's mtimes,
    # they may be newer than the faked outputs.
    now = time.time()
    code = [p for name in ("pipeline", "sldata", "sltrain") for p in (root / name).rglob("*")]
    for path in (annotation, store / "README", store, *code):
        os.utime(path, (now - 300, now - 300))
    for path in (data / "manifest").iterdir():
        os.utime(path, (now - 200, now - 200))
    for path in (data / "subset").iterdir():
        os.utime(path, (now - 100, now - 100))
    return root


def synthetic_manifest(rows: int, classes: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` WLASL-like manifest rows (every SCHEMA column), one source video per row."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(rows)]
    label = (np.arange(rows) % classes).astype("int32")
    start = rng.uniform(0, 5, rows).round(2)
    length = rng.uniform(1, 3, rows).round(2)
    split = np.array(["train", "val", "test"])[rng.choice(3, rows, p=[0.7, 0.15, 0.15])]
    return pd.DataFrame({
        "sample_id": [f"wlasl-{i}" for i in ids],
        "dataset": "wlasl",
        "original_id": ids,
        "source_key": [f"url-{i:016x}" for i in range(rows)],
        "url": [f"https://example.org/videos/{i}.mp4" for i in ids],
        "source_site": "example",
        "gloss": [f"gloss{c:04d}" for c in label],
        "label": label,
        "annotated_text": [f"gloss{c:04d}" for c in label],
        "split": split,
        "signer_id": rng.integers(0, 120, rows).astype("int32"),
        "variation_id": np.zeros(rows, "int32"),
        "annotated_fps": 25.0,
        "start_frame": (start * 25).astype("int64"),
        "end_frame": ((start + length) * 25).astype("int64"),
        "start_s": start,
        "end_s": start + length,
        "box_xmin": 10.0, "box_ymin": 5.0, "box_xmax": 250.0, "box_ymax": 250.0,
        "box_units": "pixel",
        "annotated_width": np.nan, "annotated_height": np.nan,
        "source_file": "synthetic.json",
        "source_row": [f"[{c}].instances[{i}]" for i, c in enumerate(label)],
    })


NAIVE_SNAKEFILE = '''\
# Throwaway per-video DAG for contrast (bench/bench_dag.py): one job per video per stage.
import pandas as pd

IDS = pd.read_parquet("data/subset/samples.parquet", columns=["sample_id"])["sample_id"].tolist()[:{limit}]

rule all:
    input:
        "data/naive/summary.txt",

rule acquire_video:
    input:
        "data/subset/samples.parquet",
    output:
        "data/naive/clips/{{sample_id}}.mp4",
    shell:
        "touch {{output}}"

rule pose_video:
    input:
        "data/naive/clips/{{sample_id}}.mp4",
    output:
        "data/naive/pose/{{sample_id}}.parquet",
    shell:
        "touch {{output}}"

rule summary:
    input:
        expand("data/naive/pose/{{sample_id}}.parquet", sample_id=IDS),
    output:
        "data/naive/summary.txt",
    shell:
        "touch {{output}}"
'''


# --------------------------------------------------------------------------- measurements


def plan(root: Path) -> tuple[Timed, dict[str, int]]:
    """``snakemake -n all`` in ``root``: timing and planned jobs per rule."""
    t = timed([sys.executable, "-m", "snakemake", "-n", "all"], root)
    return t, job_counts(t.output)


def plan_naive(root: Path, limit: int) -> tuple[Timed, dict[str, int]]:
    snakefile = root / "naive.smk"
    snakefile.write_text(NAIVE_SNAKEFILE.format(limit=limit))
    t = timed([sys.executable, "-m", "snakemake", "-s", str(snakefile), "-n", "all"], root)
    return t, job_counts(t.output)


def noop(root: Path) -> dict[str, Timed]:
    """Fake a finished pipeline (touch every output, commit to DVC), then time the no-op checks."""
    # --touch does not create missing files: create every declared output first, oldest to newest.
    for path, is_dir in declared_outputs(root):
        p = root / path
        if is_dir:
            p.mkdir(parents=True, exist_ok=True)
            (p / "placeholder").write_text("x")
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("x")
    # dvc commit relinks the outputs from its cache (new mtimes), so Snakemake's touch comes after it;
    # the first `dvc status` then rehashes the touched files, the second finds its hash cache valid.
    run([sys.executable, "-m", "dvc", "commit", "-f", "-q"], root)
    run([sys.executable, "-m", "snakemake", "--touch", "--cores", "1", *FINAL_TARGETS], root)
    return {
        "snakemake -n all": timed([sys.executable, "-m", "snakemake", "-n", "all"], root),
        "dvc status (first, rehashes touched outputs)": timed([sys.executable, "-m", "dvc", "status"], root),
        "dvc status": timed([sys.executable, "-m", "dvc", "status"], root),
    }


def declared_outputs(root: Path) -> list[tuple[str, bool]]:
    """Every output of the jobs ``snakemake -n`` plans for FINAL_TARGETS: (path, is a directory())."""
    # The dry run lists each job's outputs on an "output:" line; directory() outputs are known by name.
    out = run([sys.executable, "-m", "snakemake", "-n", *FINAL_TARGETS], root)
    paths: list[tuple[str, bool]] = []
    dirs = {"videos", "val", "test", "sign-recognizer"}
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("output:"):
            for p in s[len("output:"):].split(","):
                p = p.strip()
                if p:
                    paths.append((p, Path(p).name in dirs))
    return paths


# --------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=25000, help="synthetic manifest rows (videos) to plan (default 25000)")
    parser.add_argument("--shards", type=int, default=100, help="shards.count for the planning run (default 100)")
    parser.add_argument("--naive-rows", type=int, default=None,
                        help="videos in the naive per-video DAG (default: --rows; 0 skips it)")
    parser.add_argument("--noop-rows", type=int, default=200, help="clips of the small finished pipeline (default 200)")
    parser.add_argument("--noop-shards", type=int, default=4, help="shards of the small finished pipeline (default 4)")
    parser.add_argument("--skip-noop", action="store_true", help="only the planning part")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args(argv)
    naive_rows = args.rows if args.naive_rows is None else args.naive_rows

    tmp = Path(tempfile.mkdtemp(prefix="bench_dag_"))
    try:
        t0 = time.perf_counter()
        big = build_repo(tmp / "plan", args.rows, args.shards)
        setup_s = time.perf_counter() - t0
        sharded, counts = plan(big)
        print(f"Planning `snakemake -n all`: {args.rows:,} videos, shards.count={args.shards} "
              f"(repo built in {setup_s:.1f} s)")
        rows = [("sharded pipeline (this repo)", args.rows, sharded, counts)]
        if naive_rows:
            naive, ncounts = plan_naive(big, naive_rows)
            rows.append(("naive per-video DAG, 2 stages", naive_rows, naive, ncounts))
        print("| DAG | videos | jobs | wall s | peak RSS MB |\n|---|---:|---:|---:|---:|")
        for name, n, t, c in rows:
            print(f"| {name} | {n:,} | {c.get('total', 0):,} | {t.wall_s:.2f} | {t.peak_rss_mb:.0f} |")
        if naive_rows:
            print(f"naive / sharded: {naive.wall_s / sharded.wall_s:.1f}x wall, "
                  f"{ncounts.get('total', 0) / max(counts.get('total', 1), 1):.0f}x jobs, "
                  f"{naive.peak_rss_mb / sharded.peak_rss_mb:.1f}x peak RSS")
        print("sharded jobs per rule: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        print(f"target < 10 s: {'met' if sharded.wall_s < 10 else 'NOT met'}")

        if not args.skip_noop:
            small = build_repo(tmp / "noop", args.noop_rows, args.noop_shards)
            res = noop(small)
            print(f"\nNo-op rerun of a finished pipeline ({args.noop_rows} clips, {args.noop_shards} shards, "
                  "outputs faked with `snakemake --touch` + `dvc commit -f`)")
            print("| command | wall s | peak RSS MB | says |\n|---|---:|---:|---|")
            for name, t in res.items():
                says = ("Nothing to be done" if "Nothing to be done" in t.output
                        else "up to date" if "up to date" in t.output else t.output.strip().splitlines()[-1][:60])
                print(f"| `{name}` | {t.wall_s:.2f} | {t.peak_rss_mb:.0f} | {says} |")
            ok = all(t.wall_s < 5 for t in res.values())
            print(f"target < 5 s each: {'met' if ok else 'NOT met'}")
    finally:
        if args.keep:
            print(f"\nkept {tmp}")
        else:
            for _ in range(5):  # a DVC background process may still be writing into the repo
                shutil.rmtree(tmp, ignore_errors=True)
                if not tmp.exists():
                    break
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
