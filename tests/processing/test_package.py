"""The processing package's public surface: every name documented, one error tree."""

from __future__ import annotations

from headwater import processing
from headwater.processing import testing
from headwater.store import HeadwaterError


def test_all_names_exist_and_are_documented() -> None:
    for module in (processing, testing):
        assert module.__doc__
        exported = module.__all__
        assert len(set(exported)) == len(exported)
        for name in exported:
            obj = getattr(module, name)
            if callable(obj):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


def test_public_names_are_in_all() -> None:
    public = {
        name
        for name, obj in vars(processing).items()
        if not name.startswith("_") and not isinstance(obj, type(processing))
    }
    assert public <= set(processing.__all__)


def test_errors_are_headwater_errors() -> None:
    for name in processing.__all__:
        obj = getattr(processing, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, HeadwaterError), name
    assert issubclass(processing.OperatorError, processing.ProcessingError)
