"""Versioned store of trained models, one folder per machine template.

Layout: ``<data_dir>/models/<template>/<version>/`` holds ``manifest.json`` (what was trained,
on what data, how well it did, with which library versions) and ``model.pkl``. Versions count up
from 1 and are never overwritten; a version appears whole or not at all (written to a temporary
folder, then renamed).

Model files are pickles, so they are only read from this folder, checked against the SHA-256 in
the manifest first, and unpickled with an allow-list of the modules a model is made of.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import platform
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from karkhana import __version__
from karkhana.core.errors import InvalidPayload, KarkhanaError, NotFound

MANIFEST = "manifest.json"
MODEL_FILE = "model.pkl"
FORMAT = 1
_TEMPLATE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_SAFE_MODULES = ("numpy", "scipy", "sklearn", "karkhana.maintenance")
_SAFE_BUILTINS = frozenset(
    {"slice", "range", "complex", "set", "frozenset", "bytearray", "dict", "list", "tuple"}
)


_SAFE_NAMES = frozenset(
    {
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
        ("functools", "partial"),
    }
)


class CorruptModel(KarkhanaError):
    """A stored model or manifest that cannot be trusted (changed, truncated, unreadable)."""

    reason = "model_corrupt"


class SupervisedModel(Protocol):
    kind: str

    def params(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Manifest:
    template: str
    version: int
    kind: str
    model_class: str
    created_at: str
    sha256: str
    size_bytes: int
    metrics: dict[str, float]
    data: dict[str, Any]
    """What the model learnt from: source, rows, units, first and last cycle or time."""
    params: dict[str, Any]
    signals: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    libraries: dict[str, str] = field(default_factory=dict)
    file: str = MODEL_FILE
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path) -> Manifest:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            if raw.get("format") != FORMAT:
                raise CorruptModel(f"{where}: unknown manifest format {raw.get('format')!r}")
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise CorruptModel(f"{where}: unreadable manifest ({exc})") from None


def _libraries() -> dict[str, str]:
    import numpy
    import sklearn

    return {
        "karkhana": __version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module == "builtins" and name in _SAFE_BUILTINS) or any(
            module == m or module.startswith(m + ".") for m in _SAFE_MODULES
        ):
            return super().find_class(module, name)
        if (module, name) in _SAFE_NAMES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a model file")


def check_template(template: str) -> str:
    if not _TEMPLATE.match(template):
        raise InvalidPayload(
            f"template {template!r}: use lower-case letters, digits, '_', '-' or '.' (max 64)"
        )
    return template


class ModelRegistry:
    """Models per machine template under ``root`` (normally ``<data_dir>/models``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of(cls, data_dir: Path) -> ModelRegistry:
        return cls(data_dir / "models")

    def templates(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _TEMPLATE.match(p.name))

    def versions(self, template: str) -> list[int]:
        folder = self.root / check_template(template)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def latest(self, template: str) -> int:
        versions = self.versions(template)
        if not versions:
            raise NotFound(f"no trained model for template {template!r} in {self.root}")
        return versions[-1]

    def save(
        self,
        template: str,
        model: SupervisedModel,
        *,
        metrics: dict[str, float],
        data: dict[str, Any],
        signals: list[str] | None = None,
        settings: list[str] | None = None,
    ) -> Manifest:
        """Store ``model`` as the next version of ``template``; returns its manifest."""
        folder = self.root / check_template(template)
        folder.mkdir(parents=True, exist_ok=True)
        blob = pickle.dumps(model, protocol=5)
        digest = hashlib.sha256(blob).hexdigest()
        for _ in range(100):
            version = (self.versions(template) or [0])[-1] + 1
            manifest = Manifest(
                template=template,
                version=version,
                kind=model.kind,
                model_class=f"{type(model).__module__}.{type(model).__qualname__}",
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                sha256=digest,
                size_bytes=len(blob),
                metrics={k: float(v) for k, v in metrics.items()},
                data=data,
                params=model.params(),
                signals=list(signals or []),
                settings=list(settings or []),
                libraries=_libraries(),
            )
            staging = folder / f".staging-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                _write(staging / MODEL_FILE, blob)
                _write(staging / MANIFEST, manifest.to_json().encode())
                os.rename(staging, folder / str(version))
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                if (folder / str(version)).exists():
                    continue  # another writer took this version number: take the next
                raise
            return manifest
        raise KarkhanaError(f"could not allocate a version for {template!r}")

    def manifest(self, template: str, version: int | None = None) -> Manifest:
        version = self.latest(template) if version is None else version
        path = self.root / check_template(template) / str(version) / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"model {template} version {version} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptModel(f"{path}: cannot read the manifest ({exc})") from None
        manifest = Manifest.from_json(text, path)
        if manifest.template != template or manifest.version != version:
            raise CorruptModel(f"{path} describes {manifest.template} v{manifest.version}")
        return manifest

    def load(self, template: str, version: int | None = None) -> tuple[Manifest, Any]:
        """The manifest and the model; refuses a missing, changed or unreadable model file."""
        manifest = self.manifest(template, version)
        path = self.root / template / str(manifest.version) / manifest.file
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise CorruptModel(
                f"model file {path} is missing; train again or remove version {manifest.version}"
            ) from None
        except OSError as exc:
            raise CorruptModel(f"cannot read the model file {path}: {exc.strerror}") from None
        if hashlib.sha256(blob).hexdigest() != manifest.sha256:
            raise CorruptModel(
                f"model file {path} does not match its manifest (changed or damaged); not loaded"
            )
        try:
            model = _Unpickler(io.BytesIO(blob)).load()
        except (
            pickle.UnpicklingError,
            EOFError,
            AttributeError,
            ImportError,
            IndexError,
            KeyError,
            TypeError,
            ValueError,
        ) as exc:
            raise CorruptModel(f"model file {path} cannot be loaded: {exc}") from None
        name = f"{type(model).__module__}.{type(model).__qualname__}"
        if name != manifest.model_class:
            raise CorruptModel(f"{path} holds a {name}, the manifest says {manifest.model_class}")
        return manifest, model


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
