"""Check that `pip install ".[infer]"` gives predict, stream and serve without torch, dvc and snakemake.

In a fresh virtual environment (a temporary folder), installs this checkout with the ``infer``
extra, constrained to ``requirements.lock``'s versions, then, from a folder outside the checkout
(so nothing is imported from it):

* checks that ``torch``, ``dvc`` and ``snakemake`` are not installed and lists what is;
* ``sltrain predict`` and ``sltrain stream`` on a real WLASL clip with an exported model;
* ``sltrain serve`` on a free port: ``GET /v2/health/ready``, ``GET /``, a multipart upload;
* ``sltrain train`` and ``sltrain export`` refuse with a message that says what to install.

The exported model is ``--model DIR``, or a small untrained one exported here with the current
interpreter (which needs torch). pip reads its usual configuration (index, find-links, caches).

    python bench/infer_install.py [--model data/demo/export/sign-recognizer] [--keep]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
FORBIDDEN = ("torch", "dvc", "snakemake")


def shared_clip() -> Path:
    shared = Path(os.environ.get("SLDATA_SHARED", REPO_ROOT.parent / "shared" / "data"))
    return shared / "wlasl100_clips" / "videos" / "32146.mp4"


def sh(cmd: list[str], cwd: Path, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def export_small_model(folder: Path) -> Path:
    from sltrain.export import export_model, write_untrained_checkpoint

    write_untrained_checkpoint(folder / "model.pt", ["book", "drink", "computer", "before", "chair", "go"],
                               model_config={"d_model": 32, "num_layers": 1, "num_heads": 2}, num_frames=32)
    export_model(folder / "model.pt", folder / "repo")
    return folder / "repo" / "sign-recognizer"


def multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"{path.name}\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def check_serve(bin_dir: Path, model: Path, clip: Path, cwd: Path) -> dict[str, object]:
    proc = subprocess.Popen([str(bin_dir / "sltrain"), "serve", "--model", str(model), "--port", "0"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"http://([\d.]+):(\d+)/", banner)
        if not match:
            raise SystemExit(f"serve did not start: {banner}{proc.stdout.read() if proc.stdout else ''}")
        host, port = match[1], int(match[2])

        def get(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
            conn = http.client.HTTPConnection(host, port, timeout=120)
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()

        ready = get("GET", "/v2/health/ready")
        page = get("GET", "/")
        body, kind = multipart(clip)
        upload = get("POST", "/predict", body, {"Content-Type": kind})
        return {"ready": ready[0] == 200 and json.loads(ready[1]) == {"ready": True},
                "page": page[0] == 200 and b"<!doctype html>" in page[1],
                "upload": upload[0] == 200 and len(json.loads(upload[1])["top"]) == 5}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="an exported model folder (default: export a small one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args(argv)
    clip = shared_clip()
    tmp = Path(tempfile.mkdtemp(prefix="infer_install_"))
    report: dict[str, object] = {}
    try:
        model = args.model.resolve() if args.model else export_small_model(tmp)
        venv = tmp / "venv"
        started = time.perf_counter()
        sh([sys.executable, "-m", "venv", str(venv)], tmp)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        sh([*pip, "install", "--quiet", "--upgrade", "pip>=24"], tmp)
        sh([*pip, "install", "--quiet", "-c", str(REPO_ROOT / "requirements.lock"), f"{REPO_ROOT}[infer]"], tmp)
        report["install_s"] = round(time.perf_counter() - started, 1)
        frozen = sh([*pip, "list", "--format=json"], tmp).stdout
        installed = {p["name"].lower(): p["version"] for p in json.loads(frozen)}
        report["packages"] = len(installed)
        report["forbidden_installed"] = [name for name in FORBIDDEN if name in installed]
        site = next((venv / "lib").glob("python*/site-packages"))
        report["site_packages_mb"] = round(sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 1e6)
        bin_dir = venv / "bin"
        outside = tmp / "elsewhere"
        outside.mkdir()
        predicted = sh([str(bin_dir / "sltrain"), "predict", "--model", str(model), str(clip)], outside)
        report["predict"] = len(re.findall(r"^\s+\d\. ", predicted.stdout, flags=re.M)) == 5  # the top-5 lines
        streamed = sh([str(bin_dir / "sltrain"), "stream", "--model", str(model), str(clip)], outside)
        report["stream"] = streamed.returncode == 0
        report["serve"] = check_serve(bin_dir, model, clip, outside)
        train = sh([str(bin_dir / "sltrain"), "train", "--packed", "x", "--label-map", "x", "--out-dir", "x",
                    "--work-dir", "x"], outside, check=False)
        report["train_refused"] = train.returncode == 2 and "source checkout" in train.stderr
        export = sh([str(bin_dir / "sltrain"), "export", "x.pt", "--out", "x"], outside, check=False)
        report["export_refused"] = export.returncode == 2 and "'torch'" in export.stderr
        imports = sh([str(venv / "bin" / "python"), "-c", "import importlib.util as u; "
                      f"print([m for m in {FORBIDDEN!r} if u.find_spec(m)])"], outside)
        report["forbidden_importable"] = imports.stdout.strip()
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2))
    serve = report.get("serve", {})
    ok = (not report.get("forbidden_installed") and report.get("predict") and report.get("stream")
          and isinstance(serve, dict) and all(serve.values()) and report.get("train_refused")
          and report.get("export_refused"))
    print("OK: predict, stream and serve work without torch, dvc and snakemake" if ok else "FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
