"""Progress lines for long work, readable in a notebook and in the pipeline's log alike.

A tqdm bar in a notebook kernel without ipywidgets prints a warning with a machine path, and in a log it
floods the file with carriage returns. Here a loop prints one plain line at most every `every_s` seconds
(steps done, elapsed and estimated time left) and one closing line, and nothing at all when it ends within
`every_s`: short loops stay silent. The pipeline copies the kernels' stdout into its own log.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class Progress:
    """Counts steps of a job of known size; `update` prints a line when `every_s` seconds have passed."""

    def __init__(self, desc: str, total: int, every_s: float = 60.0, stream=None):
        self.desc, self.total, self.every_s = desc, max(int(total), 0), every_s
        self.stream = stream or sys.stdout
        self.done = 0
        self.t0 = self.last = time.monotonic()
        self.printed = False

    def line(self, note: str = "") -> str:
        elapsed = time.monotonic() - self.t0
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        pct = 100 * self.done / self.total if self.total else 100.0
        eta = f", ~{_minutes(left)} left" if self.done < self.total and self.done else ""
        return f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%), {_minutes(elapsed)} elapsed{eta}" + (f"; {note}" if note else "")

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s and self.done < self.total:
            print(self.line(note), file=self.stream, flush=True)
            self.last, self.printed = now, True

    def close(self, note: str = "") -> None:
        if self.printed or time.monotonic() - self.t0 >= self.every_s:
            print(self.line(note) + " - done", file=self.stream, flush=True)


def track(iterable: Iterable[T], desc: str | None, total: int | None = None, every_s: float = 60.0) -> Iterator[T]:
    """Iterate with progress lines (see Progress); `desc=None` is silent."""
    items = list(iterable) if total is None and not hasattr(iterable, "__len__") else iterable
    if desc is None:
        yield from items
        return
    bar = Progress(desc, total if total is not None else len(items), every_s)
    for x in items:
        yield x
        bar.update()
    bar.close()
