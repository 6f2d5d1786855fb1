"""A throw-away git + DVC repository holding this pipeline, for tests that run snakemake or dvc end to end.

:func:`make_pipeline_repo` copies the pipeline definition and code into a fresh folder, points
params at the real data in ../shared/data and shrinks the job (one gloss, two shards, a tiny
model for two epochs) so a whole run takes a few minutes on two cores.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, timeout: float = 1500) -> str:
    """Run ``cmd`` in ``cwd`` with this interpreter's bin first on PATH; assert success; return its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def digests(root: Path, artifacts: Iterable[str]) -> dict[str, str]:
    """sha256 of each artifact path (relative to ``root``)."""
    return {a: hashlib.sha256((root / a).read_bytes()).hexdigest() for a in artifacts}


def job_stats(out: str) -> Counter[str]:
    """Jobs per rule from Snakemake's "Job stats" table (dry run or real run), without the total."""
    lines = out[out.index("Job stats:"):].splitlines()[3:]
    jobs: Counter[str] = Counter()
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        jobs[parts[0]] = int(parts[1])
    assert jobs.pop("total") == sum(jobs.values()), out
    return jobs


def make_pipeline_repo(root: Path, shared: Path,
                       edit_params: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A fresh git + DVC repository at ``root`` with the pipeline, its code and small params; returns ``root``.

    ``edit_params`` may change the params dict further before it is written and committed.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, root / name)
    for name in ("pipeline", "sldata", "sltrain"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["sources"]["wlasl"]["annotation"]["local_path"] = str(shared / "wlasl" / "asl100.json")
    params["acquire"]["local_store"]["dir"] = str(shared / "wlasl100_clips" / "videos")
    params["subset"]["k"] = 1  # one gloss (about 15 clips) keeps the clip and pose stages quick
    params["shards"]["count"] = 2
    params["train"]["epochs"] = 2  # a tiny model for two epochs: the tests are about the pipeline, not accuracy
    params["models"]["pose_transformer"].update(d_model=16, num_layers=1, num_heads=2)
    for section in ("train_rgb", "train_hands"):  # the RGB and hand-crop models: one epoch of a tiny model
        params[section].update(epochs=1, threads=1)
    params["train_rgb"]["input"].update(num_frames=4, size=32)
    params["train_hands"]["input"].update(num_frames=8, size=16)
    params["models"]["rgb_s3d"].update(width_multiplier=0.25, feature_dim=64)
    params["models"]["vtn"].update(hand_widths=[8, 16], hand_dim=8, pose_dim=8, d_model=16, num_layers=1, num_heads=2)
    if edit_params is not None:
        edit_params(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "ci@example.org"], root)
    run(["git", "config", "user.name", "ci"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    shutil.copy(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "pipeline"], root)
    return root
