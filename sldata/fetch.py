"""Fetching a pinned file (e.g. the WLASL v0.3 annotation) with size and sha256 checks."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from sldata.annotations.jsonfile import sha256_of
from sldata.atomic import atomic_path


class FetchError(RuntimeError):
    """The pinned file could not be fetched or did not match its pinned size and sha256."""


def fetch_pinned(url: str, dest: str | Path, size: int, sha256: str, timeout_s: float = 60.0) -> Path:
    """Return ``dest``, downloading ``url`` there first unless a verified copy is present.

    The download goes to a temporary file beside ``dest`` and is renamed only once its size
    and sha256 match the pinned values, so ``dest`` is either absent or verified.

    Raises
    ------
    FetchError
        Offline, HTTP error, or a size/sha256 mismatch; the message says how to proceed.
    """
    dest = Path(dest)
    if dest.is_file() and dest.stat().st_size == size and sha256_of(dest) == sha256:
        return dest
    manual = (
        f"Download it by hand from {url} (size {size} bytes, sha256 {sha256}) and point params.yaml at the "
        "local copy instead (sources.wlasl.annotation.local_path)."
    )
    request = urllib.request.Request(url, headers={"User-Agent": "sldata-fetch/0.1"})
    digest = hashlib.sha256()
    received = 0
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response, open(tmp, "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    received += len(block)
                    if received > size:
                        raise FetchError(f"{url}: more than the pinned {size} bytes received; refusing it. {manual}")
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise FetchError(f"could not fetch {url} ({exc}); are you offline? {manual}") from exc
        if received != size or digest.hexdigest() != sha256:
            raise FetchError(
                f"{url}: got {received} bytes with sha256 {digest.hexdigest()}, expected {size} bytes with sha256 "
                f"{sha256}. {manual}"
            )
    return dest
