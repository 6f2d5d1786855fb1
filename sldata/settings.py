"""Building frozen settings dataclasses from ``params.yaml`` mappings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def settings_from_dict(cls: type[T], data: Mapping[str, Any], label: str | None = None) -> T:
    """Build the frozen settings dataclass ``cls`` from ``data``, refusing unknown and missing keys.

    Lists are turned into tuples (YAML has no tuples) so the result stays hashable.
    ``label`` names the settings in the error message (default: the class name).

    Raises
    ------
    ValueError
        If ``data`` has keys that are not fields of ``cls``, or lacks one without a default (named).
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"unknown {label or cls.__name__} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    required = {f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise ValueError(f"missing {label or cls.__name__} setting(s): {', '.join(missing)} (settings have no "
                         "defaults: take them from params)")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)
