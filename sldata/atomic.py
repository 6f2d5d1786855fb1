"""Atomic file writes: a killed run never leaves a half-written artifact.

Every artifact is written to a temporary file in the destination folder, flushed to disk
and then renamed over the final name (``os.replace`` is atomic on POSIX file systems).

Two failure modes are handled beyond that:

* **Killed writers.** A ``kill -9`` leaves its temporary ``.<name>.<random>.tmp`` behind. The
  writer holds an exclusive ``flock`` on its temporary file for as long as it writes, and the
  next :func:`atomic_path` of the same final name removes every such temporary whose lock is
  free (its writer is dead), so reruns do not accumulate scratch files (a killed frames shard
  can be gigabytes). A temporary that a live writer holds is never touched.
* **Full disks.** When the write fails because the disk is full, a quota or a file-size limit
  is reached (``ENOSPC``, ``EDQUOT``, ``EFBIG``; also recognized when a writer such as PyTorch's
  zip writer loses the errno), the error is re-raised as an :class:`ArtifactWriteError` (an
  :class:`OSError` with that errno) naming the artifact and saying that its previous version is
  unchanged, instead of, say, pyarrow's ``Error writing bytes to file`` that names no file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import resource
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

OUT_OF_SPACE_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Errnos of a write that failed for lack of space: disk full, quota exceeded, file-size limit."""

_LOW_SPACE_BYTES = 1 << 20


class ArtifactWriteError(OSError):
    """An artifact could not be written for lack of space; the message names it (``errno`` as the cause's)."""


def _io_error(exc: BaseException) -> bool:
    """An exception that writers raise for failed I/O (not a bug, not an interrupt)."""
    return isinstance(exc, (OSError, RuntimeError)) or type(exc).__module__.split(".")[0] == "av"


def out_of_space_errno(exc: BaseException, tmp: str | os.PathLike[str] | None = None) -> int | None:
    """The errno (one of :data:`OUT_OF_SPACE_ERRNOS`) when ``exc`` means "no space to write", else None.

    Looks through the exception chain for an :class:`OSError` with such an errno or a message
    carrying its text ("No space left on device", "File too large", "Disk quota exceeded").
    Given the temporary file ``tmp`` that was being written, also diagnoses writers that drop
    the errno: ``tmp`` reached the process's file-size limit (``RLIMIT_FSIZE``), or its file
    system has (almost) no space left for this user.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in OUT_OF_SPACE_ERRNOS:
            return current.errno
        if _io_error(current):  # pyarrow's OSError and PyAV's errors carry the errno in their text only
            text = str(current)
            for code in sorted(OUT_OF_SPACE_ERRNOS):
                if os.strerror(code) in text:
                    return code
        current = current.__cause__ or current.__context__
    if tmp is None or not _io_error(exc):  # I/O failures only, never a bug or ^C
        return None
    tmp = Path(tmp)
    with contextlib.suppress(OSError, ValueError):
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY and tmp.stat().st_size >= soft:
            return errno.EFBIG
    with contextlib.suppress(OSError):
        st = os.statvfs(tmp.parent)
        if st.f_bavail * st.f_frsize < _LOW_SPACE_BYTES:
            return errno.ENOSPC
    return None


def is_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it chains) is a write that failed for lack of space."""
    return out_of_space_errno(exc) is not None


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``path`` left by killed writers; returns the removed files.

    A temporary whose ``flock`` is held belongs to a live writer and is kept.
    """
    final = Path(path)
    removed: list[Path] = []
    for name in glob.glob(os.path.join(glob.escape(str(final.parent)), f".{glob.escape(final.name)}.*.tmp")):
        candidate = Path(name)
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # a live writer holds it
            continue
        try:
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The caller writes the temporary path by any means (pyarrow, numpy, a subprocess).
    On an exception the temporary file is removed and ``path`` is left untouched; a failure
    for lack of space is re-raised as :class:`ArtifactWriteError` (``ENOSPC``/``EDQUOT``/``EFBIG``)
    naming ``path``.
    Temporaries of ``path`` left by killed writers are removed first.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the rename: marks the temporary as in use
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; artifacts are shared data, readable like any other file.
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException as exc:
        # Already named (an inner atomic_path of a nested write): keep that artifact's message.
        code = None if isinstance(exc, ArtifactWriteError) else out_of_space_errno(exc, tmp)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if code is not None:
            raise ArtifactWriteError(code, f"{os.strerror(code)} while writing {final}; nothing was replaced "
                                           f"(a previous {final.name}, if any, is unchanged)") from exc
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing and rename it over ``path`` on success."""
    if not any(m in mode for m in "wx"):
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode.replace("x", "w"), **kwargs) as fh:
            yield fh


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as stable, human-readable JSON (sorted keys, trailing newline), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
