"""A terminal for the tests: a command run in a tmux pane, typed at and read as a person would.

Each :class:`Terminal` has a tmux server of its own (``-L``, a socket named for the test),
so tests never see each other's panes. The command runs in a shell that, when it ends,
signals a tmux channel; :meth:`Terminal.wait_done` blocks on that channel (``tmux
wait-for``), so a test waits on the command's end, never on a clock. The pane stays after
the command ends (``remain-on-exit``), so what it last drew can still be read. The shell
is bash, which, like a person's, goes on when a command it waits for handles Ctrl-C and
exits normally (dash would end itself too).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest


class Terminal:
    """A tmux pane of ``width`` x ``height`` running one command."""

    def __init__(self, width: int = 120, height: int = 40) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed (apt-get install tmux)")
        self.socket = f"hw-{uuid.uuid4().hex[:12]}"
        self.width = width
        self.height = height
        self._channel = f"done-{self.socket}"
        self._reader: threading.Thread | None = None
        self._shown = threading.Condition()
        self._seen = b""
        self._ended = False

    def _tmux(self, *args: str, timeout: float = 30) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:  # what tmux said is the only clue to why
            raise RuntimeError(
                f"tmux {shlex.join(args[:8])} ... exited with {done.returncode}: "
                f"{done.stderr.strip() or '(nothing on stderr)'}"
            )
        return done.stdout

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Run ``argv`` in a new pane; its exit status is kept for :meth:`wait_done`."""
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (env or {}).items())
        script = (
            f'{exports}{shlex.join(argv)}; echo "[exit $?]"; '
            f"tmux -L {self.socket} wait-for -S {self._channel}"
        )
        # The pane must outlive the command (else the server ends before the wait): the
        # option is set before the session starts.
        self._tmux(
            "-f", "/dev/null", "start-server", ";",
            "set-option", "-g", "remain-on-exit", "on", ";",
            "new-session", "-d", "-x", str(self.width), "-y", str(self.height),
            "bash", "-c", script,
        )  # fmt: skip

    def start_watched(self, argv: list[str], fifo: Path) -> None:
        """Run ``argv`` in a new pane whose output is copied into ``fifo`` (a named pipe
        made here) from its first byte, for :meth:`wait_for_output`.

        A thread reads the pipe as long as the pane lives: a full pipe would stop tmux
        reading the pane, and the command would block writing to its terminal.
        """
        os.mkfifo(fifo)
        # The command waits for a line before it starts, so that nothing it prints is
        # drawn before tmux copies the pane's output.
        self.start(["sh", "-c", f"read _ && exec {shlex.join(argv)}"])
        self._tmux("pipe-pane", "-o", f"cat > {shlex.quote(str(fifo))}")
        output = os.open(fifo, os.O_RDONLY)  # returns once cat has it open
        self._reader = threading.Thread(target=self._drain, args=(output,), daemon=True)
        self._reader.start()
        self.send_keys("Enter")

    def _drain(self, output: int) -> None:
        with os.fdopen(output, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                with self._shown:
                    self._seen += chunk
                    self._shown.notify_all()
        with self._shown:
            self._ended = True
            self._shown.notify_all()

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        """Block until the pane's output (see :meth:`start_watched`) has shown ``text``."""
        wanted = text.encode()
        with self._shown:
            shown = self._shown.wait_for(lambda: wanted in self._seen or self._ended, timeout)
            if wanted not in self._seen:
                why = "the pane ended" if shown else f"{timeout} s passed"
                raise AssertionError(f"{why} before it showed {text!r}:\n{self.screen()}")

    def send_keys(self, *keys: str) -> None:
        """Type ``keys`` (tmux key names: ``q``, ``C-c``, ``Enter``)."""
        self._tmux("send-keys", *keys)

    def wait_done(self, timeout: float = 120) -> str:
        """Wait until the command has ended; return the screen."""
        self._tmux("wait-for", self._channel, timeout=timeout)
        return self.screen()

    def screen(self) -> str:
        """Return what the pane shows now, line by line, after the lines scrolled off it
        (tmux scrolls one off when it notes the command's end at the bottom)."""
        return self._tmux("capture-pane", "-p", "-S", "-")

    def close(self) -> None:
        """Stop the tmux server (and whatever still runs in it)."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)
