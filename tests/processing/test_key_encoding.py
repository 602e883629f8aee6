"""A batch's JSON keys cut from one encoding of the list (``_json_each``) are the keys'
own encodings, as the key serde writes them one by one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headwater.processing import JsonKeySerde
from headwater.processing._pipeline import _json_each

plain_keys = st.lists(
    st.text() | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1), max_size=40
)


@given(plain_keys)
def test_each_key_is_encoded_as_the_key_serde_encodes_it_alone(keys: list[str | int]) -> None:
    each = _json_each(keys)
    commas = any("," in k for k in keys if isinstance(k, str))
    if each is None:
        assert commas or not keys
        return
    serde = JsonKeySerde()
    assert each == [serde.serialize(k) for k in keys]


def test_keys_with_commas_or_past_64_bits_are_left_to_the_key_by_key_path() -> None:
    assert _json_each(["a", "b,c"]) is None
    assert _json_each([1 << 70]) is None
    assert _json_each(["a", 'b","c']) is None
    assert _json_each(["a", "b"]) == [b'"a"', b'"b"']
