"""Progress of long loops: a tqdm bar on a terminal, timestamped log lines everywhere else.

Stage logs (``logs/<stage>/shard-NNN.log``) are files, not terminals, and the rules pass
``--no-progress``, so a tqdm bar would either be off or fill the log with carriage returns.
:class:`Progress` keeps tqdm's small interface (``update``, ``set_postfix``, ``close``, use as a
context manager or wrap an iterable) and decides once how to report:

* **bar** (``bar=True``, or ``None`` and stderr is a terminal, and stderr *is* a terminal): a
  tqdm bar, as before;
* **log lines** otherwise: one ``INFO`` line when the loop starts, one at least every
  ``interval_s`` seconds while it runs (from a background thread, so a single slow item still
  leaves a heartbeat in the log) and one at the end, each with items done / total, the rate, the
  elapsed time and an ETA, plus whatever ``set_postfix`` last gave. The CLIs' logging format adds
  the timestamp::

      2026-12-06 10:31:02 INFO sldata.progress: pose shard-000: 120/450 clips (26.7%), 0.85 clips/s,
      elapsed 2m21s, ETA 6m28s (frames=3604, fps=25.5)

The rate is items done by this loop over its elapsed time, so the ETA assumes the remaining items
cost what the finished ones did on average.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"
"""The command-line tools' logging format: every line of a stage log starts with its local time."""
DEFAULT_INTERVAL_S = 30.0
"""Longest gap between two progress lines in a log."""

T = TypeVar("T")


def format_duration(seconds: float) -> str:
    """``3h04m``, ``2m21s`` or ``7s`` (``?`` for an unknown or infinite duration)."""
    if seconds is None or not seconds == seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def plural(unit: str) -> str:
    """``clip`` -> ``clips``, ``batch`` -> ``batches`` (already plural stays)."""
    if unit.endswith("s"):
        return unit
    return f"{unit}es" if unit.endswith(("ch", "sh", "x")) else f"{unit}s"


def format_rate(rate: float) -> str:
    """A rate with as many digits as it needs: ``1234``, ``12.3``, ``0.85``, ``0.0042``."""
    if rate >= 100:
        return f"{rate:.0f}"
    if rate >= 10:
        return f"{rate:.1f}"
    if rate >= 0.1:
        return f"{rate:.2f}"
    return f"{rate:.2g}"


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class Progress:
    """Progress of a loop over ``total`` items (see the module docs).

    Parameters
    ----------
    iterable
        Optional items to wrap: iterating over the :class:`Progress` yields them and counts each.
    total
        Number of items (``len(iterable)`` when omitted and the iterable has a length).
    desc
        What is being done, e.g. ``"pose shard-000"``; starts every log line.
    unit
        Item name in the log lines and the bar (``clip``, ``video``, ``batch``).
    bar
        ``True``: a tqdm bar if stderr is a terminal; ``False``: never a bar; ``None``: as True.
        Without a bar, progress goes to the log.
    interval_s
        Longest gap between two log lines.
    logger
        Where the lines go (default this module's logger).
    log_edges
        Log the started and done lines (False: heartbeats only, for short loops inside a longer
        one, such as the batches of an epoch, that should show up only when they are slow).
    quiet
        Neither a bar nor log lines (e.g. the other processes of a distributed run).
    """

    def __init__(self, iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "item", bar: bool | None = True, interval_s: float = DEFAULT_INTERVAL_S,
                 logger: logging.Logger | None = None, log_edges: bool = True, quiet: bool = False) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.interval_s = float(interval_s)
        self.log = logger or log
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._closed = quiet
        self.log_edges = log_edges
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if quiet:
            return
        if bar is not False and _stderr_is_terminal():
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is a declared dependency; fall back to log lines without it
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, unit=unit, leave=log_edges)
        if self._bar is None:
            if log_edges:
                self.log.info("%s", self.line(started=True))
            self._thread = threading.Thread(target=self._heartbeat, name=f"progress {desc}", daemon=True)
            self._thread.start()

    # ---- tqdm's interface

    def update(self, n: int = 1) -> None:
        """``n`` more items are done."""
        with self._lock:
            self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Extra values shown after the counts (e.g. ``frames=3604``)."""
        with self._lock:
            self.postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix(refresh=refresh, **values)

    def close(self) -> None:
        """Stop reporting; without a bar, log the final line."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.log_edges:
            self.log.info("%s", self.line(finished=True))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("Progress was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    # ---- log lines

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def line(self, started: bool = False, finished: bool = False) -> str:
        """The progress line as logged (counts, rate, elapsed, ETA and postfix)."""
        with self._lock:
            n, postfix = self.n, dict(self.postfix)
        elapsed = self.elapsed_s
        units = plural(self.unit)
        head = f"{self.desc}: " if self.desc else ""
        if started:
            todo = f"{self.total} {units}" if self.total is not None else f"{units} (total unknown)"
            return f"{head}started, {todo} to do"
        count = f"{n}/{self.total} {units}" if self.total is not None else f"{n} {units}"
        if self.total:
            count += f" ({100.0 * n / self.total:.1f}%)"
        rate = n / elapsed if elapsed > 0 else 0.0
        parts = [count, f"{format_rate(rate)} {units}/s", f"elapsed {format_duration(elapsed)}"]
        if finished:
            parts[0] = ("done, " if self.total is None or n >= self.total else "stopped, ") + parts[0]
        elif self.total is not None:
            eta = (self.total - n) / rate if rate > 0 else float("inf")
            parts.append(f"ETA {format_duration(eta)}")
        text = head + ", ".join(parts)
        if postfix:
            text += " (" + ", ".join(f"{k}={v}" for k, v in postfix.items()) + ")"
        return text

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.log.info("%s", self.line())
