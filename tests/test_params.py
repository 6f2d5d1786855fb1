"""params.yaml validation: unknown keys, wrong types and out-of-range values fail fast, naming the key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, default_params
from sldata.params import ParamsError, load_params, validate_params, validate_section


def test_committed_params_are_valid() -> None:
    assert load_params(REPO_ROOT / "params.yaml")["subset"]["k"] == 100


def mutate(path: str, value: object) -> dict:
    params = copy.deepcopy(default_params())
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return params


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("subset.kk", 5, r"subset: unknown key 'kk' \(allowed: classes, dataset, k, resplit\)"),
        ("subset.k", "abc", r"subset.k: 'abc' is not of type 'integer'"),
        ("subset.k", 0, r"subset.k: 0 is less than the minimum of 1"),
        ("subset.dataset", "autsl", r"subset.dataset: 'autsl' is not one of"),
        ("sources.wlasl.annotation.sha256", "xyz", r"sources.wlasl.annotation.sha256: 'xyz' does not match"),
        ("sources.wlasl.annotation.url", "ftp://x/y.json", r"sources.wlasl.annotation.url"),
        ("sources.msasl.splits", ["train", "dev"], r"sources.msasl.splits.1: 'dev' is not one of"),
        ("sources.msasl.splits", "train,val", r"sources.msasl.splits: 'train,val' is not of type 'array'"),
        ("sources.wlasl.enabled", "yes", r"sources.wlasl.enabled: 'yes' is not of type 'boolean'"),
        ("subset.resplit", KeyError, r"subset: 'resplit' is a required property"),
        ("subset.resplit.fractions.train", 0.9, r"subset.resplit.fractions: must add up to 1, got 1.2"),
        ("sources.wlasl.enabled", False, r"subset.dataset: 'wlasl' is selected but sources.wlasl.enabled is false"),
        ("extra_section", {}, r"\(top level\): unknown key 'extra_section'"),
    ],
)
def test_bad_params_name_the_key(path: str, value: object, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        validate_params(mutate(path, value))


def test_section_validation_used_by_the_cli() -> None:
    section = default_params()["subset"]
    assert validate_section("subset", section) is section
    with pytest.raises(ParamsError, match=r"command line: subset.k: -3 is less than the minimum"):
        validate_section("subset", {**section, "k": -3})
    with pytest.raises(ParamsError, match="listed twice"):
        validate_section("subset", {**section, "classes": ["book", "book"]})


def test_check_params_cli_exits_2_with_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(mutate("subset.k", "many")))
    result = subprocess.run(
        [sys.executable, "-m", "sldata", "check-params", "--params", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "subset.k: 'many' is not of type 'integer'" in result.stderr
    assert "Traceback" not in result.stderr
    good = subprocess.run([sys.executable, "-m", "sldata", "check-params", "--params", str(REPO_ROOT / "params.yaml")],
                          capture_output=True, text=True)
    assert good.returncode == 0 and "valid" in good.stdout
