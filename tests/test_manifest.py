"""The manifest stage: typed Parquet with schema and provenance, rejects, determinism, atomic writes, fetching."""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import default_params
from sldata.annotations.jsonfile import AnnotationFileError
from sldata.fetch import FetchError, fetch_pinned
from sldata.manifest import build_manifest, write_manifest, write_parquet, manifest_table
from sldata.manifest_schema import COLUMNS


def sources(shared: Path, msasl_dir: Path | None = None, local: str | None = None) -> dict:
    src = copy.deepcopy(default_params()["sources"])
    src["wlasl"]["annotation"]["local_path"] = str(shared / "wlasl" / "asl100.json") if local is None else local
    if msasl_dir is not None:
        src["msasl"].update(enabled=True, dir=str(msasl_dir))
    return src


def test_manifest_of_both_datasets(shared: Path, msasl_dir: Path, tmp_path: Path) -> None:
    result = build_manifest(sources(shared, msasl_dir), tmp_path / "raw")
    report = write_manifest(result, tmp_path / "out")
    assert report["kept"] == {"msasl/test": 4172, "msasl/train": 3651, "msasl/val": 5287,
                              "wlasl/test": 258, "wlasl/train": 1442, "wlasl/val": 338}
    assert report["rejected_by_reason"] == {"end_before_start": 1, "inconsistent_crop": 2}
    # Readable by plain pyarrow / pandas, without project code.
    table = pq.read_table(tmp_path / "out" / "manifest.parquet")
    assert table.schema.names == [c[0] for c in COLUMNS]
    assert str(table.schema.field("label").type) == "int32" and not table.schema.field("label").nullable
    assert table.schema.field("end_s").metadata[b"description"].startswith(b"Crop end")
    meta = table.schema.metadata
    provenance = json.loads(meta[b"sldata.provenance"])
    asl100 = (shared / "wlasl" / "asl100.json").read_bytes()
    assert provenance[0]["sha256"] == hashlib.sha256(asl100).hexdigest() and provenance[0]["size"] == len(asl100)
    assert len(provenance) == 1 + 5 and b"sample_id" in meta[b"sldata.schema"]
    frame = table.to_pandas()
    assert frame.sample_id.is_unique and set(frame.dataset) == {"wlasl", "msasl"}
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pandas()
    assert sorted(rejects.reason) == ["end_before_start", "inconsistent_crop", "inconsistent_crop"]
    assert rejects.file.str.endswith("MSASL_train.json").all() and (rejects.record != "").all()


def test_same_inputs_give_byte_identical_artifacts(shared: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_manifest(build_manifest(sources(shared), tmp_path / "raw"), tmp_path / name)
    for file in ("manifest.parquet", "rejects.parquet", "report.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_a_failed_write_leaves_the_previous_artifact_intact(shared: Path, tmp_path: Path, monkeypatch) -> None:
    result = build_manifest(sources(shared), tmp_path / "raw")
    target = tmp_path / "manifest.parquet"
    write_parquet(manifest_table(result), target)
    before = target.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_parquet(manifest_table(result), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_local_copy_with_wrong_sha256_is_refused(shared: Path, tmp_path: Path) -> None:
    src = sources(shared)
    src["wlasl"]["annotation"]["local_sha256"] = "0" * 64
    with pytest.raises(AnnotationFileError, match="local_sha256: .*asl100.json has sha256 7d257ef6"):
        build_manifest(src, tmp_path)
    src["wlasl"]["annotation"]["local_path"] = str(tmp_path / "nope.json")
    with pytest.raises(AnnotationFileError, match=r"local_path: .*nope.json does not exist.*set it to \"\""):
        build_manifest(src, tmp_path)


@pytest.fixture()
def file_server(tmp_path: Path) -> Iterator[tuple[str, dict]]:
    """A loopback HTTP server serving tmp_path/www, counting requests."""
    root = tmp_path / "www"
    root.mkdir()
    hits: dict[str, int] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):  # noqa: N802
            hits[self.path] = hits.get(self.path, 0) + 1
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def test_fetch_verifies_size_and_sha256(shared: Path, tmp_path: Path, file_server) -> None:
    base, hits = file_server
    body = (shared / "wlasl" / "asl100.json").read_bytes()
    (tmp_path / "www" / "WLASL_v0.3.json").write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    dest = tmp_path / "raw" / "WLASL_v0.3.json"
    assert fetch_pinned(f"{base}/WLASL_v0.3.json", dest, len(body), digest).read_bytes() == body
    fetch_pinned(f"{base}/WLASL_v0.3.json", dest, len(body), digest)
    assert hits["/WLASL_v0.3.json"] == 1  # a verified copy is not fetched again
    # The manifest stage fetches when no local copy is configured.
    src = sources(shared, local="")
    src["wlasl"]["annotation"].update(url=f"{base}/WLASL_v0.3.json", size=len(body), sha256=digest)
    result = build_manifest(src, tmp_path / "raw2")
    assert len(result.rows) == 2038 and result.inputs[0].path.endswith("raw2/WLASL_v0.3.json")


def test_fetch_refuses_a_tampered_file_and_keeps_no_partial(shared: Path, tmp_path: Path, file_server) -> None:
    base, _ = file_server
    body = (shared / "wlasl" / "asl100.json").read_bytes()
    (tmp_path / "www" / "f.json").write_bytes(body[:-10] + b"0123456789")
    dest = tmp_path / "raw" / "f.json"
    with pytest.raises(FetchError, match=r"expected \d+ bytes with sha256 .*Download it by hand"):
        fetch_pinned(f"{base}/f.json", dest, len(body), hashlib.sha256(body).hexdigest())
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    with pytest.raises(FetchError, match="more than the pinned"):
        fetch_pinned(f"{base}/f.json", dest, 100, hashlib.sha256(body).hexdigest())


def test_fetch_offline_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(FetchError, match=r"could not fetch .*are you offline\?.*local_path"):
        fetch_pinned(f"http://127.0.0.1:{port}/WLASL_v0.3.json", tmp_path / "x.json", 10, "0" * 64, timeout_s=5)
