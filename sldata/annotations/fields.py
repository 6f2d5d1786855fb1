"""Field checks shared by the annotation readers: types, safe ids, URLs and source keys."""

from __future__ import annotations

import hashlib
import math
import re
import urllib.parse
from typing import Any

from sldata.annotations.rejects import Reason

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""Ids become file names: letters, digits, ``_`` and ``-`` only, at most 64, no leading ``-``/``_``."""

ALLOWED_URL_SCHEMES = ("http", "https")
YOUTUBE_HOSTS = {"youtube.com", "www.youtube.com", "m.youtube.com", "youtu.be", "www.youtu.be"}
YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


class FieldError(ValueError):
    """A field failed a check; carries the reason code and the field name."""

    def __init__(self, reason: Reason, field: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.detail = detail


def require(record: dict[str, Any], name: str) -> Any:
    """Return ``record[name]`` or raise a MISSING_FIELD error (``None`` counts as missing)."""
    if name not in record or record[name] is None:
        raise FieldError(Reason.MISSING_FIELD, name, f"required field {name!r} is missing")
    return record[name]


def as_int(value: Any, name: str) -> int:
    """An integer (bools and floats are refused; a float with no fraction is accepted)."""
    if isinstance(value, bool):
        raise FieldError(Reason.WRONG_TYPE, name, f"expected an integer, got a boolean {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise FieldError(Reason.WRONG_TYPE, name, f"expected an integer, got {type(value).__name__} {value!r}")


def as_float(value: Any, name: str) -> float:
    """A finite number (bools and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(Reason.WRONG_TYPE, name, f"expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise FieldError(Reason.INVALID_VALUE, name, f"expected a finite number, got {value!r}")
    return float(value)


def as_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise FieldError(Reason.WRONG_TYPE, name, f"expected a string, got {type(value).__name__} {value!r}")
    return value


def as_box(value: Any, name: str) -> tuple[float, float, float, float]:
    """Four finite numbers."""
    if not isinstance(value, (list, tuple)):
        raise FieldError(Reason.WRONG_TYPE, name, f"expected a list of 4 numbers, got {type(value).__name__}")
    if len(value) != 4:
        raise FieldError(Reason.INVALID_VALUE, name, f"expected 4 numbers, got {len(value)}")
    a, b, c, d = (as_float(v, name) for v in value)
    return a, b, c, d


def check_box_xyxy(box: tuple[float, float, float, float], name: str, normalized: bool) -> None:
    """Refuse boxes with negative coordinates, zero area, or (normalized) values above 1."""
    xmin, ymin, xmax, ymax = box
    if min(box) < 0:
        raise FieldError(Reason.INVALID_VALUE, name, f"box {list(box)} has a negative coordinate")
    if normalized and max(box) > 1.0:
        raise FieldError(Reason.INVALID_VALUE, name, f"normalized box {list(box)} has a value above 1")
    if not (xmax > xmin and ymax > ymin):
        raise FieldError(Reason.INVALID_VALUE, name, f"box {list(box)} is empty (needs xmax > xmin and ymax > ymin)")


def box_columns(box: tuple[float, float, float, float] | None, units: str) -> dict[str, Any]:
    """The manifest's ``box_*`` columns for an xyxy ``box`` (all null when there is none)."""
    names = ("box_xmin", "box_ymin", "box_xmax", "box_ymax")
    if box is None:
        return {**dict.fromkeys(names), "box_units": None}
    return {**dict(zip(names, box)), "box_units": units}


def safe_id(value: Any, name: str) -> str:
    """An id that is safe as a file name (see :data:`SAFE_ID`)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FieldError(Reason.WRONG_TYPE, name, f"expected a string id, got {type(value).__name__} {value!r}")
    text = str(value)
    if not SAFE_ID.fullmatch(text):
        raise FieldError(
            Reason.UNSAFE_ID,
            name,
            f"id {text!r} is not safe as a file name (allowed: letters, digits, '_' and '-', at most 64)",
        )
    return text


def normalize_url(value: Any, name: str = "url") -> str:
    """Return a canonical http(s) URL or raise.

    Scheme-less YouTube links (``www.youtube.com/watch?v=...``, common in MS-ASL) get
    ``https://``. Any other scheme (``file:``, ``ftp:``, ``javascript:``) is refused, as is
    text with whitespace or control characters (for example a shell command).
    """
    url = as_str(value, name).strip()
    if not url:
        raise FieldError(Reason.MISSING_FIELD, name, "URL is empty")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise FieldError(Reason.MALFORMED_URL, name, f"URL {url[:80]!r} contains whitespace or control characters")
    parsed = urllib.parse.urlsplit(url)
    if not parsed.scheme:
        host = url.split("/", 1)[0].lower()
        if host in YOUTUBE_HOSTS or host.startswith("www."):
            url = "https://" + url
            parsed = urllib.parse.urlsplit(url)
        else:
            raise FieldError(Reason.MALFORMED_URL, name, f"URL {url[:80]!r} has no scheme and no known host")
    if parsed.scheme.lower() not in ALLOWED_URL_SCHEMES:
        raise FieldError(
            Reason.UNSUPPORTED_URL_SCHEME,
            name,
            f"URL scheme {parsed.scheme!r} is not supported (allowed: {', '.join(ALLOWED_URL_SCHEMES)})",
        )
    if not parsed.hostname:
        raise FieldError(Reason.MALFORMED_URL, name, f"URL {url[:80]!r} has no host")
    return url


def youtube_id(url: str) -> str | None:
    """The 11-character YouTube video id of ``url``, or ``None`` if it is not a YouTube video link."""
    parsed = urllib.parse.urlsplit(url)
    host = (parsed.hostname or "").lower()
    if host not in YOUTUBE_HOSTS:
        return None
    candidate: str | None
    if host.endswith("youtu.be"):
        candidate = parsed.path.lstrip("/").split("/", 1)[0]
    elif parsed.path.startswith(("/embed/", "/v/", "/shorts/")):
        candidate = parsed.path.split("/")[2]
    else:
        candidate = urllib.parse.parse_qs(parsed.query).get("v", [None])[0]
    return candidate if candidate and YOUTUBE_ID.fullmatch(candidate) else None


def source_key(url: str) -> str:
    """Identity of the source video, used to download each source once and as its file name.

    ``youtube-<id>`` for YouTube links (whatever form the link takes), otherwise
    ``url-<first 16 hex digits of sha256(url)>``. Both are safe file names.
    """
    yt = youtube_id(url)
    if yt is not None:
        return f"youtube-{yt}"
    return "url-" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def url_site(url: str) -> str:
    """The host of ``url`` without a leading ``www.``; YouTube's hosts all map to ``youtube``."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host in YOUTUBE_HOSTS:
        return "youtube"
    return host[4:] if host.startswith("www.") else host
