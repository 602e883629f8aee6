"""Types of the processing runtime's C accelerator (processing/_speedups.c)."""

from collections.abc import Sequence
from typing import Any

def newer_marks(
    headers: Sequence[Sequence[tuple[str, bytes | None]]],
    origins: Sequence[int],
    read: int,
    applied: dict[bytes, int],
    source_name: str,
    sequence_name: str,
    /,
) -> tuple[list[bool] | None, int] | None: ...
def tumbling_windows(
    times: list[int], size: int, grace: int, first: int, rows: list[int], /
) -> tuple[list[int], list[int], list[int]] | None: ...
def take_rows(columns: tuple[list[Any], ...], rows: list[int], /) -> list[list[Any]] | None: ...
def split_array(text: bytes, /) -> list[bytes] | None: ...
