"""Two DVC experiments on a tiny configuration, compared end to end without re-running data preparation.

One experiment goes through the queue (``dvc exp run --queue`` then ``dvc queue start``, which
runs it in a copy under ``.dvc/tmp/exps``), the other runs in the workspace (``dvc exp run``).
Both change only ``train.lr``, so only ``train`` and ``evaluate`` may run; the comparison goes
through ``dvc exp show``, ``dvc metrics diff``, ``dvc params diff`` and ``dvc plots diff``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pipeline_repo import make_pipeline_repo, run

pytestmark = pytest.mark.pipeline

# Two glosses with 15 clips each in ../shared/data (12 train, 3 val): fewer clips than the
# builder's one gloss, yet a real 2 x 2 confusion matrix and losses that depend on the lr.
CLASSES = ["africa", "same"]
QUEUED, IN_WORKSPACE = "lr-low", "lr-high"
LRS = {QUEUED: "0.0005", IN_WORKSPACE: "0.005"}
PREPARATION = ("manifest", "subset", "acquire", "coverage", "pose", "pack_pose")
PREPARED = ("manifest", "subset", "clips", "coverage", "pose", "features")  # folders under data/
QUEUE_TIMEOUT_S = 900.0


def dvc(root: Path, *args: str) -> str:
    """Run ``python -m dvc ARGS`` in ``root``; assert success; return stdout and stderr together."""
    return run([sys.executable, "-m", "dvc", *args], root)


def dvc_json(root: Path, *args: str) -> Any:
    """Run a dvc command with ``--json`` and parse its stdout (warnings go to stderr)."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=root,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"dvc {' '.join(args)} --json failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def mtimes(root: Path) -> dict[str, int]:
    """``st_mtime_ns`` of every file the preparation stages wrote, keyed by path relative to ``root``."""
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns
            for folder in PREPARED for p in (root / "data" / folder).rglob("*") if p.is_file()}


def assert_only_training_ran(log: str) -> None:
    """``log`` of one experiment skipped every preparation stage and ran ``train`` and ``evaluate``."""
    for stage in PREPARATION:
        assert f"Stage '{stage}' didn't change, skipping" in log, f"{stage} was not skipped:\n{log}"
        assert f"Running stage '{stage}'" not in log
    assert "Running stage 'train'" in log and "Running stage 'evaluate'" in log, log


def wait_for_queue(root: Path, timeout_s: float = QUEUE_TIMEOUT_S) -> str:
    """Poll ``dvc queue status`` until no task is queued or running; return the last status table."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = dvc(root, "queue", "status")
        if not any(state in status for state in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, f"queue still busy after {timeout_s} s:\n{status}"
        time.sleep(5)


def experiments_by_name(shown: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ``data`` of every experiment in ``dvc exp show --json`` output, keyed by experiment name.

    Parameters
    ----------
    shown
        Parsed ``dvc exp show --json``: one entry per baseline (and the workspace), each with
        ``experiments``, a list of ``{"revs": [...]}`` whose revs carry ``name`` and ``data``.

    Returns
    -------
    dict[str, dict[str, Any]]
        Experiment name to its ``data`` (``params``, ``metrics``, ``deps``, ...).
    """
    found: dict[str, dict[str, Any]] = {}
    for baseline in shown:
        for group in baseline.get("experiments") or []:
            for rev in group.get("revs", []):
                if rev.get("name"):
                    found[rev["name"]] = rev["data"]
    return found


class Experiments(NamedTuple):
    """The repository after both experiments, with what the tests check."""

    root: Path
    logs: dict[str, str]  # experiment name -> its dvc output
    before: dict[str, int]  # mtimes of prepared files before the experiments
    after: dict[str, int]  # and after both


@pytest.fixture(scope="module")
def exps(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Iterator[Experiments]:
    """A tiny pipeline run up to ``evaluate`` and committed, then one queued and one workspace experiment.

    Yields
    ------
    Experiments
        The repository root, each experiment's output, and the preparation mtimes around them.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_NO_ANALYTICS", "1")  # offline machines: no analytics daemon per command

        def tiny(params: dict[str, Any]) -> None:
            params["subset"]["classes"] = CLASSES

        root = make_pipeline_repo(tmp_path_factory.mktemp("exps"), shared, tiny)
        try:
            # What the experiments need, and pose_summary for its metrics; frames, hand crops,
            # export and the RGB and hand-crop models are other targets (slow) and stay unbuilt.
            dvc(root, "repro", "evaluate", "pose_summary")
            run(["git", "add", "-A"], root)
            run(["git", "commit", "-qm", "baseline"], root)
            before = mtimes(root)
            logs: dict[str, str] = {}

            # Queued: a celery worker runs it in a copy under .dvc/tmp/exps.
            dvc(root, "exp", "run", "evaluate", "--queue", "-n", QUEUED, "-S", f"train.lr={LRS[QUEUED]}")
            dvc(root, "queue", "start")
            status = wait_for_queue(root)
            assert "Success" in status and "Failed" not in status, status
            logs[QUEUED] = dvc(root, "queue", "logs", QUEUED)

            # In the workspace: the common case; its outputs land in data/.
            logs[IN_WORKSPACE] = dvc(root, "exp", "run", "evaluate", "-n", IN_WORKSPACE,
                                     "-S", f"train.lr={LRS[IN_WORKSPACE]}")
            yield Experiments(root, logs, before, mtimes(root))
        finally:  # no worker left behind, whatever happened
            subprocess.run([sys.executable, "-m", "dvc", "queue", "stop", "--kill"], cwd=root,
                           capture_output=True, timeout=120)


def test_queued_experiment_skipped_data_preparation(exps: Experiments) -> None:
    assert_only_training_ran(exps.logs[QUEUED])


def test_workspace_experiment_skipped_data_preparation(exps: Experiments) -> None:
    assert_only_training_ran(exps.logs[IN_WORKSPACE])
    assert any(path.startswith("data/pose/") for path in exps.before)
    assert exps.after == exps.before  # not one prepared file rewritten


def test_exp_show_lists_both_with_params_and_metrics(exps: Experiments) -> None:
    repo = exps.root
    shown = experiments_by_name(dvc_json(repo, "exp", "show"))
    assert {QUEUED, IN_WORKSPACE} <= set(shown), shown.keys()
    for name, lr in LRS.items():
        data = shown[name]
        # Every metrics file of the stages built is readable in the experiment's commit (an
        # uncached one would not be; RGB and hand-crop models are other targets, never built here).
        built = [path for path in data["metrics"] if path.split("/")[1] in ("coverage", "train", "eval", "pose_summary")]
        assert len(built) == 4 and not [path for path in built if data["metrics"][path].get("error")], data["metrics"]
        assert data["params"]["params.yaml"]["data"]["train"]["lr"] == float(lr)
        train = data["metrics"]["data/train/metrics.json"]["data"]
        evaluation = data["metrics"]["data/eval/metrics.json"]["data"]
        assert train["epochs_run"] == 2 and train["val_clips"] == 6
        assert evaluation["val"]["clips_evaluated"] == 6 and 0.0 <= evaluation["val"]["per_instance_top1"] <= 1.0


def test_metrics_and_params_diff_between_the_experiments(exps: Experiments) -> None:
    repo = exps.root
    metrics = dvc_json(repo, "metrics", "diff", QUEUED, IN_WORKSPACE, "--all")
    assert {"val_loss", "val_per_instance_top1", "best_epoch"} <= set(metrics["data/train/metrics.json"])
    assert {"val.per_instance_top1", "val.mean_per_class_top1"} <= set(metrics["data/eval/metrics.json"])
    assert metrics["data/train/metrics.json"]["val_loss"]["old"] != metrics["data/train/metrics.json"]["val_loss"]["new"]
    table = dvc(repo, "metrics", "diff", QUEUED, IN_WORKSPACE, "--all", "--md")
    assert "val_loss" in table and QUEUED in table and IN_WORKSPACE in table
    params = dvc_json(repo, "params", "diff", QUEUED, IN_WORKSPACE)
    assert list(params) == ["params.yaml"] and list(params["params.yaml"]) == ["train.lr"], params  # nothing else
    lr = params["params.yaml"]["train.lr"]
    assert (lr["old"], lr["new"]) == (float(LRS[QUEUED]), float(LRS[IN_WORKSPACE]))


def test_plots_diff_shows_curves_and_confusion_side_by_side(exps: Experiments, tmp_path: Path) -> None:
    repo = exps.root
    rendered = dvc_json(repo, "plots", "diff", QUEUED, IN_WORKSPACE)
    # Plots of other targets (RGB and hand-crop models, never built here) may fail to load; ours must not.
    ours = [e for e in rendered.get("errors", []) if e.get("source", "").startswith(("data/train/", "data/eval/"))]
    assert not ours, ours
    plots = rendered["data"]
    for name in ("loss", "accuracy", "confusion"):
        (plot,) = plots[name]
        assert plot["revisions"] == [QUEUED, IN_WORKSPACE], (name, plot["revisions"])
        rows = plot["content"]["data"]["values"]
        assert {row["rev"] for row in rows} == {QUEUED, IN_WORKSPACE}
    # Curves: one line per experiment (coloured by rev); confusion: one panel per experiment.
    assert plots["loss"][0]["content"]["encoding"]["color"]["field"] == "rev"
    assert plots["confusion"][0]["content"]["facet"]["column"]["field"] == "rev"
    confusion_rows = plots["confusion"][0]["content"]["data"]["values"]
    assert {row["actual"] for row in confusion_rows} == set(CLASSES)

    html = tmp_path / "plots"
    dvc(repo, "plots", "diff", QUEUED, IN_WORKSPACE, "-o", str(html))
    page = (html / "index.html").read_text()
    assert all(text in page for text in ("loss (train, val)", "confusion matrix (val)", QUEUED, IN_WORKSPACE))
