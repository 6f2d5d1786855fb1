"""The HTTP service: real clip -> 200 + top-5 (raw body or multipart form), the page at /, KServe v2 health and
metadata, bad uploads -> 4xx with a reason, overload -> 503, still healthy."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data_dir
from sltrain.export import export_model, write_untrained_checkpoint
from sltrain.predict import Recognizer
from sltrain.serve import RecognitionServer, make_server

CLASSES = ["book", "drink", "computer", "before", "chair", "go", "clothes", "who"]
MAX_BYTES = 200_000
CLIP = shared_data_dir() / "wlasl100_clips" / "videos" / "32146.mp4"  # 24 frames, about 16 KB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecognitionServer]:
    tmp = tmp_path_factory.mktemp("serve")
    write_untrained_checkpoint(tmp / "model.pt", CLASSES, model_config={"d_model": 32, "num_layers": 1, "num_heads": 2},
                               num_frames=32)
    export_model(tmp / "model.pt", tmp / "repo")
    recognizer = Recognizer.from_model_dir(tmp / "repo" / "sign-recognizer")
    srv = make_server(recognizer, "127.0.0.1", 0, max_bytes=MAX_BYTES, max_seconds=10.0, max_concurrent=1,
                      read_timeout=2.0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def raw_request(srv: RecognitionServer, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def request(srv: RecognitionServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:
    status, data, got = raw_request(srv, method, path, body, headers)
    return status, json.loads(data or b"{}"), got


def form(fields: list[tuple[str, str | None, bytes]], boundary: str = "----sltrain-test-7MA4YWxk") -> tuple[bytes, str]:
    """A multipart/form-data body of ``(name, filename or None, data)`` parts, as a browser or curl -F sends it."""
    out = b""
    for name, filename, data in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "Content-Type: video/mp4\r\n" if filename else ""
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def healthy(srv: RecognitionServer) -> bool:
    status, payload, _ = request(srv, "GET", "/health")
    return status == 200 and payload["status"] == "ok"


def test_health(server: RecognitionServer) -> None:
    status, payload, _ = request(server, "GET", "/health")
    assert status == 200
    assert payload == {"status": "ok", "model": "sign-recognizer", "version": 1, "classes": 8, "busy": 0,
                       "max_concurrent": 1}
    assert request(server, "GET", "/nope")[0] == 404


def test_real_clip(server: RecognitionServer) -> None:
    status, payload, _ = request(server, "POST", "/predict", CLIP.read_bytes(), {"Content-Type": "video/mp4"})
    assert status == 200, payload
    assert len(payload["top"]) == 5 and {t["gloss"] for t in payload["top"]} <= set(CLASSES)
    assert payload["num_frames"] == 24 and "path" not in payload


def test_multipart_form_gives_the_same_answer_as_the_raw_body(server: RecognitionServer) -> None:
    """`curl -F video=@clip.mp4` (and the web page) send a form: its file is the video."""
    raw = request(server, "POST", "/predict", CLIP.read_bytes())[1]
    body, kind = form([("note", None, b"hello"), ("video", "32146.mp4", CLIP.read_bytes())])
    status, payload, _ = request(server, "POST", "/predict", body, {"Content-Type": kind})
    assert status == 200, payload
    assert payload["top"] == raw["top"] and payload["num_frames"] == 24
    # a file under another field name is taken too (the first file of the form)
    body, kind = form([("clip", "x.mp4", CLIP.read_bytes())])
    assert request(server, "POST", "/predict", body, {"Content-Type": kind})[1]["top"] == raw["top"]


def test_page_at_root(server: RecognitionServer) -> None:
    status, page, headers = raw_request(server, "GET", "/")
    text = page.decode()
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "sign-recognizer" in text and "8 glosses" in text and 'id="file"' in text and "MediaRecorder" in text
    assert "default-src 'none'" in headers["Content-Security-Policy"] and "://" not in text  # nothing external


def test_kserve_v2_health_and_metadata(server: RecognitionServer) -> None:
    assert request(server, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    assert request(server, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    status, meta, _ = request(server, "GET", "/v2")
    assert status == 200 and meta["name"] == "sltrain-serve" and meta["extensions"] == []
    status, model, _ = request(server, "GET", "/v2/models/sign-recognizer")
    assert status == 200 and model["name"] == "sign-recognizer" and model["versions"] == ["1"]
    recognizer = server.recognizer
    spec = recognizer.spec
    assert model["inputs"] == [
        {"name": "pose", "datatype": "FP32", "shape": [1, spec.num_frames, spec.num_points, spec.num_channels]},
        {"name": "mask", "datatype": "FP32", "shape": [1, spec.num_frames]}]
    assert model["outputs"] == [{"name": "gloss", "datatype": "FP32", "shape": [1, 8]}]
    # the IR's real tensors have those names and shapes
    import openvino as ov

    ir = ov.Core().read_model(str(recognizer.path))
    assert {i.get_any_name(): list(i.get_shape()) for i in ir.inputs} == {i["name"]: i["shape"] for i in model["inputs"]}
    assert request(server, "GET", "/v2/models/sign-recognizer/versions/1")[1] == model
    assert request(server, "GET", "/v2/models/sign-recognizer/ready")[:2] == (200, {"name": "sign-recognizer",
                                                                                   "ready": True})
    assert request(server, "GET", "/v2/models/other")[0] == 404
    assert request(server, "GET", "/v2/models/sign-recognizer/versions/2")[0] == 404


def test_bad_uploads(server: RecognitionServer) -> None:
    noise = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    status, payload, _ = request(server, "POST", "/predict", noise)
    assert status == 415 and payload["error"] == "not_a_video"
    status, payload, _ = request(server, "POST", "/predict", b"")
    assert status == 400 and payload["error"] == "missing_body"
    status, payload, _ = request(server, "POST", "/predict", b"\0" * (MAX_BYTES + 1))
    assert status == 413 and payload["error"] == "too_large"
    status, payload, _ = request(server, "POST", "/predict", CLIP.read_bytes(),
                                 {"Content-Type": "multipart/form-data; boundary=x"})
    assert status == 400 and payload["error"] == "missing_body" and "no file" in payload["detail"]
    status, payload, _ = request(server, "POST", "/predict", CLIP.read_bytes(), {"Content-Type": "multipart/form-data"})
    assert status == 400 and "boundary" in payload["detail"]
    body, kind = form([("video", None, CLIP.read_bytes())])  # a text field, not a file
    assert request(server, "POST", "/predict", body, {"Content-Type": kind})[:2][0] == 400
    body, kind = form([("video", "noise.mp4", noise)])
    status, payload, _ = request(server, "POST", "/predict", body, {"Content-Type": kind})
    assert status == 415 and payload["error"] == "not_a_video"
    server.max_seconds = 0.5
    try:
        status, payload, _ = request(server, "POST", "/predict", CLIP.read_bytes())
    finally:
        server.max_seconds = 10.0
    assert status == 422 and payload["error"] == "too_long"
    assert healthy(server)


def test_slow_body_times_out(server: RecognitionServer) -> None:
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        started = time.monotonic()
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408") and time.monotonic() - started < 8
    assert healthy(server)


def test_overload(server: RecognitionServer) -> None:
    body = CLIP.read_bytes()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: request(server, "POST", "/predict", body), range(4)))
    statuses = sorted(a[0] for a in answers)
    assert set(statuses) <= {200, 503} and 200 in statuses
    for status, payload, headers in answers:
        if status == 503:
            assert payload["error"] == "busy" and headers["Retry-After"] == "1"
        else:
            assert len(payload["top"]) == 5
    assert healthy(server)
    assert request(server, "GET", "/health")[1]["busy"] == 0


def test_cli_parser_has_serve(tmp_path: Path) -> None:
    from sltrain.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", str(tmp_path), "--port", "0", "--max-concurrent", "3"])
    assert args.max_concurrent == 3 and args.port == 0 and args.max_bytes == 50 * 1024 * 1024
