from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karkhana.assets.template import load_templates
from karkhana.core.errors import ConfigError, InvalidPayload
from karkhana.edge.modbus import (
    BUILTIN_DIR,
    CounterTracker,
    Register,
    decode_map,
    decode_register,
    load_map,
    load_maps,
)
from karkhana.edge.modbus.decode import encode_register
from karkhana.edge.modbus.registermap import Order, RegisterType

encode = encode_register


def test_encoding_scales_rounds_and_saturates() -> None:
    reg = Register("t", 0, "int16", scale=0.1, offset=-40.0)
    assert encode_register(reg, 23.5) == [635]  # (23.5 + 40) / 0.1
    assert decode_register(reg, encode_register(reg, -12.5)) == -12.5
    assert encode_register(Register("u", 0, "uint16"), -5.0) == [0]
    assert encode_register(Register("u", 0, "uint16"), 1e9) == [0xFFFF]
    assert encode_register(Register("f", 0, "float32"), 230.5) == [0x4366, 0x8000]


# -- decoding, by hand -------------------------------------------------------------------------


def test_float32_big_endian() -> None:
    reg = Register("v", 0, "float32")
    assert decode_register(reg, [0x4366, 0x8000]) == 230.5


def test_float32_little_word_order() -> None:
    reg = Register("v", 0, "float32", word_order="little")
    assert decode_register(reg, [0x8000, 0x4366]) == 230.5


def test_float32_little_byte_order() -> None:
    reg = Register("v", 0, "float32", byte_order="little")
    assert decode_register(reg, [0x6643, 0x0080]) == 230.5


def test_int32_little_word_order() -> None:
    reg = Register("n", 0, "int32", word_order="little")
    # 0x00012345 = 74565: low word first
    assert decode_register(reg, [0x2345, 0x0001]) == 74565
    # -2 = 0xFFFFFFFE
    assert decode_register(reg, [0xFFFE, 0xFFFF]) == -2


def test_uint32_big() -> None:
    reg = Register("n", 0, "uint32")
    assert decode_register(reg, [0xFFFF, 0xFFFF]) == 4294967295
    assert decode_register(reg, [0x0001, 0x0000]) == 65536


def test_int16_negative_and_uint16() -> None:
    assert decode_register(Register("t", 0, "int16"), [0xFFFF]) == -1
    assert decode_register(Register("t", 0, "int16"), [0x8000]) == -32768
    assert decode_register(Register("t", 0, "uint16"), [0xFFFF]) == 65535
    assert decode_register(Register("t", 0, "int16", byte_order="little"), [0x0080]) == -32768


def test_scale_and_offset() -> None:
    # 235 tenths of a degree with offset -40: 23.5 - 40
    reg = Register("temp_c", 0, "int16", scale=0.1, offset=-40.0)
    value = decode_register(reg, [235])
    assert value is not None and math.isclose(value, -16.5)
    watts = Register("power_kw", 0, "float32", scale=0.001)
    kw = decode_register(watts, [0x4366, 0x8000])
    assert kw is not None and math.isclose(kw, 0.2305)


@pytest.mark.parametrize("words", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000]])
def test_float32_nan_and_inf_are_none(words: list[int]) -> None:
    assert decode_register(Register("v", 0, "float32"), words) is None


@pytest.mark.parametrize(
    ("reg", "words"),
    [
        (Register("v", 0, "float32"), [0x4366]),
        (Register("v", 0, "float32"), [0x4366, 0, 0]),
        (Register("v", 0, "int16"), []),
        (Register("v", 0, "int16"), [1, 2]),
        (Register("v", 0, "int16"), [65536]),
        (Register("v", 0, "uint32"), [-1, 0]),
        (Register("v", 0, "uint16"), [1.5]),
        (Register("v", 0, "uint16"), [True]),
    ],
)
def test_bad_words_are_invalid_payload(reg: Register, words: list[int]) -> None:
    with pytest.raises(InvalidPayload):
        decode_register(reg, words)


def test_decode_map_skips_missing_and_nan() -> None:
    sdm = load_maps()["eastron_sdm120"]
    read = {0x0000: 0x4366, 0x0001: 0x8000}  # voltage 230.5
    read.update({0x000C: 0x7FC0, 0x000D: 0x0000})  # power: NaN
    read.update({0x0046: 0x4248, 0x0047: 0x0000})  # 50.0 Hz
    read[0x0006] = 0x4000  # current: only one of its two words
    assert decode_map(sdm, read) == {"voltage_l1_v": 230.5, "frequency_hz": 50.0}
    assert decode_map(sdm, read, function="holding") == {}
    assert decode_map(sdm, read, function="input") == {"voltage_l1_v": 230.5, "frequency_hz": 50.0}


def test_decode_map_sdm630_power_in_kw() -> None:
    sdm = load_maps()["eastron_sdm630"]
    reg = sdm.register("power_kw")
    read = dict(zip(reg.addresses, encode(reg, 12.5), strict=True))  # 12,500 W in the device
    assert decode_map(sdm, read) == {"power_kw": pytest.approx(12.5)}


# -- hypothesis ---------------------------------------------------------------------------------

registers = st.builds(
    Register,
    key=st.just("k"),
    address=st.just(0),
    type=st.sampled_from(["int16", "uint16", "int32", "uint32", "float32"]),
    word_order=st.sampled_from(["big", "little"]),
    byte_order=st.sampled_from(["big", "little"]),
    scale=st.floats(min_value=1e-6, max_value=1e6) | st.floats(max_value=-1e-6, min_value=-1e6),
    offset=st.floats(min_value=-1e6, max_value=1e6),
)


@given(reg=registers, words=st.lists(st.integers(min_value=-(2**20), max_value=2**20), max_size=4))
def test_any_words_decode_or_are_invalid(reg: Register, words: list[int]) -> None:
    try:
        value = decode_register(reg, words)
    except InvalidPayload:
        return
    assert value is None or math.isfinite(value)


@given(
    value=st.floats(width=32, allow_nan=False, allow_infinity=False),
    word_order=st.sampled_from(["big", "little"]),
    byte_order=st.sampled_from(["big", "little"]),
)
def test_float32_round_trip(value: float, word_order: Order, byte_order: Order) -> None:
    reg = Register("v", 0, "float32", word_order=word_order, byte_order=byte_order)
    assert decode_register(reg, encode(reg, value)) == value


@given(
    value=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    reg_type=st.sampled_from(["int32", "int16"]),
    word_order=st.sampled_from(["big", "little"]),
    byte_order=st.sampled_from(["big", "little"]),
)
def test_int_round_trip(
    value: int, reg_type: RegisterType, word_order: Order, byte_order: Order
) -> None:
    if reg_type == "int16":
        value = value >> 16
    reg = Register("n", 0, reg_type, word_order=word_order, byte_order=byte_order)
    assert decode_register(reg, encode(reg, value)) == value


# -- counters -----------------------------------------------------------------------------------


def test_counter_rises_are_added() -> None:
    tracker = CounterTracker()
    assert tracker.update("e", 100.0) == 100.0
    assert tracker.update("e", 105.0) == 105.0
    assert tracker.update("e", 105.0) == 105.0


def test_counter_uint32_rollover() -> None:
    tracker = CounterTracker()
    span = float(2**32)
    tracker.update("n", span - 10)
    # wrapped past the top: 10 to reach 2**32, then 5 more
    assert tracker.update("n", 5.0, span=span) == span + 5
    assert tracker.update("n", 7.0, span=span) == span + 7
    assert (tracker.rollovers, tracker.resets) == (1, 0)


def test_counter_reset_continues_from_new_value() -> None:
    tracker = CounterTracker()
    span = float(2**32)
    tracker.update("n", 1000.0, span=span)
    # a drop of less than half the span: the meter was reset
    assert tracker.update("n", 3.0, span=span) == 1000.0
    assert tracker.update("n", 10.0, span=span) == 1007.0
    assert (tracker.rollovers, tracker.resets) == (0, 1)


def test_counter_half_span_boundary() -> None:
    span = 100.0
    exactly_half = CounterTracker()
    exactly_half.update("n", 60.0, span=span)
    assert exactly_half.update("n", 10.0, span=span) == 60.0  # drop 50: a reset
    over_half = CounterTracker()
    over_half.update("n", 61.0, span=span)
    assert over_half.update("n", 10.0, span=span) == 110.0  # drop 51: a rollover


def test_counter_without_span_only_resets() -> None:
    tracker = CounterTracker()
    tracker.update("e", 4_000_000.0)
    assert tracker.update("e", 1.0) == 4_000_000.0
    assert tracker.resets == 1


def test_counters_are_per_key() -> None:
    tracker = CounterTracker()
    tracker.update("a", 10.0)
    tracker.update("b", 500.0)
    assert tracker.update("a", 12.0) == 12.0
    assert tracker.update("b", 400.0) == 500.0


def test_apply_uses_the_register_span() -> None:
    tracker = CounterTracker()
    reg = Register("count", 0, "uint32", scale=0.01, counter=True)
    assert reg.wrap_span == pytest.approx(2**32 * 0.01)
    assert Register("e", 0, "float32").wrap_span is None
    assert Register("c", 0, "uint16").wrap_span == 65536.0
    sdm = load_maps()["eastron_sdm630"]
    assert tracker.apply(sdm, {"energy_kwh": 50.0, "power_kw": 3.0}) == {
        "energy_kwh": 50.0,
        "power_kw": 3.0,
    }
    out = tracker.apply(sdm, {"energy_kwh": 2.0, "power_kw": 1.0})
    assert out == {"energy_kwh": 50.0, "power_kw": 1.0}


@given(st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=1, max_size=50))
def test_counter_total_never_goes_down(readings: list[int]) -> None:
    tracker = CounterTracker()
    totals = [tracker.update("n", float(r), span=float(2**32)) for r in readings]
    assert totals == sorted(totals)


# -- maps ---------------------------------------------------------------------------------------


def test_shipped_maps_load() -> None:
    maps = load_maps()
    assert set(maps) == {"eastron_sdm120", "eastron_sdm630"}
    assert {p.stem for p in BUILTIN_DIR.glob("*.toml")} == set(maps)
    sdm630 = maps["eastron_sdm630"]
    assert sdm630.register("frequency_hz").address == 0x0046
    assert sdm630.register("energy_kwh").address == 0x0156
    assert sdm630.register("energy_kwh").counter
    for reg in sdm630.registers:
        assert (reg.function, reg.type, reg.word_order) == ("input", "float32", "big")
    assert maps["eastron_sdm120"].register("power_factor").address == 0x001E


@pytest.mark.parametrize("map_id", ["eastron_sdm120", "eastron_sdm630"])
def test_shipped_map_keys_match_the_meter_template(map_id: str) -> None:
    template = load_templates()["energy_meter_3ph"]
    register_map = load_maps()[map_id]
    shared = set(register_map.keys)
    assert shared <= set(template.keys)
    assert {"power_kw", "energy_kwh", "power_factor", "frequency_hz", "voltage_l1_v"} <= shared
    for key in shared:
        assert register_map.register(key).unit == template.signal(key).unit
    assert register_map.register("energy_kwh").counter
    if map_id == "eastron_sdm630":
        assert shared == set(template.keys)


GOOD = """
id = "m"
name = "Meter"

[[registers]]
key = "a"
address = 0
type = "uint16"
"""


def write(tmp_path: Path, text: str, name: str = "m") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_load_map_defaults_and_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
id = "m"
name = "Meter"
description = "x"

[defaults]
function = "input"
type = "int32"
word_order = "little"

[[registers]]
key = "a"
address = 0x10
scale = 0.5
offset = 2
unit = "bar"
counter = true

[[registers]]
key = "b"
address = 0x10
function = "holding"
type = "int16"
byte_order = "little"
""",
    )
    m = load_map(path)
    assert m.registers == (
        Register("a", 16, "int32", "input", "little", "big", 0.5, 2.0, "bar", True),
        Register("b", 16, "int16", "holding", "little", "little"),
    )
    assert load_map(write(tmp_path, GOOD)).registers == (Register("a", 0, "uint16"),)


def test_load_maps_directory_replaces_by_id(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace('"m"', '"eastron_sdm120"'), "eastron_sdm120")
    maps = load_maps(tmp_path)
    assert maps["eastron_sdm120"].registers == (Register("a", 0, "uint16"),)
    assert "eastron_sdm630" in maps
    with pytest.raises(ConfigError, match="register map directory not found"):
        load_maps(tmp_path / "nope")


def _reg(extra: str) -> str:
    return 'id = "m"\nname = "Meter"\n' + extra


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\n[[registers]]\nkey="a"\naddress=0\ntype="int16"', r"id: missing"),
        ('id = "M"\nname = "x"', r"id: 'M' must be lower-case"),
        ('id = "other"\nname = "x"', r"id: 'other' must match the file name"),
        ('id = "m"\n[[registers]]\nkey="a"\naddress=0\ntype="int16"', r"name: missing"),
        (_reg(""), r"registers: missing"),
        (_reg("color = 1"), r"color: unknown field"),
        (_reg("defaults = 1"), r"defaults: expected a table"),
        (_reg("[defaults]\nscale = 2"), r"defaults.scale: unknown field"),
        (_reg("[[registers]]\naddress=0\ntype='int16'"), r"registers\[0\].key: missing"),
        (_reg("[[registers]]\nkey='a b'\naddress=0\ntype='int16'"), r"registers\[0\].key: 'a b'"),
        (_reg("[[registers]]\nkey='a'\ntype='int16'"), r"registers\[0\].address: missing"),
        (_reg("[[registers]]\nkey='a'\naddress='0'\ntype='int16'"), r"address: expected an int"),
        (_reg("[[registers]]\nkey='a'\naddress=-1\ntype='int16'"), r"address: -1 is outside"),
        (_reg("[[registers]]\nkey='a'\naddress=65535\ntype='int32'"), r"address: 65535 is out"),
        (_reg("[[registers]]\nkey='a'\naddress=0"), r"registers\[0\].type: missing"),
        (_reg("[[registers]]\nkey='a'\naddress=0\ntype='float64'"), r"unknown type 'float64'"),
        (
            _reg("[defaults]\ntype='int8'\n[[registers]]\nkey='a'\naddress=0"),
            r"registers\[0\].type: unknown type 'int8'",
        ),
        (
            _reg("[[registers]]\nkey='a'\naddress=0\ntype='int16'\nfunction='coil'"),
            r"function: unknown function 'coil'",
        ),
        (
            _reg("[[registers]]\nkey='a'\naddress=0\ntype='int32'\nword_order='middle'"),
            r"word_order: unknown word_order 'middle'",
        ),
        (
            _reg("[[registers]]\nkey='a'\naddress=0\ntype='int16'\nbyte_order=1"),
            r"byte_order: unknown byte_order 1",
        ),
        (
            _reg("[[registers]]\nkey='a'\naddress=0\ntype='int16'\nscale=0"),
            r"registers\[0\].scale: must not be 0",
        ),
        (
            _reg("[[registers]]\nkey='a'\naddress=0\ntype='int16'\nscale='x'"),
            r"scale: expected a number",
        ),
        (
            _reg("[[registers]]\nkey='a'\naddress=0\ntype='int16'\noffset=nan"),
            r"offset: must be a finite number",
        ),
        (
            _reg("[[registers]]\nkey='a'\naddress=0\ntype='int16'\nunit=1"),
            r"unit: expected text",
        ),
        (
            _reg("[[registers]]\nkey='a'\naddress=0\ntype='int16'\ncounter='yes'"),
            r"counter: expected true or false",
        ),
        (
            _reg("[[registers]]\nkey='a'\naddress=0\ntype='int16'\nslave=1"),
            r"registers\[0\].slave: unknown field",
        ),
        (_reg("registers = [1]"), r"registers\[0\]: expected a table"),
        (
            _reg(
                "[[registers]]\nkey='a'\naddress=0\ntype='int16'\n"
                "[[registers]]\nkey='a'\naddress=1\ntype='int16'"
            ),
            r"registers\[1\].key: duplicate key 'a'",
        ),
        (
            _reg(
                "[[registers]]\nkey='a'\naddress=0\ntype='float32'\n"
                "[[registers]]\nkey='b'\naddress=1\ntype='int16'"
            ),
            r"registers\[1\].address: 'b' \(holding 0x0001, 1 words\) overlaps 'a' at 0x0001",
        ),
        ("id = ", r"not valid TOML"),
    ],
)
def test_validation_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_map(path)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="register map file not found"):
        load_map(tmp_path / "none.toml")
