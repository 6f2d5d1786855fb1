"""Loading and validating ``params.yaml``, the single source of truth for every stage.

Validation is by the JSON Schema in ``pipeline/schemas/params.schema.yaml`` plus a few
cross-field checks, and every error names the key at fault, e.g.::

    params.yaml: subset.k: 'abc' is not of type 'integer'
    params.yaml: subset: unknown key 'kk' (allowed: classes, dataset, k, resplit)
"""

from __future__ import annotations

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
    glosses = split_list(subset["classes"])
    if len(set(glosses)) != len(glosses):
        problems.append("subset.classes: a gloss is listed twice")
    return problems


def split_list(text: str) -> list[str]:
    """Parse a comma-separated params value (``"train,val"``) into its non-empty, stripped items."""
    return [item.strip() for item in text.split(",") if item.strip()]


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


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate a params file."""
    p = Path(path)
    if not p.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        with open(p, encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    return validate_params(params, source=str(path))
