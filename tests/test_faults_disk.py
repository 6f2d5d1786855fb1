"""Disk full while an artifact is written: a clear error naming it, the previous version intact.

Runs :func:`bench.faults.disk.run` (the same code ``python -m bench.faults`` runs) once per
artifact, plus direct checks of how :mod:`sldata.atomic` reports a full disk.
"""

from __future__ import annotations

import errno
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from bench.faults import disk  # noqa: E402
from bench.faults.common import CATEGORIES  # noqa: E402

GROUPS: list[tuple[str, ...]] = [(c,) for c in disk.CASES if c not in ("training_checkpoint", "model_pt")]
GROUPS.append(("training_checkpoint", "model_pt"))  # one run: they share the finished training they start from


@pytest.mark.parametrize("cases", GROUPS, ids="+".join)
def test_disk_full_gives_a_clear_error_and_keeps_the_previous_artifact(cases: tuple[str, ...], shared: Path,
                                                                       tmp_path: Path) -> None:
    outcomes = disk.run(tmp_path, repeats=1, seed=0, cases=cases)
    assert len(outcomes) == len(cases)
    for outcome in outcomes:
        assert outcome.category == "disk_full" and outcome.category in CATEGORIES
        assert outcome.kind.startswith("disk full writing the ") and outcome.injected == 1
        assert outcome.all_survived and outcome.lost == 0, "\n".join(outcome.failures)


def test_run_rejects_unknown_cases(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown case"):
        disk.run(tmp_path, 1, 0, cases=["floppy"])


WRITERS = textwrap.dedent(
    """
    import sys
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq, torch
    from sldata.atomic import atomic_path, write_json
    folder, kind = sys.argv[1], sys.argv[2]
    if kind == "parquet":
        with atomic_path(folder + "/a.parquet") as tmp:
            pq.write_table(pa.table({"x": np.arange(200_000)}), tmp)
    elif kind == "npy":
        with atomic_path(folder + "/a.npy") as tmp:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(100_000,))[:] = 1
    elif kind == "torch":
        with atomic_path(folder + "/a.pt") as tmp:
            torch.save({"w": torch.ones(100_000)}, tmp)
    else:
        write_json(folder + "/a.json", {"x": "y" * 100_000})
    """
)


@pytest.mark.parametrize(("kind", "name"), [("parquet", "a.parquet"), ("npy", "a.npy"), ("torch", "a.pt"),
                                            ("json", "a.json")])
def test_every_writer_reports_the_full_disk_naming_the_artifact(kind: str, name: str, tmp_path: Path) -> None:
    """pyarrow, numpy memmaps, PyTorch's zip writer and plain files: all end in one clear OSError."""
    (tmp_path / name).write_bytes(b"previous")
    rc, stderr = disk.run_with_file_size_limit([sys.executable, "-c", WRITERS, str(tmp_path), kind], tmp_path,
                                               20_000, tmp_path / "log.txt")
    assert rc == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("sldata.atomic.ArtifactWriteError: [Errno 27] File too large while writing ")
    assert f"{tmp_path / name}; nothing was replaced" in last
    assert (tmp_path / name).read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "log.txt"])


def test_out_of_space_is_recognized_by_errno_message_or_the_temporary_file(tmp_path: Path) -> None:
    from sldata.atomic import is_out_of_space, out_of_space_errno

    assert out_of_space_errno(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    wrapped = RuntimeError("writing failed")
    wrapped.__cause__ = OSError("Error writing bytes to file. Detail: [errno 122] Disk quota exceeded")
    assert out_of_space_errno(wrapped) == errno.EDQUOT
    assert not is_out_of_space(OSError(errno.EACCES, "Permission denied"))
    assert not is_out_of_space(ValueError("File too large? no: a bug"))  # never a non-I/O error by the file
    assert out_of_space_errno(RuntimeError("file write failed"), tmp_path / "missing.tmp") is None
