from __future__ import annotations

import contextlib
import math
import struct
import uuid
import zlib
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karkhana.core.errors import InvalidPayload
from karkhana.core.model import Sample, Value
from karkhana.edge import encoding
from karkhana.edge.encoding import HEADER_BYTES, MAGIC, VERSION, decode, encode
from karkhana.ingest.codec import encode as json_encode
from karkhana.sim.profiles import build_plant

T0 = 1_700_000_000_000
BID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def key_of(v: Value) -> object:
    """A value as something that compares exactly: floats by their bits (-0.0 is not 0.0)."""
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    return (type(v).__name__, v)


def by_series(samples: list[Sample]) -> dict[tuple[str, str, str], list[tuple[int, object]]]:
    out: dict[tuple[str, str, str], list[tuple[int, object]]] = defaultdict(list)
    for s in samples:
        out[(s.device_id, s.key, type(s.value).__name__)].append((s.ts, key_of(s.value)))
    return dict(out)


def body(raw: bytes, version: int = VERSION) -> bytes:
    return MAGIC + bytes([version]) + BID.bytes + zlib.compress(raw)


def test_round_trip_keeps_values_exactly_and_series_order() -> None:
    samples = [
        Sample("loom-1", "rpm", T0, 512.0),
        Sample("loom-1", "temp_c", T0, 41.37),
        Sample("loom-1", "running", T0, True),
        Sample("loom-1", "state", T0, "running"),
        Sample("loom-1", "rpm", T0 + 1000, 515.0),
        Sample("loom-1", "temp_c", T0 + 1000, 41.4),
        Sample("loom-1", "running", T0 + 1000, False),
        Sample("loom-1", "state", T0 + 1000, "stopped"),
        Sample("loom-2", "ratio", T0 - 5, 1 / 3),  # no decimal scale holds it: float64
        Sample("loom-2", "ratio", T0 - 9, -0.0),
        Sample("loom-2", "ratio", T0 + 10**9, 1e300),
    ]
    batch_id, out = decode(encode(BID, samples))
    assert batch_id == BID
    assert by_series(out) == by_series(samples)
    assert sorted(out, key=repr) == sorted(samples, key=repr)


def test_integers_come_back_as_floats() -> None:
    _, out = decode(encode(BID, [Sample("d", "count", T0, 7)]))  # type: ignore[arg-type]
    assert out == [Sample("d", "count", T0, 7.0)]
    assert isinstance(out[0].value, float)


def test_empty_batch() -> None:
    assert decode(encode(BID, [])) == (BID, [])


def test_scaled_series_are_small() -> None:
    samples = [Sample("m", "v", T0 + i * 1000, 230.0 + (i % 7) / 10) for i in range(1000)]
    data = encode(BID, samples)
    assert len(data) < 300
    assert decode(data)[1] == samples


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "x" * 2000, None, b"raw", [1.0]])
def test_unencodable_values_are_refused(value: object) -> None:
    with pytest.raises(InvalidPayload):
        encode(BID, [Sample("d", "k", T0, value)])  # type: ignore[arg-type]


def test_unencodable_timestamps_are_refused() -> None:
    for ts in (-1, 2**53 + 1, 1.5):
        with pytest.raises(InvalidPayload):
            encode(BID, [Sample("d", "k", ts, 1.0)])  # type: ignore[arg-type]


def test_factory_signals_take_under_four_bytes_a_point() -> None:
    plant = build_plant("textile", 20, 7, T0)
    samples = []
    for second in range(1, 61):
        t = T0 + second * 1000
        for device_id, values in plant.step(t).items():
            samples += [Sample(device_id, k, t, v) for k, v in values.items()]
    data = encode(BID, samples)
    assert decode(data)[1] == [s._replace(value=_as_float(s.value)) for s in _grouped(samples)]
    per_point = len(data) / len(samples)
    json_bytes = sum(
        len(json_encode([s])) for s in samples[:2000]
    )  # one sample a message, as devices send
    assert per_point < 4, per_point
    assert json_bytes / 2000 > 10 * per_point


def _as_float(v: Value) -> Value:
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _grouped(samples: list[Sample]) -> list[Sample]:
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for s in samples:
        kind = "t" if isinstance(s.value, str) else "b" if isinstance(s.value, bool) else "n"
        groups.setdefault((s.device_id, s.key, kind), []).append(s)
    return [s for g in groups.values() for s in g]


# -- malformed input -------------------------------------------------------------------------


def test_bad_magic_version_and_truncation() -> None:
    good = encode(BID, [Sample("d", "k", T0, 1.5)])
    for bad in (b"", b"KKB", b"XXX" + good[3:], good[:3] + bytes([9]) + good[4:], good[:-1]):
        with pytest.raises(InvalidPayload):
            decode(bad)
    with pytest.raises(InvalidPayload, match="version 9"):
        decode(good[:3] + bytes([9]) + good[4:])
    with pytest.raises(InvalidPayload, match="after the compressed"):
        decode(good + b"junk")


def test_zip_bomb_stops_at_the_limit() -> None:
    bomb = body(b"\0" * (encoding.MAX_BODY_BYTES + 1))
    assert len(bomb) < 100_000
    with pytest.raises(InvalidPayload, match="decompresses to more than"):
        decode(bomb)


def test_too_many_points() -> None:
    samples = [Sample("d", "k", T0 + i, float(i)) for i in range(101)]
    with pytest.raises(InvalidPayload, match="limit of 100"):
        decode(encode(BID, samples), max_points=100)


def test_invalid_device_ids_keys_and_indexes() -> None:
    def raw(*strings: bytes, rest: bytes) -> bytes:
        out = bytes([len(strings)])
        for s in strings:
            out += bytes([len(s)]) + s
        return body(out + rest)

    one_point = bytes([SCALED := encoding.SCALED, 1, 0, 0, 2])  # n=1, ts=base, k=0, m=1
    ok = raw(b"dev", b"key", rest=bytes([0, 1, 0, 1]) + one_point)
    assert decode(ok)[1] == [Sample("dev", "key", 0, 1.0)]
    assert SCALED == 0
    cases = [
        raw(b"bad id!", b"key", rest=bytes([0, 1, 0, 1]) + one_point),
        raw(b"dev", b"bad key", rest=bytes([0, 1, 0, 1]) + one_point),
        raw(b"dev", b"key", rest=bytes([0, 1, 5, 1]) + one_point),  # string index 5
        raw(b"dev", b"key", rest=bytes([0, 1, 0, 1, 9, 1, 0])),  # kind 9
        raw(b"dev", b"key", rest=bytes([0, 1, 0, 1, 0, 0])),  # empty group
        raw(b"dev", b"key", rest=bytes([0, 1, 0, 1, 0, 1, 0, 7, 2])),  # scale 7
        raw(b"\xff\xfe", b"key", rest=bytes([0, 1, 0, 1]) + one_point),  # not UTF-8
        raw(b"dev", b"key", rest=bytes([0, 1, 0, 1]) + one_point + b"\0"),  # trailing
        raw(b"dev", b"key", rest=bytes([1, 1, 0, 1]) + one_point),  # negative base ts
        raw(b"dev", b"key", rest=bytes([0, 1, 0, 1, 1, 1, 0]) + struct.pack("<d", math.nan)),
        raw(b"dev", b"key", rest=bytes([0, 1, 0, 1, 0, 1, 0, 0]) + b"\xff" * 11),  # long varint
    ]
    for case in cases:
        with pytest.raises(InvalidPayload):
            decode(case)


def test_scaled_values_beyond_exact_range_are_refused() -> None:
    big = bytearray([2, 3]) + b"dev" + bytes([3]) + b"key" + bytes([0, 1, 0, 1, 0, 1, 0, 0])
    encoding._put(big, encoding._zig(2**54))
    with pytest.raises(InvalidPayload, match="out of range"):
        decode(body(bytes(big)))


# -- properties --------------------------------------------------------------------------------

devices = st.sampled_from(["loom-1", "press.2", "gw-A_3"])
keys = st.sampled_from(["rpm", "temp_c", "state", "a/b:c-d.e"])
values: st.SearchStrategy[Value] = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda x: round(x, 3)),
    st.integers(-(10**6), 10**6).map(lambda i: i / 100),
    st.booleans(),
    st.text(max_size=40),
)
samples_st = st.lists(
    st.builds(Sample, devices, keys, st.integers(0, encoding.MAX_TS), values), max_size=60
)


@given(samples_st)
def test_round_trip_property(samples: list[Sample]) -> None:
    batch_id = uuid.uuid4()
    got_id, out = decode(encode(batch_id, samples))
    assert got_id == batch_id
    assert by_series(out) == by_series(samples)


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_invalid_payload(data: bytes) -> None:
    for candidate in (data, MAGIC + bytes([VERSION]) + data, body(data)):
        with contextlib.suppress(InvalidPayload):
            decode(candidate)


@given(samples_st, st.data())
def test_mutated_bodies_only_raise_invalid_payload(
    samples: list[Sample], data: st.DataObject
) -> None:
    raw = bytearray(zlib.decompress(encode(BID, samples)[HEADER_BYTES:]))
    for _ in range(data.draw(st.integers(1, 4))):
        if raw and data.draw(st.booleans()):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        else:
            cut = data.draw(st.integers(0, len(raw)))
            raw = raw[:cut] + bytearray(data.draw(st.binary(max_size=8))) + raw[cut:]
    with contextlib.suppress(InvalidPayload):
        decode(body(bytes(raw)))


def test_invalid_ids_are_refused_when_encoding() -> None:
    for device_id, key in (("bad id", "k"), ("d", "bad key"), ("", "k")):
        with pytest.raises(InvalidPayload):
            encode(BID, [Sample(device_id, key, T0, 1.0)])
