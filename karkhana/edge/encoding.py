"""The edge batch wire format: versioned, columnar, compressed (pure: no I/O, no clock).

Factory signals change slowly and are sampled on a regular beat, so a series stored as
delta-of-delta timestamps and decimal-scaled value deltas is mostly zeros and small numbers,
which zlib then squeezes to one or two bytes a point (JSON needs about 60).

Layout::

    b"KKB" | version (1 byte) | batch id (16 bytes) | zlib(body)

Body; every integer is an unsigned LEB128 varint, ``z()`` marks a zigzag-signed one::

    strings: count, then each as byte length + UTF-8 (device ids, keys and text values)
    base_ts: z(first timestamp of the batch)
    groups:  count, then per group (the samples of one series with one kind of value):
        device (string index), key (string index), kind (1 byte), n
        timestamps: z(ts0 - base_ts), z(ts1 - ts0), then n-2 z(delta-of-delta)
        values, by kind:
          SCALED  k (1 byte, 0..6), z(m0), n-1 z(m[i] - m[i-1]); the value is m / 10**k
          FLOAT   n little-endian float64 (a series that no decimal scale holds exactly)
          BOOL    ceil(n/8) bytes, sample i in bit i % 8 of byte i // 8
          TEXT    n string indexes

Numbers round-trip exactly: a series is scaled only when every value comes back bit for bit.
Samples come back grouped by series (in order of first appearance), each series in the order it
was given. ``decode`` reads bytes from the network, so every count, length and index is checked
and anything malformed raises :class:`InvalidPayload`.
"""

from __future__ import annotations

import math
import struct
import uuid
import zlib
from collections.abc import Iterable

from karkhana.core.errors import InvalidPayload
from karkhana.core.model import KEY_PATTERN, Sample, Value, is_valid_device_id
from karkhana.ingest.codec import MAX_TEXT

MAGIC = b"KKB"
VERSION = 1
HEADER_BYTES = len(MAGIC) + 1 + 16
CONTENT_TYPE = "application/vnd.karkhana.batch"

MAX_POINTS = 200_000
"""Most samples one batch may carry."""
MAX_BODY_BYTES = 16 * 1024 * 1024
"""Most bytes a batch may decompress to (a zip bomb stops here)."""
MAX_STRINGS = 65_536
MAX_SCALE = 6
MAX_TS = 2**53
"""Timestamps are epoch milliseconds in [0, 2**53]: exact as floats, far beyond any real date."""
MAX_EXACT = 2**53

SCALED, FLOAT, BOOL, TEXT = 0, 1, 2, 3
_NUMBER, _BOOL, _TEXT = 0, 2, 3
_POW10 = tuple(10**k for k in range(MAX_SCALE + 1))
_F64 = struct.Struct("<d")


def _zig(n: int) -> int:
    return n << 1 if n >= 0 else (-n << 1) - 1


def _unzig(z: int) -> int:
    return (z >> 1) ^ -(z & 1)


def _put(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _scale_of(v: float) -> int | None:
    """The smallest k with round(v * 10**k) / 10**k == v exactly, or None."""
    if v == 0.0:
        return 0 if math.copysign(1.0, v) > 0 else None  # -0.0 would come back as 0.0
    if not math.isfinite(v) or abs(v) > MAX_EXACT:
        return None
    for k, p in enumerate(_POW10):
        m = round(v * p)
        if abs(m) > MAX_EXACT:
            return None
        if m / p == v:  # int / int is correctly rounded: the same double the decoder makes
            return k
    return None


def _scaled(values: list[float]) -> tuple[int, list[int]] | None:
    """The decimal scale and integers that hold every value exactly, or None."""
    k = 0
    for v in values:
        kv = _scale_of(v)
        if kv is None:
            return None
        if kv > k:
            k = kv
    p = _POW10[k]
    ints = []
    for v in values:
        m = round(v * p)
        if abs(m) > MAX_EXACT or m / p != v:
            return None
        ints.append(m)
    return k, ints


def _kind(value: Value) -> int:
    cls = value.__class__
    if cls is float or cls is int:
        return _NUMBER
    if cls is bool:
        return _BOOL
    if cls is str:
        return _TEXT
    raise InvalidPayload(f"cannot encode a value of type {cls.__name__}")


def encode(batch_id: uuid.UUID, samples: Iterable[Sample]) -> bytes:
    """One batch of samples in the wire format; raises InvalidPayload for unencodable values."""
    groups: dict[tuple[str, str, int], tuple[list[int], list[Value]]] = {}
    for s in samples:
        gk = (s.device_id, s.key, _kind(s.value))
        group = groups.get(gk)
        if group is None:
            group = groups[gk] = ([], [])
        group[0].append(s.ts)
        group[1].append(s.value)
    strings: dict[str, int] = {}

    def index(text: str) -> int:
        i = strings.get(text)
        if i is None:
            i = strings[text] = len(strings)
        return i

    body = bytearray()
    base = next(iter(groups.values()))[0][0] if groups else 0
    _check_ts(base)
    _put(body, _zig(base))
    _put(body, len(groups))
    for (device_id, key, kind), (stamps, values) in groups.items():
        if not is_valid_device_id(device_id) or KEY_PATTERN.fullmatch(key) is None:
            raise InvalidPayload(f"device id {device_id[:64]!r} or key {key[:64]!r} is not valid")
        _put(body, index(device_id))
        _put(body, index(key))
        if kind == _NUMBER:
            floats = [float(v) for v in values]
            scaled = _scaled(floats)
            body.append(SCALED if scaled is not None else FLOAT)
        else:
            body.append(kind)
        _put(body, len(stamps))
        _timestamps(body, base, stamps)
        if kind == _NUMBER:
            if scaled is not None:
                k, ints = scaled
                body.append(k)
                prev = 0
                for m in ints:
                    _put(body, _zig(m - prev))
                    prev = m
            else:
                for f in floats:
                    if not math.isfinite(f):
                        raise InvalidPayload(f"{device_id}/{key}: {f} is not a finite number")
                    body += _F64.pack(f)
        elif kind == _BOOL:
            bits = bytearray((len(values) + 7) // 8)
            for i, v in enumerate(values):
                if v:
                    bits[i >> 3] |= 1 << (i & 7)
            body += bits
        else:
            for v in values:
                assert isinstance(v, str)
                if len(v) > MAX_TEXT:
                    raise InvalidPayload(f"{device_id}/{key}: text longer than {MAX_TEXT}")
                _put(body, index(v))
    head = bytearray()
    _put(head, len(strings))
    for text in strings:
        raw = text.encode()
        _put(head, len(raw))
        head += raw
    header = MAGIC + bytes([VERSION]) + batch_id.bytes
    return header + zlib.compress(bytes(head + body), 6)


def _check_ts(ts: int) -> None:
    if ts.__class__ is not int or not 0 <= ts <= MAX_TS:
        raise InvalidPayload(f"timestamp {ts!r} is not epoch milliseconds in [0, 2**53]")


def _timestamps(out: bytearray, base: int, stamps: list[int]) -> None:
    prev = base
    delta = 0
    for i, ts in enumerate(stamps):
        _check_ts(ts)
        d = ts - prev
        _put(out, _zig(d if i < 2 else d - delta))
        delta = d if i > 0 else 0
        prev = ts


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uvarint(self) -> int:
        data, pos = self.data, self.pos
        result = shift = 0
        while True:
            if pos >= len(data):
                raise InvalidPayload("batch is truncated")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 63:
                raise InvalidPayload("varint longer than 64 bits")
        self.pos = pos
        return result

    def zvarint(self) -> int:
        return _unzig(self.uvarint())

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise InvalidPayload("batch is truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise InvalidPayload("batch is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def count(self, limit: int, what: str) -> int:
        n = self.uvarint()
        if n > limit:
            raise InvalidPayload(f"{what}: {n} is more than the limit of {limit}")
        return n


def batch_id_of(data: bytes) -> uuid.UUID:
    """The batch id from the header alone (no decompression); InvalidPayload if malformed."""
    if len(data) < HEADER_BYTES or data[: len(MAGIC)] != MAGIC:
        raise InvalidPayload("not a karkhana edge batch (bad magic)")
    version = data[len(MAGIC)]
    if version != VERSION:
        raise InvalidPayload(f"unsupported batch format version {version} (this server reads 1)")
    return uuid.UUID(bytes=bytes(data[len(MAGIC) + 1 : HEADER_BYTES]))


def _inflate(data: bytes, max_body: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(data, max_body)
        if inflater.unconsumed_tail:
            raise InvalidPayload(f"batch decompresses to more than {max_body} bytes")
        body += inflater.flush()
    except zlib.error as exc:
        raise InvalidPayload(f"batch is not valid zlib data: {exc}") from None
    if not inflater.eof:
        raise InvalidPayload("batch is truncated (incomplete zlib stream)")
    if inflater.unused_data:
        raise InvalidPayload("unexpected bytes after the compressed batch")
    if len(body) > max_body:
        raise InvalidPayload(f"batch decompresses to more than {max_body} bytes")
    return body


def decode(
    data: bytes, *, max_points: int = MAX_POINTS, max_body: int = MAX_BODY_BYTES
) -> tuple[uuid.UUID, list[Sample]]:
    """The batch id and samples of a batch; raises InvalidPayload on anything malformed."""
    batch_id = batch_id_of(data)
    r = _Reader(_inflate(data[HEADER_BYTES:], max_body))
    strings: list[str] = []
    for _ in range(r.count(MAX_STRINGS, "strings")):
        raw = r.take(r.count(4 * MAX_TEXT, "string length"))
        try:
            strings.append(raw.decode())
        except UnicodeDecodeError:
            raise InvalidPayload("a string is not valid UTF-8") from None
    checked_devices: set[int] = set()
    checked_keys: set[int] = set()

    def string(what: str) -> tuple[int, str]:
        i = r.uvarint()
        if i >= len(strings):
            raise InvalidPayload(f"{what}: string index {i} out of range")
        return i, strings[i]

    base = r.zvarint()
    _check_decoded_ts(base)
    out: list[Sample] = []
    for _ in range(r.count(MAX_STRINGS, "groups")):
        di, device_id = string("device")
        if di not in checked_devices:
            if not is_valid_device_id(device_id):
                raise InvalidPayload(f"device id {device_id[:64]!r} is not valid")
            checked_devices.add(di)
        ki, key = string("key")
        if ki not in checked_keys:
            if KEY_PATTERN.fullmatch(key) is None:
                raise InvalidPayload(f"key {key[:64]!r} is not valid")
            checked_keys.add(ki)
        kind = r.byte()
        if kind > TEXT:
            raise InvalidPayload(f"{device_id}/{key}: unknown value kind {kind}")
        n = r.count(max_points - len(out), "samples")
        if n == 0:
            raise InvalidPayload(f"{device_id}/{key}: empty group")
        stamps = _read_timestamps(r, base, n)
        values: list[Value]
        if kind == SCALED:
            k = r.byte()
            if k > MAX_SCALE:
                raise InvalidPayload(f"{device_id}/{key}: decimal scale {k} > {MAX_SCALE}")
            p = _POW10[k]
            m = 0
            values = []
            for _ in range(n):
                m += r.zvarint()
                if not -MAX_EXACT <= m <= MAX_EXACT:
                    raise InvalidPayload(f"{device_id}/{key}: scaled value out of range")
                values.append(m / p)
        elif kind == FLOAT:
            floats = [v for (v,) in _F64.iter_unpack(r.take(8 * n))]
            if not all(math.isfinite(v) for v in floats):
                raise InvalidPayload(f"{device_id}/{key}: values must be finite numbers")
            values = list(floats)
        elif kind == BOOL:
            bits = r.take((n + 7) // 8)
            values = [bool(bits[i >> 3] >> (i & 7) & 1) for i in range(n)]
        else:
            values = []
            for _ in range(n):
                _, text = string(f"{device_id}/{key}")
                if len(text) > MAX_TEXT:
                    raise InvalidPayload(f"{device_id}/{key}: text longer than {MAX_TEXT}")
                values.append(text)
        out.extend(map(Sample, [device_id] * n, [key] * n, stamps, values))
    if r.pos != len(r.data):
        raise InvalidPayload("unexpected bytes after the last group")
    return batch_id, out


def _check_decoded_ts(ts: int) -> None:
    if not 0 <= ts <= MAX_TS:
        raise InvalidPayload(f"timestamp {ts} out of range")


def _read_timestamps(r: _Reader, base: int, n: int) -> list[int]:
    stamps = []
    ts = base
    delta = 0
    for i in range(n):
        z = r.zvarint()
        if i < 2:
            delta = z if i == 1 else 0
            ts += z
        else:
            delta += z
            ts += delta
        if not 0 <= ts <= MAX_TS or abs(delta) > MAX_TS:
            raise InvalidPayload(f"timestamp {ts} out of range")
        stamps.append(ts)
    return stamps
