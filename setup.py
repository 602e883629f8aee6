"""What the distribution holds, found from the tree; everything else is in pyproject.toml.

Packages: every top-level folder with an ``__init__.py`` is the package
``headwater.<folder>`` (``store/`` is ``headwater.store``), and every package below one is
shipped with it, found by ``find_namespace_packages`` rather than listed, so a new subpackage cannot
be left out of the wheel. ``tests/``, ``bench/`` and ``examples/`` are not shipped.
Package data (``py.typed``, the C module's ``.pyi``) is declared in pyproject.toml.

The C loops (the store codec's, the processing runtime's) are ``optional=True``: without a
C compiler the package still installs, and runs on the Python code that
``store/_speedups.c`` and ``processing/_speedups.c`` mirror.
"""

from pathlib import Path

from setuptools import Extension, find_namespace_packages, setup

NOT_SHIPPED = frozenset({"tests", "bench", "examples", "build"})

# setup.py runs from the project's root (pip and build both run it there); setuptools
# wants paths relative to it.
top_level = sorted(
    init.parent.name for init in Path().glob("*/__init__.py") if init.parent.name not in NOT_SHIPPED
)
# Namespace discovery also finds folders of package data (``cli/ui_assets``, the page of
# ``headwater ui``): setuptools wants those named as packages rather than left implicit.
found = find_namespace_packages(
    include=[*top_level, *(f"{name}.*" for name in top_level)],
    exclude=["*.__pycache__", "*.__pycache__.*"],
)

setup(
    package_dir={f"headwater.{name}": name for name in top_level},
    packages=[f"headwater.{name}" for name in found],
    ext_modules=[
        Extension(
            "headwater.store._speedups",
            sources=["store/_speedups.c"],
            extra_compile_args=["-O2", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,
        ),
        Extension(
            "headwater.processing._speedups",
            sources=["processing/_speedups.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ],
)
