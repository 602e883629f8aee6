"""Where the command's output goes: data to stdout in large writes, messages to stderr.

Stdout carries only data (JSON lines, acknowledgements, tables) so that it can be piped;
everything addressed to the person at the terminal goes to stderr.
"""

from __future__ import annotations

import os
import sys
from typing import IO

from rich.console import Console

#: Width of tables written to a pipe or file (a terminal's own width is used otherwise).
PIPED_WIDTH = 160
_stderr: Console | None = None


def stderr_console() -> Console:
    """Return the rich console that writes messages to stderr."""
    global _stderr  # noqa: PLW0603 - one console per process, built on first use
    if _stderr is None:
        _stderr = Console(stderr=True, highlight=False, soft_wrap=True)
    return _stderr


def stdout_console() -> Console:
    """Return a rich console for tables on stdout (not cut to 80 columns when piped)."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)


def info(message: str) -> None:
    """Tell the user something, on stderr (no markup is interpreted)."""
    stderr_console().print(message, markup=False)


class OutputClosedError(Exception):
    """Stdout was closed by its reader (``headwater consume ... | head``)."""


class StdoutWriter:
    """Write bytes to stdout; when the reader goes away, raise :class:`OutputClosedError`.

    After the first broken pipe stdout is pointed at /dev/null, so that nothing the
    interpreter flushes at exit fails again; later writes are dropped.
    """

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._out = stream if stream is not None else sys.stdout.buffer
        self.closed = False

    def write(self, data: bytes) -> None:
        """Write ``data``; raise OutputClosedError if the reader has gone."""
        if self.closed:
            raise OutputClosedError
        try:
            self._out.write(data)
        except BrokenPipeError:
            self._close()
            raise OutputClosedError from None

    def flush(self) -> None:
        """Push buffered bytes to the reader; raise OutputClosedError if it has gone."""
        if self.closed:
            raise OutputClosedError
        try:
            self._out.flush()
        except BrokenPipeError:
            self._close()
            raise OutputClosedError from None

    def _close(self) -> None:
        self.closed = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._out.fileno())
        finally:
            os.close(devnull)
