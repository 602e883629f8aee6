"""Every public package lists its API in ``__all__``, and every listed name exists."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "headwater.store",
    "headwater.groups",
    "headwater.broker",
    "headwater.processing",
    "headwater.connectors",
    "headwater.cli",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no docstring"
    exported = module.__all__
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    for attr in exported:
        obj = getattr(module, attr)
        if callable(obj):
            assert obj.__doc__, f"{name}.{attr} has no docstring"


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_are_in_all(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        attr
        for attr, obj in vars(module).items()
        if not attr.startswith("_") and not isinstance(obj, type(importlib))
    }
    assert public <= set(module.__all__), f"{name} exposes names missing from __all__"


def test_one_error_tree() -> None:
    from headwater.store import HeadwaterError

    for name in PACKAGES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if isinstance(obj, type) and issubclass(obj, Exception):
                assert issubclass(obj, HeadwaterError), f"{name}.{attr} is outside the tree"
