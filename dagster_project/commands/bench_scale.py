"""The scale table of ``make bench`` (issue 15): one live bar through the Dagster graph at 50 / 500 / 5 000
symbols, in a fresh process (what every sensor run is) and in a warm one, against the pure chain; peak RSS;
lineage bytes per bar and per symbol-bar; and the longest wait a read-only reader saw during the warm bars.

Per size, in its own home: the session before the measured one is replayed (not timed) so that every window
the live bar reads (IC and Σ, standardization, sizing) is full, as in steady state. Then, in child processes
(torch pinned to ``training.threads``; one child at a time):

* fresh-process bar: ``python -m dagster_project.commands.bench_scale --one-bar KEY`` — interpreter start,
  imports, definitions, models, the trading job for one live bar on an ephemeral instance — wall time from
  the child's start to its exit. The first such bar (cold caches: the simulator's chain of opens, the
  prediction state of the replayed bars) is not counted; the p50 of the next ones is.
* warm bar: the trading job called bar after bar in one process (the first bar not counted);
* pure chain: the same bars through the replay engine's stage functions without lineage (``record=False``);
* lineage: the file's growth over the warm bars; the fixed cost is the intercept and the per-symbol cost
  the slope of bytes per bar against symbols over the sizes measured.
* reader: a child polls ``SELECT count(*) FROM materializations`` read-only every 50 ms during the warm bars
  and reports its longest wait.

A dagster-dev sensor run adds the daemon's tick (0–5 s) and the run launch to the fresh-process bar (see
the sensor-path row of the main table, measured at 50 symbols).

Run: ``python -m dagster_project.commands.bench_scale [--sizes 50 500 5000]`` (``make bench`` runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from CONFIG.config_loader import PROJECT_ROOT, reset_config, resolve_path

SIZES = (50, 500, 5000)
HISTORY_SESSION = "2025-06-02"   # replayed, not timed: fills every window the measured bars read
SESSION = "2025-06-03"           # the measured live bars
FIRST_BAR = 3                    # the session's bar index the measurements start at
FRESH_BARS = 3                   # fresh-process bars (the first one, cold caches, is not counted)
WARM_BARS = 5                    # warm bars in one process (the first one is not counted)
READER_POLL_S = 0.05


def _keys() -> list[str]:
    from resources.market.calendar import bar_key, get_calendar

    return [bar_key(t) for t in get_calendar().session_bars(SESSION)]


def _env(home: Path, registry: Path, symbols: int) -> dict[str, str]:
    return dict(os.environ, TRADEGRAPH_HOME=str(home), TRADEGRAPH__PATHS__REGISTRY=str(registry),
                TRADEGRAPH__SIMULATOR__N_SYMBOLS=str(symbols), TRADEGRAPH__CLOCK__MODE="accelerated")


def _child(args: list[str], env: dict[str, str]) -> tuple[float, dict]:
    """Run this module in a child process; (its wall time, the JSON it printed last, with the child's CPU
    seconds as ``cpu_s``: on a shared, loaded machine the wall time also counts waiting for a core)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "dagster_project.commands.bench_scale", *args], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, got


# ------------------------------------------------------------------------------------------ in the child
def _pin_threads() -> None:
    import torch

    from CONFIG.config_loader import get_cfg

    torch.set_num_threads(int(get_cfg("training.threads")))


def _prepare() -> dict:
    import datetime as dt

    from dagster_project.commands.replay import ReplayEngine, bars_between
    from resources.kill_switch.resource import switch_for

    _pin_threads()
    for account in ("live", "replay"):
        switch_for(account).init(dt.datetime.now(dt.UTC), "make bench (scale)")
    bars = bars_between(HISTORY_SESSION, HISTORY_SESSION)
    t = time.perf_counter()
    ReplayEngine().run(bars)
    return {"history_bars": len(bars), "replay_s": time.perf_counter() - t}


def _run_bars(keys: list[str]) -> dict:
    """The trading job for each live bar, in this process; per-bar seconds and lineage growth."""
    import dagster as dg

    from dagster_project.commands.audit import QUIET
    from dagster_project.definitions import defs
    from resources.launch_proof import signed_tags
    from resources.lineage.io_manager import MODE_TAG
    from resources.market.clock import start_accelerated_clock

    _pin_threads()
    job = defs.resolve_job_def("trading_job")
    db = resolve_path("paths.lineage_db")
    seconds, growth, cpu = [], [], []
    with dg.DagsterInstance.ephemeral() as instance:
        for key in keys:
            start_accelerated_clock(pd.Timestamp(key.replace("Z", "+00:00")) + pd.Timedelta(seconds=1), speed=1.0)
            size = db.stat().st_size
            t, c = time.perf_counter(), time.process_time()
            job.execute_in_process(partition_key=key, instance=instance, run_config=QUIET, raise_on_error=True,
                                   tags={MODE_TAG: "live", **signed_tags(key)})  # the engine signs its launches
            seconds.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            growth.append(db.stat().st_size - size)
    return {"seconds": seconds, "cpu": cpu, "growth": growth, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _pure(keys: list[str]) -> dict:
    from dagster_project.commands.replay import ReplayEngine

    _pin_threads()
    engine = ReplayEngine(record=False)
    seconds, cpu = [], []
    for key in keys:
        t, c = time.perf_counter(), time.process_time()
        engine.step(key)
        seconds.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    engine.close()
    return {"seconds": seconds, "cpu": cpu}


def _reader(stop_file: str) -> dict:
    from resources.lineage.store import LineageStore

    store = LineageStore()
    waits = []
    while not Path(stop_file).exists():
        t = time.perf_counter()
        store.read_sql("SELECT count(*) FROM materializations")
        waits.append(time.perf_counter() - t)
        time.sleep(READER_POLL_S)
    return {"reads": len(waits), "max_wait_s": max(waits, default=float("nan")),
            "p50_wait_s": statistics.median(waits) if waits else float("nan")}


# ------------------------------------------------------------------------------------------ the parent
def bench_size(work: Path, registry: Path, symbols: int) -> dict:
    home = work / f"scale-{symbols}"
    home.mkdir()
    env = _env(home, registry, symbols)
    keys = _keys()[FIRST_BAR:]
    _, prep = _child(["--prepare"], env)
    fresh_keys, keys = keys[:FRESH_BARS], keys[FRESH_BARS:]
    fresh = [_child(["--bars", k], env) for k in fresh_keys]
    warm_keys, keys = keys[:WARM_BARS], keys[WARM_BARS:]
    stop = home / "reader.stop"
    reader = subprocess.Popen([sys.executable, "-m", "dagster_project.commands.bench_scale", "--reader", str(stop)],
                              cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, warm = _child(["--bars", *warm_keys], env)
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=120)
    if reader.returncode != 0:
        raise RuntimeError(f"reader failed: {err[-2000:]}")
    read = json.loads(out.strip().splitlines()[-1])
    _, pure = _child(["--pure", *warm_keys], env)
    fresh_s = [w for w, _ in fresh[1:]]
    warm_s, pure_s = warm["seconds"][1:], pure["seconds"][1:]
    growth = warm["growth"][1:]
    return {"symbols": symbols, **prep,
            "fresh_bar_s": statistics.median(fresh_s), "fresh_bars_s": [w for w, _ in fresh],
            "fresh_bar_cpu_s": statistics.median([r["cpu_s"] for _, r in fresh[1:]]),
            "warm_bar_s": statistics.median(warm_s), "warm_bars_s": warm["seconds"],
            "warm_bar_cpu_s": statistics.median(warm["cpu"][1:]),
            "pure_chain_s": statistics.median(pure_s), "pure_chain_cpu_s": statistics.median(pure["cpu"][1:]),
            "ratio": statistics.median(warm["cpu"][1:]) / statistics.median(pure["cpu"][1:]),
            "peak_rss_mb": max([r["peak_rss_mb"] for _, r in fresh] + [warm["peak_rss_mb"]]),
            "lineage_bytes_per_bar": statistics.median(growth), "lineage_growth": warm["growth"],
            "lineage_bytes_per_symbol_bar": statistics.median(growth) / symbols,
            "reader_max_wait_s": read["max_wait_s"], "reader_p50_wait_s": read["p50_wait_s"], "reads": read["reads"]}


def fit_costs(rows: list[dict]) -> dict:
    """Least squares of bytes per bar = fixed + per_symbol × symbols over the sizes measured."""
    import numpy as np

    n = np.array([r["symbols"] for r in rows], dtype=float)
    b = np.array([r["lineage_bytes_per_bar"] for r in rows], dtype=float)
    if len(rows) < 2:
        return {"fixed_bytes_per_bar": float("nan"), "bytes_per_symbol_bar": float(b[0] / n[0])}
    slope, intercept = np.polyfit(n, b, 1)
    return {"fixed_bytes_per_bar": float(intercept), "bytes_per_symbol_bar": float(slope)}


def render(result: dict) -> str:
    lines = [f"## Scale: one live bar through the Dagster graph (measured {result['when']}, load {result['load']} "
             f"before, {result.get('load_after', '?')} after)",
             "", "Wall time (CPU seconds of the process in brackets: on a shared machine the wall time also counts "
             "waiting for a core; the ratio is of CPU seconds).", "",
             "| symbols | warm bar | fresh-process bar | pure chain | warm / pure | peak RSS | lineage per bar "
             "| per symbol-bar | longest reader wait |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["sizes"]:
        lines.append(f"| {r['symbols']} | {r['warm_bar_s']:.2f} s ({r['warm_bar_cpu_s']:.2f} s) | "
                     f"{r['fresh_bar_s']:.2f} s ({r['fresh_bar_cpu_s']:.1f} s) | "
                     f"{r['pure_chain_s'] * 1e3:.0f} ms ({r['pure_chain_cpu_s'] * 1e3:.0f} ms) | {r['ratio']:.1f}× | {r['peak_rss_mb']:.0f} MB | "
                     f"{r['lineage_bytes_per_bar'] / 1024:.0f} kB | {r['lineage_bytes_per_symbol_bar']:.0f} B | "
                     f"{r['reader_max_wait_s'] * 1e3:.0f} ms |")
    c = result["costs"]
    lines += ["", f"Lineage growth fitted over the sizes: {c['fixed_bytes_per_bar'] / 1024:.0f} kB fixed per bar + "
              f"{c['bytes_per_symbol_bar']:.0f} B per symbol-bar.", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--registry", default=None, help="A trained registry (default: train a small one).")
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bars", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--pure", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--reader", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    child = {"prepare": args.prepare and _prepare, "bars": args.bars and (lambda: _run_bars(args.bars)),
             "pure": args.pure and (lambda: _pure(args.pure)), "reader": args.reader and (lambda: _reader(args.reader))}
    for fn in child.values():
        if fn:
            print(json.dumps(fn()))
            return None
    out_dir = resolve_path("paths.bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tradegraph-scale-") as tmp:
        work = Path(tmp)
        registry = Path(args.registry) if args.registry else None
        if registry is None:
            from TRAINING.testing import train_small_registry

            registry = train_small_registry(work)
        result = {"when": pd.Timestamp.now("UTC").strftime("%Y-%m-%d %H:%M UTC"),
                  "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "sizes": []}
        for symbols in args.sizes:
            row = bench_size(work, registry, symbols)
            result["sizes"].append(row)
            print(json.dumps(row), flush=True)
        result["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        result["costs"] = fit_costs(result["sizes"])
    reset_config()
    (out_dir / "scale.json").write_text(json.dumps(result, indent=2))
    text = render(result)
    (out_dir / "scale.md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
