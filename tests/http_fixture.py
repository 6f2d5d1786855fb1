"""A loopback HTTP server that serves real video files and misbehaves on purpose.

The server listens on ``127.0.0.1`` on a free port and is started by the test that needs it
(never a network outside the machine). The first path segment picks the behaviour; the last
segment names a file in ``video_dir`` (e.g. ``/ok/00335.mp4``):

=====================================  ====================================================
path                                   behaviour
=====================================  ====================================================
``/ok/<file>``                         200 with the real bytes, ``Content-Type: video/mp4``.
``/notfound/<file>``                   404.
``/forbidden/<file>``                  403.
``/servererror/<file>``                500.
``/ratelimited/<n>/<secs>/<file>``     429 with ``Retry-After: <secs>`` for the first ``n``
                                       requests to that path, then the real bytes.
``/html/<file>``                       an HTML page served as ``video/mp4``.
``/swf/<file>``                        a (tiny) Flash ``.swf`` served as ``video/mp4``.
``/truncated/<file>``                  the first 40 % of the real bytes, with a matching
                                       ``Content-Length`` (a complete HTTP reply of a cut file).
``/empty/<file>``                      200 with zero bytes.
``/stall/<file>``                      headers, then nothing until ``stall_s`` has passed
                                       (the client's socket timeout should fire first).
``/slow/<file>``                       the real bytes in small chunks, ``slow_chunk_delay_s``
                                       apart, while ``slow_enabled`` is true; at full speed
                                       otherwise. ``slow_started`` is set when a body starts.
=====================================  ====================================================

Every request is counted per path in :attr:`MisbehavingServer.hits` (with its arrival time in
:attr:`MisbehavingServer.hit_times`) so tests can prove what went to the network.
"""

from __future__ import annotations

import collections
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Video not found</title></head>"
    b"<body><p>This video has moved. Please visit our new site.</p></body></html>\n"
)
# A minimal uncompressed SWF header ("FWS", version 10, length, a frame rectangle) plus padding.
SWF_BYTES = b"FWS\x0a" + (64).to_bytes(4, "little") + b"\x78\x00\x05\x5f\x00\x00\x0f\xa0\x00\x00\x18\x01\x00" + b"\x00" * 43


class _QuietServer(ThreadingHTTPServer):
    """Clients hanging up mid-reply (timeouts, kills) are expected: do not print tracebacks."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


class MisbehavingServer:
    """A threaded HTTP server on 127.0.0.1:0 serving files from ``video_dir``.

    Parameters
    ----------
    video_dir
        Folder of real video files (the shared WLASL clips).
    stall_s
        How long ``/stall/`` requests hold the connection after sending headers.
    slow_chunk_delay_s
        Pause between 16 KiB chunks on ``/slow/`` while :attr:`slow_enabled` is true.
    """

    def __init__(self, video_dir: Path, stall_s: float = 5.0, slow_chunk_delay_s: float = 0.5) -> None:
        self.video_dir = Path(video_dir)
        self.stall_s = stall_s
        self.slow_chunk_delay_s = slow_chunk_delay_s
        self.slow_enabled = True
        self.slow_started = threading.Event()
        self.stopping = threading.Event()
        self.hits: collections.Counter[str] = collections.Counter()
        self.hit_times: dict[str, list[float]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> MisbehavingServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence
                return

            def do_HEAD(self) -> None:  # noqa: N802
                server._handle(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                server._handle(self, head=False)

        httpd = _QuietServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> MisbehavingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def total_hits(self) -> int:
        with self._lock:
            return sum(self.hits.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.hits.clear()
            self.hit_times.clear()

    # -- request handling ------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        path = req.path.split("?", 1)[0]
        with self._lock:
            self.hits[path] += 1
            self.hit_times[path].append(time.monotonic())
            count = self.hits[path]
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2:
            return self._send(req, 404, b"bad path", "text/plain", head)
        kind, name = parts[0], parts[-1]
        file = self.video_dir / name
        try:
            if kind == "notfound":
                return self._send(req, 404, b"Not Found", "text/plain", head)
            if kind == "forbidden":
                return self._send(req, 403, b"Forbidden", "text/plain", head)
            if kind == "servererror":
                return self._send(req, 500, b"Internal Server Error", "text/plain", head)
            if kind == "ratelimited":
                n, secs = int(parts[1]), parts[2]
                if count <= n:
                    return self._send(req, 429, b"Too Many Requests", "text/plain", head, {"Retry-After": secs})
                return self._send(req, 200, file.read_bytes(), "video/mp4", head)
            if kind == "ok":
                return self._send(req, 200, file.read_bytes(), "video/mp4", head)
            if kind == "html":
                return self._send(req, 200, HTML_PAGE, "video/mp4", head)
            if kind == "swf":
                return self._send(req, 200, SWF_BYTES, "video/mp4", head)
            if kind == "truncated":
                data = file.read_bytes()
                return self._send(req, 200, data[: int(len(data) * 0.4)], "video/mp4", head)
            if kind == "empty":
                return self._send(req, 200, b"", "video/mp4", head)
            if kind == "stall":
                return self._stall(req, file, head)
            if kind == "slow":
                return self._slow(req, file, head)
            return self._send(req, 404, b"unknown behaviour", "text/plain", head)
        except (BrokenPipeError, ConnectionResetError):
            return None

    @staticmethod
    def _send(
        req: BaseHTTPRequestHandler,
        code: int,
        body: bytes,
        ctype: str,
        head: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            req.send_header(k, v)
        req.end_headers()
        if not head:
            req.wfile.write(body)
            req.wfile.flush()

    def _headers(self, req: BaseHTTPRequestHandler, size: int) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "video/mp4")
        req.send_header("Content-Length", str(size))
        req.end_headers()
        req.wfile.flush()

    def _stall(self, req: BaseHTTPRequestHandler, file: Path, head: bool) -> None:
        self._headers(req, file.stat().st_size)
        if head:
            return
        deadline = time.monotonic() + self.stall_s
        while time.monotonic() < deadline and not self.stopping.is_set():
            time.sleep(0.05)
        req.close_connection = True

    def _slow(self, req: BaseHTTPRequestHandler, file: Path, head: bool) -> None:
        data = file.read_bytes()
        self._headers(req, len(data))
        if head:
            return
        chunk = 16 * 1024
        for i in range(0, len(data), chunk):
            if self.stopping.is_set():
                req.close_connection = True
                return
            req.wfile.write(data[i : i + chunk])
            req.wfile.flush()
            self.slow_started.set()
            if self.slow_enabled:
                time.sleep(self.slow_chunk_delay_s)
