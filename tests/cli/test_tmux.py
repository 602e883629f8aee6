"""The tests' terminal (tests/cli/tmux.py): as large as asked, and ready again after close."""

from __future__ import annotations

import sys

from .tmux import Terminal

SIZE = "import shutil; print('size', *shutil.get_terminal_size())"


def test_a_pane_is_as_large_as_asked_whatever_readline_did() -> None:
    # pytest imports readline at start-up; done here too, so that this test does not rest
    # on it. GNU readline, its input not a terminal, sets COLUMNS=80 and LINES=24 in the C
    # environment, which a program in the pane would take for its size.
    import readline  # noqa: F401

    pane = Terminal(120, 40)
    try:
        pane.start([sys.executable, "-c", SIZE])
        screen = pane.wait_done()
    finally:
        pane.close()
    assert "size 120 40" in screen, screen


def test_a_pane_starts_again_at_once_after_close() -> None:
    # A server taken down by close() ends after tmux has answered: a new session on its
    # socket in the meantime failed with "server exited unexpectedly" (how often depends on
    # the machine's load: from never to 1 time in 6), so this tries many times.
    pane = Terminal(40, 10)
    try:
        for run in range(30):
            pane.start(["echo", f"run {run}"])
            screen = pane.wait_done()
            assert f"run {run}" in screen, screen
            pane.close()
    finally:
        pane.close()
