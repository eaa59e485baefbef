"""Progress bars with an ETA, on stderr, for every long job: training, evaluation, the demo, data.

On a terminal this is tqdm's bar. Off one (a log file, CI, `nohup`), tqdm would either stay silent
or fill the log with carriage returns; there it prints one plain line every `LOG_EVERY` seconds and
one when the work ends, so a log says how far a job got and when it will finish.
`SMALTO_PROGRESS=0` silences every bar.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

LOG_EVERY = 30.0  # seconds between lines in a log


class _Lines(tqdm):
    """tqdm that writes whole lines (a log has no carriage returns to draw a bar with), at most one
    every LOG_EVERY seconds and one at the end, its count current at every line."""

    _printed: float | None = None  # when the last line went out (first: the bar's start)
    _shown: int | None = None  # the count that line showed
    _aborted = False  # the loop ended in an exception

    def __iter__(self):
        # (tqdm's own loop counts in a local variable between refreshes: a line would show a stale count)
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        except BaseException:
            self._aborted = True  # an error says what happened; a last progress line would bury it
            raise
        finally:
            self.close()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        now = time.monotonic()
        if self._printed is None:
            self._printed = now
        if now - self._printed >= LOG_EVERY:
            self._line(msg)
        return True

    def _line(self, msg: str | None = None) -> None:
        self._printed, self._shown = time.monotonic(), self.n
        self.fp.write((msg if msg is not None else self.__str__()).strip() + "\n")
        self.fp.flush()

    def close(self) -> None:
        if self.disable:
            return
        if self.n != self._shown and not self._aborted:  # where it ended
            self._line()
        self.disable = True  # (tqdm's own close would add an empty line)
        super().close()


def bar(iterable=None, desc: str = "", total: int | None = None, enabled: bool = True, **kwargs) -> tqdm:
    """A progress bar over `iterable` (or updated by hand: `.update(n)`), silent when not `enabled`."""
    off = not enabled or os.environ.get("SMALTO_PROGRESS", "1") == "0"
    if off:
        return tqdm(iterable, desc=desc, total=total, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, **kwargs)
    kwargs.pop("leave", None)  # (a log keeps every line)
    return _Lines(iterable, desc=desc, total=total, mininterval=LOG_EVERY, ascii=True, ncols=100, file=sys.stderr,
                  **kwargs)


def write(line: str) -> None:
    """A line between bars (tqdm.write keeps a bar on a terminal intact)."""
    tqdm.write(line, file=sys.stderr)
