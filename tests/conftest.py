"""Fixtures shared by every test folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def env_without_cramjam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose Python processes cannot import cramjam.

    As for a user who installed headwater without the ``compression`` extra, without
    uninstalling anything: a ``sitecustomize`` on ``PYTHONPATH`` sets
    ``sys.modules["cramjam"] = None`` at start-up, which makes ``import cramjam`` fail.
    """
    folder = tmp_path_factory.mktemp("without-cramjam")
    (folder / "sitecustomize.py").write_text(
        "import sys\n\nsys.modules['cramjam'] = None  # `import cramjam` raises ImportError\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["PYTHONPATH"] = str(folder)
    return env
