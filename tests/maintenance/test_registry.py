"""Model registry: versions, manifests, refusing damaged files; the ``maintenance`` command."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from karkhana.cli import main
from karkhana.core.errors import InvalidPayload, NotFound
from karkhana.maintenance.datasets import synthetic_failures, synthetic_runs
from karkhana.maintenance.features import WindowSpec
from karkhana.maintenance.registry import CorruptModel, ModelRegistry
from karkhana.maintenance.rul import RulModel, TreeParams, truncate


@pytest.fixture(scope="module")
def model() -> RulModel:
    return RulModel(window=WindowSpec(windows=(5,)), trees=TreeParams(max_iter=10), seed=3).fit(
        synthetic_runs(6, seed=0)
    )


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry.of(tmp_path)


def test_versions_count_up_per_template(registry: ModelRegistry, model: RulModel) -> None:
    assert registry.versions("loom") == []
    with pytest.raises(NotFound):
        registry.latest("loom")
    first = registry.save("loom", model, metrics={"rmse": 1.5}, data={"rows": 10})
    second = registry.save("loom", model, metrics={"rmse": 1.2}, data={"rows": 12})
    other = registry.save("press", model, metrics={}, data={})
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert registry.versions("loom") == [1, 2]
    assert registry.latest("loom") == 2
    assert registry.templates() == ["loom", "press"]
    manifest, _ = registry.load("loom")
    assert manifest.version == 2 and manifest.metrics == {"rmse": 1.2}
    assert registry.load("loom", 1)[0].data == {"rows": 10}
    assert (registry.root / "loom" / "1" / "model.pkl").is_file()
    assert not [p for p in (registry.root / "loom").iterdir() if p.name.startswith(".")]


def test_manifest_fields(registry: ModelRegistry, model: RulModel) -> None:
    registry.save(
        "compressor",
        model,
        metrics={"holdout_rmse": 9.5},
        data={"source": "runs.csv", "units": 6, "rows": 700},
        signals=["s1", "s2"],
        settings=["load"],
    )
    raw = json.loads((registry.root / "compressor" / "1" / "manifest.json").read_text())
    assert raw["template"] == "compressor" and raw["version"] == 1
    assert raw["kind"] == "rul"
    assert raw["model_class"] == "karkhana.maintenance.rul.RulModel"
    assert raw["metrics"] == {"holdout_rmse": 9.5}
    assert raw["data"]["units"] == 6
    assert raw["signals"] == ["s1", "s2"] and raw["settings"] == ["load"]
    assert raw["params"]["seed"] == 3 and raw["params"]["cap"] == 125.0
    assert set(raw["libraries"]) >= {"karkhana", "numpy", "scikit-learn", "python"}
    assert len(raw["sha256"]) == 64 and raw["size_bytes"] > 0
    assert raw["created_at"].endswith("+00:00")


def test_changed_model_file_is_refused(registry: ModelRegistry, model: RulModel) -> None:
    registry.save("loom", model, metrics={}, data={})
    path = registry.root / "loom" / "1" / "model.pkl"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptModel, match="does not match its manifest"):
        registry.load("loom")


def test_missing_model_file_is_refused(registry: ModelRegistry, model: RulModel) -> None:
    registry.save("loom", model, metrics={}, data={})
    (registry.root / "loom" / "1" / "model.pkl").unlink()
    with pytest.raises(CorruptModel, match="is missing"):
        registry.load("loom")


def test_truncated_file_with_matching_digest_is_refused(
    registry: ModelRegistry, model: RulModel
) -> None:
    manifest = registry.save("loom", model, metrics={}, data={})
    _replace_model(registry, manifest.version, pickle.dumps(model)[:-50])
    with pytest.raises(CorruptModel, match="cannot be loaded"):
        registry.load("loom")


def test_foreign_pickle_is_refused_even_with_matching_digest(
    registry: ModelRegistry, model: RulModel
) -> None:
    registry.save("loom", model, metrics={}, data={})
    evil = pickle.dumps(Path("/etc/passwd"))
    _replace_model(registry, 1, evil)
    with pytest.raises(CorruptModel, match="not allowed"):
        registry.load("loom")


def _replace_model(registry: ModelRegistry, version: int, blob: bytes) -> None:
    import hashlib

    folder = registry.root / "loom" / str(version)
    (folder / "model.pkl").write_bytes(blob)
    raw = json.loads((folder / "manifest.json").read_text())
    raw["sha256"] = hashlib.sha256(blob).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(raw))


def test_damaged_manifest_and_unknown_versions(registry: ModelRegistry, model: RulModel) -> None:
    registry.save("loom", model, metrics={}, data={})
    with pytest.raises(NotFound, match="version 7"):
        registry.load("loom", 7)
    (registry.root / "loom" / "1" / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptModel, match="unreadable manifest"):
        registry.load("loom")
    (registry.root / "loom" / "1" / "manifest.json").write_text('{"format": 99}')
    with pytest.raises(CorruptModel, match="format"):
        registry.load("loom")


@pytest.mark.parametrize("name", ["../etc", "Loom", "", "a/b", "x" * 65])
def test_unsafe_template_names_are_refused(
    registry: ModelRegistry, model: RulModel, name: str
) -> None:
    with pytest.raises(InvalidPayload):
        registry.save(name, model, metrics={}, data={})


def _write_runs(path: Path, runs: list, *, with_rul_cut: bool = False) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unit", "cycle", "a", "b", "c", "d", "e"])
        for r in runs:
            for i, row in enumerate(r.signals, start=1):
                w.writerow([r.unit, i, *(f"{v:.5f}" for v in row)])


def test_cli_trains_scores_and_lists_rul_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_runs(tmp_path / "train.csv", synthetic_runs(12, seed=1, max_life=120))
    cut, _ = truncate(synthetic_runs(4, seed=2, max_life=120), seed=3)
    _write_runs(tmp_path / "live.csv", cut)
    data = ["--data-dir", str(tmp_path / "data")]
    args = ["maintenance", "train", "rul", "--template", "loom", *data]
    assert main([*args, "--data", str(tmp_path / "train.csv"), "--cap", "100"]) == 0
    assert "stored loom version 1" in capsys.readouterr().out
    manifest = ModelRegistry.of(tmp_path / "data").manifest("loom")
    assert manifest.data["units"] == 12 and manifest.signals == ["a", "b", "c", "d", "e"]
    assert {"holdout_rmse", "holdout_phm08_score", "fit_seconds"} <= set(manifest.metrics)

    out = tmp_path / "scores.csv"
    score = ["maintenance", "score", "--template", "loom", *data]
    assert main([*score, "--data", str(tmp_path / "live.csv"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["unit"] for r in rows] == [r.unit for r in cut]
    for r in rows:
        assert 0 <= float(r["lower"]) <= float(r["rul"]) <= float(r["upper"]) <= 100

    assert main(["maintenance", "models", *data]) == 0
    assert "loom v1 rul" in capsys.readouterr().out


def test_cli_failure_model_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = synthetic_failures(400, seed=1)
    assert table.y is not None
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*table.columns, "failed"])
        for row, y in zip(table.x, table.y, strict=True):
            w.writerow([*(f"{v:.4f}" for v in row), int(y)])
    data = ["--data-dir", str(tmp_path / "data")]
    train = ["maintenance", "train", "failure", "--template", "cnc", *data, "--data", str(path)]
    assert main([*train, "--label", "failed"]) == 0
    assert "stored cnc version 1" in capsys.readouterr().out
    assert main(["maintenance", "score", "--template", "cnc", *data, "--data", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "row,failure_probability,failure" and len(lines) == 401
    probabilities = np.array([float(line.split(",")[1]) for line in lines[1:]])
    assert ((probabilities >= 0) & (probabilities <= 1)).all()

    assert main(train) == 2  # no --label
    assert "--label" in capsys.readouterr().err
    assert main(["maintenance", "score", "--template", "nope", *data, "--data", str(path)]) == 2
    assert "no trained model" in capsys.readouterr().err


def test_cli_trains_on_the_ai4i_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = synthetic_failures(300, seed=2)
    assert table.y is not None
    header = (
        "UDI,Product ID,Type,Air temperature [K],Process temperature [K],Rotational speed [rpm],"
        "Torque [Nm],Tool wear [min],Machine failure,TWF,HDF,PWF,OSF,RNF"
    )
    lines = [header]
    for i, ((kind, speed, torque, wear, temp), y) in enumerate(zip(table.x, table.y, strict=True)):
        code = "LMH"[int(kind)]
        lines.append(
            f"{i + 1},{code}{i},{code},{temp:.1f},{temp + 10:.1f},{speed:.0f},{torque:.1f},"
            f"{wear:.0f},{int(y)},0,0,0,0,0"
        )
    path = tmp_path / "ai4i.csv"
    path.write_text("\n".join(lines) + "\n")
    data = ["--data-dir", str(tmp_path / "data"), "--data", str(path), "--format", "ai4i"]
    args = ["maintenance", "train", "failure", "--template", "cnc", "--holdout", "0", *data]
    assert main(args) == 0
    assert "stored cnc version 1" in capsys.readouterr().out
    manifest = ModelRegistry.of(tmp_path / "data").manifest("cnc")
    assert manifest.data["failures"] == int(table.y.sum())
    assert "TWF" not in manifest.signals and "Machine failure" not in manifest.signals
    assert [d["name"] for d in manifest.params["derived"]] == [
        "power [W]",
        "temperature difference [K]",
        "strain [Nm min]",
    ]
    assert main(["maintenance", "score", "--template", "cnc", *data]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 301
