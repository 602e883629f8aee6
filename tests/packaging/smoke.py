"""Check an installed headwater wheel as a user gets it (run by ``make package``).

Run with the Python of a clean venv into which only the wheel was installed (no
editable install, no extras), from outside the source tree, in isolated mode::

    VENV/bin/python -I tests/packaging/smoke.py SOURCE_ROOT

It checks that:

- every module of every package in the source tree imports, from the venv (a module or
  subpackage missing from the wheel fails here, whatever imports it);
- each package ships ``py.typed``, the store its C module's stub, and the CLI the page of
  ``headwater ui``;
- the ``headwater`` command does a round trip: create a topic, produce, consume;
- without the ``compression`` extra, snappy/lz4/zstd fail with an error that says what
  to install, while gzip works.

Prints one line per check; exits non-zero at the first failure.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

NOT_SHIPPED = frozenset({"tests", "bench", "examples", "build"})  # as in setup.py
HINT = "pip install 'headwater[compression]'"


def fail(message: str) -> None:
    """Stop with ``message``."""
    raise SystemExit(f"packaging smoke test: FAILED: {message}")


def source_modules(root: Path) -> tuple[list[str], list[str]]:
    """Return the top-level package folders and every module under them, by import name."""
    top_level = sorted(
        init.parent.name
        for init in root.glob("*/__init__.py")
        if init.parent.name not in NOT_SHIPPED
    )
    modules = []
    for name in top_level:
        for path in sorted((root / name).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append(".".join(("headwater", *parts)))
    return top_level, modules


def check_imports(root: Path) -> None:
    """Import every module of the source tree from the installed wheel."""
    top_level, modules = source_modules(root)
    if not top_level:
        fail(f"no packages found under {root}")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            fail(f"import {name}: {type(exc).__name__}: {exc}")
        where = Path(module.__file__ or "")
        if not where.is_relative_to(sys.prefix):
            fail(f"{name} was imported from {where}, not from the venv {sys.prefix}")
    for name in top_level:
        package = Path(importlib.import_module(f"headwater.{name}").__file__ or "").parent
        if not (package / "py.typed").is_file():
            fail(f"headwater.{name} has no py.typed")
    store = Path(importlib.import_module("headwater.store").__file__ or "").parent
    if not (store / "_speedups.pyi").is_file():
        fail("headwater.store ships no _speedups.pyi")
    assets = Path(importlib.import_module("headwater.cli").__file__ or "").parent / "ui_assets"
    for asset in ("index.html", "ui.js", "ui.css"):
        if not (assets / asset).is_file():
            fail(f"headwater.cli ships no ui_assets/{asset} (the page of headwater ui)")
    try:
        importlib.import_module("headwater.store._speedups")
        speedups = "with the C speedups"
    except ImportError:
        speedups = "without the C speedups (built with no C compiler)"
    print(f"imports: {len(modules)} modules of {len(top_level)} packages, {speedups}")


def headwater(data: Path, *args: str, stdin: str = "") -> str:
    """Run the installed ``headwater`` command; return its stdout."""
    command = [str(Path(sys.prefix) / "bin" / "headwater"), "--data", str(data), *args]
    result = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        fail(f"{' '.join(command[1:])} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def check_cli(data: Path) -> None:
    """Create a topic, produce to it and consume it back with the installed command."""
    headwater(data, "--help")
    headwater(data, "topics", "create", "smoke", "--partitions", "2")
    lines = [f'{{"n":{n}}}' for n in range(10)]
    placed = headwater(data, "produce", "smoke", stdin="\n".join(lines) + "\n")
    if len(placed.splitlines()) != len(lines):
        fail(f"produce acknowledged {placed!r}")
    consumed = headwater(data, "consume", "smoke").splitlines()
    if sorted(consumed) != sorted(lines):
        fail(f"consume gave {consumed!r}, expected {lines!r}")
    print(f"cli: created a topic, produced and consumed {len(lines)} records")


def check_compression_extra(data: Path) -> None:
    """Without cramjam (not installed here), the codecs that need it name the extra."""
    if importlib.util.find_spec("cramjam") is not None:
        fail("cramjam is installed in the smoke venv; the wheel must not require it")
    import anyio

    from headwater.store import (
        Compression,
        NewRecord,
        UnsupportedCompressionError,
        open_store,
    )

    async def append_all() -> None:
        async with open_store(data) as store:
            records = [NewRecord(value=b"{}")]
            await store.append("smoke", records, compression=Compression.GZIP)
            for codec in (Compression.SNAPPY, Compression.LZ4, Compression.ZSTD):
                try:
                    await store.append("smoke", records, compression=codec)
                except UnsupportedCompressionError as exc:
                    if HINT not in str(exc):
                        fail(f"{codec.name} without cramjam says {exc!r}")
                else:
                    fail(f"{codec.name} without cramjam was accepted")

    anyio.run(append_all)
    print(f"compression: gzip works; snappy, lz4 and zstd say {HINT}")


def main() -> None:
    """Run every check against the installed package."""
    if len(sys.argv) != 2:
        raise SystemExit("usage: smoke.py SOURCE_ROOT")
    root = Path(sys.argv[1]).resolve()
    check_imports(root)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        data = Path(tmp) / "data"
        check_cli(data)
        check_compression_extra(data)
    print("packaging smoke test: passed")


if __name__ == "__main__":
    main()
