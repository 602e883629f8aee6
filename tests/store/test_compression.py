"""Tests for store/_compression.py: Kafka's framings, foreign encoders, hostile payloads."""

from __future__ import annotations

import contextlib
import gzip
import random
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import cramjam
import lz4.frame
import pytest
import snappy
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.store._compression import (
    Compression,
    _cramjam,
    compress,
    decompress,
)
from headwater.store._errors import CorruptRecordError, UnsupportedCompressionError

with warnings.catch_warnings():
    # Importing kafka-python loads its protocol schemas with a deprecated importlib API.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import codec as kafka_codec

CODECS = [Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]


def sample(size: int, seed: int = 0) -> bytes:
    """Return compressible bytes: words from a small vocabulary."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"%d" % rng.randrange(1000)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + bytes([rng.randrange(256)])
    return bytes(out[:size])


# Sizes around the snappy (32 KiB) and lz4 (64 KiB) block boundaries.
SIZES = [0, 1, 100, 32 * 1024, 32 * 1024 + 1, 64 * 1024, 200_000]


@pytest.mark.parametrize("codec", list(Compression))
@pytest.mark.parametrize("size", SIZES)
def test_round_trip(codec: Compression, size: int) -> None:
    data = sample(size, seed=size)
    assert decompress(codec, compress(codec, data), position=0) == data


@pytest.mark.parametrize("codec", CODECS)
def test_incompressible_data_round_trips(codec: Compression) -> None:
    data = random.Random(3).randbytes(150_000)
    assert decompress(codec, compress(codec, data), position=0) == data


def test_compression_is_deterministic() -> None:
    data = sample(100_000)
    for codec in CODECS:
        assert compress(codec, data) == compress(codec, data)


def test_snappy_uses_xerial_framing_with_32k_blocks() -> None:
    data = sample(70_000)
    out = compress(Compression.SNAPPY, data)
    assert out[:16] == b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    pos, blocks = 16, []
    while pos < len(out):
        (size,) = struct.unpack_from(">i", out, pos)
        blocks.append(snappy.decompress(out[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    assert [len(b) for b in blocks] == [32768, 32768, 70_000 - 65536]
    assert b"".join(blocks) == data
    # kafka-python (and so snappy-java's framing) produces the same bytes.
    assert out == kafka_codec.snappy_encode(data)


def test_snappy_reads_raw_and_foreign_xerial() -> None:
    data = sample(80_000)
    assert decompress(Compression.SNAPPY, snappy.compress(data), position=0) == data
    assert (
        decompress(Compression.SNAPPY, bytes(cramjam.snappy.compress_raw(data)), position=0) == data
    )
    xerial = kafka_codec.snappy_encode(data, xerial_blocksize=4096)
    assert decompress(Compression.SNAPPY, xerial, position=0) == data


def test_lz4_writes_kafka_frame_with_independent_blocks() -> None:
    data = sample(150_000)
    out = compress(Compression.LZ4, data)
    assert out[:7] == bytes.fromhex("04224d18604082")  # python-lz4 checks this header checksum
    assert lz4.frame.decompress(out) == data
    assert bytes(cramjam.lz4.decompress(out)) == data


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"block_linked": False},
        {"block_linked": False, "content_checksum": True, "block_checksum": True},
        {"block_linked": False, "store_size": False, "block_size": lz4.frame.BLOCKSIZE_MAX4MB},
        {"block_linked": True, "block_size": lz4.frame.BLOCKSIZE_MAX64KB},
    ],
)
def test_lz4_reads_frames_from_python_lz4(options: dict[str, object]) -> None:
    data = sample(300_000)
    frame = lz4.frame.compress(data, **options)
    assert decompress(Compression.LZ4, frame, position=0) == data
    assert decompress(Compression.LZ4, frame + frame, position=0) == data + data


def test_lz4_reads_kafka_python_frames() -> None:
    data = sample(100_000)
    assert decompress(Compression.LZ4, kafka_codec.lz4_encode(data), position=0) == data


def test_zstd_reads_frames_with_and_without_content_size() -> None:
    data = sample(300_000)
    for write_size in (True, False):
        frame = zstandard.ZstdCompressor(write_content_size=write_size).compress(data)
        assert decompress(Compression.ZSTD, frame, position=0) == data
    streamed = zstandard.ZstdCompressor().compressobj()
    frame = streamed.compress(data) + streamed.flush()
    assert decompress(Compression.ZSTD, frame + frame, position=0) == data + data
    assert zstandard.ZstdDecompressor().decompress(compress(Compression.ZSTD, data)) == data


def test_gzip_reads_foreign_and_concatenated_members() -> None:
    data = sample(50_000)
    assert decompress(Compression.GZIP, gzip.compress(data), position=0) == data
    assert decompress(Compression.GZIP, kafka_codec.gzip_encode(data), position=0) == data
    two = gzip.compress(data[:10]) + gzip.compress(data[10:])
    assert decompress(Compression.GZIP, two, position=0) == data
    assert gzip.decompress(compress(Compression.GZIP, data)) == data


@pytest.mark.parametrize("codec", CODECS)
def test_truncation_at_every_byte_is_corrupt(codec: Compression) -> None:
    payload = compress(codec, sample(3000))
    for end in range(len(payload)):
        if codec == Compression.SNAPPY and end == 16:
            # A xerial header alone is a valid empty stream (as snappy-java writes one), and
            # cutting at a block boundary leaves valid blocks: the batch's record count and
            # record lengths catch such a cut (test_records.py), not the codec.
            assert decompress(codec, payload[:end], position=0) == b""
            continue
        with pytest.raises(CorruptRecordError) as info:
            decompress(codec, payload[:end], position=1234)
        assert info.value.position == 1234
        assert "does not decompress" in str(info.value)


@settings(max_examples=60, deadline=None)
@given(codec=st.sampled_from(CODECS), garbage=st.binary(max_size=300), keep=st.integers(0, 40))
def test_garbage_raises_only_corrupt_record_error(
    codec: Compression, garbage: bytes, keep: int
) -> None:
    # Keep a real prefix sometimes so that the framing parsers get past their magic.
    payload = compress(codec, sample(500))[:keep] + garbage
    with contextlib.suppress(CorruptRecordError):
        decompress(codec, payload, position=0)


@settings(max_examples=60, deadline=None)
@given(codec=st.sampled_from(CODECS), data=st.data())
def test_bit_flips_raise_only_corrupt_record_error(codec: Compression, data: st.DataObject) -> None:
    payload = bytearray(compress(codec, sample(2000)))
    bit = data.draw(st.integers(0, len(payload) * 8 - 1))
    payload[bit // 8] ^= 1 << (bit % 8)
    with contextlib.suppress(CorruptRecordError):
        decompress(codec, payload, position=0)


@pytest.mark.parametrize("codec", CODECS)
def test_output_over_the_limit_is_corrupt(codec: Compression) -> None:
    payload = compress(codec, bytes(100_000))
    assert len(decompress(codec, payload, position=0, limit=100_000)) == 100_000
    with pytest.raises(CorruptRecordError):
        decompress(codec, payload, position=0, limit=99_999)


def test_sizes_claimed_inside_payloads_are_not_trusted() -> None:
    # raw snappy whose header claims 4 GiB: rejected before anything is allocated
    huge_snappy = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + b"\x00" * 10
    # a xerial block length running past the payload
    lying_xerial = compress(Compression.SNAPPY, sample(100))[:16] + struct.pack(">i", 1 << 30)
    # an lz4 frame claiming a content size of 2**40 bytes
    lying_lz4 = lz4.frame.compress(b"abc", store_size=True)
    lying_lz4 = lying_lz4[:6] + struct.pack("<Q", 1 << 40) + lying_lz4[14:]
    # a zstd frame claiming 2**40 bytes of content
    lying_zstd = b"\x28\xb5\x2f\xfd\xe0" + struct.pack("<Q", 1 << 40) + b"\x01\x00\x00"
    # an lz4 block claiming more than the frame's maximum block size
    lying_block = bytes.fromhex("04224d18604082") + struct.pack("<I", 70_000) + bytes(70_000)
    for codec, payload in [
        (Compression.SNAPPY, huge_snappy),
        (Compression.SNAPPY, lying_xerial),
        (Compression.LZ4, lying_lz4),
        (Compression.ZSTD, lying_zstd),
        (Compression.LZ4, lying_block),
    ]:
        with pytest.raises(CorruptRecordError):
            decompress(codec, payload, position=0)


def test_gzip_bomb_stops_at_the_limit() -> None:
    bomb = zlib.compress(bytes(50_000_000), 9, wbits=31)  # ~50 KB of gzip
    with pytest.raises(CorruptRecordError, match="limit"):
        decompress(Compression.GZIP, bomb, position=0, limit=1_000_000)


def test_unknown_codec_is_unsupported() -> None:
    with pytest.raises(UnsupportedCompressionError):
        compress(5, b"x")
    with pytest.raises(UnsupportedCompressionError):
        decompress(7, b"x", position=0)


def test_missing_cramjam_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _cramjam.cache_clear()
    monkeypatch.setitem(sys.modules, "cramjam", None)  # makes `import cramjam` fail
    try:
        for codec in (Compression.SNAPPY, Compression.LZ4, Compression.ZSTD):
            with pytest.raises(UnsupportedCompressionError, match=r"headwater\[compression\]"):
                compress(codec, b"data")
            with pytest.raises(UnsupportedCompressionError, match=r"headwater\[compression\]"):
                decompress(codec, b"data", position=0)
        # none and gzip need only the standard library
        for codec in (Compression.NONE, Compression.GZIP):
            assert decompress(codec, compress(codec, b"data"), position=0) == b"data"
    finally:
        monkeypatch.undo()
        _cramjam.cache_clear()
    assert decompress(Compression.LZ4, compress(Compression.LZ4, b"data"), position=0) == b"data"


WITHOUT_CRAMJAM_SCRIPT = """
import sys

import anyio

from headwater.store import Compression, NewRecord, TopicConfig, UnsupportedCompressionError
from headwater.store import check_codec, open_store


async def main(path):
    async with open_store(path) as store:
        await store.create_topic("t", TopicConfig(partitions=3))
        records = [NewRecord(value=b"v", key=b"k%d" % i) for i in range(30)]
        for codec in (Compression.SNAPPY, Compression.LZ4, Compression.ZSTD):
            try:
                check_codec(codec)
            except UnsupportedCompressionError as exc:
                print("check", codec.name, exc)
            try:
                await store.append("t", records, compression=codec)
            except UnsupportedCompressionError as exc:  # one error, not a group of them
                print("append", codec.name, exc)
        ends = [p.log_end_offset for p in store.partitions("t")]
        print("stored before", sum(ends))
        await store.append("t", records, compression=Compression.GZIP)
        await store.append("t", records)
        print("stored after", sum(p.log_end_offset for p in store.partitions("t")))


anyio.run(main, sys.argv[1])
"""


def test_store_without_cramjam_refuses_its_codecs_and_keeps_working(
    tmp_path: Path, env_without_cramjam: dict[str, str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_CRAMJAM_SCRIPT, str(tmp_path / "data")],
        env=env_without_cramjam,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    hint = "pip install 'headwater[compression]'"
    for codec in ("SNAPPY", "LZ4", "ZSTD"):
        for step in ("check", "append"):
            [line] = [x for x in lines if x.startswith(f"{step} {codec} ")]
            assert hint in line, line
    assert "stored before 0" in lines  # a refused append stores nothing, in no partition
    assert "stored after 60" in lines


def test_the_subprocess_really_lacks_cramjam(env_without_cramjam: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import cramjam"],
        env=env_without_cramjam,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "import of cramjam halted" in result.stderr
