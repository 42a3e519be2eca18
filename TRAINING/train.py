"""Train every target and family on the configured market source and window, publish and activate.

``tradegraph train`` (= ``python -m TRAINING.train``) ``[--sessions N] [--train-end YYYY-MM-DD] [--families a,b]
[--registry DIR] [--no-activate] [--force]``
shows a progress bar, then a table of validation IC and calibration slope per horizon × family and the
barrier classifiers' AUC. :func:`train_all` is the same thing for programs (the demo calls it when
:func:`~TRAINING.registry.registry_is_empty`).

Activation (SPEC §9: "such a model is not activated"): every model is published, but its ACTIVE pointer moves
only when its validation IC is defined and at least ``training.min_validation_ic``; ``--force`` activates anyway.
An undefined IC is explained in the table and in ``model_meta.json`` (``validation_ic_note``: e.g. fewer than
``training.ic_min_symbols`` names with a label on any validation bar).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from CONFIG.config_loader import ConfigError, get_cfg, load_config, resolve_path
from resources.market.sources import MarketDataSource
from TRAINING.common.utils.cli import run_command
from TRAINING.dataset import TrainingData, build_dataset
from TRAINING.labels import barrier_labels, demean, forward_returns, horizon_bars
from TRAINING.registry import FAMILIES, barrier_target, publish, registry_is_empty, return_target
from TRAINING.trainers.barrier import train_barrier_classifier
from TRAINING.trainers.common import Split, TrainedModel, time_split
from TRAINING.trainers.sequential import train_sequential
from TRAINING.trainers.tabular import train_lightgbm_regressor

__all__ = ["TrainSummary", "default_families", "main", "registry_is_empty", "train_all", "train_command"]

RETURN_TRAINERS = {"lightgbm": train_lightgbm_regressor, "sequential": train_sequential}
BARRIER_FAMILY = "barrier_lightgbm"


@dataclass
class TrainSummary:
    """What a training run published: one row per (target, family), the window, the time taken."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    window: dict[str, Any] = field(default_factory=dict)
    registry: Path | None = None
    seconds: float = 0.0

    def table(self) -> str:
        """Validation IC / calibration slope per horizon × return family, then barrier AUCs."""
        ret = [r for r in self.rows if r["family"] in RETURN_TRAINERS]
        fams = sorted({r["family"] for r in ret})
        lines = []
        if ret:
            head = f"{'horizon':>8} | " + " | ".join(f"{f + ' IC':>14} {'slope':>6}" for f in fams)
            lines += [head, "-" * len(head)]
            for h in sorted({r["horizon_minutes"] for r in ret}):
                cells = []
                for f in fams:
                    r = next((x for x in ret if x["family"] == f and x["horizon_minutes"] == h), None)
                    cells.append(f"{_fmt(r and r['validation_ic']):>14} {_fmt(r and r['calibration_slope'], 2):>6}")
                lines.append(f"{str(h) + 'm':>8} | " + " | ".join(cells))
        bar = [r for r in self.rows if r["family"] == BARRIER_FAMILY]
        if bar:
            lines += ["", f"{'barrier':>12} | {'AUC':>6} {'IC':>7} {'base':>6}"]
            for r in sorted(bar, key=lambda x: x["target"]):
                lines.append(f"{r['target']:>12} | {_fmt(r.get('validation_auc'), 3):>6} "
                             f"{_fmt(r['validation_ic']):>7} {_fmt(r.get('base_rate'), 3):>6}")
        kept = [r for r in self.rows if r.get("not_activated")]
        if kept:
            lines += ["", "not activated (the previous ACTIVE version, if any, stays; --force activates):"]
            lines += [f"  {r['target']}/{r['family']} {r['version']}: {r['not_activated']}" for r in kept]
        forced = [r for r in self.rows if r.get("forced")]
        if forced:
            lines += ["", "activated by --force despite: "] + [f"  {r['target']}/{r['family']} {r['version']}: "
                                                               f"{r['forced']}" for r in forced]
        w = self.window
        lines += ["", f"window {w.get('first_session')}…{w.get('last_session')} ({w.get('n_sessions')} sessions; "
                      f"validation from {w.get('validation_first_session')}), {self.seconds:.1f}s, "
                      f"registry {self.registry}"]
        return "\n".join(lines)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:+.{digits}f}"


def activation_refusal(metrics: dict[str, Any]) -> str:
    """Why a model's ACTIVE pointer does not move ("" when it may): undefined or too low validation IC."""
    ic = metrics.get("validation_ic")
    floor = float(get_cfg("training.min_validation_ic"))
    if ic is None:
        return f"validation IC undefined: {metrics.get('validation_ic_note') or 'not measured'}"
    if ic < floor:
        return f"validation IC {ic:+.4f} below training.min_validation_ic={floor:+.4f}"
    return ""


def default_families() -> list[str]:
    """``training.families`` plus the barrier family when ``training.train_barrier``."""
    fams = list(get_cfg("training.families"))
    return fams + [BARRIER_FAMILY] if get_cfg("training.train_barrier") else fams


def _window_meta(data: TrainingData, split: Split) -> dict[str, Any]:
    days = data.session_list
    return {"first_session": days[0].isoformat(), "last_session": days[-1].isoformat(), "n_sessions": len(days),
            "train_first_session": split.train_sessions[0].isoformat(),
            "train_last_session": split.train_sessions[1].isoformat(),
            "validation_first_session": split.valid_sessions[0].isoformat(),
            "validation_last_session": split.valid_sessions[1].isoformat(),
            "embargo_bars": split.embargo_bars}


def _meta(data: TrainingData, window: dict[str, Any], horizon: int, trained: TrainedModel,
          definition: str) -> dict[str, Any]:
    metrics = dict(trained.metrics)
    rows = {k: metrics.pop(k) for k in ("train_rows", "validation_rows")}
    return {"horizon_minutes": horizon, "bar_minutes": data.bar_minutes, "features": list(data.feature_names),
            "feature_set_version": data.feature_version, "T": trained.T, "kind": trained.kind,
            "training_window": {**window, **rows}, "target_definition": definition,
            "seed": int(get_cfg("training.seed")), **metrics, **trained.extra_meta}


def _tasks(families: Sequence[str]) -> list[tuple[str, str, int]]:
    tasks = []
    for h in get_cfg("horizons.minutes"):
        tasks += [(return_target(h), f, int(h)) for f in families if f in RETURN_TRAINERS]
    if BARRIER_FAMILY in families:
        hb = int(get_cfg("barrier.horizon_minutes"))
        tasks += [(barrier_target(side, hb), BARRIER_FAMILY, hb) for side in ("peak", "valley")]
    return tasks


def train_all(sessions: int | None = None, train_end: str | dt.date | None = None,
              families: Sequence[str] | None = None, registry: str | os.PathLike | None = None, *,
              progress: bool = True, activate: bool = True, source: MarketDataSource | None = None,
              force: bool = False) -> TrainSummary:
    """Build the window's dataset, train every (target, family), publish each model and activate the ones whose
    validation IC is defined and ≥ ``training.min_validation_ic`` (all of them with ``force``)."""
    t0 = time.perf_counter()
    fams = list(families) if families is not None else default_families()
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown model families {unknown}; known: {sorted(FAMILIES)}")
    root = Path(registry) if registry is not None else resolve_path("paths.registry")
    tasks = _tasks(fams)
    summary = TrainSummary(registry=root)
    with tqdm(total=len(tasks) + 1, desc="dataset", file=sys.stderr, disable=not progress, unit="model") as bar:
        data = build_dataset(sessions, train_end, source)
        split = time_split(data.sessions)
        summary.window = _window_meta(data, split)
        bar.update(1)
        sid, close = data.session_id, data.panel["close"]
        barrier: dict[str, np.ndarray] = {}
        if BARRIER_FAMILY in fams:
            hb = horizon_bars(int(get_cfg("barrier.horizon_minutes")))
            peak, valley = barrier_labels(close, data.panel["high"], data.panel["low"],
                                          data.market_column("sigma_bps"), sid, hb)
            barrier = {"peak": peak, "valley": valley}
        names = list(data.feature_names)
        for target, family, h in tasks:
            bar.set_description(f"{target}/{family}")
            if family == BARRIER_FAMILY:
                side = target.split("_")[0]
                trained = train_barrier_classifier(data.X, barrier[side], split, names)
                definition = (f"triple-barrier {side} label over {h}m: half-width barrier.width_sigma × σ_bar × "
                              "√(horizon bars); lower touched first = peak, upper first = valley")
            else:
                realised = forward_returns(close, sid, horizon_bars(h))
                trained = RETURN_TRAINERS[family](data.X, demean(realised), realised, split, names)
                definition = f"cross-sectionally demeaned forward log return over {h}m (close to close)"
            meta = _meta(data, summary.window, h, trained, definition)
            refusal = activation_refusal(trained.metrics)
            version = publish(target, family, trained.model_bytes, meta, activate=activate and (force or not refusal),
                              root=root)
            summary.rows.append({"target": target, "family": family, "horizon_minutes": h, "version": version,
                                 **{k: trained.metrics.get(k) for k in ("validation_ic", "calibration_slope",
                                                                        "validation_auc", "base_rate",
                                                                        "validation_ic_note")},
                                 "not_activated": refusal if activate and refusal and not force else "",
                                 "forced": refusal if activate and refusal and force else ""})
            bar.update(1)
    summary.seconds = time.perf_counter() - t0
    return summary


@click.command("train", short_help="Train, publish and activate every model family.", help="Train every model family on the configured market and window, publish each "
                              "model to the registry and activate it; prints the validation IC table.")
@click.option("--sessions", type=click.IntRange(min=2), default=None,
              help="Sessions in the window (default training.train_sessions).")
@click.option("--train-end", default=None, metavar="YYYY-MM-DD",
              help="First session NOT used (default training.train_end).")
@click.option("--families", default=None, metavar="A,B",
              help=f"Comma list out of {','.join(sorted(FAMILIES))} (default: every configured family).")
@click.option("--registry", type=click.Path(file_okay=False), default=None,
              help="Registry root (default paths.registry).")
@click.option("--no-activate", is_flag=True, help="Publish without moving the ACTIVE pointers.")
@click.option("--force", is_flag=True, help="Activate every model, even one whose validation IC is undefined or "
                                            "below training.min_validation_ic.")
def train_command(sessions: int | None, train_end: str | None, families: str | None, registry: str | None,
                  no_activate: bool, force: bool) -> int:
    fams = [f.strip() for f in families.split(",") if f.strip()] if families else None
    summary = train_all(sessions, train_end, fams, registry, activate=not no_activate, force=force)
    click.echo(summary.table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m TRAINING.train [--config FILE] …``: the same command as ``tradegraph train``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--config" in args:  # the one option tradegraph takes at the top level, accepted here too
        i = args.index("--config")
        if i + 1 >= len(args):
            print("python -m TRAINING.train: error: --config needs a file", file=sys.stderr)
            return 2
        try:
            load_config(args[i + 1])
        except ConfigError as exc:
            print(f"python -m TRAINING.train: error: {exc}", file=sys.stderr)
            return 2
        del args[i:i + 2]
    return run_command(train_command, args, "python -m TRAINING.train", (ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
