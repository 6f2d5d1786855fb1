"""A small HTTP service around :class:`sltrain.predict.Recognizer` (standard library only).

Endpoints
---------
``GET /``
    A web page (one self-contained HTML file, no external resources): upload a video or record
    one with the webcam, and see the top-5 glosses with their scores (:mod:`sltrain.serve_page`).
``GET /health``
    ``200 {"status": "ok", "model": ..., "version": ..., "classes": K, "busy": n, "max_concurrent": m}``.
``POST /predict``
    The video, either as the **raw body** (any container PyAV reads; ``Content-Type`` is not
    trusted, e.g. ``application/octet-stream`` or ``video/mp4``: ``curl --data-binary
    @clip.mp4``) or as the first file of a ``multipart/form-data`` form (``curl -F
    video=@clip.mp4``; what the page sends). A ``Content-Length`` is required. Answer ``200``
    with ``{"top": [{"gloss", "score"}, ...], "num_frames", "fps", "width", "height", "timings"}``.
``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``, ``GET /v2/models/<name>``,
``GET /v2/models/<name>/ready`` (also under ``/versions/<version>``)
    KServe v2 (Open Inference Protocol) style health and metadata: liveness, readiness
    (``{"live": true}``, ``{"ready": true}``), server metadata (``name``, ``version``,
    ``extensions``) and model metadata (``name``, ``versions``, ``platform``, ``inputs`` and
    ``outputs`` with ``name``, ``datatype``, ``shape``; plus ``parameters`` with the class
    count and input spec). The v2 tensor ``infer`` endpoint is not offered: the service takes
    videos, and pose estimation happens inside it.

Errors (JSON ``{"error": code, "detail": text}``; the server stays up whatever the request):

=====  ==========================================================================
400    ``missing_body``: no or empty body (``Content-Length`` absent or 0), bad length,
       a multipart form without a boundary or without a file
404    ``not_found``: another path, or another model name under ``/v2/models``
411    ``length_required``: chunked upload (send a ``Content-Length``)
413    ``too_large``: ``Content-Length`` above ``max_bytes`` (checked before reading)
       or more bytes than that arrive
415    ``not_a_video``: undecodable or no video stream
422    ``too_long`` (more than ``max_seconds`` of video), ``no_frames``, ``no_person``,
       ``unusable_pose`` (a person, but never with both shoulders and eyes in view)
408    ``timeout``: the body did not arrive within ``read_timeout`` seconds
503    ``busy``: ``max_concurrent`` predictions already running (``Retry-After`` header)
500    ``error``: anything else (logged)
=====  ==========================================================================

The request line and headers, and then the body, must each arrive within ``read_timeout``
seconds in all, however the client spaces its bytes (a client trickling one byte at a time
never trips a per-read socket timeout; headers that are too slow get a 408 and the connection
is closed). The uploaded video is written to a temporary file that is removed after the request.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sltrain import __version__
from sltrain.predict import ModelDirError, PredictError, PredictReason, Recognizer
from sltrain.serve_page import render_page

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_MAX_CONCURRENT = 2
DEFAULT_READ_TIMEOUT = 30.0
RETRY_AFTER_S = 1
CHUNK = 64 * 1024
DRAIN_LIMIT = 1024 * 1024
"""Bytes of a refused body still read (so the client sees the answer rather than a reset)."""

_STATUS_OF_REASON = {
    PredictReason.UNDECODABLE: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    PredictReason.NO_VIDEO_STREAM: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    PredictReason.MISSING: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    PredictReason.NO_FRAMES: HTTPStatus.UNPROCESSABLE_ENTITY,
    PredictReason.NO_PERSON: HTTPStatus.UNPROCESSABLE_ENTITY,
    PredictReason.TOO_LONG: HTTPStatus.UNPROCESSABLE_ENTITY,
    PredictReason.UNUSABLE_POSE: HTTPStatus.UNPROCESSABLE_ENTITY,
}
_CODE_OF_REASON = {PredictReason.UNDECODABLE: "not_a_video", PredictReason.NO_VIDEO_STREAM: "not_a_video",
                   PredictReason.MISSING: "not_a_video"}
ENDPOINTS = ("GET /, GET /health, POST /predict, GET /v2/health/live, GET /v2/health/ready, GET /v2, "
             "GET /v2/models/<name>[/versions/<v>][/ready]")
SERVER_NAME = "sltrain-serve"
_V2_MODEL = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<ready>/ready)?/?$")


def v2_model_metadata(recognizer: Recognizer) -> dict[str, Any]:
    """KServe v2 model metadata of an exported model (shapes and names from its export metadata)."""
    spec = recognizer.spec
    inputs = [{"name": "pose", "datatype": "FP32",
               "shape": [1, spec.num_frames, spec.num_points, spec.num_channels]},
              {"name": "mask", "datatype": "FP32", "shape": [1, spec.num_frames]}]
    heads = recognizer.metadata.get("model", {}).get("heads", {}) or {"gloss": {"num_classes": len(recognizer.classes)}}
    outputs = [{"name": name, "datatype": "FP32", "shape": [1, int(head.get("num_classes", len(recognizer.classes)))]}
               for name, head in sorted(heads.items(), key=lambda kv: kv[0] != "gloss")]
    version = recognizer.version
    return {"name": recognizer.name, "versions": [str(version)] if version is not None else [],
            "platform": "openvino_ir", "inputs": inputs, "outputs": outputs,
            "parameters": {"classes": len(recognizer.classes), "precision": recognizer.metadata.get("precision"),
                           "input_spec": recognizer.metadata.get("input_spec"),
                           "video_endpoint": "POST /predict (raw video body or multipart/form-data)"}}


class RecognitionServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` holding the recognizer and the request limits.

    Parameters
    ----------
    address
        ``(host, port)``; port 0 picks a free one (see ``server_address`` afterwards).
    recognizer
        The exported model.
    max_bytes, max_seconds, max_concurrent, read_timeout
        Limits described in the module docs.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    """Listen backlog. socketserver's default of 5 overflows when a burst of clients connects while
    predictions hold the CPU; the kernel then falls back to SYN cookies and resets connections
    instead of queueing them (seen with 16 uploads at once)."""

    def __init__(self, address: tuple[str, int], recognizer: Recognizer, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_seconds: float = DEFAULT_MAX_SECONDS, max_concurrent: int = DEFAULT_MAX_CONCURRENT,
                 read_timeout: float = DEFAULT_READ_TIMEOUT) -> None:
        if max_bytes < 1 or max_seconds <= 0 or max_concurrent < 1 or read_timeout <= 0:
            raise ValueError("max_bytes, max_seconds, max_concurrent and read_timeout must be positive")
        self.recognizer = recognizer
        self.max_bytes = int(max_bytes)
        self.max_seconds = float(max_seconds)
        self.max_concurrent = int(max_concurrent)
        self.read_timeout = float(read_timeout)
        self.slots = threading.BoundedSemaphore(self.max_concurrent)
        self._busy = 0
        self._busy_lock = threading.Lock()
        super().__init__(address, RecognitionHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (or is cut off) mid-request is routine: log it without a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)):
            log.info("%s: connection lost (%s)", client_address[0], type(exc).__name__)
            return
        super().handle_error(request, client_address)

    @property
    def busy(self) -> int:
        return self._busy

    def acquire(self) -> bool:
        if not self.slots.acquire(blocking=False):
            return False
        with self._busy_lock:
            self._busy += 1
        return True

    def release(self) -> None:
        with self._busy_lock:
            self._busy -= 1
        self.slots.release()


class _RequestError(Exception):
    def __init__(self, status: HTTPStatus, code: str, detail: str, headers: dict[str, str] | None = None,
                 drain: int = 0) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers, self.drain = status, code, detail, headers or {}, drain


class RecognitionHandler(BaseHTTPRequestHandler):
    """Request handler of :class:`RecognitionServer`."""

    server: RecognitionServer
    protocol_version = "HTTP/1.1"
    server_version = "sltrain-serve"

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # socket timeout for headers and body
        super().setup()

    # ---- deadlines: headers and body each within read_timeout in all

    def handle_one_request(self) -> None:
        timer = threading.Timer(self.server.read_timeout, self._headers_too_slow)
        timer.daemon = True
        self._header_timer = timer
        timer.start()
        try:
            super().handle_one_request()
        finally:
            timer.cancel()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._header_timer.cancel()
        return ok

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if getattr(self, "_cut_off", False):
            self.close_connection = True  # already answered 408 and closed
            return
        super().send_error(code, message, explain)

    def _headers_too_slow(self) -> None:
        """Answer 408 and close: the request line and headers did not arrive within ``read_timeout``."""
        body = json.dumps({"error": "timeout", "detail": f"request headers not received within "
                                                         f"{self.server.read_timeout:g} s"}).encode()
        head = (f"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        self._cut_off = True
        log.info("%s: request headers not received within %g s; closing", self.address_string(),
                 self.server.read_timeout)
        try:
            self.connection.sendall(head + body)
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read_some(self, n: int, deadline: float) -> bytes:
        """Up to ``n`` body bytes (at least one unless the body ended); ``TimeoutError`` past ``deadline``."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.connection.settimeout(left)
        try:
            return self.rfile.read1(n)
        finally:
            self.connection.settimeout(self.server.read_timeout)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.info("%s %s", self.address_string(), format % args)

    # ---- responses

    def _send_json(self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None,
                   close: bool = False) -> None:
        self._send_body(status, json.dumps(payload, sort_keys=True).encode(), "application/json", headers, close)

    def _send_body(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None,
                   close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _send_error(self, err: _RequestError) -> None:
        if err.drain:
            self._drain(err.drain)
        self._send_json(err.status, {"error": err.code, "detail": err.detail}, err.headers, close=True)

    def _drain(self, length: int) -> None:
        """Read and drop up to ``DRAIN_LIMIT`` bytes of a refused body."""
        left = min(length, DRAIN_LIMIT)
        deadline = time.monotonic() + self.server.read_timeout
        try:
            while left > 0:
                chunk = self._read_some(min(CHUNK, left), deadline)
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    # ---- endpoints

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        rec = self.server.recognizer
        if path == "/":
            page = render_page(rec.name, rec.version, len(rec.classes), self.server.max_bytes, self.server.max_seconds)
            self._send_body(HTTPStatus.OK, page.encode("utf-8"), "text/html; charset=utf-8",
                            {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                             "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                             "style-src 'unsafe-inline'; connect-src 'self'; media-src 'self' blob: mediastream:; "
                             "img-src 'self' data:; base-uri 'none'; form-action 'self'"})
        elif path == "/health":
            self._send_json(HTTPStatus.OK, {"status": "ok", "model": rec.name, "version": rec.version,
                                            "classes": len(rec.classes), "busy": self.server.busy,
                                            "max_concurrent": self.server.max_concurrent})
        elif path == "/v2/health/live":
            self._send_json(HTTPStatus.OK, {"live": True})
        elif path == "/v2/health/ready":
            self._send_json(HTTPStatus.OK, {"ready": True})  # the model is loaded before the server listens
        elif path in ("/v2", "/v2/"):
            self._send_json(HTTPStatus.OK, {"name": SERVER_NAME, "version": __version__, "extensions": []})
        elif (m := _V2_MODEL.match(path)) and m["name"] == rec.name and m["version"] in (None, str(rec.version)):
            self._send_json(HTTPStatus.OK, {"name": rec.name, "ready": True} if m["ready"] else v2_model_metadata(rec))
        elif m:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "not_found", "detail": f"no model {m['name']!r}"
                                                   + (f" version {m['version']}" if m["version"] else "")
                                                   + f"; this server has {rec.name!r} version {rec.version}"})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "not_found", "detail": f"endpoints: {ENDPOINTS}"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/predict":
            self._send_error(_RequestError(HTTPStatus.NOT_FOUND, "not_found", f"endpoints: {ENDPOINTS}",
                                           drain=self._declared_length()))
            return
        try:
            length = self._check_headers()
            if not self.server.acquire():
                raise _RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "busy",
                                    f"{self.server.max_concurrent} prediction(s) already running; retry later",
                                    {"Retry-After": str(RETRY_AFTER_S)}, drain=length)
        except _RequestError as err:
            self._send_error(err)
            return
        failure: _RequestError | None = None
        try:
            payload = self._predict(length)
        except _RequestError as err:
            failure = err
        except Exception:  # the service must survive any one request
            log.exception("prediction failed")
            failure = _RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "error", "internal error (logged)")
        finally:
            # Free the slot before answering: a client that sends its next upload as soon as it has
            # read this answer must not find the slot still taken (a spurious 503).
            self.server.release()
        if failure is not None:
            self._send_error(failure)
        else:
            self._send_json(HTTPStatus.OK, payload)

    def _declared_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length", "0")))
        except ValueError:
            return 0

    def _check_headers(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _RequestError(HTTPStatus.LENGTH_REQUIRED, "length_required",
                                "chunked uploads are not accepted; send the video with a Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise _RequestError(HTTPStatus.BAD_REQUEST, "missing_body",
                                "POST the raw video file as the body, with a Content-Length")
        try:
            length = int(raw)
        except ValueError:
            raise _RequestError(HTTPStatus.BAD_REQUEST, "missing_body", f"bad Content-Length {raw!r}") from None
        if length <= 0:
            raise _RequestError(HTTPStatus.BAD_REQUEST, "missing_body", "empty body: POST the raw video file")
        if length > self.server.max_bytes:
            raise _RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                                f"{length} bytes; the limit is {self.server.max_bytes}", drain=length)
        if self._multipart() and "boundary=" not in self.headers.get("Content-Type", "").lower():
            raise _RequestError(HTTPStatus.BAD_REQUEST, "missing_body",
                                "a multipart form needs a boundary in its Content-Type (curl -F video=@clip.mp4 "
                                "sets one), or POST the raw video file as the body", drain=length)
        return length

    def _multipart(self) -> bool:
        return self.headers.get("Content-Type", "").lower().startswith("multipart/")

    def _predict(self, length: int) -> dict[str, Any]:
        fd, name = tempfile.mkstemp(prefix="sltrain-upload-", suffix=".video")
        try:
            received = 0
            deadline = time.monotonic() + self.server.read_timeout
            with os.fdopen(fd, "wb") as out:
                while received < length:
                    try:
                        chunk = self._read_some(min(CHUNK, length - received), deadline)
                    except TimeoutError:
                        raise _RequestError(HTTPStatus.REQUEST_TIMEOUT, "timeout",
                                            f"body not received within {self.server.read_timeout:g} s") from None
                    if not chunk:
                        raise _RequestError(HTTPStatus.BAD_REQUEST, "missing_body",
                                            f"body ended after {received} of {length} bytes")
                    received += len(chunk)
                    if received > self.server.max_bytes:  # cannot happen with an honest length; kept as a guard
                        raise _RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                                            f"more than {self.server.max_bytes} bytes")
                    out.write(chunk)
            if self._multipart():
                extract_form_file(name, self.headers.get("Content-Type", ""))
            try:
                result = self.server.recognizer.recognize_video(name, max_seconds=self.server.max_seconds)
            except PredictError as exc:
                status = _STATUS_OF_REASON.get(exc.reason, HTTPStatus.UNPROCESSABLE_ENTITY)
                detail = exc.detail.replace(name, "upload")
                raise _RequestError(status, _CODE_OF_REASON.get(exc.reason, exc.reason), detail) from None
            payload = result.to_dict()
            payload.pop("path", None)
            return payload
        finally:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass


def extract_form_file(path: str | os.PathLike[str], content_type: str) -> None:
    """Replace the ``multipart/form-data`` body saved at ``path`` by its first file (the ``video``
    field when there is one).

    The body was already limited to ``max_bytes``; the standard library's MIME parser reads it.

    Raises
    ------
    _RequestError
        400 ``missing_body`` when the form is not parseable or holds no file.
    """
    with open(path, "rb") as fh:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace") + fh.read())
    files = [part for part in message.iter_parts() if part.get_filename() is not None] \
        if message.is_multipart() else []
    if not files:
        raise _RequestError(HTTPStatus.BAD_REQUEST, "missing_body",
                            "the multipart form holds no file: send the video as a file field (curl -F "
                            "video=@clip.mp4), or POST the raw video file as the body")
    part = next((p for p in files if p.get_param("name", header="content-disposition") == "video"), files[0])
    payload = part.get_payload(decode=True) or b""
    if not payload:
        raise _RequestError(HTTPStatus.BAD_REQUEST, "missing_body", f"the form's file {part.get_filename()!r} is empty")
    tmp = f"{os.fspath(path)}.part"
    try:
        with open(tmp, "wb") as out:
            out.write(payload)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def make_server(recognizer: Recognizer, host: str = "127.0.0.1", port: int = 8000, **limits: Any) -> RecognitionServer:
    """A :class:`RecognitionServer` bound to ``host:port`` (not yet serving: call ``serve_forever``)."""
    return RecognitionServer((host, port), recognizer, **limits)


def add_serve_arguments(parser: Any) -> None:
    """Arguments of ``python -m sltrain serve``."""
    parser.add_argument("--model", required=True, metavar="DIR", help="exported model folder or model.xml")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0 = any free port)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest upload (default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help="longest video in seconds (default %(default)s)")
    parser.add_argument("--max-concurrent", type=int, default=DEFAULT_MAX_CONCURRENT,
                        help="predictions at once; more get 503 (default %(default)s)")
    parser.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT,
                        help="seconds to receive a request (default %(default)s)")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (default %(default)s)")


def main_serve(args: Any) -> int:
    """Run the service until interrupted; 2 for a bad model."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        recognizer = Recognizer.from_model_dir(args.model, device=args.device)
    except ModelDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    recognizer.estimator()  # import MediaPipe before the first request
    server = make_server(recognizer, args.host, args.port, max_bytes=args.max_bytes, max_seconds=args.max_seconds,
                         max_concurrent=args.max_concurrent, read_timeout=args.read_timeout)
    host, port = server.server_address[:2]
    print(f"serving {recognizer.name} v{recognizer.version} on http://{host}:{port}/ (web page at /; POST /predict, "
          "GET /health, GET /v2/health/ready, GET /v2/models/" f"{recognizer.name})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
