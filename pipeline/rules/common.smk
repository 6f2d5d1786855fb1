# Shared helpers used by every *.smk file (params validation, paths, get_* input functions).
#
# How a value reaches a stage: the commands read their settings themselves, from the file given
# as --params. Snakemake merges --configfile/--config over params.yaml in memory, so rules pass
# PARAMS_FILE, a snapshot of that merged config (named by its hash, under .snakemake/params/).
# What a stage *depends on* comes from the one stage table, sldata/stages.py: each rule's
# `params:` holds stage_params(config, rule) (only the keys that stage reads, so Snakemake's
# params trigger reruns exactly the stages whose values changed) and its `input:` holds
# code_files(rule) (the library modules it imports). dvc.yaml lists the same keys and modules.

import os

from sldata.params import validate_params, write_snapshot
from sldata.stages import code_files, stage_params

validate_params(config, source="params.yaml (Snakemake config)")
PARAMS_FILE = str(write_snapshot(config, os.path.join(".snakemake", "params")))

DATA = config["data_dir"]
LOGS = config["logs_dir"]
BENCHMARKS = config["benchmarks_dir"]
SOURCES = config["sources"]
SUBSET = config["subset"]
SHARDS = config["shards"]["count"]
SHARD_IDS = [f"{i:03d}" for i in range(SHARDS)]
# The frame / hand-crop array of a shard is named by its storage (see sldata/frames.py).
FRAMES_FILE = "frames.npy" if config["frames"]["storage"] == "npy" else "frames.parquet"
HAND_CROPS_FILE = "crops.npy" if config["hand_crops"]["storage"] == "npy" else "crops.parquet"

wildcard_constraints:
    shard=r"\d{3}",


def data_path(*parts):
    """A path under the configured data_dir."""
    return "/".join([DATA, *parts])


def log_path(name):
    """A rule's log file under the configured logs_dir."""
    return "/".join([LOGS, name])


def benchmark_path(name):
    """A rule's benchmark file under the configured benchmarks_dir."""
    return "/".join([BENCHMARKS, name])


def get_wlasl_annotation(wildcards):
    """The local WLASL annotation as an input (so edits trigger a rerun); none when fetched."""
    local = SOURCES["wlasl"]["annotation"]["local_path"]
    return [local] if SOURCES["wlasl"]["enabled"] and local else []


def get_local_store(wildcards):
    """The local video store folder as an input (its changes trigger a rerun); none when unset."""
    store = config["acquire"]["local_store"]["dir"]
    return [store] if store else []


def get_train_threads(train):
    """Cores of the pose model's training job: `threads` times its data-parallel processes, or times
    the ensemble members it trains side by side (`train.ensemble_jobs`, only with one process)."""
    if train["processes"] > 1:
        return train["threads"] * train["processes"]
    return train["threads"] * max(1, min(train["ensemble_jobs"], len(train["ensemble"])))


def get_shard_files(stage, name):
    """One file per shard: data/<stage>/shard-NNN/<name>."""
    return [data_path(stage, f"shard-{s}", name) for s in SHARD_IDS]


def get_shard_paths(stage, suffix):
    """One file per shard: data/<stage>/shard-NNN<suffix>."""
    return [data_path(stage, f"shard-{s}{suffix}") for s in SHARD_IDS]


def shard_root(path):
    """data/<stage> from data/<stage>/shard-NNN/<file> or data/<stage>/shard-NNN.parquet."""
    parent = os.path.dirname(path)
    return os.path.dirname(parent) if os.path.basename(parent).startswith("shard-") else parent


def get_final_outputs():
    """Final targets: the last artifact of every stage built so far.

    Frames and hand crops (for RGB models) are not here: build them with the `frames_all` and
    `hand_crops_all` targets (pipeline/rules/features.smk).
    """
    return [
        data_path("subset", "samples.parquet"),
        data_path("subset", "label_map.json"),
        data_path("coverage", "coverage.json"),
        data_path("pose_summary", "summary.json"),
        data_path("train", "metrics.json"),
        data_path("eval", "metrics.json"),
        data_path("export", "sign-recognizer"),
        data_path("example", "prediction.txt"),
    ]
