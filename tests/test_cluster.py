"""The pipeline on cluster executors: every job its own process, the same bytes as a local run.

``pipeline/profiles/local-cluster`` runs each job through the cluster-generic executor plugin as a
separate background process (its submit script logs PID and rule). Nothing in memory is shared
with the planning Snakemake process, so identical artifacts prove the rules are cluster-safe:
every input and output declared, no hidden state. The SLURM profile is checked without a cluster:
it plans, its per-rule resources name real rules, and a run against stand-in ``sbatch``/``sacct``/
``srun`` commands (which run the jobs here) submits each job with the resources the profile asks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline_repo import digests, job_stats, make_pipeline_repo, run
from test_pipeline import ARTIFACTS as PIPELINE_ARTIFACTS

pytestmark = pytest.mark.pipeline

LOCAL_CLUSTER = "pipeline/profiles/local-cluster"
SLURM = "pipeline/profiles/slurm"

# Byte-identical between runs (test_pipeline's list and more). Not compared: the model checkpoint and
# the export's sltrain.json/model.xml (they carry the checkpoint's bytes or hash, which hold training
# wall times), train/history.csv (elapsed seconds); train/metrics.json is compared without its time.
ARTIFACTS = sorted({
    *PIPELINE_ARTIFACTS,
    "data/clips/shard-000/report.json",
    "data/clips/shard-000/ledger.parquet",
    "data/coverage/coverage.txt",
    "data/features/pose/skeleton.json",
    "data/pose_summary/summary.csv",
    "data/pose_summary/summary.json",
    "data/eval/val/predictions.csv",
    "data/eval/test/predictions.csv",
    "data/eval/test/confusion.csv",
    "data/export/sign-recognizer/1/model.bin",
    "data/export/sign-recognizer/1/model.onnx",
    "data/export/sign-recognizer/1/parity.json",
})
UNTIMED = "data/train/metrics.json"


def fingerprint(root: Path, artifacts: list[str] = ARTIFACTS) -> dict[str, str]:
    """sha256 of the artifacts, every clip video, and train metrics without the wall time."""
    videos = sorted(p.relative_to(root).as_posix() for p in (root / "data" / "clips").glob("shard-*/videos/*.mp4"))
    out = digests(root, [*artifacts, *videos])
    metrics = json.loads((root / UNTIMED).read_text())
    metrics.pop("train_time_s")
    out[UNTIMED] = json.dumps(metrics, sort_keys=True)
    return out


def env_with_venv() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def planned_jobs(root: Path, *args: str) -> Counter[str]:
    """Jobs per rule that ``snakemake -n`` plans (its "Job stats" table, without the total)."""
    return job_stats(run([sys.executable, "-m", "snakemake", "-n", *args], root))


def read_job_log(path: Path) -> list[dict[str, object]]:
    """The local-cluster submit log: one record per job with pid, rule, jobid, start, end, rc."""
    jobs: dict[int, dict[str, object]] = {}
    for line in path.read_text().splitlines():
        kind, pid, rule, jobid, when, *rest = line.split("\t")
        rec = jobs.setdefault(int(pid), {"pid": int(pid), "rule": rule, "jobid": int(jobid)})
        rec[kind] = float(when)
        if kind == "end":
            rec["rc"] = int(rest[0])
    return list(jobs.values())


def every_4th_frame(params: dict[str, Any]) -> None:
    """Pose on every 4th frame: half the pose stage's time (the slowest stage) of the default 2."""
    params["pose"]["frame_step"] = 4


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    return make_pipeline_repo(tmp_path_factory.mktemp("cluster_repo"), shared, every_4th_frame)


@pytest.fixture(scope="module")
def cluster_run(repo: Path) -> dict[str, object]:
    """`all` on the local-cluster profile, then `all` again with plain local execution from scratch.

    Returns the planned jobs, the job log, the main Snakemake PID and both runs' fingerprints.
    """
    planned = planned_jobs(repo, "all")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--workflow-profile", LOCAL_CLUSTER, "all"],
                            cwd=repo, env=env_with_venv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=1500)
    assert proc.returncode == 0, out
    cluster_s = time.monotonic() - started
    by_cluster = fingerprint(repo)
    jobs = read_job_log(repo / "logs" / "local-cluster" / "jobs.tsv")

    # The same repository, run locally from scratch: keep only the download cache (the ledgers record
    # when each video was acquired); the pose cache goes too, so pose is extracted again.
    for path in (repo / "data").iterdir():
        if path.name != "cache":
            shutil.rmtree(path)
    shutil.rmtree(repo / "data" / "cache" / "pose")
    started = time.monotonic()
    run([sys.executable, "-m", "snakemake", "--cores", "2", "all"], repo)
    local_s = time.monotonic() - started
    return {"planned": planned, "jobs": jobs, "main_pid": proc.pid, "out": out, "cluster": by_cluster,
            "local": fingerprint(repo), "seconds": (round(cluster_s), round(local_s))}


def test_every_cluster_job_is_its_own_process(cluster_run: dict[str, object]) -> None:
    planned: Counter[str] = cluster_run["planned"]  # type: ignore[assignment]
    jobs: list[dict[str, object]] = cluster_run["jobs"]  # type: ignore[assignment]
    # `all` only gathers inputs and runs in the planning process; every other job was submitted.
    assert planned.pop("all") == 1
    assert Counter(str(j["rule"]) for j in jobs) == planned, cluster_run["out"]
    pids = [j["pid"] for j in jobs]
    assert len(set(pids)) == len(pids) == sum(planned.values())
    assert cluster_run["main_pid"] not in pids
    assert all(j.get("rc") == 0 for j in jobs), jobs
    assert len({j["jobid"] for j in jobs}) == len(jobs)
    # The cluster ran jobs side by side (jobs: 2): the two pose shards overlapped ...
    pose = sorted((j for j in jobs if j["rule"] == "pose"), key=lambda j: j["start"])
    assert pose[1]["start"] < pose[0]["end"]
    # ... but never two downloaders at once: acquire declares network=1, the profile allows 1.
    acquire = sorted((j for j in jobs if j["rule"] == "acquire"), key=lambda j: j["start"])
    assert acquire[0]["end"] <= acquire[1]["start"]


def test_cluster_artifacts_match_a_local_run(cluster_run: dict[str, object]) -> None:
    cluster, local = cluster_run["cluster"], cluster_run["local"]
    assert cluster.keys() == local.keys() and len(cluster) > len(ARTIFACTS)  # type: ignore[union-attr]
    assert cluster == local, {k for k in cluster if cluster[k] != local[k]}  # type: ignore[index]
    print("local-cluster run, local run (s):", cluster_run["seconds"])


def test_slurm_profile_names_real_rules_and_plans(repo: Path) -> None:
    profile = yaml.safe_load((repo / SLURM / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    rules = set(run([sys.executable, "-m", "snakemake", "--list-rules"], repo).split())
    assert set(profile["set-resources"]) <= rules, set(profile["set-resources"]) - rules
    assert {"acquire", "pose", "train"} <= set(profile["set-resources"])
    # Plans offline with the slurm executor's settings and resources parsed (nothing is submitted).
    out = run([sys.executable, "-m", "snakemake", "-n", "--workflow-profile", SLURM, "--forceall", "all"], repo)
    assert "This was a dry-run" in out
    resources = planned_resources(out)
    assert resources["train"] >= {"mem_mb": "32000", "runtime": "720", "gpu": "1"}.items()
    assert resources["acquire"] >= {"mem_mb": "4000", "runtime": "720", "cpus_per_task": "2"}.items()
    assert resources["pose"] >= {"runtime": "480"}.items()
    assert resources["manifest"] >= {"mem_mb": "4000", "runtime": "30"}.items()


def planned_resources(dry_run: str) -> dict[str, set[tuple[str, str]]]:
    """``rule -> {(resource, value)}`` from the job listings of a ``snakemake -n`` output."""
    out: dict[str, set[tuple[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run):
        head = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        if head and res:
            out[head.group(1)] = {tuple(kv.split("=", 1)) for kv in res.group(1).split(", ")}  # type: ignore[misc]
    return out


FAKE_SLURM = r'''#!/usr/bin/env python3
"""Stand-ins for sbatch, sacct, srun, sinfo and scancel that run SLURM jobs on this machine."""
import json, os, subprocess, sys
from pathlib import Path

state = Path(os.environ["FAKE_SLURM_STATE"])
cmd, args = Path(sys.argv[0]).name, sys.argv[1:]
if cmd == "sbatch":
    opts = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
    flag = lambda name: args[args.index(name) + 1]
    jobid = 1000
    while True:
        try:
            fd = os.open(state / f"{jobid}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            jobid += 1
    os.write(fd, json.dumps({"jobid": jobid, "argv": args}).encode())
    os.close(fd)
    log = open(flag("--output").replace("%j", str(jobid)), "w")
    script = opts["--wrap"] + f"\necho $? > {state}/{jobid}.rc\n"
    subprocess.Popen(["bash", "-c", script], cwd=flag("-D"), stdout=log, stderr=subprocess.STDOUT,
                     env={**os.environ, "SLURM_JOB_ID": str(jobid)}, start_new_session=True)
    print(jobid)
elif cmd == "sacct" and "--name" in args:
    for job in state.glob("*.json"):
        rc = state / f"{job.stem}.rc"
        status = ("COMPLETED" if rc.read_text().strip() == "0" else "FAILED") if rc.exists() else "RUNNING"
        print(f"{job.stem}|{status}")
elif cmd == "sinfo":
    print("PARTITION\nbatch*")
elif cmd == "srun":
    while args and args[0].startswith("-"):
        args = args[1:]
    os.execvp(args[0], args)
'''


def test_slurm_profile_submits_jobs_with_its_resources(repo: Path, cluster_run: dict[str, object],
                                                      tmp_path: Path) -> None:
    """Re-make one acquire, one pose and the train job through the slurm executor, against stand-ins.

    The plugin waits 40 s after a finished job before it polls again, so a chain of jobs would take
    minutes: the three jobs are forced by three Snakemake processes at once (``--nolock``; they read
    and write disjoint files), each submitting one job. Each process starts once the one before has
    submitted, in the order train, pose, acquire: a process's DAG reaches further than its target
    (train's every shard; pose's the coverage report, built from every shard's clips), and a shard
    being rewritten (marked incomplete, or newer than what was built from it) while a process plans
    would make it submit that shard's jobs again (seen: acquire of shard 000 and coverage twice).
    """
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name in ("sbatch", "sacct", "srun", "sinfo", "scancel", "sshare", "sacctmgr"):
        script = (FAKE_SLURM.replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1)
                  if name in ("sbatch", "sacct", "srun", "sinfo") else "#!/bin/sh\nexit 0\n")
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = {**env_with_venv(), "FAKE_SLURM_STATE": str(state), "USER": os.environ.get("USER", "ci")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", SLURM, "--nolock", "--force",
           "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
           "--max-status-checks-per-second", "10", "--slurm-keep-successful-logs"]
    targets = ["data/clips/shard-000/clips.parquet", "data/pose/shard-001.parquet", "data/train/metrics.json"]
    def start(target: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*cmd, target], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    procs: list[subprocess.Popen[str]] = []
    deadline = time.monotonic() + 600
    for target in reversed(targets):  # train, then pose, then acquire: each once the one before has submitted
        procs.insert(0, start(target))
        while (len(list(state.glob("*.json"))) < len(procs) and procs[0].poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.5)
    outs = [proc.communicate(timeout=1200)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], "\n".join(outs)

    by_rule: dict[str, str] = {}
    for path in sorted(state.glob("*.json")):
        argv = json.loads(path.read_text())["argv"]
        rule = re.match(r"rule_([a-z_]+?)(_wildcards_.*)?$", argv[argv.index("--comment") + 1]).group(1)  # type: ignore[union-attr]
        assert rule not in by_rule, (rule, argv)
        by_rule[rule] = " ".join(argv)
    assert sorted(by_rule) == ["acquire", "pose", "train"], outs
    # Network-bound: two CPUs, 12 hours; no partition given, so the default one sinfo marks.
    assert {"--cpus-per-task=2", "-t 720", "--mem 4000", "-p batch", "--ntasks=1"} <= flags(by_rule["acquire"])
    # CPU-bound: cpus = threads = pose.workers (2 here), 2000 MB per worker.
    assert {"--cpus-per-task=2", "--mem 4000", "-t 480"} <= flags(by_rule["pose"])
    # One GPU for training.
    assert {"--gpus=1", "--ntasks-per-gpu=1", "--mem 32000", "-t 720"} <= flags(by_rule["train"])
    # The jobs ran (through srun in the job step) and made the same bytes; pose reused every clip.
    assert fingerprint(repo) == cluster_run["local"]
    assert re.search(r"shard-001: \d+ reused, 0 extracted", (repo / "logs/pose/shard-001.log").read_text())


def flags(sbatch: str) -> set[str]:
    """An sbatch command line as a set of its flags, ``-t 720`` style pairs kept together."""
    tokens = sbatch.split(" --wrap=")[0].split()
    out: set[str] = set()
    for i, tok in enumerate(tokens):
        if tok.startswith("-") and "=" not in tok and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            out.add(f"{tok} {tokens[i + 1]}")
        elif tok.startswith("-"):
            out.add(tok)
    return out
