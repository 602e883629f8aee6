"""Producer ids for InitProducerId (groups/_producer_ids.py); the sequence checks are the
log's (tests/store/test_producer_state.py)."""

from __future__ import annotations

from headwater.groups import ProducerIds


def test_new_producers_get_fresh_ids_and_epoch_zero() -> None:
    ids = ProducerIds(first_producer_id=100)
    assert [ids.new_producer() for _ in range(3)] == [(100, 0), (101, 0), (102, 0)]
