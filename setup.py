"""The build of the store codec's optional C loops; everything else is in pyproject.toml.

``optional=True``: without a C compiler the package still installs, and the store runs
on the Python codec that ``store/_speedups.c`` mirrors.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "headwater.store._speedups",
            sources=["store/_speedups.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
