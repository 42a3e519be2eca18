"""Parameter sweeps: a grid of configurations replayed over one period, one result per configuration hash.

A sweep file (YAML)::

    start: 2025-06-02          # first session of the period
    end: 2025-06-06            # last session (inclusive)
    parameters:                # dotted config key → the values to try (the grid is their product)
      sizing.no_trade_band: [0.0, 0.0005, 0.001]
      arbitration.reserve_base_bps: [0.0, 1.0]
    heatmap: [sizing.no_trade_band, arbitration.reserve_base_bps]   # optional: the two axes (default: first two)
    sort_by: sharpe_annualised                                      # optional (default), descending
    lineage: summary                                                # optional: summary (default) | full

Each configuration is the effective configuration with the grid point merged over it; its identity is
``config_hash`` of that configuration (the same hash its replay records in ``runs``). Every configuration is
replayed in its own home (``<sweep dir>/configs/<hash>``: lineage, replay paper account, kill switch) with the
shared model registry and prediction cache, so configurations that only change what follows inference never
run a model twice. Each writes ``results/<hash>.json``; :func:`gather` reads them all into one table.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from CONFIG.config_loader import ConfigError, config_hash, effective_config_hash, resolve_path, use_config
from TRAINING.common.utils.file_utils import write_atomic_json

RESULT_COLUMNS = ["sharpe_annualised", "sharpe_standard_error", "total_return_pct", "max_drawdown_pct",
                  "turnover_per_session", "costs_bps", "costs", "hit_rate", "days", "fills"]
COUNT_COLUMNS = ("days", "fills", "bars", "cache_hits", "cache_misses")
SHARED_PATHS = ("paths.registry", "paths.prediction_cache")   # absolute: shared by every configuration


class SweepError(ValueError):
    """A sweep file a user wrote is unusable (named key, value, or grid)."""


@dataclass(frozen=True)
class SweepSpec:
    start: str
    end: str
    parameters: dict[str, list[Any]]
    heatmap: tuple[str, str] | None
    sort_by: str
    lineage: str

    @classmethod
    def from_yaml(cls, path: Path) -> SweepSpec:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SweepError(f"sweep file {path}: {exc}") from exc
        if not isinstance(raw, dict) or not {"start", "end", "parameters"} <= set(raw):
            raise SweepError(f"sweep file {path}: needs start, end and parameters")
        params = raw["parameters"]
        if not isinstance(params, dict) or not params or not all(
                isinstance(v, list) and v for v in params.values()):
            raise SweepError(f"sweep file {path}: parameters must map config keys to non-empty lists of values")
        names = list(params)
        heat = raw.get("heatmap", names[:2] if len(names) >= 2 else None)
        if heat is not None and (len(heat) != 2 or not set(heat) <= set(names)):
            raise SweepError(f"sweep file {path}: heatmap must name two of the parameters {names}")
        lineage = raw.get("lineage", "summary")
        if lineage not in ("summary", "full"):
            raise SweepError(f"sweep file {path}: lineage must be summary or full, got {lineage!r}")
        sort_by = raw.get("sort_by", "sharpe_annualised")
        if sort_by not in RESULT_COLUMNS:
            raise SweepError(f"sweep file {path}: sort_by must be one of {RESULT_COLUMNS}, got {sort_by!r}")
        return cls(str(raw["start"]), str(raw["end"]), {k: list(v) for k, v in params.items()},
                   tuple(heat) if heat else None, sort_by, lineage)

    def points(self) -> list[dict[str, Any]]:
        """Every grid point (dotted key → value), keys in file order, the last key varying fastest."""
        names = list(self.parameters)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*self.parameters.values())]


def nested(point: Mapping[str, Any]) -> dict:
    """{"a.b": 1} → {"a": {"b": 1}}."""
    out: dict = {}
    for dotted, value in point.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def shared_overrides() -> dict:
    """The paths every configuration shares, made absolute (each replays in its own home)."""
    return nested({key: str(resolve_path(key)) for key in SHARED_PATHS})


def _merge(a: dict, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def overrides_for(point: Mapping[str, Any], shared: Mapping) -> dict:
    return _merge(dict(shared), nested(point))


def configurations(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """config hash → grid point; raises ``SweepError`` naming the first point the schema refuses, or two
    points that are the same configuration."""
    shared = shared_overrides()
    out: dict[str, dict[str, Any]] = {}
    for point in spec.points():
        try:
            with use_config(overrides_for(point, shared)) as cfg:
                key = config_hash(cfg)
        except ConfigError as exc:
            raise SweepError(f"grid point {point}: {exc}") from exc
        if key in out:
            raise SweepError(f"grid points {out[key]} and {point} are the same configuration")
        out[key] = point
    return out


def write_plan(spec: SweepSpec, configs: Mapping[str, Mapping[str, Any]], sweep_dir: Path) -> Path:
    """The plan every step reads: the period, the lineage mode and each configuration's overrides."""
    return write_atomic_json(sweep_dir / "plan.json", {
        "start": spec.start, "end": spec.end, "lineage": spec.lineage, "sort_by": spec.sort_by,
        "heatmap": list(spec.heatmap) if spec.heatmap else None, "shared": shared_overrides(),
        "configs": {k: dict(v) for k, v in configs.items()}})


def read_plan(sweep_dir: Path) -> dict:
    return json.loads((Path(sweep_dir) / "plan.json").read_text())


@contextmanager
def _home(path: Path) -> Iterator[None]:
    saved = os.environ.get("TRADEGRAPH_HOME")
    os.environ["TRADEGRAPH_HOME"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRADEGRAPH_HOME", None)
        else:
            os.environ["TRADEGRAPH_HOME"] = saved


def run_configuration(sweep_dir: Path, key: str) -> dict[str, Any]:
    """Replay the plan's period under configuration ``key`` in its own home; write and return its result."""
    import datetime as dt

    import numpy as np

    from CONFIG.config_loader import get_cfg
    from dagster_project.commands.replay import ReplayEngine, bars_between
    from dagster_project.commands.report import load_pnl, summarise
    from resources.kill_switch.resource import state_path_for, switch_for
    from resources.lineage.store import LineageStore

    plan = read_plan(sweep_dir)
    point = plan["configs"][key]
    home = Path(sweep_dir) / "configs" / key
    with _home(home), use_config(overrides_for(point, plan["shared"])):
        if effective_config_hash() != key:
            raise SweepError(f"configuration {key}: the configuration built here hashes to "
                             f"{effective_config_hash()} (the defaults or the user file changed since the plan)")
        for path in (resolve_path("paths.lineage_db"), resolve_path("paths.replay_broker_db"),
                     state_path_for("replay")):   # a fresh book each time the configuration is run
            for p in (path, path.with_name(path.name + ".wal")):
                p.unlink(missing_ok=True)
        switch_for("replay").init(dt.datetime.now(dt.UTC), f"sweep configuration {key}")
        engine = ReplayEngine(lineage=plan["lineage"], prediction_cache=True)
        result = engine.run(bars_between(plan["start"], plan["end"]))
        store = LineageStore()
        realised = np.concatenate(engine.realised) if engine.realised else np.empty(0)
        stats = summarise(load_pnl(store, "replay"), pd.DataFrame({"bar": [], "symbol": [], "close": []}),
                          pd.Series(realised), 0, get_cfg("report.min_sessions"))
    row = {"config_hash": key, **{f"param:{k}": v for k, v in point.items()},
           **{c: stats[c] for c in RESULT_COLUMNS}, "sample_warning": stats["sample_warning"],
           "seconds": result.seconds, "bars": len(result.bars),
           "cache_hits": result.cache_hits, "cache_misses": result.cache_misses}
    write_atomic_json(Path(sweep_dir) / "results" / f"{key}.json",
                      {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return row


def gather(sweep_dir: Path) -> pd.DataFrame:
    """Every configuration's result in one table, sorted by the plan's ``sort_by`` (descending, NaN last, ties
    by config hash); writes ``results.csv``, ``results.md`` (the warnings first) and, with two heat-map axes,
    ``heatmap.png``. ``table.attrs["warnings"]``: what a reader must know before ranking anything — a sample
    shorter than ``report.min_sessions`` (each result's ``sample_warning``) and a sort figure that is undefined
    (NaN) for some or all configurations (a Sharpe ratio needs ≥ 2 trading days), so the order means nothing."""
    plan = read_plan(sweep_dir)
    rows = [json.loads(p.read_text()) for p in sorted((Path(sweep_dir) / "results").glob("*.json"))]
    rows = [r for r in rows if r.get("config_hash") in plan["configs"]]   # not another plan's leftovers
    missing = sorted(set(plan["configs"]) - {r["config_hash"] for r in rows})
    if missing:
        raise SweepError(f"no result for configurations {missing}")
    table = pd.DataFrame(rows).astype({c: float for c in RESULT_COLUMNS})
    table = table.sort_values([plan["sort_by"], "config_hash"], ascending=[False, True], kind="mergesort",
                              na_position="last").reset_index(drop=True)
    notes = sweep_warnings(table, plan["sort_by"])
    table.attrs["warnings"] = notes
    table.to_csv(Path(sweep_dir) / "results.csv", index=False)
    (Path(sweep_dir) / "results.md").write_text("".join(f"> {w}\n\n" for w in notes) + as_markdown(table) + "\n")
    if plan["heatmap"]:
        heatmap(table, plan["heatmap"], plan["sort_by"], Path(sweep_dir) / "heatmap.png", notes)
    return table


def as_markdown(table: pd.DataFrame) -> str:
    """The results as a markdown table: counts as integers, an undefined figure as "n/a" (not "nan")."""
    shown = table.astype({c: "Int64" for c in COUNT_COLUMNS if c in table}).astype(object)
    return shown.where(shown.notna(), None).to_markdown(index=False, floatfmt=".4f", missingval="n/a")


def sweep_warnings(table: pd.DataFrame, sort_by: str) -> list[str]:
    """The sample warnings of the results (each once) and, when ``sort_by`` is NaN for some configurations,
    a warning that says so (all NaN: the order is only the config hashes')."""
    notes = sorted({str(w) for w in table.get("sample_warning", pd.Series(dtype=object)).dropna() if w})
    undefined = int(table[sort_by].isna().sum())
    if undefined == len(table):
        notes.append(f"WARNING: {sort_by} is undefined (NaN) for every configuration (a Sharpe ratio needs at "
                     "least 2 trading days): the table is in config-hash order and ranks nothing")
    elif undefined:
        notes.append(f"WARNING: {sort_by} is undefined (NaN) for {undefined} of {len(table)} configurations: "
                     "they are listed last, unranked")
    return notes


def heatmap(table: pd.DataFrame, axes: list[str], value: str, path: Path, notes: list[str] = ()) -> Path:
    """PNG of ``value`` over two parameters (the best over any other parameter at each cell); a NaN cell is
    written "n/a", and a warning (``notes``: a short sample, an undefined figure) is printed under the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x, y = (f"param:{a}" for a in axes)
    grid = table.pivot_table(index=y, columns=x, values=value, aggfunc="max", dropna=False).sort_index().sort_index(axis=1)
    fig, ax = plt.subplots(figsize=(max(1.2 * grid.shape[1] + 3, 7.5), 0.8 * grid.shape[0] + 2 + 0.3 * len(notes)))
    values = grid.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)   # all NaN: an empty colour scale
    if hi == lo:   # one value: the middle of the scale, not its red end
        lo, hi = lo - 1.0, hi + 1.0
    im = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", aspect="auto", origin="lower",
                   extent=(-0.5, values.shape[1] - 0.5, -0.5, values.shape[0] - 0.5), vmin=lo, vmax=hi)
    ax.set_xticks(range(grid.shape[1]), [str(v) for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(v) for v in grid.index])
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.2f}" if math.isfinite(v) else "n/a", ha="center", va="center", fontsize=8)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    title = value
    if notes:
        title += "\n" + "\n".join(textwrap.shorten(w, 80, placeholder="…") for w in notes)
    ax.set_title(title, fontsize=9 if notes else None, color="firebrick" if notes else None)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
