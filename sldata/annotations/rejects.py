"""Rejected annotation rows: what was refused, where, and why."""

from __future__ import annotations

import enum
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


class Reason(str, enum.Enum):
    """Reason codes for a rejected annotation row (stable strings, stored in Parquet)."""

    MALFORMED_FILE = "malformed_file"
    """The file is not valid JSON or does not have the expected top-level shape."""
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    """A value of the right type outside its allowed range (negative time, fps <= 0, bad box)."""
    END_BEFORE_START = "end_before_start"
    """The temporal crop ends before, or where, it starts: it is empty or reversed."""
    INCONSISTENT_CROP = "inconsistent_crop"
    """The crop in seconds and the crop in frames disagree by more than the tolerance."""
    UNKNOWN_LABEL = "unknown_label"
    DUPLICATE_ID = "duplicate_id"
    DUPLICATE_GLOSS = "duplicate_gloss"
    UNSAFE_ID = "unsafe_id"
    """An id that is unsafe to use in a file name: a path separator, ``..``, control characters."""
    UNSUPPORTED_URL_SCHEME = "unsupported_url_scheme"
    MALFORMED_URL = "malformed_url"


@dataclass(frozen=True)
class Reject:
    """One rejected input row.

    Attributes
    ----------
    dataset:
        ``"wlasl"`` or ``"msasl"``.
    file:
        The annotation file the row came from, as given in params.
    row:
        Where the row is in that file, e.g. ``"[12].instances[3]"`` or ``"[4051]"``.
    field:
        The offending field, or ``""`` when the whole row is at fault.
    reason:
        A :class:`Reason` code.
    detail:
        A human sentence saying what was found and what was expected.
    record:
        The offending record as compact JSON, cut to 500 characters.
    """

    dataset: str
    file: str
    row: str
    field: str
    reason: str
    detail: str
    record: str = ""

    def __str__(self) -> str:
        where = f"{self.file}{self.row}" + (f".{self.field}" if self.field else "")
        return f"{where}: {self.reason}: {self.detail}"


def compact_record(record: Any, limit: int = 500) -> str:
    """JSON of ``record`` for the rejects table, cut to ``limit`` characters."""
    try:
        text = json.dumps(record, ensure_ascii=False, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(record)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class RejectLog:
    """Collects rejects; a reader appends, the manifest stage writes and summarises them."""

    rejects: list[Reject] = field(default_factory=list)

    def add(
        self,
        dataset: str,
        file: str,
        row: str,
        field_name: str,
        reason: Reason,
        detail: str,
        record: Any = None,
    ) -> None:
        self.rejects.append(
            Reject(
                dataset=dataset,
                file=file,
                row=row,
                field=field_name,
                reason=reason.value,
                detail=detail,
                record=compact_record(record) if record is not None else "",
            )
        )

    def __len__(self) -> int:
        return len(self.rejects)

    def counts(self) -> Counter[str]:
        """Number of rejects per reason code."""
        return Counter(r.reason for r in self.rejects)

    def as_dicts(self) -> list[dict[str, str]]:
        return [asdict(r) for r in self.rejects]
