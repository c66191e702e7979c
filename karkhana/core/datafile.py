"""Data files (machine templates, register maps): TOML read once, checked field by field.

Every mistake names the file and the field, so that someone editing a template on the factory's
box can fix it without reading code.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from karkhana.core.errors import ConfigError

T = TypeVar("T")

ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def load_all(
    builtin: Path,
    directory: Path | None,
    load: Callable[[Path], T],
    id_of: Callable[[T], str],
    what: str,
) -> dict[str, T]:
    """The shipped files, plus those in ``directory`` (which replace shipped ones by id).

    Ids are unique within a folder because each must match its file name.
    """
    found = {id_of(item): item for item in map(load, sorted(builtin.glob("*.toml")))}
    if directory is not None:
        if not directory.is_dir():
            raise ConfigError(f"{directory}: {what} directory not found")
        found.update({id_of(item): item for item in map(load, sorted(directory.glob("*.toml")))})
    return found


class FieldReader:
    """Checked access to the fields of one parsed file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {field}: {message}")

    def file_id(self, doc: Mapping[str, Any]) -> str:
        """The ``id`` field: lower-case, and the same as the file name."""
        value = self.text(doc, "id", "id")
        if not ID.fullmatch(value):
            raise self.fail("id", f"{value!r} must be lower-case letters, digits and _")
        if value != self.path.stem:
            raise self.fail("id", f"{value!r} must match the file name {self.path.name!r}")
        return value

    def no_unknown(self, item: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for name in item:
            if name not in allowed:
                field = f"{where}.{name}" if where else name
                raise self.fail(
                    field, f"unknown field (expected one of {', '.join(sorted(allowed))})"
                )

    def text(self, item: Mapping[str, Any], name: str, field: str) -> str:
        value = self.optional_text(item, name, field)
        if value is None or not value.strip():
            raise self.fail(field, "missing")
        return value

    def optional_text(self, item: Mapping[str, Any], name: str, field: str) -> str | None:
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            raise self.fail(field, f"expected text, got {type(value).__name__}")
        return value

    def number(self, item: Mapping[str, Any], name: str, field: str) -> float | None:
        """A finite number, or None when the field is absent."""
        value = item.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(field, f"expected a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise self.fail(field, f"must be a finite number, got {value}")
        return float(value)
