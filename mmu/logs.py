"""Logging and progress bars for every mmu module, with one verbosity switch.

Library code logs with ``logging.getLogger(__name__)`` (loggers under ``mmu``) and shows progress
with `mmu.logs.tqdm`, never with ``print``: ``print`` is only for a command's own output (a
table, a path, JSON). The command line sets the switch once (``-v`` / ``-q`` / ``--no-progress``);
a Python user calls the same functions, as with Hugging Face ``datasets``:

    >>> import mmu.logs
    >>> mmu.logs.set_verbosity("warning")      # only warnings and errors
    >>> mmu.logs.disable_progress_bars()

Levels: ``-q`` warning (errors and warnings only, no bars), default info (what each step did,
progress bars on a terminal), ``-v`` debug (also what each step is about to do, and third-party
libraries' info messages).
"""
from __future__ import annotations

import logging
import os
import sys

ROOT = "mmu"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_bars_enabled = os.environ.get("MMU_NO_PROGRESS", "") in ("", "0")
_handler: logging.Handler | None = None


def get_logger(name: str) -> logging.Logger:
    """The logger for module `name` (pass ``__name__``)."""
    return logging.getLogger(name)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a message is logged (a redirected or captured
    stream included), not to the stream of the moment mmu was imported."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _root() -> logging.Logger:
    global _handler
    log = logging.getLogger(ROOT)
    if _handler is None:
        _handler = _StderrHandler()
        _handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(_handler)
        log.propagate = False
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
    return log


def set_verbosity(level: str | int) -> None:
    """Set the level of every ``mmu.*`` logger: "debug", "info" (default), "warning", "error".

    Raises:
        ValueError: an unknown level name.
    """
    if isinstance(level, str):
        if level.lower() not in _LEVELS:
            raise ValueError(f"verbosity must be one of {sorted(_LEVELS)}, got {level!r}")
        level = _LEVELS[level.lower()]
    _root().setLevel(level)
    if level >= logging.WARNING:
        disable_progress_bars()


def get_verbosity() -> int:
    """The current level of the ``mmu`` logger (a `logging` constant)."""
    return _root().getEffectiveLevel()


def disable_progress_bars() -> None:
    """No progress bars from mmu (log lines stay)."""
    global _bars_enabled
    _bars_enabled = False


def enable_progress_bars() -> None:
    """Progress bars on (shown only when stderr is a terminal, as tqdm decides)."""
    global _bars_enabled
    _bars_enabled = True


def progress_bars_enabled() -> bool:
    return _bars_enabled


def tqdm(*args, **kwargs):
    """`tqdm.auto.tqdm`, drawn only where its stream is a terminal, and never when progress bars
    are off (`disable_progress_bars`, ``-q``, ``--no-progress``)."""
    from tqdm.auto import tqdm as _tqdm

    if not _bars_enabled:
        kwargs["disable"] = True
    elif not kwargs.get("disable"):
        kwargs["disable"] = None  # None: a bar only where its stream is a terminal
    return _tqdm(*args, **kwargs)


class _KnownNoise(logging.Filter):
    """Drops third-party root-logger messages that report an expected result, not a problem:
    hats' `is_valid_catalog` warns "found collection" each time hats-import validates the
    collection it has just written (every build)."""

    MESSAGES = frozenset({"Looking for catalog - found collection."})

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and record.getMessage() in self.MESSAGES)


_root()
logging.getLogger().addFilter(_KnownNoise())
