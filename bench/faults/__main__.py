"""``python -m bench.faults``: run every fault-injection module, print and record the figures.

Usage::

    python -m bench.faults [--repeats N] [--seed S] [--only CATEGORY ...] [--workdir DIR]
                           [--json PATH] [--write-readme]

Every module of :data:`MODULES` that exists is imported and its
``run(workdir, repeats, seed) -> list[FaultOutcome]`` called (a module whose categories are all
left out by ``--only`` is skipped; one whose ``run`` takes ``categories`` gets the ones wanted). The table (category, fault kind, injected, survived, data
lost) and its totals are printed, written as JSON (default ``bench/results/faults.json``) and,
with ``--write-readme``, put into ``docs/reliability.md`` between ``<!-- faults:begin -->`` and
``<!-- faults:end -->`` with the command and the date. The exit status is 1 when any fault was
not survived or lost data (its failures are printed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.faults.common import CATEGORIES, FaultOutcome

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "docs" / "reliability.md"
"""Where ``--write-readme`` puts the table (it moved from README.md with the reference material)."""
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "faults.json"

MODULES: dict[str, tuple[str, ...]] = {
    "bench.faults.kill": ("kill",),
    "bench.faults.disk": ("disk_full",),
    "bench.faults.network": ("network",),
    "bench.faults.media": ("corrupt_media",),
    "bench.faults.hostile": ("hostile_input", "params", "checkpoint", "serve"),
}
"""Fault modules, in running order, with the categories each reports."""


def run_modules(workdir: Path, repeats: int, seed: int, only: Sequence[str] | None = None,
                log: Any = sys.stderr) -> tuple[list[FaultOutcome], dict[str, float]]:
    """Run the fault modules that exist and cover ``only``; ``(outcomes, seconds per module)``.

    A module that raises is reported as one outcome per category it covers, not survived.
    """
    wanted = set(only or CATEGORIES)
    outcomes: list[FaultOutcome] = []
    seconds: dict[str, float] = {}
    for name, categories in MODULES.items():
        if not wanted & set(categories):
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                print(f"{name}: not present, skipped", file=log, flush=True)
                continue
            raise
        print(f"{name}: running ({repeats} repeat(s), seed {seed})", file=log, flush=True)
        started = time.monotonic()
        kwargs: dict[str, Any] = {}
        if "categories" in inspect.signature(module.run).parameters and not set(categories) <= wanted:
            kwargs["categories"] = [c for c in categories if c in wanted]
        try:
            got = module.run(workdir, repeats, seed, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a crashed module is a fault not survived
            got = []
            for category in categories:
                o = FaultOutcome(category, f"{name} crashed")
                o.record(False, 0, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                got.append(o)
        seconds[name] = round(time.monotonic() - started, 1)
        print(f"{name}: done in {seconds[name]:.0f} s", file=log, flush=True)
        outcomes += [o for o in got if o.category in wanted]
    order = {c: i for i, c in enumerate(CATEGORIES)}
    outcomes.sort(key=lambda o: order.get(o.category, len(order)))
    return outcomes, seconds


def totals(outcomes: Sequence[FaultOutcome]) -> dict[str, int]:
    return {"injected": sum(o.injected for o in outcomes), "survived": sum(o.survived for o in outcomes),
            "lost": sum(o.lost for o in outcomes)}


def table(outcomes: Sequence[FaultOutcome]) -> str:
    """A Markdown table of the outcomes with a totals row."""
    lines = ["| category | fault kind | injected | survived | data lost |", "|---|---|---:|---:|---:|"]
    for o in outcomes:
        kind = o.kind.replace("|", "\\|")
        lines.append(f"| {o.category} | {kind} | {o.injected} | {o.survived} | {o.lost} |")
    t = totals(outcomes)
    lines.append(f"| **all** | **{len(outcomes)} kinds** | **{t['injected']}** | **{t['survived']}** | **{t['lost']}** |")
    return "\n".join(lines)


def readme_block(outcomes: Sequence[FaultOutcome], command: str, when: dt.datetime) -> str:
    t = totals(outcomes)
    return (f"{BEGIN}\n{table(outcomes)}\n\n`{command}`, {when:%Y-%m-%d} ({platform.machine()}, "
            f"{t['survived']} of {t['injected']} faults survived, {t['lost']} rows or artifacts lost).\n{END}")


def write_readme(block: str, readme: Path = README) -> None:
    """Replace the text between the markers (inclusive) in ``readme``."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: markers {BEGIN} ... {END} not found")
    readme.write_text(text[:start] + block + text[end + len(END):], encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="repeats per fault kind (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random (default %(default)s)")
    p.add_argument("--only", nargs="+", choices=CATEGORIES, metavar="CATEGORY",
                   help=f"categories to run (default all): {', '.join(CATEGORIES)}")
    p.add_argument("--workdir", type=Path, default=None,
                   help="scratch folder (default: a temporary folder, removed at the end)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="JSON output (default %(default)s)")
    p.add_argument("--write-readme", action="store_true", help="put the table into docs/reliability.md between the markers")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    command = "python -m bench.faults " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sl-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    try:
        outcomes, seconds = run_modules(workdir, args.repeats, args.seed, args.only)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(outcomes))
    failed = [o for o in outcomes if not o.all_survived]
    for o in failed:
        print(f"\nNOT SURVIVED: {o.category} / {o.kind} ({o.survived} of {o.injected}, lost {o.lost})")
        for line in o.failures[:10]:
            print(f"  - {line}")
    report = {"command": command, "started": started.isoformat(), "repeats": args.repeats, "seed": args.seed,
              "seconds_per_module": seconds, "totals": totals(outcomes), "outcomes": [o.to_dict() for o in outcomes]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.write_readme:
        write_readme(readme_block(outcomes, command, started))
    return 1 if failed or not outcomes else 0


if __name__ == "__main__":
    raise SystemExit(main())
