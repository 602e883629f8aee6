"""Helpers to run the real ``headwater`` command (the console script beside this interpreter),
and an app under ``headwater run``."""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sniffio

from headwater.cli._main import run as run_cli

HEADWATER = str(Path(sys.executable).with_name("headwater"))

Headwater = Callable[..., subprocess.CompletedProcess[str]]


#: The commands run in the test's own process (through the CLI's entry point, as the
#: console script runs them): each returns when its work is done and sets up no logging,
#: signal handling or app import that would outlive it. Starting the interpreter and
#: importing headwater again for each of the suite's thousand-odd short commands would
#: cost a third of a second each. Everything else (and anything given an environment of
#: its own, or following a log) runs as a real subprocess.
IN_PROCESS = frozenset({"topics", "produce", "consume", "groups", "transactions", "trace"})


def run_headwater(
    data: Path | None, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``headwater [--data DATA] ARGS...`` to completion and capture its output."""
    argv = [*(["--data", str(data)] if data is not None else []), *args]
    if env is None and _runs_in_process(args):
        return _run_in_process(argv, input)
    return subprocess.run(
        [HEADWATER, *argv],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _runs_in_process(args: tuple[str, ...]) -> bool:
    if not args or args[0] not in IN_PROCESS or "--follow" in args or "-f" in args:
        return False
    try:  # an async test's event loop cannot host the command's own
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return True
    return False


def _run_in_process(argv: list[str], input: str | None) -> subprocess.CompletedProcess[str]:
    with _standard_streams(input) as (stdout, stderr):
        status = run_cli(argv)
        return subprocess.CompletedProcess(
            [HEADWATER, *argv], status, _written(stdout), _written(stderr)
        )


@contextlib.contextmanager
def _standard_streams(
    input: str | None,
) -> Iterator[tuple[io.TextIOWrapper, io.TextIOWrapper]]:
    """Point sys.stdin at ``input`` and sys.stdout/stderr at fresh files (real files, as a
    pipe would be: with a descriptor, not a terminal), and back afterwards."""
    with (
        tempfile.TemporaryFile() as stdin_file,
        tempfile.TemporaryFile() as stdout_file,
        tempfile.TemporaryFile() as stderr_file,
    ):
        stdin_file.write((input or "").encode())
        stdin_file.seek(0)
        stdin = io.TextIOWrapper(stdin_file, encoding="utf-8")
        stdout = io.TextIOWrapper(stdout_file, encoding="utf-8", write_through=True)
        stderr = io.TextIOWrapper(stderr_file, encoding="utf-8", write_through=True)
        saved = sys.stdin, sys.stdout, sys.stderr
        sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
        try:
            yield stdout, stderr
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
            for stream in (stdin, stdout, stderr):
                stream.detach()


def _written(stream: io.TextIOWrapper) -> str:
    stream.flush()
    stream.buffer.seek(0)
    return stream.buffer.read().decode()


def assert_error(result: subprocess.CompletedProcess[str], *fragments: str, status: int = 1) -> str:
    """Check that a command failed with exactly one ``headwater: error:`` line; return it."""
    assert result.returncode == status, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("headwater: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def env_without_data() -> dict[str, str]:
    """The environment with HEADWATER_DATA removed."""
    return {k: v for k, v in os.environ.items() if k != "HEADWATER_DATA"}


class Log:
    """Where a test's commands work: a data directory, or a broker over the protocol.

    ``log(*args, input=...)`` runs ``headwater ARGS...`` against it; the same test body
    then checks that both give the same results.
    """

    def __init__(self, data: Path, bootstrap: str | None = None) -> None:
        self.data = data
        self.bootstrap = bootstrap

    @property
    def kind(self) -> str:
        """``data`` or ``broker``."""
        return "data" if self.bootstrap is None else "broker"

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        if self.bootstrap is None:
            return run_headwater(self.data, *args, input=input, env=env)
        return run_headwater(None, *self._with_bootstrap(args), input=input, env=env)

    def command(self, *args: str) -> list[str]:
        """The argv that runs ``headwater ARGS...`` against this log."""
        if self.bootstrap is None:
            return [HEADWATER, "--data", str(self.data), *args]
        return [HEADWATER, *self._with_bootstrap(args)]

    def _with_bootstrap(self, args: tuple[str, ...]) -> list[str]:
        # Options go before a '--', after which everything is an argument.
        end = args.index("--") if "--" in args else len(args)
        assert self.bootstrap is not None
        return [*args[:end], "--bootstrap", self.bootstrap, *args[end:]]


class AppProcess:
    """``headwater --data DATA run APP -v`` as a subprocess, serving its data directory.

    :meth:`start` returns once the app has said it serves the directory (its log line,
    read as it comes: no sleeping).
    """

    _SERVING = re.compile(r"serving data directory .* at (\S+)")

    def __init__(self, data: Path, app: Path) -> None:
        self.data = data
        self.app = app
        self.proc: subprocess.Popen[bytes] | None = None
        self.bootstrap = ""
        self._stderr = b""

    def start(self, timeout_s: float = 60.0) -> AppProcess:
        """Start the app and wait until it serves the directory."""
        self.proc = subprocess.Popen(
            [HEADWATER, "--data", str(self.data), "run", str(self.app), "-v"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env_without_data(),
        )
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout_s
        while (found := self._SERVING.search(self._stderr.decode(errors="replace"))) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"the app did not serve in time: {self._stderr!r}"
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"the app exited: {self._stderr!r}"
                self._stderr += chunk
        self.bootstrap = found[1]
        return self

    @property
    def pid(self) -> int:
        """The app's process id."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the app still runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 30.0) -> tuple[int, str]:
        """Signal the app and wait for it; return its exit status and everything it logged."""
        assert self.proc is not None and self.proc.stderr is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            status = self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._stderr += self.proc.stderr.read()
        self.proc.stderr.close()
        return status, self._stderr.decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL the app (a crash) and reap it."""
        self.stop(signal.SIGKILL)
