"""What every fault-injection module reports, and the helpers they share.

A *fault kind* (``kill -9 during pose``, ``truncated MP4``, ...) belongs to a *category*
(``kill``, ``disk_full``, ``network``, ``corrupt_media``, ``hostile_input``, ``params``,
``checkpoint``, ``serve``). Each module in :mod:`bench.faults` exposes

    run(workdir: Path, repeats: int, seed: int) -> list[FaultOutcome]

which injects each of its fault kinds (``repeats`` times where repetition means something,
such as kills at random moments) and checks that the pipeline survived: the run ended with a
clear error or a recorded rejection, finished artifacts match an uninterrupted run, and no
row or artifact was lost. ``python -m bench.faults`` runs every module and writes the table
into the README; the tests call the same functions with small ``repeats``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FaultOutcome:
    """How one fault kind fared.

    Attributes
    ----------
    category
        One of :data:`CATEGORIES`.
    kind
        Human-readable fault kind, e.g. ``"kill -9 during pose"``.
    injected
        Faults of this kind injected.
    survived
        Of those, how many the pipeline survived (clear error or recorded rejection, run goes on,
        rerun completes, artifacts identical to an uninterrupted run).
    lost
        Rows or artifacts lost or silently corrupted (must be 0).
    failures
        One line per fault not survived, saying what went wrong (empty when all survived).
    """

    category: str
    kind: str
    injected: int = 0
    survived: int = 0
    lost: int = 0
    failures: list[str] = field(default_factory=list)

    def record(self, ok: bool, lost: int = 0, why: str = "") -> None:
        """Count one injected fault; ``ok`` when it was survived with nothing lost."""
        self.injected += 1
        self.lost += lost
        if ok and lost == 0:
            self.survived += 1
        else:
            self.failures.append(why or "not survived")

    @property
    def all_survived(self) -> bool:
        return self.injected > 0 and self.survived == self.injected and self.lost == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CATEGORIES: tuple[str, ...] = ("kill", "disk_full", "network", "corrupt_media", "hostile_input", "params",
                               "checkpoint", "serve")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    root = Path(root)
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
