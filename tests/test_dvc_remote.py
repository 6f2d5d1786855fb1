"""The default DVC remote: ``dvc push`` then ``dvc pull`` restores every pipeline output byte for byte.

The remote in ``.dvc/config`` is a folder beside the checkout (``../signlang-dvc-remote``). The
end-to-end tests build a throw-away repository in its own temporary parent folder, so the
default remote resolves inside the temporary area and the test uses it exactly as committed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT
from pipeline_repo import make_pipeline_repo, run

REMOTE_NAME = "sibling"
REMOTE_FOLDER = "signlang-dvc-remote"


def dvc(root: Path, *args: str) -> str:
    """Run ``python -m dvc ARGS`` in ``root``; assert success; return stdout and stderr together."""
    return run([sys.executable, "-m", "dvc", *args], root)


def locked_outputs(root: Path) -> list[str]:
    """Every output path recorded in ``root/dvc.lock`` (files and directories, cached or not)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return sorted(out["path"] for stage in lock["stages"].values() for out in stage.get("outs", []))


def output_digests(root: Path, outputs: list[str]) -> dict[str, str]:
    """sha256 of every file under each output path, keyed by its path relative to ``root``.

    Parameters
    ----------
    root
        The repository root.
    outputs
        Output paths relative to ``root``; a directory contributes each file inside it.

    Returns
    -------
    dict[str, str]
        Relative file path to hex sha256. A missing output raises ``FileNotFoundError``.
    """
    digests: dict[str, str] = {}
    for out in outputs:
        path = root / out
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise FileNotFoundError(f"{out} is an empty directory")
        for file in files:
            digests[file.relative_to(root).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


@pytest.fixture(scope="module", autouse=True)
def _no_dvc_analytics() -> Iterator[None]:
    """No analytics daemon from the dvc commands of this module (the machines here are offline)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_NO_ANALYTICS", "1")
        yield


def test_default_remote_is_a_folder_beside_the_checkout() -> None:
    # Read-only: `dvc remote list` and `dvc config` do not touch data/.
    assert dvc(REPO_ROOT, "config", "--project", "core.remote").strip() == REMOTE_NAME
    listing = dvc(REPO_ROOT, "remote", "list", "--project").split()
    assert listing[:2] == [REMOTE_NAME, str(REPO_ROOT.parent / REMOTE_FOLDER)], listing
    assert "(default)" in listing


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> tuple[Path, dict[str, str]]:
    """A repository (in a parent folder of its own) after ``dvc repro``, a commit and ``dvc push``.

    Returns
    -------
    tuple[Path, dict[str, str]]
        The repository root and the sha256 of every file of every output in its ``dvc.lock``.
    """
    def one_epoch_for_the_other_models(params: dict[str, Any]) -> None:
        # `dvc repro` also trains the RGB and hand-crop models: one epoch is enough to push and pull.
        for section in ("train_rgb", "train_hands"):
            if section in params:
                params[section]["epochs"] = 1

    root = make_pipeline_repo(tmp_path_factory.mktemp("remote") / "repo", shared, one_epoch_for_the_other_models)
    remote = root.parent / REMOTE_FOLDER
    # The committed default, used as it is: it must land beside this throw-away repository.
    assert dvc(root, "config", "remote.sibling.url").strip() == str(remote)
    dvc(root, "repro")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "repro"], root)
    before = output_digests(root, locked_outputs(root))
    out = dvc(root, "push")
    assert "pushed" in out and any(remote.rglob("*")), out
    assert "in sync" in dvc(root, "status", "--cloud")  # "Cache and remote 'sibling' are in sync."
    return root, before


@pytest.mark.pipeline
def test_every_output_is_cached_so_the_remote_holds_it(pushed: tuple[Path, dict[str, str]]) -> None:
    root, before = pushed
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    stages = {name for name in lock["stages"]}
    assert {"manifest", "acquire", "pose", "pack_pose", "train", "evaluate", "export"} <= stages
    # An output with `cache: false` would live only in the workspace (git ignores data/).
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    uncached = [out for stage in dvc_yaml["stages"].values()
                for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])
                if isinstance(out, dict) and any(v.get("cache") is False for v in out.values())]
    assert not uncached
    for needed in ("data/train/metrics.json", "data/train/history.csv", "data/eval/metrics.json",
                   "data/eval/val/confusion.csv", "data/pose/shard-000.parquet"):
        assert needed in before


@pytest.mark.pipeline
def test_pull_after_wiping_outputs_and_cache_restores_identical_bytes(
        pushed: tuple[Path, dict[str, str]]) -> None:
    root, before = pushed
    for out in locked_outputs(root):
        path = root / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(root / ".dvc" / "cache")
    status = dvc(root, "status")
    assert "deleted:" in status and "Data and pipelines are up to date" not in status

    dvc(root, "pull")
    assert output_digests(root, locked_outputs(root)) == before
    assert "Data and pipelines are up to date" in dvc(root, "status")
    assert "Data and pipelines are up to date" in dvc(root, "repro")  # nothing reruns


@pytest.mark.pipeline
def test_fresh_clone_beside_pulls_from_the_default_remote(pushed: tuple[Path, dict[str, str]]) -> None:
    root, before = pushed
    clone = root.parent / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], root.parent)
    assert not (clone / "data").exists()
    dvc(clone, "pull")  # no -r: the default remote, beside the clone as beside the original
    assert output_digests(clone, locked_outputs(clone)) == before
    assert "Data and pipelines are up to date" in dvc(clone, "status")
    assert not os.path.exists(clone / ".dvc" / "config.local")  # nothing configured by hand
