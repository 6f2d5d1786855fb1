"""Command-line flags for a whole params.yaml section, generated from the JSON schema.

A stage with many settings (``acquire``, ``pose``, ``train``...) takes one flag per leaf key,
spelled as DVC's dictionary unpacking writes them: ``${acquire}`` in ``dvc.yaml`` becomes
``--network --min_success_ratio 0.5 --download.workers 4 ...`` (booleans as
``--key``/``--no-key`` with ``parsing.bool: boolean_optional`` in ``.dvc/config``).
:func:`section_flags` renders the same string for Snakemake rules, so both engines pass every
value explicitly and run the same command. Every flag is required, its type comes from the
schema, and the assembled section is validated like params.yaml itself.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator, Mapping
from typing import Any

from sldata.params import load_schema, validate_section

_TYPES = {"integer": int, "number": float, "string": str}


def _leaves(schema: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    for key, sub in schema.get("properties", {}).items():
        path = (*prefix, key)
        if sub.get("type") == "object":
            yield from _leaves(sub, path)
        else:
            yield path, sub


def _dest(section: str, path: tuple[str, ...]) -> str:
    return "__".join((section, *path))


def add_section_arguments(parser: argparse.ArgumentParser, section: str) -> None:
    """Add one required flag per leaf of params section ``section`` (help from the schema)."""
    schema = load_schema()["properties"][section]
    group = parser.add_argument_group(f"params.yaml section '{section}' (every key required)")
    for path, sub in _leaves(schema):
        flag = "--" + ".".join(path)
        help_text = " ".join(str(sub.get("description", "")).split()) or None
        kind = sub.get("type")
        if kind == "boolean":
            group.add_argument(flag, dest=_dest(section, path), action=argparse.BooleanOptionalAction,
                               required=True, help=help_text)
        elif kind in _TYPES:
            group.add_argument(flag, dest=_dest(section, path), type=_TYPES[kind], required=True,
                               choices=sub.get("enum"), metavar=kind.upper(), help=help_text)
        else:
            raise TypeError(f"params schema: {section}.{'.'.join(path)} has unsupported type {kind!r}")


def section_from_args(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The nested section dict from parsed flags, validated against the schema."""
    schema = load_schema()["properties"][section]
    out: dict[str, Any] = {}
    for path, _ in _leaves(schema):
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = getattr(args, _dest(section, path))
    return validate_section(section, out, source="command line")


def section_flags(value: Mapping[str, Any], prefix: str = "") -> str:
    """Render a section as DVC's dictionary unpacking does (shell-quoted), for Snakemake rules."""
    parts: list[str] = []
    for key, sub in value.items():
        name = f"{prefix}{key}"
        if isinstance(sub, Mapping):
            parts.append(section_flags(sub, f"{name}."))
        elif isinstance(sub, bool):
            parts.append(f"--{name}" if sub else f"--no-{name}")
        else:
            parts.append(f"--{name} {shlex.quote(str(sub))}")
    return " ".join(p for p in parts if p)
