"""``karkhana maintenance``: train, score and list remaining-life and failure models.

Training data comes from files (C-MAPSS text files, the AI4I table, or CSV run histories /
tables); models go to the registry under ``<data_dir>/models/<template>/<version>/``.
The heavy imports (numpy, scikit-learn) wait until a command needs them.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from karkhana.core import config
from karkhana.core.errors import ConfigError, InvalidPayload

if TYPE_CHECKING:
    from karkhana.assets.template import MachineTemplate
    from karkhana.core.config import Settings
    from karkhana.maintenance.datasets import Table
    from karkhana.maintenance.registry import Manifest, ModelRegistry
    from karkhana.maintenance.rul import Run


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, help="data file (.txt, .txt.gz or .csv)")
    p.add_argument(
        "--format",
        choices=["csv", "cmapss", "ai4i", "simulated"],
        default="csv",
        help="csv: columns unit, cycle, signals (rul) or a table with --label (failure); "
        "cmapss: NASA C-MAPSS text file; ai4i: the AI4I 2020 table; simulated (rul, "
        "power_loom): run-to-failure lives of the simulator's looms, hourly cycles",
    )
    p.add_argument(
        "--settings",
        type=_list,
        default=[],
        metavar="COL,...",
        help="csv run histories: operating-setting columns (not signals)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="maintenance_command", required=True)
    t = sub.add_parser("train", help="train a model and store it as the template's next version")
    t.add_argument("kind", choices=["rul", "failure"], help="remaining life or failure")
    t.add_argument("--template", required=True, help="machine template the model is for")
    _data_arguments(t)
    t.add_argument("--label", default=None, help="failure, csv: the 0/1 label column")
    t.add_argument(
        "--exclude", type=_list, default=[], metavar="COL,...", help="failure, csv: not inputs"
    )
    t.add_argument(
        "--cap",
        type=float,
        default=None,
        help="rul: cap of the life target (default 125 cycles; simulated: 120 hours)",
    )
    t.add_argument("--lives", type=int, default=40, help="simulated: how many run-to-failure lives")
    t.add_argument(
        "--regimes",
        type=int,
        default=1,
        help="rul: operating regimes to normalise per (needs settings; 1 = none)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="share of units (rul) or rows (failure) held out for the stored metrics",
    )
    config.add_arguments(t, ("data_dir",))

    s = sub.add_parser("score", help="score data with a stored model; CSV to stdout or --out")
    s.add_argument("--template", required=True)
    s.add_argument("--version", type=int, default=None, help="default: the latest")
    _data_arguments(s)
    s.add_argument("--out", type=Path, default=None, metavar="FILE")
    config.add_arguments(s, ("data_dir",))

    m = sub.add_parser("models", help="list stored models with their metrics")
    m.add_argument("--template", default=None)
    config.add_arguments(m, ("data_dir",))


def simulated_runs(template: MachineTemplate, count: int, seed: int) -> list[Run]:
    """Hourly-cycle lives of simulated looms that ran until their bearing failed, made the way
    the maintenance service makes them from a machine's stored data."""
    from karkhana.maintenance.cycles import CYCLE_MS, Life, cycles_of, template_features
    from karkhana.maintenance.prognosis import life_run
    from karkhana.sim.lifetimes import loom_lives

    if template.id != "power_loom":
        raise InvalidPayload("the simulator has run-to-failure lives of power_loom only")
    signals = template_features(template)
    runs = []
    for life in loom_lives(count, seed, SIMULATED_START_MS):
        cycles = cycles_of(template, life.readings(), signals)
        end = life.failure_ms - life.failure_ms % CYCLE_MS
        span = Life(life.device_id, life.start_ms - life.start_ms % CYCLE_MS, end, True)
        runs.append(life_run(life.device_id, cycles, signals, span))
    return runs


SIMULATED_START_MS = 1_767_207_600_000
"""2026-01-01 00:00 Pakistan time: when the simulated lives begin."""


def _need_data(args: argparse.Namespace) -> Path:
    if args.data is None:
        raise InvalidPayload(f"--data names the {args.format} file to read")
    path: Path = args.data
    return path


def _runs(args: argparse.Namespace) -> tuple[list[Run], list[str], list[str]]:
    from karkhana.maintenance import datasets

    if args.format == "simulated":
        raise InvalidPayload("simulated lives are for training; score a csv or cmapss file")
    args.data = _need_data(args)
    if args.format == "cmapss":
        runs = datasets.load_cmapss_file(args.data)
        return runs, list(datasets.CMAPSS_SENSORS), list(datasets.CMAPSS_SETTINGS)
    if args.format == "csv":
        runs, signals = datasets.load_csv_runs(args.data, settings=args.settings)
        return runs, signals, list(args.settings)
    raise InvalidPayload("remaining-life models read --format csv or cmapss")


def _train_rul(args: argparse.Namespace, registry: ModelRegistry) -> str:

    from karkhana.maintenance.prognosis import holdout_metrics
    from karkhana.maintenance.rul import RulModel

    if args.format == "simulated":
        return _train_simulated(args, registry)
    runs, signals, settings = _runs(args)
    cap = 125.0 if args.cap is None else args.cap

    def model() -> RulModel:
        return RulModel(cap=cap, regimes=args.regimes, seed=args.seed)

    metrics = holdout_metrics(model, runs, holdout=args.holdout, seed=args.seed, cap=cap)
    final = model().fit(runs)
    metrics["fit_seconds"] = final.fit_seconds
    manifest = registry.save(
        args.template,
        final,
        metrics=metrics,
        data={
            "source": str(args.data),
            "format": args.format,
            "units": len(runs),
            "rows": int(sum(len(r) for r in runs)),
            "cycles_min": min(len(r) for r in runs),
            "cycles_max": max(len(r) for r in runs),
        },
        signals=signals,
        settings=settings,
    )
    return _saved(manifest.template, manifest.version, metrics)


def _train_simulated(args: argparse.Namespace, registry: ModelRegistry) -> str:
    from karkhana.assets.template import load_templates

    templates = load_templates()
    if args.template not in templates:
        raise InvalidPayload(f"no machine template {args.template}")
    template = templates[args.template]
    manifest = train_simulated(
        registry,
        template,
        lives=args.lives,
        seed=args.seed,
        cap=args.cap,
        holdout=args.holdout,
    )
    return _saved(manifest.template, manifest.version, manifest.metrics)


def train_simulated(
    registry: ModelRegistry,
    template: MachineTemplate,
    *,
    lives: int = 40,
    seed: int = 0,
    cap: float | None = None,
    holdout: float = 0.2,
) -> Manifest:
    """Train a template's remaining-life model on simulated lives and store it."""
    from karkhana.maintenance.cycles import relative_names, template_features
    from karkhana.maintenance.prognosis import CAP_HOURS, fit_lives

    if lives < 2:
        raise InvalidPayload("--lives must be at least 2")
    runs = simulated_runs(template, lives, seed)
    trained = fit_lives(runs, seed=seed, cap=CAP_HOURS if cap is None else cap, holdout=holdout)
    return registry.save(
        template.id,
        trained.model,
        metrics=trained.metrics,
        data={"source": "simulator", "seed": seed, **trained.data},
        signals=relative_names(template_features(template)),
    )


def _table(args: argparse.Namespace, label: str | None, *, labelled: bool) -> Any:
    from karkhana.maintenance import datasets

    if args.format == "ai4i":
        table = datasets.load_ai4i(args.data)
        return table if labelled else datasets.Table(table.columns, table.x, None)
    if args.format == "csv":
        return datasets.load_csv_table(args.data, label=label, exclude=getattr(args, "exclude", []))
    raise InvalidPayload("failure models read --format csv or ai4i")


def _train_failure(args: argparse.Namespace, registry: ModelRegistry) -> str:
    if args.format == "csv" and not args.label:
        raise InvalidPayload("--label names the 0/1 failure column of the CSV table")
    table = _table(args, args.label, labelled=True)
    manifest = train_failure(
        registry,
        args.template,
        table,
        seed=args.seed,
        holdout=args.holdout,
        ai4i=args.format == "ai4i",
        data={"source": str(args.data), "format": args.format},
    )
    return _saved(manifest.template, manifest.version, manifest.metrics)


def train_failure(
    registry: ModelRegistry,
    template: str,
    table: Table,
    *,
    seed: int = 0,
    holdout: float = 0.2,
    ai4i: bool = False,
    data: dict[str, Any] | None = None,
) -> Manifest:
    """Fit a failure classifier on a labelled table (held-out rows give the stored metrics)
    and store it as the template's next version."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from karkhana.maintenance import datasets
    from karkhana.maintenance.failure import FailureModel, f1_score

    if table.y is None:
        raise InvalidPayload("failure training needs a 0/1 label column")
    labels = table.y > 0.5
    if labels.sum() < 2 or (~labels).sum() < 2:
        raise InvalidPayload("the label needs at least two failures and two non-failures")

    def model() -> FailureModel:
        return FailureModel(
            derived=datasets.AI4I_DERIVED if ai4i else (),
            categorical=(datasets.AI4I_TYPE,) if ai4i else (),
            seed=seed,
        )

    metrics: dict[str, float] = {}
    if holdout > 0 and labels.sum() >= 5:
        tr, te = train_test_split(
            np.arange(labels.size), test_size=holdout, stratify=labels, random_state=seed
        )
        held = model().fit(table.x[tr], table.y[tr], table.columns)
        metrics = {
            "holdout_rows": float(te.size),
            "holdout_f1": f1_score(held.predict(table.x[te]), labels[te]),
        }
    final = model().fit(table.x, table.y, table.columns)
    metrics["cv_f1"] = final.cv_f1
    metrics["fit_seconds"] = final.fit_seconds
    return registry.save(
        template,
        final,
        metrics=metrics,
        data={**(data or {}), "rows": int(labels.size), "failures": int(labels.sum())},
        signals=list(table.columns),
    )


def _saved(template: str, version: int, metrics: dict[str, float]) -> str:
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    return f"stored {template} version {version}: {shown}"


def _score(args: argparse.Namespace, registry: ModelRegistry) -> str:
    manifest, model = registry.load(args.template, args.version)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if manifest.kind == "rul":
        runs, signals, _ = _runs(args)
        if manifest.signals and signals != manifest.signals:
            raise InvalidPayload(
                f"signals {signals} differ from the model's {manifest.signals} (same order)"
            )
        pred = model.predict(runs)
        writer.writerow(["unit", "cycles", "rul", "lower", "upper", "coverage"])
        for run, r, lo, hi in zip(runs, pred.rul, pred.lower, pred.upper, strict=True):
            writer.writerow(
                [run.unit, len(run), f"{r:.2f}", f"{lo:.2f}", f"{hi:.2f}", pred.coverage]
            )
    else:
        table = _table(args, None, labelled=False)
        proba = model.predict_proba(table.x, table.columns)
        writer.writerow(["row", "failure_probability", "failure"])
        for i, p in enumerate(proba):
            writer.writerow([i + 1, f"{p:.4f}", int(p >= model.threshold)])
    text = out.getvalue()
    if args.out is None:
        return text.rstrip("\n")
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from None
    return f"{text.count(chr(10)) - 1} rows written to {args.out}"


def _models(args: argparse.Namespace, registry: ModelRegistry) -> str:
    templates = [args.template] if args.template else registry.templates()
    lines = []
    for template in templates:
        for version in registry.versions(template):
            m = registry.manifest(template, version)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in m.metrics.items())
            lines.append(
                f"{template} v{version} {m.kind} {m.created_at} rows {m.data.get('rows')}: {shown}"
            )
    return "\n".join(lines) if lines else f"no models in {registry.root}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``karkhana maintenance ...``; prints the result, returns the exit code."""
    from karkhana.maintenance.registry import ModelRegistry

    registry = ModelRegistry.of(settings.data_dir)
    command = args.maintenance_command
    if command == "train":
        text = (_train_rul if args.kind == "rul" else _train_failure)(args, registry)
    elif command == "score":
        text = _score(args, registry)
    else:
        text = _models(args, registry)
    print(text, file=sys.stdout)
    return 0
