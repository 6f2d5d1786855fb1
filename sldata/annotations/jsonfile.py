"""Loading annotation JSON with errors that name the file, and recording its provenance."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class AnnotationFileError(RuntimeError):
    """An annotation file is missing, unreadable or not of the expected shape."""


@dataclass(frozen=True)
class InputFile:
    """Provenance of one input file: its path as configured, byte size and sha256."""

    path: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def load_json(path: str | Path, hint: str = "") -> tuple[Any, InputFile]:
    """Parse a JSON file; raise :class:`AnnotationFileError` naming the file (and line) on failure.

    ``hint`` is appended to the "not found" message, e.g. where to get the file.
    """
    p = Path(path)
    if not p.is_file():
        raise AnnotationFileError(f"annotation file not found: {path}" + (f". {hint}" if hint else ""))
    raw = p.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise AnnotationFileError(f"{path}: not UTF-8 text ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise AnnotationFileError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except RecursionError:
        raise AnnotationFileError(f"{path}: JSON nested too deeply to read (not an annotation file)") from None
    return data, InputFile(path=str(path), size=len(raw), sha256=hashlib.sha256(raw).hexdigest())
