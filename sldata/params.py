"""Loading and validating ``params.yaml``, the single source of truth for every stage.

Validation is by the JSON Schema in ``pipeline/schemas/params.schema.yaml`` plus a few
cross-field checks, and every error names the key at fault, e.g.::

    params.yaml: subset.k: 'abc' is not of type 'integer'
    params.yaml: subset: unknown key 'kk' (allowed: classes, dataset, k, resplit)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "pipeline" / "schemas" / "params.schema.yaml"


class ParamsError(ValueError):
    """``params.yaml`` is invalid; the message lists every problem, one per line, by key."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        names = ", ".join(repr(e) for e in extra)
        return f"{key}: unknown key {names} (allowed: {', '.join(allowed)})"
    if error.validator == "required":
        return f"{key}: {error.message}"
    return f"{key}: {error.message}"


def validate_params(params: Any, source: str = "params.yaml") -> dict[str, Any]:
    """Validate a params mapping; return it unchanged or raise :class:`ParamsError`.

    Parameters
    ----------
    params:
        The parsed YAML (a dict).
    source:
        Name used in error messages (the file the params came from).
    """
    validator = jsonschema.Draft202012Validator(load_schema())
    problems = [_describe(e) for e in sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))]
    if not problems:
        problems = _cross_checks(params)
    if problems:
        raise ParamsError("\n".join(f"{source}: {p}" for p in problems))
    return params


def _cross_checks(params: dict[str, Any], only_subset: bool = False) -> list[str]:
    problems = []
    subset = params["subset"]
    if not only_subset and not params["sources"][subset["dataset"]]["enabled"]:
        problems.append(
            f"subset.dataset: {subset['dataset']!r} is selected but sources.{subset['dataset']}.enabled is false"
        )
    fractions = subset["resplit"]["fractions"]
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        problems.append(f"subset.resplit.fractions: must add up to 1, got {total:g}")
    glosses = subset["classes"]
    if len(set(glosses)) != len(glosses):
        problems.append("subset.classes: a gloss is listed twice")
    return problems


def validate_section(name: str, value: Any, source: str = "command line") -> dict[str, Any]:
    """Validate one top-level section (e.g. ``subset``) on its own, as a CLI does with its flags."""
    schema = load_schema()
    section_schema = {"$schema": schema["$schema"], **schema["properties"][name]}
    validator = jsonschema.Draft202012Validator(section_schema)
    problems = [
        _describe(e).replace("(top level)", name, 1) if not e.absolute_path else f"{name}.{_describe(e)}"
        for e in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    ]
    if not problems and name == "subset":
        problems = _cross_checks({"subset": value, "sources": None}, only_subset=True)
    if problems:
        raise ParamsError("\n".join(f"{source}: {p}" for p in problems))
    return value


def apply_overrides(params: dict[str, Any], overrides: Sequence[str], source: str = "--set") -> dict[str, Any]:
    """``params`` with each ``key.sub=value`` of ``overrides`` applied (a deep copy; ``value`` is YAML).

    ``--set train.lr=0.002``, ``--set subset.classes=[book,how]``, ``--set train.load_weights=''``.
    Missing parents are created (for the entries of a map such as ``train.heads``); the result is
    validated by the caller, so a misspelt key fails there, named.

    Raises
    ------
    ParamsError
        An override is not ``KEY=VALUE``, its value is not YAML, or a parent of its key is not a mapping.
    """
    out = copy.deepcopy(params)
    for item in overrides:
        key, sep, text = item.partition("=")
        path = [k for k in key.strip().split(".")]
        if not sep or not all(path):
            raise ParamsError(f"{source} {item!r}: expected KEY=VALUE with a dotted KEY, e.g. train.lr=0.002")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ParamsError(f"{source} {item!r}: value is not valid YAML: {exc}") from exc
        node = out
        for i, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"{source} {item!r}: {'.'.join(path[:i + 1])} is not a section")
        node[path[-1]] = value
    return out


def load_params(path: str | Path = "params.yaml", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a params file, apply ``--set`` style ``overrides`` (``key.sub=value``) and validate the result.

    Raises
    ------
    ParamsError
        The file is missing or not YAML, an override is malformed, or a value is invalid (by key).
    """
    p = Path(path)
    if not p.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root or pass --params PATH)")
    try:
        with open(p, encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if overrides:
        if not isinstance(params, dict):
            raise ParamsError(f"{path}: not a mapping of sections")
        params = apply_overrides(params, overrides)
    source = f"{path} (with --set {' '.join(overrides)})" if overrides else str(path)
    return validate_params(params, source=source)


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    """``--params PATH`` (default ``params.yaml`` in the working directory) and repeatable ``--set KEY=VALUE``."""
    group = parser.add_argument_group("settings (every value comes from the params file)")
    group.add_argument("--params", default="params.yaml", type=Path, metavar="PATH",
                       help="params file, validated against pipeline/schemas/params.schema.yaml (default: %(default)s)")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one value for this run, e.g. --set train.lr=0.002 (YAML value; repeatable)")


def params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The validated params of a command that took :func:`add_params_arguments`."""
    return load_params(args.params, args.overrides)


def get_key(params: Mapping[str, Any], dotted: str) -> Any:
    """The value at ``dotted`` (``"pose.frame_step"``); ``KeyError`` naming the key when absent."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"params has no {dotted!r}")
        node = node[part]
    return node


def write_snapshot(params: Mapping[str, Any], folder: str | Path) -> Path:
    """Write ``params`` (already validated) to ``folder/params-<sha256 prefix>.yaml``; return that path.

    Snakemake merges ``--configfile``/``--config`` over ``params.yaml`` in memory, so its rules hand
    the commands this snapshot of what it resolved instead of ``params.yaml``. The name is the
    content's hash, so runs with different configs never share a file and an existing file is
    never rewritten (a job reads a complete file even while another workflow starts).
    """
    text = yaml.safe_dump(json.loads(json.dumps(params)), sort_keys=False, allow_unicode=True)
    path = Path(folder) / f"params-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path
