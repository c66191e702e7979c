from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karkhana.core.errors import InvalidPayload, PayloadTooLarge
from karkhana.core.model import Sample
from karkhana.ingest.codec import decode, encode

NOW = 1_700_000_000_000


def d(payload: object, **kw: int) -> list[Sample]:
    raw = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    return decode(raw, "loom-1", now_ms=NOW, **kw)


def test_single_object_with_ts() -> None:
    out = d({"ts": NOW - 5, "values": {"rpm": 500, "running": True, "state": "running"}})
    assert out == [
        Sample("loom-1", "rpm", NOW - 5, 500.0),
        Sample("loom-1", "running", NOW - 5, True),
        Sample("loom-1", "state", NOW - 5, "running"),
    ]


def test_missing_ts_uses_receive_time() -> None:
    assert d({"values": {"t": 1.5}}) == [Sample("loom-1", "t", NOW, 1.5)]


def test_list_and_samples_forms_and_iso_time() -> None:
    entries = [
        {"ts": "2023-11-14T22:13:20Z", "values": {"a": 1}},
        {"ts": "2023-11-14T22:13:21+00:00", "values": {"a": 2}},
    ]
    assert [s.ts for s in d(entries)] == [NOW, NOW + 1000]
    assert d({"samples": entries}) == d(entries)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"values": {"t": NaN}}', "NaN is not allowed"),
        (b'{"values": {"t": Infinity}}', "Infinity is not allowed"),
        ({"values": {"t": None}}, "values.t: expected a number, boolean or string, got null"),
        ({"values": {"t": [1]}}, "got list"),
        ({"values": {"t": 10**30}}, "too large"),
        ({"values": {"bad key!": 1}}, "key"),
        ({"values": {}}, "no values"),
        ({"value": {"t": 1}}, "values: expected"),
        ({"ts": NOW, "values": {"t": 1}, "extra": 1}, "extra: unknown field"),
        ({"ts": NOW + 2 * 86_400_000, "values": {"t": 1}}, "future"),
        ({"ts": 1_700_000_000, "values": {"t": 1}}, "before 2000"),
        ({"ts": "yesterday", "values": {"t": 1}}, "neither epoch"),
        ({"ts": True, "values": {"t": 1}}, "boolean"),
        ({"samples": [{"values": {"t": 1}}, {"values": {"t": "x" * 2000}}]}, "samples[1].values.t"),
        ({"samples": {}}, "samples: expected a list"),
        (42, "expected a JSON object"),
        ([1], "expected an object"),
    ],
)
def test_bad_payloads_are_rejected_with_reason(payload: object, fragment: str) -> None:
    with pytest.raises(InvalidPayload) as err:
        d(payload)
    assert fragment in str(err.value)


def test_oversize_payload() -> None:
    with pytest.raises(PayloadTooLarge):
        d({"values": {"t": "x" * 100}}, max_bytes=50)


def test_encode_roundtrip() -> None:
    samples = [
        Sample("loom-1", "a", NOW, 1.0),
        Sample("loom-1", "b", NOW, "x"),
        Sample("loom-1", "a", NOW + 1, 2.0),
    ]
    assert sorted(d(encode(samples)), key=lambda s: (s.ts, s.key)) == samples


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_any_json_either_decodes_or_raises_invalid(doc: object) -> None:
    try:
        raw = json.dumps(doc)
    except ValueError:
        return
    try:
        out = d(raw)
    except (InvalidPayload, PayloadTooLarge):
        return
    assert all(isinstance(s, Sample) for s in out)


@given(st.binary(max_size=200))
def test_any_bytes_either_decode_or_raise_invalid(raw: bytes) -> None:
    with contextlib.suppress(InvalidPayload, PayloadTooLarge):
        d(raw)
