"""The HTTP service: real clip -> 200 + top-5, bad uploads -> 4xx with a reason, overload -> 503, still healthy."""

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


def request(srv: RecognitionServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}"), dict(resp.getheaders())
    finally:
        conn.close()


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
    assert status == 415 and "raw video" in payload["detail"]
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
