"""Loaders for public maintenance data sets and for plain CSV run histories (path arguments only).

- NASA C-MAPSS turbofan run-to-failure histories (``train_FD00x.txt[.gz]`` and friends).
- AI4I 2020 predictive maintenance table (``ai4i2020.csv``).
- CSV run histories: one row per cycle with ``unit`` and ``cycle`` columns, then signals.

File and format errors are translated here into ``NotFound`` and ``InvalidPayload``.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from karkhana.core.errors import InvalidPayload, NotFound
from karkhana.maintenance.failure import Derived
from karkhana.maintenance.rul import Run

CMAPSS_SUBSETS = ("FD001", "FD002", "FD003", "FD004")
CMAPSS_SETTINGS = ("setting_1", "setting_2", "setting_3")
CMAPSS_SENSORS = tuple(f"sensor_{i}" for i in range(1, 22))
CMAPSS_REGIMES = {"FD001": 1, "FD002": 6, "FD003": 1, "FD004": 6}
"""Operating conditions per subset, as the data set's documentation states."""

AI4I_FEATURES = (
    "Air temperature [K]",
    "Process temperature [K]",
    "Rotational speed [rpm]",
    "Torque [Nm]",
    "Tool wear [min]",
)
AI4I_TYPE = "Type"
AI4I_LABEL = "Machine failure"
AI4I_MODES = ("TWF", "HDF", "PWF", "OSF", "RNF")
"""Failure-mode flags: never inputs (they give the label away)."""
AI4I_TYPES = {"L": 0.0, "M": 1.0, "H": 2.0}
AI4I_DERIVED = (
    Derived("power [W]", "mul", "Torque [Nm]", "Rotational speed [rpm]", 2 * np.pi / 60),
    Derived("temperature difference [K]", "sub", "Process temperature [K]", "Air temperature [K]"),
    Derived("strain [Nm min]", "mul", "Tool wear [min]", "Torque [Nm]"),
)
"""Physical quantities behind the failure modes: power, heat dissipation, overstrain."""


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"data file {path} does not exist") from None
    except OSError as exc:
        raise NotFound(f"cannot read {path}: {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InvalidPayload(f"{path} is not a valid gzip file: {exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidPayload(f"{path} is not UTF-8 text") from None


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.txt.gz", f"{stem}.txt"):
        if (folder / name).exists():
            return folder / name
    raise NotFound(f"{stem}.txt(.gz) not found in {folder}")


def _numbers(path: Path, columns: int | None = None) -> NDArray[np.float64]:
    text = _read_text(path)
    try:
        data = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InvalidPayload(f"{path}: {exc}") from None
    if columns is not None and data.shape[1] != columns:
        raise InvalidPayload(f"{path}: expected {columns} columns, found {data.shape[1]}")
    return data


def _runs(rows: NDArray[np.float64], n_settings: int, prefix: str) -> list[Run]:
    """Split rows (unit, cycle, settings..., signals...) into runs ordered by cycle."""
    runs = []
    for unit in np.unique(rows[:, 0]):
        part = rows[rows[:, 0] == unit]
        part = part[np.argsort(part[:, 1], kind="stable")]
        runs.append(
            Run(
                unit=f"{prefix}{int(unit)}",
                signals=np.ascontiguousarray(part[:, 2 + n_settings :]),
                settings=np.ascontiguousarray(part[:, 2 : 2 + n_settings]) if n_settings else None,
            )
        )
    return runs


@dataclass(frozen=True, slots=True)
class CmapssSubset:
    name: str
    train: list[Run]
    test: list[Run]
    test_rul: NDArray[np.float64]
    """True remaining life at the last cycle of each test run, in the order of ``test``."""
    regimes: int
    signal_names: tuple[str, ...] = CMAPSS_SENSORS
    settings_names: tuple[str, ...] = CMAPSS_SETTINGS


def load_cmapss_file(path: Path) -> list[Run]:
    """One C-MAPSS file (train or test) as runs."""
    return _runs(_numbers(path, 26), 3, "")


def load_cmapss(folder: Path, subset: str) -> CmapssSubset:
    """The train and test runs and true test RUL of one C-MAPSS subset (FD001 to FD004)."""
    if subset not in CMAPSS_SUBSETS:
        raise InvalidPayload(f"unknown C-MAPSS subset {subset!r}; one of {CMAPSS_SUBSETS}")
    train = load_cmapss_file(_find(folder, f"train_{subset}"))
    test = load_cmapss_file(_find(folder, f"test_{subset}"))
    rul = _numbers(_find(folder, f"RUL_{subset}"), 1)[:, 0]
    if rul.shape[0] != len(test):
        raise InvalidPayload(f"RUL_{subset}: {rul.shape[0]} lines for {len(test)} test units")
    # the RUL file is in unit order 1..n, as np.unique sorted the test units
    return CmapssSubset(subset, train, test, rul, CMAPSS_REGIMES[subset])


@dataclass(frozen=True, slots=True)
class Table:
    """A numeric table: features (rows x columns, NaN where empty) and an optional label."""

    columns: tuple[str, ...]
    x: NDArray[np.float64]
    y: NDArray[np.float64] | None


def _float(value: str, where: str) -> float:
    if value.strip() == "":
        return float("nan")
    try:
        return float(value)
    except ValueError:
        raise InvalidPayload(f"{where}: {value!r} is not a number") from None


def read_csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    reader = csv.reader(io.StringIO(_read_text(path)))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidPayload(f"{path} is empty") from None
    rows = [r for r in reader if r]
    for i, r in enumerate(rows, start=2):
        if len(r) != len(header):
            raise InvalidPayload(f"{path} line {i}: {len(r)} fields, header has {len(header)}")
    return [h.strip() for h in header], rows


def load_csv_table(
    path: Path,
    *,
    label: str | None,
    exclude: Sequence[str] = (),
    categories: dict[str, dict[str, float]] | None = None,
) -> Table:
    """A CSV file as a numeric table; ``categories`` maps text columns to numeric codes."""
    header, rows = read_csv_rows(path)
    categories = categories or {}
    for name in (label, *exclude, *categories):
        if name is not None and name not in header:
            raise InvalidPayload(f"{path}: no column {name!r} (columns: {', '.join(header)})")
    features = [h for h in header if h != label and h not in exclude]
    x = np.empty((len(rows), len(features)))
    y = np.empty(len(rows)) if label is not None else None
    index = {h: i for i, h in enumerate(header)}
    for r, row in enumerate(rows):
        where = f"{path} line {r + 2}"
        for c, name in enumerate(features):
            value = row[index[name]]
            if name in categories:
                code = categories[name].get(value.strip())
                if code is None:
                    raise InvalidPayload(f"{where}: unknown {name} {value!r}")
                x[r, c] = code
            else:
                x[r, c] = _float(value, f"{where} column {name!r}")
        if y is not None and label is not None:
            y[r] = _float(row[index[label]], f"{where} column {label!r}")
    if y is not None and np.isnan(y).any():
        raise InvalidPayload(f"{path}: empty {label!r} values")
    return Table(tuple(features), x, y)


def load_ai4i(path: Path) -> Table:
    """AI4I 2020: Type (L/M/H as 0/1/2) and the five sensor columns; label Machine failure.

    The identifiers and the failure-mode flags are left out of the inputs.
    """
    table = load_csv_table(
        path,
        label=AI4I_LABEL,
        exclude=("UDI", "Product ID", *AI4I_MODES),
        categories={AI4I_TYPE: AI4I_TYPES},
    )
    expected = (AI4I_TYPE, *AI4I_FEATURES)
    if table.columns != expected:
        raise InvalidPayload(f"{path}: columns {table.columns}, expected {expected}")
    return table


def load_csv_runs(path: Path, *, settings: Sequence[str] = ()) -> tuple[list[Run], list[str]]:
    """Run histories from CSV: ``unit``, ``cycle``, optional settings columns, then signals.

    Returns the runs and the signal names. Empty cells are missing values (NaN).
    """
    header, rows = read_csv_rows(path)
    for name in ("unit", "cycle", *settings):
        if name not in header:
            raise InvalidPayload(f"{path}: no column {name!r}")
    signals = [h for h in header if h not in ("unit", "cycle", *settings)]
    if not signals:
        raise InvalidPayload(f"{path}: no signal columns")
    index = {h: i for i, h in enumerate(header)}
    units: dict[str, list[list[float]]] = {}
    for r, row in enumerate(rows):
        where = f"{path} line {r + 2}"
        cycle = _float(row[index["cycle"]], f"{where} column 'cycle'")
        if np.isnan(cycle):
            raise InvalidPayload(f"{where}: empty cycle")
        values = [cycle]
        values += [_float(row[index[s]], f"{where} column {s!r}") for s in settings]
        values += [_float(row[index[s]], f"{where} column {s!r}") for s in signals]
        units.setdefault(row[index["unit"]].strip(), []).append(values)
    runs = []
    for unit, table in units.items():
        a = np.asarray(table, dtype=np.float64)
        a = a[np.argsort(a[:, 0], kind="stable")]
        k = len(settings)
        runs.append(
            Run(
                unit=unit,
                signals=np.ascontiguousarray(a[:, 1 + k :]),
                settings=np.ascontiguousarray(a[:, 1 : 1 + k]) if k else None,
            )
        )
    return runs, signals


def synthetic_runs(
    n_runs: int,
    *,
    seed: int,
    regimes: int = 1,
    min_life: int = 80,
    max_life: int = 200,
    noise: float = 0.05,
) -> list[Run]:
    """Run-to-failure histories with a known law, for tests and demonstrations.

    Damage grows as (t / life)^2; signals 0-2 rise, fall and curve with it, signal 3 is noise,
    signal 4 is flat. With ``regimes`` > 1 each cycle runs at one of that many operating
    conditions (one setting column) that shifts every signal's level.
    """
    rng = np.random.default_rng(seed)
    runs = []
    gains = np.array([1.0, -0.8, 0.6, 0.0, 0.0])
    for i in range(n_runs):
        life = int(rng.integers(min_life, max_life + 1))
        t = np.arange(1, life + 1, dtype=np.float64)
        damage = (t / life) ** 2
        shape = np.column_stack([damage, damage, np.sqrt(damage), damage, damage])
        signals = 10.0 + gains * shape + rng.normal(0.0, noise, (life, 5))
        signals[:, 4] = 3.0
        settings = None
        if regimes > 1:
            regime = rng.integers(0, regimes, life).astype(np.float64)
            signals[:, :4] += 2.0 * regime[:, None] * np.array([1.0, 0.5, -1.0, 0.7])
            settings = regime[:, None] * 10.0 + rng.normal(0.0, 0.01, (life, 1))
        runs.append(Run(f"u{i}", signals, settings))
    return runs


def synthetic_failures(n: int, *, seed: int) -> Table:
    """Machine readings with failures from physical limits (power band, overstrain), 1% noise.

    Columns: type (0/1/2), speed [rpm], torque [Nm], wear [min], temperature [K].
    """
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, n).astype(np.float64)
    speed = rng.normal(1500, 150, n)
    torque = np.clip(rng.normal(40, 10, n), 3, None)
    wear = rng.uniform(0, 250, n)
    temp = rng.normal(300, 2, n)
    power = torque * speed * 2 * np.pi / 60
    limit = 9000.0 + 1000.0 * kind
    failed = (power < 3500) | (power > 8500) | (wear * torque > limit)
    flip = rng.random(n) < 0.01
    y = (failed ^ flip).astype(np.float64)
    x = np.column_stack([kind, speed, torque, wear, temp])
    return Table(("type", "speed", "torque", "wear", "temperature"), x, y)
