"""A minimal progress bar for long work (fits, dataset generation); silent when disabled.

On a terminal the bar redraws in place; in a log file (or any non-terminal
stream) a line is written each time another tenth of the work is done (and at
the end), so interrupted jobs leave a short readable record.

Examples
--------
>>> import io
>>> out = io.StringIO()
>>> bar = Progress(2, "fit", enabled=True, stream=out)
>>> bar.step(note="a"); bar.step(note="b")
>>> lines = out.getvalue().splitlines()
>>> len(lines), lines[1].startswith("fit [" + "#" * 30 + "] 2/2")
(2, True)
"""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts steps towards ``total`` and draws ``label [###   ] n/total elapsed [eta] [note]``.

    Parameters
    ----------
    total : int
        Number of steps expected.
    label : str
    enabled : bool
        False: count silently (quiet in tests and with ``--quiet``).
    stream : file-like, optional
        Default ``sys.stderr``.
    start : int
        Steps already done before this run (e.g. a resumed job); counts towards the bar,
        not towards the ETA.
    """

    width = 30

    def __init__(self, total: int, label: str, enabled: bool = True, stream=None, start: int = 0):
        self.total, self.label, self.enabled = int(total), label, bool(enabled)
        self.stream = sys.stderr if stream is None else stream
        self.start = self.n = int(start)
        self.t0 = time.perf_counter()

    def step(self, k: int = 1, note: str = "") -> None:
        """Advance by ``k`` steps and redraw."""
        before, self.n = self.n, self.n + k
        if not self.enabled:
            return
        tty = getattr(self.stream, "isatty", lambda: False)()
        tenth = lambda n: int(10 * n / max(self.total, 1))  # noqa: E731
        if not tty and self.n < self.total and tenth(self.n) == tenth(before):
            return  # logs: one line per tenth of the work
        elapsed = time.perf_counter() - self.t0
        bar = "#" * int(self.width * self.n / max(self.total, 1))
        text = f"{self.label} [{bar:<{self.width}}] {self.n}/{self.total} {elapsed:6.1f} s"
        done_here = self.n - self.start
        if 0 < done_here and self.n < self.total:
            text += f", eta {elapsed / done_here * (self.total - self.n) / 60:.1f} min"
        if note:
            text += f"  {note}"
        if tty:
            self.stream.write("\r" + text + ("\n" if self.n >= self.total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
