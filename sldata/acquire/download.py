"""Download every source video once, validate it, and record the outcome in the ledger.

One code path for every URL: :class:`yt_dlp.YoutubeDL` with an options dict (never a shell
string); YouTube goes through its extractor, direct ``.mp4``/``.mov``/``.webm`` links through
yt-dlp's generic extractor. yt-dlp's own retries are switched off; this module retries instead,
so that every attempt is rate-limited per host, backs off with full jitter and honours
``Retry-After`` on HTTP 429.

File life cycle::

    <out_dir>/.incomplete/<source_key>/<source_key>.<ext>[.part]   yt-dlp writes here
        -> probe_video() decodes it (first frame + a frame near the end)
        -> os.replace to <out_dir>/<source_key>.<ext>                only when valid
    <out_dir>/.download.lock                                       one run per folder

so a partial or invalid file never takes the final name, even when the process is killed
(``.incomplete`` is wiped at the start of the next run). The ledger is checkpointed atomically
every ``checkpoint_interval_s`` while downloading and at the end.

Local stores are consulted before the network. A hit is *hard-linked* into ``out_dir`` under
the final name (falling back to a symbolic link to the absolute store path when the store is on
another file system; ``local_store_link`` chooses), so no bytes are copied; the ledger records
``from_local_store=True``, ``attempts`` unchanged and the store file in ``store_path``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import errno
import fcntl
import logging
import os
import random
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from sldata.annotations.jsonfile import sha256_of

from sldata.acquire.ledger import DEFAULT_RETRYABLE, FailureReason, Ledger, LedgerRow, utc_now
from sldata.acquire.probe import ProbeFailure, VideoProbe, probe_video
from sldata.acquire.store import LocalStore, check_safe_key, is_safe_key

log = logging.getLogger(__name__)

INCOMPLETE_DIR = ".incomplete"
LOCK_NAME = ".download.lock"
FINAL_EXTS: tuple[str, ...] = ("mp4", "mkv", "webm", "mov", "avi", "flv", "m4v", "3gp", "ts", "ogv", "wmv", "mpg")
_CONTAINER_EXT = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "mkv", "avi": "avi", "flv": "flv", "mpegts": "ts"}
DEFAULT_FORMAT = "bv*[ext=mp4][vcodec^=avc1][height<=720]/b[ext=mp4]/bv*[ext=mp4]/b/bv*"
INITIAL_BLOCK_BYTES = 16
"""yt-dlp's first read size (its ``buffersize``); it grows to the link's rate, up to 4 MiB."""


# ---------------------------------------------------------------------------------------------
# settings and requests
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DownloadSettings:
    """How downloads run. Build from ``params.yaml`` with :meth:`from_dict`.

    Attributes
    ----------
    workers
        Parallel downloads (threads).
    max_attempts
        Network attempts per source per run (retryable failures only are retried).
    backoff_base_s, backoff_max_s
        Retry ``n`` sleeps ``uniform(0, min(backoff_max_s, backoff_base_s * 2**(n-1)))``
        (exponential backoff with full jitter).
    max_retry_after_s
        A 429 whose ``Retry-After`` exceeds this is not waited for: the source fails as
        ``rate_limited`` (retryable) in this run.
    socket_timeout_s
        Socket timeout for every connection and read.
    per_host_min_interval_s
        Minimum seconds between the starts of two attempts on the same host (YouTube hosts
        count as one). A 429 with ``Retry-After`` pauses the whole host.
    duration_tolerance_s
        A video may be this much shorter than ``min_duration_s`` and still count.
    format
        yt-dlp format selector. The default prefers one mp4 file (H.264 video up to 720p,
        no audio needed for signs) and never needs ffmpeg to merge.
    max_filesize_bytes
        yt-dlp's ``max_filesize`` (None: no limit).
    retryable_reasons
        :class:`FailureReason` values a rerun (and a later attempt) tries again.
    verify_sha256_on_skip
        On rerun, re-hash files of ok rows instead of checking their size only.
    checkpoint_interval_s
        Save the ledger at most this often while downloading (0: after every source).
    local_store_link
        ``"auto"`` (hard link, else symbolic link), ``"hardlink"``, ``"symlink"`` or ``"copy"``.
    probe_full_decode_below_s
        Passed to :func:`probe_video` (videos up to this long are decoded in full).
    http_headers
        Extra HTTP headers for yt-dlp, as ``(name, value)`` pairs.
    cookiefile
        Netscape cookie file for yt-dlp (age-gated YouTube videos), or None.
    progress
        A tqdm bar on a terminal (True or None) or never (False); without a bar, timestamped
        progress lines go to the log (:class:`sldata.progress.Progress`).
    min_speed_bytes_s
        Speed floor of a transfer: ``socket_timeout_s`` after its first block, a transfer
        whose body has arrived slower than this on average since then is abandoned as
        ``timeout`` (0: no floor). The socket timeout alone never ends a server that trickles
        one byte at a time. Reads start with :data:`INITIAL_BLOCK_BYTES`-byte blocks (yt-dlp
        grows them to the link's rate) and a trickle must send a byte every
        ``socket_timeout_s``, so a trickling attempt ends within about
        ``(2 * INITIAL_BLOCK_BYTES + 1) * socket_timeout_s`` of its first byte.
    """

    workers: int = 4
    max_attempts: int = 4
    backoff_base_s: float = 2.0
    backoff_max_s: float = 120.0
    max_retry_after_s: float = 900.0
    socket_timeout_s: float = 30.0
    per_host_min_interval_s: float = 1.0
    duration_tolerance_s: float = 0.5
    format: str = DEFAULT_FORMAT
    max_filesize_bytes: int | None = 2_000_000_000
    retryable_reasons: tuple[str, ...] = tuple(sorted(r.value for r in DEFAULT_RETRYABLE))
    verify_sha256_on_skip: bool = False
    checkpoint_interval_s: float = 10.0
    local_store_link: str = "auto"
    probe_full_decode_below_s: float = 4.0
    http_headers: tuple[tuple[str, str], ...] = ()
    cookiefile: str | None = None
    progress: bool | None = None
    min_speed_bytes_s: float = 1024.0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"DownloadSettings.{name}={getattr(self, name)!r}: {why}")

        if not isinstance(self.workers, int) or self.workers < 1:
            raise bad("workers", "must be an integer >= 1")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise bad("max_attempts", "must be an integer >= 1")
        for name in ("backoff_base_s", "backoff_max_s", "max_retry_after_s", "per_host_min_interval_s",
                     "duration_tolerance_s", "checkpoint_interval_s", "probe_full_decode_below_s",
                     "min_speed_bytes_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise bad(name, "must be a number >= 0")
        if not isinstance(self.socket_timeout_s, (int, float)) or self.socket_timeout_s <= 0:
            raise bad("socket_timeout_s", "must be a number > 0")
        if self.local_store_link not in ("auto", "hardlink", "symlink", "copy"):
            raise bad("local_store_link", "must be 'auto', 'hardlink', 'symlink' or 'copy'")
        valid = {r.value for r in FailureReason}
        unknown = [r for r in self.retryable_reasons if r not in valid]
        if unknown:
            raise bad("retryable_reasons", f"unknown reason(s) {unknown}; valid: {sorted(valid)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "download settings") -> DownloadSettings:
        """Build from a mapping (e.g. a ``params.yaml`` section); unknown keys are an error."""
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
        if "retryable_reasons" in d:
            d["retryable_reasons"] = tuple(d["retryable_reasons"])
        if "http_headers" in d:
            h = d["http_headers"]
            d["http_headers"] = tuple((str(k), str(v)) for k, v in (h.items() if isinstance(h, Mapping) else h))
        return cls(**d)

    def is_retryable(self, reason: str | FailureReason | None) -> bool:
        value = reason.value if isinstance(reason, FailureReason) else reason
        return value in self.retryable_reasons


@dataclass(frozen=True)
class SourceRequest:
    """One thing to acquire.

    Attributes
    ----------
    source_key
        Ledger key and file stem of the result: the manifest's ``source_key`` for a source
        video, the clip's ``sample_id`` for a pretrimmed clip.
    url
        Where to download it (None: local stores only).
    min_duration_s
        The latest annotated clip end in this source (seconds), or None.
    store_keys
        Keys to look up in the local store(s), in order; empty means ``(source_key,)``.
    pretrimmed
        True: one clip, served only from a pretrimmed store, never from the network.
    """

    source_key: str
    url: str | None
    min_duration_s: float | None = None
    store_keys: tuple[str, ...] = ()
    pretrimmed: bool = False

    def __post_init__(self) -> None:
        check_safe_key(self.source_key, "source_key")
        object.__setattr__(self, "store_keys", tuple(self.store_keys))
        if self.min_duration_s is not None and not (self.min_duration_s >= 0):
            raise ValueError(f"source {self.source_key}: min_duration_s={self.min_duration_s!r} must be >= 0")

    @property
    def lookup_keys(self) -> tuple[str, ...]:
        return self.store_keys or (self.source_key,)


def build_requests(manifest: pd.DataFrame, pretrimmed_store: LocalStore | None = None) -> list[SourceRequest]:
    """Turn manifest rows into download requests.

    Clips whose ``original_id`` is in ``pretrimmed_store`` become pretrimmed clip requests
    (keyed by ``sample_id``). All other clips are grouped by ``source_key``: one request per
    source video, ``min_duration_s`` = the latest clip end (``start_s`` for clips that run to
    the end), store keys = ``source_key``, the bare YouTube id and the clips' ``original_id``
    values that are safe file names.

    Raises
    ------
    ValueError
        When a column is missing, or one ``source_key`` has several URLs.
    """
    need = ["sample_id", "original_id", "source_key", "url", "start_s", "end_s"]
    missing = [c for c in need if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing} needed to build download requests")
    requests: list[SourceRequest] = []
    rest = manifest
    if pretrimmed_store is not None:
        if not pretrimmed_store.pretrimmed:
            raise ValueError(f"store {pretrimmed_store.name} is not marked pretrimmed")
        hit = manifest["original_id"].map(
            lambda k: is_safe_key(str(k)) and pretrimmed_store.lookup(str(k)) is not None
        ).astype(bool)
        for row in manifest[hit].itertuples(index=False):
            requests.append(
                SourceRequest(source_key=row.sample_id, url=row.url, store_keys=(str(row.original_id),), pretrimmed=True)
            )
        rest = manifest[~hit]
    for key, group in rest.groupby("source_key", sort=True):
        urls = sorted(set(group["url"]))
        if len(urls) != 1:
            raise ValueError(f"source_key {key!r}: several URLs in the manifest: {urls}")
        ends = group["end_s"].where(group["end_s"].notna(), group["start_s"])
        min_dur = float(ends.max()) if len(ends) and pd.notna(ends.max()) else None
        keys: list[str] = [str(key)]
        if str(key).startswith("youtube-"):
            keys.append(str(key)[len("youtube-"):])
        keys += sorted({str(o) for o in group["original_id"] if is_safe_key(str(o))})
        requests.append(SourceRequest(source_key=str(key), url=urls[0], min_duration_s=min_dur,
                                      store_keys=tuple(dict.fromkeys(k for k in keys if is_safe_key(k)))))
    return requests


# ---------------------------------------------------------------------------------------------
# error classification
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ErrorInfo:
    """A failure reduced to what the retry loop needs."""

    reason: FailureReason
    message: str
    http_status: int | None = None
    retry_after_s: float | None = None


_MESSAGE_RULES: list[tuple[re.Pattern[str], FailureReason]] = [
    (re.compile(p, re.I), r)
    for p, r in [
        (r"not a bot|too many requests|rate.?limit", FailureReason.RATE_LIMITED),
        (r"private video|video unavailable|video is unavailable|this video has been removed|"
         r"no longer available|account .*terminated|removed by the (uploader|user)|"
         r"copyright (claim|grounds)|video has been deleted", FailureReason.PRIVATE_OR_REMOVED),
        (r"confirm your age|age.?restricted|login required|sign in|log in|members.only|"
         r"join this channel|requires payment|premium", FailureReason.LOGIN_REQUIRED),
        (r"not available in your country|geo.?restrict|from your location", FailureReason.GEO_BLOCKED),
        (r"does not exist|page not found", FailureReason.NOT_FOUND),
        (r"unsupported url|is a playlist|no video formats found|requested format is not available|"
         r"no video could be found|live stream", FailureReason.UNSUPPORTED_URL),
        (r"did not get any data blocks", FailureReason.EMPTY_FILE),
        (r"redirect loop|too many redirects|exceeded \d+ redirects", FailureReason.SERVER_ERROR),
        (r"timed? ?out|timeout", FailureReason.TIMEOUT),
        (r"connection (refused|reset|aborted)|name or service not known|temporary failure in name|"
         r"network is unreachable|remote end closed|incompleteread|connection broken|"
         r"nodename nor servname|no route to host|ssl|eof occurred|"
         r"\d+ bytes read, \d+ more expected|content.?too.?short", FailureReason.NETWORK_ERROR),
    ]
]


def reason_for_status(status: int) -> FailureReason:
    """HTTP status code to a failure reason."""
    if status in (404, 410):
        return FailureReason.NOT_FOUND
    if status == 429:
        return FailureReason.RATE_LIMITED
    if status in (401, 407):
        return FailureReason.LOGIN_REQUIRED
    if status == 451:
        return FailureReason.GEO_BLOCKED
    if status == 403:
        return FailureReason.FORBIDDEN
    if 500 <= status < 600:
        return FailureReason.SERVER_ERROR
    return FailureReason.UNKNOWN


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` header (delta seconds or an HTTP date) to seconds from now."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        yield e
        exc_info = getattr(e, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) >= 2:
            todo.append(exc_info[1])
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]


def classify_error(exc: BaseException | None, message: str = "") -> ErrorInfo:
    """Map a yt-dlp / network exception (or just a message) to an :class:`ErrorInfo`.

    The HTTP status is read from yt-dlp's ``HTTPError`` (``.status``, ``.response.headers``)
    anywhere in the exception chain (``exc_info``, ``cause``, ``__cause__``), else parsed from
    ``"HTTP Error NNN"`` in the message; the message decides the rest (``"Private video"``,
    ``"Video unavailable"``, ``"timed out"``...).
    """
    status: int | None = None
    retry_after: float | None = None
    texts = [message] if message else []
    timeout_seen = False
    network_seen = False
    if exc is not None:
        for e in _exception_chain(exc):
            texts.append(f"{type(e).__name__}: {e}")
            if isinstance(e, (socket.timeout, TimeoutError)):
                timeout_seen = True
            elif isinstance(e, ConnectionError):
                network_seen = True
            code = getattr(e, "status", None) or getattr(e, "code", None)
            if isinstance(code, int) and 100 <= code < 600 and status is None:
                status = code
                response = getattr(e, "response", None)
                headers = getattr(response, "headers", None) if response is not None else None
                if headers is None:
                    headers = getattr(e, "headers", None)
                if headers is not None:
                    try:
                        retry_after = parse_retry_after(headers.get("Retry-After"))
                    except AttributeError:
                        retry_after = None
    text = " | ".join(t for t in texts if t)
    if status is None:
        m = re.search(r"HTTP Error (\d{3})", text)
        if m:
            status = int(m.group(1))
    msg = (str(exc) if exc is not None else message) or text
    if status is not None and status >= 400:
        reason = reason_for_status(status)
        if reason is not FailureReason.UNKNOWN:
            return ErrorInfo(reason, msg, status, retry_after)
    for pattern, reason in _MESSAGE_RULES:
        if pattern.search(text):
            return ErrorInfo(reason, msg, status, retry_after)
    if timeout_seen:
        return ErrorInfo(FailureReason.TIMEOUT, msg, status, retry_after)
    if network_seen:
        return ErrorInfo(FailureReason.NETWORK_ERROR, msg, status, retry_after)
    return ErrorInfo(FailureReason.UNKNOWN, msg, status, retry_after)


PROBE_TO_REASON: dict[ProbeFailure, FailureReason] = {
    ProbeFailure.MISSING: FailureReason.EMPTY_FILE,
    ProbeFailure.EMPTY: FailureReason.EMPTY_FILE,
    ProbeFailure.NOT_A_VIDEO: FailureReason.NOT_A_VIDEO,
    ProbeFailure.NO_VIDEO_STREAM: FailureReason.NOT_A_VIDEO,
    ProbeFailure.TRUNCATED_OR_UNDECODABLE: FailureReason.TRUNCATED_OR_UNDECODABLE,
}


# ---------------------------------------------------------------------------------------------
# pacing
# ---------------------------------------------------------------------------------------------
def host_of(url: str | None) -> str:
    """Rate-limit key of a URL: its host name, ``"youtube"`` for every YouTube host."""
    host = (urlparse(url or "").hostname or "").lower()
    if host == "youtu.be" or host.endswith("youtube.com") or host.endswith("youtube-nocookie.com"):
        return "youtube"
    return host


class HostRateLimiter:
    """At most one attempt start per ``min_interval_s`` per host; hosts can be paused."""

    def __init__(self, min_interval_s: float) -> None:
        self.min_interval_s = min_interval_s
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, host: str) -> float:
        """Block until ``host`` may be contacted; return the seconds waited."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, 0.0))
            self._next[host] = slot + self.min_interval_s
        delay = slot - now
        if delay > 0:
            time.sleep(delay)
        return delay

    def pause(self, host: str, seconds: float) -> None:
        """No attempt on ``host`` starts within the next ``seconds``."""
        with self._lock:
            until = time.monotonic() + seconds
            self._next[host] = max(self._next.get(host, 0.0), until)


def backoff_delay(attempt: int, settings: DownloadSettings, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
    cap = min(settings.backoff_max_s, settings.backoff_base_s * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0.0, cap)


# ---------------------------------------------------------------------------------------------
# file helpers
# ---------------------------------------------------------------------------------------------
def final_ext(file: Path, probe: VideoProbe) -> str:
    ext = file.suffix.lstrip(".").lower()
    if ext in FINAL_EXTS:
        return ext
    return _CONTAINER_EXT.get(probe.container or "", "video")


def existing_finals(out_dir: Path, key: str) -> list[Path]:
    return [p for ext in FINAL_EXTS if (p := out_dir / f"{key}.{ext}").exists() or p.is_symlink()]


@contextlib.contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive lock on ``out_dir`` (released by the OS even on kill -9)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fh = open(out_dir / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RuntimeError(f"{out_dir}: another download run holds {LOCK_NAME}") from None
            raise
        yield
    finally:
        fh.close()


class _YtdlpLogger:
    """Routes yt-dlp's messages to :mod:`logging` and keeps the last error."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        log.debug("%s: %s", self.key, msg)

    def info(self, msg: str) -> None:
        log.debug("%s: %s", self.key, msg)

    def warning(self, msg: str) -> None:
        log.debug("%s: yt-dlp warning: %s", self.key, msg)

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        log.debug("%s: yt-dlp error: %s", self.key, msg)


class _AttemptFailed(Exception):
    def __init__(self, info: ErrorInfo, duration_s: float | None = None) -> None:
        super().__init__(info.message)
        self.info = info
        self.duration_s = duration_s


# ---------------------------------------------------------------------------------------------
# the downloader
# ---------------------------------------------------------------------------------------------
@dataclass
class _Context:
    out_dir: Path
    settings: DownloadSettings
    stores: list[LocalStore]
    limiter: HostRateLimiter
    rng: random.Random = field(default_factory=random.Random)


def ytdlp_options(tmp_dir: Path, key: str, settings: DownloadSettings, logger: Any) -> dict[str, Any]:
    """The options dict handed to :class:`yt_dlp.YoutubeDL` for one attempt."""
    opts: dict[str, Any] = {
        "outtmpl": {"default": str(tmp_dir / f"{key}.%(ext)s")},
        "format": settings.format,
        "noplaylist": True,
        "socket_timeout": settings.socket_timeout_s,
        "retries": 0,
        "fragment_retries": 0,
        "extractor_retries": 0,
        "file_access_retries": 0,
        "continuedl": False,
        "overwrites": True,
        "cachedir": False,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": logger,
        "consoletitle": False,
        "writethumbnail": False,
        "writesubtitles": False,
        "check_formats": False,
        "buffersize": INITIAL_BLOCK_BYTES,
    }
    if settings.max_filesize_bytes:
        opts["max_filesize"] = settings.max_filesize_bytes
    if settings.http_headers:
        opts["http_headers"] = dict(settings.http_headers)
    if settings.cookiefile:
        opts["cookiefile"] = settings.cookiefile
    return opts


class _SpeedGuard:
    """yt-dlp progress hook that abandons a transfer slower than ``min_speed_bytes_s`` on average
    (see :class:`DownloadSettings`); the clock starts at the transfer's first block."""

    def __init__(self, settings: DownloadSettings) -> None:
        self.floor = settings.min_speed_bytes_s
        self.grace_s = settings.socket_timeout_s
        self._start: dict[str, tuple[float, int]] = {}

    def __call__(self, d: dict[str, Any]) -> None:
        if self.floor <= 0 or d.get("status") != "downloading":
            return
        now = time.monotonic()
        got = int(d.get("downloaded_bytes") or 0)
        t0, b0 = self._start.setdefault(str(d.get("tmpfilename") or d.get("filename") or ""), (now, got))
        elapsed = now - t0
        if elapsed >= self.grace_s and (got - b0) / elapsed < self.floor:
            raise _AttemptFailed(ErrorInfo(
                FailureReason.TIMEOUT,
                f"transfer timed out: {got - b0} bytes in {elapsed:.1f} s after the first block, below the "
                f"floor of {self.floor:g} B/s (min_speed_bytes_s)"))


def _fetch_once(req: SourceRequest, tmp_dir: Path, ctx: _Context) -> Path:
    """One yt-dlp attempt into ``tmp_dir``; returns the downloaded file or raises _AttemptFailed."""
    import yt_dlp  # imported lazily: only network runs need it

    settings = ctx.settings
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    logger = _YtdlpLogger(req.source_key)
    try:
        opts = ytdlp_options(tmp_dir, req.source_key, settings, logger)
        opts["progress_hooks"] = [_SpeedGuard(settings)]
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(req.url, download=False)
            if not info:
                raise _AttemptFailed(ErrorInfo(FailureReason.UNSUPPORTED_URL, "yt-dlp returned no information"))
            if info.get("_type") in ("playlist", "multi_video"):
                raise _AttemptFailed(ErrorInfo(FailureReason.UNSUPPORTED_URL, f"{req.url} is a playlist, not one video"))
            if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
                raise _AttemptFailed(ErrorInfo(FailureReason.UNSUPPORTED_URL, f"{req.url} is a live stream"))
            dur = info.get("duration")
            if isinstance(dur, (int, float)) and req.min_duration_s is not None:
                if dur + settings.duration_tolerance_s < req.min_duration_s:
                    raise _AttemptFailed(
                        ErrorInfo(FailureReason.TOO_SHORT_FOR_CROPS,
                                  f"site reports {dur:.2f}s, clips need {req.min_duration_s:.2f}s"),
                        duration_s=float(dur),
                    )
            info = ydl.process_ie_result(info, download=True)
    except _AttemptFailed:
        raise
    except Exception as exc:  # yt_dlp.utils.DownloadError and anything below it
        message = logger.errors[-1] if logger.errors else ""
        raise _AttemptFailed(classify_error(exc, message)) from exc
    paths = [Path(d["filepath"]) for d in (info or {}).get("requested_downloads") or [] if d.get("filepath")]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        paths = sorted(p for p in tmp_dir.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl")))
    if not paths:
        why = logger.errors[-1] if logger.errors else "yt-dlp finished without writing a file (over max_filesize?)"
        raise _AttemptFailed(classify_error(None, why))
    return paths[0]


def clean_message(message: str) -> str:
    """One readable line: no ``ERROR:`` prefix, no carriage returns or colour codes."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)
    message = re.sub(r"[\r\n]+", " ", message).strip()
    return re.sub(r"^(ERROR:\s*)+", "", message)


def _row(req: SourceRequest, prev: LedgerRow | None, **values: Any) -> LedgerRow:
    base: dict[str, Any] = dict(
        source_key=req.source_key,
        url=req.url,
        pretrimmed=req.pretrimmed,
        min_duration_s=req.min_duration_s,
        attempts=prev.attempts if prev else 0,
        updated_at=utc_now(),
    )
    base.update(values)
    if isinstance(base.get("failure_reason"), FailureReason):
        base["failure_reason"] = base["failure_reason"].value
    if base.get("last_error"):
        base["last_error"] = clean_message(str(base["last_error"]))[:1000]
    return LedgerRow(**base)


def _probe_fields(p: VideoProbe) -> dict[str, Any]:
    return dict(duration_s=p.duration_s, fps=p.fps, width=p.width, height=p.height, codec=p.codec, n_frames=p.n_frames)


def _too_short(req: SourceRequest, p: VideoProbe, settings: DownloadSettings) -> bool:
    return (
        req.min_duration_s is not None
        and p.duration_s is not None
        and p.duration_s + settings.duration_tolerance_s < req.min_duration_s
    )


def _install(tmp_file: Path, out_dir: Path, key: str, probe: VideoProbe) -> Path:
    """Rename a validated file to its final name; remove finals of this key with other extensions."""
    final = out_dir / f"{key}.{final_ext(tmp_file, probe)}"
    os.replace(tmp_file, final)
    for other in existing_finals(out_dir, key):
        if other != final:
            with contextlib.suppress(FileNotFoundError):
                other.unlink()
    return final


def _link_from_store(src: Path, tmp_dir: Path, key: str, mode: str) -> Path:
    """Put a hard link / symlink / copy of ``src`` in ``tmp_dir`` (renamed into place later)."""
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    tmp = tmp_dir / f"{key}{src.suffix.lower()}"
    if mode in ("auto", "hardlink"):
        try:
            os.link(src, tmp)
            return tmp
        except OSError:
            if mode == "hardlink":
                raise
    if mode in ("auto", "symlink"):
        os.symlink(src.resolve(), tmp)
        return tmp
    shutil.copy2(src, tmp)
    return tmp


def _try_stores(req: SourceRequest, prev: LedgerRow | None, ctx: _Context) -> tuple[LedgerRow | None, str]:
    """A ledger row from a local-store hit, or (None, note about bad store files)."""
    notes: list[str] = []
    tmp_dir = ctx.out_dir / INCOMPLETE_DIR / req.source_key
    for store in ctx.stores:
        if store.pretrimmed != req.pretrimmed:
            continue
        hit = store.lookup_any(req.lookup_keys)
        if hit is None:
            continue
        _, src = hit
        probe = probe_video(src, full_decode_below_s=ctx.settings.probe_full_decode_below_s)
        if not probe.ok:
            notes.append(f"local store file {src} rejected: {probe.detail}")
            log.warning("%s", notes[-1])
            continue
        if not req.pretrimmed and _too_short(req, probe, ctx.settings):
            notes.append(f"local store file {src} is {probe.duration_s:.2f}s, clips need {req.min_duration_s:.2f}s")
            continue
        try:
            tmp = _link_from_store(src, tmp_dir, req.source_key, ctx.settings.local_store_link)
            final = _install(tmp, ctx.out_dir, req.source_key, probe)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return (
            _row(req, prev, status="ok", path=final.name, store_path=str(src.resolve()), from_local_store=True,
                 bytes=probe.size_bytes, sha256=sha256_of(src), **_probe_fields(probe)),
            "",
        )
    return None, "; ".join(notes)


def _adopt_orphan(req: SourceRequest, prev: LedgerRow | None, ctx: _Context) -> LedgerRow | None:
    """A final file without an ok row (the run died after the rename): re-probe and keep it."""
    for final in existing_finals(ctx.out_dir, req.source_key):
        if final.is_symlink() and not final.exists():
            final.unlink()
            continue
        probe = probe_video(final, full_decode_below_s=ctx.settings.probe_full_decode_below_s)
        if probe.ok and not _too_short(req, probe, ctx.settings):
            return _row(req, prev, status="ok", path=final.name, bytes=probe.size_bytes,
                        sha256=sha256_of(final), **_probe_fields(probe))
        final.unlink()  # a final name must only ever hold a valid file
    return None


def _acquire(req: SourceRequest, prev: LedgerRow | None, ctx: _Context) -> LedgerRow:
    """Local stores, then an orphaned final file, then the network with retries."""
    settings = ctx.settings
    row, note = _try_stores(req, prev, ctx)
    if row is not None:
        return row
    if req.pretrimmed:
        return _row(req, prev, status="failed", failure_reason=FailureReason.NOT_IN_LOCAL_STORE,
                    retryable=settings.is_retryable(FailureReason.NOT_IN_LOCAL_STORE),
                    last_error=note or f"none of {list(req.lookup_keys)} in a pretrimmed local store")
    orphan = _adopt_orphan(req, prev, ctx)
    if orphan is not None:
        return orphan
    if not req.url:
        return _row(req, prev, status="failed", failure_reason=FailureReason.UNSUPPORTED_URL, retryable=False,
                    last_error=note or "no URL and not in a local store")

    host = host_of(req.url)
    tmp_dir = ctx.out_dir / INCOMPLETE_DIR / req.source_key
    attempts = prev.attempts if prev else 0
    error: ErrorInfo | None = None
    extra: dict[str, Any] = {}
    try:
        for attempt in range(1, settings.max_attempts + 1):
            ctx.limiter.acquire(host)
            attempts += 1
            extra = {}
            try:
                tmp_file = _fetch_once(req, tmp_dir, ctx)
            except _AttemptFailed as failed:
                error = failed.info
                if failed.duration_s is not None:
                    extra["duration_s"] = failed.duration_s
            else:
                probe = probe_video(tmp_file, full_decode_below_s=settings.probe_full_decode_below_s)
                if not probe.ok:
                    assert probe.failure is not None
                    detail = probe.detail.replace(str(tmp_file), f"downloaded file ({tmp_file.suffix or 'no extension'})")
                    error = ErrorInfo(PROBE_TO_REASON[probe.failure], detail)
                    extra = _probe_fields(probe)
                elif _too_short(req, probe, settings):
                    error = ErrorInfo(FailureReason.TOO_SHORT_FOR_CROPS,
                                      f"video is {probe.duration_s:.2f}s, clips need {req.min_duration_s:.2f}s")
                    extra = _probe_fields(probe)
                else:
                    digest = sha256_of(tmp_file)
                    final = _install(tmp_file, ctx.out_dir, req.source_key, probe)
                    return _row(req, prev, status="ok", attempts=attempts, path=final.name,
                                bytes=probe.size_bytes, sha256=digest, **_probe_fields(probe))
            assert error is not None
            if not settings.is_retryable(error.reason) or attempt == settings.max_attempts:
                break
            if error.retry_after_s is not None and error.reason is FailureReason.RATE_LIMITED:
                if error.retry_after_s > settings.max_retry_after_s:
                    break
                delay = error.retry_after_s
                ctx.limiter.pause(host, delay)
            else:
                delay = backoff_delay(attempt, settings, ctx.rng)
            log.info("%s: %s (attempt %d), retrying in %.2fs", req.source_key, error.reason.value, attempt, delay)
            time.sleep(delay)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    assert error is not None
    message = error.message + (f" [{note}]" if note else "")
    return _row(req, prev, status="failed", failure_reason=error.reason, retryable=settings.is_retryable(error.reason),
                attempts=attempts, http_status=error.http_status, last_error=message, **extra)


def _dedupe(requests: Iterable[SourceRequest]) -> list[SourceRequest]:
    """One request per source_key (the latest clip end wins; the URLs must agree)."""
    merged: dict[str, SourceRequest] = {}
    for req in requests:
        old = merged.get(req.source_key)
        if old is None:
            merged[req.source_key] = req
            continue
        if old.url != req.url or old.pretrimmed != req.pretrimmed:
            raise ValueError(f"source_key {req.source_key!r} requested twice with different URL/kind: "
                             f"{old.url!r} vs {req.url!r}")
        ends = [d for d in (old.min_duration_s, req.min_duration_s) if d is not None]
        merged[req.source_key] = dataclasses.replace(
            old, min_duration_s=max(ends) if ends else None,
            store_keys=tuple(dict.fromkeys(old.lookup_keys + req.lookup_keys)))
    return list(merged.values())


def _is_done(row: LedgerRow | None, out_dir: Path, settings: DownloadSettings) -> bool:
    """An ok row whose file is still there with the recorded size (and hash, if asked)."""
    if row is None or not row.ok or not row.path:
        return False
    file = out_dir / row.path
    try:
        if file.stat().st_size != row.bytes:
            return False
    except OSError:
        return False
    if settings.verify_sha256_on_skip and row.sha256 and sha256_of(file) != row.sha256:
        return False
    return True


def _as_store_list(local_store: LocalStore | Sequence[LocalStore] | None) -> list[LocalStore]:
    if local_store is None:
        return []
    if isinstance(local_store, LocalStore):
        return [local_store]
    return list(local_store)


def download_sources(
    requests: Iterable[SourceRequest],
    out_dir: str | Path,
    ledger_path: str | Path,
    settings: DownloadSettings | None = None,
    local_store: LocalStore | Sequence[LocalStore] | None = None,
) -> Ledger:
    """Acquire every requested source once and return the updated ledger (also saved).

    Parameters
    ----------
    requests
        What to acquire; duplicates of a ``source_key`` are merged (max ``min_duration_s``).
    out_dir
        Folder of final files ``<source_key>.<ext>``.
    ledger_path
        Parquet ledger, read at the start, checkpointed, and written at the end. Rows of keys
        not requested are kept untouched.
    settings
        :class:`DownloadSettings` (defaults if None).
    local_store
        One or more :class:`LocalStore` consulted before the network: untrimmed stores for
        source requests, pretrimmed stores for clip requests.

    Notes
    -----
    Skipped without any network access: ok rows whose file still exists with the recorded size
    and failed rows whose reason is not in ``settings.retryable_reasons`` (unless a local store
    now has the file). Only one run may use ``out_dir`` at a time (an OS file lock).
    """
    settings = settings or DownloadSettings()
    out_dir = Path(out_dir)
    ledger_path = Path(ledger_path)
    stores = _as_store_list(local_store)
    reqs = _dedupe(requests)
    with folder_lock(out_dir):
        shutil.rmtree(out_dir / INCOMPLETE_DIR, ignore_errors=True)  # leftovers of a killed run
        ledger = Ledger.load(ledger_path)
        ctx = _Context(out_dir=out_dir, settings=settings, stores=stores,
                       limiter=HostRateLimiter(settings.per_host_min_interval_s))
        todo: list[SourceRequest] = []
        for req in reqs:
            prev = ledger.get(req.source_key)
            if _is_done(prev, out_dir, settings):
                continue
            permanent = prev is not None and not prev.ok and not settings.is_retryable(prev.failure_reason)
            if permanent and not any(
                s.pretrimmed == req.pretrimmed and s.lookup_any(req.lookup_keys) for s in stores
            ):
                continue
            todo.append(req)
        log.info("download: %d requested, %d to do, %d already settled", len(reqs), len(todo), len(reqs) - len(todo))
        _run(todo, ledger, ledger_path, ctx)
        ledger.save(ledger_path)
    return ledger


def _run(todo: list[SourceRequest], ledger: Ledger, ledger_path: Path, ctx: _Context) -> None:
    from sldata.progress import Progress

    settings = ctx.settings
    last_save = time.monotonic()
    with Progress(total=len(todo), desc="download", unit="video", bar=settings.progress) as bar, \
            ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="download") as pool:
        futures: dict[Future[LedgerRow], SourceRequest] = {
            pool.submit(_acquire, req, ledger.get(req.source_key), ctx): req for req in todo
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    req = futures[fut]
                    try:
                        row = fut.result()
                    except Exception as exc:  # a bug or an OS error: record it, keep going
                        log.exception("%s: unexpected error", req.source_key)
                        prev = ledger.get(req.source_key)
                        row = _row(req, prev, status="failed", failure_reason=FailureReason.UNKNOWN,
                                   retryable=settings.is_retryable(FailureReason.UNKNOWN),
                                   last_error=f"{type(exc).__name__}: {exc}")
                    ledger.upsert(row)
                    bar.update(1)
                if time.monotonic() - last_save >= settings.checkpoint_interval_s:
                    ledger.save(ledger_path)
                    last_save = time.monotonic()
        finally:
            for fut in pending:
                fut.cancel()
            ledger.save(ledger_path)
