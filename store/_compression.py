"""Compression of a record batch's records section, as Kafka's clients write it.

Theory of operation
-------------------
In a compressed v2 batch the records section (everything after the 61-byte header) is one
compressed payload; the header, count and CRC stay outside it. The codec sits in bits 0-2 of
the batch attributes (:class:`Compression`). Each codec is written the way Kafka's Java
producer writes it, so Java, librdkafka and kafka-python consumers can read our batches:

- gzip: one gzip member (zlib, level 6 as Java's ``Deflater`` default, mtime 0 so the bytes
  are deterministic). Reading accepts concatenated members.
- snappy: snappy-java's "xerial" block framing: a 16-byte header (``\\x82SNAPPY\\0``, version
  1, compatible 1), then blocks of at most 32 KiB of input, each a big-endian int32 length
  and a raw snappy block. Reading accepts xerial framing and plain raw snappy (librdkafka
  and some other clients write the latter).
- lz4: the standard LZ4 frame format with independent 64 KiB blocks and no checksums
  (header ``04 22 4D 18 60 40 82``), as Kafka's ``KafkaLZ4BlockOutputStream`` writes it.
- zstd: one standard zstd frame, level 3 (Kafka's default).

gzip is always available (stdlib). snappy, lz4 and zstd use ``cramjam``, an optional
dependency imported on first use; without it they raise
:class:`~headwater.store.UnsupportedCompressionError`.

Invariant: decompression never trusts a size written in the payload. Every framing length
is checked against the bytes that remain, and the output is bounded before it is produced
(gzip through zlib's ``max_length``, snappy through each block's declared length, lz4
through the frame's maximum block size, zstd through an upper bound computed by walking its
block headers), so a lying or hostile payload costs at most ``limit`` bytes of memory.
Anything that does not decompress cleanly raises
:class:`~headwater.store.CorruptRecordError` naming the batch position.

Pure functions, no I/O; safe to call from any thread.
"""

from __future__ import annotations

import enum
import functools
import importlib
import struct
import zlib
from collections.abc import Callable
from typing import Any

from ._errors import CorruptRecordError, UnsupportedCompressionError

__all__ = ("MAX_DECOMPRESSED_BYTES", "Compression", "check_codec", "compress", "decompress")


class Compression(enum.IntEnum):
    """The compression codec of a batch: bits 0-2 of its attributes."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


#: The largest records section :func:`decompress` produces by default. Kafka's default
#: ``max.message.bytes`` is 1 MiB, so only a hostile or corrupt batch comes near it.
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024

_GZIP_LEVEL = 6
_ZSTD_LEVEL = 3
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK_BYTES = 32 * 1024
# magic 0x184D2204 (LE), FLG 0x60 (version 1, independent blocks, no checksums, no content
# size), BD 0x40 (64 KiB maximum block), HC 0x82 (second byte of xxh32 over FLG and BD).
_LZ4_FRAME_HEADER = b"\x04\x22\x4d\x18\x60\x40\x82"
_LZ4_BLOCK_BYTES = 64 * 1024
_LZ4_MAGIC = 0x184D2204
_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_MAX_BLOCK_BYTES = 128 * 1024
_UNCOMPRESSED_BIT = 0x80000000

_I32 = struct.Struct(">i")
_U32LE = struct.Struct("<I")
_U64LE = struct.Struct("<Q")

Buffer = bytes | bytearray | memoryview


@functools.cache
def _cramjam() -> Any:
    # Imported lazily so that headwater without the [compression] extra still works for
    # uncompressed and gzip batches. functools.cache does not cache the failure: installing
    # cramjam later in the same process works.
    try:
        return importlib.import_module("cramjam")
    except ImportError as exc:
        raise UnsupportedCompressionError(
            "snappy, lz4 and zstd compression need the optional cramjam package: "
            "pip install 'headwater[compression]'"
        ) from exc


def check_codec(codec: int) -> None:
    """Check that this installation can compress and decompress with ``codec``.

    Lets a caller refuse a codec where its input enters, before any work: snappy, lz4 and
    zstd need the optional cramjam package (``pip install 'headwater[compression]'``).

    :param codec: a :class:`Compression` value.
    :raises UnsupportedCompressionError: if the codec is unknown or cramjam is not installed;
        the message says what to install.
    """
    if codec not in _DECODERS and codec != Compression.NONE:
        raise UnsupportedCompressionError(f"unknown compression codec {codec}")
    if codec not in (Compression.NONE, Compression.GZIP):
        _cramjam()


def compress(codec: int, data: Buffer) -> bytes:
    """Compress a records section with ``codec``, framed as Kafka's Java producer does.

    :param codec: a :class:`Compression` value.
    :param data: the uncompressed records section.
    :returns: the payload to place after the batch header.
    :raises UnsupportedCompressionError: if the codec is unknown or cramjam is not installed.
    """
    if codec == Compression.NONE:
        return bytes(data)
    if codec == Compression.GZIP:
        return zlib.compress(data, _GZIP_LEVEL, wbits=31)
    if codec == Compression.SNAPPY:
        return _snappy_xerial(data)
    if codec == Compression.LZ4:
        return _lz4_frame(data)
    if codec == Compression.ZSTD:
        return bytes(_cramjam().zstd.compress(data, level=_ZSTD_LEVEL))
    raise UnsupportedCompressionError(f"unknown compression codec {codec}")


def decompress(
    codec: int, data: Buffer, *, position: int, limit: int = MAX_DECOMPRESSED_BYTES
) -> bytes:
    """Decompress a records section, producing at most ``limit`` bytes.

    :param codec: a :class:`Compression` value.
    :param data: the compressed payload (the bytes after the batch header).
    :param position: the batch's position, named in errors.
    :param limit: the largest output accepted.
    :returns: the uncompressed records section.
    :raises CorruptRecordError: if the payload is truncated, malformed or larger than
        ``limit`` once decompressed.
    :raises UnsupportedCompressionError: if the codec is unknown or cramjam is not installed.
    """
    if codec == Compression.NONE:
        return bytes(data)
    check_codec(codec)  # a missing codec is reported as such, before the payload is looked at
    decoder = _DECODERS[codec]
    name = Compression(codec).name.lower()
    try:
        return decoder(data, limit)
    except (UnsupportedCompressionError, MemoryError):
        raise
    except Exception as exc:
        # The decoders raise zlib.error, cramjam.DecompressionError, struct.error and our own
        # ValueErrors; to a caller they all mean the same thing.
        raise CorruptRecordError(
            f"{name} payload of {len(data)} bytes does not decompress: {exc}", position=position
        ) from exc


def _gunzip(data: Buffer, limit: int) -> bytes:
    parts = []
    total = 0
    rest: Buffer = data
    while True:
        inflater = zlib.decompressobj(wbits=31)
        chunk = inflater.decompress(rest, limit - total + 1)
        total += len(chunk)
        if total > limit:
            raise ValueError(f"output exceeds the {limit}-byte limit")
        if not inflater.eof:
            raise ValueError("gzip stream is truncated")
        parts.append(chunk)
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)


def _snappy_xerial(data: Buffer) -> bytes:
    compress_raw = _cramjam().snappy.compress_raw
    view = memoryview(data)
    parts: list[Any] = [_XERIAL_HEADER]
    for start in range(0, len(view), _XERIAL_BLOCK_BYTES):
        block = compress_raw(view[start : start + _XERIAL_BLOCK_BYTES])
        parts.append(_I32.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


def _unsnappy(data: Buffer, limit: int) -> bytes:
    snappy = _cramjam().snappy
    view = memoryview(data)
    if view[:8] != _XERIAL_MAGIC:
        if snappy.decompress_raw_len(view) > limit:
            raise ValueError(f"raw snappy payload claims more than the {limit}-byte limit")
        return bytes(snappy.decompress_raw(view))
    end = len(view)
    if end < len(_XERIAL_HEADER):
        raise ValueError("xerial header is truncated")
    pos = len(_XERIAL_HEADER)
    parts = []
    total = 0
    while pos < end:
        if end - pos < 4:
            raise ValueError(f"xerial block length at byte {pos} is truncated")
        (size,) = _I32.unpack_from(view, pos)
        pos += 4
        if size < 0 or size > end - pos:
            raise ValueError(
                f"xerial block at byte {pos - 4} claims {size} bytes, {end - pos} remain"
            )
        block = view[pos : pos + size]
        pos += size
        # The raw length is the snappy block's own claim: check it before allocating for it.
        total += snappy.decompress_raw_len(block)
        if total > limit:
            raise ValueError(f"output exceeds the {limit}-byte limit")
        parts.append(snappy.decompress_raw(block))
    return b"".join(parts)


def _lz4_frame(data: Buffer) -> bytes:
    compress_block = _cramjam().lz4.compress_block
    view = memoryview(data)
    parts: list[Any] = [_LZ4_FRAME_HEADER]
    for start in range(0, len(view), _LZ4_BLOCK_BYTES):
        chunk = view[start : start + _LZ4_BLOCK_BYTES]
        block = compress_block(chunk, store_size=False)
        if len(block) < len(chunk):
            parts.append(_U32LE.pack(len(block)))
            parts.append(block)
        else:  # incompressible: the frame format stores such a block as is
            parts.append(_U32LE.pack(len(chunk) | _UNCOMPRESSED_BIT))
            parts.append(chunk)
    parts.append(b"\x00\x00\x00\x00")  # end mark
    return b"".join(parts)


def _unlz4(data: Buffer, limit: int) -> bytes:
    lz4 = _cramjam().lz4
    view = memoryview(data)
    end = len(view)
    if not end:
        raise ValueError("the payload holds no LZ4 frame")
    pos = 0
    parts: list[bytes] = []
    total = 0
    while pos < end:  # a payload may hold several frames
        frame_begin = pos
        flg, block_max, declared, pos = _lz4_frame_header(view, pos)
        if declared is not None and declared > limit - total:
            raise ValueError(f"LZ4 frame claims {declared} bytes, over the {limit}-byte limit")
        independent = flg & 0x20
        scratch = bytearray(block_max if independent else 0)
        frame_total = 0
        blocks = 0
        while True:
            if end - pos < 4:
                raise ValueError(f"LZ4 block size at byte {pos} is truncated")
            (size,) = _U32LE.unpack_from(view, pos)
            pos += 4
            if size == 0:
                break
            stored = size & _UNCOMPRESSED_BIT
            size &= ~_UNCOMPRESSED_BIT
            if size > block_max or size > end - pos:
                raise ValueError(f"LZ4 block at byte {pos - 4} claims {size} bytes")
            block = view[pos : pos + size]
            pos += size + (4 if flg & 0x10 else 0)  # skip the block checksum
            blocks += 1
            if not independent:
                continue
            if stored:
                parts.append(bytes(block))
            else:
                count = lz4.decompress_block_into(block, scratch)
                parts.append(bytes(scratch[:count]))
            frame_total += len(parts[-1])
            if total + frame_total > limit:
                raise ValueError(f"output exceeds the {limit}-byte limit")
        pos += 4 if flg & 0x04 else 0  # content checksum
        if pos > end:
            raise ValueError("LZ4 frame is truncated")
        if not independent:
            # Linked blocks refer back into earlier ones, so cramjam's block API cannot
            # decode them one at a time. Kafka never writes them; other LZ4 tools may. Each
            # block expands to at most block_max, which bounds the whole-frame call.
            if blocks * block_max > limit - total:
                raise ValueError(f"linked LZ4 frame may exceed the {limit}-byte limit")
            parts.append(bytes(lz4.decompress(view[frame_begin:pos])))
            frame_total = len(parts[-1])
        if declared is not None and declared != frame_total:
            raise ValueError(f"LZ4 frame claims {declared} bytes but holds {frame_total}")
        total += frame_total
    return b"".join(parts)


def _lz4_frame_header(view: memoryview, pos: int) -> tuple[int, int, int | None, int]:
    """Parse an LZ4 frame header; return (FLG, maximum block size, content size, next pos)."""
    if len(view) - pos < 7:
        raise ValueError(f"LZ4 frame header at byte {pos} is truncated")
    (magic,) = _U32LE.unpack_from(view, pos)
    if magic != _LZ4_MAGIC:
        raise ValueError(f"no LZ4 frame magic at byte {pos} (found {magic:#010x})")
    flg, bd = view[pos + 4], view[pos + 5]
    block_code = (bd >> 4) & 7
    if flg >> 6 != 1 or flg & 0x03 or bd & 0x8F or block_code < 4:
        raise ValueError(f"unsupported LZ4 frame descriptor {flg:#04x} {bd:#04x}")
    pos += 6
    declared = None
    if flg & 0x08:
        if len(view) - pos < 9:
            raise ValueError("LZ4 content size is truncated")
        (declared,) = _U64LE.unpack_from(view, pos)
        pos += 8
    # Skip the header checksum: the batch CRC already covers these bytes.
    return flg, 1 << (8 + 2 * block_code), declared, pos + 1


def _unzstd(data: Buffer, limit: int) -> bytes:
    bound = _zstd_output_bound(memoryview(data))
    if bound > limit:
        raise ValueError(f"zstd payload may expand to {bound} bytes, over the {limit}-byte limit")
    out = bytearray(bound)
    count = _cramjam().zstd.decompress_into(data, out)
    return bytes(memoryview(out)[:count])


def _zstd_output_bound(view: memoryview) -> int:
    """Walk the frames and block headers of a zstd payload; return an output size bound."""
    end = len(view)
    pos = 0
    bound = 0
    while pos < end:
        if end - pos < 8:
            raise ValueError(f"zstd frame header at byte {pos} is truncated")
        (magic,) = _U32LE.unpack_from(view, pos)
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            (size,) = _U32LE.unpack_from(view, pos + 4)
            pos += 8 + size
            continue
        if magic != _ZSTD_MAGIC:
            raise ValueError(f"no zstd frame magic at byte {pos} (found {magic:#010x})")
        descriptor = view[pos + 4]
        single_segment = descriptor & 0x20
        fcs_code = descriptor >> 6
        fcs_bytes = (1 if single_segment else 0, 2, 4, 8)[fcs_code]
        dict_bytes = (0, 1, 2, 4)[descriptor & 0x03]
        pos += 5 + (0 if single_segment else 1) + dict_bytes
        content_size = None
        if fcs_bytes:
            if end - pos < fcs_bytes:
                raise ValueError("zstd frame content size is truncated")
            content_size = int.from_bytes(view[pos : pos + fcs_bytes], "little")
            content_size += 256 if fcs_bytes == 2 else 0
            pos += fcs_bytes
        frame_bound = 0
        last = False
        while not last:
            if end - pos < 3:
                raise ValueError(f"zstd block header at byte {pos} is truncated")
            header = view[pos] | view[pos + 1] << 8 | view[pos + 2] << 16
            pos += 3
            last = bool(header & 1)
            kind = (header >> 1) & 3
            size = header >> 3
            if kind == 3:
                raise ValueError(f"reserved zstd block type at byte {pos - 3}")
            stored = 1 if kind == 1 else size  # an RLE block stores one byte
            if stored > end - pos:
                raise ValueError(f"zstd block at byte {pos - 3} claims {stored} bytes")
            pos += stored
            frame_bound += _ZSTD_MAX_BLOCK_BYTES if kind == 2 else size
        if descriptor & 0x04:
            pos += 4  # content checksum
        bound += frame_bound if content_size is None else min(content_size, frame_bound)
    if pos > end:
        raise ValueError("zstd payload is truncated")
    return bound


_DECODERS: dict[int, Callable[[Buffer, int], bytes]] = {
    Compression.GZIP: _gunzip,
    Compression.SNAPPY: _unsnappy,
    Compression.LZ4: _unlz4,
    Compression.ZSTD: _unzstd,
}
