"""Command-line flags for a whole params.yaml section, generated from the JSON schema.

A stage with many settings (``acquire``, ``pose``, ``train``...) takes one flag per leaf key,
spelled as DVC's dictionary unpacking writes them: ``${acquire}`` in ``dvc.yaml`` becomes
``--network --min_success_ratio 0.5 --download.workers 4 ...`` (booleans as
``--key``/``--no-key`` with ``parsing.bool: boolean_optional`` in ``.dvc/config``).
:func:`section_flags` renders the same string for Snakemake rules, so both engines pass every
value explicitly and run the same command. Every flag is required, its type comes from the
schema, and the assembled section is validated like params.yaml itself.

A *map* is an object of free-named entries sharing one schema (an object whose schema has no
``properties`` and an ``additionalProperties`` schema, e.g. ``train.heads``: ``{gloss: {column:
label, weight: 1.0}, ...}``). DVC writes it as ``--heads.gloss.column label --heads.gloss.weight
1.0``; argparse cannot declare flags whose names are data, so a command that takes a section
with a map parses with :func:`parse_args_with_maps`, which reads those flags from what argparse
left over, typed by the entry schema.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sldata.params import load_schema, validate_section

_TYPES = {"integer": int, "number": float, "string": str}


def _is_map(schema: Mapping[str, Any]) -> bool:
    """An object of free-named entries: no ``properties``, an ``additionalProperties`` schema."""
    return (schema.get("type") == "object" and not schema.get("properties")
            and isinstance(schema.get("additionalProperties"), Mapping))


def _leaves(schema: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    for key, sub in schema.get("properties", {}).items():
        path = (*prefix, key)
        if _is_map(sub):
            continue
        if sub.get("type") == "object":
            yield from _leaves(sub, path)
        else:
            yield path, sub


def _maps(schema: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    """``(path, entry schema)`` of every map inside ``schema``."""
    for key, sub in schema.get("properties", {}).items():
        path = (*prefix, key)
        if _is_map(sub):
            yield path, sub["additionalProperties"]
        elif sub.get("type") == "object":
            yield from _maps(sub, path)


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
    maps = list(_maps(schema))
    if maps:
        parser.set_defaults(_section_maps=list(parser.get_default("_section_maps") or [])
                            + [(section, path) for path, _ in maps])
        lines = []
        for path, entry in maps:
            sub_schema = schema
            for key in path:
                sub_schema = sub_schema["properties"][key]
            keys = " ".join(f"--{'.'.join(path)}.NAME.{'.'.join(leaf)} {str(sub.get('type', '')).upper()}"
                            for leaf, sub in _leaves(entry))
            lines.append(f"{' '.join(str(sub_schema.get('description', '')).split())} One entry per NAME: {keys}.")
        group.description = " ".join(lines)


def _coerce(value: str, kind: str | None, flag: str) -> Any:
    if kind in _TYPES:
        try:
            return _TYPES[kind](value)
        except ValueError:
            raise ValueError(f"{flag}: {value!r} is not of type {kind!r}") from None
    raise ValueError(f"{flag}: unsupported type {kind!r}")


def parse_map_flags(args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    """Take the flags of the maps of the sections in ``args`` out of ``extra`` (argparse's leftovers).

    An entry of the map at ``path`` is spelled ``--<path>.<NAME>.<key> VALUE`` (booleans
    ``--<path>.<NAME>.<key>`` / ``--no-<path>.<NAME>.<key>``), as DVC's dictionary unpacking
    writes it. The values, typed by the entry schema, are kept on ``args`` for
    :func:`section_from_args`. Returns the tokens that are not map flags.

    Raises
    ------
    ValueError
        A map flag names an unknown key, lacks its value or has a value of the wrong type.
    """
    sections = getattr(args, "_section_maps", None) or []
    schema = load_schema()["properties"] if sections else {}  # commands without sections need no schema
    values: dict[tuple[str, tuple[str, ...]], dict[str, dict[str, Any]]] = {}
    specs = []
    for section, path in sections:
        entry = dict(_maps(schema[section]))[path]
        values[(section, path)] = {}
        specs.append((section, path, dict(_leaves(entry))))
    rest: list[str] = []
    i = 0
    while i < len(extra):
        token = extra[i]
        negated = token.startswith("--no-")
        body, has_inline, inline = (token[5:] if negated else token[2:] if token.startswith("--") else "").partition("=")
        match = None
        for section, path, leaves in specs:
            prefix = ".".join(path) + "."
            if body.startswith(prefix) and "." in body[len(prefix):]:
                name, _, key = body[len(prefix):].partition(".")
                match = (section, path, leaves, name, tuple(key.split(".")))
                break
        if match is None:
            rest.append(token)
            i += 1
            continue
        section, path, leaves, name, leaf = match
        if leaf not in leaves:
            raise ValueError(f"{token}: unknown key {'.'.join(leaf)!r} for {'.'.join(path)}.{name} "
                             f"(keys: {', '.join('.'.join(k) for k in leaves)})")
        kind = leaves[leaf].get("type")
        if kind == "boolean":
            value: Any = not negated
            i += 1
        elif has_inline:
            value = _coerce(inline, kind, token)
            i += 1
        elif i + 1 < len(extra):
            value = _coerce(extra[i + 1], kind, token)
            i += 2
        else:
            raise ValueError(f"{token}: expected a value")
        node = values[(section, path)].setdefault(name, {})
        for key in leaf[:-1]:
            node = node.setdefault(key, {})
        node[leaf[-1]] = value
    args._map_values = values
    return rest


def parse_args_with_maps(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` that also reads the map flags of the chosen command's sections."""
    args, extra = parser.parse_known_args(argv)
    try:
        rest = parse_map_flags(args, extra)
    except ValueError as exc:
        parser.error(str(exc))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def section_from_args(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The nested section dict from parsed flags, validated against the schema."""
    schema = load_schema()["properties"][section]
    out: dict[str, Any] = {}
    for path, _ in _leaves(schema):
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = getattr(args, _dest(section, path))
    map_values = getattr(args, "_map_values", {})
    for path, _ in _maps(schema):
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = map_values.get((section, path), {})
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
