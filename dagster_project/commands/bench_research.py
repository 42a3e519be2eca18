"""Research-speed benchmarks (issue 12), each measured in this run on a generated market of ``--symbols``.

- ``replay_cold``: a replay over ``--sessions`` sessions with an empty prediction cache (inference included);
- ``replay_warm``: the same bars again with a changed sizing parameter: the cache serves every model call;
- ``replay_summary``: the warm replay with ``--lineage-mode summary``;
- ``lineage_bytes``: bytes of lineage a replay writes per symbol-bar, full and summary, on its own replays over
  ``--bytes-sessions`` (5) sessions and over 1 session (``bench_lineage.py``: file, marginal and per-table
  bytes; why 5 sessions is there). ``replay_bytes_per_symbol_bar`` is the full-mode figure of the 5-session
  replay;
- ``sweep_8_warm``: 8 configurations of the warm case through ``tradegraph sweep``'s Dagster job on the
  multiprocess executor (2 at a time).

The issue's keys (``replay_year_100_cold_s`` …) are filled only when the measured period is a year
(``--sessions 252``, about an hour at today's rate): a shorter period's figure is never extrapolated into
them; its own figures are under ``measured``. ``stepping_vs_vectorbt`` is null: the stepping loop is not built.
Torch is pinned to one thread; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from CONFIG.config_loader import reset_config, resolve_path

YEAR_SESSIONS = 252
KEYS = ("replay_year_100_cold_s", "replay_year_100_warm_s", "sweep_8_warm_s", "replay_bytes_per_symbol_bar",
        "stepping_vs_vectorbt")
SWEEP_GRID = {"sizing.no_trade_band": [0.0, 0.0005, 0.001, 0.002], "arbitration.reserve_base_bps": [0.0, 1.0]}


def _replay(home: Path, registry: Path, cache: Path, bars: list[str], lineage: str, **env: str) -> dict:
    from assets.predictions.cache import PredictionCache
    from dagster_project.commands.bench import _env
    from dagster_project.commands.replay import ReplayEngine

    _env(home, registry, **env)
    result = ReplayEngine(lineage=lineage, prediction_cache=PredictionCache(cache)).run(bars)
    path = resolve_path("paths.lineage_db")
    size = path.stat().st_size
    for key in env:
        os.environ.pop(key, None)
    return {"seconds": result.seconds, "ms_per_bar": result.seconds / len(bars) * 1e3, "lineage_bytes": size,
            "lineage_path": str(path),
            "cache_hits": result.cache_hits, "cache_misses": result.cache_misses,
            "stage_ms_per_bar": {k: round(v / len(bars) * 1e3, 2) for k, v in sorted(result.stage_seconds.items())}}


def run(work: Path, registry: Path, symbols: int, sessions: int, sweep: bool = True,
        bytes_sessions: int = 5) -> dict:
    import torch
    import yaml

    from dagster_project.commands.replay import bars_between
    from resources.market.calendar import get_calendar

    torch.set_num_threads(1)
    os.environ["TRADEGRAPH__SIMULATOR__N_SYMBOLS"] = str(symbols)
    reset_config()
    days = get_calendar().sessions("2025-06-02", "2026-12-31")[:sessions]
    bars = bars_between(days[0].isoformat(), days[-1].isoformat())
    cache = work / "prediction_cache"
    out: dict = {"symbols": symbols, "sessions": len(days), "bars": len(bars), "load_before": os.getloadavg()}
    out["replay_cold"] = _replay(work / "cold", registry, cache, bars, "full")
    band = {"TRADEGRAPH__SIZING__NO_TRADE_BAND": "0.0"}
    out["replay_warm"] = _replay(work / "warm", registry, cache, bars, "full", **band)
    out["replay_summary"] = _replay(work / "summary", registry, cache, bars, "summary", **band)
    bytes_days = get_calendar().sessions("2025-06-02", "2026-12-31")[:bytes_sessions]
    from dagster_project.commands.bench_lineage import file_figures, lineage_bytes

    def replay_into(name: str, replay_bars: list[str], mode: str) -> dict:
        return file_figures(Path(_replay(work / name, registry, cache, replay_bars, mode)["lineage_path"]))

    out["lineage_bytes"] = lineage_bytes(replay_into, bytes_days, symbols)
    if sweep:
        from dagster_project.commands.sweep import launch

        os.environ["TRADEGRAPH_HOME"] = str(work / "sweep_home")
        os.environ["TRADEGRAPH__PATHS__PREDICTION_CACHE"] = str(cache)
        os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
        (work / "dagster_home").mkdir(exist_ok=True)
        reset_config()
        grid = work / "grid.yaml"
        grid.write_text(yaml.safe_dump({"start": days[0].isoformat(), "end": days[-1].isoformat(),
                                        "parameters": SWEEP_GRID}))
        t = time.perf_counter()
        table, _ = launch(grid, work / "sweep", max_concurrent=2)
        out["sweep_8_warm"] = {"seconds": time.perf_counter() - t, "configs": len(table),
                               "cache_misses": int(table["cache_misses"].sum())}
    out["load_after"] = os.getloadavg()
    year = len(days) >= YEAR_SESSIONS and symbols == 100
    out["keys"] = {
        "replay_year_100_cold_s": out["replay_cold"]["seconds"] if year else None,
        "replay_year_100_warm_s": out["replay_warm"]["seconds"] if year else None,
        "sweep_8_warm_s": out["sweep_8_warm"]["seconds"] if year and sweep else None,
        "replay_bytes_per_symbol_bar": out["lineage_bytes"]["full"]["bytes_per_symbol_bar"],
        "stepping_vs_vectorbt": None,
    }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--bytes-sessions", type=int, default=5,
                        help="sessions of the lineage-bytes replays (≥ 2: the marginal needs a second session)")
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args(argv)
    saved = dict(os.environ)
    try:
        with tempfile.TemporaryDirectory(prefix="tradegraph-bench-research-") as tmp:
            from TRAINING.testing import train_small_registry

            registry = train_small_registry(Path(tmp))
            result = run(Path(tmp), registry, args.symbols, args.sessions, sweep=not args.no_sweep,
                         bytes_sessions=args.bytes_sessions)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_config()
    out_dir = resolve_path("paths.bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "research.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
