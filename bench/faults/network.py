"""Network faults at a loopback server: the downloader ends every one in bounded time, typed.

Fault kinds (category ``network``), one :class:`~bench.faults.common.FaultOutcome` each; every
injection is one source video whose URL points at a misbehaving path of :class:`FaultServer`:

=====================================  ==========================================  ======================
kind                                   server behaviour                            expected ledger reason
=====================================  ==========================================  ======================
``connection reset mid-body``          TCP RST after a seeded 10-90 % of the body  ``network_error``
``Content-Length longer than body``    declares twice the bytes it sends, closes   ``network_error``
``Content-Length shorter than body``   declares a seeded 20-80 % of the bytes      ``truncated_or_undecodable``
``slow drip``                          one byte every :data:`DRIP_INTERVAL_S`       ``timeout``
``endless redirects``                  302 to the next number, for ever            ``server_error``
``5xx storm``                          500/502/503/504 on every request            ``server_error``
``garbage body``                       200 with random bytes as ``video/mp4``      ``not_a_video``
``stall before headers``               reads the request, never answers            ``timeout``
=====================================  ==========================================  ======================

Each injection is a real :func:`sldata.acquire.download.download_sources` run (yt-dlp, retries,
backoff, ledger) with :data:`SETTINGS`, holding the faulty source and a good real clip
(``wlasl_original_clips``, chosen by the seed) served by the same server. It is survived when

* the run returns (no exception) within :func:`row_time_bound` of the settings;
* the server saw at most :func:`request_bound` requests for the faulty path, and the ledger's
  ``attempts`` is ``max_attempts`` for a retryable reason and 1 for a permanent one;
* the faulty row is ``failed`` with the expected typed ``failure_reason`` and a ``last_error``;
* no file of the faulty source is left: nothing under its final name, ``.incomplete/`` empty;
* the good row of the same run is ``ok``, its file byte-identical to the served clip, and the
  saved ledger holds both rows (``lost`` counts rows missing from it and good rows not ok).
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.faults.common import FaultOutcome, sha256_file
from sldata.acquire.download import INCOMPLETE_DIR, INITIAL_BLOCK_BYTES, DownloadSettings, SourceRequest, download_sources
from sldata.acquire.ledger import FailureReason, Ledger

CATEGORY = "network"
REPO_ROOT = Path(__file__).resolve().parents[2]

SETTINGS = DownloadSettings(
    workers=2,
    max_attempts=3,
    backoff_base_s=0.05,
    backoff_max_s=0.2,
    socket_timeout_s=1.0,
    per_host_min_interval_s=0.0,
    checkpoint_interval_s=0.0,
    min_speed_bytes_s=1024.0,
    progress=False,
)
"""Download settings of every injection: small timeouts and backoff, three attempts."""

DRIP_INTERVAL_S = 0.05
"""Seconds between the bytes of the slow drip: 20 B/s, well below ``min_speed_bytes_s``, and a
byte arrives long before any socket timeout."""

REQUESTS_PER_ATTEMPT = 2
"""HTTP requests yt-dlp's generic extractor makes per attempt on a direct link: one to extract,
one to download."""

MAX_REDIRECTS = 30
"""Redirects yt-dlp's HTTP layer follows before it gives up (``requests``' default)."""

ATTEMPT_OVERHEAD_S = 3.0
"""Allowance per attempt for building the yt-dlp instance, extracting and probing on a busy machine."""

GOOD_IDS = ("01377", "19326", "34699", "27281")
"""Small real original-format clips (27-59 kB) used as the good source of a run."""
BAD_SOURCE_ID = "00335"


def shared_data_dir() -> Path:
    """The real-data folder: ``$SLDATA_SHARED``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("SLDATA_SHARED", REPO_ROOT.parent / "shared" / "data")).resolve()


def attempt_time_bound(settings: DownloadSettings) -> float:
    """Longest one download attempt may take against any of these faults.

    Each request may wait a full socket timeout before its headers; a trickle is stopped by the
    speed floor within ``(2 * INITIAL_BLOCK_BYTES + 1) * socket_timeout_s`` (see
    :class:`~sldata.acquire.download.DownloadSettings`); plus :data:`ATTEMPT_OVERHEAD_S`.
    """
    t = settings.socket_timeout_s
    return REQUESTS_PER_ATTEMPT * t + (2 * INITIAL_BLOCK_BYTES + 1) * t + ATTEMPT_OVERHEAD_S


def row_time_bound(settings: DownloadSettings) -> float:
    """Longest a source may take: every attempt at its bound plus the longest backoff between them."""
    return settings.max_attempts * attempt_time_bound(settings) + (settings.max_attempts - 1) * settings.backoff_max_s


def request_bound(settings: DownloadSettings, redirects: bool = False) -> int:
    """Most requests one source may cause: :data:`REQUESTS_PER_ATTEMPT` per attempt, times the
    redirect chain when the server redirects."""
    per_attempt = REQUESTS_PER_ATTEMPT * ((MAX_REDIRECTS + 1) if redirects else 1)
    return settings.max_attempts * per_attempt


# --------------------------------------------------------------------------- the server


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # clients hang up on purpose
        return


class FaultServer:
    """A threaded HTTP server on ``127.0.0.1:0`` that serves real files and breaks transfers.

    The first path segment picks the behaviour, the last names a file in ``video_dir``:
    ``/ok/<file>``, ``/reset/<percent>/<file>``, ``/cl-long/<file>``, ``/cl-short/<percent>/<file>``,
    ``/drip/<file>``, ``/redirect/<n>/<file>``, ``/storm/<file>``, ``/garbage/<file>``,
    ``/stall/<file>`` (see the module docs). Requests are counted per behaviour in
    :attr:`kind_hits`.

    Parameters
    ----------
    video_dir
        Folder of real video files.
    drip_interval_s
        Seconds between the single bytes of ``/drip/``.
    stall_s
        How long ``/stall/`` holds a connection without answering.
    seed
        Seed of the ``/garbage/`` bytes.
    """

    def __init__(self, video_dir: Path, drip_interval_s: float = DRIP_INTERVAL_S, stall_s: float = 30.0,
                 seed: int = 0) -> None:
        self.video_dir = Path(video_dir)
        self.drip_interval_s = drip_interval_s
        self.stall_s = stall_s
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.kind_hits: collections.Counter[str] = collections.Counter()
        self._path_hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FaultServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def do_HEAD(self) -> None:  # noqa: N802
                server._handle(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                server._handle(self, head=False)

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{path.lstrip('/')}"

    def requests_for(self, kind: str) -> int:
        """Requests received so far whose first path segment is ``kind``."""
        with self._lock:
            return self.kind_hits[kind]

    def reset_counts(self) -> None:
        with self._lock:
            self.kind_hits.clear()
            self._path_hits.clear()

    # ---- behaviours
    def _handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        path = req.path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        kind = parts[0] if parts else ""
        with self._lock:
            self.kind_hits[kind] += 1
            self._path_hits[path] += 1
            nth = self._path_hits[path]
        try:
            if len(parts) < 2:
                return self._send(req, 404, b"bad path", "text/plain", head)
            file = self.video_dir / parts[-1]
            if kind == "ok":
                return self._send(req, 200, file.read_bytes(), "video/mp4", head)
            if kind == "reset":
                return self._reset(req, file.read_bytes(), int(parts[1]) / 100.0, head)
            if kind == "cl-long":
                data = file.read_bytes()
                return self._send(req, 200, data, "video/mp4", head, length=2 * len(data), close=True)
            if kind == "cl-short":
                data = file.read_bytes()
                return self._send(req, 200, data, "video/mp4", head,
                                  length=max(1, len(data) * int(parts[1]) // 100), close=True)
            if kind == "drip":
                return self._drip(req, file.read_bytes(), head)
            if kind == "redirect":
                req.send_response(302)
                req.send_header("Location", f"/redirect/{int(parts[1]) + 1}/{parts[-1]}")
                req.send_header("Content-Length", "0")
                req.end_headers()
                return None
            if kind == "storm":
                code = (500, 502, 503, 504)[nth % 4]
                return self._send(req, code, b"Service Unavailable", "text/plain", head, extra={"Retry-After": "1"})
            if kind == "garbage":
                with self._lock:
                    body = self.rng.randbytes(16384)
                return self._send(req, 200, body, "video/mp4", head)
            if kind == "stall":
                deadline = time.monotonic() + self.stall_s
                while time.monotonic() < deadline and not self.stopping.is_set():
                    time.sleep(0.05)
                req.close_connection = True
                return None
            return self._send(req, 404, b"unknown behaviour", "text/plain", head)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout, OSError):
            req.close_connection = True
            return None

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str, head: bool,
              extra: dict[str, str] | None = None, length: int | None = None, close: bool = False) -> None:
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (extra or {}).items():
            req.send_header(k, v)
        if close:
            req.send_header("Connection", "close")
            req.close_connection = True
        req.end_headers()
        if not head:
            req.wfile.write(body)
            req.wfile.flush()

    @staticmethod
    def _reset(req: BaseHTTPRequestHandler, data: bytes, fraction: float, head: bool) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "video/mp4")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if head:
            return
        req.wfile.write(data[: int(len(data) * fraction)])
        req.wfile.flush()
        # SO_LINGER on with a zero timeout: close() sends RST instead of FIN
        req.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        req.close_connection = True
        req.connection.close()

    def _drip(self, req: BaseHTTPRequestHandler, data: bytes, head: bool) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "video/mp4")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.flush()
        req.close_connection = True
        if head:
            return
        for i in range(len(data)):
            if self.stopping.is_set():
                return
            req.wfile.write(data[i : i + 1])
            req.wfile.flush()
            time.sleep(self.drip_interval_s)


# --------------------------------------------------------------------------- fault kinds


@dataclass(frozen=True)
class NetworkFault:
    """One fault kind: the server path of the faulty source and the ledger reason it must get."""

    kind: str
    path: Callable[[random.Random], str]
    reason: FailureReason
    redirects: bool = False


FAULTS: tuple[NetworkFault, ...] = (
    NetworkFault("connection reset mid-body", lambda r: f"reset/{r.randint(10, 90)}/{BAD_SOURCE_ID}.mp4",
                 FailureReason.NETWORK_ERROR),
    NetworkFault("Content-Length longer than body", lambda r: f"cl-long/{BAD_SOURCE_ID}.mp4", FailureReason.NETWORK_ERROR),
    NetworkFault("Content-Length shorter than body", lambda r: f"cl-short/{r.randint(20, 80)}/{BAD_SOURCE_ID}.mp4",
                 FailureReason.TRUNCATED_OR_UNDECODABLE),
    NetworkFault("slow drip", lambda r: f"drip/{BAD_SOURCE_ID}.mp4", FailureReason.TIMEOUT),
    NetworkFault("endless redirects", lambda r: f"redirect/0/{BAD_SOURCE_ID}.mp4", FailureReason.SERVER_ERROR,
                 redirects=True),
    NetworkFault("5xx storm", lambda r: f"storm/{BAD_SOURCE_ID}.mp4", FailureReason.SERVER_ERROR),
    NetworkFault("garbage body", lambda r: f"garbage/{BAD_SOURCE_ID}.mp4", FailureReason.NOT_A_VIDEO),
    NetworkFault("stall before headers", lambda r: f"stall/{BAD_SOURCE_ID}.mp4", FailureReason.TIMEOUT),
)


@dataclass
class Injection:
    """What one injection observed (kept for the tests' direct assertions)."""

    kind: str
    seconds: float
    bound_s: float
    requests: int
    request_bound: int
    reason: str | None
    attempts: int
    problems: list[str]
    lost: int


def inject(server: FaultServer, fault: NetworkFault, root: Path, rng: random.Random,
           settings: DownloadSettings = SETTINGS) -> Injection:
    """Run one download with ``fault``'s source and a good source; check everything listed in the module docs."""
    shutil.rmtree(root, ignore_errors=True)
    out, ledger_path = root / "videos", root / "ledger.parquet"
    good_id = rng.choice(GOOD_IDS)
    bad_key, good_key = "url-faulty0000000000", "url-good000000000000"
    path = fault.path(rng)
    behaviour = path.split("/", 1)[0]
    server.reset_counts()
    reqs = [SourceRequest(bad_key, server.url(path)), SourceRequest(good_key, server.url(f"ok/{good_id}.mp4"))]
    problems: list[str] = []
    started = time.monotonic()
    try:
        ledger = download_sources(reqs, out, ledger_path, settings)
    except Exception as exc:  # the fault must never escape as an exception
        seconds = time.monotonic() - started
        return Injection(fault.kind, seconds, row_time_bound(settings), server.requests_for(behaviour),
                         request_bound(settings, fault.redirects), None, 0,
                         [f"download_sources raised {type(exc).__name__}: {exc}"], lost=2)
    seconds = time.monotonic() - started
    bound = row_time_bound(settings)
    if seconds > bound:
        problems.append(f"took {seconds:.1f} s, bound {bound:.1f} s")
    n_req, req_bound = server.requests_for(behaviour), request_bound(settings, fault.redirects)
    if n_req > req_bound:
        problems.append(f"{n_req} requests to the faulty source, bound {req_bound}")
    bad = ledger.get(bad_key)
    reason = bad.failure_reason if bad is not None else None
    attempts = bad.attempts if bad is not None else 0
    lost = 0
    if bad is None:
        problems.append("no ledger row for the faulty source")
        lost += 1
    else:
        if bad.ok or reason != fault.reason.value:
            problems.append(f"faulty source: status {bad.status}, reason {reason!r}, expected {fault.reason.value!r} "
                            f"({bad.last_error})")
        if not bad.last_error:
            problems.append("faulty source: no last_error")
        want_attempts = settings.max_attempts if settings.is_retryable(fault.reason) else 1
        if attempts != want_attempts:
            problems.append(f"faulty source: {attempts} attempts, expected {want_attempts}")
    good = ledger.get(good_key)
    source = shared_data_dir() / "wlasl_original_clips" / "videos" / f"{good_id}.mp4"
    if good is None or not good.ok or not good.path or sha256_file(out / good.path) != sha256_file(source):
        problems.append(f"good source of the same run not acquired intact: {good}")
        lost += 1
    saved = Ledger.load(ledger_path)
    missing = {bad_key, good_key} - set(saved.keys())
    if missing:
        problems.append(f"saved ledger lacks {sorted(missing)}")
        lost += len(missing)
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.name != ".download.lock"
                 and not (good is not None and good.path and p == out / good.path)]
    if leftovers:
        problems.append(f"left behind: {[str(p.relative_to(out)) for p in leftovers]}")
    if (out / INCOMPLETE_DIR).exists() and any((out / INCOMPLETE_DIR).iterdir()):
        problems.append(".incomplete is not empty")
    return Injection(fault.kind, seconds, bound, n_req, req_bound, reason, attempts, problems, lost)


def run(workdir: Path, repeats: int, seed: int, observed: list[Injection] | None = None) -> list[FaultOutcome]:
    """Inject every network fault ``repeats`` times (see the module docs); one outcome per kind.

    Parameters
    ----------
    workdir
        Scratch folder (run folders of survived injections are removed).
    repeats
        Injections per fault kind (each with its own seeded cut, good clip and garbage).
    seed
        Seed of everything random.
    observed
        When given, every :class:`Injection` is appended to it (for direct assertions).
    """
    workdir = Path(workdir) / "network"
    outcomes = {f.kind: FaultOutcome(CATEGORY, f.kind) for f in FAULTS}
    rng = random.Random(seed)
    with FaultServer(shared_data_dir() / "wlasl_original_clips" / "videos", seed=seed) as server:
        for rep in range(repeats):
            for i, fault in enumerate(FAULTS):
                root = workdir / f"{rep:03d}-{i}"
                result = inject(server, fault, root, rng)
                if observed is not None:
                    observed.append(result)
                ok = not result.problems
                outcomes[fault.kind].record(ok, result.lost, f"repeat {rep}: " + "; ".join(result.problems))
                if ok:
                    shutil.rmtree(root, ignore_errors=True)
    return list(outcomes.values())
