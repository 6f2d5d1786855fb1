"""torchrun with two processes (gloo on CPU) trains the same model as one process, up to float rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sldata.pose.store import load_packed
from sltrain.checkpoint import load_checkpoint
from sltrain.distributed import DistContext, local_rows
from sltrain.models.factory import build_pose_model
from sltrain.train import train
from test_train import FEATURES, TINY, config, packed  # noqa: F401  (packed is a fixture)

# Dropout 0: with dropout each process draws masks for its own rows, so runs match only
# statistically (see sltrain/distributed.py). batch_size 7 over 8 train clips gives batches of
# 7 (split 4 + 3) and 1 (one process has no row and contributes a zero gradient).
SETTINGS = {"model_config": {**TINY, "dropout": 0.0}, "batch_size": 7, "epochs": 3}

DRIVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_train import FEATURES, config
    from sltrain.train import train

    pack, labels, out, work, settings = sys.argv[1:6]
    metrics = train(pack, labels, out, work, config(**json.loads(settings)), FEATURES, progress=False)
    Path(out, f"rank-{{__import__('os').environ['RANK']}}.json").write_text(json.dumps(metrics))
    """
)


def test_local_rows_split_the_global_batch_and_weight_the_mean() -> None:
    rows = np.arange(7)
    parts = [local_rows(rows, DistContext(rank=r, world_size=2)) for r in range(2)]
    assert sorted(np.concatenate([p[0] for p in parts]).tolist()) == rows.tolist()
    assert [p[1] for p in parts] == [4 * 2 / 7, 3 * 2 / 7]
    # (mean_0 * share_0 + mean_1 * share_1) / 2 == global mean: DDP averages the two gradients
    assert sum(len(p[0]) * p[1] / len(p[0]) for p in parts) / 2 == pytest.approx(1.0)
    rows_left, share = local_rows(np.arange(1), DistContext(rank=1, world_size=2))
    assert len(rows_left) == 1 and share == 0.0
    assert local_rows(rows, DistContext()) == (rows, 1.0)


def test_two_processes_match_one(packed: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    pack, labels = packed
    single = train(pack, labels, tmp_path / "one", tmp_path / "w1", config(**SETTINGS), FEATURES, progress=False)

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(driver),
           str(pack), str(labels), str(tmp_path / "two"), str(tmp_path / "w2"), json.dumps(SETTINGS)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    ranks = [json.loads((tmp_path / "two" / f"rank-{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        r.pop("train_time_s")
    assert ranks[0] == ranks[1] and ranks[0]["processes"] == 2  # same decisions in both processes
    double = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert double["processes"] == 2 and double["epochs_run"] == single["epochs_run"] == 3
    h1 = pd.read_csv(tmp_path / "one" / "history.csv")
    h2 = pd.read_csv(tmp_path / "two" / "history.csv")
    for col in ("train_loss", "val_loss", "lr"):
        np.testing.assert_allclose(h2[col], h1[col], rtol=1e-4, atol=1e-5, err_msg=col)
    assert (h2["val_top1"] == h1["val_top1"]).all()
    # only rank 0 wrote files; the models agree weight by weight
    torch.manual_seed(0)  # the initial weights, as train() builds them
    s0 = {k: v.clone() for k, v in build_pose_model("pose_transformer", SETTINGS["model_config"],
                                                    FEATURES.input_spec(load_packed(pack)[2]["skeleton"]),
                                                    {"gloss": {"num_classes": 3, "weight": 1.0}}).state_dict().items()}
    s1 = load_checkpoint(tmp_path / "one" / "model.pt")["model_state"]
    s2 = load_checkpoint(tmp_path / "two" / "model.pt")["model_state"]
    assert s1.keys() == s2.keys()
    worst = max(float((s1[k].float() - s2[k].float()).abs().max()) for k in s1 if s1[k].numel())
    assert worst < 1e-4, worst
    moved = max(float((s1[k].float() - s0[k].float()).abs().max()) for k in s1 if s1[k].numel())
    assert moved > 20 * worst  # training moved the weights far more than the two runs differ


def test_cli_starts_torchrun_when_params_ask_for_processes(packed: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811

    import yaml

    from conftest import REPO_ROOT

    pack, labels = packed
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["features"]["num_frames"] = 16
    params["train"].update(epochs=1, batch_size=4, threads=1, processes=2, device="cpu", model="pose_transformer",
                           ensemble={})
    params["models"]["pose_transformer"].update(d_model=16, num_layers=1, num_heads=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = [sys.executable, "-m", "sltrain", "train", "--params", str(tmp_path / "params.yaml"), "--packed", str(pack),
           "--label-map", str(labels), "--out-dir", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
           "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torch.distributed.run --standalone --nproc-per-node=2 -m sltrain train" in result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["epochs_run"] == 1
