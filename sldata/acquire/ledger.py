"""The download ledger: one Parquet row per source video, saying what happened to it.

The ledger is keyed by ``source_key``. Rows of kind "clip" (``pretrimmed=True``) are clips
served from a pretrimmed local store; their key is the clip's ``sample_id`` (which can never
collide with a ``youtube-``/``url-`` source key).

It is loaded and saved atomically (:func:`sldata.atomic.atomic_path`), and merging new results
into an old ledger replaces rows with the same key and keeps every other old row.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sldata.atomic import atomic_path

LEDGER_SCHEMA_VERSION = "1"


class FailureReason(str, enum.Enum):
    """Typed reasons a source could not be acquired."""

    NOT_FOUND = "not_found"  # HTTP 404, "This video does not exist"
    PRIVATE_OR_REMOVED = "private_or_removed"  # "Private video", "Video unavailable", account terminated
    FORBIDDEN = "forbidden"  # HTTP 403
    LOGIN_REQUIRED = "login_required"  # age-gated, sign-in / members only
    GEO_BLOCKED = "geo_blocked"
    RATE_LIMITED = "rate_limited"  # HTTP 429, "Too Many Requests"
    SERVER_ERROR = "server_error"  # HTTP 5xx
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"  # connection refused/reset, DNS
    UNSUPPORTED_URL = "unsupported_url"  # no extractor, a playlist, a page without a video
    NOT_A_VIDEO = "not_a_video"  # HTML page, .swf, audio only
    EMPTY_FILE = "empty_file"
    TRUNCATED_OR_UNDECODABLE = "truncated_or_undecodable"
    TOO_SHORT_FOR_CROPS = "too_short_for_crops"  # shorter than the latest annotated clip end
    NOT_IN_LOCAL_STORE = "not_in_local_store"  # a pretrimmed clip absent from its store
    UNKNOWN = "unknown"


DEFAULT_RETRYABLE: frozenset[FailureReason] = frozenset(
    {
        FailureReason.RATE_LIMITED,
        FailureReason.SERVER_ERROR,
        FailureReason.TIMEOUT,
        FailureReason.NETWORK_ERROR,
        FailureReason.EMPTY_FILE,
        FailureReason.TRUNCATED_OR_UNDECODABLE,
        FailureReason.UNKNOWN,
    }
)

STATUSES = ("ok", "failed")

LEDGER_COLUMNS: list[tuple[str, pa.DataType, bool, str]] = [
    ("source_key", pa.string(), False, "Source video id ('youtube-<id>'/'url-<sha16>'); sample_id for pretrimmed clips."),
    ("status", pa.string(), False, "'ok' or 'failed'."),
    ("failure_reason", pa.string(), True, "FailureReason value; null when ok."),
    ("retryable", pa.bool_(), False, "Whether a rerun tries this source again."),
    ("attempts", pa.int64(), False, "Network attempts over all runs (0 for local-store hits)."),
    ("http_status", pa.int32(), True, "Last HTTP status seen in an error, if any."),
    ("url", pa.string(), True, "URL requested."),
    ("path", pa.string(), True, "File relative to the download folder, when ok (a hard/symbolic link for store hits)."),
    ("store_path", pa.string(), True, "Absolute path of the local-store file it came from."),
    ("from_local_store", pa.bool_(), False, "True when the file came from a local store, not the network."),
    ("pretrimmed", pa.bool_(), False, "True when the file is one clip already trimmed and cropped."),
    ("bytes", pa.int64(), True, "File size."),
    ("sha256", pa.string(), True, "SHA-256 of the file."),
    ("duration_s", pa.float64(), True, "Decoded duration in seconds."),
    ("fps", pa.float64(), True, "Average frame rate."),
    ("width", pa.int32(), True, "Frame width in pixels."),
    ("height", pa.int32(), True, "Frame height in pixels."),
    ("codec", pa.string(), True, "Video codec."),
    ("n_frames", pa.int64(), True, "Frame count (decoded or container estimate)."),
    ("min_duration_s", pa.float64(), True, "Duration the clips need (latest annotated end), if known."),
    ("last_error", pa.string(), True, "Last error message (cut to 1000 characters)."),
    ("updated_at", pa.timestamp("us", tz="UTC"), False, "When this row was last written."),
]
LEDGER_SCHEMA = pa.schema(
    [pa.field(n, t, nullable=nu, metadata={"description": d}) for n, t, nu, d in LEDGER_COLUMNS],
    metadata={"sldata_ledger_version": LEDGER_SCHEMA_VERSION},
)
_COLUMN_NAMES = [c[0] for c in LEDGER_COLUMNS]


class LedgerError(ValueError):
    """A ledger file or row that does not follow the schema."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class LedgerRow:
    """One source's outcome; fields are the ledger columns (see ``LEDGER_COLUMNS``)."""

    source_key: str
    status: str
    failure_reason: str | None = None
    retryable: bool = False
    attempts: int = 0
    http_status: int | None = None
    url: str | None = None
    path: str | None = None
    store_path: str | None = None
    from_local_store: bool = False
    pretrimmed: bool = False
    bytes: int | None = None
    sha256: str | None = None
    duration_s: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    n_frames: int | None = None
    min_duration_s: float | None = None
    last_error: str | None = None
    updated_at: dt.datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def validate(self, where: str = "") -> None:
        """Raise :class:`LedgerError` naming the row and field when a value is out of range."""
        at = f"{where}row source_key={self.source_key!r}"
        if not isinstance(self.source_key, str) or not self.source_key:
            raise LedgerError(f"{at}: field 'source_key' must be a non-empty string")
        if self.status not in STATUSES:
            raise LedgerError(f"{at}: field 'status' is {self.status!r}, expected one of {STATUSES}")
        if self.status == "ok" and self.failure_reason is not None:
            raise LedgerError(f"{at}: field 'failure_reason' must be null when status is 'ok'")
        if self.status == "failed":
            valid = {r.value for r in FailureReason}
            if self.failure_reason not in valid:
                raise LedgerError(
                    f"{at}: field 'failure_reason' is {self.failure_reason!r}, expected one of {sorted(valid)}"
                )
        if self.attempts < 0:
            raise LedgerError(f"{at}: field 'attempts' is negative ({self.attempts})")

    def evolve(self, **changes: Any) -> LedgerRow:
        return replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def _clean(value: Any) -> Any:
    """pandas/pyarrow missing values to None, numpy scalars to Python."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (AttributeError, ValueError):
            return value
    return value


class Ledger:
    """An in-memory ledger: ``source_key -> LedgerRow``.

    Examples
    --------
    >>> led = Ledger.load("data/downloads/ledger.parquet")  # empty when the file is absent
    >>> led.upsert(LedgerRow(source_key="url-0123456789abcdef", status="ok"))
    >>> led.save("data/downloads/ledger.parquet")
    """

    def __init__(self, rows: Iterable[LedgerRow] = ()) -> None:
        self._rows: dict[str, LedgerRow] = {}
        for row in rows:
            self.upsert(row)

    # -- mapping-ish API --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[LedgerRow]:
        return iter(self._rows.values())

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def get(self, key: str) -> LedgerRow | None:
        return self._rows.get(key)

    def keys(self) -> list[str]:
        return list(self._rows)

    def upsert(self, row: LedgerRow) -> None:
        """Insert ``row`` or replace the row with the same ``source_key``."""
        if not isinstance(row, LedgerRow):
            raise TypeError(f"expected LedgerRow, got {type(row).__name__}")
        self._rows[row.source_key] = row

    def merge(self, other: Ledger | Iterable[LedgerRow]) -> Ledger:
        """A new ledger: every row of ``self``, with rows of ``other`` replacing same keys."""
        out = Ledger(self)
        for row in other:
            out.upsert(row)
        return out

    # -- frames and files -------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        return self.to_table().to_pandas()

    def to_table(self) -> pa.Table:
        rows = sorted(self._rows.values(), key=lambda r: r.source_key)
        data = {name: [getattr(r, name) for r in rows] for name in _COLUMN_NAMES}
        return pa.Table.from_pydict(data, schema=LEDGER_SCHEMA)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, where: str = "") -> Ledger:
        """Build from a DataFrame with the ledger columns; errors name ``where``, row and field."""
        missing = [c for c in _COLUMN_NAMES if c not in df.columns]
        if missing:
            raise LedgerError(f"{where}missing ledger column(s) {missing}")
        extra = [c for c in df.columns if c not in _COLUMN_NAMES]
        if extra:
            raise LedgerError(f"{where}unknown ledger column(s) {extra} (written by another version?)")
        out = cls()
        names = {f.name for f in fields(LedgerRow)}
        for i, rec in enumerate(df[_COLUMN_NAMES].to_dict("records")):
            values = {k: _clean(v) for k, v in rec.items() if k in names}
            if isinstance(values.get("updated_at"), pd.Timestamp):
                values["updated_at"] = values["updated_at"].to_pydatetime()
            for bool_col in ("retryable", "from_local_store", "pretrimmed"):
                values[bool_col] = bool(values.get(bool_col) or False)
            values["attempts"] = int(values.get("attempts") or 0)
            try:
                row = LedgerRow(**values)
            except LedgerError as exc:
                raise LedgerError(f"{where}row {i}: {exc}") from None
            if row.source_key in out:
                raise LedgerError(f"{where}row {i}: duplicate source_key {row.source_key!r}")
            out.upsert(row)
        return out

    @classmethod
    def load(cls, path: str | Path) -> Ledger:
        """Read a ledger file; a missing file is an empty ledger."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise LedgerError(f"{path}: not a readable Parquet ledger: {exc}") from exc
        return cls.from_frame(table.to_pandas(), where=f"{path}: ")

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file renamed over ``path``)."""
        table = self.to_table()
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
