"""The CLI installed without the ``compression`` extra: a clear error naming it, nothing lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio

from headwater.store import Compression, NewRecord, TopicConfig, open_store

from .helpers import assert_error, run_headwater


async def store_compressed(data: Path) -> None:
    async with open_store(data) as store:
        for topic, codec in (("zstd", Compression.ZSTD), ("gzip", Compression.GZIP)):
            await store.create_topic(topic, TopicConfig(partitions=1))
            records = [NewRecord(value=b'{"n": %d}' % i) for i in range(5)]
            await store.append(topic, records, compression=codec)


def test_reading_zstd_without_cramjam_names_the_extra(
    data: Path, env_without_cramjam: dict[str, str]
) -> None:
    anyio.run(store_compressed, data)

    def hw(*args: str) -> subprocess.CompletedProcess[str]:
        return run_headwater(data, *args, env=env_without_cramjam)

    assert_error(hw("consume", "zstd"), "pip install 'headwater[compression]'")
    assert_error(hw("trace", "zstd", "0", "0"), "pip install 'headwater[compression]'")
    gzip = hw("consume", "gzip")
    assert gzip.returncode == 0, gzip.stderr
    assert len(gzip.stdout.splitlines()) == 5
    # Nothing was changed by the refusals: with cramjam, every record is there.
    full = run_headwater(data, "consume", "zstd")
    assert full.returncode == 0, full.stderr
    assert full.stdout.splitlines() == [f'{{"n": {i}}}' for i in range(5)]
