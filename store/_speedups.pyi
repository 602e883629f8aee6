"""Types of the store's C accelerator (store/_speedups.c)."""

from collections.abc import Sequence
from typing import Any

from ._batch import Buffer

def decode_section(
    buffer: Buffer,
    start: int,
    end: int,
    count: int,
    base_offset: int,
    timestamp_base: int,
    delta_mask: int,
    record_type: type[tuple[Any, ...]],
    empty: tuple[()],
    /,
) -> list[Any] | None: ...

_Numbered = tuple[bytes, Sequence[int], int]  # a DecimalColumn: prefix, numbers, base

def encode_section(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None,
    timestamps: Sequence[int] | None,
    base_timestamp: int,
    header_columns: tuple[
        tuple[bytes, Sequence[bytes | None] | tuple[bytes, Sequence[int], int]], ...
    ],
    headers: Sequence[Sequence[tuple[str, bytes | None]]] | None,
    /,
) -> bytes | None: ...
def murmur2(data: Buffer, /) -> int: ...
def start_fsync(fds: Sequence[int], wake_fd: int, /) -> None: ...
def decode_columns(
    buffer: Buffer,
    start: int,
    end: int,
    count: int,
    base_offset: int,
    timestamp_base: int,
    delta_mask: int,
    empty: tuple[()],
    timestamps: list[int],
    keys: list[bytes | None],
    values: list[bytes | None],
    headers: list[tuple[tuple[str, bytes | None], ...]],
    /,
) -> bool | None: ...
def partition_rows(
    keys: Sequence[bytes | None], num_partitions: int, default: int, /
) -> dict[int, list[int]] | None: ...
def wide_integers(text: bytes, /) -> bool: ...
def wide_integer_rows(texts: list[bytes], /) -> list[int]: ...
