"""A local folder of already-downloaded videos, consulted before the network.

Two kinds of store exist:

* **untrimmed** (``pretrimmed=False``): whole source videos, as a downloader saved them, keyed
  by ``source_key`` (or another id the caller knows, e.g. a YouTube id or WLASL video_id of a
  non-YouTube source). A hit replaces a network download of that *source*.
* **pretrimmed** (``pretrimmed=True``): one file per *clip*, already trimmed and cropped (like
  ``wlasl100_clips/videos/<video_id>.mp4``), keyed by the clip's ``original_id``. A hit serves
  that clip only, and the later stages must not trim or crop it again.

:func:`sldata.acquire.download.build_requests` turns a manifest into requests of the right kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_EXTS: tuple[str, ...] = ("mp4", "mkv", "webm", "mov", "avi")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")


def is_safe_key(key: str) -> bool:
    """Whether ``key`` can be used as a file name stem: no separators, no ``..``, no leading dot."""
    return bool(isinstance(key, str) and _SAFE_KEY.match(key)) and ".." not in key


def check_safe_key(key: str, what: str = "key") -> str:
    """Return ``key`` or raise :class:`ValueError` saying why it is not a safe file name."""
    if not is_safe_key(key):
        raise ValueError(
            f"{what} {key!r} is not a safe file name (allowed: letters, digits, '_', '-', '.'; "
            "must not start with '.' or '-', contain '..' or be longer than 200 characters)"
        )
    return key


@dataclass(frozen=True)
class LocalStore:
    """A folder of videos named ``<key>.<ext>``.

    Attributes
    ----------
    root
        The folder (not modified; it may be read-only).
    pretrimmed
        True when its files are already trimmed and cropped per clip (keyed by clip
        ``original_id``); False when they are whole source videos.
    exts
        Extensions tried, in order.
    name
        Label used in logs and the ledger's ``last_error``/``store_path`` context.
    """

    root: Path
    pretrimmed: bool = False
    exts: tuple[str, ...] = VIDEO_EXTS
    name: str = field(default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if not self.name:
            object.__setattr__(self, "name", str(self.root))

    def lookup(self, key: str) -> Path | None:
        """The file ``<root>/<key>.<ext>`` for the first existing extension, else None.

        Raises
        ------
        ValueError
            When ``key`` is not a safe file name (``../x``, ``a/b``, ``.hidden``...).
        """
        check_safe_key(key, f"local store key (store {self.name})")
        for ext in self.exts:
            candidate = self.root / f"{key}.{ext}"
            if candidate.is_file() and candidate.stat().st_size > 0:
                return candidate
        return None

    def lookup_any(self, keys: tuple[str, ...] | list[str]) -> tuple[str, Path] | None:
        """The first of ``keys`` found in the store, with its file; unsafe keys are skipped."""
        for key in keys:
            if not is_safe_key(key):
                continue
            hit = self.lookup(key)
            if hit is not None:
                return key, hit
        return None
