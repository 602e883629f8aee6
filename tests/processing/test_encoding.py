"""The batch encoder of derived records, checked against the store's decoder."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.processing import OutRecords
from headwater.processing._encoding import ProducerStamp, encode_out_records, encode_within
from headwater.processing._pipeline import _concat
from headwater.store import decode_records, verify_batch

fields = st.one_of(st.none(), st.binary(max_size=40), st.sampled_from([b"y" * 8191, b"z" * 9000]))
small_headers = st.lists(
    st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=20))), max_size=3
)


@st.composite
def out_records(draw: st.DrawFn) -> OutRecords:
    count = draw(st.integers(min_value=1, max_value=30))
    values = draw(st.lists(fields, min_size=count, max_size=count))
    keys = draw(st.lists(fields, min_size=count, max_size=count))
    base = draw(st.integers(min_value=0, max_value=2**41))
    timestamps = draw(
        st.lists(
            st.integers(min_value=base - 20_000, max_value=base + 20_000),
            min_size=count,
            max_size=count,
        )
    )
    offsets = draw(
        st.lists(st.integers(min_value=0, max_value=2**40), min_size=count, max_size=count)
    )
    headers = None
    if draw(st.booleans()):
        headers = draw(st.lists(small_headers.map(tuple), min_size=count, max_size=count))
    source = draw(st.sampled_from([b"t/0/", b"clicks-enriched/12/"]))
    return OutRecords(values, keys, timestamps, source, offsets, headers)


@settings(max_examples=200, deadline=None)
@given(records=out_records(), base_offset=st.integers(min_value=0, max_value=2**40))
def test_encoded_batches_decode_to_the_records(records: OutRecords, base_offset: int) -> None:
    batch = encode_out_records(records, base_offset=base_offset)
    verify_batch(batch)
    decoded = decode_records(batch)
    assert [r.offset for r in decoded] == list(range(base_offset, base_offset + records.count()))
    assert [r.value for r in decoded] == records.values
    assert [r.key for r in decoded] == records.keys
    assert [r.timestamp for r in decoded] == records.timestamps
    assert [r.headers for r in decoded] == [tuple(h) for h in records.all_headers()]
    for record, offset in zip(decoded, records.source_offsets, strict=True):
        assert record.headers[0] == ("headwater.source", records.source + b"%d" % offset)


def test_many_records_and_offsets_crossing_a_power_of_ten() -> None:
    count = 9000  # past the fast tables: the slow layout takes over
    records = OutRecords(
        [b"v%d" % i for i in range(count)],
        [None] * count,
        [1000] * count,
        b"in/3/",
        list(range(995, 995 + count)),
    )
    decoded = decode_records(encode_out_records(records))
    assert len(decoded) == count
    assert decoded[4].headers == (("headwater.source", b"in/3/999"),)
    assert decoded[5].headers == (("headwater.source", b"in/3/1000"),)
    assert decoded[-1].value == b"v8999"


def test_batches_stay_within_the_limit_and_keep_order() -> None:
    count = 20_000
    records = OutRecords(
        [b"x" * 100] * count, [None] * count, [0] * count, b"t/0/", list(range(count))
    )
    batches = encode_within(records, 300_000)
    assert len(batches) > 1
    assert all(len(batch) <= 300_000 for batch in batches)
    decoded = [r for batch in batches for r in decode_records(batch)]
    assert [r.headers[0][1] for r in decoded] == [b"t/0/%d" % i for i in range(count)]
    assert encode_within(records.slice(0, 10), 300_000) == [
        encode_out_records(records.slice(0, 10))
    ]
    big = OutRecords([b"y" * 1000], [None], [0], b"t/0/", [7])
    assert encode_within(big, 100) == [encode_out_records(big)]  # for the store to refuse


def test_a_producers_batches_number_their_records_on_from_its_sequence() -> None:
    count = 20_000
    records = OutRecords(
        [b"x" * 100] * count, [None] * count, [0] * count, b"t/0/", list(range(count))
    )
    start = (1 << 31) - 5000  # the numbers wrap past 2**31 - 1 to 0
    batches = encode_within(records, 300_000, ProducerStamp(42, 3, start))
    assert len(batches) > 1
    expected = start
    for batch in batches:
        header = verify_batch(batch)
        assert (header.producer_id, header.producer_epoch) == (42, 3)
        assert header.is_transactional
        assert header.base_sequence == expected
        expected = (expected + header.last_offset_delta + 1) % (1 << 31)
    assert expected == (start + count) % (1 << 31)
    assert not verify_batch(encode_within(records.slice(0, 5), 300_000)[0]).is_transactional


def test_lineage_relative_to_a_base_and_concatenated_with_absolute_offsets() -> None:
    relative = OutRecords([b"a", b"b"], [None, None], [1, 2], b"t/1/", [0, 7], None, 10**12)
    absolute = OutRecords([b"c"], [None], [3], b"t/1/", [42])
    assert relative.lineage() == [b"t/1/1000000000000", b"t/1/1000000000007"]
    merged = _concat([relative, absolute])
    assert merged.lineage() == [*relative.lineage(), b"t/1/42"]
    assert [r.headers[0][1] for r in decode_records(encode_out_records(merged))] == (
        merged.lineage()
    )
    assert _concat([relative, relative]).source_base == 10**12  # kept when shared
