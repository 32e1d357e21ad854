"""Progress a user can follow in a terminal, in captured output and in a run's log file.

On a terminal a `Progress` is a tqdm bar. Everywhere it also emits a line through the
``uqbench`` logger at its start, at most every `interval` seconds and at its end (with
rate and ETA), so ``uqbench run ... > log 2>&1``, a batch job's output, a notebook's
captured stderr and the log file written beside each record all show where a run is.
`setup_logging` (called by the command line) sends those lines to stderr when stderr is not
a terminal; `log_to_file` adds a run's log file.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

LOGGER = logging.getLogger("uqbench")
FORMAT = "%(asctime)s uqbench: %(message)s"
#: Seconds between two progress lines of one task (``UQBENCH_PROGRESS_INTERVAL`` overrides).
DEFAULT_INTERVAL = 30.0


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get("UQBENCH_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a notebook or a test may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # set by StreamHandler.__init__; the property wins
        pass


class quiet:  # noqa: N801 (a context manager)
    """No progress lines inside the block: checks of a run's input print only errors."""

    def __enter__(self) -> None:
        self._was = LOGGER.disabled
        LOGGER.disabled = True

    def __exit__(self, *exc) -> None:
        LOGGER.disabled = self._was


def setup_logging() -> None:
    """Progress lines to stderr when it is not a terminal (there a bar shows instead)."""
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    if any(getattr(h, "_uqbench_stderr", False) for h in LOGGER.handlers):
        return
    if not _is_tty(sys.stderr):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
        handler._uqbench_stderr = True  # type: ignore[attr-defined]
        LOGGER.addHandler(handler)


class log_to_file:  # noqa: N801 (a context manager, like open)
    """Append the ``uqbench`` log lines to ``path`` while the block runs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.handler: logging.FileHandler | None = None

    def __enter__(self) -> log_to_file:
        made = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self._made = getattr(self, "_made", []) + made
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
        LOGGER.setLevel(logging.INFO)
        LOGGER.addHandler(self.handler)
        return self

    def move(self, path: Path) -> None:
        """Go on writing at ``path`` (the log moves with it)."""
        path = Path(path)
        if path == self.path or self.handler is None:
            return
        LOGGER.removeHandler(self.handler)
        self.handler.close()
        self.path.replace(path)
        self.path = path
        self.__enter__()

    def __exit__(self, *exc) -> None:
        if self.handler is not None:
            LOGGER.removeHandler(self.handler)
            self.handler.close()
            self.handler = None

    def discard(self) -> None:
        """Remove the log and the directories made for it (when still empty)."""
        self.__exit__()
        self.path.unlink(missing_ok=True)
        for directory in self._made:  # deepest first
            try:
                directory.rmdir()
            except OSError:
                pass


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Progress over ``total`` units of one task: a bar on a terminal, log lines always."""

    def __init__(self, total: int | None, desc: str, unit: str = "it",
                 every: float | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.every = interval() if every is None else every
        self.done = 0
        self.postfix: dict[str, str] = {}
        self.start = self.last = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False,
                        disable=not _is_tty(sys.stderr))
        what = f"{total} {unit}s" if total is not None else unit + "s"
        LOGGER.info("%s: started (%s)", desc, what)

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        if postfix:
            self.postfix = {k: f"{v:.4g}" if isinstance(v, float) else str(v)
                            for k, v in postfix.items()}
            self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(n)
        now = time.monotonic()
        if now - self.last >= self.every and (self.total is None or self.done < self.total):
            self.last = now
            LOGGER.info("%s", self._line(now))

    def _line(self, now: float) -> str:
        elapsed = now - self.start
        text = f"{self.desc}: {self.done}"
        if self.total:
            text += f"/{self.total} {self.unit}s ({100 * self.done / self.total:.0f} %)"
            if self.done:
                eta = elapsed / self.done * (self.total - self.done)
                text += f", ETA {_duration(eta)}"
        else:
            text += f" {self.unit}s"
        text += f", {_duration(elapsed)} elapsed"
        if self.postfix:
            text += ", " + ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        return text

    def close(self) -> None:
        self.bar.close()
        end = time.monotonic()
        LOGGER.info("%s: done, %d %ss in %s%s", self.desc, self.done, self.unit,
                    _duration(end - self.start),
                    ("; " + ", ".join(f"{k} {v}" for k, v in self.postfix.items()))
                    if self.postfix else "")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def note(message: str, *args) -> None:
    """One log line (a stage begins or ends, weights load, a figure is written)."""
    LOGGER.info(message, *args)
