# Shared helpers used by every *.smk file (params validation, paths, get_* input functions).

import os

from sldata.params import validate_params

validate_params(config, source="params.yaml (Snakemake config)")

DATA = config["data_dir"]
SOURCES = config["sources"]
SUBSET = config["subset"]


def data_path(*parts):
    """A path under the configured data_dir."""
    return "/".join([DATA, *parts])


def get_wlasl_annotation(wildcards):
    """The local WLASL annotation as an input (so edits trigger a rerun); none when fetched."""
    local = SOURCES["wlasl"]["annotation"]["local_path"]
    return [local] if SOURCES["wlasl"]["enabled"] and local else []


def get_final_outputs():
    """Final targets: the last artifact of every stage built so far."""
    return [
        data_path("subset", "samples.parquet"),
        data_path("subset", "label_map.json"),
    ]
