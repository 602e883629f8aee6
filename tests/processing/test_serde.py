"""Key encoding: canonical JSON, equal keys equal bytes, no collisions across types; and
windowed results serialised as orjson writes them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.processing import JsonKeySerde, JsonSerde, SerdeError, encode_key
from headwater.processing._serde import JSON, batch_deserializer, batch_serializer
from headwater.processing.windows import Windowed
from headwater.store import exact_dumps

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
keys = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=10,
)


def model(key: Any) -> Any:
    """What a key is, as canonical JSON sees it: its type and value, dicts unordered."""
    if isinstance(key, bool):
        return ("bool", key)
    if isinstance(key, int):
        return ("int", key)
    if isinstance(key, float):
        return ("float", repr(key))  # -0.0 is not 0.0 here
    if isinstance(key, str):
        return ("str", key)
    if isinstance(key, list):
        return ("list", tuple(model(k) for k in key))
    return ("dict", frozenset((k, model(v)) for k, v in key.items()))


@settings(max_examples=300, deadline=None)
@given(a=keys, b=keys)
def test_keys_encode_equal_exactly_when_they_are_equal_keys(a: Any, b: Any) -> None:
    assert (encode_key(a) == encode_key(b)) == (model(a) == model(b))


@settings(max_examples=200, deadline=None)
@given(key=keys)
def test_encoding_is_canonical_and_decodes_back(key: Any) -> None:
    data = encode_key(key)
    assert data is not None
    assert data == orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS)  # canonical
    serde = JsonKeySerde()
    assert model(serde.deserialize(data)) == model(key)
    if isinstance(key, dict):  # sorted object keys, whatever the insertion order
        assert encode_key(dict(reversed(list(key.items())))) == data


def test_examples() -> None:
    assert encode_key({"b": 2, "a": 1}) == encode_key({"a": 1, "b": 2}) == b'{"a":1,"b":2}'
    assert encode_key(1) == b"1" and encode_key("1") == b'"1"' and encode_key(True) == b"true"
    assert encode_key((1, "x")) == b'[1,"x"]'
    assert encode_key(None) is None
    with pytest.raises(SerdeError, match="BytesSerde"):
        encode_key(b"raw")
    with pytest.raises(SerdeError, match="cannot encode key"):
        encode_key({1, 2})


@settings(max_examples=200, deadline=None)
@given(key=keys, value=keys, start=st.integers(0, 2**53), size=st.integers(1, 2**20))
def test_windowed_results_serialise_as_orjson_writes_the_dataclass(
    key: Any, value: Any, start: int, size: int
) -> None:
    result = Windowed(key, start, start + size, value)
    serialise = batch_serializer(JSON, [result])
    assert serialise is not orjson.dumps  # the faster path, through a dict
    assert serialise(result) == orjson.dumps(result)


def test_values_other_than_windowed_results_serialise_with_orjson_itself() -> None:
    # orjson, with the standard library's json for an integer beyond 64 bits.
    assert batch_serializer(JSON, [{"a": 1}, Windowed("k", 0, 1, 2)]) is exact_dumps
    assert batch_serializer(JSON, []) is exact_dumps
    sorted_json = JsonSerde(option=orjson.OPT_SORT_KEYS)
    assert batch_serializer(sorted_json, [Windowed("k", 0, 1, 2)]) == sorted_json.serialize


def test_a_windowed_result_beyond_64_bits_is_written_exactly() -> None:
    result = Windowed("k", 0, 10, {"sum": 2**64 + 1})
    serialise = batch_serializer(JSON, [result])
    assert (
        serialise(result) == b'{"key":"k","start":0,"end":10,"value":{"sum":18446744073709551617}}'
    )
    with pytest.raises(TypeError):  # refused for another reason: refused still
        serialise(Windowed("k", 0, 10, {1: 2}))


json_documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.integers(-(2**70), 2**70)  # beyond 64 bits too
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@given(st.lists(json_documents, max_size=8))
def test_serialize_many_gives_what_serialize_gives_each(values: list[Any]) -> None:
    for serde in (JsonSerde(), JsonSerde(option=orjson.OPT_SORT_KEYS)):
        assert serde.serialize_many(values) == [serde.serialize(v) for v in values]


@given(json_documents)
def test_json_values_come_back_as_they_went_in_integers_of_any_width_too(value: Any) -> None:
    serde = JsonSerde()
    data = serde.serialize(value)
    assert serde.deserialize(data) == value
    assert JsonKeySerde().deserialize(data) == value


def test_serialize_many_raises_for_a_value_json_cannot_hold() -> None:
    with pytest.raises(orjson.JSONEncodeError):
        JsonSerde().serialize_many([{"a": 1}, {1, 2}])


def test_the_batch_decoder_is_orjson_itself_unless_a_value_needs_more() -> None:
    assert batch_deserializer(JSON, [b"1", b'{"a":2}']) is orjson.loads
    assert batch_deserializer(JSON, [b"1", b"18446744073709551616"]) == JSON.deserialize
    assert batch_deserializer(JSON, [b"1", bytearray(b"2")]) == JSON.deserialize
    assert batch_deserializer(JSON, (b"1", b"2")) == JSON.deserialize  # type: ignore[arg-type]
    assert batch_deserializer(JSON, [b"1", None]) == JSON.deserialize
