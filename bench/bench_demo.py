"""Time `make demo` on a fresh clone: wall clock and CPU time, in all and per rule.

Clones this repository's committed HEAD into a temporary folder (with ``shared`` beside it
linked to the real data, so the committed ``../shared/data`` paths resolve), then runs the
Makefile's own ``demo`` target there with this interpreter's environment first on ``PATH``
(``make -o .venv/.installed``: the virtual environment counts as made; creating it is not part
of the demo). It prints:

* the wall-clock time and the CPU time (user + system of every process the run started,
  ``getrusage(RUSAGE_CHILDREN)``), with the load average before and after: on a shared machine
  the wall clock is inflated by other jobs, the CPU time much less so (but spinning OpenMP
  threads of a starved PyTorch do add CPU time);
* each rule's wall and CPU seconds from Snakemake's benchmark files (``benchmarks/demo/``);
* the demo's last lines (the held-out clip and its top-5).

The target is <= 5 minutes of wall clock on 2 idle cores.

    python bench/bench_demo.py [--cores 2] [--keep] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 300.0


def shared_dir() -> Path:
    return Path(os.environ.get("SLDATA_SHARED", REPO_ROOT.parent / "shared" / "data")).resolve()


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def per_rule(bench_dir: Path) -> list[dict[str, object]]:
    """``{rule, wall_s, cpu_s}`` per Snakemake benchmark file under ``bench_dir`` (rules without one are absent)."""
    rows = []
    for path in sorted(bench_dir.rglob("*.tsv")):
        with path.open() as fh:
            rec = next(csv.DictReader(fh, delimiter="\t"))
        rows.append({"rule": str(path.relative_to(bench_dir).with_suffix("")), "wall_s": float(rec["s"]),
                     "cpu_s": float(rec["cpu_time"])})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2, help="DEMO_CORES (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the clone and print its path")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print("note: uncommitted changes are not in the clone (it is of HEAD)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="bench_demo_"))
    clone = tmp / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO_ROOT), str(clone)], check=True)
    (tmp / "shared").mkdir()
    (tmp / "shared" / "data").symlink_to(shared_dir())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                            text=True).stdout.strip()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(clone)}
    load_before = os.getloadavg()
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    result = subprocess.run(["make", "-o", ".venv/.installed", "demo", f"DEMO_CORES={args.cores}"], cwd=clone,
                            env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    load_after = os.getloadavg()
    if result.returncode != 0:
        print(result.stdout[-5000:], result.stderr[-5000:], sep="\n")
        print(f"make demo failed ({result.returncode}); clone kept at {clone}")
        return 1
    rules = per_rule(clone / "benchmarks" / "demo")
    report = {"commit": commit, "cores": args.cores, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
              "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
              "cpu_count": os.cpu_count(), "rules": rules, "target_s": TARGET_S}
    print(f"make demo on a fresh clone of {commit} ({args.cores} cores of {os.cpu_count()}):")
    print(f"  wall clock {wall:.0f} s ({wall / 60:.1f} min; target <= {TARGET_S / 60:.0f} min on 2 idle cores), "
          f"CPU {cpu:.0f} s (user + system of every process)")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min): "
          + ("the machine was busy, the wall clock is inflated" if max(load_before[0], load_after[0]) > args.cores
             else "quiet"))
    print(f"  {'rule':<22} {'wall s':>8} {'CPU s':>8}")
    for r in rules:
        print(f"  {r['rule']:<22} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f}")
    print("  (subset and coverage have no benchmark file; the rest is Snakemake's own planning and start-up)")
    print("demo output:\n" + "\n".join("  " + line for line in result.stdout.strip().splitlines()[-8:]))
    print("  " + result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.keep:
        print(f"kept {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
